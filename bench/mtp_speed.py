"""MTP evaluation speed against MLIP-3, same machine, same run, CPU time.

Workloads: N random triclinic cells of 4-8 atoms (default 20,000; ~12 Å³/atom, atoms >= 2 Å
apart) and M rattled 500-atom fcc cells (default 10), written once as MLIP .cfg files.
Potentials: the MLIP-trained conformance potentials of levels 10, 16, 20 (cubic_10/16/20).
Timed per level and workload, interleaved, REPEATS times (median reported):
  MLIP-3        `mlp calculate_efs POT IN --output_filename=OUT` (MLIP-2: `mlp calc-efs POT IN OUT`),
                CPU time of the child (resource.getrusage(RUSAGE_CHILDREN)), file I/O included
  csp batched   one csp.mtp.calc_efs_batch call on the whole workload in this process
                (time.process_time; kernels loaded by a warm-up call before timing)
  csp command   `python -m csp mtp calc-efs POT IN OUT`, CPU time of the child: start-up,
                reading and writing the .cfg files included (as MLIP's figure)
Start-up: CPU time of `csp --help`, of `csp mtp calc-efs` on one configuration, and of MLIP's
`calculate_efs` on the same one. Outputs are checked to agree (energy per atom, forces,
PlusStress against MLIP's printed digits). Ratios are csp / MLIP-3 CPU time from this run.

Run by hand, on an otherwise quiet machine if possible:
  nice -n 5 python bench/mtp_speed.py --mlp /path/to/mlp [--count 20000] [--large 10] [--levels 10,16,20]
Without --mlp only csp is timed. MLIP-3 is not a csp dependency: build it outside this
repository (serial, `./configure --no-mpi`) for benchmarking only.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from csp.mtp.evaluate import Batch, calc_efs_batch
from csp.mtp.io import Configuration, read_cfg, read_mtp, write_cfg

ROOT = Path(__file__).resolve().parents[1]
CONF_DIRS = [ROOT / "tests" / "data" / "conformance" / "mtp", Path("/work/shared/conformance/mtp")]
LEVELS = {10: "cubic_10", 16: "cubic_16", 20: "cubic_20"}
_IMAGES = np.array([(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1)], float)


def potential_path(level: int) -> Path:
    for d in CONF_DIRS:
        p = d / LEVELS[level] / "pot.mtp"
        if p.is_file():
            return p
    raise SystemExit(f"no conformance potential {LEVELS[level]}/pot.mtp in {', '.join(map(str, CONF_DIRS))}")


def random_cells(count: int, seed: int, nmin: int = 4, nmax: int = 8, volume: float = 12.0,
                 dmin: float = 2.0) -> list[Configuration]:
    """Random triclinic cells of nmin..nmax atoms (volume Å³/atom), atoms >= dmin Å apart
    (random sequential addition, minimum image over the 27 nearest cells)."""
    rng = np.random.default_rng(seed)
    out: list[Configuration] = []
    while len(out) < count:
        n = int(rng.integers(nmin, nmax + 1))
        edge = (volume * n) ** (1 / 3)
        cell = np.eye(3) * edge + rng.normal(0, 0.25 * edge / 3, (3, 3))
        images = _IMAGES @ cell
        frac = np.empty((n, 3))
        frac[0] = rng.uniform(0, 1, 3)
        k, tries = 1, 0
        while k < n and tries < 32:
            trial = rng.uniform(0, 1, (16, 3))
            d = (trial[:, None, :] - frac[None, :k, :]) @ cell
            dist = np.sqrt(((d[:, :, None, :] + images[None, None]) ** 2).sum(-1)).min(axis=(1, 2))
            ok = np.flatnonzero(dist > dmin)
            if not len(ok):
                tries += 1
                continue
            frac[k] = trial[ok[0]]
            k += 1
        if k == n:
            out.append(Configuration(cell=cell, positions=frac @ cell, types=np.zeros(n, np.int64)))
    return out


def fcc_cells(count: int, seed: int, reps: int = 5, a: float = 3.61, rattle: float = 0.05) -> list[Configuration]:
    """Rattled fcc supercells of 4 reps³ atoms (500 for reps = 5)."""
    rng = np.random.default_rng(seed)
    basis = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    grid = np.array([(i, j, k) for i in range(reps) for j in range(reps) for k in range(reps)], float)
    frac = (grid[:, None, :] + basis[None]).reshape(-1, 3) * a
    out = []
    for _ in range(count):
        pos = frac + rng.normal(0, rattle, frac.shape)
        out.append(Configuration(cell=np.eye(3) * a * reps, positions=pos, types=np.zeros(len(pos), np.int64)))
    return out


def child_cpu(cmd: list[str]) -> float:
    """CPU seconds (user + system) of one child process run to completion."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def mlp_command(mlp: str, pot: Path, cfg_in: Path, cfg_out: Path) -> list[str]:
    listing = subprocess.run([mlp, "list"], capture_output=True, text=True).stdout
    if "calculate_efs" in listing:   # MLIP-3
        return [mlp, "calculate_efs", str(pot), str(cfg_in), f"--output_filename={cfg_out}"]
    return [mlp, "calc-efs", str(pot), str(cfg_in), str(cfg_out)]   # MLIP-2


def csp_command(pot: Path, cfg_in: Path, cfg_out: Path) -> list[str]:
    return [sys.executable, "-m", "csp", "mtp", "calc-efs", str(pot), str(cfg_in), str(cfg_out)]


def deviation(a: list[Configuration], b: list[Configuration]) -> tuple[float, float, float]:
    """Max |ΔE|/atom (eV), max |ΔF| (eV/Å), max |ΔPlusStress| (eV) between two result lists."""
    de = max(abs(x.energy - y.energy) / x.size for x, y in zip(a, b))
    df = max(float(np.abs(x.forces - y.forces).max()) for x, y in zip(a, b))
    ds = max(float(np.abs(x.plus_stress - y.plus_stress).max()) for x, y in zip(a, b))
    return de, df, ds


def batched_results(configs: list[Configuration], res) -> list[Configuration]:
    out, start = [], 0
    for k, c in enumerate(configs):
        out.append(Configuration(cell=c.cell, positions=c.positions, types=c.types, energy=float(res.energies[k]),
                                 forces=res.forces[start:start + c.size],
                                 plus_stress=-res.stresses[k] * abs(np.linalg.det(c.cell))))
        start += c.size
    return out


def machine() -> str:
    model = subprocess.run("lscpu | grep 'Model name'", shell=True, capture_output=True, text=True).stdout
    model = model.split(":", 1)[-1].strip() or platform.processor()
    return f"{model}, {os.cpu_count()} cores"


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mlp", help="MLIP `mlp` binary (serial build); omitted: csp only")
    ap.add_argument("--count", type=int, default=20000, help="random 4-8-atom cells (default 20000)")
    ap.add_argument("--large", type=int, default=10, help="500-atom fcc cells (default 10)")
    ap.add_argument("--levels", default="10,16,20")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    med = statistics.median
    print(f"# MTP evaluation, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {machine()}, "
          f"python {platform.python_version()}, load before {loadavg()}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        workloads = {f"{args.count} random 4-8 atoms": random_cells(args.count, args.seed),
                     f"{args.large} fcc 500 atoms": fcc_cells(args.large, args.seed + 1)}
        files = {}
        for k, (name, cfgs) in enumerate(workloads.items()):
            files[name] = tmp / f"w{k}.cfg"
            write_cfg(files[name], cfgs)
        one = tmp / "one.cfg"
        write_cfg(one, workloads[next(iter(workloads))][:1])

        # start-up: the command on one configuration, and --help
        pot10 = potential_path(levels[0])
        child_cpu(csp_command(pot10, one, tmp / "one_out.cfg"))   # numba cache warm
        start = {"csp --help": [], "csp mtp calc-efs, 1 configuration": []}
        if args.mlp:
            start["mlp calculate_efs, 1 configuration"] = []
        for _ in range(args.repeats):
            start["csp --help"].append(child_cpu([sys.executable, "-m", "csp", "--help"]))
            start["csp mtp calc-efs, 1 configuration"].append(child_cpu(csp_command(pot10, one, tmp / "one_out.cfg")))
            if args.mlp:
                start["mlp calculate_efs, 1 configuration"].append(
                    child_cpu(mlp_command(args.mlp, pot10, one, tmp / "one_mlp.cfg")))
        print("\n| start-up (CPU s, median of %d) | " % args.repeats + " | ".join(start) + " |")
        print("|---|" + "---|" * len(start))
        print("| level %d potential | " % levels[0] + " | ".join(f"{med(v):.2f}" for v in start.values()) + " |")

        print("\n| level | workload | atoms | MLIP-3 µs/atom | csp batched µs/atom | csp command µs/atom "
              "| batched / MLIP-3 | command / MLIP-3 | max ΔE/atom vs MLIP (eV) | max ΔF (eV/Å) | max ΔPlusStress (eV) |")
        print("|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
        for level in levels:
            pot = potential_path(level)
            mtp = read_mtp(pot)
            calc_efs_batch(mtp, Batch.from_configurations(workloads[next(iter(workloads))][:2]))  # load kernels
            for name, cfgs in workloads.items():
                n_atoms = sum(c.size for c in cfgs)
                batch = Batch.from_configurations(cfgs)
                out_csp, out_mlp = tmp / "csp.cfg", tmp / "mlp.cfg"
                t = {"mlp": [], "batch": [], "cmd": []}
                for _ in range(args.repeats):
                    if args.mlp:
                        t["mlp"].append(child_cpu(mlp_command(args.mlp, pot, files[name], out_mlp)))
                    c0 = time.process_time()
                    res = calc_efs_batch(mtp, batch)
                    t["batch"].append(time.process_time() - c0)
                    t["cmd"].append(child_cpu(csp_command(pot, files[name], out_csp)))
                us = {k: med(v) / n_atoms * 1e6 for k, v in t.items() if v}
                ours = read_cfg(out_csp)
                de, df, ds = deviation(batched_results(cfgs, res), ours)   # in-process vs command
                assert de < 1e-9 and df < 1e-5, f"csp command and batched disagree: {de}, {df}"
                if args.mlp:
                    ratio_b = med(b / m for b, m in zip(t["batch"], t["mlp"]))
                    ratio_c = med(c / m for c, m in zip(t["cmd"], t["mlp"]))
                    de, df, ds = deviation(read_cfg(out_mlp), ours)
                    flag = "" if de < 1e-6 and df < 2e-6 and ds < 1e-4 else " DISAGREE"
                    print(f"| {level} | {name} | {n_atoms} | {us['mlp']:.2f} | {us['batch']:.2f} | {us['cmd']:.2f} | "
                          f"{ratio_b:.3f} | {ratio_c:.3f} | {de:.1e} | {df:.1e} | {ds:.1e}{flag} |", flush=True)
                else:
                    print(f"| {level} | {name} | {n_atoms} | – | {us['batch']:.2f} | {us['cmd']:.2f} | – | – | – | – | – |",
                          flush=True)
    print(f"\nload after {loadavg()}")


if __name__ == "__main__":
    main()
