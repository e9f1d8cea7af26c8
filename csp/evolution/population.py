"""Fitness, niching and parent selection.

Fitness of a structure = its energy per atom above the convex hull (eV/atom) of ALL structures
evaluated so far (variable composition; `csp.hull.build_hull`, pymatgen). Lower is fitter.
Niching keeps the population diverse: two structures of the same reduced formula whose
neighbour fingerprints (`csp.structures.dedup.fingerprint`) differ by less than `niche_tol`
in every component are one niche, and only the fitter of them stays. Parents are chosen by
tournament among the fittest fraction of the population.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from ase import Atoms

from csp.hull import Hull, HullEntry, build_hull
from pymatgen.core import Composition

from csp.structures.dedup import fingerprint


@dataclass(eq=False)
class Individual:
    """One evaluated (relaxed) structure. energy: eV (total); fitness: eV/atom above the hull."""

    id: str
    atoms: Atoms
    energy: float
    generation: int
    operator: str
    parents: tuple[str, ...] = ()
    fitness: float = np.inf
    _fp: np.ndarray | None = field(default=None, repr=False)
    _formula: str | None = field(default=None, repr=False)

    @property
    def energy_per_atom(self) -> float:
        return self.energy / len(self.atoms)

    @property
    def formula(self) -> str:
        """Reduced formula (pymatgen), e.g. 'Cu3Au'."""
        if self._formula is None:
            self._formula = Composition(self.atoms.get_chemical_formula()).reduced_formula
        return self._formula

    @property
    def fingerprint(self) -> np.ndarray:
        if self._fp is None:
            self._fp = fingerprint(self.atoms)
        return self._fp


def hull_of(individuals: Sequence[Individual], elements: Sequence[str]) -> Hull:
    """Convex hull (eV/atom) in the space of `elements`, built from the lowest-energy individual
    of each reduced composition (the others cannot be vertices; pymatgen's cost grows with entries)."""
    best: dict[str, Individual] = {}
    for ind in individuals:
        cur = best.get(ind.formula)
        if cur is None or ind.energy_per_atom < cur.energy_per_atom:
            best[ind.formula] = ind
    entries = [HullEntry.from_atoms(ind.atoms, id=ind.id, energy=ind.energy) for ind in best.values()]
    return build_hull(entries, elements=list(elements))


def assign_fitness(individuals: Sequence[Individual], hull: Hull) -> None:
    """Set `fitness` = energy per atom above the hull at the individual's composition (eV/atom)."""
    cache: dict[str, float] = {}
    for ind in individuals:
        if ind.formula not in cache:
            comp = Composition(ind.atoms.get_chemical_formula())
            cache[ind.formula] = float(hull.phase_diagram.get_hull_energy_per_atom(comp))
        ind.fitness = max(0.0, ind.energy_per_atom - cache[ind.formula])


def rank(individuals: Sequence[Individual]) -> list[Individual]:
    """Fittest first; ties by energy per atom, then id (deterministic)."""
    return sorted(individuals, key=lambda i: (round(i.fitness, 9), i.energy_per_atom, i.id))


def same_niche(a: Individual, b: Individual, tol: float) -> bool:
    """Same reduced formula and fingerprints within `tol` in every component."""
    if a.formula != b.formula:
        return False
    fa, fb = a.fingerprint, b.fingerprint
    return fa.shape == fb.shape and float(np.max(np.abs(fa - fb))) < tol


def niche_select(individuals: Sequence[Individual], size: int, tol: float = 0.3) -> list[Individual]:
    """Up to `size` fittest individuals, at most one per niche (see module doc)."""
    kept: list[Individual] = []
    by_formula: dict[str, list[Individual]] = {}
    for ind in rank(individuals):
        if len(kept) >= size:
            break
        same = by_formula.setdefault(ind.formula, [])
        if not any(same_niche(ind, k, tol) for k in same):
            kept.append(ind)
            same.append(ind)
    return kept


def tournament(population: Sequence[Individual], rng: np.random.Generator, n: int,
               fittest_fraction: float = 0.6, size: int = 2) -> list[Individual]:
    """`n` distinct parents (if possible): each the fittest of `size` random members of the
    fittest `fittest_fraction` of the population (which must be ranked, fittest first)."""
    pool = list(population[:max(n, int(np.ceil(fittest_fraction * len(population))))])
    chosen: list[Individual] = []
    for _ in range(n):
        avail = [p for p in pool if all(p is not c for c in chosen)] or pool
        picks = rng.choice(len(avail), size=min(size, len(avail)), replace=False)
        chosen.append(avail[int(min(picks))])  # avail keeps rank order: smallest index is fittest
    return chosen
