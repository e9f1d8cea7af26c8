"""Convex hull: hand-computed binary and ternary cases, an independent LP check, `csp hull`."""

from __future__ import annotations

import json

import ase.io
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
from scipy.optimize import linprog

from csp.cli import main
from csp.errors import InputError
from csp.hull import HullEntry, build_hull, read_entries

MU = {"Cu": -3.0, "Au": -2.0, "Pd": -4.0, "Ag": -2.5}  # elemental reference energies, eV/atom


def entry(id, counts: dict, ef: float) -> HullEntry:
    """Entry with formation energy `ef` (eV/atom) relative to MU."""
    n = sum(counts.values())
    e = ef * n + sum(c * MU[el] for el, c in counts.items())
    return HullEntry(id=id, composition={k: float(v) for k, v in counts.items()}, energy=e)


def binary_set():
    return [
        entry("Cu-fcc", {"Cu": 1}, 0.0), entry("Cu-bcc", {"Cu": 1}, 0.1),      # element with two structures
        entry("Au", {"Au": 1}, 0.0),
        entry("CuAu-a", {"Cu": 1, "Au": 1}, -0.2), entry("CuAu-b", {"Cu": 2, "Au": 2}, -0.15),  # two polymorphs
        entry("Cu3Au", {"Cu": 3, "Au": 1}, -0.15),
        entry("CuAu3", {"Cu": 1, "Au": 3}, -0.1),                               # exactly on the CuAu-Au tie line
        entry("Cu2Au", {"Cu": 2, "Au": 1}, -0.1),
        entry("CuAu-c", {"Cu": 1, "Au": 1}, -0.2 + 0.0005),                     # 0.5 meV/atom above
        entry("CuAu-d", {"Cu": 1, "Au": 1}, -0.2 + 0.0015),                     # 1.5 meV/atom above
    ]


def test_binary_hand_computed():
    hull = build_hull(binary_set(), elements=["Cu", "Au"])
    r = {row.id: row for row in hull.rows}
    assert [x.id for x in hull.stable()] == ["Cu-fcc", "Cu3Au", "CuAu-a", "Au"]
    assert hull.references == {"Cu": "Cu-fcc", "Au": "Au"}
    for id, ef in [("Cu-bcc", 0.1), ("CuAu-a", -0.2), ("Cu3Au", -0.15), ("CuAu3", -0.1), ("Cu2Au", -0.1)]:
        assert r[id].formation_energy_per_atom == pytest.approx(ef, abs=1e-12)
    assert r["Cu-bcc"].e_above_hull == pytest.approx(0.1, abs=1e-12)
    assert r["Cu-bcc"].decomposition == pytest.approx({"Cu-fcc": 1.0})
    assert r["CuAu-b"].e_above_hull == pytest.approx(0.05, abs=1e-12)
    assert r["CuAu-b"].decomposition == pytest.approx({"CuAu-a": 1.0})
    # Cu2Au (x_Au = 1/3) between Cu3Au (1/4, -0.15) and CuAu (1/2, -0.2): hull -0.15 - 0.2/12
    assert r["Cu2Au"].e_above_hull == pytest.approx(-0.1 + 0.15 + 0.2 / 12, abs=1e-12)
    assert r["Cu2Au"].decomposition == pytest.approx({"Cu3Au": 2 / 3, "CuAu-a": 1 / 3})
    # exactly on the hull but not a vertex: zero distance, near hull, not a hull phase
    assert abs(r["CuAu3"].e_above_hull) < 1e-12 and r["CuAu3"].near_hull and not r["CuAu3"].stable
    assert r["CuAu3"].decomposition == pytest.approx({"CuAu-a": 0.5, "Au": 0.5})
    assert r["CuAu-c"].near_hull and not r["CuAu-c"].stable
    assert r["CuAu-c"].e_above_hull == pytest.approx(0.0005, abs=1e-12)
    assert not r["CuAu-d"].near_hull
    assert r["Cu3Au"].composition == {"Cu": 0.75, "Au": 0.25} and r["Cu3Au"].formula == "Cu3Au"
    assert hull.hull_energy({"Cu": 2, "Au": 1}) == pytest.approx(-0.15 - 0.2 / 12, abs=1e-12)
    # a looser tolerance flags more structures
    loose = build_hull(binary_set(), elements=["Cu", "Au"], tolerance=0.002)
    assert {x.id for x in loose.near_hull()} == {x.id for x in hull.near_hull()} | {"CuAu-d"}


def test_ternary_hand_computed():
    entries = [entry("Cu", {"Cu": 1}, 0), entry("Au", {"Au": 1}, 0), entry("Pd", {"Pd": 1}, 0),
               entry("Pd-hcp", {"Pd": 2}, 0.02),
               entry("CuAu", {"Cu": 1, "Au": 1}, -0.2), entry("CuPd", {"Cu": 1, "Pd": 1}, -0.1),
               entry("AuPd", {"Au": 1, "Pd": 1}, -0.05),
               entry("CuAuPd", {"Cu": 1, "Au": 1, "Pd": 1}, -0.1),
               entry("Cu2AuPd", {"Cu": 2, "Au": 1, "Pd": 1}, -0.3)]
    hull = build_hull(entries)
    assert hull.elements == ["Cu", "Pd", "Au"]  # by atomic number
    r = {row.id: row for row in hull.rows}
    assert {x.id for x in hull.stable()} == {"Cu", "Au", "Pd", "CuAu", "CuPd", "AuPd", "Cu2AuPd"}
    assert r["Pd-hcp"].e_above_hull == pytest.approx(0.02, abs=1e-12)
    # CuAuPd at (⅓,⅓,⅓): ⅔ CuAu + ⅓ Pd gives -0.133, ⅔ Cu2AuPd + ⅙ Au + ⅙ Pd gives -0.2, and
    # ⅔ Cu2AuPd (½,¼,¼) + ⅓ AuPd (0,½,½) gives -0.2 - 0.05/3, the lowest (checked by LP below)
    assert r["CuAuPd"].e_above_hull == pytest.approx(-0.1 + 0.2 + 0.05 / 3, abs=1e-12)
    assert r["CuAuPd"].decomposition == pytest.approx({"Cu2AuPd": 2 / 3, "AuPd": 1 / 3})
    x = np.array([[row.composition[el] for el in hull.elements] for row in hull.rows])
    ef = np.array([row.formation_energy_per_atom for row in hull.rows])
    assert _lp_hull(x, ef, np.array([1 / 3, 1 / 3, 1 / 3])) == pytest.approx(-0.2 - 0.05 / 3, abs=1e-9)


def _lp_hull(points: np.ndarray, ef: np.ndarray, x: np.ndarray) -> float:
    """Lowest convex combination of (points, ef) at composition x (independent of pymatgen)."""
    a_eq = np.vstack([points.T, np.ones(len(points))])
    res = linprog(ef, A_eq=a_eq, b_eq=np.append(x, 1.0), bounds=(0, None), method="highs")
    assert res.success
    return res.fun


@pytest.mark.parametrize("elements", [["Cu", "Au"], ["Cu", "Au", "Pd"], ["Cu", "Au", "Pd", "Ag"]])
def test_random_sets_agree_with_linear_programming(elements):
    rng = np.random.default_rng(11)
    entries = [entry(f"{el}{k}", {el: 1 + k}, rng.uniform(0, 0.05) * k) for el in elements for k in range(2)]
    for i in range(60):
        counts = {el: int(n) for el, n in zip(elements, rng.integers(0, 5, len(elements))) if n}
        if len(counts) < 2:
            continue
        entries.append(entry(f"c{i}", counts, rng.uniform(-0.3, 0.1)))
    hull = build_hull(entries, elements=elements)
    x = np.array([[row.composition[el] for el in elements] for row in hull.rows])
    ef = np.array([row.formation_energy_per_atom for row in hull.rows])
    for e, row, xi in zip(entries, hull.rows, x):
        ref_ef = e.energy_per_atom - sum(e.composition.get(el, 0) / e.natoms * MU[el] for el in elements)
        assert row.formation_energy_per_atom == pytest.approx(ref_ef, abs=1e-10)
        assert row.e_above_hull == pytest.approx(row.formation_energy_per_atom - _lp_hull(x, ef, xi), abs=1e-8)
        assert row.e_above_hull >= -1e-10 and (row.e_above_hull <= 0.001 + 1e-12) == row.near_hull
        pd_entry = [p for p in hull.phase_diagram.all_entries if p.name == row.id][0]
        assert row.e_above_hull == pytest.approx(hull.phase_diagram.get_e_above_hull(pd_entry), abs=1e-9)
        mix = sum(f * hull.row(i).formation_energy_per_atom for i, f in row.decomposition.items())
        assert mix == pytest.approx(row.formation_energy_per_atom - row.e_above_hull, abs=1e-9)


def test_errors():
    with pytest.raises(InputError, match="no elemental reference for Au"):
        build_hull([entry("Cu", {"Cu": 1}, 0), entry("CuAu", {"Cu": 1, "Au": 1}, -0.1)])
    with pytest.raises(InputError, match="structure CuAu contains Au"):
        build_hull([entry("Cu", {"Cu": 1}, 0), entry("CuAu", {"Cu": 1, "Au": 1}, -0.1)], elements=["Cu"])
    with pytest.raises(InputError, match="no structures"):
        build_hull([])
    with pytest.raises(InputError, match="structure id Cu is used twice"):
        build_hull([entry("Cu", {"Cu": 1}, 0), entry("Cu", {"Cu": 2}, 0.1)])


def _frames():
    frames = []
    for id, counts, ef in [("cu", {"Cu": 4}, 0.0), ("au", {"Au": 4}, 0.0), ("l10", {"Cu": 2, "Au": 2}, -0.08),
                           ("l12", {"Cu": 3, "Au": 1}, -0.05), ("b2", {"Cu": 2, "Au": 2}, -0.03)]:
        symbols = [el for el, n in counts.items() for _ in range(n)]
        a = bulk("Cu", "fcc", a=3.8, cubic=True)
        a.set_chemical_symbols(symbols)
        e = entry(id, counts, ef).energy
        a.calc = SinglePointCalculator(a, energy=e, forces=np.zeros((4, 3)))
        a.info["id"] = id
        frames.append(a)
    return frames


def test_csp_hull_command(tmp_path, capsys):
    path = tmp_path / "set.extxyz"
    ase.io.write(path, _frames(), format="extxyz")
    assert [e.id for e in read_entries(path)] == ["cu", "au", "l10", "l12", "b2"]
    assert main(["hull", str(path), "--json", str(tmp_path / "h.json")]) == 0
    out = capsys.readouterr().out
    line = {l.split()[0]: l for l in out.splitlines() if l.strip() and l.split()[0] in {"l10", "l12", "b2"}}
    assert "stable" in line["l10"] and "-80.00" in line["l10"]
    assert "stable" in line["l12"] and "-50.00" in line["l12"]    # -0.05 < -0.04 on the Cu–L1_0 line
    assert "50.00" in line["b2"].split()[5] and "1.000 l10" in line["b2"]
    assert "3 on the hull" not in out and "4 on the hull" in out
    doc = json.loads((tmp_path / "h.json").read_text())
    assert {r["id"]: r["stable"] for r in doc["rows"]} == {"cu": True, "au": True, "l10": True, "l12": True, "b2": False}


def test_csp_hull_bad_input(tmp_path, capsys):
    frames = _frames()
    frames[2].calc = None
    path = tmp_path / "noenergy.extxyz"
    ase.io.write(path, frames, format="extxyz")
    assert main(["hull", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "structure 2 (id l10) has no energy" in err
    assert main(["hull", str(tmp_path / "missing.extxyz")]) == 2
    (tmp_path / "junk.extxyz").write_text("not a structure file\n")
    assert main(["hull", str(tmp_path / "junk.extxyz")]) == 2
    assert main(["hull", str(path), "--tolerance", "-1"]) == 2
