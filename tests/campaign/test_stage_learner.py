"""The learning loop and the stage (relax ─► learn ─► audit ─► window) with a stub potential.

The stub's energies are EMT's plus a known error that depends on the composition only (so forces
and relaxed geometries are EMT's); its grade says "extrapolating" (γ = 5) for a composition the
training set has never seen and "broken" (γ = 50) for compositions in `BREAKING` before they are
learned. Training is instant. Everything runs in one process (the serial farm), so each test
takes seconds and checks the loop's logic exactly: convergence, max_rounds, stale items
re-evaluated instead of re-relaxed, every reference configuration computed once, the audit
recovering the known error, and exact resume after a kill at every step.
"""

from __future__ import annotations

import json
import math
import sqlite3

import numpy as np
import pytest
from ase.calculators.emt import EMT

from csp.campaign import model
from csp.campaign.farm import Farm, SerialComm
from csp.campaign.generate import generate_candidates
from csp.campaign.learn import CampaignContext, StageLearner, StageSink
from csp.campaign.stage import Stage
from csp.campaign.store import CampaignStore, structure_hash
from csp.config import load_search
from csp.relax import ase_evaluator

SPECIES = ("Cu", "Pd")
BREAKING: set[tuple] = set()


def composition_key(symbols) -> tuple:
    symbols = list(symbols)
    return tuple(sorted((s, round(symbols.count(s) / len(symbols), 6)) for s in set(symbols)))


def stub_error(symbols, amplitude: float) -> float:
    """The stub's error per atom (eV/atom): a non-linear function of the Cu fraction."""
    x = list(symbols).count("Cu") / len(symbols)
    return amplitude * math.sin(9.0 * x + 0.4)


class StubPotential:
    def __init__(self, text: str):
        data = json.loads(text)
        self.known = {tuple(tuple(p) for p in k) for k in data["known"]}
        self.amplitude = data["amplitude"]
        self.metadata: dict = {}


class StubModel:
    """Replaces csp.campaign.model's train / load / active_set / graded_evaluator / select."""

    def __init__(self, amplitude: float = 0.0):
        self.amplitude = amplitude
        self.trainings = 0

    def train(self, level, species, training, settings, seed, farm=None, grade_threshold=None, warm_start=None,
              callback=None, warm_rmse=None):
        self.trainings += 1
        known = sorted({composition_key(a.get_chemical_symbols()) for a in training})
        return model.Trained(json.dumps({"known": known, "amplitude": self.amplitude}), None,
                             {"rmse_energy": 0.0, "n_iter": 0})

    @staticmethod
    def load(text):
        return StubPotential(text)

    @staticmethod
    def active_set(mtp, training, species):
        return mtp.known

    def graded_evaluator(self, mtp, aset):
        emt = ase_evaluator(EMT, list(SPECIES))

        def evaluate(cells, positions, types, offsets):
            e, f, s = emt(cells, positions, types, offsets)
            for b in range(len(cells)):
                sym = [SPECIES[t] for t in types[offsets[b]:offsets[b + 1]]]
                e[b] += len(sym) * stub_error(sym, mtp.amplitude)
            return e, f, s

        def grade(cells, positions, types, offsets):
            out = np.ones(len(cells))
            for b in range(len(cells)):
                key = composition_key(SPECIES[t] for t in types[offsets[b]:offsets[b + 1]])
                if key not in aset:
                    out[b] = 50.0 if key in BREAKING else 5.0
            return out

        return evaluate, grade

    def evaluator(self, mtp):
        return self.graded_evaluator(mtp, mtp.known)[0]

    @staticmethod
    def select(mtp, aset, structures, n, species):
        picked, seen = [], set()
        for i, atoms in enumerate(structures):
            key = composition_key(atoms.get_chemical_symbols())
            if key not in aset and key not in seen and len(picked) < n:
                picked.append(i)
                seen.add(key)
        return picked


@pytest.fixture
def stub(monkeypatch):
    def install(amplitude: float = 0.0) -> StubModel:
        s = StubModel(amplitude)
        for name in ("train", "load", "active_set", "graded_evaluator", "evaluator", "select"):
            monkeypatch.setattr(model, name, getattr(s, name))
        return s
    return install


YAML = """elements: [Cu, Pd]
candidates: {{enumerate: {{lattices: [fcc], max_atoms: {n}}}, prototypes: false}}
screening:
  stages: {stages}
  active_learning: {{initial_training: 2, max_selected: {sel}, max_rounds: {rounds}{al}}}
  audit: {{min_size: 6, fraction: 0.0, max_rounds: 2}}
"""


def setup(tmp_path, n=3, sel=2, rounds=30, name="run", al="", extra="", stages="[{level: 6}]"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(YAML.format(n=n, sel=sel, rounds=rounds, al=al, stages=stages) + extra)
    search = load_search(path, run_dir=tmp_path / name)
    store = CampaignStore(search.run_dir, create=True)
    ids = store.add_candidates(generate_candidates(search))
    ctx = CampaignContext(search, store, Farm(SerialComm()))
    # the initial training set: the two pure elements' single points
    from csp.campaign.references import Job, run_references
    pure = [i for i in ids if len(set(store.candidate(i).get_chemical_symbols())) == 1][:2]
    run_references(store, ctx.farm, search, [Job(f"sp:initial:c{i}", i, store.candidate(i)) for i in pure],
                   "single_point", training=(0, 0, "initial"))
    return ctx


def learner(ctx):
    start = dict(ctx.store.candidates())
    return StageLearner(ctx, StageSink(ctx.store, 1), 6, start, "stage1", potential_stage=1, polish_range=lambda: 0.1)


def test_loop_converges_with_one_potential_and_no_repeated_reference_call(tmp_path, stub):
    stub()
    ctx = setup(tmp_path)
    lr = learner(ctx)
    state = lr.converge()
    latest = lr.latest()
    assert len(latest) == 10
    assert {r.potential_id for r in latest.values()} == {state.potential_id}     # one potential
    # every composition learned: 1 (Cu, Pd), 1/2, 1/3, 2/3 -> the final potential grades all ≤ 1
    assert all(r.grade <= 1.0 for r in latest.values())
    # each candidate was relaxed from its start exactly once; later passes re-evaluate instead
    plans = [ctx.store.step_info(f"stage1/pass{p}/plan") for p in range(lr.passes())]
    assert sum(len(p["relax"]) for p in plans) == 10
    assert sum(len(p["evaluate"]) for p in plans) >= 10
    calls = ctx.store.reference_calls("single_point")
    hashes = [structure_hash(c.atoms) for c in calls]
    assert len(hashes) == len(set(hashes))
    # what the final potential knows is exactly the training set's compositions
    assert state.mtp.known == {composition_key(a.get_chemical_symbols())
                               for a in (r.to_atoms() for r in ctx.store.training_set())}


def test_max_rounds_stops_and_says_so(tmp_path, stub):
    stub()
    ctx = setup(tmp_path, sel=1, rounds=2)
    lr = learner(ctx)
    state = lr.converge()
    assert state.round == 1
    assert ctx.store.get_meta("stage1_max_rounds_reached") is True
    assert {r.potential_id for r in lr.latest().values()} == {state.potential_id}


def test_broken_relaxations_restart_from_the_start_structure(tmp_path, stub):
    stub()
    BREAKING.add(composition_key(["Cu", "Pd"]))
    try:
        ctx = setup(tmp_path)
        lr = learner(ctx)
        lr.converge()
        first = ctx.store.relaxations(1, 0, structures=False)
        broken = [i for i, r in first.items() if r.status == "broken"]
        assert broken
        plans = [ctx.store.step_info(f"stage1/pass{p}/plan") for p in range(lr.passes())]
        again = [i for p in plans[1:] for i in p["relax"]]
        assert sorted(again) == sorted(broken)
        assert all(r.status == "converged" for i, r in lr.latest().items() if i in broken)
    finally:
        BREAKING.clear()


def test_selection_of_nothing_new_is_accepted_not_looped(tmp_path, stub, monkeypatch):
    """Extrapolative configurations the selection cannot choose (already learned) end the loop with
    a recorded acceptance, not a stall; those it can choose are computed directly."""
    s = stub()
    monkeypatch.setattr(model, "select", lambda *a, **k: [])
    ctx = setup(tmp_path)
    lr = learner(ctx)
    lr.converge()
    learned = [ctx.store.step_info(f"stage1/pass{p}/learned") for p in range(lr.passes())]
    learned = [x for x in learned if x]
    assert learned and learned[0]["selected"] > 0     # highest-grade fallback computed them
    assert s.trainings >= 2


def test_audit_recovers_the_known_error(tmp_path, stub):
    """The stub's energies are off by a known composition-dependent error; its training error is
    zero. The stage's audited σ must see the real error (within a factor 2 of the RMS of its
    non-linear part over the pool), and the window must keep every true hull phase."""
    amp = 0.02
    stub(amp)
    ctx = setup(tmp_path, n=4)
    Stage(ctx, 1).run()
    info = ctx.store.step_info("stage1/screened")
    em = info["error_model"]
    assert em["n"] >= 6
    cands = ctx.store.candidates()
    x = np.array([a.get_chemical_symbols().count("Cu") / len(a) for _, a in cands])
    err = np.array([stub_error(a.get_chemical_symbols(), amp) for _, a in cands])
    X = np.stack([x, 1 - x], axis=1)
    resid = err - X @ np.linalg.lstsq(X, err, rcond=None)[0]
    true = float(np.sqrt(np.mean(resid ** 2)))
    assert 0.5 * true < em["sigma"] < 2.0 * true, (em["sigma"], true)
    assert info["bound"] == pytest.approx(4.0 * em["sigma"])
    # every point was audited at its own potential's minimum (re-relaxed, not a stale evaluation)
    passes = [ctx.store.relaxations(1, p, structures=False) for p in range(StageLearner(
        ctx, StageSink(ctx.store, 1), 6, {}, "stage1", potential_stage=1).passes())]
    for point in ctx.store.audit_points(1):
        mine = [r for pr in passes for r in pr.values() if r.item == point.candidate_id
                and r.potential_id == point.potential_id and r.energy_per_atom == point.mtp_energy_per_atom]
        assert mine and mine[-1].status in ("converged", "max_steps"), (point, mine)
    # the true (EMT) hull phases of the pool are all kept
    from csp.hull import HullEntry, build_hull
    results = {r.candidate_id: r for r in ctx.store.stage_results(1)}
    entries = []
    for cid, _ in cands:
        atoms = results[cid].atoms.copy()
        atoms.calc = EMT()
        entries.append(HullEntry.from_atoms(atoms, id=str(cid), energy=atoms.get_potential_energy()))
    truth = {int(r.id) for r in build_hull(entries, ["Cu", "Pd"]).stable()}
    assert truth <= set(ctx.store.kept_ids(1))


def _tables(path) -> dict:
    db = sqlite3.connect(path)
    out = {}
    for table, cols in (("relaxations", "stage, pass, item, kind, status, potential_id, energy, grade, steps, structure,"
                                        " raised"),
                        ("potentials", "stage, round, level, n_train, mtp"),
                        ("reference_calls", "key, kind, candidate_id, ok, energy, structure_hash"),
                        ("training", "reference_call_id, stage, round, source"),
                        ("audit", "stage, round, candidate_id, mtp_energy_per_atom, ref_energy_per_atom"),
                        ("stage_results", "candidate_id, stage, status, energy, kept, pass")):
        out[table] = sorted(db.execute(f"SELECT {cols} FROM {table}").fetchall(), key=repr)
    out["steps"] = sorted(db.execute("SELECT name, info FROM steps").fetchall())
    db.close()
    return out


class Killed(Exception):
    pass


def _kill_resume_compare(monkeypatch, ctx, method: str, k: int, run, reference: dict) -> None:
    """Run `run(ctx)` with CampaignStore.`method` dying right after its k-th call, resume with a
    fresh store, and assert that every table equals `reference` (steps: the same names)."""
    original = getattr(CampaignStore, method)
    count = {"n": 0}

    def dying(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        count["n"] += 1
        if count["n"] == k:
            raise Killed(args[0])
        return out

    monkeypatch.setattr(CampaignStore, method, dying)
    with pytest.raises(Killed):
        run(ctx)
    monkeypatch.setattr(CampaignStore, method, original)
    ctx.store.close()
    store = CampaignStore(ctx.search.run_dir, create=True)
    run(CampaignContext(ctx.search, store, ctx.farm))
    store.close()
    got = _tables(ctx.search.run_dir / "campaign.sqlite")
    for table in reference:
        if table == "steps":
            assert [s[0] for s in got[table]] == [s[0] for s in reference[table]], k
            continue
        assert got[table] == reference[table], (k, table)


@pytest.mark.parametrize("method", ["mark_step", "add_reference_call"])
def test_resume_after_a_kill_at_every_step_is_exact(tmp_path, stub, monkeypatch, method):
    """Kill the stage right after its k-th recorded step (plans, passes, selections, trainings,
    audits) or its k-th reference call (in the middle of a round's single points), resume from
    the store, and compare every table with an uninterrupted run."""
    stub(0.02)
    ref_ctx = setup(tmp_path, n=4, name="straight")
    Stage(ref_ctx, 1).run()
    ref_ctx.store.close()
    reference = _tables(tmp_path / "straight" / "campaign.sqlite")
    n_steps = len(reference["steps"]) if method == "mark_step" else len(reference["reference_calls"])
    assert n_steps > 10
    for k in range(2, n_steps, 3):
        ctx = setup(tmp_path, n=4, name=f"kill-{method}-{k}")
        _kill_resume_compare(monkeypatch, ctx, method, k, lambda c: Stage(c, 1).run(), reference)


def test_reference_stage_stops_when_the_hull_is_certain(tmp_path, stub):
    """The survivors' reference relaxations go in order of MTP energy above the hull and skip those
    predicted above the reference hull by more than the bound. Against brute force (EMT relaxation
    of every survivor): the hull is the same, and every skipped survivor is truly above it."""
    from csp.campaign.reference_stage import run_reference_stage
    from csp.hull import final_hull
    from csp.hull import HullEntry, build_hull
    from csp.reference import get_reference

    stub(0.002)
    ctx = setup(tmp_path, n=4)
    Stage(ctx, 1).run()
    run_reference_stage(ctx)
    info = ctx.store.step_info("reference_relaxed")
    kept = ctx.store.kept_ids(1)
    assert info["survivors"] == len(kept)
    assert info["relaxed"] + len(info["skipped"]) == len(kept)
    ref = get_reference({"calculator": "emt"})
    results = {r.candidate_id: r for r in ctx.store.stage_results(1)}
    brute = []
    for cid in kept:
        out = ref.relax(results[cid].atoms, tmp_path / "brute" / str(cid))
        brute.append(HullEntry.from_atoms(out.atoms, id=str(cid), energy=out.energy))
    truth = build_hull(brute, ["Cu", "Pd"])
    mine = final_hull(ctx.store, ["Cu", "Pd"])
    assert {r.formula for r in mine.stable()} == {r.formula for r in truth.stable()}
    by_id = {r.id: r for r in truth.rows}
    for s in info["skipped"]:
        assert by_id[str(s["candidate_id"])].e_above_hull > 0.0
    assert info["skipped"], "nothing was skipped: the test does not exercise the stopping rule"


def test_a_large_pool_learns_on_its_pilot_first(tmp_path, stub, monkeypatch):
    """A pool at least three times the pilot size is learned on a composition-stratified pilot
    subset first: pass 0 relaxes only the pilot; the rest of the pool is relaxed once, after a
    pilot pass met no extrapolation, with the potential the pilot trained — and nothing the
    pilot left unlearned breaks."""
    stub()
    BREAKING.add(composition_key(["Cu", "Pd"]))
    try:
        ctx = setup(tmp_path, n=4, al=", pilot_fraction: 0.0, pilot_min: 5")
        lr = learner(ctx)
        state = lr.converge()
    finally:
        BREAKING.clear()
    pilot = ctx.store.step_info("stage1/pilot")["ids"]
    n = len(lr.items)
    assert len(pilot) == 5 and n >= 15
    # stratified: the pilot's compositions are all different (round-robin over compositions)
    comps = [composition_key(ctx.store.candidate(i).get_chemical_symbols()) for i in pilot]
    assert len(set(comps)) == 5
    plans = [ctx.store.step_info(f"stage1/pass{p}/plan") for p in range(lr.passes())]
    assert sorted(plans[0]["relax"]) == pilot
    done = ctx.store.step_info("stage1/pilot/done")
    assert done["reason"] == "no extrapolation left"
    full = plans[done["pass"]]
    rest = sorted(set(lr.items) - set(pilot))
    assert sorted(i for i in full["relax"] if i not in pilot) == rest
    # before the pilot was done, no item outside it was touched
    for p in plans[:done["pass"]]:
        assert set(p["relax"]) | set(p["evaluate"]) | set(p["warm"]) <= set(pilot)
    latest = lr.latest()
    assert {r.potential_id for r in latest.values()} == {state.potential_id}
    assert sum(len(p["relax"]) for p in plans) < 1.5 * n    # relaxed from the start ~once each


def test_reference_stage_resumes_exactly_after_a_kill_at_every_step(tmp_path, stub, monkeypatch):
    """The reference stage (batches, refits, predictions, checks) killed after each recorded
    step and resumed gives the tables of an uninterrupted run."""
    from csp.campaign import reference_stage

    refit = "  reference_stage: {refit_growth: 0.0}\n"
    stub(0.004)
    ref_ctx = setup(tmp_path, n=4, name="straight", extra=refit)
    Stage(ref_ctx, 1).run()
    n_before = len(ref_ctx.store.steps())
    reference_stage.run_reference_stage(ref_ctx)
    info = ref_ctx.store.step_info("reference_relaxed")
    assert info["refits"] >= 1 and info["batches"] >= 2
    ref_ctx.store.close()
    reference = _tables(tmp_path / "straight" / "campaign.sqlite")
    n_steps = len(reference["steps"]) - n_before
    for k in range(1, n_steps):
        ctx = setup(tmp_path, n=4, name=f"kill-ref-{k}", extra=refit)
        Stage(ctx, 1).run()
        _kill_resume_compare(monkeypatch, ctx, "mark_step", k, reference_stage.run_reference_stage, reference)


def test_a_later_stage_starts_where_the_coarse_one_left_off(tmp_path, stub):
    """Stage 1 is a coarse filter (its window never narrower than audit.min_bound_coarse); stage 2
    relaxes what it kept from stage 1's geometry, tops its training set up with the structures
    lowest above stage 1's hull first, never audits a top-up structure; the last stage's window
    floor is min_bound."""
    stub(0.004)
    ctx = setup(tmp_path, n=4, stages="[{level: 6}, {level: 8}]")
    Stage(ctx, 1).run()
    Stage(ctx, 2).run()
    first = ctx.store.step_info("stage1/screened")
    second = ctx.store.step_info("stage2/screened")
    assert first["bound"] >= ctx.search.screening.audit.min_bound_coarse
    assert second["bound"] == pytest.approx(max(4.0 * second["sigma"], second["error_model"]["max"],
                                                ctx.search.screening.audit.min_bound))
    kept = ctx.store.kept_ids(1)
    plan = ctx.store.step_info("stage2/pass0/plan")
    assert sorted(plan["relax"]) == sorted(kept)
    trained = {r.candidate_id for r in ctx.store.training_set()}
    top_up = ctx.store.step_info("stage2/top-up/plan")["ids"]
    assert not set(top_up) & {p.candidate_id for p in ctx.store.audit_points(2)}
    if top_up:   # within each composition, the lowest above stage 1's hull came first
        from csp.campaign.screen import ScreenEntry, energies_above_hull
        from csp.hull import atom_counts

        rows = {r.candidate_id: r for r in ctx.store.stage_results(1) if r.candidate_id in kept}
        above = energies_above_hull([ScreenEntry(i, atom_counts(r.atoms), r.energy_per_atom)
                                     for i, r in rows.items()], ["Cu", "Pd"])
        for i in top_up:
            same = [j for j in kept if composition_key(rows[j].atoms.get_chemical_symbols())
                    == composition_key(rows[i].atoms.get_chemical_symbols()) and j not in trained]
            assert all(above[i] <= above[j] + 1e-12 for j in same)


def _l10_and_b2(store):
    """The 2-atom CuPd candidate (L1_0) and the B2 geometry its Bain path reaches at c/a = 1 (a
    saddle of EMT that symmetry makes stationary: forces and anisotropic stress vanish there)."""
    import spglib
    from ase import Atoms

    from csp.structures import spg

    def cell(a):
        return a.cell[:], a.get_scaled_positions(), a.numbers

    cid, origin = next((i, a) for i, a in store.candidates() if len(a) == 2 and len(set(a.numbers)) == 2
                       and spg.symmetry_dataset(cell(a)).number == 123)             # P4/mmm, not L1_1
    lattice, frac, numbers = spg.call(spglib.standardize_cell, cell(origin), to_primitive=False, symprec=1e-5)
    assert len(numbers) == 2 and abs(lattice[2][2] / lattice[0][0] - 2 ** 0.5) < 1e-6   # (a, a, √2 a)
    side = abs(np.linalg.det(lattice)) ** (1 / 3)
    return cid, origin, Atoms(numbers=numbers, scaled_positions=frac, cell=np.eye(3) * side, pbc=True)


def _brute_force(atoms) -> float:
    """EMT energy per atom (eV/atom) of `atoms` relaxed as bench/truth.py does."""
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS

    atoms = atoms.copy()
    atoms.calc = EMT()
    BFGS(FrechetCellFilter(atoms), logfile=None).run(fmax=0.005, steps=500)
    return atoms.get_potential_energy() / len(atoms)


def test_a_relaxation_that_raises_symmetry_is_repeated_from_the_original(tmp_path, stub):
    """A relaxation that starts elsewhere than the item's original structure ends flagged when it
    has more symmetry than the original; a warm one (repeat_raised) is then repeated from the
    original: EMT keeps B2 CuPd where it is (−18 meV/atom), L1_0 relaxes to −39."""
    from csp.campaign.learn import RelaxTask, run_relax_task

    stub()
    ctx = setup(tmp_path)
    cid, origin, b2 = _l10_and_b2(ctx.store)
    known = StubPotential(json.dumps({"known": [composition_key(["Cu", "Pd"])], "amplitude": 0.0}))
    task = RelaxTask(known, known.known, SPECIES, (cid,), (b2,), ctx.search.screening.relax, 2.1, 10.0)
    stuck = run_relax_task(task)["rows"][0]                 # B2 is its own origin: kept where it is
    assert stuck["status"] == "converged" and not stuck["raised"]
    assert stuck["energy"] / 2 == pytest.approx(_brute_force(b2), abs=1e-4)
    flagged = run_relax_task(RelaxTask(known, known.known, SPECIES, (cid,), (b2,), ctx.search.screening.relax, 2.1,
                                       10.0, origins=(origin,)))["rows"][0]
    assert flagged["raised"] is True and flagged["energy"] == stuck["energy"]
    row = run_relax_task(RelaxTask(known, known.known, SPECIES, (cid,), (b2,), ctx.search.screening.relax, 2.1,
                                   10.0, origins=(origin,), repeat_raised=True))["rows"][0]
    assert row["status"] == "converged" and row["raised"] is False
    assert row["energy"] / 2 == pytest.approx(_brute_force(origin), abs=5e-4)
    assert row["energy"] / 2 < stuck["energy"] / 2 - 0.015
    assert row["steps"] > stuck["steps"]


def test_an_item_an_older_potential_left_on_a_symmetric_saddle_is_relaxed_again_from_its_original(tmp_path, stub):
    """Later potentials only evaluate an item where an older one relaxed it: at a geometry with
    raised symmetry the item is relaxed again from its original structure (`restart`) once the
    evaluations are done, and ends where a brute-force relaxation of the original ends."""
    stub()
    ctx = setup(tmp_path)
    lr = learner(ctx)
    state = lr.converge()
    cid, origin, b2 = _l10_and_b2(ctx.store)
    row = lr.latest()[cid]
    assert not row.raised
    from csp.campaign.store import atoms_to_json

    with ctx.store.transaction() as db:      # as if an early potential had relaxed it to B2
        db.execute("UPDATE relaxations SET structure = ?, raised = 1 WHERE stage = 1 AND item = ? AND pass = ?",
                   (atoms_to_json(b2), cid, row.pass_no))
    lr.train(state.round + 1, "test")
    lr.converge()
    n = lr.passes()
    plans = [ctx.store.step_info(f"stage1/pass{p}/plan") for p in range(row.pass_no + 1, n)]
    assert cid in plans[0]["evaluate"] and plans[-1]["restart"] == [cid]
    assert sum(len(p["restart"]) for p in plans) == 1
    final = lr.latest(structures=True)[cid]
    assert final.kind == "restart" and final.raised is False and final.status == "converged"
    assert final.energy_per_atom == pytest.approx(_brute_force(origin), abs=5e-4)


def test_a_bound_the_reference_contradicts_widens_and_readmits_what_the_window_dropped(tmp_path, stub):
    """When a relaxed survivor lands further below its prediction than the bound, the window was
    too narrow too: the last stage's candidates within the widened bound join the queue. Here the
    stage's energies of every CuPd structure are 5 meV/atom too high (an error the audit missed)
    and only the lowest of them survives the window: its reference relaxation reveals the error,
    the bound widens, the others return, and the final hull is the brute-force hull of the pool."""
    from csp.campaign.reference_stage import run_reference_stage
    from csp.campaign.screen import ScreenEntry, energies_above_hull
    from csp.hull import HullEntry, atom_counts, build_hull, final_hull
    from csp.reference import get_reference

    stub(0.0)
    ctx = setup(tmp_path, n=4, extra="  reference_stage: {batch: 2}\n")
    Stage(ctx, 1).run()
    store = ctx.store
    results = {r.candidate_id: r for r in store.stage_results(1)}
    cupd = [i for i, r in results.items() if atom_counts(r.atoms).get("Cu") == atom_counts(r.atoms).get("Pd")]
    with store.transaction() as db:   # the potential's error the audit did not see
        for i in cupd:
            db.execute("UPDATE stage_results SET energy = energy + ?, energy_per_atom = energy_per_atom + 0.005"
                       " WHERE stage = 1 AND candidate_id = ?", (0.005 * len(results[i].atoms), i))
    results = {r.candidate_id: r for r in store.stage_results(1)}
    above = energies_above_hull([ScreenEntry(i, atom_counts(r.atoms), r.energy_per_atom)
                                 for i, r in results.items()], ["Cu", "Pd"])
    lowest = min(cupd, key=lambda i: (above[i], i))
    kept = sorted({i for i, d in above.items() if d <= 1e-3} | {lowest})
    assert not set(kept) & (set(cupd) - {lowest})
    store.set_kept(1, kept)
    summary = store.step_info("stage1/screened")
    store.mark_step("stage1/screened", dict(summary, bound=1e-3, kept=len(kept)))
    run_reference_stage(ctx)
    info = store.step_info("reference_relaxed")
    assert info["readmitted"] > 0 and info["bound_used"] > 0.004
    assert info["bound_used"] == pytest.approx(info["max_prediction_error"])
    relaxed = {r.candidate_id for r in store.reference_calls("relax")}
    assert set(kept) <= relaxed | {int(d["candidate_id"]) for d in info["skipped"]}
    assert relaxed & (set(cupd) - {lowest})                     # re-admitted CuPd structures relaxed
    ref = get_reference({"calculator": "emt"})
    brute = []
    for cid, atoms in store.candidates():
        out = ref.relax(atoms, tmp_path / "brute" / str(cid))
        brute.append(HullEntry.from_atoms(out.atoms, id=str(cid), energy=out.energy))
    truth = build_hull(brute, ["Cu", "Pd"])
    mine = final_hull(store, ["Cu", "Pd"])
    assert {r.formula for r in mine.stable()} == {r.formula for r in truth.stable()}
    for t in truth.stable():
        m = next(r for r in mine.stable() if r.formula == t.formula)
        assert abs(m.formation_energy_per_atom - t.formation_energy_per_atom) < 2e-3


def test_a_restart_resumes_exactly_after_a_kill_at_every_step(tmp_path, stub, monkeypatch):
    """The loop of the test above (an item left at B2 by an older potential), killed after each
    recorded step of the passes that re-evaluate and restart it, resumes to the same tables."""
    from csp.campaign.store import atoms_to_json

    stub()

    def prepared(name):
        ctx = setup(tmp_path, name=name)
        lr = learner(ctx)
        state = lr.converge()
        cid, _, b2 = _l10_and_b2(ctx.store)
        with ctx.store.transaction() as db:
            db.execute("UPDATE relaxations SET structure = ?, raised = 1 WHERE stage = 1 AND item = ? AND pass = ?",
                       (atoms_to_json(b2), cid, lr.latest()[cid].pass_no))
        lr.train(state.round + 1, "test")
        return ctx

    straight = prepared("straight")
    before = len(_tables(tmp_path / "straight" / "campaign.sqlite")["steps"])
    learner(straight).converge()
    straight.store.close()
    reference = _tables(tmp_path / "straight" / "campaign.sqlite")
    assert any(r[3] == "restart" for r in reference["relaxations"])
    for k in range(1, len(reference["steps"]) - before + 1):
        ctx = prepared(f"kill-{k}")
        _kill_resume_compare(monkeypatch, ctx, "mark_step", k, lambda c: learner(c).converge(), reference)
