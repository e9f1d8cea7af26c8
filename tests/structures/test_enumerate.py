"""Derivative-structure enumeration: exact published counts, distinctness, geometry, errors."""

import types

import numpy as np
import pytest
import spglib
from ase.build import bulk
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.io.ase import AseAtomsAdaptor

from csp.cli import main
from csp.errors import InputError
from csp.structures import spg
from csp.structures.enumerate import count_structures, enumerate_structures, make_atoms
from csp.structures.lattices import Parent
from csp.structures.volume import vegard_volume

# enumlib documentation / Hart & Forcade PRB 77 224115 (2008); Enumlib.jl reference table
FCC_BINARY = {1: 2, 2: 2, 3: 6, 4: 19, 5: 28, 6: 80, 7: 104, 8: 390}
FCC_TERNARY = {1: 3, 2: 6, 3: 21, 4: 96, 5: 165, 6: 790}          # sum 1081 (icet tests)
HCP_BINARY = {2: 3, 4: 10, 6: 50, 8: 270, 10: 651}                # sum 984 (icet tests)
DIAMOND_BINARY = {2: 3, 4: 7, 6: 33, 8: 171, 10: 426}


@pytest.mark.parametrize("lattice", ["fcc", "bcc"])
def test_binary_counts_fcc_bcc(lattice):
    assert count_structures(lattice, ["Cu", "Pd"], 8, by_size=True) == FCC_BINARY


def test_fcc_binary_larger_cells():
    got = count_structures("fcc", "Cu,Pd", 12, min_atoms=9, by_size=True)
    assert got[9] == 504 and got[10] == 1211 and got[12] == 7140


def test_fcc_ternary_counts():
    assert count_structures("fcc", ["Cu", "Pd", "Ag"], 6, by_size=True) == FCC_TERNARY


def test_hcp_and_diamond_binary_counts():
    assert count_structures("hcp", "Mg,Zn", 10, by_size=True) == HCP_BINARY
    assert count_structures("diamond", "Si,Ge", 10, by_size=True) == DIAMOND_BINARY


@pytest.mark.parametrize("natoms,conc,expected", [
    # Hart, Nelson & Forcade, Comput. Mater. Sci. 59, 101 (2012): fcc binary, fixed concentration
    (4, {"Cu": 0.5}, 5),
    (8, {"Cu": 0.5}, 94),
    (8, {"Cu": 3 / 8, "Pd": 5 / 8}, 86),
    (12, {"Cu": 0.5}, 1552),
    (16, {"Cu": 7 / 16}, 16052),
])
def test_fixed_concentration_counts(natoms, conc, expected):
    assert count_structures("fcc", "Cu,Pd", natoms, min_atoms=natoms,
                            concentrations=conc) == expected


def test_site_restricted_multilattice_count():
    # icet's test suite: elongated fcc with an interstitial site, [[Au,Pd],[H,V]], 1..4 cells
    cell = bulk("Au", "fcc", a=4.0).cell.array.copy()
    cell[0] *= 1.33
    parent = Parent("elongated", cell, [[0, 0, 0], np.linalg.solve(cell.T, [2.0, 2.0, 2.0])])
    species = [["Au", "Pd"], ["H", "V"]]
    assert count_structures(parent, "Au,Pd,H,V", 8, site_species=species) == 1500
    for atoms in enumerate_structures(parent, "Au,Pd,H,V", 6, site_species=species):
        n = atoms.info["index"]
        assert set(atoms.get_chemical_symbols()[:n]) <= {"Au", "Pd"}
        assert set(atoms.get_chemical_symbols()[n:]) <= {"H", "V"}


def test_sc_counts_against_brute_force():
    # independent reference: every labeling of every (non-reduced) supercell of sc up to 4
    # cells, kept when its primitive cell is the whole cell, grouped with StructureMatcher
    from ase import Atoms

    from csp.structures.hnf import hnfs_of_index

    matcher = StructureMatcher(primitive_cell=False, scale=False, attempt_supercell=False)
    adaptor = AseAtomsAdaptor()
    for n in range(1, 5):
        pool = []
        for h in hnfs_of_index(n):
            cell = h.T.astype(float)
            # parent lattice points inside the supercell
            pts = [np.array(p) for p in np.ndindex(n, n, n)]
            frac = np.array([np.linalg.solve(cell.T, p) for p in pts])
            frac = np.unique(np.round(frac % 1.0, 8) % 1.0, axis=0)
            assert len(frac) == n
            for code in range(2 ** n):
                labels = [(code >> i) & 1 for i in range(n)]
                atoms = Atoms(numbers=[29 if x == 0 else 46 for x in labels],
                              scaled_positions=frac, cell=cell, pbc=True)
                prim = spg.call(spglib.standardize_cell, (cell, frac, atoms.numbers),
                                to_primitive=True)
                if len(prim[2]) == n:
                    pool.append(adaptor.get_structure(atoms))
        groups = matcher.group_structures(pool)
        assert len(groups) == count_structures("sc", "Cu,Pd", n, min_atoms=n)


def _assert_pairwise_distinct(structures):
    # ideal (unrelaxed) geometries: true duplicates match exactly, so tight tolerances are
    # right; the defaults (stol 0.3) merge e.g. distinct hcp MgZn orderings.
    matcher = StructureMatcher(ltol=0.05, stol=0.05, angle_tol=1.0, primitive_cell=True,
                               scale=True, attempt_supercell=True)
    adaptor = AseAtomsAdaptor()
    by_formula = {}
    for atoms in structures:
        by_formula.setdefault(atoms.get_chemical_formula(empirical=True), []).append(
            adaptor.get_structure(atoms))
    for group in by_formula.values():
        assert len(matcher.group_structures(group)) == len(group)


@pytest.mark.parametrize("lattice,elements,max_atoms", [
    ("fcc", "Cu,Pd", 6), ("bcc", "Fe,Al", 5), ("hcp", "Mg,Zn", 6), ("fcc", "Cu,Pd,Ag", 4),
])
def test_enumerated_structures_distinct_and_primitive(lattice, elements, max_atoms):
    structures = list(enumerate_structures(lattice, elements, max_atoms))
    assert len(structures) == count_structures(lattice, elements, max_atoms)
    for atoms in structures:
        cell = (atoms.cell.array, atoms.get_scaled_positions(), atoms.numbers)
        prim = spg.call(spglib.standardize_cell, cell, to_primitive=True, no_idealize=True,
                        symprec=1e-4)
        assert len(prim[2]) == len(atoms), "superperiodic structure"
    _assert_pairwise_distinct(structures)


def test_geometry_volume_and_provenance():
    for atoms in enumerate_structures("fcc", ["Cu", "Au"], 6):
        assert atoms.get_volume() == pytest.approx(vegard_volume(atoms.get_chemical_symbols()),
                                                   rel=1e-9)
        info = atoms.info
        assert info["source"] == "enumerate" and info["lattice"] == "fcc"
        a, b, c, d, e, f = info["hnf"]
        assert a * c * f == info["index"] == len(atoms)
        assert "".join("Cu" if ch == "a" else "Au" for ch in info["labeling"]) == "".join(
            atoms.get_chemical_symbols())
        # fcc derivative: 12 nearest neighbours at the same distance
        d = atoms.get_all_distances(mic=True)
        dmin = np.min(d[d > 1e-6]) if len(atoms) > 1 else None
        if dmin is not None:
            a0 = (4 * atoms.get_volume() / len(atoms)) ** (1 / 3)
            assert dmin == pytest.approx(a0 / np.sqrt(2), rel=1e-6)


def test_concentration_limits_and_all_species():
    for atoms in enumerate_structures("fcc", "Cu,Pd,Ag", 6,
                                      concentrations={"Cu": (0.5, 1.0), "Ag": (0.0, 0.2)}):
        sym = atoms.get_chemical_symbols()
        assert sym.count("Cu") >= 0.5 * len(sym) - 1e-9 and sym.count("Ag") <= 0.2 * len(sym)
    full = count_structures("fcc", "Cu,Pd,Ag", 6, by_size=True)
    complete = count_structures("fcc", "Cu,Pd,Ag", 6, all_species=True, by_size=True)
    binary = count_structures("fcc", "Cu,Pd", 6, by_size=True)
    # inclusion-exclusion: ternary = complete + 3 binaries - 3 unaries (each unary at n=1 only)
    for natoms in full:
        unary = 1 if natoms == 1 else 0
        assert full[natoms] == complete[natoms] + 3 * (binary[natoms] - 2 * unary) + 3 * unary


def test_parent_from_file_matches_builtin(tmp_path):
    hcp = bulk("Mg", "hcp", a=3.2, c=3.2 * np.sqrt(8 / 3))
    path = tmp_path / "mg.vasp"
    hcp.write(path, format="vasp")
    assert count_structures(str(path), "Mg,Zn", 8) == sum(
        v for k, v in HCP_BINARY.items() if k <= 8)
    conventional = bulk("Cu", "fcc", a=3.6, cubic=True)
    bad = tmp_path / "cu_conv.vasp"
    conventional.write(bad, format="vasp")
    with pytest.raises(InputError, match="not a primitive cell"):
        count_structures(str(bad), "Cu,Pd", 4)


def test_streaming_is_lazy():
    gen = enumerate_structures("fcc", "Cu,Pd,Ag,Au", 24)
    assert isinstance(gen, types.GeneratorType)
    first = next(gen)
    assert len(first) == 1


def test_make_atoms_equals_ase_constructor():
    from ase import Atoms

    rng = np.random.default_rng(0)
    pos, cell, num = rng.random((5, 3)), rng.random((3, 3)) + np.eye(3), np.arange(1, 6)
    fast = make_atoms(num.copy(), pos.copy(), cell.copy())
    ref = Atoms(numbers=num, positions=pos, cell=cell, pbc=True)
    assert fast == ref and fast.get_volume() == pytest.approx(ref.get_volume())
    fast.set_chemical_symbols(["H"] * 5)  # behaves as a normal Atoms
    assert fast.copy() == fast


@pytest.mark.parametrize("kwargs,match", [
    (dict(elements="Cu,Xx", max_atoms=4), "unknown element"),
    (dict(elements="Cu,Pd", max_atoms=0), "positive"),
    (dict(elements="Cu,Pd", max_atoms=4, min_atoms=6), "exceeds"),
    (dict(elements="Cu,Pd", max_atoms=4, concentrations={"Cu": 0.7, "Pd": 0.6}), "impossible"),
    (dict(elements="Cu,Pd", max_atoms=3, concentrations={"Cu": 0.25}), "realises"),
    (dict(elements="Cu,Pd", max_atoms=4, concentrations={"Cu": (0.6, 0.2)}), "within"),
    (dict(elements="Cu,Cu", max_atoms=4), "repeated"),
    (dict(elements="", max_atoms=4), "no elements"),
    (dict(elements="Cu,Pd", max_atoms=4, site_species=[["Cu"], ["Pd"]]), "sites"),
    (dict(lattice="nonsense", elements="Cu,Pd", max_atoms=4), "unknown lattice"),
])
def test_bad_input(kwargs, match):
    kwargs.setdefault("lattice", "fcc")
    with pytest.raises(InputError, match=match):
        count_structures(**kwargs)
    with pytest.raises(InputError, match=match):
        next(enumerate_structures(**kwargs))


def test_cli_count_and_output(tmp_path, capsys):
    assert main(["enumerate", "--lattice", "fcc", "--elements", "Cu,Pd", "--max-atoms", "8",
                 "--count"]) == 0
    assert capsys.readouterr().out.strip() == str(sum(FCC_BINARY.values()))
    out = tmp_path / "s.extxyz"
    assert main(["enumerate", "--lattice", "hcp", "--elements", "Mg,Zn", "--max-atoms", "4",
                 "--concentrations", "Mg:0.5", "-o", str(out)]) == 0
    import ase.io

    images = ase.io.read(out, ":")
    assert len(images) == count_structures("hcp", "Mg,Zn", 4, concentrations={"Mg": 0.5})
    assert all(a.info["source"] == "enumerate" and isinstance(a.info["labeling"], str)
               for a in images)
    assert main(["enumerate", "--lattice", "fcc", "--elements", "Cu,Pd", "--max-atoms", "4",
                 "--site", "Cu", "--count"]) == 0
    assert capsys.readouterr().out.strip() == "1"


@pytest.mark.parametrize("argv", [
    ["--lattice", "fcc", "--elements", "Cu,Qq", "--max-atoms", "4"],
    ["--lattice", "fcc", "--elements", "Cu,Pd", "--max-atoms", "-1"],
    ["--lattice", "bogus", "--elements", "Cu,Pd", "--max-atoms", "4"],
    ["--lattice", "fcc", "--elements", "Cu,Pd", "--max-atoms", "4", "--concentrations", "Cu:2"],
    ["--lattice", "fcc", "--elements", "Cu,Pd", "--max-atoms", "4", "--concentrations", "Cu"],
])
def test_cli_bad_input_exit_2(argv, capsys):
    assert main(["enumerate", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("csp: error:") and err.count("\n") == 1
