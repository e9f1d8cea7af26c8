"""Hermite / Smith normal forms and symmetry-distinct superlattices (Hart & Forcade 2008)."""

import numpy as np
import pytest

from csp.structures.hnf import (
    hermite_normal_form,
    hnf_from_label,
    hnf_label,
    hnfs_of_index,
    smith_normal_form,
    unique_hnfs,
)
from csp.structures.lattices import get_parent


def test_number_of_hnfs_is_sublattice_count():
    # sublattices of Z^3 of index n (OEIS A001001)
    assert [sum(1 for _ in hnfs_of_index(n)) for n in range(1, 11)] == [
        1, 7, 13, 35, 31, 91, 57, 155, 130, 217]


def test_hnf_and_snf_properties_on_random_matrices():
    rng = np.random.default_rng(7)
    tested = 0
    while tested < 400:
        m = rng.integers(-6, 7, (3, 3))
        det = round(np.linalg.det(m))
        if det == 0:
            continue
        tested += 1
        h = hermite_normal_form(m)
        u = np.linalg.solve(m, h)  # H = M·U, U unimodular
        assert np.allclose(u, np.rint(u)) and abs(round(np.linalg.det(u))) == 1
        a, b, c, d, e, f = hnf_label(h)
        assert np.array_equal(hnf_from_label((a, b, c, d, e, f)), h)
        assert 0 <= b < c and 0 <= d < f and 0 <= e < f and a * c * f == abs(det)
        s, left, right = smith_normal_form(m)
        assert np.array_equal(left @ m @ right, s)
        assert abs(round(np.linalg.det(left))) == 1 and abs(round(np.linalg.det(right))) == 1
        diag = np.diag(s)
        assert np.count_nonzero(s - np.diag(diag)) == 0 and np.all(diag > 0)
        assert diag[1] % diag[0] == 0 and diag[2] % diag[1] == 0


@pytest.mark.parametrize("lattice,expected", [
    # Hart & Forcade, PRB 77, 224115 (2008), Table I: symmetrically distinct superlattices
    ("fcc", [1, 2, 3, 7, 5, 10, 7, 20, 14, 18]),
    ("bcc", [1, 2, 3, 7, 5, 10, 7, 20, 14, 18]),
    ("sc", [1, 3, 3, 9, 5, 13, 7, 24, 14, 23]),
])
def test_distinct_superlattice_counts(lattice, expected):
    rot, _ = get_parent(lattice).symmetry(["A"])
    assert [len(unique_hnfs(n, rot)) for n in range(1, 11)] == expected


@pytest.mark.parametrize("lattice", ["fcc", "sc", "hcp"])
def test_unique_hnfs_agree_with_direct_equivalence_test(lattice):
    # independent check: H2 ~ H1 iff H2^-1 W H1 is an integer matrix for some rotation W
    rot, _ = get_parent(lattice).symmetry(["A"])
    for n in (4, 6):
        all_h = list(hnfs_of_index(n))
        classes: list[list[np.ndarray]] = []
        for h in all_h:
            for cls in classes:
                rep = cls[0]
                x = np.einsum("ij,njk,kl->nil", np.linalg.inv(h), rot.astype(float), rep)
                if np.any(np.all(np.abs(x - np.rint(x)) < 1e-8, axis=(1, 2))):
                    cls.append(h)
                    break
            else:
                classes.append([h])
        reps = unique_hnfs(n, rot)
        assert len(reps) == len(classes)
        # every class contains exactly one representative
        for cls in classes:
            assert sum(any(np.array_equal(r, h) for h in cls) for r in reps) == 1
