"""Physics of the MTP evaluation: finite differences and invariances."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from scipy.spatial.transform import Rotation

from csp.mtp.evaluate import calc_efs
from csp.mtp.io import read_mtp
from csp_testdata import CONFORMANCE

CONF = CONFORMANCE / "mtp"
SPECIES = ["Au", "Ag", "Cu"]


@pytest.fixture(scope="module")
def pots():
    return {name: read_mtp(CONF / name / "pot.mtp") for name in ("multi_10", "cubic_20", "multi_06")}


def random_cell(seed, n, pbc=True, a=2.6, symbols=SPECIES):
    """Random triclinic cell with n atoms kept >= 1.6 Å apart (about 12 Å³/atom)."""
    rng = np.random.default_rng(seed)
    vol = 12.0 * n
    cell = np.eye(3) * vol ** (1 / 3) + rng.normal(0, 0.3, (3, 3))
    atoms = Atoms(cell=cell, pbc=pbc)
    while len(atoms) < n:
        trial = Atoms(rng.choice(symbols, 1), scaled_positions=rng.uniform(0, 1, (1, 3)), cell=cell, pbc=pbc)
        cand = atoms + trial
        if len(atoms) == 0 or cand.get_distances(len(atoms), range(len(atoms)), mic=bool(np.all(pbc))).min() > 1.6:
            atoms = cand
    return atoms


def fd_forces(mtp, atoms, species, h=1e-5):
    out = np.zeros((len(atoms), 3))
    for i in range(len(atoms)):
        for d in range(3):
            e = []
            for s in (1, -1):
                b = atoms.copy()
                b.positions[i, d] += s * h
                e.append(calc_efs(mtp, b, species).energy)
            out[i, d] = -(e[0] - e[1]) / (2 * h)
    return out


def fd_stress(mtp, atoms, species, h=1e-6):
    sig = np.zeros((3, 3))
    for a in range(3):
        for b in range(3):
            e = []
            for s in (1, -1):
                F = np.eye(3)
                F[a, b] += s * h
                x = atoms.copy()
                x.set_cell(atoms.cell[:] @ F.T, scale_atoms=False)
                x.positions = atoms.positions @ F.T
                e.append(calc_efs(mtp, x, species).energy)
            sig[a, b] = (e[0] - e[1]) / (2 * h) / atoms.get_volume()
    return sig[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]], sig


STRUCTURES = {
    "random 5 atoms, 3 species": lambda: random_cell(1, 5),
    "strained fcc Cu, cell < cutoff": lambda: Atoms(bulk("Cu", "fcc", a=3.61), cell=bulk("Cu", "fcc", a=3.61).cell[:] @ np.array([[1.04, 0.02, 0], [0, 0.97, -0.03], [0.01, 0, 1.01]]), pbc=True),
    "random 2 atoms tiny cell": lambda: random_cell(3, 2, symbols=["Au", "Cu"]),
    "rattled AuAgCu supercell": lambda: _rattled(),
}


def _rattled():
    atoms = bulk("Cu", "fcc", a=3.8, cubic=True).repeat((2, 1, 1))
    atoms.symbols[[0, 3, 5]] = ["Au", "Ag", "Au"]
    atoms.rattle(0.1, seed=4)
    atoms.set_cell(atoms.cell[:] @ np.array([[1.0, 0.05, 0], [0, 1.0, 0], [0.03, 0, 0.98]]), scale_atoms=True)
    return atoms


@pytest.mark.parametrize("name", list(STRUCTURES))
@pytest.mark.parametrize("pot", ["multi_10", "cubic_20"])
def test_forces_and_stress_are_derivatives(pots, name, pot):
    atoms = STRUCTURES[name]()
    species = SPECIES if pot == "multi_10" else None
    if species is None:
        atoms.symbols = ["Cu"] * len(atoms)
        species = ["Cu"]
    mtp = pots[pot]
    efs = calc_efs(mtp, atoms, species)
    scale = max(1.0, np.abs(efs.forces).max())
    np.testing.assert_allclose(efs.forces, fd_forces(mtp, atoms, species), atol=2e-6 * scale, rtol=0)
    voigt, full = fd_stress(mtp, atoms, species)
    np.testing.assert_allclose(full, full.T, atol=1e-6 * max(1, np.abs(full).max()))
    np.testing.assert_allclose(efs.stress, voigt, atol=2e-6 * max(1.0, np.abs(voigt).max()), rtol=0)
    np.testing.assert_allclose(efs.forces.sum(axis=0), 0, atol=1e-9 * scale * len(atoms))


@pytest.mark.parametrize("pbc", [[True, True, False], [False, True, False], [False, False, False]])
def test_partly_periodic_forces(pots, pbc):
    atoms = random_cell(11, 6, pbc=pbc)
    mtp = pots["multi_10"]
    efs = calc_efs(mtp, atoms, SPECIES)
    np.testing.assert_allclose(efs.forces, fd_forces(mtp, atoms, SPECIES), atol=2e-6 * max(1, np.abs(efs.forces).max()))
    assert np.isnan(efs.stress).all()
    # moving the atoms across the cell boundary in a non-periodic direction changes nothing
    shifted = atoms.copy()
    shifted.positions += 7.3 * (~np.asarray(pbc))
    assert abs(calc_efs(mtp, shifted, SPECIES).energy - efs.energy) < 1e-9 * max(1, abs(efs.energy))


def test_isolated_atom_has_species_energy(pots):
    mtp = pots["multi_10"]
    efs = calc_efs(mtp, Atoms("Ag", positions=[[0, 0, 0]]), SPECIES)
    assert efs.energy == mtp.species_coeffs[1]


@pytest.mark.parametrize("pot", ["multi_10", "cubic_20", "multi_06"])
def test_invariances(pots, pot):
    mtp = pots[pot]
    species = SPECIES if pot != "cubic_20" else ["Cu"]
    atoms = random_cell(5, 7, symbols=species)
    ref = calc_efs(mtp, atoms, species)
    tol = 1e-9 * max(1.0, abs(ref.energy))
    # rotation (cell and positions together)
    R = Rotation.from_euler("xyz", [0.3, -1.1, 2.0]).as_matrix()
    rot = atoms.copy()
    rot.set_cell(atoms.cell[:] @ R.T, scale_atoms=False)
    rot.positions = atoms.positions @ R.T
    r = calc_efs(mtp, rot, species)
    assert abs(r.energy - ref.energy) < tol
    np.testing.assert_allclose(r.forces, ref.forces @ R.T, atol=1e-8)
    s = np.zeros((3, 3))
    s[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]] = ref.stress
    s = np.triu(s) + np.triu(s, 1).T
    rs = R @ s @ R.T
    np.testing.assert_allclose(r.stress, rs[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]], atol=1e-9)
    # translation and wrapping
    tr = atoms.copy()
    tr.positions += [13.1, -4.2, 0.77]
    t = calc_efs(mtp, tr, species)
    assert abs(t.energy - ref.energy) < tol
    np.testing.assert_allclose(t.forces, ref.forces, atol=1e-8)
    # permutation of atoms
    perm = np.random.default_rng(0).permutation(len(atoms))
    p = calc_efs(mtp, atoms[perm], species)
    assert abs(p.energy - ref.energy) < tol
    np.testing.assert_allclose(p.forces, ref.forces[perm], atol=1e-8)
    np.testing.assert_allclose(p.energies, ref.energies[perm], atol=1e-9)
    # supercell: N x the energy, same stress, repeated forces
    sc = calc_efs(mtp, atoms.repeat((2, 1, 3)), species)
    assert abs(sc.energy - 6 * ref.energy) < 6 * tol
    np.testing.assert_allclose(sc.stress, ref.stress, atol=1e-9)
    np.testing.assert_allclose(sc.forces[: len(atoms)], ref.forces, atol=1e-8)
    # a different but equivalent unit cell (unimodular change of basis)
    U = np.array([[1, 1, 0], [0, 1, 0], [1, 0, 1]])
    alt = atoms.copy()
    alt.set_cell(U @ atoms.cell[:], scale_atoms=False)
    a = calc_efs(mtp, alt, species)
    assert abs(a.energy - ref.energy) < tol
    np.testing.assert_allclose(a.stress, ref.stress, atol=1e-9)
