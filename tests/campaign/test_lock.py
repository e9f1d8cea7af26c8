"""The run-directory lock (csp.campaign.lock): exclusive, readable by `csp status`, survives
SIGKILL (a dead holder's lock is taken over), refuses live and foreign holders."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from csp.campaign.lock import LOCK_NAME, LockError, LockInfo, RunLock, lock_holder
from csp.errors import InputError


def _write_lock(run_dir: Path, **fields) -> Path:
    data = {"host": socket.gethostname(), "pid": os.getpid(), "started": 1_700_000_000.0, **fields}
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    path.write_text(json.dumps(data))
    return path


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_lock_file_names_its_holder_and_is_removed_on_release(tmp_path):
    run_dir = tmp_path / "run"
    assert lock_holder(run_dir) is None
    with RunLock(run_dir) as lock:
        data = json.loads((run_dir / LOCK_NAME).read_text())
        assert data["host"] == socket.gethostname() and data["pid"] == os.getpid()
        assert abs(data["started"] - time.time()) < 60
        holder = lock_holder(run_dir)
        assert holder == LockInfo(socket.gethostname(), os.getpid(), data["started"], True)
        assert lock.held and lock.took_over is None
    assert not (run_dir / LOCK_NAME).exists()
    assert lock_holder(run_dir) is None
    assert [p.name for p in run_dir.iterdir()] == []   # no temporary file left behind


def test_lock_info_is_a_frozen_dataclass():
    info = LockInfo("h", 1, 2.0, None)
    with pytest.raises(Exception):
        info.pid = 3  # type: ignore[misc]


def test_a_live_holder_is_refused_with_host_pid_and_time(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(LockError) as err:
            RunLock(tmp_path).acquire()
    message = str(err.value)
    assert isinstance(err.value, InputError) and "\n" not in message
    assert f"host {socket.gethostname()}" in message and f"pid {os.getpid()}" in message
    assert "since 20" in message and "UTC" in message
    assert err.value.holder.alive is True


def test_a_dead_holder_is_taken_over_with_a_log_line(tmp_path):
    pid = _dead_pid()
    _write_lock(tmp_path, pid=pid)
    assert lock_holder(tmp_path).alive is False
    lines: list[str] = []
    with RunLock(tmp_path, log=lines.append) as lock:
        assert lock.took_over is not None and lock.took_over.pid == pid
        assert lock_holder(tmp_path).pid == os.getpid()
    assert len(lines) == 1 and f"pid {pid}" in lines[0] and "stale lock" in lines[0]


def test_a_reused_pid_or_a_reboot_makes_the_lock_stale(tmp_path):
    _write_lock(tmp_path, pid=os.getpid(), proc_start=1)          # our pid, but not our start tick
    if Path(f"/proc/{os.getpid()}/stat").exists():
        assert lock_holder(tmp_path).alive is False
    _write_lock(tmp_path, pid=os.getpid(), boot_id="another-boot")
    if Path("/proc/sys/kernel/random/boot_id").exists():
        assert lock_holder(tmp_path).alive is False
        with RunLock(tmp_path) as lock:
            assert lock.took_over is not None


def test_a_holder_on_another_host_is_refused_and_named(tmp_path):
    _write_lock(tmp_path, host="node042.cluster", pid=4242)
    holder = lock_holder(tmp_path)
    assert holder.host == "node042.cluster" and holder.pid == 4242 and holder.alive is None
    with pytest.raises(LockError, match=r"another host \(host node042.cluster, pid 4242, since .*remove"):
        RunLock(tmp_path).acquire()
    assert json.loads((tmp_path / LOCK_NAME).read_text())["host"] == "node042.cluster"   # untouched


def test_an_unreadable_lock_file_is_refused_not_removed(tmp_path):
    (tmp_path / LOCK_NAME).write_text("{not json")
    holder = lock_holder(tmp_path)
    assert holder.host == "unknown" and holder.alive is None
    with pytest.raises(LockError, match="cannot be read"):
        RunLock(tmp_path).acquire()
    assert (tmp_path / LOCK_NAME).read_text() == "{not json"


def test_release_leaves_a_lock_that_is_no_longer_ours(tmp_path):
    lock = RunLock(tmp_path).acquire()
    _write_lock(tmp_path, host="other", pid=1)
    lock.release()
    assert lock_holder(tmp_path).host == "other"


HOLD = textwrap.dedent("""
    import sys, time
    from csp.campaign.lock import RunLock
    try:
        lock = RunLock(sys.argv[1]).acquire()
    except Exception as exc:
        print("refused", exc, flush=True)
        sys.exit(2)
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    lock.release()
""")


def test_a_sigkilled_holder_leaves_a_stale_lock_that_is_taken_over(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path), "60"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        assert lock_holder(tmp_path).alive is True
        with pytest.raises(LockError):
            RunLock(tmp_path).acquire()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert lock_holder(tmp_path) == LockInfo(socket.gethostname(), proc.pid, lock_holder(tmp_path).started, False)
    with RunLock(tmp_path) as lock:
        assert lock.took_over.pid == proc.pid


def test_racing_take_overs_of_a_stale_lock_leave_one_winner(tmp_path):
    _write_lock(tmp_path, pid=_dead_pid())
    procs = [subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path), "6"], stdout=subprocess.PIPE, text=True)
             for _ in range(4)]
    outs = [p.communicate(timeout=60)[0] for p in procs]
    assert sum(o.startswith("locked") for o in outs) == 1, outs
    assert sum(o.startswith("refused") for o in outs) == 3, outs
    assert lock_holder(tmp_path) is None


def test_a_run_directory_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "run").write_text("not a directory")
    with pytest.raises(LockError, match="exists and is not a directory"):
        RunLock(tmp_path / "run").acquire()
