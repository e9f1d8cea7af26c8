"""Progress of long steps: tqdm bars on an interactive terminal, otherwise (under mpirun, stderr
redirected to a file, `--quiet`) one log line every `interval` seconds with count, rate and ETA.

    make = progress_factory(enabled=True)
    bar = make("stage 1 relax (pass 0)", total=300)
    bar.update(8) ...; bar.close()
    fit(..., callback=fit_callback(make("stage 1 training", max_iter)))   # MTP training (iteration, loss)

Steps shorter than `quiet_seconds` log nothing.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any, Callable

MPI_ENV = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMI_RANK", "PMIX_RANK", "MPI_LOCALNRANKS", "SLURM_STEP_NUM_TASKS")


def under_mpi() -> bool:
    """Whether an MPI launcher started this process (its environment variables are set)."""
    return any(os.environ.get(name) for name in MPI_ENV)


def interactive(stream=None) -> bool:
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def duration(seconds: float) -> str:
    """'42 s', '3 min 05 s', '2 h 07 min'."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class LogProgress:
    """Counts towards `total` and logs one line per `interval` seconds (after `quiet_seconds`)."""

    def __init__(self, label: str, total: int | None, log: Callable[[str], Any], interval: float = 30.0,
                 quiet_seconds: float = 5.0, clock: Callable[[], float] = time.monotonic):
        self.label, self.total, self.log = label, total, log
        self.interval, self.quiet_seconds, self.clock = interval, quiet_seconds, clock
        self.n = 0
        self.note = ""
        self.t0 = clock()
        self.last = None   # time of the last line
        self.lines = 0

    def line(self) -> str:
        elapsed = self.clock() - self.t0
        text = f"{self.label}: {self.n:,}"
        if self.total:
            text += f"/{self.total:,} ({100 * self.n / self.total:.0f} %)"
        if elapsed > 0 and self.n:
            rate = self.n / elapsed
            text += f", {rate:.3g}/s" if rate >= 1 else f", {duration(1 / rate)} each"
            if self.total and self.n < self.total:
                text += f", ETA {duration((self.total - self.n) / rate)}"
        if self.note:
            text += f", {self.note}"
        return text

    def _maybe_log(self) -> None:
        now = self.clock()
        if now - self.t0 < self.quiet_seconds:
            return
        if self.last is None or now - self.last >= self.interval:
            self.last = now
            self.lines += 1
            self.log(self.line())

    def update(self, n: int = 1) -> None:
        self.n += int(n)
        self._maybe_log()

    def set(self, n: int, note: str = "") -> None:
        """Jump to count `n` (e.g. an optimizer's iteration) with a short note (e.g. the loss)."""
        self.n, self.note = int(n), note
        self._maybe_log()

    def close(self) -> None:
        if self.lines:   # a step long enough to have reported gets its closing line
            self.log(f"{self.label}: {self.n:,} done in {duration(self.clock() - self.t0)}")


class BarProgress:
    """A tqdm bar with the same interface (update, set, close)."""

    def __init__(self, label: str, total: int | None):
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc=label, unit="", leave=False, file=sys.stderr, dynamic_ncols=True)

    def update(self, n: int = 1) -> None:
        self.bar.update(n)

    def set(self, n: int, note: str = "") -> None:
        self.bar.update(int(n) - self.bar.n)
        if note:
            self.bar.set_postfix_str(note, refresh=False)

    def close(self) -> None:
        self.bar.close()


def progress_factory(enabled: bool, log: Callable[[str], Any] | None = None, interval: float = 30.0,
                     quiet_seconds: float = 5.0) -> Callable[[str, int], Any]:
    """make(label, total) -> an object with update(n), set(n, note) and close(). Bars when
    `enabled`, stderr is a terminal and no MPI launcher is involved; otherwise periodic lines
    through `log` (default: the `csp` logger at INFO, i.e. RUN_DIR/csp.log)."""
    if log is None:
        logger = logging.getLogger("csp")
        log = logger.info
    bars = enabled and interactive() and not under_mpi()

    def make(label: str, total: int | None = None):
        if bars:
            return BarProgress(label, total)
        return LogProgress(label, total, log, interval=interval, quiet_seconds=quiet_seconds)

    return make


def fit_callback(progress) -> Callable[[int, float], None]:
    """The (iteration, loss) callback of `csp.mtp.fit.fit` driving a progress object."""
    def callback(iteration: int, loss: float) -> None:
        progress.set(iteration, f"loss {loss:.4g}")
    return callback
