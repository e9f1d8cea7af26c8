"""The generation loop of the evolutionary variable-composition search.

`evolve` takes the first generation from given seeds (random symmetric structures,
prototypes, enumerated cells…), then, generation after generation, makes offspring with the
variation operators (chosen by `fractions`, parents by tournament among the fittest), relaxes
them all with ONE call of the injected batched `relax` function, recomputes every fitness
against the convex hull of all structures evaluated so far, and keeps the next population
(elitism + niching). It stops after `generations` generations or when the hull has not moved
down by more than `hull_tol` eV/atom for `stall_generations` generations.

Determinism and resume: generation g draws its random numbers from
``default_rng([seed, g])`` only, and offspring ids are ``g{g}-{k}``; given the same seeds,
relax function and seed, the search is identical. Passing the already evaluated individuals
as `known` (e.g. read back from a campaign store after a kill) replays the search without
relaxing them again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Protocol, Sequence

import numpy as np
from ase import Atoms
from pymatgen.core import Composition

from csp.evolution.operators import (Heredity, LatticeMutation, Operator, Permutation, RandomFresh,
                                     SoftMutation, Transmutation)
from csp.evolution.population import (Individual, assign_fitness, hull_of, niche_select, rank,
                                      tournament)
from csp.evolution.space import SearchSpace, min_distance_ratio, reduced_copy
from csp.hull import Hull
from csp.relax import Evaluator
from csp.validate import setting

# list of structures -> (relaxed structures, total energies eV; NaN/None for a failed relaxation)
RelaxFn = Callable[[list[Atoms]], tuple[Sequence[Atoms], Sequence[float | None]]]

DEFAULT_FRACTIONS = {"heredity": 0.3, "softmode": 0.25, "lattice": 0.15, "permutation": 0.1,
                     "transmutation": 0.1, "random": 0.1}
OPERATOR_NAMES = tuple(DEFAULT_FRACTIONS)
COLLAPSE_FACTOR = 0.5   # a relaxed structure with d_ij < 0.5 (r_i + r_j) counts as a failed relaxation


class LineageSink(Protocol):
    """Where evaluated individuals and per-generation statistics go (e.g. the campaign store)."""

    def add(self, individual: Individual) -> None: ...

    def generation_done(self, stats: "GenerationStats") -> None: ...


@dataclass
class MemoryLineage:
    """A LineageSink that keeps everything in lists."""

    individuals: list[Individual] = field(default_factory=list)
    generations: list["GenerationStats"] = field(default_factory=list)

    def add(self, individual: Individual) -> None:
        self.individuals.append(individual)

    def generation_done(self, stats: "GenerationStats") -> None:
        self.generations.append(stats)


@dataclass(frozen=True)
class EvolutionSettings:
    """Parameters of the search (the `candidates: evolution:` section). fractions: operator name ->
    share of the offspring (normalised; names in OPERATOR_NAMES). Energies/tolerances eV/atom."""

    population_size: int = setting(20, lo=2, hi=100000)
    offspring: int | None = setting(None, lo=1)   # per generation; default population_size
    generations: int = setting(20, lo=0)
    stall_generations: int = setting(5, lo=1)
    elite: int | None = setting(None, lo=0)       # survivors of the previous population; default size // 2
    fittest_fraction: float = setting(0.6, lo=0.01, hi=1.0)
    tournament_size: int = setting(2, lo=1)
    fractions: Mapping[str, float] = setting(factory=lambda: dict(DEFAULT_FRACTIONS))
    niche_tol: float = setting(0.3, lo=0.0)
    hull_tol: float = setting(0.001, lo=0.0)
    max_operator_tries: int = 20            # operator calls per offspring before giving up on it
    lattice_strain: float = 0.1
    softmode_modes: int = 3
    softmode_amplitude: tuple[float, float] = (0.3, 0.8)

    def __post_init__(self) -> None:
        unknown = set(self.fractions) - set(OPERATOR_NAMES)
        if unknown:
            raise ValueError(f"unknown operator(s) {sorted(unknown)}; allowed: {', '.join(OPERATOR_NAMES)}")
        if any(v < 0 for v in self.fractions.values()) or sum(self.fractions.values()) <= 0:
            raise ValueError("operator fractions must be non-negative with a positive sum")
        if self.population_size < 2 or self.generations < 0 or self.stall_generations < 1:
            raise ValueError("need population_size >= 2, generations >= 0, stall_generations >= 1")

    @property
    def n_offspring(self) -> int:
        return self.population_size if self.offspring is None else int(self.offspring)

    @property
    def n_elite(self) -> int:
        return self.population_size // 2 if self.elite is None else int(self.elite)


@dataclass
class GenerationStats:
    """Summary of one generation. best_fitness: lowest e_above_hull (eV/atom) of its new
    structures; hull: (formula, id, formation energy eV/atom) of the hull phases after it."""

    generation: int
    n_new: int
    n_failed_relax: int
    n_operator_failures: int
    operators: dict[str, int]
    best_fitness: float
    hull: list[tuple[str, str, float]]
    hull_changed: bool
    seconds: float


@dataclass
class EvolutionResult:
    individuals: list[Individual]          # every evaluated structure, in evaluation order
    population: list[Individual]           # the final population, fittest first
    hull: Hull | None                      # hull of all individuals (None for a fixed composition)
    history: list[GenerationStats]
    stopped: str                           # "generations" or "stalled"

    def by_id(self) -> dict[str, Individual]:
        return {ind.id: ind for ind in self.individuals}

    def ancestry(self, ident: str) -> list[tuple[str, str, tuple[str, ...]]]:
        """(id, operator, parents) of `ident` and all its ancestors, breadth first."""
        table, out, queue, seen = self.by_id(), [], [ident], set()
        while queue:
            cur = queue.pop(0)
            if cur in seen or cur not in table:
                continue
            seen.add(cur)
            ind = table[cur]
            out.append((cur, ind.operator, ind.parents))
            queue.extend(ind.parents)
        return out

    def operator_success(self) -> dict[str, tuple[int, int]]:
        """operator -> (structures on the final hull it made, structures it made)."""
        on_hull = set() if self.hull is None else {r.id for r in self.hull.stable()}
        out: dict[str, list[int]] = {}
        for ind in self.individuals:
            op = ind.operator.split(":")[0]
            row = out.setdefault(op, [0, 0])
            row[1] += 1
            row[0] += ind.id in on_hull
        return {k: (v[0], v[1]) for k, v in out.items()}


def build_operators(space: SearchSpace, settings: EvolutionSettings, evaluate: Evaluator | None = None,
                    species: Sequence[str] | None = None) -> dict[str, tuple[Operator, float]]:
    """Operator instances with their normalised fractions (operators with fraction 0 omitted;
    transmutation is dropped for a fixed composition). `evaluate` (types in the order of `species`,
    default the space's elements) is needed for softmode."""
    fr = {k: float(v) for k, v in settings.fractions.items() if v > 0}
    if not space.variable:
        fr.pop("transmutation", None)
    if "softmode" in fr and evaluate is None:
        raise ValueError("softmode mutation needs an evaluator (energies/forces) for the Hessian")
    make = {"heredity": lambda: Heredity(space),
            "lattice": lambda: LatticeMutation(space, strain=settings.lattice_strain),
            "permutation": lambda: Permutation(space),
            "transmutation": lambda: Transmutation(space),
            "softmode": lambda: SoftMutation(space, evaluate, n_modes=settings.softmode_modes,
                                             amplitude=settings.softmode_amplitude, species=species),
            "random": lambda: RandomFresh(space, max_tries=5)}
    total = sum(fr.values())
    return {name: (make[name](), fr[name] / total) for name in OPERATOR_NAMES if name in fr}


def endpoint_seeds(space: SearchSpace, seeds: Sequence[Atoms]) -> list[Atoms]:
    """Pure-element structures for elements no seed provides (the hull needs references): the
    smallest seed with every atom turned into that element, at the Vegard volume."""
    if not seeds:
        return []
    out = []
    have = {s.get_chemical_symbols()[0] for s in seeds if len(set(s.get_chemical_symbols())) == 1}
    smallest = min(seeds, key=len)
    for el in space.elements:
        if el in have:
            continue
        atoms = Atoms([el] * len(smallest), scaled_positions=smallest.get_scaled_positions(),
                      cell=smallest.cell, pbc=True)
        counts = space.counts(atoms)
        v = space.vegard_volume_per_atom(counts) * len(atoms)
        atoms.set_cell(atoms.cell.array * (v / abs(atoms.cell.volume)) ** (1 / 3), scale_atoms=True)
        atoms.info = {"source": "endpoint"}
        out.append(atoms)
    return out


class _Search:
    def __init__(self, space, relax, settings, seed, evaluate, species, lineage, known, log):
        self.space, self.relax, self.settings, self.seed = space, relax, settings, int(seed)
        self.ops = build_operators(space, settings, evaluate, species)
        self.lineage = lineage
        self.known = dict(known or {})
        self.log = log
        self.evaluated: list[Individual] = []
        self.hull: Hull | None = None

    def _evaluate(self, gen: int, children: list[tuple[str, Atoms]]) -> tuple[list[Individual], int]:
        todo = [(i, reduced_copy(a)) for i, a in children if i not in self.known]
        relaxed: dict[str, tuple[Atoms, float | None]] = {}
        for i, a in todo:
            a.info["id"] = i     # lets a relax function key what it stores (e.g. the campaign store)
        if todo:
            structs, energies = self.relax([a for _, a in todo])
            if len(structs) != len(todo) or len(energies) != len(todo):
                raise RuntimeError("relax function returned a different number of structures")
            for (i, a), r, e in zip(todo, structs, energies):
                relaxed[i] = (r, e)
        new, failed = [], 0
        for ident, atoms in children:
            if ident in self.known:
                ind = self.known[ident]
            else:
                r, e = relaxed[ident]
                if (e is None or not np.isfinite(e) or not set(r.get_chemical_symbols()) <= set(self.space.elements)
                        or len(r) != len(atoms) or min_distance_ratio(r, COLLAPSE_FACTOR) < 1.0):
                    failed += 1          # failed, or collapsed: atoms closer than half the covalent sum
                    continue
                r = r.copy()
                r.calc = None
                r.info = {"id": ident, "operator": atoms.info.get("operator", "?"),
                          "parents": list(atoms.info.get("parents", []))}
                ind = Individual(id=ident, atoms=r, energy=float(e), generation=gen,
                                 operator=str(atoms.info.get("operator", "?")),
                                 parents=tuple(atoms.info.get("parents", ())))
            new.append(ind)
        return new, failed

    def _fitness(self) -> None:
        if self.space.variable:
            self.hull = hull_of(self.evaluated, self.space.elements)
            assign_fitness(self.evaluated, self.hull)
        else:
            best = min(ind.energy_per_atom for ind in self.evaluated)
            for ind in self.evaluated:
                ind.fitness = ind.energy_per_atom - best

    def _hull_moved(self, old: Hull | None) -> bool:
        tol = self.settings.hull_tol
        if not self.space.variable:
            return True if old is None else False
        if old is None:
            return True
        for row in self.hull.stable():
            comp = Composition(self.hull.entry(row.id).composition)
            if row.energy_per_atom < old.phase_diagram.get_hull_energy_per_atom(comp) - tol:
                return True
        return False

    def _hull_rows(self) -> list[tuple[str, str, float]]:
        if self.hull is None:
            best = rank(self.evaluated)[0]
            return [(best.atoms.get_chemical_formula(), best.id, 0.0)]
        return [(r.formula, r.id, r.formation_energy_per_atom) for r in self.hull.stable()]

    def first_generation(self, seeds: Sequence[Atoms]) -> GenerationStats:
        t0 = time.perf_counter()
        usable = [s for s in seeds if self.space.admits_seed(s)]
        if not usable:
            raise ValueError("evolution: no seed structure lies in the search space")
        if self.space.variable:
            usable += endpoint_seeds(self.space, usable)
        children = []
        for k, s in enumerate(usable):
            a = s.copy()
            a.calc = None
            a.info = {"operator": f"seed:{s.info.get('source', 'given')}", "parents": []}
            if "candidate_id" in s.info:
                a.info["candidate_id"] = s.info["candidate_id"]   # a campaign candidate used as a seed
            children.append((f"g0-{k}", a))
        new, failed = self._evaluate(0, children)
        return self._close(0, new, failed, 0, {"seed": len(children)}, None, t0)

    def _close(self, gen, new, failed, op_failures, op_counts, old_hull, t0) -> GenerationStats:
        self.evaluated.extend(new)
        if not self.evaluated:
            raise RuntimeError("evolution: every relaxation of the first generation failed")
        self._fitness()
        stats = GenerationStats(
            generation=gen, n_new=len(new), n_failed_relax=failed, n_operator_failures=op_failures,
            operators=op_counts, best_fitness=min((i.fitness for i in new), default=np.inf),
            hull=self._hull_rows(), hull_changed=self._hull_moved(old_hull),
            seconds=time.perf_counter() - t0)
        for ind in new:
            if self.lineage is not None and ind.id not in self.known:
                self.lineage.add(ind)
        if self.lineage is not None:
            self.lineage.generation_done(stats)
        return stats

    def offspring(self, gen: int, population: list[Individual]) -> tuple[list[tuple[str, Atoms]], int, dict]:
        rng = np.random.default_rng([self.seed, gen])
        names = list(self.ops)
        probs = np.array([self.ops[n][1] for n in names])
        children, failures, counts = [], 0, {}
        st = self.settings
        for k in range(st.n_offspring):
            for _ in range(st.max_operator_tries):
                name = names[int(rng.choice(len(names), p=probs))]
                op = self.ops[name][0]
                if op.n_parents > len(population):
                    failures += 1
                    continue
                parents = tournament(population, rng, op.n_parents, st.fittest_fraction,
                                     st.tournament_size) if op.n_parents else []
                child = op([p.atoms for p in parents], rng)
                if child is not None:
                    children.append((f"g{gen}-{k}", child))
                    counts[name] = counts.get(name, 0) + 1
                    break
                failures += 1
        return children, failures, counts

    def next_population(self, previous: list[Individual], new: list[Individual]) -> list[Individual]:
        elite = rank(previous)[: self.settings.n_elite]
        return niche_select(elite + new, self.settings.population_size, self.settings.niche_tol)


def evolve(seeds: Sequence[Atoms], relax: RelaxFn, space: SearchSpace, settings: EvolutionSettings = EvolutionSettings(),
           *, seed: int = 0, evaluate: Evaluator | None = None, species: Sequence[str] | None = None,
           lineage: LineageSink | None = None,
           known: Mapping[str, Individual] | None = None,
           log: Callable[[str], None] = lambda msg: None) -> EvolutionResult:
    """Run the evolutionary search (see module doc).

    seeds: first-generation structures (those outside `space` are skipped; pure-element end
    members are added when missing). relax: list of Atoms -> (relaxed Atoms, total energies eV,
    NaN/None = failed), called once per generation with all new structures. evaluate: a batched
    `csp.relax.Evaluator` for the soft-mode Hessians (e.g. `csp.relax.mtp_evaluator(mtp)`), whose
    type indices follow `species` (default: the space's elements; for an MTP, its species order).
    lineage: receives every newly evaluated Individual and each GenerationStats. known: id ->
    Individual already evaluated (resume). log: one-line progress messages.
    """
    s = _Search(space, relax, settings, seed, evaluate, species, lineage, known, log)
    history = [s.first_generation(seeds)]
    population = niche_select(s.evaluated, settings.population_size, settings.niche_tol)
    log(f"evolution: generation 0: {len(s.evaluated)} seeds evaluated, hull "
        + ", ".join(f"{f} {1000 * e:.1f}" for f, _, e in history[-1].hull))
    stalled, stopped = 0, "generations"
    for gen in range(1, settings.generations + 1):
        t0 = time.perf_counter()
        old_hull = s.hull
        children, failures, counts = s.offspring(gen, population)
        new, failed = s._evaluate(gen, children)
        stats = s._close(gen, new, failed, failures, counts, old_hull, t0)
        history.append(stats)
        population = s.next_population(population, new)
        stalled = 0 if stats.hull_changed else stalled + 1
        log(f"evolution: generation {gen}: {len(new)} new ({failed} relaxations failed), best "
            f"{1000 * stats.best_fitness:.1f} meV/atom above hull, hull {'moved' if stats.hull_changed else 'unchanged'}")
        if stalled >= settings.stall_generations:
            stopped = "stalled"
            break
    return EvolutionResult(individuals=s.evaluated, population=rank(population), hull=s.hull,
                           history=history, stopped=stopped)
