"""The campaign's σ: cross-validated error over the configurations the screening acts on."""

from __future__ import annotations

import numpy as np
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from csp.campaign import model
from csp.config import TrainingSettings

SPECIES = ["Cu", "Pd"]


def labelled(atoms):
    atoms.calc = EMT()
    e, f, s = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
    atoms.calc = SinglePointCalculator(atoms, energy=e, forces=f, stress=s)
    return atoms


def near_equilibrium(n: int, seed: int):
    """Rattled, strained 4-atom Cu-Pd fcc cells labelled with EMT."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        at = bulk("Cu", "fcc", a=3.75, cubic=True)
        at.symbols = list(rng.choice(SPECIES, len(at)))
        eps = rng.uniform(-0.02, 0.02, (3, 3))
        at.set_cell(at.cell[:] @ (np.eye(3) + 0.5 * (eps + eps.T)), scale_atoms=True)
        at.positions += rng.normal(0.0, 0.05, at.positions.shape)
        out.append(labelled(at))
    return out


def cv(training, threshold):
    settings = TrainingSettings(max_iter=60, cv_folds=4)
    init = model.init_potential(6, SPECIES, settings, seed=1)
    kw = dict(species=SPECIES, energy_weight=1.0, force_weight=0.01, stress_weight=0.001, max_iter=60)
    return model.cross_validated_sigma(init, training, SPECIES, 4, 0, kw, energy_range=100.0,
                                       grade_threshold=threshold)


def test_sigma_leaves_out_what_the_fold_potential_extrapolates():
    """A held-out configuration far outside its fold's training data (a cell compressed by 25 %)
    is graded γ > threshold and left out of σ — the campaign never screens such a structure on
    its MTP energy — while the interpolated ones all count; without a threshold it dominates."""
    training = near_equilibrium(16, seed=5)
    squeezed = bulk("Cu", "fcc", a=3.75 * 0.75, cubic=True)
    squeezed.symbols = ["Cu", "Pd", "Cu", "Pd"]
    training.append(labelled(squeezed))
    plain = cv(training, None)
    graded = cv(training, 2.0)
    assert graded.extrapolated >= 1
    assert graded.n_sigma == len(training) - graded.extrapolated
    assert plain.n_sigma == len(training)
    assert graded.sigma < 0.5 * plain.sigma, (graded.sigma, plain.sigma)
    assert graded.rmse_all == plain.rmse_all


def test_sigma_falls_back_to_every_configuration_when_too_few_interpolate():
    """With an impossible threshold (γ ≤ 0 for nobody) σ is the RMSE over every configuration."""
    training = near_equilibrium(10, seed=6)
    res = cv(training, 1e-12)
    assert res.n_sigma == len(training)
    assert np.isclose(res.sigma, res.rmse_all)
