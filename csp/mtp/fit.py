"""Training an MTP on energies, forces and stresses (weighted least squares).

Loss (MLIP-3's default "vibrations" weighting, averaged over the K training configurations):

    L = (1/K) sum_c [ w_e (E_c - E_c^ref)^2 / N_c  +  w_f sum_i |F_i - F_i^ref|^2
                      + w_s sum_ab (W_ab - W_ab^ref)^2 / N_c ]  +  lambda (|c|^2 + |xi|^2)

with E in eV, F in eV/Å, W the virial = MLIP's PlusStress (eV, full 3x3). The first term is
N_c times the squared error of the energy per atom. Defaults w_e = 1, w_f = 0.01, w_s = 0.001.

Procedure: (1) the species and moment coefficients (the energy is linear in them) are solved
exactly by linear least squares at the initial radial coefficients; (2) all parameters are
optimised with scipy's L-BFGS using the analytic adjoint gradient of csp.mtp.fit_kernels;
(3) the linear coefficients are re-solved at the final radial coefficients (never raises L).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import scipy.linalg
import scipy.optimize

from csp.errors import InputError
from csp.mtp import fit_kernels as fk
from csp.mtp.fit_data import FitData, as_configurations, matrix_to_voigt
from csp.mtp.potential import MTP

EV_A3_TO_GPA = 160.21766208


@dataclass
class Weights:
    """Loss weights (see module docstring) and the ridge regularisation lambda."""

    energy: float = 1.0
    forces: float = 0.01
    stress: float = 0.001
    regularization: float = 0.0


@dataclass
class FitErrors:
    """Training/validation errors. Energy per atom in eV/atom, forces in eV/Å (RMS of the
    per-atom error vector norm, as MLIP), stress in eV/Å³ (RMS over the six Voigt components)."""

    rmse_energy: float = float("nan")
    mae_energy: float = float("nan")
    rmse_forces: float = float("nan")
    mae_forces: float = float("nan")
    rmse_stress: float = float("nan")
    mae_stress: float = float("nan")
    n_configs: int = 0
    n_atoms: int = 0

    def table(self) -> str:
        """Human-readable table: energy meV/atom, forces eV/Å, stress GPa."""
        rows = [("energy (meV/atom)", 1e3 * self.rmse_energy, 1e3 * self.mae_energy),
                ("forces (eV/Å)", self.rmse_forces, self.mae_forces),
                ("stress (GPa)", EV_A3_TO_GPA * self.rmse_stress, EV_A3_TO_GPA * self.mae_stress)]
        lines = [f"{'':<20}{'RMSE':>12}{'MAE':>12}"]
        def cell(v: float) -> str:
            return f"{v:>12.4f}" if np.isfinite(v) else f"{'n/a':>12}"

        for name, rmse, mae in rows:
            lines.append(f"{name:<20}{cell(rmse)}{cell(mae)}")
        lines.append(f"({self.n_configs} configurations, {self.n_atoms} atoms)")
        return "\n".join(lines)


@dataclass
class FitResult:
    """A trained potential, its training errors, final loss and L-BFGS iteration count."""

    mtp: MTP
    errors: FitErrors
    loss: float
    n_iter: int
    history: list[float] = field(default_factory=list)


# ---------------------------------------------------------------------------- evaluation

def predict(mtp: MTP, data: FitData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Energies (K,) eV, forces (Ntot, 3) eV/Å, virials (K, 3, 3) eV for every configuration."""
    e, f, w = _empty_outputs(data)
    z = np.zeros(0)
    fk.loss_and_grad(mtp.alpha_index_basic, mtp.alpha_index_times, mtp.alpha_moment_mapping,
                     mtp.alpha_moments_count, mtp.radial_coeffs, mtp.species_coeffs, mtp.moment_coeffs,
                     mtp.min_dist, mtp.max_dist, mtp.scaling, data.atom_off, data.types, data.pair_off,
                     data.pj, data.rij, data.e_ref, data.f_ref, data.w_ref, data.has_e, data.has_f,
                     data.has_s, 0.0, 0.0, 0.0, False, e, f, w,
                     np.zeros_like(mtp.radial_coeffs), np.zeros_like(mtp.species_coeffs),
                     np.zeros_like(mtp.moment_coeffs))
    del z
    return e, f, w


def _empty_outputs(data: FitData):
    K = data.n_configs
    return np.zeros(K), np.zeros((len(data.types), 3)), np.zeros((K, 3, 3))


def errors_of(e: np.ndarray, f: np.ndarray, w: np.ndarray, data: FitData) -> FitErrors:
    """Errors of predictions (e, f, w) against the references in `data`."""
    n = data.natoms
    out = FitErrors(n_configs=data.n_configs, n_atoms=int(n.sum()))
    if data.has_e.any():
        de = ((e - data.e_ref) / n)[data.has_e]
        out.rmse_energy, out.mae_energy = float(np.sqrt(np.mean(de ** 2))), float(np.mean(np.abs(de)))
    fmask = np.repeat(data.has_f, n)
    if fmask.any():
        df = np.linalg.norm(f - data.f_ref, axis=1)[fmask]
        out.rmse_forces, out.mae_forces = float(np.sqrt(np.mean(df ** 2))), float(np.mean(np.abs(df)))
    smask = data.has_s & np.isfinite(data.volumes)
    if smask.any():
        ds = matrix_to_voigt(w - data.w_ref)[smask] / data.volumes[smask, None]
        out.rmse_stress, out.mae_stress = float(np.sqrt(np.mean(ds ** 2))), float(np.mean(np.abs(ds)))
    return out


def evaluate_errors(mtp: MTP, data: FitData) -> FitErrors:
    """Errors of `mtp` on the configurations of `data`."""
    return errors_of(*predict(mtp, data), data)


# ---------------------------------------------------------------------------- loss

class Objective:
    """Loss and its gradient as a function of the parameter vector (MTP.get_parameters order)."""

    def __init__(self, template: MTP, data: FitData, weights: Weights):
        self.template, self.data, self.weights = template, data, weights
        self.nr = template.radial_coeffs.size
        self.ns = template.species_coeffs.size
        self.n_evals = 0

    def unpack(self, theta: np.ndarray):
        rc = np.ascontiguousarray(theta[:self.nr]).reshape(self.template.radial_coeffs.shape)
        sc = np.ascontiguousarray(theta[self.nr:self.nr + self.ns])
        mc = np.ascontiguousarray(theta[self.nr + self.ns:])
        return rc, sc, mc

    def __call__(self, theta: np.ndarray, want_grad: bool = True) -> tuple[float, np.ndarray]:
        t, d, w = self.template, self.data, self.weights
        rc, sc, mc = self.unpack(np.asarray(theta, dtype=np.float64))
        e, f, vir = _empty_outputs(d)
        g_rc, g_sc, g_mc = np.zeros_like(rc), np.zeros_like(sc), np.zeros_like(mc)
        loss = fk.loss_and_grad(t.alpha_index_basic, t.alpha_index_times, t.alpha_moment_mapping,
                                t.alpha_moments_count, rc, sc, mc, t.min_dist, t.max_dist, t.scaling,
                                d.atom_off, d.types, d.pair_off, d.pj, d.rij, d.e_ref, d.f_ref, d.w_ref,
                                d.has_e, d.has_f, d.has_s, w.energy, w.forces, w.stress, want_grad,
                                e, f, vir, g_rc, g_sc, g_mc)
        K = max(d.n_configs, 1)
        grad = np.concatenate([g_rc.ravel(), g_sc, g_mc]) / K
        loss /= K
        if w.regularization:
            loss += w.regularization * (np.dot(rc.ravel(), rc.ravel()) + np.dot(mc, mc))
            grad[:self.nr] += 2 * w.regularization * rc.ravel()
            grad[self.nr + self.ns:] += 2 * w.regularization * mc
        self.n_evals += 1
        return float(loss), grad


# ---------------------------------------------------------------------------- linear part

def weighted_rows(mtp: MTP, data: FitData, weights: Weights, max_rows: int = 20000):
    """Yield chunks (A, y) of the weighted linear least-squares rows of the loss restricted to
    the linear coefficients [species, moment] at the radial coefficients of `mtp`:
    sum over chunks of |A x - y|^2 = K * (loss without regularisation)."""
    S = mtp.species_count
    nlin = S + mtp.alpha_scalar_moments
    n = data.natoms
    rows_per = 1 + 3 * n + 6
    row_off = np.concatenate([[0], np.cumsum(rows_per)]).astype(np.int64)
    we, wf, ws = weights.energy, weights.forces, weights.stress
    c0 = 0
    K = data.n_configs
    while c0 < K:
        c1 = c0 + 1
        while c1 < K and row_off[c1 + 1] - row_off[c0] <= max_rows:
            c1 += 1
        nrow = int(row_off[c1] - row_off[c0])
        rows = np.zeros((nrow, nlin))
        fk.linear_rows(mtp.alpha_index_basic, mtp.alpha_index_times, mtp.alpha_moment_mapping,
                       mtp.alpha_moments_count, S, mtp.radial_coeffs, mtp.min_dist, mtp.max_dist,
                       mtp.scaling, data.atom_off, data.types, data.pair_off, data.pj, data.rij,
                       c0, c1, row_off, rows)
        sw = np.zeros(nrow)
        y = np.zeros(nrow)
        for c in range(c0, c1):
            r0 = int(row_off[c] - row_off[c0])
            N = int(n[c])
            a0, a1 = data.atom_off[c], data.atom_off[c + 1]
            if data.has_e[c]:
                sw[r0] = np.sqrt(we / N)
                y[r0] = data.e_ref[c]
            if data.has_f[c]:
                sw[r0 + 1:r0 + 1 + 3 * N] = np.sqrt(wf)
                y[r0 + 1:r0 + 1 + 3 * N] = data.f_ref[a0:a1].ravel()
            if data.has_s[c]:
                sw[r0 + 1 + 3 * N:r0 + 4 + 3 * N] = np.sqrt(ws / N)
                sw[r0 + 4 + 3 * N:r0 + 7 + 3 * N] = np.sqrt(2 * ws / N)
                y[r0 + 1 + 3 * N:r0 + 7 + 3 * N] = matrix_to_voigt(data.w_ref[c])
        yield rows * sw[:, None], y * sw
        c0 = c1


def normal_equations(mtp: MTP, data: FitData, weights: Weights) -> tuple[np.ndarray, np.ndarray]:
    """(A^T A, A^T y) / K (+ regularisation) of the linear part of the loss."""
    nlin = mtp.species_count + mtp.alpha_scalar_moments
    ata, aty = np.zeros((nlin, nlin)), np.zeros(nlin)
    for A, y in weighted_rows(mtp, data, weights):
        ata += A.T @ A
        aty += A.T @ y
    K = max(data.n_configs, 1)
    ata /= K
    aty /= K
    if weights.regularization:
        S = mtp.species_count
        ata[S:, S:] += weights.regularization * np.eye(nlin - S)
    return ata, aty


def solve_linear(mtp: MTP, data: FitData, weights: Weights) -> MTP:
    """A copy of `mtp` whose species and moment coefficients minimise the loss exactly at its
    radial coefficients: weighted linear least squares by a chunked (TSQR) QR factorisation of
    the rows (no normal equations: their squared condition number would make the reduced loss
    of the variable-projection fit noisy). Columns never touched (absent species) keep their value."""
    S = mtp.species_count
    nlin = S + mtp.alpha_scalar_moments
    K = max(data.n_configs, 1)
    R = np.zeros((0, nlin + 1))
    colsq = np.zeros(nlin)
    for A, y in weighted_rows(mtp, data, weights):
        colsq += np.sum(A * A, axis=0)
        R = scipy.linalg.qr(np.vstack([R, np.hstack([A, y[:, None]])]), mode="r", check_finite=False)[0]
        R = R[:min(R.shape[0], nlin + 1)]
    if weights.regularization:
        reg = np.zeros((nlin - S, nlin + 1))
        reg[:, S:nlin] = np.sqrt(K * weights.regularization) * np.eye(nlin - S)
        R = scipy.linalg.qr(np.vstack([R, reg]), mode="r", check_finite=False)[0][:nlin + 1]
    x = np.concatenate([mtp.species_coeffs, mtp.moment_coeffs])
    free = colsq > 0
    if free.any():
        z = scipy.linalg.lstsq(R[:, :nlin][:, free], R[:, nlin], check_finite=False)[0]
        x[free] = z
    out = mtp.copy()
    out.species_coeffs = x[:S].copy()
    out.moment_coeffs = x[S:].copy()
    return out


# ---------------------------------------------------------------------------- fit

def radial_moment_rms(mtp: MTP, data: FitData) -> np.ndarray:
    """RMS over the atoms of `data` of the scalar moments m_mu = sum_j f_mu(r_ij), per mu."""
    r = np.linalg.norm(data.rij, axis=1)
    centre = np.repeat(np.arange(len(data.types)), np.diff(data.pair_off))
    ti, tj = data.types[centre], data.types[data.pj]
    xi = (2 * r - mtp.min_dist - mtp.max_dist) / (mtp.max_dist - mtp.min_dist)
    B = mtp.radial_basis_size
    phi = np.empty((len(r), B))
    phi[:, 0] = 1.0
    if B > 1:
        phi[:, 1] = xi
    for b in range(2, B):
        phi[:, b] = 2 * xi * phi[:, b - 1] - phi[:, b - 2]
    phi *= (mtp.scaling * (r - mtp.max_dist) ** 2)[:, None]
    f = np.einsum("pmb,pb->pm", mtp.radial_coeffs[ti, tj], phi)  # (P, R)
    m = np.zeros((len(data.types), mtp.radial_funcs_count))
    np.add.at(m, centre, f)
    return np.sqrt(np.mean(m ** 2, axis=0))


def normalize_radial(mtp: MTP, data: FitData, target: float = 0.3) -> MTP:
    """A copy whose radial functions are rescaled so that sum_j f_mu(r_ij) has RMS `target` over
    the training atoms for every mu (the scale of MLIP-trained potentials; the random
    coefficients of an untrained potential are otherwise 10-100x too large, which makes the
    products of moments ill-conditioned and the fit land in poor minima)."""
    out = mtp.copy()
    rms = radial_moment_rms(mtp, data)
    for mu, v in enumerate(rms):
        if v > 0 and np.isfinite(v):
            out.radial_coeffs[:, :, mu, :] *= target / v
    return out



def _one_blas_thread():
    """BLAS on these small matrices is fastest (and does not oversubscribe) on one thread."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl ships with scipy's usual stacks
        import contextlib
        return contextlib.nullcontext()
    return threadpool_limits(1)


def fit(init: MTP, training: Sequence, **kwargs) -> FitResult:
    """Train `init` on `training`; see _fit for the arguments (run with one BLAS thread)."""
    with _one_blas_thread():
        return _fit(init, training, **kwargs)


def _fit(init: MTP, training: Sequence, *, species: Sequence[str] | None = None,
        energy_weight: float = 1.0, force_weight: float = 0.01, stress_weight: float = 0.001,
        regularization: float = 0.0, max_iter: int = 500, seed: int = 0, method: str = "varpro",
        n_starts: int = 1, start_iter: int = 50, normalize: bool = False, data: FitData | None = None,
        callback: Callable[[int, float], None] | None = None) -> FitResult:
    """Train `init` on `training` (Configurations, or ase.Atoms with `species` in type order).

    method "varpro" (default): BFGS over the radial coefficients only, the linear coefficients
    re-solved exactly at every step (variable projection; the gradient of the reduced loss is
    the adjoint gradient w.r.t. the radial coefficients, by the envelope theorem).
    method "lbfgs": L-BFGS over all parameters after one linear solve.
    With normalize=True an untrained `init` (all moment coefficients zero) first has its radial
    functions rescaled by normalize_radial.
    Multi-start (n_starts > 1): the initial radial coefficients and n_starts - 1 random draws
    (U(-1, 1) from `seed`, rescaled by normalize_radial) are each trained for
    `start_iter` iterations; the best continues for the remaining iterations. Each start is
    cheap because the linear coefficients are solved exactly. Deterministic for a seed."""
    if method not in ("varpro", "lbfgs"):
        raise InputError(f"unknown fit method {method!r} (varpro, lbfgs)")
    if data is None:
        configs = as_configurations(training, species or init.elements)
        if not configs:
            raise InputError("training set is empty")
        data = FitData.build(configs, init.max_dist, init.species_count)
    if not (data.has_e.any() or data.has_f.any()):
        raise InputError("training set has neither energies nor forces")
    weights = Weights(energy_weight, force_weight, stress_weight, regularization)
    mtp = init.copy()
    rng = np.random.default_rng(seed)
    if not np.any(mtp.radial_coeffs):
        mtp.radial_coeffs = rng.uniform(-1.0, 1.0, size=mtp.radial_coeffs.shape)
    untrained = not np.any(mtp.moment_coeffs)
    if untrained and normalize:
        mtp = normalize_radial(mtp, data)
    if n_starts > 1 and max_iter > 0:
        starts = [mtp.radial_coeffs.copy()] + [rng.uniform(-1.0, 1.0, size=mtp.radial_coeffs.shape)
                                               for _ in range(n_starts - 1)]
        trials = []
        for k, rc in enumerate(starts):
            trial = mtp.copy()
            trial.radial_coeffs = rc
            if k > 0:
                trial = normalize_radial(trial, data)
            trial.moment_coeffs[:] = 0.0
            res = _fit(trial, [], energy_weight=energy_weight, force_weight=force_weight,
                       stress_weight=stress_weight, regularization=regularization,
                       max_iter=min(start_iter, max_iter), seed=seed, method=method, data=data,
                       normalize=False)
            trials.append(res)
        best_trial = min(trials, key=lambda r: r.loss)
        used = sum(r.n_iter for r in trials)
        rest = _fit(best_trial.mtp, [], energy_weight=energy_weight, force_weight=force_weight,
                    stress_weight=stress_weight, regularization=regularization,
                    max_iter=max(max_iter - best_trial.n_iter, 0), seed=seed, method=method,
                    data=data, callback=callback, normalize=False)
        rest.n_iter += used
        rest.history = best_trial.history + rest.history
        return rest
    mtp = solve_linear(mtp, data, weights)
    obj = Objective(mtp, data, weights)
    history: list[float] = []
    n_iter = 0
    nr = mtp.radial_coeffs.size
    if max_iter > 0 and method == "varpro":
        best = {"loss": np.inf, "mtp": mtp}

        def reduced(c: np.ndarray) -> tuple[float, np.ndarray]:
            m = best["mtp"].copy()
            m.radial_coeffs = c.reshape(m.radial_coeffs.shape).copy()
            m = solve_linear(m, data, weights)
            loss, grad = obj(m.get_parameters())
            if loss < best["loss"]:
                best["loss"], best["mtp"] = loss, m
            return loss, grad[:nr]

        def cb(xk):
            history.append(best["loss"])
            if callback is not None:
                callback(len(history), best["loss"])

        # BFGS stops early when its line search loses precision; restart it (fresh Hessian)
        # from the best point while iterations remain and the loss still decreases.
        while n_iter < max_iter:
            start = best["loss"]
            res = scipy.optimize.minimize(reduced, best["mtp"].radial_coeffs.ravel(), jac=True,
                                          method="BFGS", callback=cb,
                                          options={"maxiter": int(max_iter - n_iter), "gtol": 1e-14})
            n_iter += max(int(res.nit), 1)
            if not best["loss"] < start * (1.0 - 1e-4):
                break
        mtp = best["mtp"]
    elif max_iter > 0:
        def cb(xk):
            history.append(obj(xk, want_grad=False)[0])
            if callback is not None:
                callback(len(history), history[-1])

        res = scipy.optimize.minimize(obj, mtp.get_parameters(), jac=True, method="L-BFGS-B",
                                      callback=cb, options={"maxiter": int(max_iter), "maxcor": 50,
                                                            "ftol": 1e-15, "gtol": 1e-14,
                                                            "maxfun": 2 * int(max_iter) + 20})
        n_iter = int(res.nit)
        mtp = solve_linear(mtp.with_parameters(res.x), data, weights)
    loss = obj(mtp.get_parameters(), want_grad=False)[0]
    errors = evaluate_errors(mtp, data)
    return FitResult(mtp=mtp, errors=errors, loss=loss, n_iter=n_iter, history=history)


def _fold(task: tuple) -> tuple[np.ndarray, np.ndarray | None]:
    """One cross-validation fold (module level: a task for any map, e.g. the campaign's farm):
    fit on the training part, MTP minus reference energy per atom of the held-out part (eV/atom,
    nan without a reference energy) and, with a grade mode, their grades against the fold's own
    active set."""
    init, train, held, grade_mode, seed, fit_kwargs = task
    mtp = fit(init, [], data=train, seed=seed, **fit_kwargs).mtp
    err = np.where(held.has_e, (predict(mtp, held)[0] - held.e_ref) / held.natoms, np.nan)
    if grade_mode is None:
        return err, None
    from csp.mtp.grade import ActiveSet, grade

    return err, np.asarray(grade(mtp, ActiveSet.build(mtp, train, mode=grade_mode), held), dtype=float)


def cross_validation_errors(init: MTP, training: Sequence, k: int = 5, seed: int = 0, *,
                            species: Sequence[str] | None = None, data: FitData | None = None,
                            grade_mode: str | None = None, run=None,
                            **fit_kwargs) -> tuple[np.ndarray, np.ndarray | None]:
    """k-fold cross-validation, the one implementation in csp: configurations shuffled with
    `seed` into k folds, each predicted by a potential trained (from `init`) on the others.
    Returns per configuration (input order) the held-out error of the energy per atom (eV/atom,
    nan without a reference energy) and, with `grade_mode`, its extrapolation grade against its
    fold's active set (else None). `run(fn, tasks)` runs the folds (default: serially; the
    campaign passes its farm's map)."""
    if data is None:
        configs = as_configurations(training, species or init.elements)
        data = FitData.build(configs, init.max_dist, init.species_count)
    K = data.n_configs
    if k < 2 or k > K:
        raise InputError(f"cross-validation needs 2 <= folds <= number of configurations ({K}), got {k}")
    order = np.random.default_rng(seed).permutation(K)
    folds = np.array_split(order, k)
    tasks = [(init, data.subset(np.setdiff1d(order, f)), data.subset(f), grade_mode, seed, fit_kwargs)
             for f in folds]
    outs = list(run(_fold, tasks)) if run is not None else [_fold(t) for t in tasks]
    err = np.full(K, np.nan)
    grades = np.full(K, np.nan) if grade_mode is not None else None
    for f, (e, g) in zip(folds, outs):
        err[f] = e
        if grades is not None:
            grades[f] = g
    return err, grades


def cross_validate(init: MTP, training: Sequence, k: int = 5, seed: int = 0, *,
                   species: Sequence[str] | None = None, data: FitData | None = None,
                   **fit_kwargs) -> float:
    """k-fold cross-validation RMSE of the energy per atom (eV/atom), pooled over all held-out
    configurations with an energy (`cross_validation_errors`)."""
    err, _ = cross_validation_errors(init, training, k, seed, species=species, data=data, **fit_kwargs)
    err = err[np.isfinite(err)]
    if err.size == 0:
        raise InputError("cross-validation needs configurations with energies")
    return float(np.sqrt(np.mean(err ** 2)))
