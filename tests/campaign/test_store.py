"""The campaign store: exact round trips, idempotent steps, and survival of SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk

from csp.campaign.store import CampaignStore, atoms_from_json, atoms_to_json
from csp.errors import InputError

WRITER = Path(__file__).with_name("store_writer.py")


def test_structure_json_round_trip_is_exact():
    rng = np.random.default_rng(0)
    atoms = bulk("CuPd", "rocksalt", a=4.1) * (2, 1, 1)
    atoms.rattle(0.05, seed=1)
    atoms.set_cell(atoms.cell.array + rng.normal(0, 0.01, (3, 3)), scale_atoms=False)
    back = atoms_from_json(atoms_to_json(atoms))
    assert np.array_equal(back.positions, atoms.positions)
    assert np.array_equal(back.cell.array, atoms.cell.array)
    assert np.array_equal(back.numbers, atoms.numbers) and np.array_equal(back.pbc, atoms.pbc)


def test_candidates_results_potentials_reference_calls(tmp_path):
    with CampaignStore(tmp_path / "run", create=True) as store:
        a = bulk("Cu", "fcc", a=3.6)
        a.info.update(source="enumerate", hnf=[1, 0, 1, 0, 0, 1], labeling="0")
        b = bulk("Pd", "bcc", a=3.1)
        b.info.update(source="prototype", prototype="A2")
        ids = store.add_candidates([a, b])
        assert ids == [1, 2] and store.n_candidates() == 2
        got = store.candidate(1)
        assert got.info["source"] == "enumerate" and got.info["hnf"] == [1, 0, 1, 0, 0, 1]
        assert got.info["candidate_id"] == 1
        assert np.array_equal(got.positions, a.positions)

        relaxed = a.copy()
        relaxed.positions += 0.01
        store.set_stage_results(1, [dict(candidate_id=1, status="converged", potential_id=3, energy=-3.5,
                                         grade=1.2, steps=40, atoms=relaxed),
                                    dict(candidate_id=2, status="broken", energy=None, grade=15.0)])
        r = store.stage_results(1)
        assert [x.status for x in r] == ["converged", "broken"]
        assert r[0].energy_per_atom == pytest.approx(-3.5) and r[0].steps == 40
        assert np.array_equal(r[0].atoms.positions, relaxed.positions)
        # upsert: the second relaxation of a candidate replaces the first
        store.set_stage_results(1, [dict(candidate_id=2, status="converged", energy=-8.0, atoms=b)])
        assert [x.status for x in store.stage_results(1, "converged")] == ["converged", "converged"]
        store.set_kept(1, [2])
        assert store.kept_ids(1) == [2]

        forces = np.arange(3.0).reshape(1, 3)
        stress = np.array([0.1, 0.2, 0.3, 0.0, 0.0, -0.1])
        rid = store.add_reference_call("sp:1", "single_point", 1, True, atoms=a, energy=-3.4,
                                       forces=forces, stress=stress, seconds=0.5, training=(1, 0, "initial"))
        assert store.add_reference_call("sp:1", "single_point", 1, True, atoms=a, energy=99.0) == rid
        store.add_reference_call("relax:2", "relax", 2, False, reason="SCF did not converge")
        rec = store.reference_call("sp:1")
        assert rec.energy == -3.4 and np.array_equal(rec.forces, forces) and np.array_equal(rec.stress, stress)
        at = rec.to_atoms()
        assert at.get_potential_energy() == -3.4 and np.array_equal(at.get_stress(), stress)
        assert [t.key for t in store.training_set()] == ["sp:1"]
        assert store.reference_call("relax:2").reason == "SCF did not converge"

        pid = store.add_potential(1, 0, 8, "MTP text", 0.004, 1, {"rmse_forces": 0.05})
        assert store.latest_potential(1)["id"] == pid and store.latest_potential(1)["sigma"] == 0.004
        assert store.latest_potential(2) is None

        counts = store.counts()
        assert counts["candidates"] == 2 and counts["reference_single_points"] == 1
        assert counts["reference_relaxations"] == 1 and counts["reference_failures"] == 1
        assert counts["stage1_relaxed"] == 2 and counts["stage1_kept"] == 1 and counts["training_set"] == 1

        store.set_meta("search", {"elements": ["Cu", "Pd"]})
        store.mark_step("generate", {"n": 2})
    with CampaignStore(tmp_path / "run") as again:  # reopen: everything persisted
        assert again.get_meta("search") == {"elements": ["Cu", "Pd"]}
        assert again.step_done("generate") and again.step_info("generate") == {"n": 2}
        assert again.n_candidates() == 2


def test_transaction_rolls_back_on_error(tmp_path):
    with CampaignStore(tmp_path, create=True) as store:
        with pytest.raises(RuntimeError):
            with store.transaction():
                store.add_candidates([bulk("Cu")])
                store.mark_step("half")
                raise RuntimeError("boom")
        assert store.n_candidates() == 0 and not store.step_done("half")


def test_not_a_run_directory_is_input_error(tmp_path):
    with pytest.raises(InputError, match="not a csp run directory"):
        CampaignStore(tmp_path / "nothing")


def test_sigkill_never_corrupts_and_resume_completes(tmp_path):
    run_dir = tmp_path / "run"
    n_batches = 150
    rng = np.random.default_rng(3)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    kills = 0
    for attempt in range(4):
        proc = subprocess.Popen([sys.executable, str(WRITER), str(run_dir), str(n_batches)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        if attempt < 3:
            assert proc.stdout.readline().strip() == b"ready"
            time.sleep(rng.uniform(0.02, 0.5))  # a random moment of the writing
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
        proc.wait(timeout=120)
        with CampaignStore(run_dir) as store:
            assert store.integrity_ok()
            done = sum(store.step_done(f"batch-{k}") for k in range(n_batches))
            # every committed batch is complete and nothing of a half-written batch remains
            assert store.n_candidates() == 5 * done
            assert len(store.stage_results(1)) == 5 * done
            assert len(store.training_set()) == done
    assert kills >= 1
    with CampaignStore(run_dir) as store:
        assert all(store.step_done(f"batch-{k}") for k in range(n_batches))
        assert store.n_candidates() == 5 * n_batches
        assert sorted(t.energy for t in store.training_set()) == [float(k) for k in range(n_batches)]


def test_snapshots_and_pass_tracking(tmp_path):
    with CampaignStore(tmp_path, create=True) as store:
        ids = store.add_candidates([bulk("Cu"), bulk("Pd")])
        snap = bulk("Cu", a=3.3)
        store.add_snapshots(1, 0, [(ids[1], 12.5, bulk("Pd", a=3.5)), (ids[0], 3.0, snap)])
        store.add_snapshots(1, 0, [(ids[0], 4.0, snap)])  # same pass and candidate: replaced
        got = store.snapshots(1, 0)
        assert [(c, g) for _, c, g, _ in got] == [(ids[0], 4.0), (ids[1], 12.5)]
        assert np.array_equal(got[0][3].cell.array, snap.cell.array)
        assert store.snapshots(1, 1) == []
        store.set_stage_results(1, [dict(candidate_id=ids[0], status="converged", energy=-1.0, atoms=snap)], pass_no=2)
        assert store.stage_pass_done_ids(1, 2) == {ids[0]} and store.stage_pass_done_ids(1, 1) == set()


def test_a_schema_2_store_gains_the_raised_flag_and_keeps_its_rows(tmp_path):
    import sqlite3

    store = CampaignStore(tmp_path, create=True)
    atoms = bulk("Cu", "fcc", a=3.6)
    store.add_relaxations(1, 0, "relax", [{"candidate_id": 7, "status": "converged", "energy": -3.5, "atoms": atoms,
                                           "raised": True}])
    store.close()
    db = sqlite3.connect(tmp_path / "campaign.sqlite")     # the same store as schema 2 wrote it
    db.execute("ALTER TABLE relaxations DROP COLUMN raised")
    db.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    store = CampaignStore(tmp_path)
    assert store.get_meta("schema_version") == 3
    row = store.relaxations(1, 0)[7]
    assert row.raised is None and row.energy == -3.5 and row.status == "converged"   # not checked then
    store.add_relaxations(1, 1, "restart", [{"candidate_id": 7, "status": "converged", "energy": -3.6, "atoms": atoms,
                                             "raised": False}])
    assert store.relaxations(1, latest=True)[7].raised is False
