"""Deduplication speed: 100,000 structures on one core.

Pool: distinct derivative structures (fcc, bcc, hcp; binary and ternary Cu-Pd-Ag) plus
disguised copies of randomly chosen ones (supercell for small cells, random rotation,
translation, atom shuffle, ±5 % volume, 0.005 Å rattle), shuffled. Reports the time of
`deduplicate`, the number of groups, and whether every copy landed with its original.
Usage: OMP_NUM_THREADS=1 python bench/dedup_speed.py [N]
"""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np

from csp.structures.dedup import Deduplicator
from csp.structures.enumerate import enumerate_structures

# (lattice, elements, max atoms, every element present): no structure appears twice
SOURCES = [("fcc", "Cu,Pd", 12, False), ("bcc", "Cu,Pd", 12, False), ("hcp", "Cu,Pd", 10, False),
           ("fcc", "Cu,Pd,Ag", 8, True), ("bcc", "Cu,Pd,Ag", 8, True), ("hcp", "Cu,Pd,Ag", 8, True)]


def disguise(atoms, rng):
    b = atoms.repeat((2, 1, 1)) if len(atoms) <= 4 else atoms.copy()
    b.rotate(rng.uniform(0, 360), rng.normal(size=3), rotate_cell=True)
    b.translate(rng.normal(size=3))
    b = b[rng.permutation(len(b))]
    b.set_cell(b.cell * rng.uniform(0.95, 1.05) ** (1 / 3), scale_atoms=True)
    b.positions += rng.normal(0.0, 0.005, b.positions.shape)
    return b


def main(total: int = 100_000) -> None:
    rng = np.random.default_rng(0)
    distinct = [a for lat, el, n, full in SOURCES
                for a in enumerate_structures(lat, el, n, all_species=full)]
    n_copies = max(total - len(distinct), 0)
    originals = rng.integers(0, len(distinct), n_copies)
    pool = distinct + [disguise(distinct[i], rng) for i in originals]
    truth = np.concatenate([np.arange(len(distinct)), originals])
    order = rng.permutation(len(pool))
    pool = [pool[i] for i in order]
    truth = truth[order]
    cpu = subprocess.run("lscpu | grep 'Model name'", shell=True, capture_output=True,
                         text=True).stdout.split(":")[-1].strip()
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {cpu}")
    print(f"pool: {len(pool)} structures = {len(distinct)} distinct + {n_copies} copies, "
          f"{np.mean([len(a) for a in pool]):.1f} atoms on average")
    Deduplicator().add(pool[0])  # numba warm-up (cached)
    dedup = Deduplicator()
    t, c = time.perf_counter(), time.process_time()
    ids = np.array([dedup.add(a) for a in pool])
    elapsed, cpu_s = time.perf_counter() - t, time.process_time() - c
    # every copy must share its original's id
    first_id = {}
    split = 0
    for ident, orig in zip(ids, truth):
        split += first_id.setdefault(orig, ident) != ident
    load = subprocess.run("cat /proc/loadavg", shell=True, capture_output=True,
                          text=True).stdout.split()[:3]
    print(f"CPU time {cpu_s:.1f} s ({len(pool) / cpu_s:,.0f} structures/s), wall {elapsed:.1f} s "
          f"(load average {' '.join(load)} on this shared machine); "
          f"{len(dedup)} groups for {len(distinct)} distinct inputs; copies split from their "
          f"original: {split}; matcher calls {dedup.n_matcher_calls}, standard-cell matches "
          f"{dedup.n_fast_matches}, spglib calls {dedup.n_symmetry_calls}, space-group "
          f"rescues {dedup.n_symmetry_rescues}")
    # peer, same run: pymatgen's StructureMatcher.group_structures on the first 2,000
    from pymatgen.analysis.structure_matcher import StructureMatcher
    from pymatgen.io.ase import AseAtomsAdaptor

    sub = pool[:2000]
    t = time.process_time()
    d2 = Deduplicator()
    for a in sub:
        d2.add(a)
    t_csp = time.process_time() - t
    t = time.process_time()
    groups = StructureMatcher().group_structures([AseAtomsAdaptor.get_structure(a) for a in sub])
    t_pmg = time.process_time() - t
    print(f"first 2,000 (CPU time): csp {t_csp:.1f} s ({len(d2)} groups), StructureMatcher.group_structures "
          f"{t_pmg:.1f} s ({len(groups)} groups): {t_pmg / t_csp:.0f}x")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
