"""Prototype library: every file's symmetry and atom count, physical geometry, decoration."""

import importlib.util
import math
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from ase.data import covalent_radii
from ase.io import read
from ase.neighborlist import neighbor_list

import csp.structures.prototypes as protomod
from csp.cli import main
from csp.errors import InputError
from csp.structures import spg
from csp.structures.prototypes import decorate, get_prototype, list_prototypes, load_prototype
from csp.structures.volume import vegard_volume

PROTOS = list_prototypes()
REQUIRED = """A1 A2 A3 A4 A15 B1 B2 B3 B4 B8_1 B11 B19 B27 B32 B33 C1 C11_b C14 C15 C16 C32 C36
D0_3 D0_11 D0_19 D0_22 D0_23 D0_24 D1_a D2_d L1_0 L1_2 L2_1 L6_0 A5 A6 A7 A9 A_h A11 B10 B35
C2 C6 C15_b C22 C23 C38 C49 D0_9 D1_3 D2_b D5_2 D8_a E2_1 E9_3 L1_1""".split()


def _spacegroup(atoms, symprec=1e-3):
    return spg.symmetry_dataset(
        (atoms.cell[:], atoms.get_scaled_positions(), atoms.numbers), symprec=symprec).number


def _aflow_label(proto):
    """AFLOW label from the data: stoichiometry (elements alphabetical), Pearson, space group,
    Wyckoff letters per element (Mehl et al. 2017, section 2)."""
    elements = sorted(set(proto.sublattices))
    counts = {e: 0 for e in elements}
    letters = {e: [] for e in elements}
    for site in proto.sites:
        mult = int(re.match(r"\d+", site.wyckoff).group())
        counts[site.sublattice] += mult
        letters[site.sublattice].append(site.wyckoff[len(str(mult)):])
    g = math.gcd(*counts.values())
    stoich = "".join(chr(65 + i) + (str(counts[e] // g) if counts[e] // g > 1 else "")
                     for i, e in enumerate(elements))

    def wyck(ls):
        return "".join((str(ls.count(x)) if ls.count(x) > 1 else "") + x for x in sorted(set(ls)))
    return "_".join([stoich, proto.pearson, str(proto.space_group)]
                    + [wyck(letters[e]) for e in elements])


def test_library_size_and_required_types():
    assert len(PROTOS) >= 60
    have = {p.strukturbericht for p in PROTOS}
    assert not set(REQUIRED) - have
    assert all(p.source and p.aflow for p in PROTOS)


@pytest.mark.parametrize("proto", PROTOS, ids=[p.name for p in PROTOS])
def test_prototype_file(proto):
    atoms = proto.build()
    # spglib finds the declared space group, and the cell holds the Pearson symbol's atoms
    assert _spacegroup(atoms) == proto.space_group
    per_cell = len(atoms) // 3 if proto.pearson.startswith("hR") else len(atoms)
    assert per_cell == proto.pearson_count
    # the Wyckoff multiplicities add up to the cell content, consistent with the AFLOW label
    assert sum(int(re.match(r"\d+", s.wyckoff).group()) for s in proto.sites) == len(atoms)
    assert _aflow_label(proto) == proto.aflow
    assert proto.pearson[1] in "PCIFRS" and proto.pearson[0] in "amothc"
    # the representative compound is physical: no two atoms closer than 0.6 × (r_i + r_j)
    i, j, d = neighbor_list("ijd", atoms, 6.0)
    assert np.min(d / (covalent_radii[atoms.numbers[i]] + covalent_radii[atoms.numbers[j]])) > 0.68
    # the primitive cell has the same content per formula
    prim = proto.build(primitive=True)
    assert len(atoms) % len(prim) == 0
    assert np.isclose(atoms.get_volume() / len(atoms), prim.get_volume() / len(prim))


@pytest.mark.parametrize("name, window, expected", [
    # close-packed derivatives: 12 neighbours; bcc derivatives: 8 + 6; Laves: Frank-Kasper 16/12
    *[(n, 1.2, 12) for n in ("A1", "A3", "A3prime", "C19", "L1_2", "L1_0", "L1_1", "D0_22",
                             "D0_23", "L6_0", "D0_19", "D0_24")],
    *[(n, 1.2, 14) for n in ("A2", "B2", "D0_3", "L2_1", "B32")],
    ("C14", 1.3, {"Mg": 16, "Zn": 12}), ("C15", 1.3, {"Mg": 16, "Cu": 12}),
    ("C36", 1.3, {"Mg": 16, "Ni": 12}), ("A15", 1.3, {"Si": 12, "Cr": 14}),
    ("B1", 1.2, 6), ("B3", 1.2, 4), ("B4", 1.2, 4), ("A4", 1.2, 4),
    ("C32", 1.2, {"Al": 12, "B": 3}), ("D2_d", 1.2, {"Ca": 18}),
])
def test_coordination_numbers(name, window, expected):
    """Neighbours closer than `window` × each atom's nearest distance, per element."""
    atoms = get_prototype(name).build()
    i, d = neighbor_list("id", atoms, 8.0)
    for k, symbol in enumerate(atoms.get_chemical_symbols()):
        want = expected if isinstance(expected, int) else expected.get(symbol)
        if want is not None:
            dk = d[i == k]
            assert np.sum(dk < window * dk.min()) == want, (name, k, symbol)


@pytest.mark.parametrize("name, elements, formulas", [
    ("B2", "Cu,Pd", {"CuPd"}),                     # Cs <-> Cl swap is a symmetry
    ("B1", "Cu,Pd", {"CuPd"}),
    ("B3", "Cu,Pd", {"CuPd"}),
    ("L1_0", "Cu,Pd", {"CuPd"}),
    ("L1_2", "Cu,Pd", {"CuPd3", "Cu3Pd"}),
    ("A15", "Nb,Sn", {"Nb3Sn", "NbSn3"}),
    ("A1", "Cu,Pd", {"Cu", "Pd"}),                 # unary prototypes: each pure element
    ("B1", "Cu,Pd,Au", {"CuPd", "AuCu", "AuPd"}),  # binary prototype, ternary search
    ("L2_1", "Cu,Pd,Au", {"Au2CuPd", "AuCuPd2", "AuCu2Pd"}),  # 4a <-> 4b swap is a symmetry
])
def test_decoration_counts(name, elements, formulas):
    out = list(decorate(name, elements))
    assert len(out) == len(formulas)
    assert {a.get_chemical_formula(empirical=True) for a in out} == formulas


def test_decorate_a_list_of_names():
    out = list(decorate(["B2", "L1_2", "cscl"], ["Cu", "Pd"]))  # CsCl is B2: not repeated
    assert [a.info["prototype"] for a in out] == ["B2", "L1_2", "L1_2"]


def test_perovskite_ternary_has_six_distinct_decorations():
    out = list(decorate("E2_1", ["Cu", "Pd", "Au"]))
    assert len(out) == 6
    assert len({a.info["assignment"] for a in out}) == 6


def test_decorated_structures_keep_symmetry_volume_and_provenance():
    out = list(decorate("all", "Cu,Pd"))
    assert len(out) >= 2 * len(PROTOS) - 20
    for atoms in out:
        proto = get_prototype(atoms.info["prototype"])
        assert atoms.info["source"] == "prototype"
        assert np.isclose(atoms.get_volume(), vegard_volume(atoms.get_chemical_symbols()))
        if len(proto.sublattices) <= 2:  # one element per sublattice: symmetry unchanged
            assert _spacegroup(atoms) == proto.space_group, atoms.info


def test_lookup_by_compound_and_label_and_errors(tmp_path):
    assert get_prototype("cu3au").name == "L1_2"
    assert get_prototype("AB3_cP4_221_a_c").name == "L1_2"
    with pytest.raises(InputError, match="unknown prototype 'Q9'"):
        get_prototype("Q9")
    with pytest.raises(InputError, match="unknown element 'Zz'"):
        list(decorate("B2", "Cu,Zz"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: X\nspace_group: 300\n")
    with pytest.raises(InputError, match="bad.yaml"):
        load_prototype(bad)


def test_cli_list_and_decorate(tmp_path, capsys):
    assert main(["prototypes", "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(PROTOS) + 1 and "Pearson" in out[0]
    path = tmp_path / "c15.extxyz"
    assert main(["prototypes", "decorate", "C15", "--elements", "Cu,Pd", "-o", str(path)]) == 0
    structures = read(path, ":")
    assert len(structures) == 2 and {len(a) for a in structures} == {6}
    assert all(a.info["prototype"] == "C15" for a in structures)


def test_cli_bad_input_is_one_line_exit_2(capsys):
    for argv in (["prototypes", "decorate", "NoSuch", "--elements", "Cu"],
                 ["prototypes", "decorate", "B2", "--elements", "Cu,Xy"],
                 ["prototypes", "decorate", "B2"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("csp: error:") and err.count("\n") == 1


def test_library_dir_env_then_installed_then_checkout(tmp_path, monkeypatch):
    monkeypatch.delenv("CSP_PROTOTYPES", raising=False)
    checkout = Path(protomod.__file__).resolve().parents[2] / "prototypes"
    assert protomod.library_dir() == (protomod._installed_library() or checkout)
    installed = tmp_path / "installed"
    installed.mkdir()
    monkeypatch.setattr(protomod, "_installed_library", lambda: installed)
    assert protomod.library_dir() == installed
    monkeypatch.setenv("CSP_PROTOTYPES", str(tmp_path))
    assert protomod.library_dir() == tmp_path
    monkeypatch.setenv("CSP_PROTOTYPES", str(tmp_path / "missing"))
    with pytest.raises(InputError, match="CSP_PROTOTYPES"):
        protomod.library_dir()


@pytest.mark.slow
def test_wheel_ships_the_prototype_library(tmp_path):
    """A wheel (not an editable install) carries prototypes/ as csp/_prototypes and finds it."""
    root = Path(protomod.__file__).resolve().parents[2]
    if not (root / "setup.py").is_file():
        pytest.skip("not a source checkout")
    src = tmp_path / "src"        # build from a copy: no build/ or egg-info in the checkout
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(root / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.nbi", "*.nbc")
    shutil.copytree(root / "csp", src / "csp", ignore=ignore)
    shutil.copytree(root / "prototypes", src / "prototypes")
    run = dict(capture_output=True, text=True, timeout=600)
    # the installed setuptools builds offline if it can write wheels (its own bdist_wheel from
    # setuptools 70.1, else the `wheel` package); otherwise pip fetches a build environment
    import setuptools
    offline = importlib.util.find_spec("wheel") is not None or tuple(
        int(x) for x in setuptools.__version__.split(".")[:2]) >= (70, 1)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                           str(tmp_path / "whl"), str(src)]
                          + (["--no-build-isolation"] if offline else []), **run)
    assert proc.returncode == 0, proc.stderr
    (wheel,) = (tmp_path / "whl").glob("csp-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {Path(n).name for n in names if n.startswith("csp/_prototypes/")}
    assert shipped == {p.name for p in (root / "prototypes").iterdir() if p.is_file()}
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                           str(tmp_path / "site"), str(wheel)], **run)
    assert proc.returncode == 0, proc.stderr
    env = {k: v for k, v in os.environ.items() if k != "CSP_PROTOTYPES"}
    env["PYTHONPATH"] = str(tmp_path / "site")
    code = ("import csp.structures.prototypes as p; print(p.library_dir()); "
            "print(len(p.list_prototypes()), p.get_prototype('L1_2').prototype)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, **run)
    assert proc.returncode == 0, proc.stderr
    where, line = proc.stdout.splitlines()
    assert Path(where) == tmp_path / "site" / "csp" / "_prototypes"
    assert line == f"{len(PROTOS)} Cu3Au"
