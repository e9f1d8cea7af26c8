"""Training: adjoint gradient vs finite differences, linear solve, conformance of the training
kernel with MLIP, quality bar against MLIP-trained potentials, sigma vs held-out EMT data."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from csp.mtp.fit import (Objective, Weights, cross_validate, errors_of, evaluate_errors, fit, predict,
                         solve_linear)
from csp.mtp.fit_data import FitData, matrix_to_voigt, plus_stress_matrix
from csp.mtp.io import atoms_to_cfg, read_cfg, read_mtp
from csp_testdata import CONFORMANCE

CONF = CONFORMANCE / "mtp"


def emt_configs(n: int, seed: int, species=("Cu",), repeat=(2, 1, 1), rattle=0.1, strain=0.03,
                scale: float = 1.0):
    """EMT-labelled fcc cells (8 atoms for the default repeat): random strain, rattle, decoration."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        at = bulk("Cu", "fcc", a=3.61 * scale, cubic=True).repeat(repeat)
        at.symbols = list(rng.choice(list(species), len(at)))
        eps = rng.uniform(-strain, strain, (3, 3))
        at.set_cell(at.cell[:] @ (np.eye(3) + 0.5 * (eps + eps.T)), scale_atoms=True)
        at.positions += rng.normal(0.0, rattle, at.positions.shape)
        at.calc = EMT()
        e, f, s = at.get_potential_energy(), at.get_forces(), at.get_stress()
        at.calc = SinglePointCalculator(at, energy=e, forces=f, stress=s)
        out.append(atoms_to_cfg(at, list(species)))
    return out


def untrained(name: str, seed: int = 1):
    """The basis of a conformance potential with random radial and zero linear coefficients."""
    mtp = read_mtp(CONF / name / "pot.mtp")
    mtp.radial_coeffs = np.random.default_rng(seed).uniform(-0.1, 0.1, mtp.radial_coeffs.shape)
    mtp.species_coeffs[:] = 0.0
    mtp.moment_coeffs[:] = 0.0
    return mtp


def mlip_errors(name: str):
    """Training errors of MLIP's pot.mtp on in.cfg (its calc-efs output is out.cfg)."""
    cin, cout = read_cfg(CONF / name / "in.cfg"), read_cfg(CONF / name / "out.cfg")
    data = FitData.build(cin, read_mtp(CONF / name / "pot.mtp").max_dist)
    e = np.array([c.energy for c in cout])
    f = np.concatenate([c.forces for c in cout])
    w = np.array([plus_stress_matrix(c.plus_stress) for c in cout])
    return cin, data, errors_of(e, f, w, data)


def test_training_kernel_reproduces_mlip_calc_efs():
    """The forward pass of the loss kernel is MLIP's energy, forces and PlusStress."""
    mtp = read_mtp(CONF / "multi_10" / "pot.mtp")
    cin, cout = read_cfg(CONF / "multi_10" / "in.cfg"), read_cfg(CONF / "multi_10" / "out.cfg")
    e, f, w = predict(mtp, FitData.build(cin, mtp.max_dist))
    n = np.array([c.size for c in cin])
    assert np.max(np.abs(e - [c.energy for c in cout]) / n) < 1e-6
    assert np.max(np.abs(f - np.concatenate([c.forces for c in cout]))) < 2e-6
    assert np.max(np.abs(matrix_to_voigt(w) - [c.plus_stress for c in cout])) < 1e-4


def test_loss_gradient_matches_finite_differences():
    mtp = untrained("multi_06", seed=3)
    mtp.moment_coeffs[:] = np.random.default_rng(4).normal(0, 1, mtp.moment_coeffs.shape)
    mtp.species_coeffs[:] = [-3.0, -2.5, -2.0]
    configs = emt_configs(3, seed=5, species=("Cu", "Pd", "Ag"), repeat=(1, 1, 1))
    data = FitData.build(configs, mtp.max_dist, mtp.species_count)
    obj = Objective(mtp, data, Weights(1.0, 0.01, 0.001, regularization=1e-4))
    theta = mtp.get_parameters()
    loss, grad = obj(theta)
    assert loss > 0
    rng = np.random.default_rng(0)
    nr = mtp.radial_coeffs.size
    picks = list(rng.choice(nr, 12, replace=False)) + [nr, nr + 2] + list(nr + 3 + rng.choice(mtp.moment_coeffs.size, 4, replace=False))
    for k in picks:
        h = 1e-5 * max(1.0, abs(theta[k]))
        tp, tm = theta.copy(), theta.copy()
        tp[k] += h
        tm[k] -= h
        fd = (obj(tp, want_grad=False)[0] - obj(tm, want_grad=False)[0]) / (2 * h)
        assert abs(fd - grad[k]) <= 1e-6 * max(abs(fd), 1e-3 * np.abs(grad).max()), (k, fd, grad[k])


def test_linear_solve_is_stationary_and_lowers_loss():
    mtp = read_mtp(CONF / "multi_10" / "pot.mtp")
    cin = read_cfg(CONF / "multi_10" / "in.cfg")
    data = FitData.build(cin, mtp.max_dist)
    w = Weights()
    before = Objective(mtp, data, w)(mtp.get_parameters())[0]
    solved = solve_linear(mtp, data, w)
    after, grad = Objective(solved, data, w)(solved.get_parameters())
    nr = mtp.radial_coeffs.size
    assert after <= before
    # gradient w.r.t. the linear coefficients vanishes at the solution (relative to its scale)
    g0 = Objective(mtp, data, w)(np.concatenate([mtp.radial_coeffs.ravel(), 0 * mtp.species_coeffs,
                                                  0 * mtp.moment_coeffs]))[1]
    assert np.abs(grad[nr:]).max() < 1e-7 * np.abs(g0[nr:]).max()


def test_fit_is_deterministic():
    configs = emt_configs(6, seed=7)
    a = fit(untrained("cubic_10"), configs, max_iter=15, seed=3)
    b = fit(untrained("cubic_10"), configs, max_iter=15, seed=3)
    assert np.array_equal(a.mtp.get_parameters(), b.mtp.get_parameters())
    assert a.loss == b.loss


@pytest.mark.parametrize("name,max_iter,n_starts", [("cubic_10", 400, 4), ("multi_06", 1000, 1)])
def test_quality_bar_against_mlip(name, max_iter, n_starts):
    """Training from an untrained potential reaches <= 1.2x MLIP's training RMSE (E/atom, F)."""
    cin, data, ref = mlip_errors(name)
    res = fit(untrained(name), cin, data=data, max_iter=max_iter, n_starts=n_starts, start_iter=40, seed=1)
    assert res.errors.rmse_energy <= 1.2 * ref.rmse_energy, (res.errors.rmse_energy, ref.rmse_energy)
    assert res.errors.rmse_forces <= 1.2 * ref.rmse_forces, (res.errors.rmse_forces, ref.rmse_forces)


def test_sigma_is_honest_on_held_out_emt_data():
    """Cross-validated sigma exceeds the training error and bounds the held-out RMSE."""
    train = emt_configs(24, seed=11)
    test = emt_configs(12, seed=12)
    init = untrained("cubic_10")
    kw = dict(max_iter=80)
    sigma = cross_validate(init, train, k=4, seed=0, **kw)
    res = fit(init, train, **kw)
    held = evaluate_errors(res.mtp, FitData.build(test, init.max_dist)).rmse_energy
    assert res.errors.rmse_energy < sigma
    assert held <= 2.0 * sigma, (held, sigma)
    assert 1e-4 < sigma < 0.05


def test_train_cli_with_cross_validation(tmp_path, capsys):
    """`csp mtp init` + `csp mtp train --cv-folds`: sigma stored in the potential, table printed,
    active set beside the potential, and calc-grade reuses it (training configurations <= 1)."""
    from csp.cli import main
    from csp.mtp.io import write_cfg

    train = emt_configs(12, seed=21)
    cfg, init, pot, graded = (tmp_path / n for n in ("train.cfg", "init.mtp", "pot.mtp", "graded.cfg"))
    write_cfg(cfg, train)
    assert main(["mtp", "init", "--level", "6", "--elements", "Cu", "--min-dist", "2.0", "--max-dist", "4.5",
                 "-o", str(init)]) == 0
    assert main(["mtp", "train", str(init), str(cfg), "-o", str(pot), "--max-iter", "20", "--cv-folds", "3",
                 "--seed", "4"]) == 0
    out = capsys.readouterr().out
    assert "energy (meV/atom)" in out and "forces (eV/Å)" in out and "stress (GPa)" in out
    assert "cross-validation (3 folds)" in out
    mtp = read_mtp(pot)
    sigma = float(mtp.metadata["csp_cv_rmse_energy"])
    assert 0 < sigma < 0.1
    assert (tmp_path / "pot.mtp.als").is_file()
    assert main(["mtp", "calc-grade", str(pot), str(cfg), str(cfg), str(graded)]) == 0
    grades = [float(c.features["MV_grade"]) for c in read_cfg(graded)]
    assert max(grades) <= 1 + 1e-6


def test_train_cli_bad_input_is_one_line_error(tmp_path, capsys):
    from csp.cli import main

    (tmp_path / "bad.cfg").write_text("BEGIN_CFG\n Size\n oops\nEND_CFG\n")
    init = tmp_path / "init.mtp"
    assert main(["mtp", "init", "--level", "6", "--elements", "Cu", "--min-dist", "2.0", "--max-dist", "4.5",
                 "-o", str(init)]) == 0
    assert main(["mtp", "train", str(init), str(tmp_path / "missing.cfg"), "-o", str(tmp_path / "p.mtp")]) == 2
    assert main(["mtp", "train", str(init), str(tmp_path / "bad.cfg"), "-o", str(tmp_path / "p.mtp")]) == 2
    err = capsys.readouterr().err
    assert "missing.cfg" in err and "bad.cfg" in err
