"""`csp mtp SUBVERB ...` — Moment Tensor Potential building blocks, mirroring MLIP's `mlp` verbs.

Sub-verbs live in the SUBVERBS table below: each entry is (name, help, add_arguments, run).
To add one, write `_xyz_arguments(parser)` and `_xyz_run(args) -> int` and append a row.
"""

from __future__ import annotations

import argparse
import itertools

from csp.errors import InputError

NAME = "mtp"
HELP = "Moment Tensor Potentials: init, calc-efs, train, calc-grade, select-add (MLIP-compatible files)"


# ---------------------------------------------------------------------- init
def _init_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--level", type=int, required=True, help="basis level 2..28 (MLIP: 6, 8, ..., 28)")
    p.add_argument("--elements", required=True, help="comma-separated symbols in type order, e.g. Cu,Pd")
    p.add_argument("--min-dist", type=float, required=True, help="lower edge of the radial basis (Å)")
    p.add_argument("--max-dist", type=float, required=True, help="cutoff radius (Å)")
    p.add_argument("--radial-basis-size", type=int, default=8, help="Chebyshev polynomials (default 8)")
    p.add_argument("--radial-funcs-count", type=int, default=None,
                   help="radial functions mu (default: as MLIP's template of that level)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random radial coefficients")
    p.add_argument("-o", "--output", required=True, help="output potential file (.mtp or .almtp)")


def _init_run(args: argparse.Namespace) -> int:
    from csp.mtp.contraction import init_mtp
    from csp.mtp.io import write_mtp

    elements = [e.strip() for e in args.elements.split(",") if e.strip()]
    mtp = init_mtp(args.level, elements, args.min_dist, args.max_dist, args.radial_basis_size,
                   args.radial_funcs_count, args.seed)
    write_mtp(mtp, args.output)
    print(f"wrote {args.output}: level {args.level}, {mtp.species_count} species "
          f"({','.join(elements)}), {mtp.alpha_scalar_moments} basis functions, {mtp.n_params} parameters")
    return 0


# ---------------------------------------------------------------------- calc-efs
def _calc_efs_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("potential", help="potential file (.mtp/.almtp, MLIP's selection block allowed)")
    p.add_argument("input", help="configurations (.cfg)")
    p.add_argument("output", help="configurations with computed energy, forces, PlusStress (.cfg)")


def _calc_efs_run(args: argparse.Namespace) -> int:
    from csp.atomic import atomic_write
    from csp.mtp.evaluate import calc_efs_configurations
    from csp.mtp.io import format_cfg, iter_cfg, read_mtp

    mtp = read_mtp(args.potential)
    stream = iter_cfg(args.input)
    count = 0

    def next_chunk() -> list:
        chunk = list(itertools.islice(stream, 256))
        for k, cfg in enumerate(chunk):
            if cfg.size and cfg.types.max() >= mtp.species_count:
                raise InputError(f"{args.input}: configuration {count + k + 1} has atom type "
                                 f"{int(cfg.types.max())} but {args.potential} has "
                                 f"{mtp.species_count} species")
        return chunk

    # Read and check the potential and the first configurations before touching the output;
    # the output is written atomically, so an error in a later chunk leaves an old file as it was.
    chunk = next_chunk()
    with atomic_write(args.output, "w") as out:
        while chunk:
            res = calc_efs_configurations(mtp, chunk)
            start = 0
            for k, cfg in enumerate(chunk):
                n = cfg.size
                cfg.energy = float(res.energies[k])
                cfg.forces = res.forces[start:start + n].copy()
                cfg.plus_stress = None if cfg.cell is None else -res.stresses[k] * cfg.volume
                start += n
                out.write(format_cfg(cfg) + "\n")
            count += len(chunk)
            chunk = next_chunk()
    print(f"wrote {args.output}: {count} configurations")
    return 0


SUBVERBS = [
    ("init", "write an untrained potential of a given level", _init_arguments, _init_run),
    ("calc-efs", "compute energy, forces and stress of configurations", _calc_efs_arguments, _calc_efs_run),
]

# training and active learning (logic in csp/mtp/training_cli.py)
from csp.mtp import training_cli as _tc  # noqa: E402

SUBVERBS += [
    ("train", "fit a potential to energies, forces, stresses (prints RMSE/MAE)", _tc.add_train_arguments, _tc.run_train),
    ("calc-grade", "extrapolation grades (MV_grade, nbh_grades) w.r.t. the potential's active set "
     "(MLIP .almtp / mlp train output) or a training set", _tc.add_grade_arguments, _tc.run_grade),
    ("select-add", "select the candidates that most enlarge the active set (MaxVol)", _tc.add_select_arguments, _tc.run_select),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="mtp_command", metavar="SUBVERB", parser_class=type(parser))
    for name, help_text, add, run in SUBVERBS:
        p = sub.add_parser(name, help=help_text, description=help_text)
        add(p)
        p.set_defaults(_mtp_run=run)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "_mtp_run", None) is None:
        raise InputError("csp mtp: give a sub-verb: " + ", ".join(name for name, *_ in SUBVERBS))
    return int(args._mtp_run(args) or 0)
