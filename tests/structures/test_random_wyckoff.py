"""Wyckoff positions derived from spglib's symmetry database."""

import numpy as np
import pytest

from csp.errors import InputError
from csp.structures.wyckoff import derive_space_group, primitive_cell, space_group


def test_table_totals_and_general_positions():
    # the 230 space groups (standard settings) have 1731 Wyckoff positions in all
    assert sum(len(space_group(n).positions) for n in range(1, 231)) == 1731
    for n in range(1, 231):
        g = space_group(n)
        general = g.positions[-1]
        assert general.multiplicity == g.order and general.dof == 3
        assert general.site_symmetry_order == 1
        assert len({w.letter for w in g.positions}) == len(g.positions)
        for w in g.positions:
            assert w.multiplicity * w.site_symmetry_order == g.order


@pytest.mark.parametrize("number, expected", [
    (225, ["4a", "4b", "8c", "24d", "24e", "32f", "48g", "48h", "48i", "96j", "96k", "192l"]),
    (194, ["2a", "2b", "2c", "2d", "4e", "4f", "6g", "6h", "12i", "12j", "12k", "24l"]),
    (230, ["16a", "16b", "24c", "24d", "32e", "48f", "48g", "96h"]),
    (2, ["1a", "1b", "1c", "1d", "1e", "1f", "1g", "1h", "2i"]),
    (14, ["2a", "2b", "2c", "2d", "4e"]),
])
def test_known_groups(number, expected):
    assert [w.label for w in space_group(number).positions] == expected


@pytest.mark.parametrize("number", [1, 3, 15, 47, 62, 129, 141, 166, 186, 191, 216, 227])
def test_table_matches_fresh_derivation(number):
    fresh, table = derive_space_group(number), space_group(number)
    assert [(w.label, w.dof) for w in fresh.positions] == [(w.label, w.dof) for w in table.positions]
    for a, b in zip(fresh.positions, table.positions):
        # the same fixed-point subspace: table origin lies on the fresh subspace modulo lattice
        orbit = table.orbit(b.origin)
        basis = a.basis
        ok = False
        for p in orbit:
            for shift in np.array(np.meshgrid(*[[-1, 0, 1]] * 3)).reshape(3, -1).T:
                d = p + shift - a.origin
                if basis.shape[0]:
                    d = d - np.linalg.lstsq(basis.T, d, rcond=None)[0] @ basis
                ok |= bool(np.all(np.abs(d) < 1e-6))
        assert ok, (number, a.label)


def test_orbits_of_random_points_have_the_multiplicity():
    rng = np.random.default_rng(7)
    for n in range(1, 231):
        g = space_group(n)
        for w in g.positions:
            # a random point is generic (a draw within 1e-4 of a special point may not be)
            sizes = [len(g.orbit(w.point(rng.uniform(0, 12, w.dof)))) for _ in range(3)]
            assert max(sizes) == w.multiplicity, (n, w.label)


def test_primitive_cell_of_centred_lattices():
    cell = np.diag([4.0, 4.0, 4.0])
    fcc = primitive_cell(cell, np.array([[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0]]),
                         np.array([29] * 4), "F")
    assert len(fcc) == 1 and np.isclose(fcc.get_volume(), 16.0)
    hexcell = np.array([[3.0, 0, 0], [-1.5, 1.5 * np.sqrt(3), 0], [0, 0, 9.0]])
    r = primitive_cell(hexcell, np.array([[0, 0, 0], [2 / 3, 1 / 3, 1 / 3], [1 / 3, 2 / 3, 2 / 3]]),
                       np.array([26] * 3), "R")
    assert len(r) == 1 and np.isclose(r.get_volume(), abs(np.linalg.det(hexcell)) / 3)


def test_bad_group_number():
    for bad in (0, 231, 2.5, True):
        with pytest.raises(InputError):
            space_group(bad)


@pytest.mark.slow
def test_whole_table_matches_fresh_derivation():
    for n in range(1, 231):
        fresh, table = derive_space_group(n), space_group(n)
        assert [(w.label, w.site_symmetry_order, w.dof) for w in fresh.positions] == \
            [(w.label, w.site_symmetry_order, w.dof) for w in table.positions], n
        for a, b in zip(fresh.positions, table.positions):
            assert np.allclose(a.origin, b.origin, atol=1e-9) and np.allclose(a.basis, b.basis)
