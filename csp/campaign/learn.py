"""The self-learning relaxation loop of one screening stage (or one evolution generation).

    plan pass p ─► relax / re-evaluate on the farm ─► extrapolative configurations (γ > select)
         ▲                                                   │ MaxVol (never one already learned)
         │                                                   ▼
    retrain (round r+1, warm start) ◄──── reference single points (each configuration once)

Every pass has a recorded *plan* that says, for the potential of its round, what each item needs:
- `relax`: relax from the stage's start structure (never relaxed, or its relaxation broke —
  γ > break_threshold — or failed with an older potential);
- `evaluate`: energy, forces and grade at its latest relaxed geometry (relaxed with an older
  potential): one evaluation instead of a relaxation;
- `warm`: re-relax from its latest geometry (after the evaluations, only items whose forces
  are not converged with the current potential and whose energy lies within `polish_range()`
  eV/atom of the hull of the current energies — for a stage, 1.5 × its final audited bound —
  or that are among `polish_items()` (a stage's audit sample); the others keep the evaluated
  energy, an upper bound of their relaxed one);
- `restart`: relax again from the item's original structure, once per loop and only in a loop
  that starts from the originals (stage 1, a generation), after the evaluations, when its latest
  geometry has more symmetry than the original (`RAISED_SYMPREC`): the first potential may have
  left it on a saddle that symmetry makes stationary, which no later evaluation or warm
  relaxation leaves. A warm re-relaxation that ends with raised symmetry is repeated from the
  original in the same task. Later stages start from where stage 1 left each item and record
  the flag only.
So every energy of a stage comes from one potential, and a retraining costs one evaluation per
candidate plus a short warm relaxation of those near the hull, not a full re-relaxation.

A pool of at least three times its pilot (settings `active_learning.pilot_*`) is learned on a
recorded, composition-stratified random pilot first: passes cover only the pilot until one meets
no extrapolation left to learn (or a third of max_rounds is used), and only then is the rest of
the pool relaxed — once, by a potential that already knows the chemistry. Start structures are
read from the store a batch at a time (`csp.campaign.start`): rank 0 holds compositions and
pass rows, not the pool.

The loop stops when a pass meets no extrapolation and nothing is left to do, or after
`max_rounds` trainings (it says so). Extrapolative configurations already in the training set
are never selected; when MaxVol selects none of the others, the most extrapolative ones are
computed directly; when none is left to compute, they are accepted with a warning.

Resume is exact: plans, pass rows (per pass, not only the latest), snapshots, reference calls
and potentials are stored as they happen, and a pass replays from its own rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np
from ase import Atoms

from csp.campaign import model
from csp.campaign.farm import Farm, chunks
from csp.campaign.references import SINGLE_POINT, Job, run_references
from csp.campaign.screen import ScreenEntry, energies_above_hull
from csp.campaign.start import StartStructures, in_memory
from csp.campaign.store import CampaignStore, PassRow, structure_hash
from csp.config import MTPRelaxSettings, Search
from csp.relax import BROKEN, CONVERGED, EVALUATED, FAILED, STATUS_NAMES, USABLE, pack, relax_batch
from csp.structures.spg import symmetry_raised

log = logging.getLogger("csp")

# a large pool is learned on a pilot subset first (settings active_learning.pilot_*), so that
# the whole pool is relaxed once with a potential that already knows the chemistry (relaxed from
# the start by the first, 20-configuration potential, 97 % of a 9,808-candidate pool broke on
# extrapolation and was relaxed again); the pilot ends at the latest after this share of max_rounds
PILOT_ROUNDS_FRACTION = 1 / 3

# Å: a relaxation that ends with more space-group operations (within this tolerance) than its
# item's original structure may have stopped on a saddle its symmetry makes stationary, not at
# the minimum a relaxation of the original reaches (an EMT L1_0 CuAu taken to B2 along its Bain
# path by an early potential stayed there through every later pass and stage: 6 meV/atom above
# its minimum, and off the hull). Such an item is relaxed again from its original structure, as
# a brute-force relaxation would be (`restart`); the flag costs two spglib calls per relaxation.
RAISED_SYMPREC = 1e-2

# what a pass does to an item (see the module docstring), in the order a pass runs them
KINDS = ("relax", "evaluate", "warm", "restart")


def relaxed_ok(status: str) -> bool:
    """Whether a result has an energy the screening may use (relaxed, or evaluated)."""
    return status in USABLE


@dataclass(frozen=True)
class CampaignContext:
    """What every campaign step works with: the search, its store, the task farm, progress bars."""

    search: Search
    store: CampaignStore
    farm: Farm
    progress: Callable[[str, int], Any] | None = None


@dataclass
class StageState:
    """A potential of a loop: its stage key in the potentials table, round, MTP and active set."""

    stage: int
    level: int
    potential_id: int
    round: int
    mtp: Any
    active_set: Any
    sigma: float | None


# -- farm tasks (module level so that workers can unpickle them) ------------------------------

@dataclass(frozen=True)
class RelaxTask:
    """One batch for a farm worker: relax (or, evaluate_only, evaluate) `structures` with a
    graded MTP. Thresholds are extrapolation grades γ.

    `origins`: each item's original structure (before any relaxation), when `structures` are not
    those: each row says whether its end has more symmetry than its origin (`RAISED_SYMPREC`);
    with `repeat_raised`, such a relaxation is repeated from the origin with the same potential,
    and that result is the item's row. `raised`: for evaluate_only, whether each evaluated
    geometry had raised symmetry (carried to the row; the geometry does not change)."""

    mtp: Any
    active_set: Any
    species: tuple[str, ...]
    ids: tuple[int, ...]
    structures: tuple[Atoms, ...]
    relax: MTPRelaxSettings
    select_threshold: float
    break_threshold: float
    evaluate_only: bool = False
    origins: tuple[Atoms, ...] | None = None
    repeat_raised: bool = False
    raised: tuple[bool, ...] | None = None


def _max_per_structure(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    return np.maximum.reduceat(values, offsets[:-1]) if len(values) else np.zeros(0)


def _evaluate_rows(task: RelaxTask, evaluate: Any, grade: Any) -> dict:
    """Energy, forces and grade of each structure where it is (no steps)."""
    cells, positions, types, offsets = pack(list(task.structures), list(task.species))
    energies, forces, stresses = evaluate(cells, positions, types, offsets)
    grades = grade(cells, positions, types, offsets)
    fmax = _max_per_structure(np.linalg.norm(forces, axis=1), offsets)
    smax = np.abs(stresses).max(axis=1)
    rows, snaps = [], []
    for b, item in enumerate(task.ids):
        if not np.isfinite(energies[b]):
            status = STATUS_NAMES[FAILED]
        elif grades[b] > task.break_threshold:
            status = STATUS_NAMES[BROKEN]
        elif fmax[b] <= task.relax.fmax and smax[b] <= task.relax.stress_tol:
            status = STATUS_NAMES[CONVERGED]
        else:
            status = EVALUATED
        atoms = task.structures[b].copy()
        atoms.info = {}
        rows.append({"candidate_id": int(item), "status": status,
                     "energy": float(energies[b]) if np.isfinite(energies[b]) else None,
                     "grade": float(grades[b]), "steps": 0, "fmax": float(fmax[b]), "atoms": atoms,
                     "raised": bool(task.raised[b]) if task.raised is not None else None})
        if grades[b] > task.select_threshold:
            snaps.append((int(item), float(grades[b]), atoms.copy()))
    return {"rows": rows, "snapshots": snaps}


def _relax_rows(task: RelaxTask, structures: Sequence[Atoms], ids: Sequence[int], evaluate: Any,
                grade: Any) -> tuple[list[dict], list[tuple[int, float, Atoms]]]:
    """Rows and extrapolative snapshots of relaxing `structures` (items `ids`)."""
    species = list(task.species)
    cells, positions, types, offsets = pack(list(structures), species)
    rs = task.relax
    res = relax_batch(evaluate, cells, positions, types, offsets, fmax=rs.fmax, stress_tol=rs.stress_tol,
                      max_steps=rs.max_steps, optimizer=rs.optimizer, grade=grade,
                      select_threshold=task.select_threshold, break_threshold=task.break_threshold)
    rows = [{"candidate_id": int(item), "status": STATUS_NAMES[int(res.status[b])],
             "energy": float(res.energies[b]) if np.isfinite(res.energies[b]) else None,
             "grade": float(res.max_grade[b]), "steps": int(res.steps[b]), "fmax": float(res.fmax[b]),
             "atoms": res.structure(b, types, species)} for b, item in enumerate(ids)]
    snaps = []
    for s in res.snapshots:
        sl = slice(offsets[s.index], offsets[s.index + 1])
        snaps.append((int(ids[s.index]), float(s.grade),
                      Atoms([species[t] for t in types[sl]], positions=s.positions, cell=s.cell, pbc=True)))
    return rows, snaps


def _mark_raised(rows: list[dict], origins: Sequence[Atoms]) -> list[int]:
    """Set each row's `raised` flag (usable relaxations only); indices of the raised rows."""
    out = []
    for b, (row, origin) in enumerate(zip(rows, origins)):
        row["raised"] = row["status"] in USABLE and symmetry_raised(origin, row["atoms"], RAISED_SYMPREC)
        if row["raised"]:
            out.append(b)
    return out


def run_relax_task(task: RelaxTask) -> dict:
    """Rows (per structure: status, energy eV, grade, steps, fmax eV/Å, final structure, raised)
    and extrapolative snapshots (item, γ, configuration) of one batch."""
    evaluate, grade = model.graded_evaluator(task.mtp, task.active_set)
    if task.evaluate_only:
        return _evaluate_rows(task, evaluate, grade)
    rows, snaps = _relax_rows(task, task.structures, task.ids, evaluate, grade)
    origins = task.origins if task.origins is not None else task.structures
    again = _mark_raised(rows, origins)
    if task.origins is not None and task.repeat_raised and again:   # again from the origin: the item's row
        redo, more = _relax_rows(task, [origins[b] for b in again], [task.ids[b] for b in again], evaluate, grade)
        _mark_raised(redo, [origins[b] for b in again])
        for b, row in zip(again, redo):
            row["steps"] += rows[b]["steps"]
            rows[b] = row
        snaps += more
    return {"rows": rows, "snapshots": snaps}


# -- where results go ----------------------------------------------------------------------------

class ResultSink(Protocol):
    """Where a loop publishes each item's latest result, and how its items are named.

    `key`: the loop's key for its pass rows and snapshots (a stage number; a negative key for a
    generation of the evolution)."""

    key: int

    def publish(self, pass_no: int, rows: list[dict]) -> None: ...

    def label(self, item: int) -> str: ...

    def candidate_id(self, item: int) -> int | None: ...


class StageSink:
    """Results of screening stage `stage` (items are candidate ids) into the stage table."""

    def __init__(self, store: CampaignStore, stage: int):
        self.store, self.key = store, stage

    def publish(self, pass_no: int, rows: list[dict]) -> None:
        self.store.set_stage_results(self.key, rows, pass_no=pass_no)

    def label(self, item: int) -> str:
        return f"c{item}"

    def candidate_id(self, item: int) -> int | None:
        return item


# -- the loop ------------------------------------------------------------------------------------

class StageLearner:
    """Self-learning relaxation of `start` (item -> start structure) with a level-`level` MTP whose
    rounds are stored under `potential_stage` in the potentials table. `round_base`: rounds
    before it do not count for max_rounds (the evolution continues one potential across
    generations)."""

    def __init__(self, ctx: CampaignContext, sink: ResultSink, level: int, start: Mapping[int, Atoms], tag: str,
                 potential_stage: int, round_base: int = 0,
                 polish_range: Callable[[], float] = lambda: float("inf"),
                 polish_items: Callable[[], set[int]] = set,
                 origins: Callable[[Sequence[int]], dict[int, Atoms]] | None = None):
        self.ctx, self.store, self.search = ctx, ctx.store, ctx.search
        self.start: StartStructures = start if isinstance(start, StartStructures) else in_memory(start)
        self.sink, self.level, self.tag = sink, level, tag
        self.potential_stage, self.round_base = potential_stage, round_base
        # eV/atom above the hull inside which items are re-relaxed (warm) after a retraining; a
        # function of what the store holds when a plan is made, so that a resumed run plans alike
        self.polish_range = polish_range
        # items re-relaxed (warm) after a retraining whatever their energy (a stage's audit sample:
        # audited at the geometry its own potential relaxes it to, as the window will judge it)
        self.polish_items = polish_items
        # items' original structures, when the start structures are not those (a later stage
        # starts from the previous one's geometry): what a relaxation with raised symmetry restarts from
        self.origins = origins
        self.species = tuple(ctx.search.elements)
        self.al = ctx.search.screening.active_learning
        self.items = list(self.start)   # sorted
        self._states: dict[int, StageState] = {}

    # potentials -----------------------------------------------------------------------------
    def _potential_rows(self) -> list[dict]:
        return self.store.potentials(self.potential_stage)

    def latest_round(self) -> int | None:
        pots = self._potential_rows()
        return pots[-1]["round"] if pots else None

    def train(self, round_no: int, reason: str) -> None:
        """Train the potential of `round_no` on the whole training set (warm start from the
        previous round of the same level) and store it; no-op if it exists."""
        pots = self._potential_rows()
        if any(p["round"] == round_no for p in pots):
            return
        training = [r.to_atoms() for r in self.store.training_set()]
        tr = self.search.screening.training
        previous = [p for p in pots if p["round"] < round_no and p["level"] == self.level]
        warm = previous[-1]["mtp"] if previous else None
        warm_rmse = previous[-1]["extra"].get("rmse_energy") if previous else None
        seed = self.search.seed + 1000 * self.potential_stage + round_no
        log.info("%s: training level-%d potential (round %d, %s) on %d configurations%s", self.tag, self.level,
                 round_no, reason, len(training), " from the previous round's parameters" if warm else "")
        trained = model.train(self.level, self.species, training, tr, seed, self.ctx.farm,
                              grade_threshold=self.al.select_threshold, warm_start=warm, warm_rmse=warm_rmse,
                              callback=_training_progress(self.tag, round_no,
                                                          model.training_iterations(tr.max_iter, warm is not None)))
        extra = dict(trained.extra, reason=reason)
        self.store.add_potential(self.potential_stage, round_no, self.level, trained.text, trained.sigma,
                                 len(training), extra)
        log.info("%s: round %d potential: training RMSE %.2f meV/atom (%d iterations)", self.tag, round_no,
                 1000 * trained.extra["rmse_energy"], trained.extra["n_iter"])

    def state(self, round_no: int | None = None) -> StageState:
        """The potential of `round_no` (default: the latest) with its active set over the
        training set it was trained on."""
        pots = self._potential_rows()
        pot = pots[-1] if round_no is None else next(p for p in pots if p["round"] == round_no)
        if pot["id"] not in self._states:
            mtp = model.load(pot["mtp"])
            training = [r.to_atoms() for r in self.store.training_set()][:pot["n_train"]]
            self._states = {pot["id"]: StageState(self.potential_stage, pot["level"], pot["id"], pot["round"], mtp,
                                                  model.active_set(mtp, training, self.species), pot["sigma"])}
        return self._states[pot["id"]]

    def rounds_exhausted(self, round_no: int) -> bool:
        return round_no + 1 - self.round_base >= self.al.max_rounds

    # results ---------------------------------------------------------------------------------
    def latest(self, structures: bool = False) -> dict[int, PassRow]:
        """item -> its latest pass row (items of this loop only)."""
        rows = self.store.relaxations(self.sink.key, latest=True, structures=structures)
        return {i: rows[i] for i in self.items if i in rows}

    def energies_above_hull(self, rows: dict[int, PassRow]) -> dict[int, float]:
        """eV/atom above the hull of the usable energies in `rows` (inf where none). When an
        element has no usable energy (e.g. its relaxations broke), no hull can be built: every
        usable item counts as on it (0), so that nothing is screened out on a missing hull."""
        entries = [ScreenEntry(i, self.start.counts(i), r.energy_per_atom) for i, r in rows.items()
                   if relaxed_ok(r.status) and r.energy_per_atom is not None]
        present = {el for e in entries for el, n in e.composition.items() if n}
        if not set(self.search.elements) <= present:
            missing = sorted(set(self.search.elements) - present)
            log.warning("%s: no usable MTP energy of pure %s yet: no MTP hull, nothing is screened out", self.tag,
                        ", ".join(missing))
            return {i: (0.0 if any(e.id == i for e in entries) else float("inf")) for i in rows}
        above = energies_above_hull(entries, self.search.elements) if entries else {}
        return {i: above.get(i, float("inf")) for i in rows}

    # plans and passes ------------------------------------------------------------------------
    def _pilot(self) -> list[int]:
        """The pilot subset (recorded when the loop starts): a composition-stratified random
        `pilot_fraction` of a large pool (at least `pilot_min`, at most `pilot_max` items) that
        the loop learns on first; empty for a pool under three times that size."""
        step = f"{self.tag}/pilot"
        info = self.store.step_info(step)
        if info is None:
            al = self.al
            n = min(max(al.pilot_min, int(np.ceil(al.pilot_fraction * len(self.items)))), al.pilot_max)
            ids = [] if len(self.items) < 3 * n else \
                sorted(diverse_subset([(i, self.start.counts(i)) for i in self.items], n,
                                      self.search.seed + 104729 * (self.potential_stage + 1), smallest_first=False))
            info = {"ids": ids, "round": self.state().round}
            self.store.mark_step(step, info)
        return info["ids"]

    def _scope(self, pass_no: int, state: StageState) -> list[int]:
        """Items a new plan for pass `pass_no` covers: the pilot subset until a pilot pass met no
        extrapolation left to learn (or the pilot used PILOT_ROUNDS_FRACTION of max_rounds), then
        every item. Decided from recorded steps only, so a resumed run decides alike."""
        pilot = self._pilot()
        if not pilot or self.store.step_done(f"{self.tag}/pilot/done"):
            return self.items
        reason = None
        if pass_no > 0:
            relaxed = self.store.step_info(f"{self.tag}/pass{pass_no - 1}/relaxed")
            learned = self.store.step_info(f"{self.tag}/pass{pass_no - 1}/learned")
            started = self.store.step_info(f"{self.tag}/pilot")["round"]
            if not relaxed["snapshots"]:
                reason = "no extrapolation left"
            elif learned is None or not learned["added"]:
                reason = "nothing new to learn"
            elif state.round - started >= max(1, int(PILOT_ROUNDS_FRACTION * self.al.max_rounds)):
                reason = "pilot rounds used"
        if reason is None:
            return pilot
        self.store.mark_step(f"{self.tag}/pilot/done", {"pass": pass_no, "round": state.round, "reason": reason})
        log.info("%s: pilot of %d structures learned (%s) with the round-%d potential; now the whole pool", self.tag,
                 len(pilot), reason, state.round)
        return self.items

    def _plan(self, pass_no: int) -> dict | None:
        """The recorded plan of pass `pass_no`, or a new one computed from the store (and
        recorded); None when every item is up to date with the latest potential."""
        step = f"{self.tag}/pass{pass_no}/plan"
        plan = self.store.step_info(step)
        if plan is not None:
            return plan
        state = self.state()
        scope = self._scope(pass_no, state)
        latest = self.latest()
        pid = state.potential_id
        redo = (STATUS_NAMES[BROKEN], STATUS_NAMES[FAILED])
        relax = [i for i in scope if i not in latest
                 or (latest[i].status in redo and latest[i].potential_id != pid)]
        evaluate = [i for i in scope if i in latest and latest[i].potential_id != pid
                    and latest[i].status not in redo]
        warm: list[int] = []
        restart: list[int] = []
        if not relax and not evaluate:
            # left where a relaxation raised its symmetry: relax from the original, once per loop,
            # in a loop that starts from the originals (a later stage starts from where this one
            # left them; a symmetry a relaxation of the original keeps gaining is the item's own)
            if self.origins is None:
                restarted = {i for p in range(pass_no)
                             for i in (self.store.step_info(f"{self.tag}/pass{p}/plan") or {}).get("restart", [])}
                restart = [i for i in scope if latest[i].raised and i not in restarted]
            loose = [i for i in scope if latest[i].status == EVALUATED and not latest[i].raised]
            if loose:
                reach, extra = self.polish_range(), self.polish_items()
                above = self.energies_above_hull(latest) if np.isfinite(reach) else {}
                warm = [i for i in loose if above.get(i, 0.0) <= reach or i in extra]
            if not warm and not restart:
                return None
        plan = {"round": state.round, "potential_id": pid, "relax": relax, "evaluate": evaluate, "warm": warm,
                "restart": restart}
        self.store.mark_step(step, plan)
        return plan

    def _run_pass(self, pass_no: int, plan: dict, state: StageState) -> None:
        step = f"{self.tag}/pass{pass_no}/relaxed"
        if self.store.step_done(step):
            return
        done = self.store.relaxation_items(self.sink.key, pass_no)
        rs = self.search.screening.relax
        for kind in KINDS:
            todo = [i for i in plan.get(kind, []) if i not in done]
            if not todo:
                continue

            def tasks(todo: list[int] = todo, kind: str = kind) -> Any:
                """Batches built as ranks ask for them: structures are read from the store per
                batch (the start structure, or the item's geometry before this pass)."""
                for b in chunks(todo, rs.batch_size):
                    raised = origins = None
                    if kind == "relax":
                        structures = self.start.many(b)
                        origins = self.origins(b) if self.origins is not None else None
                    elif kind == "restart":
                        structures = self.origins(b) if self.origins is not None else self.start.many(b)
                    else:
                        rows = self.store.relaxations(self.sink.key, pass_no - 1, latest=True, items=b)
                        structures = {i: r.atoms for i, r in rows.items()}
                        raised = tuple(bool(rows[i].raised) for i in b)
                        if kind == "warm":
                            origins = self.origins(b) if self.origins is not None else self.start.many(b)
                    yield RelaxTask(state.mtp, state.active_set, self.species, tuple(b),
                                    tuple(structures[i] for i in b), rs, self.al.select_threshold,
                                    self.al.break_threshold, evaluate_only=kind == "evaluate",
                                    origins=None if origins is None else tuple(origins[i] for i in b),
                                    repeat_raised=kind == "warm",
                                    raised=raised if kind == "evaluate" else None)
            what = {"relax": "relax", "evaluate": "re-evaluate", "warm": "re-relax (warm)",
                    "restart": "relax again from the original (symmetry raised)"}[kind]
            bar = self.ctx.progress(f"{self.tag} {what} (pass {pass_no}, round {state.round})", len(todo)) \
                if self.ctx.progress else None

            def store_batch(_: int, out: dict, kind: str = kind, bar: Any = bar) -> None:
                for row in out["rows"]:
                    row["potential_id"] = state.potential_id
                with self.store.transaction():
                    self.store.add_relaxations(self.sink.key, pass_no, kind, out["rows"])
                    self.sink.publish(pass_no, out["rows"])
                    self.store.add_snapshots(self.sink.key, pass_no, out["snapshots"])
                if bar is not None:
                    bar.update(len(out["rows"]))

            self.ctx.farm.map(run_relax_task, tasks(), on_result=store_batch, collect=False)
            if bar is not None:
                bar.close()
        rows = self.store.relaxations(self.sink.key, pass_no, structures=False)
        counts: dict[str, int] = {}
        for r in rows.values():
            counts[r.status] = counts.get(r.status, 0) + 1
        steps = int(sum(r.steps or 0 for r in rows.values()))
        info = {**{k: len(plan.get(k, [])) for k in KINDS}, "round": state.round, "status": counts, "steps": steps,
                "raised": sum(1 for r in rows.values() if r.raised),
                "snapshots": len(self.store.snapshots(self.sink.key, pass_no))}
        self.store.mark_step(step, info)
        log.info("%s pass %d (round %d): %s; %s", self.tag, pass_no, state.round,
                 ", ".join(f"{len(plan[k])} {k}" for k in KINDS if plan.get(k)),
                 ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))

    def _learn(self, pass_no: int, state: StageState) -> None:
        """Reference single points of the most informative new extrapolative configurations of a
        pass, then the next round's potential. The choice is recorded before any call, so that a
        resumed run computes exactly the same configurations (after some of them joined the
        training set, a fresh MaxVol choice would differ)."""
        step = f"{self.tag}/pass{pass_no}/learned"
        if self.store.step_done(step):
            return
        snaps = self.store.snapshots(self.sink.key, pass_no)
        choice = self.store.step_info(f"{self.tag}/pass{pass_no}/selected")
        if choice is None:
            known = self.store.training_hashes()
            fresh, hashes = [], set()
            for k, sn in enumerate(snaps):
                h = structure_hash(sn[3])
                if h not in known and h not in hashes:
                    fresh.append(k)
                    hashes.add(h)
            chosen = model.select(state.mtp, state.active_set, [snaps[k][3] for k in fresh], self.al.max_selected,
                                  self.species)
            how = "MaxVol"
            if not chosen and fresh:   # MaxVol saw nothing new in the rows: compute the worst directly
                order = sorted(range(len(fresh)), key=lambda c: (-snaps[fresh[c]][2], snaps[fresh[c]][1]))
                chosen = sorted(order[:self.al.max_selected])
                how = "highest grade (MaxVol selected none)"
            choice = {"snapshots": [snaps[fresh[c]][0] for c in chosen], "fresh": len(fresh), "how": how}
            self.store.mark_step(f"{self.tag}/pass{pass_no}/selected", choice)
        by_id = {sn[0]: sn for sn in snaps}
        picked = [by_id[i] for i in choice["snapshots"]]
        jobs = [Job(f"sp:{self.tag}:pass{pass_no}:{self.sink.label(sn[1])}", self.sink.candidate_id(sn[1]), sn[3])
                for sn in picked]
        log.info("%s: %d extrapolative configurations (%d already learned), %d selected by %s", self.tag,
                 len(snaps), len(snaps) - choice["fresh"], len(jobs), choice["how"])
        run_references(self.store, self.ctx.farm, self.search, jobs, SINGLE_POINT,
                       training=(self.potential_stage, state.round + 1, f"{self.tag} pass {pass_no}"),
                       progress=self.ctx.progress)
        known = self.store.training_hashes()
        added = sum(structure_hash(job.atoms) in known for job in jobs)   # none was known before
        if added:
            self.train(state.round + 1, "learn")
        else:
            log.warning("%s: nothing new to learn from %d extrapolative configurations (already in the training"
                        " set or their reference calls failed): accepted as they are", self.tag, len(snaps))
        self.store.mark_step(step, {"snapshots": len(snaps), "selected": len(jobs), "added": added,
                                    "accepted": 0 if added else len(snaps)})

    def converge(self) -> StageState:
        """Run (or resume) passes until every item is up to date with the latest potential and
        the last pass met no extrapolation it could learn from; returns the latest state."""
        if self.latest_round() is None:
            self.train(0, "start")
        pass_no = 0
        while True:
            plan = self._plan(pass_no)
            if plan is None:
                break
            state = self.state(plan["round"])
            self._run_pass(pass_no, plan, state)
            if self.store.step_info(f"{self.tag}/pass{pass_no}/relaxed")["snapshots"]:
                if self.rounds_exhausted(state.round):
                    if not self.store.get_meta(f"{self.tag}_max_rounds_reached"):
                        log.warning("%s: max_rounds (%d) reached; extrapolative structures remain", self.tag,
                                    self.al.max_rounds)
                    self.store.set_meta(f"{self.tag}_max_rounds_reached", True)
                else:
                    self._learn(pass_no, state)
            pass_no += 1
        return self.state()

    def passes(self) -> int:
        """Number of passes recorded so far."""
        n = 0
        while self.store.step_done(f"{self.tag}/pass{n}/plan"):
            n += 1
        return n




def _training_progress(tag: str, round_no: int, max_iter: int) -> Callable[[int, float], None]:
    """Optimiser callback: a log line every ~10 % of the iterations (training is the longest
    step of a stage; the log shows it is alive)."""
    every = max(1, max_iter // 10)

    def report(iteration: int, loss: float) -> None:
        if iteration and iteration % every == 0:
            log.info("%s: training round %d: iteration %d/%d, loss %.4g", tag, round_no, iteration, max_iter, loss)

    return report


def diverse_subset(candidates: Sequence[tuple[int, Mapping[str, float]]], n: int, seed: int,
                   smallest_first: bool = True, rank: Mapping[int, float] | None = None) -> list[int]:
    """Ids of `n` candidates, given as (id, composition {element: atoms in the cell}), spread
    over compositions.

    Round-robin over compositions ordered by composition, so that every composition (the pure
    elements first) is represented before any gets a second structure; within a composition
    the lowest `rank` comes first when given (e.g. eV/atom above a hull), else smaller cells
    (cheaper reference calls) unless `smallest_first` is False; ties (or everything) ordered by
    a seeded shuffle."""
    rng = np.random.default_rng(seed)
    groups: dict[tuple, list[tuple[float, float, int]]] = {}
    for cid, counts in candidates:
        natoms = sum(counts.values())
        key = tuple(sorted((s, c / natoms) for s, c in counts.items() if c))
        first = rank[cid] if rank is not None else (natoms if smallest_first else 0.0)
        groups.setdefault(key, []).append((first, float(rng.random()), cid))
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
