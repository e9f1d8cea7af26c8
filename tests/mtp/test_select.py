"""Greedy MaxVol selection: the one informative structure out of a set with duplicates."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from csp.mtp.fit import fit
from csp.mtp.grade import ActiveSet, active_set_path, grade
from csp.mtp.io import atoms_to_cfg, read_cfg, read_mtp, write_cfg, write_mtp
from csp.mtp.maxvol import greedy_insert
from csp.mtp.select import select
from csp_testdata import CONFORMANCE

CONF = CONFORMANCE / "mtp"


def cells(n, seed, scale=1.0, rattle=0.1):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        at = bulk("Cu", "fcc", a=3.61 * scale, cubic=True).repeat((2, 1, 1))
        at.positions += rng.normal(0.0, rattle, at.positions.shape)
        at.calc = EMT()
        e, f, s = at.get_potential_energy(), at.get_forces(), at.get_stress()
        at.calc = SinglePointCalculator(at, energy=e, forces=f, stress=s)
        out.append(atoms_to_cfg(at, ["Cu"]))
    return out


@pytest.fixture(scope="module")
def trained():
    mtp = read_mtp(CONF / "cubic_10" / "pot.mtp")
    mtp.radial_coeffs = np.random.default_rng(0).uniform(-0.1, 0.1, mtp.radial_coeffs.shape)
    mtp.species_coeffs[:] = 0.0
    mtp.moment_coeffs[:] = 0.0
    train = cells(20, seed=1)
    return fit(mtp, train, max_iter=30).mtp, train


def test_greedy_insert_increases_volume():
    rng = np.random.default_rng(2)
    A = rng.normal(size=(6, 6))
    R = rng.normal(size=(30, 6)) * 3
    new, swaps = greedy_insert(A, R)
    assert swaps
    assert abs(np.linalg.det(new)) > abs(np.linalg.det(A))
    assert np.abs(R @ np.linalg.inv(new)).max() <= 1 + 1e-8


@pytest.mark.parametrize("mode", ["neighborhood", "configuration"])
def test_select_picks_the_informative_structure_among_duplicates(trained, mode):
    mtp, train = trained
    aset = ActiveSet.build(mtp, train, mode=mode)
    squeezed = cells(1, seed=50, scale=0.9)[0]
    cands = [train[3], train[3], squeezed, train[7], squeezed, train[3]]
    assert select(mtp, aset, cands) == [2]
    assert select(mtp, aset, cands, 1) == [2]
    # nothing informative: nothing selected
    assert select(mtp, aset, [train[0], train[5]]) == []
def test_select_add_cli(trained, tmp_path):
    from csp.cli import main

    mtp, train = trained
    pot, tr, new, out = (tmp_path / n for n in ("pot.mtp", "train.cfg", "new.cfg", "sel.cfg"))
    write_mtp(mtp, pot)
    write_cfg(tr, train)
    squeezed = cells(2, seed=60, scale=0.88)
    write_cfg(new, [train[2], squeezed[0], train[2]])
    assert main(["mtp", "select-add", str(pot), str(tr), str(new), str(out)]) == 0
    got = read_cfg(out)
    assert len(got) == 1
    assert np.allclose(got[0].positions, squeezed[0].positions)
