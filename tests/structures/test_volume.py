"""Atomic volumes (Kittel via ASE, WebElements fall-back) and Vegard's rule."""

import numpy as np
import pytest
from ase.build import bulk
from ase.data import atomic_numbers

from csp.errors import InputError
from csp.structures.volume import atomic_volume, atomic_volume_source, vegard_volume


@pytest.mark.parametrize("symbol", ["Cu", "Al", "Fe", "W", "Mg", "Ti", "Si", "C"])
def test_kittel_volume_matches_ase_bulk(symbol):
    # ase.build.bulk builds the same reference state: its volume per atom must agree.
    atoms = bulk(symbol)
    assert atomic_volume(symbol) == pytest.approx(atoms.get_volume() / len(atoms), rel=1e-9)
    assert atomic_volume_source(symbol) == "kittel"


def test_complex_structures_use_cell_content():
    # beta-Sn: 4 atoms per bct cell; Bi: 2 atoms per rhombohedral cell; Sm: 3 (9R).
    assert atomic_volume("Sn") == pytest.approx(27.0, abs=0.5)
    assert atomic_volume("Bi") == pytest.approx(35.4, abs=0.5)
    assert atomic_volume("Sm") == pytest.approx(33.0, abs=0.5)
    # trigonal Se and Te are not hcp: the fall-back molar volume is used
    assert atomic_volume_source("Te") == "webelements"
    assert atomic_volume("Te") == pytest.approx(34.0, abs=0.5)


def test_fallback_elements_are_physical():
    for s in ["H", "N", "O", "Cl", "Ga", "Mn", "U", "Pm"]:
        assert atomic_volume_source(s) == "webelements"
        assert 5.0 < atomic_volume(s) < 60.0


def test_all_common_elements_available_and_positive():
    for z in range(1, atomic_numbers["Bi"] + 1):
        from ase.data import chemical_symbols

        s = chemical_symbols[z]
        if s in ("At",):
            continue
        assert atomic_volume(s) > 3.0


def test_vegard_sum():
    v = vegard_volume(["Cu", "Pd", "Pd"])
    assert v == pytest.approx(atomic_volume("Cu") + 2 * atomic_volume("Pd"))
    assert vegard_volume(np.array(["Cu"] * 4)) == pytest.approx(4 * atomic_volume("Cu"))


@pytest.mark.parametrize("bad", ["Xx", "cu", "X", "", "Fr"])
def test_unknown_element(bad):
    with pytest.raises(InputError):
        atomic_volume(bad)
    with pytest.raises(InputError):
        vegard_volume(["Cu", bad])


def test_empty_list():
    with pytest.raises(InputError):
        vegard_volume([])
