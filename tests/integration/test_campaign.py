"""Acceptance tests of a whole campaign (EMT reference): agreement with brute-force EMT relaxation
of every candidate (Ni-Pt: derivative structures and prototypes, where the screening windows
have something to remove), SIGKILL + resume, and `mpirun -n 2` vs one process (tiny Cu-Pd search)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from csp.campaign.store import CampaignStore

SEARCH = """
name: tiny
elements: [Cu, Pd]
seed: 3
candidates:
  enumerate: {lattices: [fcc], max_atoms: 4}
  prototypes: false
reference:
  calculator: emt
  relax: {fmax: 0.01, max_steps: 300}
screening:
  stages:
    - {level: 6, window: 4.0}
    - {level: 8, window: 4.0}
  active_learning: {initial_training: 10, max_rounds: 6, max_selected: 12}
  relax: {fmax: 0.01, max_steps: 400}
  training: {max_iter: 80, cv_folds: 3}
"""

# EMT's Ni-Pt hull: Ni, Ni3Pt (L1_2), NiPt (L1_0), Pt; half of the 176 distinct candidates lie more
# than 50 meV/atom above it, so the audited windows (a few meV/atom) have much to remove.
BRUTE_SEARCH = """
name: ni-pt
elements: [Ni, Pt]
seed: 3
candidates:
  enumerate: {lattices: [fcc, bcc, hcp], max_atoms: 4}
  prototypes: all
  max_atoms: 8
reference:
  calculator: emt
  relax: {fmax: 0.01, max_steps: 300}
screening:
  stages:
    - {level: 8, window: 4.0}
    - {level: 10, window: 4.0}
  active_learning: {initial_training: 30, max_rounds: 8, max_selected: 12}
  relax: {fmax: 0.01, max_steps: 400}
  training: {max_iter: 200}
"""

ENV = dict(os.environ, OMP_NUM_THREADS="1")
pytestmark = pytest.mark.slow


def csp_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "csp", *args]


def hull_of(run_dir: Path) -> list[dict]:
    with CampaignStore(run_dir) as store:
        return store.get_meta("hull")


def counts_of(run_dir: Path) -> dict:
    with CampaignStore(run_dir) as store:
        return store.counts()


def same_hull(a: list[dict], b: list[dict], tol: float = 1e-6) -> bool:
    if [r["id"] for r in a] != [r["id"] for r in b]:
        return False
    return all(abs(x["energy_per_atom"] - y["energy_per_atom"]) < tol for x, y in zip(a, b))


@pytest.fixture(scope="module")
def search_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("search") / "tiny.yaml"
    path.write_text(SEARCH)
    return path


@pytest.fixture(scope="module")
def reference_run(search_file, tmp_path_factory) -> Path:
    """One uninterrupted serial campaign, shared by the tests below."""
    run_dir = tmp_path_factory.mktemp("serial") / "run"
    t0 = time.monotonic()
    proc = subprocess.run(csp_cmd("run", str(search_file), "--run-dir", str(run_dir), "--quiet"),
                          capture_output=True, text=True, env=ENV, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "hull phases" in proc.stdout
    (run_dir / "seconds").write_text(repr(time.monotonic() - t0))
    return run_dir


@pytest.fixture(scope="module")
def brute_force_run(tmp_path_factory) -> Path:
    """A serial Ni-Pt campaign large enough for screening to matter."""
    path = tmp_path_factory.mktemp("brute-search") / "ni-pt.yaml"
    path.write_text(BRUTE_SEARCH)
    run_dir = tmp_path_factory.mktemp("brute") / "run"
    proc = subprocess.run(csp_cmd("run", str(path), "--run-dir", str(run_dir), "--quiet"),
                          capture_output=True, text=True, env=ENV, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


def test_campaign_agrees_with_brute_force(brute_force_run, capsys):
    """Recall 100 % of the brute-force hull, energies within 2 meV/atom (the same structure relaxed
    from two starting points — its Vegard cell, its MTP-relaxed cell — differs by up to ~1.6
    meV/atom in EMT), and far fewer reference calls than relaxing every candidate."""
    from csp.hull import HullEntry, build_hull
    from csp.reference import get_reference

    reference_run = brute_force_run
    with CampaignStore(reference_run) as store:
        candidates = store.candidates()
        counts = store.counts()
    ref = get_reference({"calculator": "emt", "relax": {"fmax": 0.01, "max_steps": 300}})
    entries = []
    brute_steps = 0
    for cid, atoms in candidates:
        out = ref.relax(atoms, reference_run / "brute" / str(cid))
        assert out.ok, out.reason
        brute_steps += out.steps + 1
        entries.append(HullEntry.from_atoms(out.atoms, id=str(cid), energy=out.energy))
    brute = build_hull(entries, ["Ni", "Pt"])
    csp_hull = hull_of(reference_run)
    mine = {tuple(sorted(r["composition"].items())): r for r in csp_hull}
    for row in brute.stable():
        key = tuple(sorted(row.composition.items()))
        assert key in mine, f"brute-force hull phase {row.formula} missing from csp's hull"
        assert abs(mine[key]["energy_per_atom"] - row.energy_per_atom) < 2e-3
    assert len(mine) == len(brute.stable())
    # reference energy+force evaluations: a single point is one, a relaxation one per step plus the start
    csp_evals = (counts["reference_single_points"] + counts["reference_relaxation_steps"]
                 + counts["reference_relaxations"])
    with capsys.disabled():
        print(f"\nreference: csp {counts['reference_single_points']} single points + "
              f"{counts['reference_relaxations']} relaxations = {csp_evals} evaluations; brute force "
              f"{len(candidates)} relaxations = {brute_steps} evaluations; "
              f"hull phases {[r['formula'] for r in csp_hull]}")
    assert counts["stage2_kept"] < counts["candidates"], "the screening windows removed nothing"
    # measured: 61–68 of 176 candidates reference-relaxed, 541 vs 2,819 reference evaluations; with
    # stage 1 restarting the 29 relaxations that raised symmetry (16 % of this mixed-lattice pool),
    # 93 and 832 evaluations: the level-8 audits and fits of so small a pool take another path
    # (stage-1 σ 53 instead of 13 meV/atom), the reference steps barely change (572 vs 452)
    assert counts["reference_relaxations"] <= 0.6 * len(candidates)
    assert csp_evals < 0.4 * brute_steps
    report = json.loads((reference_run / "report" / "hull.json").read_text())
    assert sorted(p["formula"] for p in report["hull_phases"]) == sorted(r["formula"] for r in csp_hull)


def snapshot_of(run_dir: Path) -> dict:
    with CampaignStore(run_dir) as store:
        return store.results_snapshot()


def assert_same_results(run_dir: Path, reference: Path) -> None:
    """The whole store (candidates, every pass of both stages, potentials, reference calls,
    training set, audits, kept sets, step records) equals the uninterrupted run's."""
    got, want = snapshot_of(run_dir), snapshot_of(reference)
    assert sorted(got) == sorted(want)
    for table in want:
        assert got[table] == want[table], f"table {table} differs after resume"


# named points inside both stages' learning, the audits and the reference stage, in campaign order
KILL_POINTS = ("stage1 pass 1 ", "stage1 audit 0: reference", "stage 2: level-", "stage2 pass 0 ",
               "stage2 audit 0: σ", "reference relaxation of up to")


def test_kill_at_named_points_and_resume_give_the_identical_store(reference_run, search_file, tmp_path):
    """SIGKILL (CSP_FAULT_KILL) right after each named log line, resume each time: the finished
    store is identical to the uninterrupted run's, table by table."""
    run_dir = tmp_path / "run"
    for point in KILL_POINTS:
        proc = subprocess.run(csp_cmd("run", str(search_file), "--run-dir", str(run_dir), "--quiet"),
                              capture_output=True, text=True, env=dict(ENV, CSP_FAULT_KILL=point), timeout=600)
        assert proc.returncode == -signal.SIGKILL, (point, proc.returncode, proc.stderr[-2000:])
        with CampaignStore(run_dir) as store:
            assert store.integrity_ok()
    proc = subprocess.run(csp_cmd("run", str(search_file), "--run-dir", str(run_dir), "--quiet"),
                          capture_output=True, text=True, env=ENV, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_results(run_dir, reference_run)


def test_sigkill_at_random_moments_and_resume_give_the_same_campaign(reference_run, search_file, tmp_path):
    run_dir = tmp_path / "run"
    rng = np.random.default_rng(11)
    kills = 0
    # random moments within the first 70 % of an uninterrupted run (start-up included), so that
    # the first attempt is always killed however fast the machine is
    full = float((reference_run / "seconds").read_text())
    for attempt in range(4):
        proc = subprocess.Popen(csp_cmd("run", str(search_file), "--run-dir", str(run_dir), "--quiet"),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
        if attempt < 3:
            deadline = time.time() + rng.uniform(0.1, 0.7) * full
            while time.time() < deadline and proc.poll() is None:
                time.sleep(0.05)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
        proc.wait(timeout=600)
        if attempt == 3:
            assert proc.returncode == 0, proc.stderr.read()[-3000:]
        with CampaignStore(run_dir) as store:
            assert store.integrity_ok()
    assert kills >= 1
    assert_same_results(run_dir, reference_run)


@pytest.mark.mpi
def test_mpirun_two_ranks_same_hull(reference_run, search_file, tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.run(["mpirun", "-n", "2", *csp_cmd("run", str(search_file), "--run-dir", str(run_dir),
                                                          "--quiet")],
                          capture_output=True, text=True, env=ENV, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert same_hull(hull_of(run_dir), hull_of(reference_run))
    assert counts_of(run_dir) == counts_of(reference_run)
    status = subprocess.run(csp_cmd("status", str(run_dir)), capture_output=True, text=True, env=ENV)
    assert status.returncode == 0 and "state: finished" in status.stdout
