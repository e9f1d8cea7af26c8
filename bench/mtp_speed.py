"""MTP evaluation speed: µs per atom per core (energy + forces + stress, neighbours included).

Workloads: 1000 random small cells (2-8 atoms), 1000 rattled 8-atom fcc cells, 20 rattled
500-atom fcc cells; MLIP-trained potentials of levels 10, 16, 20 (conformance data; the 3-species
variants copy the radial block to every species pair, same contraction scheme as MLIP's).
Timed in the same run:
  csp batch     csp.mtp.calc_efs_batch on all structures of a workload in one call (best of 3)
  csp ASE       csp.mtp.MTPCalculator, one structure at a time (get_forces + get_stress)
  motep ASE     motep's ASE calculator with its fastest engine (cext), one structure at a time
  motep engine  motep's cext engine alone (its neighbour list built outside the timing; best of 3)
Run by hand:  OMP_NUM_THREADS=1 python bench/mtp_speed.py [--quick]   (needs `pip install motep`)
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import tempfile
import time

import numpy as np
from ase import Atoms
from ase.build import bulk

from csp.mtp import Batch, MTPCalculator, calc_efs_batch, read_mtp, write_mtp

CONF = os.environ.get("CSP_CONFORMANCE", "/work/shared/conformance/mtp")
LEVELS = {10: "cubic_10", 16: "cubic_16", 20: "cubic_20"}
SPECIES = {1: ["Cu"], 3: ["Au", "Ag", "Cu"]}
REPEATS = 3  # kernel-only timings (csp batch, motep engine) take the best of this many runs


def potential(level: int, n_species: int, tmp: str) -> str:
    """Path of an MLIP-format potential with the level-`level` scheme and n_species species."""
    mtp = read_mtp(os.path.join(CONF, LEVELS[level], "pot.mtp"))
    if n_species > 1:
        rc = mtp.radial_coeffs[0, 0]
        scale = 1.0 + 0.02 * np.arange(n_species * n_species).reshape(n_species, n_species)
        mtp.radial_coeffs = rc[None, None] * scale[:, :, None, None]
        mtp.species_count = n_species
        mtp.species_coeffs = np.full(n_species, mtp.species_coeffs[0])
    path = os.path.join(tmp, f"l{level}_s{n_species}.mtp")
    write_mtp(mtp, path)
    return path


def random_cells(count: int, symbols: list[str], seed: int) -> list[Atoms]:
    """Random triclinic cells of 2-8 atoms, ~12 Å³/atom, atoms >= 2.0 Å apart."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < count:
        n = int(rng.integers(2, 9))
        cell = np.eye(3) * (12.0 * n) ** (1 / 3) + rng.normal(0, 0.25 * (12.0 * n) ** (1 / 3) / 3, (3, 3))
        atoms = Atoms(rng.choice(symbols, n), cell=cell, scaled_positions=rng.uniform(0, 1, (n, 3)), pbc=True)
        d = atoms.get_all_distances(mic=True) + 10 * np.eye(n)
        if d.min() > 2.0:
            out.append(atoms)
    return out


def fcc_cells(count: int, reps, symbols: list[str], seed: int) -> list[Atoms]:
    rng = np.random.default_rng(seed)
    out = []
    for k in range(count):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(reps)
        atoms.symbols = rng.choice(symbols, len(atoms))
        atoms.rattle(0.05, seed=int(rng.integers(1 << 30)))
        out.append(atoms)
    return out


def time_csp_batch(path, structures, species) -> float:
    mtp = read_mtp(path)
    batch = Batch.from_atoms(structures, species)
    calc_efs_batch(mtp, Batch.from_atoms(structures[:2], species))  # warm-up
    best = np.inf
    for _ in range(REPEATS):
        t = time.perf_counter()
        calc_efs_batch(mtp, batch)
        best = min(best, time.perf_counter() - t)
    return best


def time_csp_ase(path, structures, species) -> float:
    calc = MTPCalculator(read_mtp(path), species=species)
    w = structures[0].copy()
    w.calc = calc
    w.get_forces()
    calc.reset()  # else the first structure would be served from the warm-up's cache
    t = time.perf_counter()
    for atoms in structures:
        atoms = atoms.copy()
        atoms.calc = calc
        atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
    return time.perf_counter() - t


def _motep_data(path, species):
    from ase.data import atomic_numbers
    from motep.io.mlip.mtp import read_mtp as motep_read

    data = motep_read(path)
    data.species = [atomic_numbers[s] for s in species]
    return data


def time_motep_ase(path, structures, species) -> float:
    from motep.calculator import MTP as MotepMTP

    data = _motep_data(path, species)
    w = structures[0].copy()
    w.calc = MotepMTP(data, engine="cext")
    w.get_forces()
    calcs = [MotepMTP(data, engine="cext") for _ in structures]
    t = time.perf_counter()
    for atoms, calc in zip(structures, calcs):
        atoms = atoms.copy()
        atoms.calc = calc
        atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
    return time.perf_counter() - t


def time_motep_engine(path, structures, species) -> float:
    from motep.calculator import make_mtp_engine

    data = _motep_data(path, species)
    engine_cls = make_mtp_engine("cext")
    total = 0.0
    for atoms in structures:
        engine = engine_cls(data, mode="run")
        engine.update_neighbor_list(atoms)
        engine.initialize_basis_data(atoms)
        best = np.inf
        for _ in range(REPEATS):
            t = time.perf_counter()
            engine._calculate(atoms)
            best = min(best, time.perf_counter() - t)
        total += best
    return total


METHODS = {"csp batch": time_csp_batch, "csp ASE": time_csp_ase,
           "motep ASE": time_motep_ase, "motep engine": time_motep_engine}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10x fewer structures (100, 100, 2)")
    ap.add_argument("--levels", default="10,16,20")
    args = ap.parse_args()
    q = 10 if args.quick else 1
    cpu = subprocess.run("lscpu | grep 'Model name'", shell=True, capture_output=True, text=True).stdout
    cpu = cpu.split(":", 1)[-1].strip() or platform.processor()
    print(f"# MTP speed, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {cpu}, "
          f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, single thread\n")
    print("| level | species | workload | atoms | " + " | ".join(f"{m} µs/atom" for m in METHODS)
          + " | motep ASE / csp batch | motep engine / csp batch |")
    print("|---|---|---|---|" + "---|" * (len(METHODS) + 2))
    with tempfile.TemporaryDirectory() as tmp:
        for level in [int(x) for x in args.levels.split(",")]:
            for ns, species in SPECIES.items():
                path = potential(level, ns, tmp)
                nbig = max(2, 20 // q)
                workloads = {
                    f"{1000 // q} random 2-8 atoms": random_cells(1000 // q, species, 1),
                    f"{1000 // q} fcc 8 atoms": fcc_cells(1000 // q, (2, 1, 1), species, 2),
                    f"{nbig} fcc 500 atoms": fcc_cells(nbig, (5, 5, 5), species, 3),
                }
                for name, structures in workloads.items():
                    n = sum(len(a) for a in structures)
                    us = {m: fn(path, structures, species) / n * 1e6 for m, fn in METHODS.items()}
                    print(f"| {level} | {ns} | {name} | {n} | "
                          + " | ".join(f"{us[m]:.1f}" for m in METHODS)
                          + f" | {us['motep ASE'] / us['csp batch']:.1f} | "
                            f"{us['motep engine'] / us['csp batch']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
