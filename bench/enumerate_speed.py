"""Enumeration speed: csp vs icet's enumerate_structures, same machine, same run.

Both produce ase.Atoms for every structure; the counts must agree. icet is a benchmark-only
dependency (`pip install icet`). Usage: OMP_NUM_THREADS=1 python bench/enumerate_speed.py
"""

from __future__ import annotations

import platform
import subprocess
import time

from ase.build import bulk

from csp.structures.enumerate import count_structures, enumerate_structures

CASES = [  # (label, csp lattice, icet primitive, elements, cells, sites per cell)
    ("fcc binary, 1-10 cells", "fcc", bulk("Cu", "fcc", a=3.6), ["Cu", "Pd"], 10, 1),
    ("fcc ternary, 1-6 cells", "fcc", bulk("Cu", "fcc", a=3.6), ["Cu", "Pd", "Ag"], 6, 1),
    ("bcc binary, 1-10 cells", "bcc", bulk("Fe", "bcc", a=2.87), ["Fe", "Al"], 10, 1),
    ("hcp binary, 1-5 cells", "hcp", bulk("Mg", "hcp", a=3.2, c=3.2 * (8 / 3) ** 0.5),
     ["Mg", "Zn"], 5, 2),
]
LARGE = [("fcc binary, 1-16 cells", "fcc", ["Cu", "Pd"], 16),
         ("fcc ternary, 1-10 cells", "fcc", ["Cu", "Pd", "Ag"], 10)]


def _time(gen) -> tuple[int, float]:
    """(number of structures, CPU seconds): CPU time, because the machine is shared."""
    t = time.process_time()
    n = sum(1 for _ in gen)
    return n, time.process_time() - t


def main() -> None:
    from icet.tools import enumerate_structures as icet_enumerate

    cpu = subprocess.run("lscpu | grep 'Model name'", shell=True, capture_output=True,
                         text=True).stdout.split(":")[-1].strip()
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {cpu}, "
          f"python {platform.python_version()}")
    sum(1 for _ in enumerate_structures("fcc", "Cu,Pd", 4))  # numba warm-up (cached)
    load = " ".join(open("/proc/loadavg").read().split()[:3])
    print(f"# CPU seconds (process_time); load average {load}")
    print("| case | structures | csp s | csp /s | icet s | icet /s | csp / icet |")
    print("|---|---|---|---|---|---|---|")
    for label, lattice, prim, elements, cells, d in CASES:
        n_csp, t_csp = _time(enumerate_structures(lattice, elements, cells * d))
        n_icet, t_icet = _time(icet_enumerate(prim, range(1, cells + 1), elements))
        assert n_csp == n_icet, (label, n_csp, n_icet)
        print(f"| {label} | {n_csp} | {t_csp:.2f} | {n_csp / t_csp:,.0f} | {t_icet:.2f} | "
              f"{n_icet / t_icet:,.0f} | {t_icet / t_csp:.1f}x |")
    print()
    print("| csp only | structures | s | /s | count only, s |")
    print("|---|---|---|---|---|")
    for label, lattice, elements, cells in LARGE:
        n, t = _time(enumerate_structures(lattice, elements, cells))
        t0 = time.process_time()
        assert count_structures(lattice, elements, cells) == n
        tc = time.process_time() - t0
        print(f"| {label} | {n} | {t:.1f} | {n / t:,.0f} | {tc:.1f} |")


if __name__ == "__main__":
    main()
