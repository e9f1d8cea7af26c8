"""One `csp run` per run directory: an exclusive lock file, `RUN_DIR/csp.lock`.

The file holds JSON naming its holder: host, pid, start time (epoch seconds) and, on Linux, the
boot id and the process start tick (so that a reused PID or a rebooted node is not mistaken
for the holder). It is created atomically and complete: the JSON is written to a private
temporary file that is then hard-linked to `csp.lock` (`link` fails if the name exists, also on
NFS); file systems without hard links fall back to `O_CREAT | O_EXCL`.

A lock whose holder is dead (same host, PID gone, zombie or reused, or the node rebooted) is
*stale*: the next `RunLock` takes it over and says so through its `log` callback (a SIGKILLed
campaign resumes without manual clean-up). A live holder, or a holder on another host (its
PID cannot be checked from here), is refused with `LockError`, one line naming host, pid and
start time. Stale take-overs are serialised with `flock` on the run directory, and a lock
is removed on release only if it is still ours.

Public API (used by `csp run` and `csp status`): `lock_holder(run_dir) -> LockInfo | None`,
`RunLock(run_dir)` (a context manager; `acquire()` / `release()`), `LockError`.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from csp.errors import InputError

LOCK_NAME = "csp.lock"

__all__ = ["LOCK_NAME", "LockError", "LockInfo", "RunLock", "lock_holder", "format_since"]


class LockError(InputError):
    """The run directory is locked by another `csp run` (`holder`), or its lock is unreadable."""

    def __init__(self, message: str, holder: "LockInfo | None" = None):
        super().__init__(message)
        self.holder = holder


@dataclass(frozen=True)
class LockInfo:
    """The holder of a run directory's lock: host name, process id, start time (epoch seconds)
    and whether it is alive (True/False when the holder is on this host; None when it is on
    another host, or the lock file cannot be read, so nobody can tell from here)."""

    host: str
    pid: int
    started: float
    alive: bool | None


def format_since(epoch: float) -> str:
    """A lock's start time for messages: '2026-12-03 15:40:01 UTC'."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def _this_host() -> str:
    return socket.gethostname()


def _read_text(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _boot_id() -> str | None:
    return _read_text("/proc/sys/kernel/random/boot_id")


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks after boot) of a process, from /proc (Linux)."""
    text = _read_text(f"/proc/{pid}/stat")
    if not text:
        return None
    fields = text[text.rfind(")") + 2:].split()   # the command name may contain spaces and ')'
    try:
        return fields[0], int(fields[19])
    except (IndexError, ValueError):
        return None


def _pid_alive(pid: int, proc_start: int | None = None, boot_id: str | None = None) -> bool:
    """Whether process `pid` of this host still runs (and is the process that took the lock)."""
    if pid <= 0:
        return False
    now_boot = _boot_id()
    if boot_id and now_boot and boot_id != now_boot:
        return False            # the node rebooted since: every process of that boot is gone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass                    # a process of another user: it exists
    stat = _proc_stat(pid)
    if stat is not None:
        state, start = stat
        if state in ("Z", "X"):
            return False        # killed, waiting to be reaped: holds nothing
        if proc_start is not None and start != proc_start:
            return False        # the PID was reused by another process
    return True


def _lock_path(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / LOCK_NAME


def _read_lock(path: Path) -> dict | None:
    """The lock file's data; None if there is no lock; {} if it exists but cannot be read."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError:
        return {}
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            return {}
        data["host"], data["pid"], data["started"] = str(data["host"]), int(data["pid"]), float(data["started"])
    except (ValueError, KeyError, TypeError):
        return {}
    return data


def _info(data: dict, path: Path) -> LockInfo:
    if not data:
        try:
            started = path.stat().st_mtime
        except OSError:
            started = 0.0
        return LockInfo(host="unknown", pid=0, started=started, alive=None)
    alive = None
    if data["host"] == _this_host():
        alive = _pid_alive(data["pid"], data.get("proc_start"), data.get("boot_id"))
    return LockInfo(host=data["host"], pid=data["pid"], started=data["started"], alive=alive)


def lock_holder(run_dir: str | os.PathLike) -> LockInfo | None:
    """Who holds the lock of `run_dir` (None: nobody). A stale lock is returned with
    alive=False; a lock file that cannot be read with host 'unknown', pid 0, alive None."""
    path = _lock_path(run_dir)
    data = _read_lock(path)
    return None if data is None else _info(data, path)


def describe(info: LockInfo) -> str:
    """'host H, pid P, since T' of a holder."""
    return f"host {info.host}, pid {info.pid}, since {format_since(info.started)}"


class _DirGuard:
    """flock on the run directory: serialises stale-lock take-overs between processes of a host.
    Best effort: a file system that cannot lock a directory just goes unguarded."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.fd: int | None = None

    def __enter__(self) -> "_DirGuard":
        try:
            import fcntl

            self.fd = os.open(self.directory, os.O_RDONLY)
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except (OSError, ImportError):
            if self.fd is not None:
                os.close(self.fd)
            self.fd = None
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)   # closing the descriptor releases the flock
            self.fd = None


class RunLock:
    """The exclusive lock of a run directory (see the module docstring).

    `log(message)` receives one line when a stale lock is taken over (`took_over` keeps the
    dead holder). Use `with RunLock(run_dir): ...` or `acquire()` ... `release()`.
    """

    def __init__(self, run_dir: str | os.PathLike, log: Callable[[str], None] | None = None):
        self.run_dir = Path(run_dir)
        self.path = _lock_path(run_dir)
        self.log = log
        self.info: LockInfo | None = None
        self.took_over: LockInfo | None = None
        self._data: dict | None = None

    # -- acquire / release ------------------------------------------------------------------
    def acquire(self) -> "RunLock":
        if self._data is not None:
            return self
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise LockError(f"run directory '{self.run_dir}' exists and is not a directory")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        data = {"host": _this_host(), "pid": os.getpid(), "started": time.time(),
                "boot_id": _boot_id(), "proc_start": (_proc_stat(os.getpid()) or (None, None))[1]}
        for _ in range(5):
            if self._create(data):
                self._data = data
                self.info = LockInfo(data["host"], data["pid"], data["started"], True)
                return self
            held = _read_lock(self.path)
            if held is None:
                continue            # released between our attempt and the read: try again
            holder = _info(held, self.path)
            if not held:
                raise LockError(f"run directory '{self.run_dir}': lock file {self.path} cannot be read; "
                                "remove it if no csp run is using this directory", holder)
            if holder.alive is None:
                raise LockError(f"run directory '{self.run_dir}' is locked by a csp run on another host "
                                f"({describe(holder)}); if that run is dead, remove {self.path}", holder)
            if holder.alive:
                raise LockError(f"run directory '{self.run_dir}' is in use by another csp run "
                                f"({describe(holder)})", holder)
            with _DirGuard(self.run_dir):
                again = _read_lock(self.path)
                if again and (again["host"], again["pid"], again["started"]) == \
                        (held["host"], held["pid"], held["started"]):
                    self.path.unlink(missing_ok=True)
                    self.took_over = holder
                    if self.log is not None:
                        self.log(f"took over the stale lock of run directory '{self.run_dir}' "
                                 f"({describe(holder)}: that process is no longer running)")
        raise LockError(f"run directory '{self.run_dir}': could not take lock {self.path} "
                        "(other csp runs keep starting on it)")

    def _create(self, data: dict) -> bool:
        """Create the lock file, complete, if it does not exist; False if it does."""
        text = json.dumps(data)
        tmp = self.run_dir / f".{LOCK_NAME}.{data['host']}.{data['pid']}.tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, self.path)
                return True
            except FileExistsError:
                return False
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS):
                    raise
            # no hard links on this file system: exclusive create, then write
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            return True
        finally:
            tmp.unlink(missing_ok=True)

    def release(self) -> None:
        """Remove the lock if it is still ours (idempotent)."""
        if self._data is None:
            return
        held = _read_lock(self.path)
        if held and (held["host"], held["pid"], held["started"]) == \
                (self._data["host"], self._data["pid"], self._data["started"]):
            self.path.unlink(missing_ok=True)
        self._data = None

    @property
    def held(self) -> bool:
        return self._data is not None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
