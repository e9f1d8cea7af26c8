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
    p.add_argument("-o", "--output", required=True, help="trained potential (.mtp); the active set is written beside it (.als)")
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
    write_mtp(mtp, args.output)
    ActiveSet.build(mtp, data, mode=args.grade_mode).save(active_set_path(args.output))
    print(f"trained {args.output}: {res.n_iter} iterations, loss {res.loss:.6e}")
    print("training errors:")
    print(res.errors.table())
    if sigma is not None:
        print(f"cross-validation ({args.cv_folds} folds) RMSE energy: {1e3 * sigma:.4f} meV/atom")
    return 0


def add_grade_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("potential", help="potential (.mtp)")
    p.add_argument("train", help="training configurations (.cfg) defining the active set")
    p.add_argument("input", help="configurations to grade (.cfg)")
    p.add_argument("output", help="output .cfg with Feature MV_grade and nbh_grades")
    p.add_argument("--mode", choices=("neighborhood", "configuration"), default="neighborhood")


def _active_set(mtp, pot_path: str, train_path: str, mode: str):
    """The sidecar active set if it exists and matches the potential and mode, else a new one
    built from the training configurations."""
    from csp.mtp.grade import ActiveSet, active_set_path
    from csp.mtp.io import read_cfg

    side = active_set_path(pot_path)
    if side.is_file():
        aset = ActiveSet.load(side)
        try:
            aset.check(mtp)
            if aset.mode == mode:
                return aset
        except InputError:
            pass
    configs = read_cfg(_need(train_path, "training set"))
    if not configs:
        raise InputError(f"{train_path}: no configurations")
    return ActiveSet.build(mtp, configs, mode=mode)


def run_grade(args: argparse.Namespace) -> int:
    import numpy as np

    from csp.mtp.grade import grade
    from csp.mtp.io import read_cfg, read_mtp, write_cfg

    mtp = read_mtp(_need(args.potential, "potential"))
    aset = _active_set(mtp, args.potential, args.train, args.mode)
    configs = read_cfg(_need(args.input, "input configurations"))
    if aset.mode == "neighborhood":
        per_cfg, per_atom = grade(mtp, aset, configs, per_atom=True)
        for cfg, g in zip(configs, per_atom):
            cfg.atom_data["nbh_grades"] = np.asarray(g)
    else:
        per_cfg = grade(mtp, aset, configs)
    for cfg, g in zip(configs, per_cfg):
        cfg.features["MV_grade"] = f"{g:.6f}"
    write_cfg(args.output, configs)
    if len(per_cfg):
        print(f"graded {len(configs)} configurations: max grade {per_cfg.max():.4f}, "
              f"{int(np.sum(per_cfg > 1.0 + 1e-6))} above 1")
    return 0


def add_select_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("potential", help="potential (.mtp)")
    p.add_argument("train", help="training configurations (.cfg)")
    p.add_argument("new", help="candidate configurations (.cfg)")
    p.add_argument("output", help="selected configurations (.cfg)")
    p.add_argument("--mode", choices=("neighborhood", "configuration"), default="neighborhood")
    p.add_argument("--max", type=int, default=None, dest="max_count", help="select at most this many")


def run_select(args: argparse.Namespace) -> int:
    from csp.mtp.io import read_cfg, read_mtp, write_cfg
    from csp.mtp.select import select

    mtp = read_mtp(_need(args.potential, "potential"))
    aset = _active_set(mtp, args.potential, args.train, args.mode)
    cands = read_cfg(_need(args.new, "candidate configurations"))
    if args.max_count is not None and args.max_count < 1:
        raise InputError("--max must be >= 1")
    idx = select(mtp, aset, cands, args.max_count) if cands else []
    write_cfg(args.output, [cands[i] for i in idx])
    print(f"selected {len(idx)} of {len(cands)} configurations")
    return 0
