"""`csp enumerate`: derivative superstructures of a parent lattice (Hart–Forcade enumeration)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from csp.errors import InputError

NAME = "enumerate"
HELP = "enumerate derivative superstructures of a parent lattice (fcc, bcc, sc, hcp, diamond, file)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lattice", required=True,
                        help="fcc, bcc, sc, hcp, diamond, or a structure file (primitive cell)")
    parser.add_argument("--elements", required=True, help="comma-separated species, e.g. Cu,Pd")
    parser.add_argument("--max-atoms", type=int, required=True, help="largest cell (atoms)")
    parser.add_argument("--min-atoms", type=int, default=1, help="smallest cell (atoms)")
    parser.add_argument("--concentrations", default=None,
                        help="atomic-fraction limits, e.g. Cu:0.25-0.75,Pd:0.5")
    parser.add_argument("--site", action="append", default=None, metavar="ELEMENTS",
                        help="allowed species on parent site i (repeat once per site, in order; "
                             "'*' = all), e.g. --site Cu,Pd --site Pd")
    parser.add_argument("--all-species", action="store_true",
                        help="keep only structures that contain every element")
    parser.add_argument("--count", action="store_true", help="print only the number of structures")
    parser.add_argument("-o", "--output", default=None,
                        help="write the structures here (any ase.io format; extxyz recommended)")


def parse_concentrations(text: str | None) -> dict[str, tuple[float, float]] | None:
    """'Cu:0.25-0.75,Pd:0.5' → {'Cu': (0.25, 0.75), 'Pd': (0.5, 0.5)}."""
    if not text:
        return None
    out: dict[str, tuple[float, float]] = {}
    for item in text.split(","):
        el, sep, rng = item.partition(":")
        if not sep or not el.strip():
            raise InputError(f"--concentrations: '{item}' is not ELEMENT:FRACTION or "
                             "ELEMENT:MIN-MAX")
        lo, dash, hi = rng.partition("-")
        try:
            out[el.strip()] = (float(lo), float(hi)) if dash else (float(lo), float(lo))
        except ValueError:
            raise InputError(f"--concentrations: '{item}' has a non-numeric fraction") from None
    return out


def run(args: argparse.Namespace) -> int:
    from csp.structures.enumerate import count_structures, enumerate_structures

    sites = None
    if args.site:
        sites = [None if s.strip() == "*" else [e.strip() for e in s.split(",") if e.strip()]
                 for s in args.site]
    kwargs = dict(lattice=args.lattice, elements=args.elements, max_atoms=args.max_atoms,
                  min_atoms=args.min_atoms,
                  concentrations=parse_concentrations(args.concentrations),
                  site_species=sites, all_species=args.all_species)
    if args.count:
        print(count_structures(**kwargs))
        return 0
    if args.output is None:
        by_size = count_structures(by_size=True, **kwargs)
        print(f"{'atoms':>6} {'structures':>11}")
        for natoms, count in by_size.items():
            print(f"{natoms:6d} {count:11d}")
        print(f"{'total':>6} {sum(by_size.values()):11d}")
        return 0
    import ase.io

    path = Path(args.output)
    structures = enumerate_structures(**kwargs)
    first = next(structures, None)  # validates input before the file is created
    count = 0

    def stream():
        nonlocal count
        if first is not None:
            count += 1
            yield first
        for atoms in structures:
            count += 1
            yield atoms

    from csp.atomic import ase_write_atomic, atomic_write

    if path.suffix in (".xyz", ".extxyz"):   # streamed into a temporary file that replaces `path`
        with atomic_write(path) as handle:
            ase.io.write(handle, stream(), format="extxyz")
    else:
        ase_write_atomic(path, list(stream()))
    print(f"{count} structures written to {path}", file=sys.stderr)
    return 0
