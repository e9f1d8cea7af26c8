"""MTPCalculator: ASE protocol, caching, relaxation with FrechetCellFilter."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.calculator import PropertyNotImplementedError
from ase.filters import FrechetCellFilter
from ase.optimize import BFGS

from csp.errors import InputError
from csp.mtp import MTPCalculator, calc_efs, read_mtp
from csp_testdata import CONFORMANCE

POT = CONFORMANCE / "mtp" / "cubic_10" / "pot.mtp"


def test_results_match_calc_efs_and_cache():
    atoms = bulk("Cu", "fcc", a=3.7).repeat(2)
    atoms.rattle(0.05, seed=1)
    calc = MTPCalculator(POT, species=["Cu"])
    atoms.calc = calc
    ref = calc_efs(read_mtp(POT), atoms, ["Cu"])
    assert atoms.get_potential_energy() == ref.energy
    np.testing.assert_array_equal(atoms.get_forces(), ref.forces)
    np.testing.assert_array_equal(atoms.get_stress(), ref.stress)
    np.testing.assert_array_equal(atoms.get_potential_energies(), ref.energies)
    assert atoms.get_potential_energy(force_consistent=True) == ref.energy
    calls = []
    orig = calc.calculate
    calc.calculate = lambda *a, **k: (calls.append(1), orig(*a, **k))
    atoms.get_forces(), atoms.get_stress(), atoms.get_potential_energy()
    assert calls == []  # cached
    atoms.positions[0, 0] += 0.01
    e2 = atoms.get_potential_energy()
    assert calls == [1] and e2 != ref.energy
    atoms.set_cell(atoms.cell * 1.01, scale_atoms=True)
    atoms.get_stress()
    assert calls == [1, 1]


def test_relaxation_with_cell_filter():
    atoms = bulk("Cu", "fcc", a=3.8, cubic=True)
    atoms.rattle(0.05, seed=2)
    atoms.set_cell(atoms.cell[:] @ np.array([[1.0, 0.03, 0], [0, 0.98, 0], [0, 0, 1.02]]), scale_atoms=True)
    atoms.calc = MTPCalculator(read_mtp(POT), species=["Cu"])
    e0 = atoms.get_potential_energy()
    opt = BFGS(FrechetCellFilter(atoms), logfile=None)
    assert opt.run(fmax=1e-4, steps=300)
    assert atoms.get_potential_energy() < e0
    assert np.abs(atoms.get_forces()).max() < 1e-4
    assert np.abs(atoms.get_stress()).max() * atoms.get_volume() / len(atoms) < 1e-4
    # relaxed fcc keeps cubic symmetry: equal cell lengths and right angles
    lengths = atoms.cell.cellpar()
    np.testing.assert_allclose(lengths[:3], lengths[0], rtol=1e-3)
    np.testing.assert_allclose(lengths[3:], 90, atol=0.1)


def test_errors_and_molecules():
    with pytest.raises(InputError, match="species"):
        MTPCalculator(POT)
    mol = Atoms("Cu3", positions=[[0, 0, 0], [2.5, 0, 0], [0, 2.4, 0.3]])
    mol.calc = MTPCalculator(POT, species=["Cu"])
    assert np.isfinite(mol.get_potential_energy())
    with pytest.raises(PropertyNotImplementedError):
        mol.get_stress()
    flat = Atoms("Cu2", cell=[[1, 0, 0], [2, 0, 0], [0, 0, 3]], pbc=True)
    with pytest.raises(InputError, match="degenerate"):
        calc_efs(read_mtp(POT), flat, ["Cu"])
    bad = bulk("Pd")
    bad.calc = MTPCalculator(POT, species=["Cu"])
    with pytest.raises(InputError, match="Pd"):
        bad.get_potential_energy()
