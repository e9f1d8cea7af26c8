"""MaxVol, the active set and the selection are total and correct on rank-deficient data (#15):
fewer rows than columns, duplicate rows, dependent rows, supercells. The invariant: every row
used to build the active set grades <= 1 — a structure in the training set is never
"extrapolative" — and select() never picks a structure the active set already has."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk

from csp.mtp.grade import ActiveSet, grade
from csp.mtp.io import read_mtp
from csp.mtp.maxvol import greedy_insert, independent_rows, maxvol
from csp.mtp.select import select

CONF = Path(__file__).resolve().parents[1] / "data" / "conformance"
TOL = 1e-6


@pytest.fixture(scope="module")
def cu():
    """MLIP-trained level-10 Cu potential (17 linear, 41 coefficients)."""
    mtp = read_mtp(CONF / "mlip-grade" / "pot10.mtp")
    mtp.metadata["csp_elements"] = "Cu"
    return mtp


@pytest.fixture(scope="module")
def cupd():
    """Level-6 two-species basis (MLIP's multi_06 basis, species 0 and 1 used as Cu, Pd)."""
    mtp = read_mtp(CONF / "mtp" / "multi_06" / "pot.mtp")
    mtp.metadata["csp_elements"] = "Cu Pd Au"
    return mtp


def fcc(a=3.61, cubic=False, rattle=0.0, seed=0, symbols=None):
    at = bulk("Cu", "fcc", a=a, cubic=cubic)
    if symbols is not None:
        at.symbols = symbols
    if rattle:
        at.positions += np.random.default_rng(seed).normal(0.0, rattle, at.positions.shape)
    return at


# ---------------------------------------------------------------------- maxvol / greedy_insert

def coeff_bound(B, rows):
    """max |c| of every row of B in the basis of B[rows] (least squares in the row space)."""
    C = np.linalg.lstsq(B[rows].T, B.T, rcond=None)[0].T
    assert np.allclose(C @ B[rows], B, atol=1e-9 * max(1.0, np.abs(B).max()))
    return np.abs(C).max()


@pytest.mark.parametrize("case", ["duplicates", "fewer_rows", "low_rank", "zero_rows", "one_row",
                                  "scaled_copies"])
def test_maxvol_is_total_on_rank_deficient_matrices(case):
    rng = np.random.default_rng(3)
    B = {
        "duplicates": np.repeat(rng.normal(size=(3, 8)), 4, axis=0),
        "fewer_rows": rng.normal(size=(5, 12)),
        "low_rank": rng.normal(size=(40, 3)) @ rng.normal(size=(3, 10)),
        "zero_rows": np.vstack([np.zeros((4, 6)), rng.normal(size=(2, 6))]),
        "one_row": rng.normal(size=(1, 7)),
        "scaled_copies": np.outer(np.arange(1.0, 7.0), rng.normal(size=5)),
    }[case]
    rows = maxvol(B)
    rank = np.linalg.matrix_rank(B)
    assert len(rows) == rank == len(independent_rows(B))
    assert len(set(rows.tolist())) == rank
    assert coeff_bound(B, rows) <= 1 + 1e-8


def test_maxvol_of_a_zero_or_empty_matrix_is_empty():
    assert len(maxvol(np.zeros((4, 3)))) == 0
    assert len(maxvol(np.zeros((0, 3)))) == 0


def test_maxvol_full_rank_with_duplicates_is_still_a_maxvol():
    rng = np.random.default_rng(5)
    base = rng.normal(size=(30, 6))
    B = np.vstack([base, base[:10], base[:10]])
    rows = maxvol(B)
    assert len(rows) == 6
    assert np.abs(B @ np.linalg.inv(B[rows])).max() <= 1 + 1e-8


def test_greedy_insert_fills_a_singular_active_set():
    rng = np.random.default_rng(1)
    A = np.zeros((4, 4))
    A[0] = rng.normal(size=4)
    A[1] = A[0]                       # duplicate: rank 1
    cands = np.vstack([A[0], 2 * A[0], rng.normal(size=(5, 4))])
    new, swaps = greedy_insert(A, cands)
    assert abs(np.linalg.det(new)) > 0
    assert np.abs(cands @ np.linalg.inv(new)).max() <= 1 + 1e-8
    assert all(i >= 2 for i, _ in swaps[:3])  # the copies of the active row add no volume


def test_greedy_insert_is_total_when_candidates_cannot_fill_the_rank():
    A = np.zeros((3, 3))
    cands = np.array([[1.0, 0, 0], [2.0, 0, 0], [2.0, 0, 0]])
    new, swaps = greedy_insert(A, cands)
    assert len(swaps) == 1 and np.allclose(new[swaps[0][1]], [2.0, 0, 0])
    new, swaps = greedy_insert(np.zeros((3, 3)), np.zeros((2, 3)))
    assert swaps == [] and not new.any()
    new, swaps = greedy_insert(np.eye(3), np.zeros((0, 3)))
    assert swaps == []


def test_greedy_insert_never_swaps_in_a_row_already_active():
    rng = np.random.default_rng(2)
    A = rng.normal(size=(5, 5))
    cands = np.vstack([A, A[:2], -A[3:]])
    new, swaps = greedy_insert(A, cands)
    assert swaps == [] and np.array_equal(new, A)


# ---------------------------------------------------------------------- active set invariant

def training_sets():
    prim = fcc()
    return {
        "one": [prim],
        "two": [fcc(3.55), fcc(3.70)],
        "three": [fcc(3.55), fcc(3.61, cubic=True, rattle=0.05), fcc(3.70)],
        "four": [fcc(3.5 + 0.05 * k, cubic=True, rattle=0.03, seed=k) for k in range(4)],
        "duplicates": [prim, prim.copy(), prim.copy()],
        "supercell": [prim, prim.repeat((2, 2, 2)), fcc(3.61, cubic=True)],
        "rattled_duplicates": [fcc(cubic=True, rattle=0.05, seed=1)] * 2 + [fcc(3.7, cubic=True)],
    }


@pytest.mark.parametrize("coefficients", ["linear", "all"])
@pytest.mark.parametrize("mode", ["configuration", "neighborhood"])
@pytest.mark.parametrize("name", list(training_sets()))
def test_training_structures_never_extrapolate(cu, name, mode, coefficients):
    train = training_sets()[name]
    aset = ActiveSet.build(cu, train, mode=mode, species=["Cu"], coefficients=coefficients)
    assert aset.matrix.shape[0] == (cu.n_params if coefficients == "all" else 17)
    assert np.isfinite(aset.inverse).all()
    g = grade(cu, aset, train, species=["Cu"])
    assert g.max() <= 1 + TOL
    # a supercell of a training structure is the same structure
    g_super = grade(cu, aset, [s.repeat((2, 1, 1)) for s in train], species=["Cu"])
    assert g_super.max() <= 1 + TOL
    # ... and something the training set never saw still extrapolates
    far = grade(cu, aset, [fcc(3.2, cubic=True, rattle=0.1, seed=9)], species=["Cu"])
    assert far[0] > 2


def test_active_set_of_nothing_is_all_virtual(cu):
    aset = ActiveSet.build(cu, [], mode="configuration", species=["Cu"])
    assert np.all(aset.owners == -1)
    assert grade(cu, aset, [fcc()], species=["Cu"])[0] > 1e3


def test_a_species_absent_from_training_extrapolates(cupd):
    train = [fcc(3.61, cubic=True, rattle=0.02, seed=k) for k in range(3)]
    aset = ActiveSet.build(cupd, train, mode="configuration", species=["Cu", "Pd", "Au"])
    assert grade(cupd, aset, train, species=["Cu", "Pd", "Au"]).max() <= 1 + TOL
    alloy = fcc(3.7, cubic=True, symbols=["Cu", "Pd", "Cu", "Pd"])
    assert grade(cupd, aset, [alloy], species=["Cu", "Pd", "Au"])[0] > 100


def test_from_rows_on_the_rows_that_crashed_the_lu_start():
    # two identical configurations: the old LU start took p[:r] (not the pivot rows) and
    # picked both copies -> numpy.linalg.LinAlgError: Singular matrix
    rng = np.random.default_rng(0)
    row = rng.normal(size=(1, 17))
    for rows in (np.vstack([row, row]), np.vstack([row] * 5 + [2 * row]), np.zeros((3, 17))):
        aset = ActiveSet.from_rows(rows, np.arange(len(rows)), "configuration", "x")
        assert aset.grades_of_rows(rows).max() <= 1 + TOL


# ---------------------------------------------------------------------- selection

@pytest.mark.parametrize("coefficients", ["linear", "all"])
@pytest.mark.parametrize("mode", ["configuration", "neighborhood"])
def test_select_never_picks_what_the_training_set_has(cu, mode, coefficients):
    sets = training_sets()
    for name in ("one", "duplicates", "supercell", "four"):
        train = sets[name]
        aset = ActiveSet.build(cu, train, mode=mode, species=["Cu"], coefficients=coefficients)
        copies = [s.copy() for s in train] + [s.repeat((1, 1, 2)) for s in train]
        assert select(cu, aset, copies, species=["Cu"]) == []
        new = fcc(3.4, cubic=True, rattle=0.05, seed=11)
        picked = select(cu, aset, copies + [new, new.copy(), new.repeat((2, 1, 1))], species=["Cu"])
        assert len(picked) == 1 and picked[0] >= len(copies)


def test_select_is_total_on_degenerate_inputs(cu):
    aset = ActiveSet.build(cu, [fcc()], mode="configuration", species=["Cu"])
    assert select(cu, aset, [], species=["Cu"]) == []
    assert select(cu, aset, [fcc(3.5)], n=0, species=["Cu"]) == []
    picked = select(cu, aset, [fcc(3.5)] * 4, species=["Cu"])
    assert len(picked) == 1
    empty = ActiveSet.build(cu, [], mode="neighborhood", species=["Cu"])
    picked = select(cu, empty, [fcc(3.5), fcc(3.5), fcc(3.6, cubic=True)], species=["Cu"])
    assert 1 <= len(picked) <= 2 and len(set(picked)) == len(picked)
    assert not {0, 1} <= set(picked)


def test_non_finite_rows_are_left_out_not_fatal():
    rows = np.random.default_rng(0).normal(size=(5, 6))
    rows[2, 3] = np.nan
    aset = ActiveSet.from_rows(rows, np.arange(5), "configuration", "x")
    assert 2 not in aset.owners.tolist() and np.isfinite(aset.inverse).all()
    assert aset.grades_of_rows(rows[[0, 1, 3, 4]]).max() <= 1 + TOL
    assert len(maxvol(rows)) == 0  # maxvol itself: no basis from non-finite data
