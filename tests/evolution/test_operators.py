"""Variation operators: composition, volume, distances, lineage, soft modes (EMT Hessians)."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.data import covalent_radii
from ase.neighborlist import neighbor_list

from csp.evolution import (Heredity, LatticeMutation, Permutation, RandomFresh, SearchSpace, SoftMutation,
                           Transmutation, repair_counts)
from csp.evolution.softmode import curvature, hessian, soft_modes, translation_basis
from csp.relax import relax_structures

ELEMENTS = ("Cu", "Au")


def rng(seed=0):
    return np.random.default_rng(seed)

TRIALS = 40


def assert_no_close_contacts(atoms: Atoms, factor: float = 0.75) -> None:
    """Independent check with ASE's neighbour list: every pair (and self-image) ≥ factor·(r_i + r_j)."""
    r = covalent_radii[atoms.numbers]
    i, j, d = neighbor_list("ijd", atoms, 2 * factor * r.max() + 0.01, self_interaction=False)
    assert np.all(d >= factor * (r[i] + r[j]) - 1e-9), f"close contact {d.min():.3f} Å in {atoms}"


def counts(atoms):
    s = atoms.get_chemical_symbols()
    return tuple(s.count(e) for e in ELEMENTS)


def test_heredity_conserves_requested_composition(cu3au_parents):
    space = SearchSpace(ELEMENTS, max_atoms=8, composition=(3, 1))
    op = Heredity(space)
    g = rng(1)
    made = 0
    for t in range(TRIALS):
        a, b = (cu3au_parents[k] for k in g.choice(len(cu3au_parents), 2, replace=False))
        child = op([a, b], g)
        if child is None:
            continue
        made += 1
        c = counts(child)
        assert c in ((3, 1), (6, 2)), c
        assert child.info["operator"] == "heredity" and child.info["parents"] == [a.info["id"], b.info["id"]]
        assert_no_close_contacts(child)
    assert made >= TRIALS // 2


def test_heredity_reaches_target_counts_in_variable_space(parents, variable_space):
    op = Heredity(variable_space, target=(2, 2))
    g = rng(2)
    children = [op([parents[2 * k % 16], parents[(2 * k + 5) % 16]], g) for k in range(20)]
    ok = [c for c in children if c is not None]
    assert len(ok) >= 10
    assert all(counts(c) == (2, 2) for c in ok)


def test_heredity_variable_composition_stays_in_space(parents):
    space = SearchSpace(ELEMENTS, max_atoms=6, fraction_range={"Au": (0.2, 0.6)})
    op = Heredity(space)
    g = rng(3)
    made = 0
    for k in range(TRIALS):
        a, b = (parents[i] for i in g.choice(len(parents), 2, replace=False))
        child = op([a, b], g)
        if child is not None:
            made += 1
            c = counts(child)
            assert 1 <= sum(c) <= 6 and 0.2 <= c[1] / sum(c) <= 0.6
            assert space.valid(child)
    assert made >= TRIALS // 2, f"heredity produced only {made} of {TRIALS} children"


def test_lattice_mutation_keeps_volume_within_bounds(parents):
    space = SearchSpace(ELEMENTS, max_atoms=8, volume_range=(0.9, 1.1))
    op = LatticeMutation(space, strain=0.2)
    g = rng(4)
    made = 0
    for k in range(TRIALS):
        p = parents[k % len(parents)].copy()
        p.info["id"] = "x"
        p.set_cell(p.cell.array * g.uniform(0.8, 1.3), scale_atoms=True)   # parents may lie outside
        child = op([p], g)
        if child is None:
            continue
        made += 1
        lo, hi = space.volume_bounds(space.counts(child))
        assert lo * (1 - 1e-9) <= child.get_volume() <= hi * (1 + 1e-9)
        assert counts(child) == counts(p)
        assert not np.allclose(child.cell.cellpar()[3:], p.cell.cellpar()[3:], atol=1e-3)  # the cell did change
        assert_no_close_contacts(child)
    assert made >= TRIALS // 2


def test_permutation_conserves_composition(parents, variable_space):
    op = Permutation(variable_space)
    g = rng(5)
    binary = [p for p in parents if len(set(p.get_chemical_symbols())) == 2]
    for k in range(TRIALS):
        p = binary[k % len(binary)]
        child = op([p], g)
        if child is None:
            continue
        assert counts(child) == counts(p)
        assert child.get_chemical_symbols() != p.get_chemical_symbols()
        assert np.allclose(child.positions, p.positions)
        assert_no_close_contacts(child)
    pure = Atoms("Cu4", cell=bulk("Cu", cubic=True).cell, scaled_positions=bulk("Cu", cubic=True).get_scaled_positions(), pbc=True)
    assert op([pure], g) is None   # nothing to swap


def test_transmutation_moves_one_atom_in_composition(parents, variable_space):
    op = Transmutation(variable_space)
    g = rng(6)
    for k in range(TRIALS):
        p = parents[k % len(parents)]
        child = op([p], g)
        assert child is not None
        diff = np.array(counts(child)) - np.array(counts(p))
        assert sorted(diff) == [-1, 1]
        assert_no_close_contacts(child)
    fixed = SearchSpace(ELEMENTS, max_atoms=8, composition=(1, 1))
    assert Transmutation(fixed)([parents[0]], g) is None


def test_no_operator_returns_close_contacts(parents, variable_space, emt_evaluator):
    ops = [Heredity(variable_space), LatticeMutation(variable_space, strain=0.3), Permutation(variable_space),
           Transmutation(variable_space), SoftMutation(variable_space, emt_evaluator, amplitude=(0.8, 1.5)),
           RandomFresh(variable_space)]
    # a tight space: large minimum distance so that operators must reject many tries
    tight = SearchSpace(ELEMENTS, max_atoms=8, distance_factor=0.95, volume_range=(0.7, 1.0))
    ops += [Heredity(tight, max_tries=10), LatticeMutation(tight, strain=0.3, max_tries=10),
            Permutation(tight, max_tries=10), Transmutation(tight, max_tries=10)]
    g = rng(7)
    produced = {}
    for op in ops:
        for k in range(20 if op.name != "softmode" else 4):
            chosen = [parents[i] for i in g.choice(len(parents), op.n_parents, replace=False)]
            child = op(chosen, g)
            if child is not None:
                produced[op.name] = produced.get(op.name, 0) + 1
                assert_no_close_contacts(child, op.space.distance_factor)
                assert op.space.valid(child)
    assert set(produced) == {"heredity", "lattice", "permutation", "transmutation", "softmode", "random"}


def test_operator_gives_up_with_none_when_impossible(variable_space):
    space = SearchSpace(ELEMENTS, max_atoms=8, distance_factor=1.4, volume_range=(0.3, 0.35))
    a = bulk("Cu", "fcc", a=3.6, cubic=True)
    a.symbols[0] = "Au"
    a.info["id"] = "dense"
    assert LatticeMutation(space, max_tries=5)([a], rng(8)) is None
    assert Heredity(space, max_tries=5)([a, a], rng(8)) is None


def test_repair_counts_exact_target(parents, variable_space):
    g = rng(9)
    for p in parents[:8]:
        out = repair_counts(variable_space, p, g, target=(3, 3))
        if len(p) >= 6:                 # transmutation and deletion only: cannot fail
            assert out is not None, p.get_chemical_formula()
        if out is not None:
            assert counts(out) == (3, 3)
            assert_no_close_contacts(out)
    assert sum(len(p) >= 6 for p in parents[:8]) >= 4   # the loop above checked real results


def _positions_match(a: Atoms, b: Atoms) -> bool:
    """Every atom of `a` sits on an atom of `b` with the same symbol (same cell)."""
    d = a.get_scaled_positions()[:, None, :] - b.get_scaled_positions()[None, :, :]
    d -= np.rint(d)
    dist = np.linalg.norm(d @ a.cell.array, axis=2)
    sym_a, sym_b = np.array(a.get_chemical_symbols()), np.array(b.get_chemical_symbols())
    return all(np.any((dist[i] < 1e-6) & (sym_b == sym_a[i])) for i in range(len(a)))


def test_repair_counts_transmutes_deletes_and_inserts_exactly(variable_space):
    fcc = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))      # 8 sites
    # transmutation only: Cu2Au4 -> Cu3Au3, one Au becomes Cu, geometry untouched
    a = fcc.copy()
    a.set_chemical_symbols(["Cu", "Cu", "Au", "Au", "Au", "Au"] + ["Cu", "Cu"])
    a = a[:6]
    out = repair_counts(variable_space, a, rng(1), target=(3, 3))
    assert counts(out) == (3, 3) and len(out) == 6
    assert np.allclose(out.positions, a.positions) and np.allclose(out.cell, a.cell)
    changed = [(x, y) for x, y in zip(a.get_chemical_symbols(), out.get_chemical_symbols()) if x != y]
    assert changed == [("Au", "Cu")]
    # deletion: Cu4Au4 -> Cu3Au3, the survivors keep their sites and species
    b = fcc.copy()
    b.set_chemical_symbols(["Cu", "Au"] * 4)
    out = repair_counts(variable_space, b, rng(2), target=(3, 3))
    assert counts(out) == (3, 3) and np.allclose(out.cell, b.cell) and _positions_match(out, b)
    # insertion: Cu1Au1 in a roomy 8-site cell (a = 4.5 Å) -> Cu3Au3; same cell volume, the
    # two originals stay (reduced cell: compare distances), no close contacts
    c = bulk("Cu", "fcc", a=4.5, cubic=True).repeat((2, 1, 1))[:2]
    c.set_chemical_symbols(["Cu", "Au"])
    out = repair_counts(variable_space, c, rng(3), target=(3, 3))
    assert out is not None and counts(out) == (3, 3)
    assert abs(out.get_volume() - c.get_volume()) < 1e-9
    assert out.get_chemical_symbols()[:2] == ["Cu", "Au"]
    assert abs(out.get_distance(0, 1, mic=True) - c.get_distance(0, 1, mic=True)) < 1e-9
    assert_no_close_contacts(out)
    # without insertions the target is always reached, whatever the random choices
    for start in (a, b):
        for seed in range(5):
            res = repair_counts(variable_space, start, rng(seed), target=(2, 4))
            assert res is not None and counts(res) == (2, 4)


@pytest.fixture(scope="module")
def relaxed_cu3au(emt_evaluator):
    a = bulk("Cu", "fcc", a=3.7, cubic=True)
    a.symbols[0] = "Au"
    a = a.repeat((1, 1, 2))
    a.rattle(0.05, seed=1)
    (out,), res = relax_structures(emt_evaluator, [a], ELEMENTS, fmax=1e-3, max_steps=400, optimizer="bfgs")
    out.info["id"] = "cu3au"
    return out


def test_hessian_matches_emt_second_derivatives(relaxed_cu3au, emt_evaluator):
    h = hessian(relaxed_cu3au, emt_evaluator, ELEMENTS)
    assert np.allclose(h, h.T)
    t = translation_basis(len(relaxed_cu3au))
    assert np.abs(h @ t).max() < 1e-3     # acoustic sum rule: rigid translations cost nothing
    w, v = soft_modes(h)
    assert len(w) == 3 * len(relaxed_cu3au) - 3 and np.all(np.diff(w) >= -1e-12)
    calc = EMT()

    def energy(x):
        b = relaxed_cu3au.copy()
        b.positions = relaxed_cu3au.positions + x.reshape(-1, 3)
        b.calc = calc
        return b.get_potential_energy()

    step = 0.01
    for k in (0, len(w) // 2, len(w) - 1):
        d2 = (energy(step * v[k]) - 2 * energy(0 * v[k]) + energy(-step * v[k])) / step**2
        assert d2 == pytest.approx(w[k], rel=0.02, abs=0.02)


def test_softmode_displacement_is_low_curvature(relaxed_cu3au, emt_evaluator, variable_space):
    op = SoftMutation(variable_space, emt_evaluator, n_modes=1, amplitude=(0.2, 0.3))
    h = hessian(relaxed_cu3au, emt_evaluator, ELEMENTS)
    w, _ = soft_modes(h)
    g = rng(10)
    child = op([relaxed_cu3au], g)
    assert child is not None and child.info["operator"] == "softmode"
    d = (child.positions - relaxed_cu3au.positions).ravel()
    t = translation_basis(len(child))
    assert np.abs(t.T @ d).max() < 1e-9            # no rigid translation
    soft = curvature(h, d)
    assert soft == pytest.approx(w[0], rel=1e-6, abs=1e-8)
    assert soft == pytest.approx(child.info["soft_mode_curvature"], rel=1e-9)
    random_dirs = g.normal(size=(200, d.size))
    random_dirs -= (random_dirs @ t) @ t.T
    random_curv = np.array([curvature(h, r) for r in random_dirs])
    assert soft < 0.5 * np.median(random_curv)
    assert soft <= random_curv.min()
