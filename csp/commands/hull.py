"""`csp hull FILE`: convex-hull table of any file of structures with energies."""

from __future__ import annotations

import argparse
import json

from csp.errors import InputError

NAME = "hull"
HELP = "print the convex hull (formation energies, distance to hull, decomposition) of structures with energies"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="structures with total energies (extxyz or any ASE-readable format)")
    parser.add_argument("--elements", nargs="+", metavar="EL",
                        help="hull elements (default: those present, by atomic number)")
    parser.add_argument("--tolerance", type=float, default=1.0,
                        help="'near hull' tolerance in meV/atom (default 1)")
    parser.add_argument("--json", metavar="OUT", help="also write every row as JSON to OUT")


def run(args: argparse.Namespace) -> int:
    from csp.hull import build_hull, read_entries  # pymatgen: only when the verb runs

    if args.tolerance < 0:
        raise InputError(f"--tolerance: expected a non-negative number of meV/atom, got {args.tolerance}")
    hull = build_hull(read_entries(args.file), elements=args.elements, tolerance=args.tolerance / 1000.0)
    print(hull.table())
    stable = hull.stable()
    print(f"\n{len(hull.rows)} structures, {len(stable)} on the hull: {', '.join(r.formula for r in stable)}; "
          f"{len(hull.near_hull()) - len(stable)} more within {args.tolerance:g} meV/atom")
    if args.json:
        from csp.atomic import atomic_write

        with atomic_write(args.json) as fh:
            json.dump({"elements": hull.elements, "tolerance": hull.tolerance,
                       "rows": [r.as_dict() for r in hull.rows]}, fh, indent=1)
    return 0
