"""`csp prototypes list | decorate NAME|all --elements A,B [-o FILE]`: the prototype library."""

from __future__ import annotations

import argparse
import sys

NAME = "prototypes"
HELP = "list the prototype library or decorate prototypes with the search's elements"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", parser_class=type(parser))
    sub.required = True
    sub.add_parser("list", help="table of prototypes: name, Strukturbericht, Pearson, "
                                "space group, Wyckoff sites")
    dec = sub.add_parser("decorate", help="assign elements to sublattices in every distinct way")
    dec.add_argument("name", metavar="NAME|all", help="prototype name (e.g. L1_2, C15, NaCl) or 'all'")
    dec.add_argument("--elements", required=True, help="comma-separated elements, e.g. Cu,Pd")
    dec.add_argument("-o", "--output", help="write structures to this extended-XYZ file")
    dec.add_argument("--conventional", action="store_true",
                     help="conventional instead of primitive cells")


def run(args: argparse.Namespace) -> int:
    from csp.structures.prototypes import decorate, list_prototypes

    if args.action == "list":
        rows = [(p.name, p.strukturbericht, p.prototype, p.pearson, str(p.space_group),
                 " ".join(f"{s.sublattice}:{s.wyckoff}" for s in p.sites))
                for p in list_prototypes()]
        head = ("name", "Strukturbericht", "prototype", "Pearson", "space group", "sites")
        widths = [max(len(r[i]) for r in rows + [head]) for i in range(5)]
        for r in [head] + rows:
            print("  ".join(c.ljust(w) for c, w in zip(r[:5], widths)) + "  " + r[5])
        return 0
    structures = list(decorate(args.name, args.elements, primitive=not args.conventional))
    if args.output:
        from ase.io import write

        write(args.output, structures, format="extxyz")
        print(f"{len(structures)} structures written to {args.output}")
    else:
        for a in structures:
            print(f"{a.info['prototype']:10s} {a.get_chemical_formula():14s} "
                  f"{len(a):4d} atoms  {a.info['assignment']}")
        print(f"{len(structures)} structures", file=sys.stderr)
    return 0
