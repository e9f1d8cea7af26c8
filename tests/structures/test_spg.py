"""csp.structures.spg: spglib calls without DeprecationWarning, errors as None."""

import os
import warnings

import numpy as np
import pytest
import spglib
from ase.build import bulk

from csp.structures import spg


def _cell(atoms):
    return (atoms.cell[:], atoms.get_scaled_positions(), atoms.numbers)


@pytest.mark.parametrize("env", [None, "true", "0"])
def test_call_warns_never_and_restores_the_environment(monkeypatch, env):
    if env is None:
        monkeypatch.delenv("SPGLIB_OLD_ERROR_HANDLING", raising=False)
    else:
        monkeypatch.setenv("SPGLIB_OLD_ERROR_HANDLING", env)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = spg.symmetry_dataset(_cell(bulk("Cu", "fcc", a=3.6)), symprec=1e-3)
        assert ds.number == 225 and ds.international == "Fm-3m"
        sym = spg.call(spglib.get_symmetry_from_database, 1)
        assert np.array_equal(sym["rotations"], [np.eye(3)])
        assert spg.call(spglib.get_spacegroup_type, 523).number == 225
        assert spg.call(spglib.niggli_reduce, bulk("Cu").cell[:]).shape == (3, 3)
        # overlapping atoms: spglib reports an error -> None, no warning, no exception
        lattice = np.eye(3) * 3.0
        assert spg.symmetry_dataset((lattice, [[0, 0, 0], [0, 0, 0]], [29, 29])) is None
    assert os.environ.get("SPGLIB_OLD_ERROR_HANDLING") == env


def test_call_lets_foreign_exceptions_through():
    def boom():
        raise KeyError("not spglib")
    with pytest.raises(KeyError):
        spg.call(boom)


def test_new_error_handling_covers_pymatgen_and_raises(monkeypatch):
    from pymatgen.io.ase import AseAtomsAdaptor
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    monkeypatch.delenv("SPGLIB_OLD_ERROR_HANDLING", raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with spg.new_error_handling():
            sga = SpacegroupAnalyzer(AseAtomsAdaptor.get_structure(bulk("Cu")), symprec=0.01)
            assert sga.get_space_group_number() == 225
            sga.get_refined_structure()
        with pytest.raises(spg.SpglibError), spg.new_error_handling():
            spglib.get_symmetry_dataset((np.eye(3) * 3.0, [[0, 0, 0], [0, 0, 0]], [29, 29]))
    assert "SPGLIB_OLD_ERROR_HANDLING" not in os.environ


def _l10(c_over_a: float, a: float = 2.7):
    """CuAu in its 2-atom tetragonal cell (a, a, c): L1_0 at c/a = √2 (fcc), B2 at c/a = 1."""
    from ase import Atoms

    return Atoms("CuAu", scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5]], cell=[a, a, a * c_over_a], pbc=True)


def test_operation_count_and_raised_symmetry_on_the_bain_path():
    fcc_l10, relaxed_l10, b2 = _l10(2 ** 0.5), _l10(1.28), _l10(1.0)
    assert spg.operation_count(fcc_l10, 1e-2) == 16          # P4/mmm
    assert spg.operation_count(b2, 1e-2) == 48               # Pm-3m
    assert spg.symmetry_raised(fcc_l10, b2, 1e-2)
    assert not spg.symmetry_raised(fcc_l10, relaxed_l10, 1e-2)
    assert not spg.symmetry_raised(b2, fcc_l10, 1e-2)
    # within the tolerance a nearly cubic cell counts as cubic; below it, not
    near = _l10(1.0 + 1e-3 / 2.7)
    assert spg.symmetry_raised(fcc_l10, near, 1e-2) and not spg.symmetry_raised(fcc_l10, near, 1e-5)
