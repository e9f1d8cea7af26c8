"""Benchmark: cost of ONE loss + gradient evaluation for MTP training (run by hand).

Training set: 101 snapshots of a 32-atom fcc Cu EMT molecular-dynamics trajectory (ASE EMT,
1000 K, one snapshot every 10 steps of 2 fs), energies, forces and stresses. Potentials of level
10 and 16 (the conformance bases, one species, cutoff 5 Å). csp: csp.mtp.fit.Objective (adjoint
gradient); motep (pip `motep`, same run): its LossFunction value + jac with the "cext" and
"numba" engines. Prints a Markdown table; times are the median of repeated evaluations.

    OMP_NUM_THREADS=1 python bench/mtp_train.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CONF = Path(__file__).resolve().parents[1] / "tests" / "data" / "conformance" / "mtp"


def trajectory(n: int = 101, seed: int = 0):
    from ase import units
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.md.verlet import VelocityVerlet

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
    atoms.calc = EMT()
    MaxwellBoltzmannDistribution(atoms, temperature_K=2000, rng=np.random.default_rng(seed))
    dyn = VelocityVerlet(atoms, 2 * units.fs)
    frames = []
    for _ in range(n):
        dyn.run(10)
        snap = atoms.copy()
        snap.calc = SinglePointCalculator(snap, energy=atoms.get_potential_energy(),
                                          forces=atoms.get_forces(), stress=atoms.get_stress())
        frames.append(snap)
    return frames


def median_time(fn, repeat: int) -> float:
    fn()  # warm-up (numba compilation, caches)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def time_csp(pot: Path, frames, repeat: int) -> float:
    from csp.mtp.fit import Objective, Weights
    from csp.mtp.fit_data import FitData
    from csp.mtp.io import atoms_to_cfg, read_mtp

    mtp = read_mtp(pot)
    data = FitData.build([atoms_to_cfg(a, ["Cu"]) for a in frames], mtp.max_dist, 1)
    obj = Objective(mtp, data, Weights())
    theta = mtp.get_parameters()
    return median_time(lambda: obj(theta), repeat)


def time_motep(pot: Path, frames, engine: str, repeat: int) -> float:
    from motep.io.mlip.mtp import read_mtp
    from motep.loss import LossFunction, LossSetting

    data = read_mtp(pot)
    data.species = [29]
    images = [copy.deepcopy(a) for a in frames]
    loss = LossFunction(images, data, LossSetting(), engine=engine)
    params = np.array(data.parameters, dtype=float)

    def once():
        loss(params)
        loss.jac(params)

    return median_time(once, repeat)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    frames = trajectory()
    cpu = subprocess.run("lscpu | grep 'Model name'", shell=True, capture_output=True, text=True).stdout
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {cpu.split(':', 1)[-1].strip()}, "
          f"{os.cpu_count()} cores, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, python {platform.python_version()}")
    print(f"# {len(frames)} configurations x {len(frames[0])} atoms = {len(frames) * len(frames[0])} atoms\n")
    print("| level | csp (s) | motep cext (s) | motep numba (s) | motep cext / csp | MLIP-3 target (s) |")
    print("|---|---|---|---|---|---|")
    for level, name, target in ((10, "cubic_10", 0.28), (16, "cubic_16", 1.4)):
        pot = CONF / name / "pot.mtp"
        t_csp = time_csp(pot, frames, args.repeat)
        try:
            t_cext = time_motep(pot, frames, "cext", max(2, args.repeat // 2))
        except Exception as exc:  # motep missing or engine unavailable
            print(f"motep cext failed: {exc}", file=sys.stderr)
            t_cext = float("nan")
        try:
            t_numba = time_motep(pot, frames, "numba", max(2, args.repeat // 2))
        except Exception as exc:
            print(f"motep numba failed: {exc}", file=sys.stderr)
            t_numba = float("nan")
        print(f"| {level} | {t_csp:.3f} | {t_cext:.3f} | {t_numba:.3f} | {t_cext / t_csp:.1f} | {target} |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
