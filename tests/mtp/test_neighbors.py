"""Neighbour search against ase.neighborlist.neighbor_list."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.neighborlist import neighbor_list as ase_nl

from csp.mtp.neighbors import neighbor_list


def _pairs(i, j, d, n):
    """Per atom i: sorted rows (j, dx, dy, dz) rounded, comparable between implementations."""
    out = []
    for a in range(n):
        sel = i == a
        rows = np.column_stack([j[sel], np.round(d[sel], 8)])
        out.append(rows[np.lexsort(rows.T[::-1])])
    return out


def _random_atoms(rng, n, pbc, scale=1.0):
    cell = (np.eye(3) * rng.uniform(2.0, 4.0, 3) + rng.normal(0, 0.8, (3, 3))) * scale
    return Atoms("H%d" % n, cell=cell, scaled_positions=rng.uniform(-0.5, 1.5, (n, 3)), pbc=pbc)


CASES = [
    ("tiny fcc, many images", lambda rng: bulk("Cu", "fcc", a=3.6), 5.0),
    ("one atom sc cell 1.5 Å", lambda rng: Atoms("H", cell=np.eye(3) * 1.5, pbc=True), 4.0),
    ("skewed small random", lambda rng: _random_atoms(rng, 3, True), 5.0),
    ("very skewed", lambda rng: Atoms("H2", cell=[[3, 0, 0], [2.9, 0.4, 0], [0.3, 0.2, 2.5]],
                                        positions=[[0, 0, 0], [1.1, 0.2, 0.7]], pbc=True), 4.5),
    ("slab (T,T,F)", lambda rng: _random_atoms(rng, 5, [True, True, False]), 5.0),
    ("wire (F,T,F)", lambda rng: _random_atoms(rng, 4, [False, True, False]), 5.0),
    ("molecule", lambda rng: Atoms("H6", positions=rng.uniform(0, 4, (6, 3))), 3.0),
    ("large cell with bins", lambda rng: bulk("Cu", "fcc", a=3.6, cubic=True).repeat((5, 4, 4)), 5.0),
    ("large random with bins", lambda rng: _random_atoms(rng, 300, True, scale=4.0), 4.0),
]


@pytest.mark.parametrize("name, make, cutoff", CASES, ids=[c[0] for c in CASES])
def test_matches_ase(name, make, cutoff):
    rng = np.random.default_rng(7)
    atoms = make(rng)
    i_ref, j_ref, d_ref = ase_nl("ijD", atoms, cutoff, self_interaction=False)
    keep = np.linalg.norm(d_ref, axis=1) > 0
    offsets, j, rij = neighbor_list(atoms.cell[:], atoms.pbc, atoms.positions, cutoff)
    n = len(atoms)
    assert offsets.shape == (n + 1,) and offsets[-1] == len(j) == len(rij)
    assert len(j) == keep.sum() > 0
    i_ours = np.repeat(np.arange(n), np.diff(offsets))
    # r_j_image - r_i must be a true image vector
    if atoms.pbc.any():
        shift = (atoms.positions[j] - atoms.positions[i_ours] - rij) @ np.linalg.inv(atoms.cell[:])
        np.testing.assert_allclose(shift, np.round(shift), atol=1e-9)
    for a, b in zip(_pairs(i_ref[keep], j_ref[keep], d_ref[keep], n), _pairs(i_ours, j, rij, n)):
        np.testing.assert_allclose(a, b, atol=1e-7)


def test_cutoff_is_strict_and_self_images_counted():
    atoms = Atoms("H", cell=np.eye(3) * 2.0, pbc=True)
    offsets, j, rij = neighbor_list(atoms.cell[:], atoms.pbc, atoms.positions, 2.0 + 1e-9)
    assert offsets[-1] == 6 and set(j) == {0}
    offsets, _, _ = neighbor_list(atoms.cell[:], atoms.pbc, atoms.positions, 2.0 - 1e-9)
    assert offsets[-1] == 0
