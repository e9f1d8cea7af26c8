"""Calculators that fail on purpose, for the failure-handling tests (imported by path)."""

from __future__ import annotations

import hashlib
import os
import signal
import time

import numpy as np
from ase.calculators.calculator import SCFError, all_changes
from ase.calculators.emt import EMT

FAILURES = ("scf", "nan", "error")


def draw(positions: np.ndarray, seed: int, salt: int) -> tuple[float, str]:
    """Deterministic uniform number in [0, 1) and failure kind for a structure."""
    h = hashlib.sha256(np.round(positions, 6).tobytes() + f"{seed}:{salt}".encode()).digest()
    u = int.from_bytes(h[:8], "little") / 2**64
    return u, FAILURES[h[8] % len(FAILURES)]


class FlakyEMT(EMT):
    """EMT that fails a fraction `fail_rate` of calls, chosen by a seeded hash of the positions.

    `salt` changes the draw: a fallback that sets another salt is an independent retry.
    Failure kinds: SCF non-convergence, NaN energy, a plain exception.
    """

    def __init__(self, fail_rate: float = 0.3, seed: int = 0, salt: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.fail_rate, self.seed, self.salt = fail_rate, seed, salt

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        u, kind = draw(self.atoms.positions, self.seed, self.salt)
        if u < self.fail_rate:
            if kind == "scf":
                raise SCFError("SCF did not converge in 40 iterations (injected)")
            if kind == "nan":
                self.results["energy"] = float("nan")
            else:
                raise RuntimeError("injected calculator crash")


class SlowEMT(EMT):
    """EMT that sleeps `delay` seconds per calculation (for time limits)."""

    def __init__(self, delay: float = 10.0, **kwargs):
        super().__init__(**kwargs)
        self.delay = delay

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        time.sleep(self.delay)
        super().calculate(atoms, properties, system_changes)


class DyingEMT(EMT):
    """EMT whose process is killed (SIGKILL) during the calculation, like an out-of-memory kill."""

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        os.kill(os.getpid(), signal.SIGKILL)
