"""`csp status RUN_DIR`: running / stopped / finished, current step with ETA, hull phases."""

from __future__ import annotations

import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path

import pytest
from ase.build import bulk

from csp.cli import main
from csp.commands.status import campaign_state, current_step, summary

sys.path.insert(0, str(Path(__file__).parent))
from report_store import make_store  # noqa: E402

from csp.campaign.store import CampaignStore  # noqa: E402


@dataclass
class FakeLock:
    host: str
    pid: int
    started: float
    alive: bool | None


def _lock_module(monkeypatch, holder):
    module = types.ModuleType("csp.campaign.lock")
    module.lock_holder = lambda run_dir: holder
    monkeypatch.setitem(sys.modules, "csp.campaign.lock", module)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("status") / "run"
    make_store(path)
    return path


def test_finished_campaign(finished, capsys):
    assert main(["status", str(finished)]) == 0
    out = capsys.readouterr().out
    assert "state: finished" in out and "current step" not in out
    assert "campaign: cu-au-synthetic (Cu-Au)" in out
    assert "Cu3Au Pm-3m" in out and "CuAu P4/mmm" in out and "-10.2 meV/atom" in out
    assert "stage2_kept" in out and "potential stage 2 round 0: level 6" in out


def test_states_from_the_lock(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "csp.campaign.lock", None)      # the module is not there: unknown
    assert campaign_state(tmp_path, finished=False).state == "unknown"
    assert campaign_state(tmp_path, finished=True).state == "finished"
    _lock_module(monkeypatch, None)
    assert campaign_state(tmp_path, finished=False).state == "stopped"
    _lock_module(monkeypatch, FakeLock("node7", 4242, time.time() - 60, True))
    state = campaign_state(tmp_path, finished=False)
    assert state.state == "running" and "pid 4242 on node7" in state.detail
    _lock_module(monkeypatch, FakeLock("node7", 4242, time.time() - 60, False))
    state = campaign_state(tmp_path, finished=False)
    assert state.state == "stopped" and "is gone" in state.detail
    _lock_module(monkeypatch, FakeLock("other", 1, time.time(), None))
    state = campaign_state(tmp_path, finished=False)
    assert state.state == "running" and "not checked" in state.detail


def _unfinished(path: Path) -> CampaignStore:
    store = CampaignStore(path, create=True)
    store.set_meta("elements", ["Cu", "Au"])
    store.set_meta("search", {"elements": ["Cu", "Au"], "screening": {"stages": [{"level": 6}, {"level": 8}],
                                                                      "active_learning": {"initial_training": 4}}})
    structs = [bulk("Cu", "fcc", a=3.6 + 0.01 * k) for k in range(6)]
    ids = store.add_candidates(structs)
    store.mark_step("generate", {})
    return store, ids


def test_current_step_and_eta(tmp_path, monkeypatch):
    _lock_module(monkeypatch, FakeLock("here", 99, time.time(), True))
    store, ids = _unfinished(tmp_path / "run")
    with store:
        for cid in ids[:2]:
            store.add_reference_call(f"sp:initial:c{cid}", "single_point", cid, True, atoms=bulk("Cu"), energy=-1.0)
        step, text = current_step(store, now=time.time() + 10)
        assert step == "initial_training" and text.startswith("reference single points 2 of 4, ETA ")
        store.mark_step("initial_training", {})
        store.set_stage_results(1, [dict(candidate_id=i, status="converged", energy=-1.0, atoms=bulk("Cu"))
                                    for i in ids[:3]], pass_no=0)
        step, text = current_step(store, now=time.time() + 10)
        assert step == "stage 1" and "first relaxation pass 3 of 6" in text and "ETA" in text
        store.set_stage_results(1, [dict(candidate_id=i, status="converged", energy=-1.0, atoms=bulk("Cu"))
                                    for i in ids[3:]], pass_no=0)
        assert "first pass done (6 structures)" in current_step(store)[1]
        store.set_kept(1, ids[:4])
        store.mark_step("stage1/screened", {})
        store.set_stage_results(2, [dict(candidate_id=i, status="converged", energy=-1.0, atoms=bulk("Cu"))
                                    for i in ids[:4]], pass_no=0)
        store.set_kept(2, ids[:4])
        store.mark_step("stage2/screened", {})
        store.add_reference_call(f"relax:c{ids[0]}", "relax", ids[0], True, atoms=bulk("Cu", a=3.6), energy=-3.5)
        step, text = current_step(store, now=time.time() + 10)
        assert step == "reference relaxations" and text.startswith("1 of 4, ETA ") and text.endswith("survivors")
    text = summary(str(tmp_path / "run"))
    assert "state: running — pid 99 on here" in text and "current step: reference relaxations: 1 of 4" in text
    assert "hull phases" not in text   # no Au yet: no hull


def test_evolution_step_progress(tmp_path):
    store, ids = _unfinished(tmp_path / "run")
    with store:
        store.set_meta("search", {"elements": ["Cu", "Au"], "candidates": {"evolution": {"generations": 10}}})
        store.mark_step("initial_training", {})
        for g in range(4):
            store.add_generation(g, None, {"generation": g})
        step, text = current_step(store, now=time.time() + 10)
    assert step == "evolution" and text.startswith("generations 4 of 10, ETA ")


def test_status_bad_run_dir(tmp_path, capsys):
    assert main(["status", str(tmp_path / "missing")]) == 2
    assert main(["status", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "is not a directory" in err[0] and "not a csp run directory" in err[1]


def test_state_with_the_real_lock(tmp_path):
    """With csp.campaign.lock: a held lock is 'running' (this process), a released one 'stopped'."""
    import os

    lock = pytest.importorskip("csp.campaign.lock")
    store, _ = _unfinished(tmp_path / "run")
    store.close()
    with lock.RunLock(tmp_path / "run"):
        state = campaign_state(tmp_path / "run", finished=False)
        assert state.state == "running" and f"pid {os.getpid()}" in state.detail
        assert "state: running" in summary(str(tmp_path / "run"))
    assert campaign_state(tmp_path / "run", finished=False).state == "stopped"
