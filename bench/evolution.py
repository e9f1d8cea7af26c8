"""Benchmark: evolutionary search throughput for a 200-structure population (run by hand).

    OMP_NUM_THREADS=1 python bench/evolution.py [--generations 3] [--population 200] [--emt]

Potentials: the MLIP-trained level-10 MTP for Au/Ag/Cu (`/work/shared/conformance/mtp/multi_10`,
trained on EMT molecular dynamics) used on the Cu–Au binary, relaxations batched through
`csp.relax.relax_structures` + `mtp_evaluator` (one `calc_efs_batch` call per optimiser step for
the whole generation), and — with --emt — ASE's EMT through the same relaxer (one EMT
calculator per species sequence), as the peer. Cells of 1–8 atoms, variable composition,
default operator fractions (soft-mode Hessians by finite differences with the same
evaluator). Prints relaxations per second, generations per hour and the time split
(relaxation / operators and selection).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from ase import Atoms

from csp.evolution import EvolutionSettings, SearchSpace, evolve
from csp.relax import mtp_evaluator, relax_structures
from csp.structures.random_structures import random_structures

ELEMENTS = ("Cu", "Au")
MTP_PATH = "/work/shared/conformance/mtp/multi_10/pot.mtp"
MTP_SPECIES = ("Au", "Ag", "Cu")


def emt_evaluator():
    from ase.calculators.emt import EMT

    calcs = {}

    def evaluate(cells, positions, types, offsets):
        nb = len(cells)
        e, f, s = np.empty(nb), np.empty_like(positions), np.empty((nb, 6))
        for b in range(nb):
            sl = slice(offsets[b], offsets[b + 1])
            atoms = Atoms([ELEMENTS[t] for t in types[sl]], positions=positions[sl], cell=cells[b], pbc=True)
            atoms.calc = calcs.setdefault(types[sl].tobytes(), EMT())
            e[b], f[sl], s[b] = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
        return e, f, s

    return evaluate


def run(label: str, evaluator, species, population: int, generations: int, seed: int = 1) -> dict:
    timing = {"relax": 0.0, "n": 0, "steps": 0}

    def relax(structures):
        t0 = time.perf_counter()
        out, res = relax_structures(evaluator, structures, species, fmax=0.01, max_steps=300, optimizer="fire")
        timing["relax"] += time.perf_counter() - t0
        timing["n"] += len(structures)
        timing["steps"] += int(res.steps.sum())
        energies = [float(e) if res.status[b] in (1, 2) else float("nan") for b, e in enumerate(res.energies)]
        return out, energies

    seeds = list(random_structures(list(ELEMENTS), population, 8, seed=seed))
    settings = EvolutionSettings(population_size=population, generations=generations, stall_generations=10**6)
    t0 = time.perf_counter()
    res = evolve(seeds, relax, SearchSpace(ELEMENTS, max_atoms=8), settings, seed=seed,
                 evaluate=evaluator, species=species)
    wall = time.perf_counter() - t0
    t_gen = [h.seconds for h in res.history[1:]]
    out = {"label": label, "relaxations": timing["n"], "relax_s": timing["relax"], "wall_s": wall,
           "relax_per_s": timing["n"] / timing["relax"], "steps_per_relax": timing["steps"] / timing["n"],
           "s_per_generation": float(np.mean(t_gen)), "generations_per_hour": 3600.0 / float(np.mean(t_gen)),
           "other_s": wall - timing["relax"], "hull": [(r.formula, round(1000 * r.formation_energy_per_atom, 1))
                                                      for r in res.hull.stable()]}
    print(f"{label}: {out['relaxations']} relaxations in {out['relax_s']:.1f} s "
          f"({out['relax_per_s']:.1f}/s, {out['steps_per_relax']:.0f} FIRE steps each); "
          f"{out['s_per_generation']:.1f} s per generation of {population} "
          f"= {out['generations_per_hour']:.0f} generations/hour; non-relaxation time {out['other_s']:.1f} s "
          f"of {wall:.1f} s; hull {out['hull']}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--population", type=int, default=200)
    ap.add_argument("--generations", type=int, default=3)
    ap.add_argument("--emt", action="store_true", help="also time ASE EMT as the peer")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from csp.mtp.io import read_mtp

    mtp = read_mtp(MTP_PATH)
    warm = list(random_structures(list(ELEMENTS), 2, 4, seed=0))   # numba compilation outside the timing
    relax_structures(mtp_evaluator(mtp), warm, MTP_SPECIES, max_steps=3)
    run("MTP level 10 (multi_10)", mtp_evaluator(mtp), MTP_SPECIES, args.population, args.generations)
    if args.emt:
        run("ASE EMT", emt_evaluator(), ELEMENTS, args.population, args.generations)


if __name__ == "__main__":
    main()
