"""`csp report RUN_DIR`: (re)write RUN_DIR/report/ from the campaign store."""

from __future__ import annotations

import argparse
from pathlib import Path

from csp.errors import InputError

NAME = "report"
HELP = ("write RUN_DIR/report/: report.html (self-contained), report.md, hull.json, CIFs, and the files of "
        "`csp export`")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="a campaign run directory (written by `csp run`)")
    parser.add_argument("--out", "-o", help="output directory (default RUN_DIR/report)")
    parser.add_argument("--within", type=float, default=50.0, metavar="MEV",
                        help="list every reference-relaxed structure within MEV meV/atom of the hull (default 50)")


def within_ev(value: float) -> float:
    """--within in meV/atom -> eV/atom (an InputError for a negative or non-finite value)."""
    import math

    if not math.isfinite(value) or value < 0:
        raise InputError(f"--within: expected a distance >= 0 in meV/atom, got {value:g}")
    return value / 1000.0


def run(args: argparse.Namespace) -> int:
    from csp.campaign.store import CampaignStore
    from csp.report import collect, export_run, write_report

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise InputError(f"'{run_dir}' is not a directory")
    within = within_ev(args.within)
    out = Path(args.out) if args.out else run_dir / "report"
    with CampaignStore(run_dir) as store:
        paths = write_report(collect(store, within=within), out)
        paths.update(export_run(store, out))
    shown = sorted({p.relative_to(out).parts[0] + ("/" if len(p.relative_to(out).parts) > 1 else "")
                    for p in paths.values()})
    print(f"report written to {out}/ ({', '.join(shown)})")
    return 0
