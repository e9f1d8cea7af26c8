"""Benchmark: evolutionary search throughput for a 200-structure population (run by hand).

    OMP_NUM_THREADS=1 python bench/evolution.py [--generations 3] [--population 200] [--emt]
    OMP_NUM_THREADS=1 python bench/evolution.py --campaign [--ranks 2] [--generations 2] [--level 8]

Potentials: the MLIP-trained level-10 MTP for Au/Ag/Cu (`tests/data/conformance/mtp/multi_10`,
trained on EMT molecular dynamics) used on the Cu–Au binary, relaxations batched through
`csp.relax.relax_structures` + `mtp_evaluator` (one `calc_efs_batch` call per optimiser step for
the whole generation), and — with --emt — ASE's EMT through the same relaxer (one EMT
calculator per species sequence), as the peer. Cells of 1–8 atoms, variable composition,
default operator fractions (soft-mode Hessians by finite differences with the same
evaluator). Prints relaxations per second, generations per hour and the time split
(relaxation / operators and selection).

--campaign: the same search as a campaign step (`csp run` under `mpirun -n RANKS`, EMT
reference): Cu-Au, `population` random seeds of 1-8 atoms, offspring relaxed with the
self-learning level-L MTP on the task farm (grade checked every step, reference single points
+ retraining when it extrapolates). The campaign is stopped once the evolution step is done;
the numbers come from the store: seconds per generation (operators + relaxation + learning),
MTP relaxations (every pass, re-relaxations included) per second of relaxation wall time (pass
start to end, from the store's step times), and the learning time.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from ase import Atoms

from csp.evolution import EvolutionSettings, SearchSpace, evolve
from csp.mtp.relax_evaluator import mtp_evaluator
from csp.relax import relax_structures
from csp.structures.random_structures import random_structures

ELEMENTS = ("Cu", "Au")
MTP_PATH = Path(__file__).resolve().parents[1] / "tests" / "data" / "conformance" / "mtp" / "multi_10" / "pot.mtp"
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


CAMPAIGN = """
name: bench-evolution
elements: [Cu, Au]
seed: 1
candidates:
  enumerate: false
  prototypes: false
  random: {{count: {population}, max_atoms: 8}}
  evolution: {{population_size: {population}, generations: {generations}, stall_generations: 1000, max_atoms: 8}}
reference: {{calculator: emt, relax: {{fmax: 0.02, max_steps: 300}}}}
screening:
  stages: [{{level: {level}}}]
  active_learning: {{initial_training: 20, max_rounds: 6, max_selected: 20}}
  relax: {{fmax: 0.01, max_steps: 300}}
  training: {{max_iter: 150, cv_folds: 3}}
"""


def campaign(population: int, generations: int, level: int, ranks: int) -> dict:
    """Run the evolution step of a campaign on `ranks` MPI ranks and measure it from the store."""
    import signal
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from csp.campaign.store import CampaignStore

    tmp = Path(tempfile.mkdtemp(prefix="csp-bench-evolution-"))
    (tmp / "search.yaml").write_text(CAMPAIGN.format(population=population, generations=generations, level=level))
    cmd = [sys.executable, "-m", "csp", "run", str(tmp / "search.yaml"), "--run-dir", str(tmp / "run"), "--quiet"]
    if ranks > 1:
        cmd = ["mpirun", "-n", str(ranks), *cmd]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    while proc.poll() is None:
        time.sleep(1.0)
        if (tmp / "run" / "campaign.sqlite").exists():
            with CampaignStore(tmp / "run") as store:
                if store.step_done("evolution"):
                    break
    wall = time.perf_counter() - t0
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)      # the evolution step is done: stop the rest of the campaign
    proc.wait()
    with CampaignStore(tmp / "run") as store:
        if not store.step_done("evolution"):
            raise RuntimeError(f"the campaign ended before the evolution step: {proc.stderr.read()[-2000:]}")
        steps = store.steps()
        gens = store.generations()
        infos = {name: store.step_info(name) for name, _ in steps}
    relax_s, learn_s, n_relax = {}, {}, {}
    for k, (name, t) in enumerate(steps):
        if not name.startswith("evolution-g"):
            continue
        g = int(name.split("/")[0][len("evolution-g"):])
        dt = t - steps[k - 1][1]
        if name.endswith("/relaxed") and "/pass" in name:
            relax_s[g] = relax_s.get(g, 0.0) + dt
            n_relax[g] = n_relax.get(g, 0) + infos[name]["pending"]
        elif name.endswith("/learned"):
            learn_s[g] = learn_s.get(g, 0.0) + dt
    later = [g for g in n_relax if g > 0]
    sec = [gs["seconds"] for gs in gens if gs["generation"] > 0]
    out = {"ranks": ranks, "wall_s": wall, "generation0_s": gens[0]["seconds"],
           "s_per_generation": float(np.mean(sec)), "generations_per_hour": 3600.0 / float(np.mean(sec)),
           "relaxations": sum(n_relax[g] for g in later), "relax_s": sum(relax_s[g] for g in later),
           "learn_s": sum(learn_s.get(g, 0.0) for g in later),
           "relax_per_s_gen0": n_relax[0] / relax_s[0]}
    out["relax_per_s"] = out["relaxations"] / out["relax_s"]
    print(f"campaign, {ranks} rank(s), level-{level} self-learning MTP, population {population}: generation 0 "
          f"({n_relax[0]} relaxations incl. re-relaxations) {out['generation0_s']:.0f} s; generations 1-{len(sec)}: "
          f"{out['s_per_generation']:.1f} s each = {out['generations_per_hour']:.0f} generations/hour; "
          f"{out['relaxations']} MTP relaxations in {out['relax_s']:.1f} s of relaxation passes = "
          f"{out['relax_per_s']:.1f}/s (generation 0: {out['relax_per_s_gen0']:.1f}/s); learning "
          f"(reference single points + retraining) {out['learn_s']:.1f} s; wall {wall:.0f} s; run dir {tmp}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--population", type=int, default=200)
    ap.add_argument("--generations", type=int, default=3)
    ap.add_argument("--emt", action="store_true", help="also time ASE EMT as the peer")
    ap.add_argument("--campaign", action="store_true", help="measure the campaign step under mpirun instead")
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--level", type=int, default=8)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.campaign:
        campaign(args.population, args.generations, args.level, args.ranks)
        return
    from csp.mtp.io import read_mtp

    mtp = read_mtp(MTP_PATH)
    warm = list(random_structures(list(ELEMENTS), 2, 4, seed=0))   # numba compilation outside the timing
    relax_structures(mtp_evaluator(mtp), warm, MTP_SPECIES, max_steps=3)
    run("MTP level 10 (multi_10)", mtp_evaluator(mtp), MTP_SPECIES, args.population, args.generations)
    if args.emt:
        run("ASE EMT", emt_evaluator(), ELEMENTS, args.population, args.generations)


if __name__ == "__main__":
    main()
