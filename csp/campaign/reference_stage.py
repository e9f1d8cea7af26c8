"""The reference relaxation of the survivors, in order, stopping when the hull is certain.

Survivors of the last stage are relaxed with the reference in order of their MTP energy above
the stage's MTP hull (those whose relaxation broke on extrapolation first: their MTP energy says
nothing), `batch` at a time on the farm. Before each batch, every remaining survivor is
predicted against the *reference* hull built so far: its MTP energy per atom minus the
composition-linear part of the stage's audited error (`ErrorModel.shift`), as a distance to
the reference hull. A survivor predicted above it by more than the stage's bound is skipped:
the reference hull only gets lower as more structures are relaxed, so it would stay above. The
final hull holds reference energies only; skipped survivors are listed with their prediction.

Each finished relaxation's final structure joins the training set (for the potentials the user
exports); the potential is not refit here.
"""

from __future__ import annotations

import logging

import numpy as np

from csp.campaign.audit import ErrorModel
from csp.campaign.learn import CampaignContext, relaxed_ok
from csp.campaign.references import RELAX, Job, run_references
from csp.campaign.results import reference_entries
from csp.campaign.screen import ScreenEntry, energies_above_hull
from csp.hull import atom_counts
from csp.relax import BROKEN, STATUS_NAMES

log = logging.getLogger("csp")

STEP = "reference_relaxed"


def _predict(ctx: CampaignContext, remaining: list[int], mtp_energy: dict[int, float], comps: dict[int, dict],
             em: ErrorModel) -> dict[int, float]:
    """Predicted eV/atom above the reference hull so far (only ids that can be predicted)."""
    from csp.hull import build_hull

    entries = reference_entries(ctx.store)
    present = {el for e in entries for el, n in e.composition.items() if n}
    if not entries or not set(ctx.search.elements) <= present:
        return {}
    hull = build_hull(entries, ctx.search.elements)
    out = {}
    for i in remaining:
        if i not in mtp_energy or not np.isfinite(mtp_energy[i]):
            continue
        comp = comps[i]
        e = mtp_energy[i] - em.shift(comp)
        out[i] = float(hull.formation_energy(comp, e) - hull.hull_energy(comp))
    return out


def run_reference_stage(ctx: CampaignContext) -> None:
    """Reference relaxations of the last stage's survivors (resumable, recorded batch by batch)."""
    store, search = ctx.store, ctx.search
    if store.step_done(STEP):
        return
    last = len(search.screening.stages)
    summary = store.step_info(f"stage{last}/screened")
    em = ErrorModel(**{k: v for k, v in summary["error_model"].items() if k != "from_stage"}) \
        if summary["error_model"]["n"] else None
    bound = summary["bound"]
    settings = search.screening.reference_stage
    results = {r.candidate_id: r for r in store.stage_results(last)}
    kept = store.kept_ids(last)
    comps = {i: atom_counts(results[i].atoms) for i in kept}
    entries = [ScreenEntry(i, comps[i], results[i].energy_per_atom) for i in kept
               if relaxed_ok(results[i].status) and results[i].energy_per_atom is not None]
    present = {el for e in entries for el, n in e.composition.items() if n}
    # without an MTP energy of every pure element there is no MTP hull: keep the stage's order by id
    above = energies_above_hull(entries, search.elements) if set(search.elements) <= present else {}
    broken = STATUS_NAMES[BROKEN]
    order = sorted(kept, key=lambda i: (results[i].status != broken, above.get(i, np.inf), i))
    mtp_energy = {i: results[i].energy_per_atom for i in kept
                  if results[i].status != broken and results[i].energy_per_atom is not None}
    batch = settings.batch or max(8, 2 * getattr(ctx.farm, "size", 1))
    early = settings.early_stop and em is not None and np.isfinite(bound)
    log.info("reference relaxation of up to %d survivors in order of MTP energy above the hull, %d at a time%s",
             len(order), batch, f"; skipping those predicted > {1000 * bound:.1f} meV/atom above the reference hull"
             if early else "")
    remaining = list(order)
    skipped: dict[str, float] = {}
    relaxed = 0
    k = 0
    while remaining:
        step = f"reference/batch{k}"
        info = store.step_info(step)
        if info is None:
            newly = {}
            if early and k > 0:
                pred = _predict(ctx, remaining, mtp_energy, comps, em)
                newly = {str(i): d for i, d in pred.items() if d > bound}
            rest = [i for i in remaining if str(i) not in newly]
            info = {"ids": rest[:batch], "skipped": newly}
            store.mark_step(step, info)
        skipped.update(info["skipped"])
        taken = set(info["ids"])
        remaining = [i for i in remaining if str(i) not in info["skipped"] and i not in taken]
        jobs = [Job(f"relax:c{i}", i, results[i].atoms) for i in info["ids"]]
        run_references(store, ctx.farm, search, jobs, RELAX, progress=ctx.progress)
        for job in jobs:
            rec = store.reference_call(job.key)
            if rec is not None and rec.ok:
                store.add_to_training(rec.id, last + 1, 0, "reference relaxation")
        relaxed += len(jobs)
        if info["skipped"]:
            log.info("reference stage: %d survivors predicted above the reference hull by more than the bound:"
                     " skipped", len(info["skipped"]))
        k += 1
    stop = "all survivors relaxed" if not skipped else \
        f"the remaining {len(skipped)} survivors are predicted above the reference hull by more than the bound"
    store.mark_step(STEP, {
        "survivors": len(order), "relaxed": relaxed, "batches": k,
        "bound": bound, "stop_reason": stop,
        "skipped": [{"candidate_id": int(i), "predicted_above_hull": d, "reason": "predicted above the reference hull"
                     f" by more than the bound ({1000 * bound:.1f} meV/atom)"} for i, d in sorted(skipped.items(),
                                                                                     key=lambda t: int(t[0]))]})
    log.info("reference stage: %d of %d survivors relaxed (%s)", relaxed, len(order), stop)
