"""Stage-1 throughput of the campaign engine: MTP relaxations (atoms + cell) per second per core.

    python bench/campaign.py [--count 2000] [--level 10]

1. trains a level-L Cu-Pd MTP on EMT single points of strained/rattled small cells (seeded);
2. relaxes `count` random symmetric 4-8-atom Cu-Pd cells with it exactly as stage 1 does
   (batched BFGS, fmax 0.01 eV/Å, stress 0.1 GPa, extrapolation grade checked every step,
   select 2 / break 10), on 1 rank in-process and on 2 ranks with `mpirun -n 2` (task farm);
3. prints relaxations/s/core, mean optimiser steps and the status counts.
Peer: MLIP-3 `mlp relax` ≈ 160 relaxations/s/core (6.1 ms CPU per 4-8-atom cell, level 10).
"""

from __future__ import annotations

import argparse
import os
import pickle
import subprocess
import sys
import tempfile
import time

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")


def build(level: int, count: int, seed: int = 0):
    from ase.calculators.emt import EMT

    from csp.campaign import model
    from csp.config import TrainingSettings
    from csp.structures.random_structures import random_structures

    species = ["Cu", "Pd"]
    rng = np.random.default_rng(seed)
    train = []
    for atoms in random_structures(species, 80, 8, seed=seed + 1, min_atoms=2):
        for scale in (0.97, 1.0, 1.03):
            a = atoms.copy()
            a.set_cell(a.cell.array * scale, scale_atoms=True)
            a.rattle(0.05, seed=int(rng.integers(1 << 30)))
            a.calc = EMT()
            a.get_potential_energy()
            train.append(a)
    settings = TrainingSettings(max_iter=200, cv_folds=2, min_dist=1.8, max_dist=5.0)
    t0 = time.perf_counter()
    trained = model.train(level, species, train, settings, seed)
    fit_s = time.perf_counter() - t0
    mtp = model.load(trained.text)
    aset = model.active_set(mtp, train, species)
    cands = list(random_structures(species, count, 8, seed=seed + 2, min_atoms=4))
    return mtp, aset, species, cands, trained.sigma, fit_s


def run_stage(mtp, aset, species, cands, farm, batch_size: int = 64):
    from csp.campaign.farm import chunks
    from csp.campaign.learn import RelaxTask, run_relax_task
    from csp.config import MTPRelaxSettings

    settings = MTPRelaxSettings(fmax=0.01, max_steps=500, optimizer="bfgs")
    ids = list(range(len(cands)))
    items = [RelaxTask(mtp, aset, tuple(species), tuple(b), tuple(cands[i] for i in b), settings, 2.0, 10.0)
             for b in chunks(ids, batch_size)]
    t0 = time.perf_counter()
    outs = farm.map(run_relax_task, items)
    wall = time.perf_counter() - t0
    rows = [r for o in outs for r in o["rows"]]
    return wall, rows


def summary(label: str, wall: float, ranks: int, rows: list[dict]) -> str:
    from collections import Counter

    status = Counter(r["status"] for r in rows)
    steps = np.mean([r["steps"] for r in rows])
    rate = len(rows) / wall / ranks
    return (f"| {label} | {ranks} | {len(rows)} | {wall:.1f} | {rate:.0f} | {steps:.0f} | "
            f"{', '.join(f'{k} {v}' for k, v in sorted(status.items()))} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--level", type=int, default=10)
    parser.add_argument("--mpi-part", help=argparse.SUPPRESS)
    args = parser.parse_args()
    from csp.campaign.farm import Farm

    if args.mpi_part:
        farm = Farm()
        if not farm.is_master:
            farm.serve()
            return 0
        with open(args.mpi_part, "rb") as fh:
            mtp, aset, species, cands = pickle.load(fh)
        run_stage(mtp, aset, species, cands[:64 * 2 * farm.size], farm)  # numba warm-up on every rank
        wall, rows = run_stage(mtp, aset, species, cands, farm)
        farm.stop()
        print(summary(f"level {args.level}", wall, farm.size, rows))
        return 0

    mtp, aset, species, cands, sigma, fit_s = build(args.level, args.count)
    print(f"level-{args.level} Cu-Pd MTP trained on EMT data in {fit_s:.1f} s, σ = {1000 * sigma:.1f} meV/atom; "
          f"{len(cands)} random cells, mean {np.mean([len(a) for a in cands]):.1f} atoms")
    print("| potential | ranks | relaxations | wall (s) | relaxations/s/core | mean steps | status |")
    print("|---|---|---|---|---|---|---|")
    farm = Farm()
    run_stage(mtp, aset, species, cands[:64 * 2 * farm.size], farm)  # numba warm-up
    wall, rows = run_stage(mtp, aset, species, cands, farm)
    print(summary(f"level {args.level}", wall, 1, rows), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "stage.pkl")
        with open(path, "wb") as fh:
            pickle.dump((mtp, aset, species, cands), fh)
        out = subprocess.run(["mpirun", "-n", "2", sys.executable, __file__, "--mpi-part", path,
                              "--level", str(args.level)], capture_output=True, text=True)
        print(out.stdout.strip() or out.stderr[-2000:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
