"""`csp export RUN_DIR [-o DIR]`: a campaign's potentials, training set and structures as files."""

from __future__ import annotations

import argparse
from pathlib import Path

from csp.errors import InputError

NAME = "export"
HELP = ("export a campaign: each stage's potential (.mtp + active set .als), the training set (.cfg, "
        "extxyz), reference-relaxed structures (extxyz, ASE database) and hull phases (CIF, POSCAR)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="a campaign run directory (written by `csp run`)")
    parser.add_argument("--out", "-o", help="output directory (default RUN_DIR/export)")


def run(args: argparse.Namespace) -> int:
    from csp.campaign.store import CampaignStore
    from csp.report import export_run

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise InputError(f"'{run_dir}' is not a directory")
    out = Path(args.out) if args.out else run_dir / "export"
    with CampaignStore(run_dir) as store:
        paths = export_run(store, out)
    for name in sorted(paths):
        print(out / name)
    if not paths:
        print(f"nothing to export yet from {run_dir}")
    return 0
