"""`gpaw` backend: PBE (or another functional) plane-wave DFT with GPAW.

Settings (YAML keys, with defaults):
  ecut: 500             plane-wave cutoff, eV. One cutoff for every call of a campaign;
                        cell relaxations need >= 500 eV (Pulay stress).
  kpoint_density: 5.0   k-points per Å⁻¹ of reciprocal length (Γ-centred Monkhorst-Pack mesh,
                        fixed from the starting cell of each call).
  smearing: 0.1         width, eV.
  smearing_type: fermi-dirac   (or marzari-vanderbilt, methfessel-paxton)
  xc: PBE
  spinpol: false         spin-polarised calculation (needed for Fe, Co, Ni, Mn, Cr, ...).
  magmom: 2.0           initial moment per atom, μB, used with spinpol when the structure
                        carries no initial magnetic moments of its own.
  maxiter: 333          SCF iterations.
  mixer_beta: null      density-mixing fraction (GPAW's default when null).
  scf_energy: null      SCF energy convergence, eV per valence electron (GPAW's default when null).
  parameters: {}        further GPAW keyword arguments, passed unchanged.

Energy convention: the energy returned is GPAW's σ→0 extrapolated energy (ASE's
``energy``); the force-consistent free energy is kept as ``free_energy`` in the output.

Parallelism: csp runs one serial GPAW calculation per worker (``OMP_NUM_THREADS=1``).
By default each call runs in a child process that is not part of the MPI job. When GPAW
is run in-process (``isolation: inline``) inside an mpi4py program, csp selects GPAW's
``mpi4py`` MPI backend before GPAW is imported (GPAW refuses its default serial backend
under an MPI launcher) and passes ``communicator=gpaw.mpi.serial_comm`` so that every rank
runs its own single-rank calculation.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ase import Atoms

from csp.reference.kpoints import kpoint_mesh
from csp.validate import boolean, fail, integer, mapping, number, string

NAME = "gpaw"
DEFAULTS = {
    "ecut": 500.0,
    "kpoint_density": 5.0,
    "smearing": 0.1,
    "smearing_type": "fermi-dirac",
    "xc": "PBE",
    "spinpol": False,
    "magmom": 2.0,
    "maxiter": 333,
    "mixer_beta": None,
    "scf_energy": None,
    "parameters": {},
}
KEYS = tuple(DEFAULTS)
SMEARINGS = ("fermi-dirac", "marzari-vanderbilt", "methfessel-paxton")
ISOLATION = "process"
TIMEOUT: float | None = 4 * 3600.0
FALLBACKS = [{"maxiter": 1000, "mixer_beta": 0.02}]
_LAUNCHER_VARIABLES = ("PMI_SIZE", "PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "I_MPI_MPIRUN")


def validate(params: dict, where: str) -> dict:
    mapping(params, where, KEYS)
    p = {**DEFAULTS, **params}
    out = {
        "ecut": number(p["ecut"], f"{where}.ecut", positive=True),
        "kpoint_density": number(p["kpoint_density"], f"{where}.kpoint_density", positive=True),
        "smearing": number(p["smearing"], f"{where}.smearing", lo=0.0),
        "smearing_type": string(p["smearing_type"], f"{where}.smearing_type", SMEARINGS),
        "xc": string(p["xc"], f"{where}.xc"),
        "spinpol": boolean(p["spinpol"], f"{where}.spinpol"),
        "magmom": number(p["magmom"], f"{where}.magmom"),
        "maxiter": integer(p["maxiter"], f"{where}.maxiter", lo=1),
        "mixer_beta": None if p["mixer_beta"] is None else number(p["mixer_beta"], f"{where}.mixer_beta", positive=True),
        "scf_energy": None if p["scf_energy"] is None else number(p["scf_energy"], f"{where}.scf_energy", positive=True),
        "parameters": mapping(p["parameters"], f"{where}.parameters"),
    }
    return out


def setup_dirs() -> list[Path] | None:
    """GPAW's PAW-setup directories (GPAW_SETUP_PATH first, then the `gpaw_data` package), found
    without importing GPAW (whose import under an MPI launcher has side effects); None when they
    cannot be known from here (GPAW not installed, or a ~/.gpaw/rc.py that may change them)."""
    import importlib.util

    if importlib.util.find_spec("gpaw") is None or (Path.home() / ".gpaw" / "rc.py").is_file():
        return None
    dirs = [Path(p) for p in os.environ.get("GPAW_SETUP_PATH", "").split(os.pathsep) if p]
    if importlib.util.find_spec("gpaw_data") is not None:
        import gpaw_data

        dirs.append(Path(gpaw_data.datapath()))
    return dirs


# exchange-correlation functionals whose PAW setups carry their own name (LDA, PBE, ...);
# hybrids and meta-GGAs use the PBE setups (GPAW's `get_setup_name`)
_OWN_SETUPS = ("LDA", "PBE", "revPBE", "RPBE", "GLLBSC", "PW91")


def check_elements(params: dict, elements: list[str], where: str) -> None:
    """Every element needs a PAW setup file (`<El>.<xc>[.gz]`) on GPAW's setup path. Not checked
    when custom `setups` are passed in `parameters`, or when the path cannot be known."""
    if "setups" in params["parameters"]:
        return
    dirs = setup_dirs()
    if dirs is None:
        return
    name = params["xc"] if params["xc"] in _OWN_SETUPS else "PBE"
    missing = [el for el in elements
               if not any((d / f"{el}.{name}").is_file() or (d / f"{el}.{name}.gz").is_file() for d in dirs)]
    if missing:
        shown = ", ".join(str(d) for d in dirs) or "none (install gpaw-data or set GPAW_SETUP_PATH)"
        fail(where, f"no GPAW {name} PAW setup for {', '.join(missing)} in the setup path ({shown})")


def import_gpaw():
    """Import GPAW so that it can run a serial calculation in this process.

    Inside an MPI launcher GPAW's default (serial) MPI backend refuses to start; select its
    mpi4py backend instead (the job already uses mpi4py) unless the user chose one.
    """
    chosen = "gpaw._broadcast_imports" in sys.modules or os.environ.get("GPAW_MPI_BACKEND")
    if not chosen and ("mpi4py.MPI" in sys.modules or any(v in os.environ for v in _LAUNCHER_VARIABLES)):
        os.environ["GPAW_MPI_BACKEND"] = "mpi4py"
        if "gpaw" in sys.modules:  # ASE's plugin discovery may have imported the bare package already
            sys.modules["gpaw"].GPAW_MPI_BACKEND = "mpi4py"
    import gpaw
    import gpaw.mpi
    return gpaw


def calculator_kwargs(params: dict, atoms: Atoms, directory: Path) -> dict:
    """The GPAW keyword arguments for one call (without the communicator)."""
    kwargs = {
        "mode": {"name": "pw", "ecut": params["ecut"]},
        "xc": params["xc"],
        "kpts": {"size": kpoint_mesh(atoms, params["kpoint_density"]), "gamma": True},
        "occupations": {"name": params["smearing_type"], "width": params["smearing"]},
        "spinpol": params["spinpol"],
        "maxiter": params["maxiter"],
        "txt": str(directory / "gpaw.txt"),
    }
    if params["spinpol"]:
        moments = atoms.get_initial_magnetic_moments()
        kwargs["magmoms"] = [float(m) for m in moments] if moments.any() else [params["magmom"]] * len(atoms)
    if params["mixer_beta"] is not None:
        kwargs["mixer"] = {"beta": params["mixer_beta"]}
    if params["scf_energy"] is not None:
        kwargs["convergence"] = {"energy": params["scf_energy"]}
    kwargs.update(params["parameters"])
    return kwargs


def make_calculator(params: dict, atoms: Atoms, directory: Path):
    gpaw = import_gpaw()
    return gpaw.GPAW(communicator=gpaw.mpi.serial_comm, **calculator_kwargs(params, atoms, directory))
