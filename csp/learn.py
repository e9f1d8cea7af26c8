"""The self-learning loop of one screening stage (learning on the fly, as MLIP does it).

    relax (pass p, potential of round r) ─► extrapolative configurations (γ > select_threshold)
         ▲                                          │ MaxVol selection (most informative, ≤ max_selected)
         │                                          ▼
    retrain (round r+1) ◄── reference single points (in parallel on the farm)

A pass relaxes its `pending` candidates in batches on the task farm; a structure whose grade
passes `break_threshold` stops and is re-relaxed (from its stage start structure) after the
retraining. When a pass meets no extrapolation, every candidate relaxed with an older potential
is re-relaxed with the current one, so that all energies of a stage come from ONE potential
(a hull mixes no potentials). The loop ends when a pass with the current potential is clean, or
after `max_rounds` trainings (then it says so). The first potential of the campaign is trained
on reference single points of a small, diverse, automatically chosen subset of candidates.

Everything is written to the store as it arrives (relaxation results per batch, reference calls
one by one, potentials per round), and each step is named, so a killed run resumes where it was.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
from ase import Atoms

from csp.campaign import model
from csp.campaign.farm import Farm, chunks
from csp.campaign.store import CampaignStore
from csp.config import Search
from csp.relax import CONVERGED, MAX_STEPS, STATUS_NAMES, BROKEN, pack, relax_batch

log = logging.getLogger("csp")


@dataclass
class StageState:
    """Where a stage stands: its number (1-based), MTP level, current potential and round."""

    stage: int
    level: int
    potential_id: int
    round: int
    mtp: Any
    active_set: Any
    sigma: float


# -- farm tasks (module-level so that workers can unpickle them) ------------------------------

def relax_task(args: tuple) -> dict:
    """Relax one batch with an MTP; returns per-structure rows and extrapolative snapshots."""
    mtp, active_set, species, ids, structures, settings = args
    cells, positions, types, offsets = pack(structures, species)
    if active_set is not None:
        evaluate, grade = model.graded_evaluator(mtp, active_set)
    else:
        evaluate, grade = model.evaluator(mtp), None
    res = relax_batch(evaluate, cells, positions, types, offsets,
                      fmax=settings["fmax"], stress_tol=settings["stress_tol"], max_steps=settings["max_steps"],
                      optimizer=settings["optimizer"], grade=grade, select_threshold=settings["select_threshold"],
                      break_threshold=settings["break_threshold"])
    rows = []
    for b, cid in enumerate(ids):
        rows.append({"candidate_id": int(cid), "status": STATUS_NAMES[int(res.status[b])],
                     "energy": float(res.energies[b]) if np.isfinite(res.energies[b]) else None,
                     "grade": float(res.max_grade[b]), "steps": int(res.steps[b]),
                     "atoms": res.structure(b, types, species)})
    snaps = []
    for s in res.snapshots:
        sl = slice(offsets[s.index], offsets[s.index + 1])
        atoms = Atoms([species[t] for t in types[sl]], positions=s.positions, cell=s.cell, pbc=True)
        snaps.append((int(ids[s.index]), float(s.grade), atoms))
    return {"rows": rows, "snapshots": snaps, "evaluations": res.evaluations}


def reference_task(args: tuple) -> dict:
    """One reference call (single point or relaxation) in its own working directory."""
    from csp.reference import get_reference

    section, operation, atoms, workdir = args
    ref = get_reference(section)
    out = ref.single_point(atoms, workdir) if operation == "single_point" else ref.relax(atoms, workdir)
    return {"ok": out.ok, "atoms": out.atoms, "energy": out.energy, "forces": out.forces,
            "stress": out.stress, "reason": out.reason, "seconds": out.seconds, "workdir": out.workdir,
            "steps": out.steps}


# -- helpers ------------------------------------------------------------------------------------

def run_references(store: CampaignStore, farm: Farm, search: Search, jobs: Sequence[tuple[str, int | None, Atoms]],
                   operation: str, training: tuple[int, int, str] | None = None,
                   progress: Callable[[str, int], Any] | None = None) -> int:
    """Reference calls for `jobs` (key, candidate id, structure) not yet in the store; each
    result is stored as it arrives (and added to the training set when `training` is given).
    Returns the number of calls made."""
    todo = [j for j in jobs if store.reference_call(j[0]) is None]
    if not todo:
        return 0
    bar = progress(f"reference {operation.replace('_', ' ')}s", len(todo)) if progress else None
    kind = "single_point" if operation == "single_point" else "relax"
    calls_dir = search.run_dir / "reference"

    def store_one(i: int, out: dict) -> None:
        key, cid, _ = todo[i]
        store.add_reference_call(key, kind, cid, out["ok"], atoms=out["atoms"], energy=out["energy"],
                                 forces=out["forces"], stress=out["stress"], reason=out["reason"],
                                 seconds=out["seconds"], workdir=out["workdir"], steps=out["steps"],
                                 training=training)
        if not out["ok"]:
            log.warning("reference %s %s failed: %s", kind, key, out["reason"])
        if bar is not None:
            bar.update(1)

    items = [(search.reference.section, operation, atoms, str(calls_dir / key.replace(":", "-")))
             for key, _, atoms in todo]
    farm.map(reference_task, items, on_result=store_one)
    if bar is not None:
        bar.close()
    return len(todo)


def diverse_subset(candidates: Sequence[tuple[int, Atoms]], n: int, seed: int) -> list[int]:
    """Ids of `n` candidates spread over compositions and cell sizes (smallest cells first).

    Round-robin over compositions ordered by composition, so that every composition (the pure
    elements first) is represented before any gets a second structure; within a composition
    smaller cells come first (cheaper reference calls), ties broken by a seeded shuffle."""
    rng = np.random.default_rng(seed)
    groups: dict[tuple, list[tuple[int, float, int]]] = {}
    for cid, atoms in candidates:
        syms = atoms.get_chemical_symbols()
        key = tuple(sorted((s, syms.count(s) / len(syms)) for s in set(syms)))
        groups.setdefault(key, []).append((len(atoms), float(rng.random()), cid))
    order = sorted(groups, key=lambda k: (len(k), k))
    queues = [sorted(groups[k]) for k in order]
    picked: list[int] = []
    depth = 0
    while len(picked) < n and any(depth < len(q) for q in queues):
        for q in queues:
            if depth < len(q) and len(picked) < n:
                picked.append(q[depth][2])
        depth += 1
    return picked


# -- the loop -----------------------------------------------------------------------------------

class StageLearner:
    """Runs one stage's self-learning relaxation over `start` structures (candidate id -> Atoms)."""

    def __init__(self, search: Search, store: CampaignStore, farm: Farm, stage: int, level: int,
                 start: dict[int, Atoms], progress: Callable[[str, int], Any] | None = None):
        self.search, self.store, self.farm = search, store, farm
        self.stage, self.level, self.start = stage, level, start
        self.species = list(search.elements)
        self.al = search.screening.active_learning
        self.progress = progress
        self.tag = f"stage{stage}"
        self.round_base = 0      # max_rounds counts trainings after this round

    # where results go (overridden by the evolutionary search, csp.campaign.evolution) ---------
    def _pass_done_ids(self, pass_no: int, pending: list[int]) -> set[int]:
        return self.store.stage_pass_done_ids(self.stage, pass_no)

    def _save_batch(self, pass_no: int, rows: list[dict], snapshots: list) -> None:
        with self.store.transaction():
            self.store.set_stage_results(self.stage, rows, pass_no=pass_no)
            self.store.add_snapshots(self.stage, pass_no, snapshots)

    def _results(self) -> dict[int, Any]:
        """id -> latest result (with .status, .potential_id, .grade) of the structures in `start`."""
        return {r.candidate_id: r for r in self.store.stage_results(self.stage)}

    def _snapshots(self, pass_no: int) -> list[tuple[int, int, float, Atoms]]:
        return self.store.snapshots(self.stage, pass_no)

    def _single_point_job(self, pass_no: int, snap: tuple[int, int, float, Atoms]) -> tuple[str, int | None, Atoms]:
        """(reference-call key, candidate id, structure) of a selected snapshot."""
        return f"sp:{self.tag}:pass{pass_no}:c{snap[1]}", snap[1], snap[3]

    # potentials -----------------------------------------------------------------------------
    def _train(self, round_no: int) -> None:
        """Train the potential of `round_no` on the whole training set and store it."""
        if any(p["round"] == round_no for p in self.store.potentials(self.stage)):
            return
        training = [r.to_atoms() for r in self.store.training_set()]
        tr = self.search.screening.training
        seed = self.search.seed + 1000 * self.stage + round_no
        log.info("%s: training level-%d potential (round %d) on %d configurations", self.tag, self.level,
                 round_no, len(training))
        trained = model.train(self.level, self.species, training, tr, seed, self.farm,
                              grade_threshold=self.al.select_threshold)
        self.store.add_potential(self.stage, round_no, self.level, trained.text, trained.sigma, len(training),
                                 trained.extra)
        log.info("%s: round %d potential σ = %.2f meV/atom (cross-validated)", self.tag, round_no,
                 1000 * trained.sigma)

    def _state(self, round_no: int | None = None) -> StageState:
        """The stage's potential of `round_no` (default: the latest) with its active set over the
        training set it was trained on."""
        pots = self.store.potentials(self.stage)
        pot = pots[-1] if round_no is None else next(p for p in pots if p["round"] == round_no)
        mtp = model.load(pot["mtp"])
        training = [r.to_atoms() for r in self.store.training_set()][:pot["n_train"]]
        return StageState(self.stage, self.level, pot["id"], pot["round"], mtp,
                          model.active_set(mtp, training, self.species), pot["sigma"])

    # passes ---------------------------------------------------------------------------------
    def _relax_pass(self, pass_no: int, state: StageState, pending: list[int]) -> None:
        step = f"{self.tag}/pass{pass_no}/relaxed"
        if self.store.step_done(step):
            return
        done = self._pass_done_ids(pass_no, pending)
        todo = [c for c in pending if c not in done]
        rs = self.search.screening.relax
        settings = {"fmax": rs.fmax, "stress_tol": rs.stress_tol, "max_steps": rs.max_steps, "optimizer": rs.optimizer,
                    "select_threshold": self.al.select_threshold, "break_threshold": self.al.break_threshold}
        batches = chunks(todo, rs.batch_size)
        items = [(state.mtp, state.active_set, self.species, list(b), [self.start[c] for c in b], settings)
                 for b in batches]
        bar = self.progress(f"{self.tag} relax (pass {pass_no}, round {state.round})", len(todo)) \
            if self.progress else None

        def store_batch(i: int, out: dict) -> None:
            for row in out["rows"]:
                row["potential_id"] = state.potential_id
            self._save_batch(pass_no, out["rows"], out["snapshots"])
            if bar is not None:
                bar.update(len(out["rows"]))

        self.farm.map(relax_task, items, on_result=store_batch)
        if bar is not None:
            bar.close()
        results = self._results()
        counts = {name: 0 for name in STATUS_NAMES}
        for c in pending:
            counts[results[c].status] += 1
        self.store.mark_step(step, {"round": state.round, "pending": len(pending), "status": counts,
                                    "snapshots": len(self._snapshots(pass_no))})
        log.info("%s pass %d (round %d): %s", self.tag, pass_no, state.round,
                 ", ".join(f"{v} {k}" for k, v in counts.items() if v))

    def _learn_from(self, pass_no: int, state: StageState) -> None:
        """Select the most informative snapshots of a pass, compute them, retrain (round + 1)."""
        step = f"{self.tag}/pass{pass_no}/learned"
        if self.store.step_done(step):
            return
        snaps = self._snapshots(pass_no)
        chosen = model.select(state.mtp, state.active_set, [s[3] for s in snaps], self.al.max_selected,
                              self.species)
        jobs = [self._single_point_job(pass_no, snaps[i]) for i in chosen]
        log.info("%s: %d extrapolative configurations, %d selected for reference single points",
                 self.tag, len(snaps), len(jobs))
        run_references(self.store, self.farm, self.search, jobs, "single_point",
                       training=(self.stage, state.round + 1, f"{self.tag} pass {pass_no}"),
                       progress=self.progress)
        self._train(state.round + 1)
        self.store.mark_step(step, {"selected": len(jobs)})

    def run(self) -> StageState:
        """Run (or resume) the loop; returns the final state of the stage."""
        self._train(0)
        state = self._state()
        ids = sorted(self.start)
        pending = ids
        pass_no = 0
        while True:
            done = self.store.step_info(f"{self.tag}/pass{pass_no}/relaxed")
            # a finished pass (resume) is replayed with the potential it used, not the latest
            state = self._state(None if done is None else done["round"])
            self._relax_pass(pass_no, state, pending)
            info = self.store.step_info(f"{self.tag}/pass{pass_no}/relaxed")
            results = self._results()
            if info["snapshots"] == 0:
                stale = [c for c in ids if results[c].potential_id != state.potential_id]
                if not stale:
                    log.info("%s: no extrapolation with the round-%d potential; stage converged", self.tag,
                             state.round)
                    break
                pending = stale
                pass_no += 1
                continue
            if state.round + 1 - self.round_base >= self.al.max_rounds:
                log.warning("%s: max_rounds (%d) reached with %d extrapolative structures left", self.tag,
                            self.al.max_rounds, info["snapshots"])
                self.store.set_meta(f"{self.tag}_max_rounds_reached", True)
                break
            self._learn_from(pass_no, state)
            pending = [c for c in pending if results[c].status == STATUS_NAMES[BROKEN]
                       or (results[c].grade or 0.0) > self.al.select_threshold]
            pass_no += 1
        return state


def relaxed_ok(status: str) -> bool:
    """Whether a stage result counts as a relaxed structure for the hull."""
    return status in (STATUS_NAMES[CONVERGED], STATUS_NAMES[MAX_STEPS])
