"""Logic of the `csp mtp train | calc-grade | select-add` sub-verbs (wired in csp/commands/mtp.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from csp.errors import InputError

# heavy modules (numba kernels) are imported inside the run functions, keeping `csp --help` fast


def _need(path: str, what: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{path}: {what} not found")
    return p


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("init", help="initial potential (.mtp), e.g. from `csp mtp init`")
    p.add_argument("train", help="training configurations (.cfg) with energies/forces/stresses")
    p.add_argument("-o", "--output", required=True,
                   help="trained potential (.mtp); the active set is written beside it (.als) and, for "
                        "an .almtp with --grade-coefficients all, also into it as MLIP does")
    p.add_argument("--max-iter", type=int, default=500, help="BFGS iterations (default 500)")
    p.add_argument("--energy-weight", type=float, default=1.0)
    p.add_argument("--force-weight", type=float, default=0.01)
    p.add_argument("--stress-weight", type=float, default=0.001)
    p.add_argument("--regularization", type=float, default=0.0, help="ridge on radial and moment coefficients")
    p.add_argument("--method", choices=("varpro", "lbfgs"), default="varpro")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--starts", type=int, default=1, help="multi-start: random radial restarts tried (default 1)")
    p.add_argument("--cv-folds", type=int, default=0, help="k-fold cross-validation for sigma (0: off)")
    p.add_argument("--grade-mode", choices=("neighborhood", "configuration"), default="neighborhood",
                   help="mode of the active set written beside the potential")
    p.add_argument("--grade-coefficients", choices=("linear", "all"), default="linear",
                   help="active-set rows: derivatives w.r.t. the linear coefficients (default) "
                        "or all coefficients, radial included (as MLIP)")


def run_train(args: argparse.Namespace) -> int:
    from csp.mtp.fit import cross_validate, fit
    from csp.mtp.fit_data import FitData
    from csp.mtp.grade import ActiveSet, active_set_path
    from csp.mtp.io import read_cfg, read_mtp, write_mtp

    init = read_mtp(_need(args.init, "initial potential"))
    configs = read_cfg(_need(args.train, "training set"))
    if not configs:
        raise InputError(f"{args.train}: no configurations")
    if args.max_iter < 0:
        raise InputError("--max-iter must be >= 0")
    if args.starts < 1:
        raise InputError("--starts must be >= 1")
    data = FitData.build(configs, init.max_dist, init.species_count)
    kw = dict(energy_weight=args.energy_weight, force_weight=args.force_weight,
              stress_weight=args.stress_weight, regularization=args.regularization,
              max_iter=args.max_iter, method=args.method, n_starts=args.starts)
    sigma = None
    if args.cv_folds:
        sigma = cross_validate(init, [], k=args.cv_folds, seed=args.seed, data=data, **kw)
    res = fit(init, [], data=data, seed=args.seed, **kw)
    mtp = res.mtp
    if sigma is not None:
        mtp.metadata["csp_cv_rmse_energy"] = repr(float(sigma))
    aset = ActiveSet.build(mtp, data, mode=args.grade_mode, coefficients=args.grade_coefficients)
    selection = None
    if args.grade_coefficients == "all" and str(args.output).endswith(".almtp"):
        selection = aset.to_mlip(mtp, configs)  # MLIP's #MVS_v1.1 block, as `mlp train` writes
    write_mtp(mtp, args.output, selection=selection)
    aset.save(active_set_path(args.output))
    print(f"trained {args.output}: {res.n_iter} iterations, loss {res.loss:.6e}")
    print("training errors:")
    print(res.errors.table())
    if sigma is not None:
        print(f"cross-validation ({args.cv_folds} folds) RMSE energy: {1e3 * sigma:.4f} meV/atom")
    return 0


def add_grade_arguments(p: argparse.ArgumentParser) -> None:
    p.usage = "%(prog)s [-h] [--mode MODE] [--coefficients {linear,all}] POT [TRAIN] IN OUT"
    p.add_argument("potential", help="potential (.mtp/.almtp); MLIP's active set stored in it "
                                     "(#MVS_v1.1 block) or the sidecar POT.als is used if present")
    p.add_argument("files", nargs="+", metavar="[TRAIN] IN OUT",
                   help="configurations to grade (.cfg) and the output .cfg (Feature MV_grade, "
                        "nbh_grades); with a training set first, the active set is built from it "
                        "when the potential has none")
    p.add_argument("--mode", choices=("neighborhood", "configuration"), default=None,
                   help="grade mode (default: the stored active set's, else neighborhood)")
    p.add_argument("--coefficients", choices=("linear", "all"), default=None,
                   help="active-set rows when building one from TRAIN (default linear)")


def _active_set(mtp, selection, pot_path: str, train_path: str | None, mode: str | None,
                coefficients: str | None = None):
    """The active set to grade with, first match wins: MLIP's own active set stored in the
    potential file; the sidecar POT.als (if it belongs to the potential); one built from the
    training configurations. `mode`/`coefficients`, if given, must match."""
    from csp.mtp.grade import ActiveSet, active_set_path
    from csp.mtp.io import read_cfg

    def fits(aset) -> bool:
        return (mode is None or aset.mode == mode) and (coefficients is None or aset.coefficients == coefficients)

    if selection is not None and selection.mode != "mixed":
        aset = ActiveSet.from_mlip(mtp, selection)
        if fits(aset):
            return aset
    side = active_set_path(pot_path)
    if side.is_file():
        try:
            aset = ActiveSet.load(side)
            aset.check(mtp)
            if fits(aset):
                return aset
        except InputError:
            pass
    if train_path is None:
        raise InputError(f"{pot_path}: no active set stored in the potential (no #MVS_v1.1 block, "
                         f"no {side.name}){' for the requested mode' if mode or coefficients else ''}: "
                         "give a training set (POT TRAIN IN OUT)")
    configs = read_cfg(_need(train_path, "training set"))
    if not configs:
        raise InputError(f"{train_path}: no configurations")
    return ActiveSet.build(mtp, configs, mode=mode or "neighborhood", coefficients=coefficients or "linear")


def _read_potential(path: str):
    from csp.mtp.io import read_almtp

    return read_almtp(_need(path, "potential"))


def run_grade(args: argparse.Namespace) -> int:
    import numpy as np

    from csp.mtp.grade import grade
    from csp.mtp.io import read_cfg, write_cfg

    if len(args.files) not in (2, 3):
        raise InputError("calc-grade needs POT IN OUT (active set stored in POT) or POT TRAIN IN OUT")
    train, inp, out = ([None] + list(args.files)) if len(args.files) == 2 else args.files
    mtp, selection = _read_potential(args.potential)
    aset = _active_set(mtp, selection, args.potential, train, args.mode, args.coefficients)
    configs = read_cfg(_need(inp, "input configurations"))
    if aset.mode == "neighborhood":
        per_cfg, per_atom = grade(mtp, aset, configs, per_atom=True)
        for cfg, g in zip(configs, per_atom):
            cfg.atom_data["nbh_grades"] = np.asarray(g)
    else:
        per_cfg = grade(mtp, aset, configs)
    for cfg, g in zip(configs, per_cfg):
        cfg.features["MV_grade"] = f"{g:.6f}"
    write_cfg(out, configs)
    if len(per_cfg):
        print(f"graded {len(configs)} configurations ({aset.mode}, {aset.coefficients} coefficients): "
              f"max grade {per_cfg.max():.4f}, {int(np.sum(per_cfg > 1.0 + 1e-6))} above 1")
    return 0


def add_select_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("potential", help="potential (.mtp)")
    p.add_argument("train", help="training configurations (.cfg)")
    p.add_argument("new", help="candidate configurations (.cfg)")
    p.add_argument("output", help="selected configurations (.cfg)")
    p.add_argument("--mode", choices=("neighborhood", "configuration"), default=None,
                   help="selection mode (default: the stored active set's, else neighborhood)")
    p.add_argument("--coefficients", choices=("linear", "all"), default=None,
                   help="active-set rows when building one from TRAIN (default linear)")
    p.add_argument("--max", type=int, default=None, dest="max_count", help="select at most this many")


def run_select(args: argparse.Namespace) -> int:
    from csp.mtp.io import read_cfg, write_cfg
    from csp.mtp.select import select

    mtp, selection = _read_potential(args.potential)
    aset = _active_set(mtp, selection, args.potential, args.train, args.mode, args.coefficients)
    cands = read_cfg(_need(args.new, "candidate configurations"))
    if args.max_count is not None and args.max_count < 1:
        raise InputError("--max must be >= 1")
    idx = select(mtp, aset, cands, args.max_count) if cands else []
    write_cfg(args.output, [cands[i] for i in idx])
    print(f"selected {len(idx)} of {len(cands)} configurations")
    return 0
