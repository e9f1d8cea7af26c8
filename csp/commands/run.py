"""`csp run SEARCH.yaml`: start or resume a campaign (also under `mpirun -n N`).

Rank 0 reads the search file, then takes the run directory's lock (`csp.lock`, see
`csp.campaign.lock`) before anything is written: a second `csp run` on a directory in use exits
with code 2 and one line naming the holder (host, pid, since). Every error is one line on stderr:
exit code 2 for bad input (the search file, a damaged store, a locked directory, a full or
read-only disk, a reference that fails every initial calculation), 1 for an internal error.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

NAME = "run"
HELP = "start or resume the campaign of a search file (works under mpirun)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("search", help="search file (YAML)")
    parser.add_argument("--run-dir", help="run directory (default: the file's run_dir, relative to the file, "
                                          "else runs/<name>/)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or log lines on stderr")


def _notice(run_dir: Path, quiet: bool):
    """A warning before the campaign's logging is set up: on stderr and appended to csp.log."""

    def emit(message: str) -> None:
        if not quiet:
            print(f"csp: {message}", file=sys.stderr, flush=True)
        try:
            with open(run_dir / "csp.log", "a", encoding="utf-8") as f:
                f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')},000 WARNING {message}\n")
        except OSError:
            pass

    return emit


def run(args: argparse.Namespace) -> int:
    import logging

    from csp.campaign.farm import Farm

    logging.raiseExceptions = False   # a log line a full disk refuses is not a traceback on stderr
    farm = Farm()
    if not farm.is_master:
        farm.serve()
        return 0
    try:
        from csp.campaign.lock import RunLock
        from csp.config import load_search

        search = load_search(args.search, run_dir=args.run_dir)
        notice = _notice(search.run_dir, args.quiet)
        lock = RunLock(search.run_dir, log=notice).acquire()   # before the store is opened or made
    except BaseException:
        farm.stop()   # no task was handed out yet: the workers just leave serve()
        raise
    try:
        from csp.campaign.farm import ended_ranks

        for line in ended_ranks(search.run_dir, mark=True):
            notice(line)
        farm.set_log_dir(search.run_dir)
        from csp.campaign.pipeline import run_campaign

        rows = run_campaign(search, farm, progress=not args.quiet, quiet=args.quiet)
    except BaseException as exc:  # noqa: BLE001 - any failure must end every rank, never hang
        lock.release()
        _fail(farm, exc, search.run_dir)
        raise
    lock.release()
    farm.stop()
    print(f"hull phases ({len(rows)}): " + ", ".join(f"{r['formula']}" for r in rows))
    print(f"run directory: {search.run_dir}")
    sys.stdout.flush()
    return 0


def _fail(farm, exc: BaseException, run_dir: Path) -> None:
    """End the workers after `exc` on rank 0; raise the one-line InputError a full or read-only
    disk deserves (other exceptions are re-raised by the caller)."""
    from csp.atomic import storage_error_message
    from csp.errors import InputError

    if isinstance(exc, KeyboardInterrupt):
        farm.abort("csp: interrupted", code=130)
        return
    message = str(exc) if isinstance(exc, InputError) else storage_error_message(exc, run_dir)
    if message is not None:
        if farm.size > 1 and farm.busy:   # tasks may be in flight: only MPI_Abort ends them surely
            farm.abort(f"csp: error: {message}", code=2)
        farm.stop()
        if not isinstance(exc, InputError):
            raise InputError(message) from None
        return
    if farm.size > 1:
        import traceback

        tb = "".join(traceback.format_exception(exc))
        farm.abort(f"{tb}csp: internal error on MPI rank 0: {type(exc).__name__}: {exc}")
