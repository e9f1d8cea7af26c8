"""`csp random --elements A,B --count N --max-atoms M [--seed S] -o FILE`: random symmetric
structures (random space group, Wyckoff combination, free coordinates; Vegard volume)."""

from __future__ import annotations

import argparse

from csp.errors import InputError

NAME = "random"
HELP = "generate random symmetric structures (random space group and Wyckoff positions)"


def _ints(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-"))
                out.extend(range(lo, hi + 1))
            elif part:
                out.append(int(part))
        except ValueError:
            raise InputError(f"--space-groups: '{part}' is not a number or range like 195-230") \
                from None
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--elements", required=True, help="comma-separated elements, e.g. Cu,Pd")
    parser.add_argument("--count", type=int, required=True, help="number of structures")
    parser.add_argument("--max-atoms", type=int, required=True, help="maximum atoms per primitive cell")
    parser.add_argument("--min-atoms", type=int, default=1, help="minimum atoms per primitive cell")
    parser.add_argument("--composition", help="fixed integer ratio, e.g. 1,3 (order of --elements)")
    parser.add_argument("--space-groups", help="allowed space groups, e.g. 2-230 or 221,225,229")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--distance-factor", type=float, default=0.75,
                        help="minimum distance / sum of covalent radii (default 0.75)")
    parser.add_argument("--max-attempts", type=int, default=2000,
                        help="failed attempts allowed per structure before giving up")
    parser.add_argument("-o", "--output", help="write structures to this extended-XYZ file")


def run(args: argparse.Namespace) -> int:
    from csp.structures.random_structures import random_structures

    composition = None
    if args.composition:
        try:
            composition = [int(x) for x in args.composition.split(",")]
        except ValueError:
            raise InputError(f"--composition: '{args.composition}' must be integers like 1,3") \
                from None
    groups = _ints(args.space_groups) if args.space_groups else None
    structures = list(random_structures(
        args.elements, args.count, args.max_atoms, args.seed, min_atoms=args.min_atoms,
        composition=composition, space_groups=groups, distance_factor=args.distance_factor,
        max_attempts=args.max_attempts))
    if args.output:
        from ase.io import write

        write(args.output, structures, format="extxyz")
        print(f"{len(structures)} structures written to {args.output}")
    else:
        for a in structures:
            print(f"{a.info['space_group']:4d} {a.info['space_group_symbol']:10s} "
                  f"{a.get_chemical_formula():12s} {a.info['wyckoff']}")
    return 0
