"""The task farm: serial fallback, `mpirun -n 2` load balancing, and failure without hangs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from csp.campaign.farm import Farm, SerialComm, chunks, get_comm

SCRIPT = Path(__file__).with_name("farm_script.py")


def _cube(x):
    return x ** 3


def test_serial_farm_runs_in_process_in_order():
    farm = Farm(SerialComm())
    seen = []
    out = farm.map(_cube, range(10), on_result=lambda i, v: seen.append((i, v)))
    assert out == [x ** 3 for x in range(10)]
    assert seen == list(enumerate(out))
    farm.stop()  # no-op without workers


def test_get_comm_without_launcher_is_serial(monkeypatch):
    for key in ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "HYDRA_CONTROL_FD", "PMI_FD"):
        monkeypatch.delenv(key, raising=False)
    assert isinstance(get_comm(), SerialComm)


def test_chunks_cover_everything_once():
    parts = chunks(list(range(10)), 4)
    assert [list(p) for p in parts] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def _mpirun(mode: str, timeout: float = 60.0) -> tuple[subprocess.CompletedProcess, float]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    t0 = time.perf_counter()
    proc = subprocess.run(["mpirun", "-n", "2", sys.executable, str(SCRIPT), mode],
                          capture_output=True, text=True, timeout=timeout, env=env)
    return proc, time.perf_counter() - t0


@pytest.mark.mpi
def test_mpirun_two_ranks_share_work_results_in_order():
    proc, _ = _mpirun("ok")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    assert data["size"] == 2
    assert [r[0] for r in data["results"]] == [x * x for x in range(40)]
    ranks = {r[1] for r in data["results"]}
    assert ranks == {0, 1}  # both ranks computed items


@pytest.mark.mpi
def test_mpirun_large_messages_do_not_deadlock():
    """Tasks and results far above the eager limit, several tasks in flight per worker."""
    proc, seconds = _mpirun("big", timeout=120.0)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    assert data == {"size": 2, "ok": True}
    assert seconds < 60.0


@pytest.mark.mpi
@pytest.mark.parametrize("mode", ["fail_worker", "fail_master", "fail_any"])
def test_mpirun_failure_ends_job_quickly_with_message(mode):
    proc, seconds = _mpirun(mode, timeout=60.0)
    assert proc.returncode != 0
    assert "injected failure" in proc.stderr
    assert "csp: internal error on MPI rank" in proc.stderr
    assert seconds < 30.0
