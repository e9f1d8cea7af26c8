"""Acceptance tests of the evolutionary search as a campaign candidate source (EMT Cu-Au, tiny):
lineage in the store, evolved candidates on the reference hull, report and hull.json; SIGKILL
during the evolution step + resume; `mpirun -n 2` vs one process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from csp.campaign.store import CampaignStore

SEARCH = """
name: tiny-evolution
elements: [Cu, Au]
seed: 5
candidates:
  enumerate: false
  prototypes: false
  random: {count: 8, max_atoms: 4}
  evolution:
    population_size: 6
    generations: 3
    stall_generations: 3
    max_atoms: 4
reference:
  calculator: emt
  relax: {fmax: 0.02, max_steps: 300}
screening:
  stages:
    - {level: 6, window: 4.0}
    - {level: 8, window: 4.0}
  active_learning: {initial_training: 8, max_rounds: 4, max_selected: 8}
  relax: {fmax: 0.02, max_steps: 300}
  training: {max_iter: 80, cv_folds: 3}
"""

ENV = dict(os.environ, OMP_NUM_THREADS="1")
pytestmark = pytest.mark.slow


def run(search_file: Path, run_dir: Path, mpi: int = 0) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "csp", "run", str(search_file), "--run-dir", str(run_dir), "--quiet"]
    if mpi:
        cmd = ["mpirun", "-n", str(mpi), *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600)


def summary(run_dir: Path) -> tuple[list, dict, list]:
    """(hull ids and energies, counts, evolution structures) of a finished campaign."""
    with CampaignStore(run_dir) as store:
        hull = [(r["id"], round(r["energy_per_atom"], 6)) for r in store.get_meta("hull")]
        evo = [(r.ident, r.operator, r.parents, r.candidate_id, None if r.energy is None else round(r.energy, 6))
               for r in store.offspring()]
        return hull, store.counts(), evo


@pytest.fixture(scope="module")
def search_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("search") / "tiny-evolution.yaml"
    path.write_text(SEARCH)
    return path


@pytest.fixture(scope="module")
def reference_run(search_file, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("serial") / "run"
    proc = run(search_file, run_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


def test_evolution_campaign(reference_run):
    with CampaignStore(reference_run) as store:
        evo = store.offspring()
        gens = store.generations()
        cands = dict(store.candidates())
        hull = store.get_meta("hull")
        counts = store.counts()
        stage1 = {r.candidate_id for r in store.stage_results(1)}
    # lineage: every structure after generation 0 has an operator; its parents exist
    idents = {r.ident for r in evo}
    assert [g["generation"] for g in gens] == [0, 1, 2, 3]           # generations: 3 (plus the seeds)
    assert any(r.generation == 3 for r in evo)
    for r in evo:
        assert set(r.parents) <= idents
        assert r.generation > 0 or r.operator.startswith("seed:")
    evolved = {cid: a for cid, a in cands.items() if a.info["source"] == "evolution"}
    assert evolved and counts["evolution_candidates"] == len(evolved) and counts["candidates"] == len(cands)
    for cid, atoms in evolved.items():
        assert atoms.info["lineage"][0][0] == atoms.info["evolution_id"]
    # evolved candidates went through both stages and the reference relaxation onto the hull
    assert set(evolved) <= stage1
    hull_ids = {int(r["id"]) for r in hull}
    assert hull_ids & set(evolved), "no evolved structure reached the reference hull"
    assert {"Cu", "Au"} <= {r["formula"] for r in hull}
    doc = json.loads((reference_run / "report" / "hull.json").read_text())
    assert doc["evolution"]["stopped"] == "generations" and len(doc["evolution"]["generations"]) == 4
    assert sum(r["on_final_hull"] for r in doc["evolution"]["operators"].values()) >= 1
    assert set(doc["evolution"]["hull_lineage"]) <= {str(i) for i in hull_ids}
    html = (reference_run / "report" / "report.html").read_text()
    assert 'id="evolution"' in html and (reference_run / "report" / "figures" / "evolution.png").exists()


def test_sigkill_during_evolution_then_resume(reference_run, search_file, tmp_path):
    """SIGKILL at three points of the evolution step — while generation 0's potential trains,
    right after generation 0 closed, right after generation 1 closed — resuming each time; the
    finished campaign equals the uninterrupted one. The kills are injected by the campaign's own
    logger (CSP_FAULT_KILL), so they happen at those points however fast the machine is."""
    run_dir = tmp_path / "run"
    log = run_dir / "csp.log"
    for marker in ("evolution-g0: training", "evolution: generation 0:", "evolution: generation 1:"):
        proc = subprocess.run([sys.executable, "-m", "csp", "run", str(search_file), "--run-dir", str(run_dir),
                               "--quiet"], capture_output=True, text=True, timeout=600,
                              env=dict(ENV, CSP_FAULT_KILL=marker))
        assert proc.returncode == -signal.SIGKILL, (marker, proc.returncode, proc.stderr[-2000:])
        assert marker in log.read_text()
        with CampaignStore(run_dir) as store:
            assert store.integrity_ok()
            assert not store.step_done("evolution")
    proc = run(search_file, run_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "evolution: resuming with" in log.read_text()       # the known-individuals replay was used
    assert summary(run_dir) == summary(reference_run)


@pytest.mark.mpi
def test_mpirun_two_ranks_same_result(reference_run, search_file, tmp_path):
    run_dir = tmp_path / "run"
    proc = run(search_file, run_dir, mpi=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert summary(run_dir) == summary(reference_run)


def test_stall_rule_stops_the_evolution_in_a_campaign(search_file, tmp_path):
    """stall_generations through the campaign: a coarse hull_tol stalls the search long before
    `generations`, and the campaign goes on to the hull."""
    text = search_file.read_text().replace("generations: 3\n    stall_generations: 3",
                                           "generations: 30\n    stall_generations: 1\n    hull_tol: 0.5")
    path = tmp_path / "stall.yaml"
    path.write_text(text)
    proc = run(path, tmp_path / "run")
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((tmp_path / "run" / "report" / "hull.json").read_text())
    assert doc["evolution"]["stopped"] == "stalled" and len(doc["evolution"]["generations"]) < 31
    assert doc["hull_phases"]
