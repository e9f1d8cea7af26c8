"""The campaign's view of the MTP: one place that calls the engine (csp.mtp) and the training /
active-learning API, so the loop in `csp.campaign.learn` does not depend on their details.

Types index `species` (the search's elements, in order); energies eV, σ in eV/atom.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from ase import Atoms

from csp.mtp.relax_evaluator import graded_evaluator, mtp_evaluator  # noqa: F401 (re-exported)
from csp.relax import Evaluator


@dataclass
class Trained:
    """A trained potential as stored: MLIP text, σ (cross-validated RMSE of energy, eV/atom)."""

    text: str
    sigma: float | None
    extra: dict = field(default_factory=dict)


def dump(mtp) -> str:
    """MLIP .mtp text of a potential."""
    from csp.mtp.io import format_mtp

    return format_mtp(mtp)


def load(text: str):
    """Potential from its .mtp text."""
    from csp.mtp.io import parse_mtp

    return parse_mtp(text)


def evaluator(mtp) -> Evaluator:
    """Batched energies, forces, stresses (one numba call per relaxation step)."""
    return mtp_evaluator(mtp)


def init_potential(level: int, species: Sequence[str], settings, seed: int):
    """An untrained potential of `level` for `species` (radial basis from the training settings)."""
    from csp.mtp.contraction import init_mtp

    return init_mtp(level, list(species), min_dist=settings.min_dist, max_dist=settings.max_dist,
                    radial_basis_size=settings.radial_basis_size, seed=seed)


def basis_size(level: int, species: Sequence[str], settings) -> int:
    """Number of moment-basis functions (linear coefficients) of a level-`level` potential."""
    return int(len(init_potential(level, species, settings, 0).moment_coeffs))


def relevant(training: Sequence[Atoms], energy_range: float) -> np.ndarray:
    """Mask of configurations within `energy_range` eV/atom of the lowest reference energy per
    atom of the training set at the same composition (the domain the screening acts on)."""
    keys, energies = [], []
    for atoms in training:
        syms = atoms.get_chemical_symbols()
        keys.append(tuple(sorted((el, syms.count(el) / len(syms)) for el in set(syms))))
        energies.append(atoms.get_potential_energy() / len(atoms))
    lowest: dict[tuple, float] = {}
    for k, e in zip(keys, energies):
        lowest[k] = min(e, lowest.get(k, np.inf))
    return np.array([e - lowest[k] <= energy_range for k, e in zip(keys, energies)])


@dataclass(frozen=True)
class CrossValidation:
    """k-fold cross-validation of a training set. Errors in eV/atom.

    sigma: RMSE over the held-out configurations the screening acts on: within `energy_range`
    of the lowest energy at their composition and, when a grade threshold is given, graded
    γ <= threshold by their fold's potential (an extrapolated configuration is never screened on
    its MTP energy: the campaign sends it to the reference and retrains). When fewer than
    MIN_SIGMA_SAMPLES configurations qualify, every configuration within `energy_range` counts.
    rmse_all: RMSE over every held-out configuration; extrapolated: how many held-out
    configurations graded above the threshold."""

    sigma: float
    rmse_all: float
    n_sigma: int
    extrapolated: int


MIN_SIGMA_SAMPLES = 5


def cross_validated_sigma(init, training: Sequence[Atoms], species: Sequence[str], folds: int, seed: int,
                          fit_kw: dict, energy_range: float, farm=None,
                          grade_threshold: float | None = None) -> CrossValidation:
    """k-fold cross-validated error of the energy per atom (`csp.mtp.fit.cross_validation_errors`,
    grades in csp's grade mode), the folds trained in parallel on the farm (see `CrossValidation`)."""
    from csp.mtp.fit import cross_validation_errors
    from csp.mtp.grade import DEFAULT_MODE

    training = list(training)
    K = len(training)
    kw = {key: v for key, v in fit_kw.items() if key != "species"}
    err, gamma = cross_validation_errors(init, training, max(2, min(folds, K)), seed, species=list(species),
                                         grade_mode=DEFAULT_MODE, run=None if farm is None else farm.map, **kw)
    mask = relevant(training, energy_range)
    interpolated = gamma <= grade_threshold if grade_threshold is not None else np.ones(K, bool)
    use = mask & interpolated
    if use.sum() < MIN_SIGMA_SAMPLES:
        use = mask
    return CrossValidation(sigma=float(np.sqrt(np.mean(err[use] ** 2))), rmse_all=float(np.sqrt(np.mean(err ** 2))),
                           n_sigma=int(use.sum()), extrapolated=int((~interpolated).sum()))


WARM_RMSE_FLOOR = 0.005   # eV/atom: a warm-started fit worse than this and 3× the previous round's is redone


def training_iterations(max_iter: int, warm: bool) -> int:
    """Optimiser iterations of a fit: `max_iter`, or for a warm start (near the previous
    optimum) a third of it, at least 50."""
    return max(min(50, max_iter), max_iter // 3) if warm else max_iter


def train(level: int, species: Sequence[str], training: Sequence[Atoms], settings, seed: int, farm=None,
          grade_threshold: float | None = None, warm_start: str | None = None,
          callback=None, warm_rmse: float | None = None) -> Trained:
    """Fit a level-`level` potential to `training` (eV, eV/Å, eV/Å³ labels).

    `warm_start`: .mtp text of the previous round's potential of the same level, whose
    parameters start the fit (a few new configurations move them little, so the fit converges
    in far fewer iterations than from a random start: a third of `max_iter`). σ here is the k-fold cross-validated RMSE
    when `settings.cv_folds` >= 2 (a diagnostic: the campaign's screening error comes from its
    audit of relaxed candidates, csp.campaign.audit), else None. `callback(iteration, loss)` is
    called by the optimiser (progress)."""
    from csp.mtp.fit import fit

    init = load(warm_start) if warm_start is not None else init_potential(level, species, settings, seed)
    iters = training_iterations(settings.max_iter, warm_start is not None)
    kw = dict(species=list(species), energy_weight=settings.energy_weight, force_weight=settings.force_weight,
              stress_weight=settings.stress_weight, max_iter=iters)
    extra: dict = {"warm_start": warm_start is not None}
    sigma = None
    if settings.cv_folds >= 2:
        cv = cross_validated_sigma(init, training, species, settings.cv_folds, seed, kw,
                                   settings.sigma_energy_range, farm, grade_threshold)
        sigma = cv.sigma
        extra.update(cv_rmse_energy=cv.sigma, cv_rmse_energy_all=cv.rmse_all, cv_sigma_samples=cv.n_sigma,
                     cv_extrapolated=cv.extrapolated)
    result = fit(init, list(training), seed=seed, callback=callback, **kw)
    if warm_start is not None and result.errors.rmse_energy > max(3.0 * (warm_rmse or 0.0), WARM_RMSE_FLOOR):
        # the new data moved the optimum far (e.g. collapsed cells of broken relaxations, eV/atom
        # above the rest): a warm start can stall in the old basin (measured on Cu-Ni-Pd: 116
        # meV/atom after 9 iterations, 2.2 from a fresh start) — fit afresh, keep the better
        kw["max_iter"] = settings.max_iter
        cold = fit(init_potential(level, species, settings, seed), list(training), seed=seed, callback=callback, **kw)
        extra["warm_rmse_energy"] = result.errors.rmse_energy
        extra["warm_start"] = cold.loss >= result.loss
        if cold.loss < result.loss:
            result = cold
    mtp = result.mtp
    if sigma is not None:
        mtp.metadata["csp_cv_rmse_energy"] = repr(sigma)
    errors = result.errors
    extra.update(rmse_energy=errors.rmse_energy, rmse_forces=errors.rmse_forces, rmse_stress=errors.rmse_stress,
                 n_iter=result.n_iter)
    return Trained(dump(mtp), sigma, extra)


def active_set(mtp, training: Sequence[Atoms], species: Sequence[str]) -> Any:
    """The MaxVol active set (csp's grade mode, `csp.mtp.grade.DEFAULT_MODE`) of `mtp` over the
    training configurations."""
    from csp.mtp.grade import DEFAULT_MODE, ActiveSet

    return ActiveSet.build(mtp, list(training), mode=DEFAULT_MODE, species=list(species))


def select(mtp, aset, structures: Sequence[Atoms], n: int, species: Sequence[str]) -> list[int]:
    """Indices (sorted) of at most `n` structures that most enlarge the active set's volume."""
    from csp.mtp.select import select as maxvol_select

    if not structures:
        return []
    return sorted(int(i) for i in maxvol_select(mtp, aset, list(structures), n, species=list(species)))
