"""`csp dedup`: remove duplicate structures from a structure file (keeps first copies)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from csp.errors import InputError

NAME = "dedup"
HELP = "remove duplicate structures (rotations, translations, supercells, small distortions)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="structure file with one or more frames (extxyz, cfg, …)")
    parser.add_argument("-o", "--output", required=True, help="file for the distinct structures")
    parser.add_argument("--symprec", type=float, default=0.1,
                        help="spglib tolerance in Å (default 0.1)")
    parser.add_argument("--no-symmetry", action="store_true",
                        help="do not use the space group in the key (very noisy structures)")


def run(args: argparse.Namespace) -> int:
    import ase.io

    from csp.structures.dedup import deduplicate

    path = Path(args.input)
    if not path.is_file():
        raise InputError(f"cannot open '{path}': no such file")
    if args.symprec <= 0:
        raise InputError(f"--symprec must be positive, got {args.symprec}")
    try:
        images = ase.io.read(path, index=":")
    except Exception as exc:  # ase raises many types for unreadable files
        raise InputError(f"cannot read structures from '{path}': {exc}") from None
    for i, atoms in enumerate(images):
        if len(atoms) == 0 or not all(atoms.pbc) or atoms.cell.rank != 3:
            raise InputError(f"'{path}' frame {i}: dedup needs periodic 3-D structures")
    groups = deduplicate(images, symprec=args.symprec, use_symmetry=not args.no_symmetry)
    kept = [images[g[0]] for g in groups]
    for group, atoms in zip(groups, kept):
        atoms.info["duplicates"] = len(group) - 1
    from csp.atomic import ase_write_atomic

    ase_write_atomic(Path(args.output), kept)
    print(f"{len(images)} structures, {len(kept)} distinct, written to {args.output}",
          file=sys.stderr)
    return 0
