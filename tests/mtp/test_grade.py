"""Extrapolation grade: MaxVol properties, training structures grade <= 1, far structures >> 1,
save/load gives identical grades, MLIP-like calc-grade output."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from csp.mtp.fit import fit
from csp.mtp.grade import ActiveSet, active_set_path, grade
from csp.mtp.io import atoms_to_cfg, read_cfg, read_mtp, write_cfg, write_mtp
from csp.mtp.maxvol import maxvol
from csp_testdata import CONFORMANCE

CONF = CONFORMANCE / "mtp"
SPECIES = ["Cu", "Pd"]


def cells(n, seed, symbols=("Cu",), scale=1.0, rattle=0.1):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        at = bulk("Cu", "fcc", a=3.61 * scale, cubic=True).repeat((2, 1, 1))
        at.symbols = list(rng.choice(list(symbols), len(at)))
        at.positions += rng.normal(0.0, rattle, at.positions.shape)
        at.calc = EMT()
        e, f, s = at.get_potential_energy(), at.get_forces(), at.get_stress()
        at.calc = SinglePointCalculator(at, energy=e, forces=f, stress=s)
        out.append(at)
    return out


@pytest.fixture(scope="module")
def trained():
    """A level-6 two-species basis trained on Cu-only EMT cells."""
    mtp = read_mtp(CONF / "multi_06" / "pot.mtp")
    mtp.species_count = 2
    mtp.radial_coeffs = np.random.default_rng(0).uniform(-0.1, 0.1, (2, 2) + mtp.radial_coeffs.shape[2:])
    mtp.species_coeffs = np.zeros(2)
    mtp.moment_coeffs[:] = 0.0
    mtp.metadata["csp_elements"] = "Cu Pd"
    train = cells(30, seed=1)
    res = fit(mtp, train, species=SPECIES, max_iter=40)
    return res.mtp, train


def test_maxvol_dominates_all_rows():
    B = np.random.default_rng(0).normal(size=(200, 12))
    rows = maxvol(B)
    assert len(set(rows.tolist())) == 12
    C = B @ np.linalg.inv(B[rows])
    assert np.abs(C).max() <= 1 + 1e-8
    # local optimality: no single swap increases |det|
    det = abs(np.linalg.det(B[rows]))
    for i in range(0, 200, 17):
        for j in range(12):
            r = rows.copy()
            r[j] = i
            assert abs(np.linalg.det(B[r])) <= det * (1 + 1e-8)


@pytest.mark.parametrize("mode", ["neighborhood", "configuration"])
def test_training_grades_at_most_one_far_structures_much_larger(trained, mode):
    mtp, train = trained
    aset = ActiveSet.build(mtp, train, mode=mode, species=SPECIES)
    g_train = grade(mtp, aset, train, species=SPECIES)
    assert g_train.max() <= 1.0 + 1e-8
    assert np.isclose(g_train.max(), 1.0)  # the active rows themselves
    near = grade(mtp, aset, cells(5, seed=99), species=SPECIES)
    compressed = grade(mtp, aset, cells(3, seed=5, scale=0.7 ** (1 / 3)), species=SPECIES)
    alloy = grade(mtp, aset, cells(3, seed=6, symbols=("Cu", "Pd")), species=SPECIES)
    assert near.max() < 3.0
    assert compressed.min() > 10.0
    assert alloy.min() > 1e3


def test_active_set_save_load_gives_identical_grades(trained, tmp_path):
    mtp, train = trained
    aset = ActiveSet.build(mtp, train, species=SPECIES)
    probe = cells(4, seed=21, scale=0.95)
    path = active_set_path(tmp_path / "pot.mtp")
    aset.save(path)
    again = ActiveSet.load(path)
    g1, a1 = grade(mtp, aset, probe, species=SPECIES, per_atom=True)
    g2, a2 = grade(mtp, again, probe, species=SPECIES, per_atom=True)
    assert np.array_equal(g1, g2)
    assert all(np.array_equal(x, y) for x, y in zip(a1, a2))
    # and through the potential file round trip
    write_mtp(mtp, tmp_path / "pot.mtp")
    assert np.array_equal(grade(read_mtp(tmp_path / "pot.mtp"), again, probe, species=SPECIES), g1)


def test_active_set_rejects_other_potential(trained):
    from csp.errors import InputError

    mtp, train = trained
    aset = ActiveSet.build(mtp, train, species=SPECIES)
    other = mtp.copy()
    other.radial_coeffs = other.radial_coeffs * 1.01
    with pytest.raises(InputError):
        grade(other, aset, train[:1], species=SPECIES)
def test_calc_grade_cli_on_mlip_multi_10(tmp_path, capsys):
    """MLIP's layout (Feature MV_grade, nbh_grades); in.cfg configurations grade <= 1 and the
    configuration grade is the maximum neighbourhood grade, as in MLIP's out.cfg."""
    from csp.cli import main

    out = tmp_path / "out.cfg"
    d = CONF / "multi_10"
    assert main(["mtp", "calc-grade", str(d / "pot.mtp"), str(d / "in.cfg"), str(d / "in.cfg"), str(out)]) == 0
    got = read_cfg(out)
    ref = read_cfg(d / "out.cfg")
    assert len(got) == len(ref) == 25
    for g, r in zip(got, ref):
        nb = g.atom_data["nbh_grades"]
        assert nb.shape == r.atom_data["nbh_grades"].shape
        assert float(g.features["MV_grade"]) == pytest.approx(nb.max(), abs=1e-6)
        assert nb.max() <= 1.0 + 1e-6
    # MLIP also reports MV_grade = max nbh_grades
    for r in ref:
        assert float(r.features["MV_grade"]) == pytest.approx(r.atom_data["nbh_grades"].max(), abs=1e-5)


@pytest.mark.parametrize("mode", ["configuration", "neighborhood"])
def test_flat_batch_grades_equal_structure_grades(trained, mode):
    """grade_flat (one numba neighbour call over a flat batch, as the relaxation uses it) gives the
    same grades as grade() on the same structures: small and skewed cells (many images), several
    species, sizes 1-8, inside and far outside the training data."""
    from csp.mtp.evaluate import Batch, calc_efs_batch
    from csp.mtp.grade import grade_flat, grade_from_site_basis

    mtp, train = trained
    aset = ActiveSet.build(mtp, train, mode=mode, species=SPECIES)
    rng = np.random.default_rng(3)
    structures = cells(3, seed=9) + cells(2, seed=10, scale=0.75)
    for n in (1, 2, 5, 8):
        at = bulk("Cu", "fcc", a=3.6).repeat((n, 1, 1))
        at.set_cell(at.cell[:] @ (np.eye(3) + rng.uniform(-0.15, 0.15, (3, 3))), scale_atoms=True)
        at.symbols = list(rng.choice(SPECIES, len(at)))
        at.rattle(0.1, seed=n)
        structures.append(at)
    batch = Batch.from_atoms(structures, SPECIES)
    flat = grade_flat(mtp, aset, batch.cells, batch.positions, batch.types, batch.offsets)
    reference = grade(mtp, aset, structures, species=SPECIES)
    assert flat.shape == (len(structures),)
    np.testing.assert_allclose(flat, reference, rtol=1e-10, atol=1e-12)
    assert flat[:3].max() < 2.0 < flat[3:5].min()
    # the energy kernel's by-product (basis values per site) gives the same grades, and leaves
    # energies, forces and stresses unchanged
    plain = calc_efs_batch(mtp, batch)
    fused = calc_efs_batch(mtp, batch, site_basis=True)
    assert plain.site_basis is None and fused.site_basis.shape == (len(batch.types), len(mtp.alpha_moment_mapping))
    for a, b in zip(plain[:5], fused[:5]):
        np.testing.assert_array_equal(a, b)
    by_product = grade_from_site_basis(mtp, aset, fused.site_basis, batch.types, batch.offsets)
    np.testing.assert_allclose(by_product, reference, rtol=1e-9, atol=1e-12)


def test_graded_evaluator_reuses_the_step_and_falls_back_otherwise(trained):
    """The relaxation's (evaluator, grader) pair: grading the positions just evaluated uses the
    evaluation's basis values; any other positions are graded from scratch — same numbers."""
    from csp.campaign.model import graded_evaluator
    from csp.mtp.evaluate import Batch

    mtp, train = trained
    aset = ActiveSet.build(mtp, train, mode="configuration", species=SPECIES)
    batch = Batch.from_atoms(cells(4, seed=21) + cells(1, seed=22, scale=0.8), SPECIES)
    other = Batch.from_atoms(cells(5, seed=23), SPECIES)
    evaluate, grade_fn = graded_evaluator(mtp, aset)
    evaluate(batch.cells, batch.positions, batch.types, batch.offsets)
    same = grade_fn(batch.cells, batch.positions, batch.types, batch.offsets)
    fresh = grade_fn(other.cells, other.positions, other.types, other.offsets)
    np.testing.assert_allclose(same, grade(mtp, aset, [b for b in cells(4, seed=21) + cells(1, seed=22, scale=0.8)],
                                           species=SPECIES), rtol=1e-9)
    np.testing.assert_allclose(fresh, grade(mtp, aset, cells(5, seed=23), species=SPECIES), rtol=1e-9)
