"""Deduplication: invariant keys, rounding-boundary safety, copies merged, different kept."""

import numpy as np
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.filters import FrechetCellFilter
from ase.optimize import BFGS

import csp.structures.dedup as dedup_mod
from csp.structures.dedup import Deduplicator, deduplicate, fingerprint, reduced_formula
from csp.structures.enumerate import enumerate_structures


def _l12(a=3.75):
    atoms = bulk("Cu", "fcc", a=a, cubic=True)
    atoms.symbols[0] = "Au"
    return atoms


def _disguise(atoms, rng, noise=0.01, supercell=(1, 1, 1), scale=1.0):
    """The same crystal: supercell, rotated, translated, atoms shuffled, rescaled, rattled."""
    b = atoms.repeat(supercell)
    b.rotate(rng.uniform(0, 360), rng.normal(size=3), rotate_cell=True)
    b.translate(rng.normal(size=3))
    b = b[rng.permutation(len(b))]
    b.set_cell(b.cell * scale, scale_atoms=True)
    b.positions += rng.normal(0.0, noise, b.positions.shape)
    return b


def _rocksalt():
    return bulk("NaCl", "rocksalt", a=5.64)


def _wurtzite():
    return bulk("ZnO", "wurtzite", a=3.25, c=5.2)


def _low_symmetry():
    rng = np.random.default_rng(3)
    from ase import Atoms

    cell = np.array([[4.1, 0.2, 0.1], [0.5, 4.6, 0.3], [0.2, 0.7, 5.3]])
    return Atoms("Cu2PdAg", scaled_positions=rng.random((4, 3)), cell=cell, pbc=True)


def test_fingerprint_invariances():
    rng = np.random.default_rng(0)
    for atoms in (_l12(), _rocksalt(), _wurtzite(), _low_symmetry()):
        ref = fingerprint(atoms)
        copy = _disguise(atoms, rng, noise=0.0, supercell=(2, 1, 3), scale=1.2)
        assert np.allclose(fingerprint(copy), ref, atol=1e-9)
    assert reduced_formula(_l12().repeat(2).numbers) == ((29, 3), (79, 1))


def test_copies_merged_and_different_structures_kept():
    rng = np.random.default_rng(1)
    originals = [_l12(), _rocksalt(), _wurtzite(), _low_symmetry(), bulk("Mg"),
                 bulk("Cu", "fcc", a=3.6), bulk("Fe", "bcc", a=2.87)]
    pool = list(originals)
    expected = list(range(len(originals)))
    for k, atoms in enumerate(originals):
        for sc in [(1, 1, 1), (2, 1, 1), (1, 2, 2)]:
            pool.append(_disguise(atoms, rng, noise=0.01, supercell=sc,
                                  scale=rng.uniform(0.9, 1.1)))
            expected.append(k)
    groups = deduplicate(pool)
    assert len(groups) == len(originals)
    got = np.empty(len(pool), dtype=int)
    for g, members in enumerate(groups):
        got[members] = g
    assert got.tolist() == expected


def test_genuinely_different_structures_kept():
    l10 = bulk("Cu", "fcc", a=3.8, cubic=True)
    l10.symbols[[0, 1]] = "Au"  # CuAu L1_0 (layers along z)
    l11_family = [a for a in enumerate_structures("fcc", "Cu,Au", 2)
                  if a.get_chemical_formula() == "AuCu"]  # L1_0 and L1_1 (CuPt type)
    fcc = bulk("Cu", "fcc", a=3.6)
    hcp = bulk("Cu", "hcp", a=2.55)
    bcc = bulk("Cu", "bcc", a=2.87)
    b1 = _rocksalt()
    b2 = bulk("NaCl", "cesiumchloride", a=3.4)
    pool = [fcc, hcp, bcc, b1, b2, *l11_family]
    assert len(l11_family) == 2
    groups = deduplicate(pool)
    assert len(groups) == len(pool)
    # and L1_0 built another way is recognised as the enumerated one
    d = Deduplicator()
    ids = [d.add(a) for a in pool]
    assert d.add(l10) in ids[-2:]


def test_rounding_boundary_does_not_split_copies(monkeypatch):
    # put the first hashed fingerprint component exactly on a grid boundary: rattled copies
    # fall on both sides of it and must still be found.
    atoms = _low_symmetry()
    monkeypatch.setattr(dedup_mod, "_HASH_STEP", float(fingerprint(atoms)[0]))
    rng = np.random.default_rng(5)
    copies = [_disguise(atoms, rng, noise=0.003) for _ in range(12)]
    sides = {int(np.floor(fingerprint(c)[0] / dedup_mod._HASH_STEP)) for c in copies}
    assert len(sides) == 2  # the copies really straddle the boundary
    d = Deduplicator()
    assert d.add(atoms) == 0
    assert all(d.add(c) == 0 for c in copies)
    assert len(d) == 1


def test_relaxed_structures_from_different_cells_are_one():
    # L1_2 Cu3Au relaxed with EMT from two different starting cells (cubic cell, a = 3.95,
    # rattled; rotated 2x1x1 supercell, a = 3.6, rattled differently) reaches one minimum;
    # D0_22 (another Cu3Au superstructure) relaxes to a different one.
    rng = np.random.default_rng(11)

    def relax(atoms):
        atoms.calc = EMT()
        BFGS(FrechetCellFilter(atoms), logfile=None).run(fmax=0.005, steps=400)
        atoms.calc = None
        return atoms

    start1 = _l12(a=3.95)
    start1.rattle(0.03, seed=1)
    start2 = _disguise(_l12(a=3.6), rng, noise=0.03, supercell=(2, 1, 1))
    d022 = [a for a in enumerate_structures("fcc", "Cu,Au", 4, min_atoms=4,
                                           concentrations={"Au": 0.25})]
    relaxed = [relax(start1), relax(start2)] + [relax(a) for a in d022]
    groups = deduplicate(relaxed)
    # the two L1_2 relaxations are one structure, joined by the enumerated L1_2; every other
    # enumerated Cu3Au ordering stays on its own
    assert groups[0][:2] == [0, 1] and len(groups[0]) == 3
    assert len(groups) == len(d022) and all(len(g) == 1 for g in groups[1:])


def test_incremental_api_and_representatives():
    d = Deduplicator()
    rng = np.random.default_rng(2)
    a, b = _rocksalt(), _wurtzite()
    assert d.add(a) == 0 and d.add(b) == 1 and len(d) == 2
    assert d.add(_disguise(a, rng, supercell=(2, 2, 1))) == 0
    assert d.find(_disguise(b, rng)) == 1 and d.find(bulk("Cu")) is None
    assert len(d) == 2
    assert d.representative(1).get_chemical_formula() == b.get_chemical_formula()


def test_cli_dedup(tmp_path, capsys):
    import ase.io

    from csp.cli import main

    rng = np.random.default_rng(4)
    pool = [_rocksalt(), _disguise(_rocksalt(), rng, supercell=(1, 2, 1)), _wurtzite(),
            _disguise(_wurtzite(), rng), bulk("Cu", "fcc", a=3.6)]
    src = tmp_path / "pool.extxyz"
    ase.io.write(src, pool)
    out = tmp_path / "distinct.extxyz"
    assert main(["dedup", str(src), "-o", str(out)]) == 0
    kept = ase.io.read(out, ":")
    assert [a.get_chemical_formula() for a in kept] == ["ClNa", "O2Zn2", "Cu"]
    assert [a.info["duplicates"] for a in kept] == [1, 1, 0]
    assert main(["dedup", str(tmp_path / "missing.extxyz"), "-o", str(out)]) == 2
    assert main(["dedup", str(src), "-o", str(out), "--symprec", "-1"]) == 2
    err = capsys.readouterr().err
    assert "csp: error:" in err


# ---- regressions found by bench/dedup_speed.py (docs/benchmarks.md, "Deduplication") ----

def _enumerated(lattice, elements, n, hnf, labeling):
    return next(a for a in enumerate_structures(lattice, elements, n, min_atoms=n)
                if tuple(a.info["hnf"]) == hnf and a.info["labeling"] == labeling)


def _bench_copy(atoms, rng):
    """bench/dedup_speed.py's disguise of a > 4-atom cell: rotation, translation, shuffle,
    ±5 % volume, 0.005 Å rattle."""
    return _disguise(atoms, rng, noise=0.005, scale=rng.uniform(0.95, 1.05) ** (1 / 3))


def test_long_bcc_stackings_up_to_12_atoms_all_distinct():
    # every bcc Cu-Pd derivative structure up to 12 atoms is distinct by construction; with
    # pymatgen's default ltol = 0.2 seven pairs of long 1-D stackings (HNF (1,0,1,8,8,12) and
    # (1,0,1,4,4,12)) were merged: a ~17 % anisotropic strain maps one decoration onto the other
    pool = list(enumerate_structures("bcc", "Cu,Pd", 12))
    assert len(pool) == 10850
    groups = deduplicate(pool)
    assert len(groups) == len(pool)


def test_copies_that_lose_symmetry_find_their_original_past_a_fingerprint_twin():
    # a 0.005 Å-rattled copy of this 12-atom fcc C2/m cell often comes out P-1 at symprec 0.1;
    # the (1,0,2,0,0,6) structure with the same labelling is a different structure (C2) whose
    # fingerprint equals the original's, so "try the nearest other space group" could pick it
    # and never reach the original
    original = _enumerated("fcc", "Cu,Pd", 12, (1, 0, 1, 0, 6, 12), "aababbaabbab")
    twin = _enumerated("fcc", "Cu,Pd", 12, (1, 0, 2, 0, 0, 6), "aababbaabbab")
    assert np.allclose(fingerprint(twin), fingerprint(original))
    rng = np.random.default_rng(0)
    copies = []
    while len(copies) < 3:
        c = _bench_copy(original, rng)
        if dedup_mod._symmetry(c, 0.1).key != dedup_mod._symmetry(original, 0.1).key:
            copies.append(c)
    for first in ([twin, original], [original, twin]):
        d = Deduplicator()
        ids = [d.add(a) for a in first]
        assert ids == [0, 1]
        assert [d.add(c) for c in copies] == [ids[first.index(original)]] * 3
        # and the other way round: copies stored first, the original arrives later
        d = Deduplicator()
        assert [d.add(a) for a in [twin, *copies]] == [0, 1, 1, 1]
        assert d.add(original) == 1


def test_copies_whose_fingerprints_differ_by_more_than_fp_tol_are_merged():
    # the single Cu of CuPd11 (and the single Pd of hcp Ag2Cu3Pd) averages nothing: two
    # rattled copies' far-shell counts can differ by more than fp_tol
    for spec in [("fcc", "Cu,Pd", 12, (1, 0, 1, 0, 11, 12), "abbbbbbbbbbb"),
                 ("hcp", "Cu,Pd,Ag", 6, (1, 0, 1, 0, 0, 3), "aaccab")]:
        original = _enumerated(*spec)
        rng = np.random.default_rng(1)
        copies = [_bench_copy(original, rng) for _ in range(150)]
        fps = np.array([fingerprint(c) for c in copies])
        far = np.max(np.abs(fps[:, None] - fps[None]), axis=2)
        i, j = np.unravel_index(np.argmax(far), far.shape)
        assert far[i, j] > Deduplicator().fp_tol
        d = Deduplicator()
        assert d.add(copies[i]) == 0 and d.add(copies[j]) == 0 and d.add(original) == 0
