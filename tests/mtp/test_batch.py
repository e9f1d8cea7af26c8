"""Batched evaluation equals per-structure evaluation."""

import numpy as np
from ase import Atoms
from ase.build import bulk

from csp.mtp.evaluate import Batch, calc_efs, calc_efs_batch
from csp.mtp.io import read_mtp
from csp_testdata import CONFORMANCE

CONF = CONFORMANCE / "mtp"
SPECIES = ["Au", "Ag", "Cu"]


def structures(seed=0, count=40):
    rng = np.random.default_rng(seed)
    out = []
    for k in range(count):
        n = int(rng.integers(1, 9))
        cell = np.eye(3) * (12.0 * n) ** (1 / 3) + rng.normal(0, 0.4, (3, 3))
        pbc = [True, True, True] if k % 5 else [True, False, True]
        out.append(Atoms(rng.choice(SPECIES, n), cell=cell, scaled_positions=rng.uniform(0, 1, (n, 3)), pbc=pbc))
    big = bulk("Cu", "fcc", a=3.7, cubic=True).repeat((4, 4, 4))
    big.rattle(0.05, seed=1)
    out.insert(7, big)
    out.append(Atoms("Au", positions=[[0, 0, 0]]))
    return out


def test_batch_equals_single():
    mtp = read_mtp(CONF / "multi_10" / "pot.mtp")
    atoms = structures()
    batch = Batch.from_atoms(atoms, SPECIES)
    assert batch.size == len(atoms) and batch.offsets[-1] == sum(len(a) for a in atoms)
    res = calc_efs_batch(mtp, batch)
    for b, a in enumerate(atoms):
        one = calc_efs(mtp, a, SPECIES)
        sl = slice(batch.offsets[b], batch.offsets[b + 1])
        assert abs(res.energies[b] - one.energy) <= 1e-12 * max(1, abs(one.energy))
        np.testing.assert_allclose(res.forces[sl], one.forces, atol=1e-12, rtol=0)
        np.testing.assert_allclose(res.site_energies[sl], one.energies, atol=1e-12, rtol=0)
        np.testing.assert_allclose(res.stresses[b], one.stress, atol=1e-12, rtol=0, equal_nan=True)
        assert np.isnan(res.stresses[b]).all() == (not a.pbc.all())


def test_batch_is_reusable_and_order_independent():
    mtp = read_mtp(CONF / "multi_06" / "pot.mtp")
    atoms = structures(seed=3, count=12)
    res = calc_efs_batch(mtp, Batch.from_atoms(atoms, SPECIES))
    rev = calc_efs_batch(mtp, Batch.from_atoms(atoms[::-1], SPECIES))
    np.testing.assert_allclose(rev.energies[::-1], res.energies, rtol=1e-13)
    empty = calc_efs_batch(mtp, Batch.from_atoms([], SPECIES))
    assert empty.energies.shape == (0,) and empty.forces.shape == (0, 3)
