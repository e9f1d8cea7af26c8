"""`csp report RUN_DIR`: (re)write RUN_DIR/report/ from the campaign store."""

from __future__ import annotations

import argparse
from pathlib import Path

from csp.errors import InputError

NAME = "report"
HELP = "write RUN_DIR/report/: hull.json, stable/*.cif, report.md and a self-contained report.html"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="a campaign run directory (written by `csp run`)")
    parser.add_argument("--out", help="output directory (default RUN_DIR/report)")


def run(args: argparse.Namespace) -> int:
    from csp.campaign.store import CampaignStore
    from csp.report import write_report

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise InputError(f"'{run_dir}' is not a directory")
    out = Path(args.out) if args.out else run_dir / "report"
    with CampaignStore(run_dir) as store:
        data = store.report_data()
    paths = write_report(data, out)
    print(f"report written to {out}/ ({', '.join(sorted(p.relative_to(out).as_posix() for p in paths.values()))})")
    return 0
