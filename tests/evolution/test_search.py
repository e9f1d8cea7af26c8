"""The generation loop: determinism, resume, lineage, niching, selection, fitness = hull distance."""

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from csp.evolution import EvolutionSettings, Individual, MemoryLineage, SearchSpace, evolve, niche_select, tournament
from csp.evolution.population import rank
from csp.hull import HullEntry, build_hull
from csp.structures.random_structures import random_structures

ELEMENTS = ("Cu", "Au")


def emt_single_points(structures):
    """A cheap 'relax' for loop tests: EMT energy at the given geometry (no relaxation)."""
    energies = []
    for a in structures:
        b = a.copy()
        b.calc = EMT()
        energies.append(b.get_potential_energy())
    return [a.copy() for a in structures], energies


SETTINGS = EvolutionSettings(population_size=8, generations=3, stall_generations=10,
                             fractions={"heredity": 0.4, "lattice": 0.2, "permutation": 0.2, "transmutation": 0.2})


@pytest.fixture(scope="module")
def seeds():
    return list(random_structures(list(ELEMENTS), 8, 6, seed=2))


@pytest.fixture(scope="module")
def first_run(seeds):
    sink = MemoryLineage()
    res = evolve(seeds, emt_single_points, SearchSpace(ELEMENTS, max_atoms=6), SETTINGS, seed=7, lineage=sink)
    return res, sink


def signature(res):
    return [(i.id, i.operator, i.parents, round(i.energy, 10), i.atoms.get_chemical_formula()) for i in res.individuals]


def test_same_seed_same_search(seeds, first_run):
    again = evolve(seeds, emt_single_points, SearchSpace(ELEMENTS, max_atoms=6), SETTINGS, seed=7)
    assert signature(again) == signature(first_run[0])
    other = evolve(seeds, emt_single_points, SearchSpace(ELEMENTS, max_atoms=6), SETTINGS, seed=8)
    assert signature(other) != signature(first_run[0])


def test_lineage_and_counts(first_run):
    res, sink = first_run
    ids = {i.id for i in res.individuals}
    assert [i.id for i in sink.individuals] == [i.id for i in res.individuals]
    assert [g.generation for g in sink.generations] == [0, 1, 2, 3]
    for ind in res.individuals:
        assert ind.atoms.info["id"] == ind.id
        if ind.generation == 0:
            assert ind.operator.startswith("seed:") and ind.parents == ()
        else:
            assert ind.operator in SETTINGS.fractions
            assert len(ind.parents) == (2 if ind.operator == "heredity" else 1)
            assert set(ind.parents) <= ids       # parents were evaluated earlier
            assert all(int(p.split("-")[0][1:]) < ind.generation for p in ind.parents)
    per_gen = [sum(1 for i in res.individuals if i.generation == g) for g in (1, 2, 3)]
    assert per_gen == [SETTINGS.n_offspring] * 3
    # endpoints were added: both pure elements are in the first generation
    pure = {i.atoms.get_chemical_formula() for i in res.individuals if i.generation == 0 and len(set(i.atoms.numbers)) == 1}
    assert {f.rstrip("0123456789") for f in pure} == {"Cu", "Au"}


def test_fitness_is_distance_above_hull_of_everything(first_run):
    res = first_run[0]
    full = build_hull([HullEntry.from_atoms(i.atoms, id=i.id, energy=i.energy) for i in res.individuals], ELEMENTS)
    for ind in res.individuals:
        assert ind.fitness == pytest.approx(full.row(ind.id).e_above_hull, abs=1e-9)
        assert ind.fitness >= -1e-9
    on_hull = [i for i in res.individuals if i.fitness <= 1e-9]
    assert {r.id for r in res.hull.stable()} <= {i.id for i in on_hull}
    assert rank(res.population)[0].fitness == pytest.approx(0.0, abs=1e-9)


def test_resume_replays_without_relaxing(seeds, first_run):
    res = first_run[0]

    def must_not_relax(structures):
        raise AssertionError("a known individual was relaxed again")

    known = {i.id: i for i in res.individuals}
    replay = evolve(seeds, must_not_relax, SearchSpace(ELEMENTS, max_atoms=6), SETTINGS, seed=7, known=known)
    assert signature(replay) == signature(res)
    # a kill in generation 2: keep generation 0, 1 and half of 2; the rest is relaxed again
    partial = {i.id: i for i in res.individuals if i.generation < 2 or i.id.endswith(("-0", "-1", "-2"))}
    resumed = evolve(seeds, emt_single_points, SearchSpace(ELEMENTS, max_atoms=6), SETTINGS, seed=7, known=partial)
    assert signature(resumed) == signature(res)


def _ind(ident, atoms, energy):
    return Individual(id=ident, atoms=atoms, energy=energy, generation=0, operator="seed")


def test_niching_drops_copies_but_keeps_distinct():
    l12 = bulk("Cu", "fcc", a=3.75, cubic=True)
    l12.symbols[0] = "Au"
    shifted = l12.copy()
    shifted.translate([0.3, 0.1, 0.2])
    shifted.wrap()
    permuted = l12[[3, 1, 0, 2]]
    other = l12.copy()
    other.symbols[1] = "Au"
    other.symbols[0] = "Cu"                       # same composition: Au on a face centre instead of a corner
    rattled = l12.repeat((1, 1, 2))
    rattled.rattle(0.3, seed=2)                   # same formula, very different neighbourhoods
    pop = [_ind("a", l12, -1.0), _ind("b", shifted, -0.99), _ind("c", permuted, -0.98), _ind("d", other, -0.5),
           _ind("e", rattled, -0.4)]
    for p in pop:
        p.fitness = -p.energy_per_atom            # any order: a fittest
        p.fitness = {"a": 0.0, "b": 0.001, "c": 0.002, "d": 0.0005, "e": 0.01}[p.id]
    kept = niche_select(pop, 10)
    ids = [k.id for k in kept]
    # 'other' is the same L1_2 crystal (a relabelled corner): one niche with a, b, c
    assert ids == ["a", "e"]
    assert [k.id for k in niche_select(pop, 1)] == ["a"]


def test_tournament_picks_among_fittest_fraction():
    pop = []
    for k in range(10):
        a = bulk("Cu", "fcc", a=3.6 + 0.01 * k)
        ind = _ind(f"i{k}", a, -k)
        ind.fitness = 0.01 * k
        pop.append(ind)
    g = np.random.default_rng(0)
    picks = [tournament(pop, g, 2, fittest_fraction=0.5, size=2) for _ in range(300)]
    chosen = [p.id for pair in picks for p in pair]
    assert set(chosen) <= {f"i{k}" for k in range(5)}
    assert all(pair[0] is not pair[1] for pair in picks)
    counts = [chosen.count(f"i{k}") for k in range(5)]
    assert counts[0] > counts[4]                   # pressure towards the fittest


def test_fixed_composition_fitness_relative_to_best():
    seeds = list(random_structures(list(ELEMENTS), 6, 8, seed=4, composition=(1, 1)))
    space = SearchSpace(ELEMENTS, max_atoms=8, composition=(1, 1))
    settings = EvolutionSettings(population_size=6, generations=1,
                                 fractions={"heredity": 0.5, "permutation": 0.5, "transmutation": 1.0})
    res = evolve(seeds, emt_single_points, space, settings, seed=1)
    assert res.hull is None
    assert all(i.atoms.get_chemical_formula() in ("AuCu", "Au2Cu2", "Au3Cu3", "Au4Cu4") for i in res.individuals)
    assert all(i.operator != "transmutation" for i in res.individuals)
    best = min(i.energy_per_atom for i in res.individuals)
    assert all(i.fitness == pytest.approx(i.energy_per_atom - best) for i in res.individuals)


def test_failed_and_collapsed_relaxations_are_dropped(seeds):
    def flaky(structures):
        out, energies = emt_single_points(structures)
        energies[0] = float("nan")                      # a failed relaxation
        out[1].positions[1] = out[1].positions[0] + 0.2  # a potential that collapsed two atoms
        return out, energies

    sink = MemoryLineage()
    res = evolve(seeds, flaky, SearchSpace(ELEMENTS, max_atoms=6), SETTINGS, seed=7, lineage=sink)
    assert [g.n_failed_relax for g in sink.generations] == [2, 2, 2, 2]
    ids = {i.id for i in res.individuals}
    assert "g0-0" not in ids and "g0-1" not in ids and "g1-0" not in ids and "g1-1" not in ids
    assert len(res.individuals) == sum(g.n_new for g in sink.generations)
