"""Batched FIRE relaxation (atoms + cell): step-by-step agreement with ASE FIRE + UnitCellFilter,
converged minima equal to ASE BFGS + FrechetCellFilter, per-structure stopping and grade hooks."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.filters import FrechetCellFilter, UnitCellFilter
from ase.optimize import BFGS, FIRE
from ase.units import GPa

from csp.relax import (BROKEN, CONVERGED, FAILED, MAX_STEPS, ase_evaluator, pack, relax_batch,
                       relax_structures)
from csp_testdata import CONFORMANCE

SPECIES = ["Cu", "Pd"]
EVAL = ase_evaluator(EMT, SPECIES)


def structures(seed: int = 0):
    """Small strained, rattled Cu-Pd cells of different sizes and shapes."""
    rng = np.random.default_rng(seed)
    out = []
    a = bulk("Cu", "fcc", a=3.7)
    out.append(a)
    b = bulk("CuPd", "cesiumchloride", a=3.05)
    out.append(b)
    c = bulk("Cu", "fcc", a=3.75, cubic=True)
    c.symbols[[1, 2]] = "Pd"
    out.append(c)
    d = bulk("Pd", "hcp", a=2.8, c=4.6) * (1, 1, 2)
    d.symbols[0] = "Cu"
    out.append(d)
    for atoms in out:
        atoms.rattle(0.05, seed=int(rng.integers(1 << 30)))
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + rng.normal(0, 0.02, (3, 3))), scale_atoms=True)
    return out


def test_trajectory_equals_ase_fire_with_unit_cell_filter():
    """Each structure of the batch follows ASE's FIRE + UnitCellFilter path to rounding."""
    steps = 25
    batch = structures()
    relaxed, res = relax_structures(EVAL, batch, SPECIES, fmax=1e-12, stress_tol=1e-12, max_steps=steps)
    assert np.all(res.status == MAX_STEPS) and np.all(res.steps == steps)
    for atoms, mine in zip(batch, relaxed):
        ref = atoms.copy()
        ref.calc = EMT()
        opt = FIRE(UnitCellFilter(ref), logfile=None)
        opt.run(fmax=1e-12, steps=steps)
        assert np.allclose(mine.cell.array, ref.cell.array, atol=1e-9)
        assert np.allclose(mine.positions, ref.positions, atol=1e-9)


def test_bfgs_trajectory_equals_ase_bfgs_with_unit_cell_filter():
    steps = 12
    batch = structures(2)
    relaxed, res = relax_structures(EVAL, batch, SPECIES, fmax=1e-12, stress_tol=1e-12, max_steps=steps,
                                    optimizer="bfgs")
    assert np.all(res.steps == steps)
    for atoms, mine in zip(batch, relaxed):
        ref = atoms.copy()
        ref.calc = EMT()
        BFGS(UnitCellFilter(ref), logfile=None).run(fmax=1e-12, steps=steps)
        assert np.allclose(mine.cell.array, ref.cell.array, atol=1e-8)
        assert np.allclose(mine.positions, ref.positions, atol=1e-8)


@pytest.mark.parametrize("optimizer", ["fire", "bfgs"])
def test_converged_minimum_equals_ase_bfgs_frechet(optimizer):
    batch = structures(1)[1:3]  # a B2 cell and a 4-atom fcc derivative
    fmax, stol = 1e-3, 1e-3 * GPa * 10
    relaxed, res = relax_structures(EVAL, batch, SPECIES, fmax=fmax, stress_tol=stol, max_steps=3000,
                                    optimizer=optimizer)
    assert np.all(res.status == CONVERGED), res.status
    for atoms, mine, e in zip(batch, relaxed, res.energies):
        # an independent evaluation of the returned structure confirms the tolerances
        check = mine.copy()
        check.calc = EMT()
        assert check.get_potential_energy() == pytest.approx(e, abs=1e-10)
        assert np.abs(check.get_forces()).max() < fmax * 1.0001
        assert np.abs(check.get_stress()).max() < stol * 1.0001
        ref = atoms.copy()
        ref.calc = EMT()
        BFGS(FrechetCellFilter(ref), logfile=None).run(fmax=1e-3, steps=3000)
        n = len(ref)
        assert e / n == pytest.approx(ref.get_potential_energy() / n, abs=2e-5)
        assert mine.get_volume() / n == pytest.approx(ref.get_volume() / n, rel=2e-3)


def test_fixed_cell_and_pressure():
    atoms = bulk("Cu", "fcc", a=3.6) * (2, 1, 1)
    atoms.rattle(0.05, seed=2)
    (fixed,), res = relax_structures(EVAL, [atoms], SPECIES, fmax=1e-3, relax_cell=False, max_steps=2000)
    assert res.status[0] == CONVERGED
    assert np.array_equal(fixed.cell.array, atoms.cell.array)
    p = 5.0 * GPa
    (free,), _ = relax_structures(EVAL, [atoms], SPECIES, fmax=1e-3, stress_tol=1e-4, max_steps=3000)
    (squeezed,), res = relax_structures(EVAL, [atoms], SPECIES, fmax=1e-3, stress_tol=1e-4, max_steps=3000,
                                        pressure=p)
    assert res.status[0] == CONVERGED
    check = squeezed.copy()
    check.calc = EMT()
    assert np.allclose(check.get_stress()[:3], -p, atol=1.01e-4)  # σ = −p I at equilibrium under pressure
    assert squeezed.get_volume() < free.get_volume()


def test_grade_hook_selects_and_breaks():
    cu = [bulk("Cu", "fcc", a=a) for a in (3.61, 3.50, 3.00)]
    v_ref = 3.59 ** 3 / 4

    def grade(cells, positions, types, offsets):
        vol = np.abs(np.linalg.det(cells)) / np.diff(offsets)
        return 1.0 + 50.0 * np.abs(vol - v_ref) / v_ref

    relaxed, res = relax_structures(EVAL, cu, SPECIES, fmax=1e-3, stress_tol=1e-4, max_steps=2000,
                                    grade=grade, select_threshold=2.0, break_threshold=10.0)
    assert res.status.tolist() == [CONVERGED, CONVERGED, BROKEN]
    assert res.steps[2] == 0
    g0 = grade(np.array([a.cell.array for a in cu]), None, None, np.array([0, 1, 2, 3]))
    snaps = {s.index: s for s in res.snapshots}
    assert sorted(snaps) == [1, 2]  # the near-equilibrium cell never extrapolates
    assert snaps[1].step == 0 and snaps[1].grade == pytest.approx(g0[1])  # the worst point of its path
    assert np.allclose(snaps[2].cell, cu[2].cell.array)
    assert res.max_grade[1] == pytest.approx(g0[1])


def test_failures_are_flagged_not_raised():
    atoms = [bulk("Cu", "fcc", a=3.6), bulk("Pd", "fcc", a=3.9)]

    def evaluate(cells, positions, types, offsets):
        e, f, s = EVAL(cells, positions, types, offsets)
        e = e.copy()
        e[types[offsets[:-1]] == 1] = np.nan  # the Pd structure "fails"
        return e, f, s

    _, res = relax_structures(evaluate, atoms, SPECIES, max_steps=500)
    assert res.status[1] == FAILED and res.status[0] == CONVERGED


def test_pack_rejects_foreign_species():
    with pytest.raises(ValueError, match="Au"):
        pack([bulk("Au")], SPECIES)


def test_mtp_batch_relaxation_meets_tolerances_checked_by_calc_efs():
    from csp.mtp.evaluate import calc_efs
    from csp.mtp.io import read_mtp
    from csp.mtp.relax_evaluator import mtp_evaluator

    mtp = read_mtp(CONFORMANCE / "mtp" / "cubic_10" / "pot.mtp")
    assert mtp.species_count == 1
    start = []
    for k, a in enumerate((3.55, 3.65, 3.75)):
        atoms = bulk("Cu", "fcc", a=a, cubic=True)
        atoms.rattle(0.03, seed=k)
        start.append(atoms)
    fmax, stol = 2e-3, 1e-4
    relaxed, res = relax_structures(mtp_evaluator(mtp), start, ["Cu"], fmax=fmax, stress_tol=stol,
                                    max_steps=2000)
    assert np.all(res.status == CONVERGED), res.status
    for atoms, e in zip(relaxed, res.energies):
        efs = calc_efs(mtp, atoms, ["Cu"])
        assert efs.energy == pytest.approx(e, abs=1e-9)
        assert np.abs(efs.forces).max() < fmax and np.abs(efs.stress).max() < stol
    # all three starts fall into the same fcc minimum
    assert np.ptp(res.energies) < 1e-5
