"""The reference relaxation of the survivors, in order, learning as it goes and stopping when the
hull is certain.

Survivors of the last stage are relaxed with the reference in order of their MTP energy above
the stage's MTP hull (those whose relaxation broke on extrapolation first: their MTP energy says
nothing), `batch` at a time on the farm, each from its MTP-relaxed geometry. Before each batch:

1. *Refit*: once the finished reference relaxations have grown the training set by
   `refit_growth` (10 %) since the potential last used (the stage's audited one at first), a new
   potential is fitted, warm-started from that one, on the whole training set (the relaxed
   reference structures join it as they finish: near-hull, equilibrium data); the remaining
   survivors are re-evaluated with it at their stage geometry (one evaluation each).
2. *Predict*: every remaining survivor's energy, minus the composition-linear part of the
   potential's error (the stage audit's for the audited potential; for a refit one, fitted on
   the relaxed reference structures), as a distance to the *reference* hull built so far.
3. *Skip* those predicted above it by more than the bound: the reference hull only gets lower
   as more structures are relaxed, so they would stay above.

The bound is the last stage's audited bound, checked on the way: each relaxed survivor's
prediction is compared with where its reference relaxation actually landed relative to the
reference hull after its batch; should a prediction have been too low by more than the bound,
the bound used from then on is widened to that error (and the report says so). The final hull
holds reference energies only; skipped survivors are listed with their prediction.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from ase import Atoms

from csp.campaign import model
from csp.campaign.audit import ErrorModel, error_model
from csp.campaign.farm import chunks
from csp.campaign.learn import CampaignContext, relaxed_ok
from csp.campaign.references import RELAX, Job, run_references
from csp.campaign.screen import ScreenEntry, energies_above_hull
from csp.hull import atom_counts, build_hull, reference_entries
from csp.relax import BROKEN, STATUS_NAMES, pack

log = logging.getLogger("csp")

STEP = "reference_relaxed"


@dataclass(frozen=True)
class EnergyTask:
    """Energies (eV/atom) of `structures` with the potential `mtp_text` (a farm task)."""

    mtp_text: str
    species: tuple[str, ...]
    structures: tuple[Atoms, ...]


def run_energy_task(task: EnergyTask) -> list[float]:
    cells, positions, types, offsets = pack(list(task.structures), list(task.species))
    energies, _, _ = model.evaluator(model.load(task.mtp_text))(cells, positions, types, offsets)
    return [float(e) / len(a) for e, a in zip(energies, task.structures)]


def _energies(ctx: CampaignContext, mtp_text: str, structures: dict[int, Atoms]) -> dict[int, float]:
    ids = sorted(structures)
    batches = chunks(ids, ctx.search.screening.relax.batch_size)
    tasks = [EnergyTask(mtp_text, tuple(ctx.search.elements), tuple(structures[i] for i in b)) for b in batches]
    out: dict[int, float] = {}
    for b, values in zip(batches, ctx.farm.map(run_energy_task, tasks)):
        out.update(zip(b, values))
    return out


def _reference_hull(ctx: CampaignContext):
    """The hull of the reference relaxations so far, or None while an element is missing."""
    entries = reference_entries(ctx.store)
    present = {el for e in entries for el, n in e.composition.items() if n}
    if not entries or not set(ctx.search.elements) <= present:
        return None
    return build_hull(entries, ctx.search.elements)


def _above(hull, comp: dict, energy_per_atom: float) -> float:
    return float(hull.formation_energy(comp, energy_per_atom) - hull.hull_energy(comp))


class ReferenceStage:
    """Rank 0's driver of the reference stage (see the module docstring); every decision is
    recorded in the store, so a resumed run decides alike."""

    def __init__(self, ctx: CampaignContext):
        self.ctx, self.store, self.search = ctx, ctx.store, ctx.search
        self.last = len(self.search.screening.stages)
        self.summary = self.store.step_info(f"stage{self.last}/screened")
        em = self.summary["error_model"]
        self.em = ErrorModel(**{k: v for k, v in em.items() if k != "from_stage"}) if em["n"] else None
        self.settings = self.search.screening.reference_stage
        self.level = self.search.screening.stages[-1].level
        # every result of the last stage: a widened bound re-admits candidates its window dropped
        self.results = {r.candidate_id: r for r in self.store.stage_results(self.last, structures=False)}
        self.kept = self.store.kept_ids(self.last)
        self.comps = self.store.candidate_counts(sorted(self.results))
        entries = [ScreenEntry(i, self.comps[i], r.energy_per_atom) for i, r in self.results.items()
                   if relaxed_ok(r.status) and r.energy_per_atom is not None]
        present = {el for e in entries for el, n in e.composition.items() if n}
        # eV/atom above the stage's MTP hull; without an MTP energy of every pure element there is
        # no such hull (empty: the stage's order by id is kept)
        self.above = energies_above_hull(entries, self.search.elements) \
            if set(self.search.elements) <= present else {}
        self._memo: dict[tuple[int, str, int], float] = {}   # (potential round, kind, id) -> eV/atom

    # the potential used for predictions -----------------------------------------------------
    def _potential(self, k: int) -> tuple[int, str, float | None]:
        """(round, .mtp text, training RMSE) of the potential that plans batch `k`: the last
        refit before it, or the stage's audited potential (round -1)."""
        refits = [p for p in self.store.potentials(self.last + 1) if p["round"] < k]
        if refits:
            p = refits[-1]
            return p["round"], p["mtp"], p["extra"].get("rmse_energy")
        pid = self.summary["audited_potential_id"]
        p = next(p for p in self.store.potentials(self.last) if p["id"] == pid)
        return -1, p["mtp"], p["extra"].get("rmse_energy")

    def _refit(self, k: int) -> None:
        """Fit the round-`k` refit potential if the training set grew enough since the one in use."""
        if not self.settings.refit or any(p["round"] == k for p in self.store.potentials(self.last + 1)):
            return
        previous, text, rmse = self._potential(k)
        used = self.store.potentials(self.last + 1 if previous >= 0 else self.last)
        n_used = next(p["n_train"] for p in used if p["mtp"] == text)
        n_now = self.store.training_size()
        if n_now - n_used < max(1, self.settings.refit_growth * n_used):
            return
        training = [r.to_atoms() for r in self.store.training_set()]
        log.info("reference stage: refitting the level-%d potential on %d configurations (%d new reference"
                 " relaxations and single points since the one in use)", self.level, n_now, n_now - n_used)
        trained = model.train(self.level, self.search.elements, training, self.search.screening.training,
                              self.search.seed + 7 * (k + 1), self.ctx.farm, warm_start=text, warm_rmse=rmse)
        self.store.add_potential(self.last + 1, k, self.level, trained.text, trained.sigma, n_now,
                                 dict(trained.extra, reason="reference stage"))

    def _energies(self, round_no: int, text: str, kind: str, structures: dict[int, Atoms]) -> dict[int, float]:
        """eV/atom of `structures` with the round-`round_no` potential, each evaluated once per
        potential (a refit potential plans several batches; its energies do not change)."""
        new = {i: a for i, a in structures.items() if (round_no, kind, i) not in self._memo}
        for i, e in (_energies(self.ctx, text, new) if new else {}).items():
            self._memo[(round_no, kind, i)] = e
        return {i: self._memo[(round_no, kind, i)] for i in structures}

    def _shift(self, round_no: int, text: str) -> ErrorModel | None:
        """Composition-linear error of the potential: the stage audit's, or for a refit potential
        the one fitted on the relaxed reference structures (training points: only its linear
        part is used)."""
        if round_no < 0:
            return self.em
        relaxed = [r for r in self.store.reference_calls(RELAX) if r.ok and r.energy is not None
                   and r.candidate_id in self.results]
        structures = {r.id: r.to_atoms() for r in relaxed}
        mtp = self._energies(round_no, text, "relaxed", structures)
        errors = [mtp[r.id] - r.energy / len(structures[r.id]) for r in relaxed]
        return error_model(errors, [atom_counts(structures[r.id]) for r in relaxed], self.search.elements)

    def _predict(self, k: int, remaining: list[int], hull) -> dict[int, tuple[float, float]]:
        """(predicted eV/atom above `hull`, the reference hull so far, and predicted reference
        energy eV/atom) of the remaining survivors that have an MTP energy, with the potential
        that plans batch `k`; without a reference hull (the first batch), the stage's own
        prediction: above its MTP hull, with the audit's shift."""
        if hull is None:
            shift = self.em.shift if self.em is not None else (lambda comp: 0.0)
            return {i: (self.above[i], self.results[i].energy_per_atom - shift(self.comps[i]))
                    for i in remaining if i in self.above}
        round_no, text, _ = self._potential(k)
        usable = [i for i in remaining if self.results[i].status != STATUS_NAMES[BROKEN]
                  and self.results[i].energy_per_atom is not None]
        if round_no < 0:
            energy = {i: self.results[i].energy_per_atom for i in usable}
        else:
            todo = [i for i in usable if (round_no, "survivor", i) not in self._memo]
            self._energies(round_no, text, "survivor", self.store.stage_structures(self.last, todo))
            energy = {i: self._memo[(round_no, "survivor", i)] for i in usable}
        em = self._shift(round_no, text)
        shift = em.shift if em is not None else (lambda comp: 0.0)
        return {i: (_above(hull, self.comps[i], energy[i] - shift(self.comps[i])), energy[i] - shift(self.comps[i]))
                for i in usable if np.isfinite(energy[i])}

    def _check(self, info: dict) -> dict[str, float]:
        """How far below its predicted energy each relaxed survivor of a batch landed (eV/atom:
        predicted − reference energy of its relaxation; the error a distance to the hull
        predicted with it can have, whatever the hull)."""
        out = {}
        for key, predicted in info.get("predicted_energy", {}).items():
            rec = self.store.reference_call(f"relax:c{key}")
            if rec is not None and rec.ok and rec.energy is not None:
                out[key] = predicted - rec.energy / sum(self.comps[int(key)].values())
        return out

    def run(self) -> None:
        store = self.store
        if store.step_done(STEP):
            return
        bound = self.summary["bound"]
        above = self.above
        broken = STATUS_NAMES[BROKEN]
        order = sorted(self.kept, key=lambda i: (self.results[i].status != broken, above.get(i, np.inf), i))
        batch = self.settings.batch or max(8, 2 * getattr(self.ctx.farm, "size", 1))
        early = self.settings.early_stop and self.em is not None and np.isfinite(bound)
        log.info("reference relaxation of up to %d survivors in order of MTP energy above the hull, %d at a time%s",
                 len(order), batch, f"; skipping those predicted > {1000 * bound:.1f} meV/atom above the reference"
                 " hull" if early else "")
        remaining = list(order)
        admitted = set(order)
        readmitted: list[int] = []
        skipped: dict[str, float] = {}
        relaxed = 0
        worst = 0.0   # largest (prediction − actual) seen so far, eV/atom
        k = 0
        while remaining:
            step = f"reference/batch{k}"
            info = store.step_info(step)
            if info is None:
                newly: dict[str, float] = {}
                pred: dict[int, tuple[float, float]] = {}
                if early:
                    if k > 0:
                        self._refit(k)
                    hull = _reference_hull(self.ctx) if k > 0 else None
                    pred = self._predict(k, remaining, hull)
                    if hull is not None:
                        newly = {str(i): d for i, (d, _) in pred.items() if d > max(bound, worst)}
                rest = [i for i in remaining if str(i) not in newly]
                info = {"ids": rest[:batch], "skipped": newly,
                        "predicted": {str(i): pred[i][0] for i in rest[:batch] if i in pred},
                        "predicted_energy": {str(i): pred[i][1] for i in rest[:batch] if i in pred},
                        "bound": max(bound, worst), "potential_round": self._potential(k)[0] if early and k else None}
                store.mark_step(step, info)
            skipped.update(info["skipped"])
            taken = set(info["ids"])
            remaining = [i for i in remaining if str(i) not in info["skipped"] and i not in taken]
            structures = store.stage_structures(self.last, info["ids"])
            jobs = [Job(f"relax:c{i}", i, structures[i]) for i in info["ids"]]
            run_references(store, self.ctx.farm, self.search, jobs, RELAX, progress=self.ctx.progress)
            for job in jobs:
                rec = store.reference_call(job.key)
                if rec is not None and rec.ok:
                    store.add_to_training(rec.id, self.last + 1, 0, "reference relaxation")
            relaxed += len(jobs)
            checked = store.step_info(f"{step}/checked")
            if checked is None:   # recorded: the hull a resumed run sees later is lower
                checked = self._check(info)
                store.mark_step(f"{step}/checked", checked)
            errors = checked
            if errors and max(errors.values()) > max(bound, worst):
                log.warning("reference stage: survivor(s) %s landed %.1f meV/atom below their prediction, beyond the"
                            " bound of %.1f meV/atom: the bound is widened to that error",
                            ", ".join(f"c{i}" for i, e in errors.items() if e > max(bound, worst)),
                            1000 * max(errors.values()), 1000 * max(bound, worst))
            if errors and max(errors.values()) > max(bound, worst):
                # the window was too narrow as well: what it dropped within the widened bound
                # joins the queue (lowest above the stage's hull first), and skipped survivors are
                # predicted again against the wider bound
                wider = max(errors.values())
                back = sorted((i for i, d in above.items() if d <= wider and i not in admitted),
                              key=lambda i: (above[i], i))
                if back:
                    log.warning("reference stage: %d candidates the last stage's window dropped are within the widened"
                                " bound: they join the queue", len(back))
                admitted.update(back)
                readmitted += back
                remaining += [int(i) for i in sorted(skipped, key=lambda i: (skipped[i], int(i)))] + back
                skipped = {}
            worst = max([worst, *errors.values()])
            if info["skipped"]:
                log.info("reference stage: %d survivors predicted above the reference hull by more than the bound:"
                         " skipped", len(info["skipped"]))
            k += 1
        stop = "all survivors relaxed" if not skipped else \
            f"the remaining {len(skipped)} survivors are predicted above the reference hull by more than the bound"
        refits = len(store.potentials(self.last + 1))
        final_bound = max(bound, worst)
        store.mark_step(STEP, {
            "survivors": len(order), "readmitted": len(readmitted), "relaxed": relaxed, "batches": k, "refits": refits,
            "bound": bound, "bound_used": final_bound, "max_prediction_error": worst, "stop_reason": stop,
            "skipped": [{"candidate_id": int(i), "predicted_above_hull": d, "reason": "predicted above the reference"
                         f" hull by more than the bound ({1000 * final_bound:.1f} meV/atom)"}
                        for i, d in sorted(skipped.items(), key=lambda t: int(t[0]))]})
        log.info("reference stage: %d of %d survivors relaxed, %d refits (%s)", relaxed, len(order), refits, stop)


def run_reference_stage(ctx: CampaignContext) -> None:
    """Reference relaxations of the last stage's survivors (resumable, recorded batch by batch)."""
    ReferenceStage(ctx).run()

