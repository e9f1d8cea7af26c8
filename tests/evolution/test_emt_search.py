"""Integration: an evolution-only Cu–Au search with EMT reaches every brute-force hull phase.

Brute force: every fcc derivative structure (`csp.structures.enumerate`) with at most
BRUTE_MAX_ATOMS atoms, relaxed with EMT (atoms and cell). The issue asks for enumeration to 8
atoms; 1595 fcc/bcc/hcp cells to 8 atoms take ~10 minutes with ASE's EMT on this machine,
beyond the test budget, so the test uses fcc cells to 4 atoms (29 structures) — whose EMT hull
is Cu, Cu3Au (L1_2), CuAu (L1_0), Au. The evolution (no enumeration, no prototypes: random
symmetric seeds only) runs with at most 8 atoms per cell and a budget of GENERATIONS ×
POPULATION offspring; every brute-force hull phase must be matched or beaten within 1 meV/atom,
and the phases it finds below the brute-force hull are printed. (With EMT, off-lattice cells
beat the fcc derivatives: this run finds an 8-atom Cu3Au (Pmmn) 2.8 meV/atom below L1_2.
Seeds 1–4 of the search all pass; the test uses one.)
"""

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.emt import EMT
from pymatgen.core import Composition

from csp.evolution import EvolutionSettings, SearchSpace, evolve
from csp.hull import HullEntry, build_hull
from csp.relax import relax_structures
from csp.structures.enumerate import enumerate_structures
from csp.structures.random_structures import random_structures

ELEMENTS = ("Cu", "Au")
BRUTE_MAX_ATOMS = 4
MAX_ATOMS = 8
POPULATION = 14
GENERATIONS = 10          # budget: at most 10 × 14 = 140 offspring relaxations (+ 16 seeds)
TOL = 0.001               # eV/atom


def emt_evaluator():
    """csp.relax Evaluator over ASE's EMT that keeps one calculator per species sequence (ASE's EMT
    re-initialises when the atomic numbers change; reusing it saves ~70% of the time)."""
    calcs = {}

    def evaluate(cells, positions, types, offsets):
        nb = len(cells)
        e, f, s = np.empty(nb), np.empty_like(positions), np.empty((nb, 6))
        for b in range(nb):
            sl = slice(offsets[b], offsets[b + 1])
            key = types[sl].tobytes()
            atoms = Atoms([ELEMENTS[t] for t in types[sl]], positions=positions[sl], cell=cells[b], pbc=True)
            atoms.calc = calcs.setdefault(key, EMT())
            e[b], f[sl], s[b] = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
        return e, f, s

    return evaluate


EVALUATOR = emt_evaluator()


def emt_relax(structures):
    evaluator = EVALUATOR
    out, res = relax_structures(evaluator, structures, ELEMENTS, fmax=0.01, max_steps=150, optimizer="bfgs")
    energies = [float(e) if res.status[b] in (1, 2) else float("nan") for b, e in enumerate(res.energies)]
    return out, energies


@pytest.mark.slow
def test_evolution_reaches_brute_force_hull():
    brute = list(enumerate_structures("fcc", list(ELEMENTS), max_atoms=BRUTE_MAX_ATOMS))
    relaxed, energies = emt_relax(brute)
    ref = build_hull([HullEntry.from_atoms(a, id=f"enum{i}", energy=e)
                      for i, (a, e) in enumerate(zip(relaxed, energies))], list(ELEMENTS))
    ref_phases = ref.stable()
    assert [r.formula for r in ref_phases] == ["Cu", "Cu3Au", "CuAu", "Au"]

    seeds = list(random_structures(list(ELEMENTS), 16, MAX_ATOMS, seed=1))
    settings = EvolutionSettings(population_size=POPULATION, generations=GENERATIONS, stall_generations=4)
    res = evolve(seeds, emt_relax, SearchSpace(ELEMENTS, max_atoms=MAX_ATOMS), settings, seed=4,
                 evaluate=EVALUATOR, log=print)
    n_relax = len(res.individuals)
    print(f"evolution: {len(res.history) - 1} generations, {n_relax} relaxations, stopped: {res.stopped}")
    print(res.hull.table())
    for row in ref_phases:
        comp = Composition(ref.entry(row.id).composition)
        found = res.hull.phase_diagram.get_hull_energy_per_atom(comp)
        formation = res.hull.formation_energy(dict(comp.as_dict()), found)
        print(f"{row.formula}: brute force {1000 * row.formation_energy_per_atom:.2f}, "
              f"evolution {1000 * formation:.2f} meV/atom")
        assert formation <= row.formation_energy_per_atom + TOL, row.formula
    for row in res.hull.stable():
        below = row.formation_energy_per_atom - ref.hull_energy(row.composition)
        if below < -TOL:
            print(f"beyond brute force: {row.formula} ({row.natoms} atoms) {1000 * below:.2f} meV/atom below "
                  f"the brute-force hull; lineage {res.ancestry(row.id)[:4]}")
    print("operator success (on hull, made):", res.operator_success())
    assert n_relax <= 16 + 2 + GENERATIONS * POPULATION
