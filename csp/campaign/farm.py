"""MPI task farm: rank 0 schedules (and owns the store), the other ranks pull tasks.

`Farm.map(fn, items)` on rank 0 hands items to workers as they become free (dynamic load
balancing, `prefetch` tasks in flight per worker) and computes items itself while waiting;
results come back in item order, so the outcome does not depend on the number of ranks.
Workers sit in `Farm.serve()` until rank 0 calls `Farm.stop()`.

Failure policy (never a hang): an exception in a task on a worker prints the traceback with the
rank and calls MPI_Abort, which ends every rank at once; an exception on rank 0 propagates to
the caller, which must call `Farm.abort()` (the `csp run` command does). Without mpi4py, or
with one rank, `get_comm()` returns a serial communicator and `map` runs everything in-process.

A rank that dies without a word (`os._exit`, a C library calling `exit()`, the OOM killer) makes
the launcher end the whole job at once (MPICH's mpiexec SIGKILLs the other ranks, and returns the
dead rank's exit code, 0 included), so no rank can report it live. Hence the rank logs: after
`Farm.set_log_dir(DIR)` every worker appends one line per task to `DIR/csp.rank<N>.log` (start,
done, stop), and `ended_ranks(DIR)` names, on the next start, each rank whose log ends inside a
task: the rank vanished (or the whole job was killed) while running that task.

`fn` must be importable by name on every rank (a module-level function): tasks are pickled.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections import deque
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Sequence

TAG_TASK, TAG_RESULT, TAG_STOP, TAG_LOG = 11, 12, 13, 14
ABORT_GRACE = 0.5   # s between printing an abort message and MPI_Abort


class SerialComm:
    """A one-process stand-in for an MPI communicator."""

    rank = 0
    size = 1

    def Get_rank(self) -> int:  # noqa: N802 - MPI spelling
        return 0

    def Get_size(self) -> int:  # noqa: N802
        return 1

    def bcast(self, obj: Any, root: int = 0) -> Any:
        return obj

    def barrier(self) -> None:
        return None

    def Abort(self, code: int = 1) -> None:  # noqa: N802
        sys.stderr.flush()
        os._exit(code)


def get_comm() -> Any:
    """MPI.COMM_WORLD when running under an MPI launcher with > 1 rank, else a SerialComm."""
    if not any(k in os.environ for k in ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK",
                                         "HYDRA_CONTROL_FD", "PMI_FD")):
        return SerialComm()
    try:
        from mpi4py import MPI
    except ImportError:
        return SerialComm()
    comm = MPI.COMM_WORLD
    return comm if comm.Get_size() > 1 else SerialComm()


class Farm:
    """Dynamic task farm over a communicator (see module docstring)."""

    def __init__(self, comm: Any | None = None, prefetch: int = 2, master_works: bool = True,
                 poll: float = 0.001):
        self.comm = comm if comm is not None else get_comm()
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        self.prefetch = max(1, int(prefetch))
        self.master_works = master_works or self.size == 1
        self.poll = poll
        self._stopped = False
        self._log: IO[str] | None = None   # a worker's task log (see set_log_dir)
        # rank 0: True while `map` has tasks out, and after an exception left `map` with tasks
        # possibly in flight (then only `abort` ends the workers reliably, `stop` might hang)
        self.busy = False

    @property
    def is_master(self) -> bool:
        return self.rank == 0

    # -- rank 0 -----------------------------------------------------------------------------
    def map(self, fn: Callable[[Any], Any], items: Iterable[Any],
            on_result: Callable[[int, Any], None] | None = None, collect: bool = True) -> list[Any]:
        """fn(item) for every item, spread over all ranks; results in item order.

        `items` is consumed lazily (a generator that reads its batches from the store keeps
        rank 0's memory flat): an item is built only when a rank is ready for it.
        `on_result(index, result)` is called on rank 0 as each result arrives (e.g. to write it
        to the store and advance a progress bar); with `collect=False` results are not kept and
        an empty list is returned.
        """
        if not self.is_master:
            raise RuntimeError("Farm.map is called on rank 0 only")
        results: list[Any] = []

        def finish(i: int, value: Any) -> None:
            if collect:
                results.extend([None] * (i + 1 - len(results)))
                results[i] = value
            if on_result is not None:
                on_result(i, value)

        if self.size == 1:
            for i, item in enumerate(items):
                finish(i, fn(item))
            return results

        from mpi4py import MPI

        self.busy = True
        source = enumerate(items)
        # a window of upcoming items: workers take from its front, rank 0 from its back (so a
        # worker is never left waiting for the item rank 0 is busy with)
        window = max(8, 2 * self.prefetch * (self.size - 1))
        pending: deque = deque()
        issued = done = 0
        exhausted = False
        inflight = {w: 0 for w in range(1, self.size)}
        sends: list = []  # non-blocking sends in flight (large tasks must never block rank 0)

        def fill() -> None:
            nonlocal exhausted
            while not exhausted and len(pending) < window:
                nxt = next(source, None)
                if nxt is None:
                    exhausted = True
                else:
                    pending.append(nxt)

        def take(front: bool) -> tuple[int, Any] | None:
            nonlocal issued
            fill()
            if not pending:
                return None
            issued += 1
            return pending.popleft() if front else pending.pop()

        def send(worker: int) -> None:
            nxt = take(front=True)
            if nxt is not None:
                sends.append(self.comm.isend((nxt[0], fn, nxt[1]), dest=worker, tag=TAG_TASK))
                inflight[worker] += 1

        for _ in range(self.prefetch):
            for w in inflight:
                send(w)
        status = MPI.Status()
        while not (exhausted and not pending and done == issued):
            if self.comm.Iprobe(source=MPI.ANY_SOURCE, tag=TAG_RESULT, status=status):
                worker = status.Get_source()
                i, value = self.comm.recv(source=worker, tag=TAG_RESULT)
                inflight[worker] -= 1
                send(worker)
                finish(i, value)
                done += 1
            elif self.master_works and (nxt := take(front=False)) is not None:
                finish(nxt[0], fn(nxt[1]))
                done += 1
            else:
                time.sleep(self.poll)
            if sends:
                sends = [r for r in sends if not r.Test()]
        MPI.Request.Waitall(sends)
        self.busy = False
        return results

    def set_log_dir(self, directory: str | os.PathLike) -> None:
        """Rank 0: make every worker log its tasks to `directory/csp.rank<N>.log` (see
        `ended_ranks`). No-op with one rank."""
        if self.size == 1 or not self.is_master:
            return
        for w in range(1, self.size):
            self.comm.send(str(directory), dest=w, tag=TAG_LOG)

    def stop(self) -> None:
        """Release the workers from `serve()` (rank 0; idempotent)."""
        if self._stopped or self.size == 1 or not self.is_master:
            self._stopped = True
            return
        for w in range(1, self.size):
            self.comm.send(None, dest=w, tag=TAG_STOP)
        self._stopped = True

    def abort(self, message: str | None = None, code: int = 1) -> None:
        """End every rank now (MPI_Abort), after printing `message` on stderr."""
        if message:
            print(message, file=sys.stderr, flush=True)
        sys.stdout.flush()
        if self.size > 1:
            # the launcher forwards each rank's output through pipes; MPI_Abort tears the job
            # down at once, and without a pause the message was lost in ~1 run of 12
            time.sleep(ABORT_GRACE)
        self.comm.Abort(code)

    # -- workers ----------------------------------------------------------------------------
    def serve(self) -> None:
        """Worker loop: run tasks from rank 0 until told to stop; abort the job on any error."""
        if self.is_master:
            raise RuntimeError("Farm.serve is for worker ranks")
        from mpi4py import MPI

        status = MPI.Status()
        sends: list = []  # results in flight: a worker never blocks on a large result
        while True:
            if sends:
                sends = [r for r in sends if not r.Test()]
            if not self.comm.Iprobe(source=0, tag=MPI.ANY_TAG, status=status):
                time.sleep(self.poll)
                continue
            tag = status.Get_tag()
            msg = self.comm.recv(source=0, tag=tag)
            if tag == TAG_LOG:
                self._open_log(msg)
                continue
            if tag == TAG_STOP:
                MPI.Request.Waitall(sends)
                self._note("stop")
                return
            i, fn, item = msg
            name = getattr(fn, "__qualname__", repr(fn))
            self._note(f"start {name}[{i}]")
            t0 = time.time()
            try:
                value = fn(item)
            except BaseException as exc:  # noqa: BLE001 - any failure ends the whole job
                tb = traceback.format_exc()
                self._note(f"error {name}[{i}]: {type(exc).__name__}: {exc}")
                self.abort(f"{tb}csp: internal error on MPI rank {self.rank} in task {name}[{i}]: "
                           f"{type(exc).__name__}: {exc}")
                return
            self._note(f"done {name}[{i}] {time.time() - t0:.2f} s")
            sends.append(self.comm.isend((i, value), dest=0, tag=TAG_RESULT))

    def _open_log(self, directory: str) -> None:
        if self._log is not None:
            self._log.close()
        try:
            self._log = open(rank_log_path(directory, self.rank), "a", buffering=1, encoding="utf-8")
        except OSError as exc:   # logging is a help, never a reason to stop the job
            print(f"csp: MPI rank {self.rank}: cannot write its task log in {directory}: {exc.strerror}",
                  file=sys.stderr, flush=True)
            self._log = None
            return
        import socket

        self._note(f"{_STARTED} pid {os.getpid()} host {socket.gethostname()}")

    def _note(self, text: str) -> None:
        if self._log is None:
            return
        try:
            self._log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {text}\n")   # line-buffered: on disk now
        except (OSError, ValueError):
            self._log = None


_STARTED = "serving"


def rank_log_path(directory: str | os.PathLike, rank: int) -> Path:
    """A worker rank's task log: `directory/csp.rank<N>.log`."""
    return Path(directory) / f"csp.rank{rank}.log"


def ended_ranks(directory: str | os.PathLike, mark: bool = False) -> list[str]:
    """One line per worker-rank log in `directory` whose last entry is a task it started and
    never finished: that rank vanished (or the whole job was killed) while running it. With
    `mark`, a line is appended to each such log so that the next call does not repeat it."""
    out = []
    for path in sorted(Path(directory).glob("csp.rank*.log"),
                       key=lambda p: int(p.stem[8:]) if p.stem[8:].isdigit() else 0):
        try:
            lines = [l for l in path.read_text(encoding="utf-8", errors="replace").splitlines() if l.strip()]
        except OSError:
            continue
        if not lines:
            continue
        when, _, last = lines[-1].partition(" ")
        if not last.startswith("start "):
            continue
        who = next((l.partition(" ")[2] for l in reversed(lines) if l.partition(" ")[2].startswith(_STARTED)), "")
        who = who[len(_STARTED):].strip()
        out.append(f"the previous run's MPI rank {path.stem[8:]} ({who or 'pid unknown'}) ended while running task "
                   f"{last[6:]} (started {when}): the process vanished or the job was killed (see {path})")
        if mark:
            try:
                with open(path, "a", encoding="utf-8") as f:
                    f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} ended inside the task above "
                            "(noted by the next run)\n")
            except OSError:
                pass
    return out


def chunks(seq: Sequence[Any], size: int) -> list[Sequence[Any]]:
    """Split a sequence into consecutive batches of at most `size` items."""
    size = max(1, int(size))
    return [seq[k:k + size] for k in range(0, len(seq), size)]
