"""`csp run SEARCH.yaml`: start or resume a campaign (also under `mpirun -n N`)."""

from __future__ import annotations

import argparse
import sys

NAME = "run"
HELP = "start or resume the campaign of a search file (works under mpirun)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("search", help="search file (YAML)")
    parser.add_argument("--run-dir", help="run directory (default: the file's run_dir, else runs/<name>/)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or log lines on stderr")


def run(args: argparse.Namespace) -> int:
    from csp.campaign.farm import Farm
    from csp.errors import InputError

    farm = Farm()
    if not farm.is_master:
        farm.serve()
        return 0
    try:
        from csp.config import load_search

        search = load_search(args.search, run_dir=args.run_dir)
        from csp.campaign.pipeline import run_campaign

        rows = run_campaign(search, farm, progress=not args.quiet, quiet=args.quiet)
    except InputError:
        farm.stop()
        raise
    except KeyboardInterrupt:
        farm.abort("csp: interrupted", code=130)
        raise
    except BaseException as exc:  # noqa: BLE001 - any failure must end every rank, never hang
        if farm.size > 1:
            import traceback

            farm.abort(f"{traceback.format_exc()}csp: internal error on MPI rank 0: {type(exc).__name__}: {exc}")
        raise
    farm.stop()
    print(f"hull phases ({len(rows)}): " + ", ".join(f"{r['formula']}" for r in rows))
    print(f"run directory: {search.run_dir}")
    sys.stdout.flush()
    return 0
