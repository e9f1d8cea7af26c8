"""The reference calculator: `Reference` (built from a YAML section) and `Outcome`.

A call (single point or relaxation) gets its own working directory. Attempts run with the
backend's parameters, then with each fallback in turn, until one succeeds; a call whose
attempts all fail returns ``Outcome(ok=False, reason=...)`` instead of raising.

Layout of a call's working directory::

    input.extxyz          the structure as given
    attempt-1/            calculator files (gpaw.txt, INCAR/OUTCAR, ...), optimizer.log,
                          trajectory.extxyz (relaxations), error.txt on failure
    attempt-2/ ...        one per fallback tried
    output.extxyz         final structure with energy, forces, stress (when ok)
    outcome.json          ok, reason, energy, seconds, per-attempt reasons and timings, settings
    reference.log         one line per attempt
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import ase.io
import numpy as np
from ase import Atoms

from csp.atomic import atomic_write
from csp.reference.operations import AttemptResult, ReferenceRelaxSettings, run_attempt
from csp.validate import did_you_mean, fail, mapping, number, read, show, string

# the registry: calculator name -> backend module (any other calculator: an import path, `custom`)
BACKENDS = {"emt": "csp.reference.emt", "gpaw": "csp.reference.gpaw",
            "vasp": "csp.reference.vasp", "espresso": "csp.reference.espresso"}
DEFAULT_CALCULATOR = "emt"
SECTION_KEYS = ("calculator", "relax", "timeout", "fallbacks", "isolation")
ISOLATIONS = ("inline", "process")
_IMPORT_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")
# Environment variables that make a process believe it is an MPI rank; removed for children.
_MPI_ENV_PREFIXES = ("PMI_", "PMIX_", "OMPI_", "HYDRA_", "MPIR_", "MPI_LOCAL", "I_MPI_")


@dataclass
class Outcome:
    """Result of one reference call.

    ok: the call produced finite energy and forces (a relaxation that used up max_steps is
        still ok, with converged=False). atoms: final structure with a SinglePointCalculator.
    energy: eV (total, σ→0 convention); forces: (N, 3) eV/Å; stress: (6,) eV/Å³ (ASE Voigt
    order, None when the calculator gives none); enthalpy: E + pV in eV (= energy at p = 0).
    reason: '' when ok, else '<kind>: <message>' of the last attempt (kind: scf, timeout, nan,
    error, crash). seconds: wall time of the whole call including retries.
    """

    ok: bool
    atoms: Atoms | None
    energy: float | None
    forces: np.ndarray | None
    stress: np.ndarray | None
    reason: str
    seconds: float
    kind: str = ""
    converged: bool = True
    steps: int = 0
    attempts: int = 0
    enthalpy: float | None = None
    workdir: str = ""
    attempt_reasons: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        """JSON-able summary (no arrays)."""
        return {"ok": self.ok, "energy": self.energy, "enthalpy": self.enthalpy, "reason": self.reason,
                "kind": self.kind, "converged": self.converged, "steps": self.steps,
                "attempts": self.attempts, "attempt_reasons": self.attempt_reasons,
                "seconds": self.seconds, "natoms": None if self.atoms is None else len(self.atoms)}


def backend_module(name: str) -> ModuleType:
    """The backend module for a registry name; import paths use `csp.reference.custom`."""
    return importlib.import_module(BACKENDS.get(name, "csp.reference.custom"))


def _validate_params(name: str, params: dict, where: str) -> dict:
    module = backend_module(name)
    if name in BACKENDS:
        return module.validate(params, where)
    return module.validate(params, where, name)


def _merge(params: dict, override: dict) -> dict:
    """Fallback override on raw YAML parameters; `parameters` mappings merge key by key."""
    out = dict(params)
    for k, v in override.items():
        if k == "parameters" and isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = {**out[k], **v}
        else:
            out[k] = v
    return out


@dataclass(frozen=True)
class Reference:
    """A configured reference calculator. Build it with `get_reference(section)`.

    name: 'emt' | 'gpaw' | 'vasp' | 'espresso' | 'package.module.Class'.
    parameters: validated backend settings. raw: the backend keys as written in the YAML
    (fallbacks are merged onto these and re-validated). relax_settings: see ReferenceRelaxSettings.
    timeout: wall-time limit per attempt in s (None: unlimited). fallbacks: parameter
    overrides tried in order after a failed attempt. isolation: 'inline' (in this process;
    SIGALRM time limit) or 'process' (a child process killed at the time limit).
    """

    name: str
    parameters: dict
    raw: dict
    relax_settings: ReferenceRelaxSettings
    timeout: float | None
    fallbacks: tuple[dict, ...]
    isolation: str

    def settings(self) -> dict:
        """JSON-able description of every setting (for provenance and the report)."""
        return {"calculator": self.name, "parameters": self.parameters, "relax": self.relax_settings.as_dict(),
                "timeout": self.timeout, "fallbacks": list(self.fallbacks), "isolation": self.isolation}

    def section(self) -> dict:
        """A YAML section that rebuilds this Reference with `get_reference`."""
        return {"calculator": self.name, **self.raw, "relax": self.relax_settings.as_dict(),
                "timeout": self.timeout, "fallbacks": list(self.fallbacks), "isolation": self.isolation}

    def attempt_parameters(self) -> list[dict]:
        """Validated parameters of attempt 1 (the settings) and of each fallback."""
        raws = [self.raw] + [_merge(self.raw, fb) for fb in self.fallbacks]
        return [_validate_params(self.name, r, "reference") for r in raws]

    def check_elements(self, elements: list[str], where: str = "elements") -> None:
        """InputError if the backend cannot treat one of `elements` (EMT's short list, missing
        pseudopotentials); call it when the search file is read, before any calculation."""
        check = getattr(backend_module(self.name), "check_elements", None)
        if check is not None:
            check(self.parameters, list(elements), where)

    def calculator(self, atoms: Atoms, directory: str | os.PathLike, attempt: int = 0):
        """The ASE calculator for `atoms` with the settings of attempt `attempt` (0 = no fallback)."""
        params = self.attempt_parameters()[attempt]
        return backend_module(self.name).make_calculator(params, atoms, Path(directory))

    def single_point(self, atoms: Atoms, workdir: str | os.PathLike) -> Outcome:
        """Energy, forces and stress of `atoms` (no relaxation)."""
        return self._call("single_point", atoms, Path(workdir))

    def relax(self, atoms: Atoms, workdir: str | os.PathLike) -> Outcome:
        """Relax positions and cell (FrechetCellFilter) to fmax / stress_tol at the set pressure."""
        return self._call("relax", atoms, Path(workdir))

    # -- internals -------------------------------------------------------------------------
    def _call(self, operation: str, atoms: Atoms, workdir: Path) -> Outcome:
        start = time.time()
        workdir.mkdir(parents=True, exist_ok=True)
        # a call repeated in the same directory (a resumed campaign) starts clean; the log keeps history
        for old in workdir.glob("attempt-*"):
            shutil.rmtree(old, ignore_errors=True)
        for name in ("output.extxyz", "outcome.json"):
            (workdir / name).unlink(missing_ok=True)
        clean = atoms.copy()
        clean.calc = None
        try:
            ase.io.write(workdir / "input.extxyz", clean, format="extxyz", parallel=False)
        except Exception:  # an info entry extxyz cannot store: keep the structure, drop the info
            clean.info = {}
            ase.io.write(workdir / "input.extxyz", clean, format="extxyz", parallel=False)
        records, result = [], AttemptResult(ok=False, kind="error", reason="error: no attempt ran")
        for i, params in enumerate(self.attempt_parameters()):
            adir = workdir / f"attempt-{i + 1}"
            t0 = time.time()
            if self.isolation == "process":
                result = self._attempt_in_child(operation, clean, params, adir)
            else:
                module = backend_module(self.name)
                result = run_attempt(operation, clean, lambda: module.make_calculator(params, clean, adir),
                                     adir, self.relax_settings, self.timeout)
            seconds = time.time() - t0
            records.append({"attempt": i + 1, "ok": result.ok, "reason": result.reason, "seconds": seconds,
                            "parameters": params})
            with open(workdir / "reference.log", "a") as log:
                status = "ok" if result.ok else result.reason
                log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {operation} attempt {i + 1} "
                          f"({self.name}) {seconds:.2f} s: {status}\n")
            if result.ok:
                break
        return self._finish(operation, result, records, workdir, time.time() - start)

    def _finish(self, operation: str, result: AttemptResult, records: list[dict], workdir: Path,
                seconds: float) -> Outcome:
        if result.ok:
            a = result.atoms
            energy = float(a.get_potential_energy())
            try:
                stress = a.get_stress()
            except Exception:  # SinglePointCalculator without stress
                stress = None
            outcome = Outcome(ok=True, atoms=a, energy=energy, forces=a.get_forces(), stress=stress, reason="",
                              seconds=seconds, converged=result.converged, steps=result.steps,
                              enthalpy=float(a.info.get("enthalpy", energy)))
            with atomic_write(workdir / "output.extxyz") as f:
                ase.io.write(f, a, format="extxyz", parallel=False)
        else:
            outcome = Outcome(ok=False, atoms=None, energy=None, forces=None, stress=None, reason=result.reason,
                              seconds=seconds, kind=result.kind)
        outcome.attempts = len(records)
        outcome.attempt_reasons = [r["reason"] for r in records]
        outcome.workdir = str(workdir)
        doc = {"operation": operation, **outcome.summary(), "attempt_log": records, "settings": self.settings()}
        with atomic_write(workdir / "outcome.json") as f:
            f.write(json.dumps(doc, indent=1, default=str))
        return outcome

    def _attempt_in_child(self, operation: str, atoms: Atoms, params: dict, adir: Path) -> AttemptResult:
        """Run one attempt in a child process (own session); kill its process group at the time limit."""
        adir.mkdir(parents=True, exist_ok=True)
        request = {"calculator": self.name, "parameters": params, "operation": operation,
                   "relax": self.relax_settings.as_dict()}
        (adir / "request.json").write_text(json.dumps(request, default=str))
        ase.io.write(adir / "input.extxyz", atoms, format="extxyz", parallel=False)
        env = {k: v for k, v in os.environ.items() if not k.startswith(_MPI_ENV_PREFIXES)}
        env.setdefault("OMP_NUM_THREADS", "1")
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        with open(adir / "stdout.txt", "wb") as out, open(adir / "stderr.txt", "wb") as err:
            child = subprocess.Popen([sys.executable, "-m", "csp.reference.runner", str(adir)], stdout=out,
                                     stderr=err, env=env, start_new_session=True)
            try:
                code = child.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                _kill_group(child)
                return AttemptResult(ok=False, kind="timeout",
                                     reason=f"timeout: exceeded the wall-time limit of {self.timeout:g} s")
            except BaseException:
                _kill_group(child)
                raise
        result_file = adir / "result.json"
        if not result_file.exists():
            lines = [l for l in (adir / "stderr.txt").read_text(errors="replace").splitlines() if l.strip()]
            last = f": {lines[-1].strip()[:200]}" if lines else ""
            return AttemptResult(ok=False, kind="crash",
                                 reason=f"crash: worker process exited with code {code}{last} (see {adir.name}/stderr.txt)")
        res = json.loads(result_file.read_text())
        atoms_out = ase.io.read(adir / "result.extxyz", format="extxyz", parallel=False) if res["ok"] else None
        return AttemptResult(ok=res["ok"], atoms=atoms_out, kind=res["kind"], reason=res["reason"],
                             converged=res["converged"], steps=res["steps"])


def _kill_group(child: subprocess.Popen) -> None:
    import signal

    try:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    child.wait()


def validate_section(section: dict, where: str = "reference") -> None:
    """Check a `reference:` YAML section; raise a one-line InputError naming the key."""
    get_reference(section, where)


def get_reference(section: dict | str | None, where: str = "reference") -> Reference:
    """Build a Reference from its YAML section (a mapping, or just a calculator name).

    Keys: calculator (emt | gpaw | vasp | espresso | package.module.Class; default emt),
    relax {fmax eV/Å, stress_tol GPa, max_steps, pressure GPa, cell, optimizer, keep_symmetry},
    timeout (s per attempt, null = none), fallbacks (list of parameter overrides),
    isolation (inline | process), and the backend's own keys.
    """
    if section is None:
        section = {}
    if isinstance(section, str):
        section = {"calculator": section}
    if not isinstance(section, dict):
        fail(where, f"expected a mapping with key 'calculator', got {show(section)}")
    name = _calculator_name(section.get("calculator", DEFAULT_CALCULATOR), f"{where}.calculator")
    module = backend_module(name)
    mapping(section, where, SECTION_KEYS + tuple(module.KEYS))
    raw = {k: v for k, v in section.items() if k not in SECTION_KEYS}
    parameters = _validate_params(name, raw, where)
    relax = read(ReferenceRelaxSettings, section.get("relax"), f"{where}.relax")
    timeout = section.get("timeout", module.TIMEOUT)
    if timeout is not None:
        timeout = number(timeout, f"{where}.timeout", positive=True)
    fallbacks_raw = section.get("fallbacks", module.FALLBACKS)
    if fallbacks_raw is None:
        fallbacks_raw = []
    if not isinstance(fallbacks_raw, list):
        fail(f"{where}.fallbacks", f"expected a list of mappings, got {show(fallbacks_raw)}")
    fallbacks = []
    for i, fb in enumerate(fallbacks_raw):
        fb = mapping(fb, f"{where}.fallbacks[{i}]")
        _validate_params(name, _merge(raw, fb), f"{where}.fallbacks[{i}]")
        fallbacks.append(fb)
    isolation = string(section.get("isolation", module.ISOLATION), f"{where}.isolation", ISOLATIONS)
    return Reference(name=name, parameters=parameters, raw=raw, relax_settings=relax, timeout=timeout,
                     fallbacks=tuple(fallbacks), isolation=isolation)


def _calculator_name(value, key: str) -> str:
    """A registered calculator (`BACKENDS`) or the import path of an ASE calculator class."""
    name = string(value, key)
    if name not in BACKENDS and not _IMPORT_PATH.match(name):
        fail(key, f"unknown calculator {name!r}{did_you_mean(name, BACKENDS)}; allowed: {', '.join(BACKENDS)} "
                  "or an import path such as ase.calculators.lj.LennardJones")
    return name
