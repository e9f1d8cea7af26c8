"""One attempt of a reference call: a single point or a relaxation with one calculator.

Runs in the calling process (``inline``) or in the child process started by
`csp.reference.runner`. Never raises for a failed calculation: the result says what failed.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import ase.io
import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import PropertyNotImplementedError, SCFError
from ase.calculators.singlepoint import SinglePointCalculator
from ase.parallel import DummyMPI

from csp.validate import setting, to_yaml

OPTIMIZERS = ("BFGS", "LBFGS", "FIRE", "BFGSLineSearch")


@dataclass(frozen=True)
class ReferenceRelaxSettings:
    """The reference calculator's relaxation (`reference.relax`; ASE optimizers on a
    FrechetCellFilter): fmax eV/Å, stress_tol and pressure eV/Å³ (GPa in the YAML). Not the
    screening's batched MTP relaxation (`screening.relax`: `csp.config.MTPRelaxSettings`)."""

    fmax: float = setting(0.01, positive=True)
    stress_tol: float = setting(0.1 * units.GPa, unit=units.GPa, positive=True)
    max_steps: int = setting(300, lo=1)
    pressure: float = setting(0.0, unit=units.GPa)
    cell: bool = setting(True)
    optimizer: str = setting("BFGS", choices=OPTIMIZERS)
    keep_symmetry: bool = setting(False)

    def as_dict(self) -> dict:
        """YAML-style dictionary (pressure and stress_tol in GPa) that `csp.validate.read` reads back."""
        return to_yaml(self)


@dataclass
class AttemptResult:
    """What one attempt produced; `kind` is '' on success, else scf|timeout|nan|error|crash."""

    ok: bool
    atoms: Atoms | None = None
    kind: str = ""
    reason: str = ""
    converged: bool = True
    steps: int = 0


class CallTimeout(Exception):
    """Raised inside an inline attempt when its wall-time limit has passed."""


class NonFinite(Exception):
    """The calculator returned NaN or infinite energy, forces or stress."""


class NotConvergedSCF(SCFError):
    """The calculator finished but reports an unconverged electronic loop (VASP)."""


@contextlib.contextmanager
def wall_time_limit(seconds: float | None):
    """Raise CallTimeout in this thread after `seconds` (SIGALRM; main thread only).

    Off the main thread no alarm can be set: the caller's deadline is then checked between
    optimizer steps only (use ``isolation: process`` for a hard limit).
    """
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def _alarm(signum, frame):
        raise CallTimeout(f"exceeded the wall-time limit of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def classify(exc: BaseException) -> tuple[str, str]:
    """Failure kind and one-line reason for an exception raised by a calculation."""
    name = type(exc).__name__
    if isinstance(exc, CallTimeout):
        kind = "timeout"
    elif isinstance(exc, NonFinite):
        kind = "nan"
    elif isinstance(exc, SCFError) or "Convergence" in name or "SCF" in name:
        kind = "scf"
    else:
        kind = "error"
    text = " ".join(str(exc).split())
    if not text:
        text = "the electronic loop did not converge" if kind == "scf" else "(no message)"
    if isinstance(exc, (CallTimeout, NonFinite)):
        return kind, f"{kind}: {text}"[:400]
    return kind, f"{kind}: {name}: {text}"[:400]


def _results(atoms: Atoms, want_stress: bool) -> tuple[float, np.ndarray, np.ndarray | None]:
    energy = atoms.get_potential_energy()
    forces = atoms.get_forces()
    stress = None
    if want_stress:
        try:
            stress = atoms.get_stress()
        except PropertyNotImplementedError:
            stress = None
    calc = atoms.calc
    if getattr(calc, "converged", True) is False:
        raise NotConvergedSCF("the calculator reports an unconverged electronic loop")
    values = [energy, forces] + ([stress] if stress is not None else [])
    if not all(np.all(np.isfinite(v)) for v in values):
        raise NonFinite("non-finite energy, forces or stress")
    return float(energy), np.array(forces), None if stress is None else np.array(stress)


def _final(atoms: Atoms, energy: float, forces: np.ndarray, stress: np.ndarray | None,
           pressure: float) -> Atoms:
    """Copy of `atoms` with results frozen in a SinglePointCalculator (plus info entries)."""
    free = None
    if atoms.calc is not None and "free_energy" in getattr(atoms.calc, "results", {}):
        free = float(atoms.calc.results["free_energy"])
    out = atoms.copy()
    out.set_constraint()
    for key in ("energy", "free_energy", "forces", "stress", "enthalpy"):
        out.info.pop(key, None)
    out.calc = SinglePointCalculator(out, energy=energy, forces=forces, stress=stress,
                                     **({"free_energy": free} if free is not None else {}))
    if pressure:
        out.info["enthalpy"] = energy + pressure * out.get_volume()
    return out


def single_point(atoms: Atoms, calc, directory: Path) -> AttemptResult:
    """Energy, forces and (when the calculator provides it) stress of `atoms`."""
    work = atoms.copy()
    work.calc = calc
    energy, forces, stress = _results(work, want_stress=bool(work.pbc.all()))
    return AttemptResult(ok=True, atoms=_final(work, energy, forces, stress, 0.0))


def relax(atoms: Atoms, calc, directory: Path, settings: ReferenceRelaxSettings,
          deadline: float | None = None, log: Callable[[str], None] | None = None) -> AttemptResult:
    """Relax positions (and the cell, FrechetCellFilter) until max force <= fmax and
    max |σ + p·I| <= stress_tol, or max_steps optimizer steps. Trajectory in trajectory.extxyz."""
    import ase.optimize
    from ase.filters import FrechetCellFilter

    work = atoms.copy()
    work.calc = calc
    cell = settings.cell and bool(work.pbc.all())
    if settings.keep_symmetry:
        from ase.constraints import FixSymmetry
        work.set_constraint(FixSymmetry(work))
    target = FrechetCellFilter(work, scalar_pressure=settings.pressure) if cell else work
    # a one-process communicator: each MPI rank relaxes its own structure and writes its own log
    # (with ASE's default, the MPI world, only rank 0 would write files)
    optimizer = getattr(ase.optimize, settings.optimizer)(target, logfile=str(directory / "optimizer.log"),
                                                          comm=DummyMPI())
    traj = directory / "trajectory.extxyz"
    target_stress = -settings.pressure * np.array([1, 1, 1, 0, 0, 0], float)
    converged = False
    for _ in optimizer.irun(fmax=0.0, steps=settings.max_steps):
        energy, forces, stress = _results(work, want_stress=cell)
        if cell and stress is None:
            raise PropertyNotImplementedError("cell relaxation needs the stress, which this calculator does not provide")
        ase.io.write(traj, _final(work, energy, forces, stress, settings.pressure), format="extxyz", append=True, parallel=False)
        fmax = float(np.sqrt((forces**2).sum(axis=1)).max()) if len(work) else 0.0
        smax = float(np.abs(stress - target_stress).max()) if cell else 0.0
        if fmax <= settings.fmax and smax <= settings.stress_tol:
            converged = True
            break
        if deadline is not None and time.time() > deadline:
            raise CallTimeout("exceeded the wall-time limit (checked between optimizer steps)")
    steps = optimizer.nsteps
    energy, forces, stress = _results(work, want_stress=cell)
    if log is not None:
        log(f"relaxation {'converged' if converged else 'NOT converged'} after {steps} steps")
    return AttemptResult(ok=True, atoms=_final(work, energy, forces, stress, settings.pressure),
                         converged=converged, steps=steps)


def run_attempt(operation: str, atoms: Atoms, make_calc: Callable[[], object], directory: Path,
                settings: ReferenceRelaxSettings, timeout: float | None = None) -> AttemptResult:
    """Build the calculator and run `operation` ('single_point' or 'relax'), catching failures.

    The traceback of a failure is written to ``directory/error.txt``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    deadline = None if not timeout else time.time() + timeout
    try:
        with wall_time_limit(timeout):
            calc = make_calc()
            if operation == "single_point":
                return single_point(atoms, calc, directory)
            return relax(atoms, calc, directory, settings, deadline=deadline)
    except Exception as exc:  # failures are data: every exception becomes a recorded result
        kind, reason = classify(exc)
        (directory / "error.txt").write_text(traceback.format_exc())
        return AttemptResult(ok=False, kind=kind, reason=reason)
