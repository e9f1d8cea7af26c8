"""Random symmetric structures: requested symmetry, distances, composition, seeds, failures."""

import time

import numpy as np
import pytest
from ase.data import covalent_radii
from ase.io import read
from ase.neighborlist import neighbor_list

from csp.cli import main
from csp.errors import InputError
from csp.structures import spg
from csp.structures.random_structures import random_structures
from csp.structures.volume import vegard_volume


def _sg(atoms, symprec):
    return spg.symmetry_dataset(
        (atoms.cell[:], atoms.get_scaled_positions(), atoms.numbers), symprec=symprec).number


def _min_ratio(atoms):
    cutoff = 2 * covalent_radii[atoms.numbers].max() + 0.5
    i, j, d = neighbor_list("ijd", atoms, cutoff, self_interaction=False)
    if len(d) == 0:
        return np.inf
    return np.min(d / (covalent_radii[atoms.numbers[i]] + covalent_radii[atoms.numbers[j]]))


@pytest.fixture(scope="module")
def binary():
    return list(random_structures(["Cu", "Pd"], 24, 8, seed=11))


def test_symmetry_distances_composition(binary):
    assert len(binary) == 24
    groups = set()
    ratios = []
    for atoms in binary:
        assert atoms.info["source"] == "random"
        sg = atoms.info["space_group"]
        groups.add(sg)
        assert _sg(atoms, 1e-3) == sg
        assert _sg(atoms, 1e-2) == sg
        assert _min_ratio(atoms) >= 0.75 - 1e-9
        symbols = atoms.get_chemical_symbols()
        assert 2 <= len(atoms) <= 8 and set(symbols) == {"Cu", "Pd"}
        # volume: Vegard volume times a factor in [1.0, 1.3]
        ratio = atoms.get_volume() / vegard_volume(symbols)
        assert 1.0 - 1e-9 <= ratio <= 1.3 + 1e-9
        ratios.append(ratio)
    assert len(groups) >= 8  # space groups really are drawn at random
    assert max(ratios) - min(ratios) > 0.1  # and so is the volume factor (not stuck at one end)


def test_same_seed_same_structures(binary):
    again = list(random_structures(["Cu", "Pd"], 24, 8, seed=11))
    for a, b in zip(binary, again):
        assert a.get_chemical_formula() == b.get_chemical_formula()
        assert np.allclose(a.cell[:], b.cell[:]) and np.allclose(a.positions, b.positions)
    other = list(random_structures(["Cu", "Pd"], 3, 8, seed=12))
    assert not all(np.allclose(a.cell[:], b.cell[:]) for a, b in zip(binary, other))


def test_fixed_composition_and_restricted_groups():
    out = list(random_structures(["Cu", "Pd"], 6, 8, seed=3,
                                 composition={"Cu": 1, "Pd": 3}, space_groups=[221, 123, 139, 166]))
    for atoms in out:
        n_cu = atoms.get_chemical_symbols().count("Cu")
        assert 3 * n_cu == len(atoms) - n_cu and len(atoms) in (4, 8)
        assert _sg(atoms, 1e-3) in (221, 123, 139, 166) and _sg(atoms, 1e-3) == atoms.info["space_group"]


def test_ternary_and_large_cubic():
    for atoms in random_structures(["Ti", "Al", "Ni"], 4, 12, seed=5, space_groups=range(195, 231)):
        assert _sg(atoms, 1e-3) == atoms.info["space_group"] >= 195
        assert set(atoms.get_chemical_symbols()) == {"Ti", "Al", "Ni"} and len(atoms) <= 12
        assert _min_ratio(atoms) >= 0.75 - 1e-9


def test_impossible_requests_fail_fast():
    t0 = time.perf_counter()
    with pytest.raises(InputError, match="space group"):  # Ia-3d: smallest orbit 8 per primitive cell
        list(random_structures(["Cu", "Pd"], 1, 4, seed=0, space_groups=[230]))
    with pytest.raises(InputError, match="at least 3 atoms"):
        list(random_structures(["Cu", "Pd", "Au"], 1, 2))
    with pytest.raises(InputError, match="does not fit"):
        list(random_structures(["Cu", "Pd"], 1, 3, composition=[1, 3]))
    with pytest.raises(InputError, match="unknown element"):
        list(random_structures(["Cu", "Qq"], 1, 4))
    with pytest.raises(InputError, match="after 30 attempts"):  # distances cannot be met
        list(random_structures(["Cu", "Pd"], 1, 6, volume_factor=(0.05, 0.05), max_attempts=30))
    for bad in ({"count": -1}, {"max_atoms": 0}):
        kwargs = {"count": 1, "max_atoms": 4, **bad}
        with pytest.raises(InputError):
            list(random_structures(["Cu"], **kwargs))
    assert time.perf_counter() - t0 < 20.0


def test_cli(tmp_path, capsys):
    path = tmp_path / "r.extxyz"
    assert main(["random", "--elements", "Cu,Pd", "--count", "3", "--max-atoms", "6",
                 "--space-groups", "191-194,221", "--seed", "2", "-o", str(path)]) == 0
    structures = read(path, ":")
    assert len(structures) == 3
    assert all(s.info["space_group"] in (191, 192, 193, 194, 221) for s in structures)
    capsys.readouterr()
    assert main(["random", "--elements", "Cu,Pd", "--count", "1", "--max-atoms", "4",
                 "--space-groups", "230"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("csp: error:") and err.count("\n") == 1
