"""`vasp` backend: VASP through ASE's ``Vasp`` calculator (for clusters where VASP exists).

Settings (YAML keys, with defaults):
  command: null          how to run VASP (``mpirun -n 16 vasp_std``); null = ASE's
                         ``ASE_VASP_COMMAND`` / ``VASP_COMMAND`` environment variables.
  kpoint_density: 5.0    k-points per Å⁻¹ (Γ-centred mesh fixed from the starting cell).
  parameters: {}         INCAR keywords in ASE's spelling, merged over csp's defaults:
                         xc=PBE, encut=520, prec=Accurate, ediff=1e-6, ismear=1, sigma=0.1,
                         lreal=False, lwave=False, lcharg=False.
POTCARs are found by ASE through ``VASP_PP_PATH``. The energy is VASP's σ→0 energy
(``energy(sigma->0)``, ASE's ``energy``). An unconverged electronic loop counts as an SCF
failure. Runs in a child process by default so that a time limit also stops VASP.
"""

from __future__ import annotations

from pathlib import Path

from ase import Atoms

from csp.reference.kpoints import kpoint_mesh
from csp.validate import fail, mapping, number, string

NAME = "vasp"
INCAR_DEFAULTS = {"xc": "PBE", "encut": 520, "prec": "Accurate", "ediff": 1e-6, "ismear": 1,
                  "sigma": 0.1, "lreal": False, "lwave": False, "lcharg": False}
KEYS = ("command", "kpoint_density", "parameters")
ISOLATION = "process"
TIMEOUT: float | None = 12 * 3600.0
FALLBACKS = [{"parameters": {"nelm": 300, "algo": "All", "amix": 0.05, "bmix": 0.0001}}]


def validate(params: dict, where: str) -> dict:
    mapping(params, where, KEYS)
    command = params.get("command")
    return {
        "command": None if command is None else string(command, f"{where}.command"),
        "kpoint_density": number(params.get("kpoint_density", 5.0), f"{where}.kpoint_density", positive=True),
        "parameters": {**INCAR_DEFAULTS, **mapping(params.get("parameters"), f"{where}.parameters")},
    }


def check_elements(params: dict, elements: list[str], where: str) -> None:
    """Every element needs its POTCAR under VASP_PP_PATH, looked up as ASE's Vasp does it (xc,
    pp, pp_version and setups taken into account). Not checked when VASP_PP_PATH is unknown here
    (it may be set only on the compute nodes) or ASE cannot tell."""
    import warnings

    from ase.config import cfg

    with warnings.catch_warnings():   # ASE warns that VASP_PP_PATH should move to its config file
        warnings.simplefilter("ignore")
        pp_path = cfg.get("VASP_PP_PATH")
        if not pp_path:
            return
        from ase.calculators.vasp import Vasp

        try:
            calc = Vasp(directory=".", command=params["command"], **params["parameters"])
        except Exception:  # noqa: BLE001 - a setting ASE refuses is reported by the calculation itself
            return
        missing = []
        for el in elements:
            try:
                calc._build_pp_list(Atoms(el))
            except RuntimeError:
                missing.append(el)
            except Exception:  # noqa: BLE001 - another ASE version: cannot check
                return
    if missing:
        fail(where, f"no VASP POTCAR for {', '.join(missing)} under VASP_PP_PATH={pp_path!r} "
                    f"(pp {calc.input_params.get('pp')!r}, setups {calc.input_params.get('setups')!r})")


def make_calculator(params: dict, atoms: Atoms, directory: Path):
    from ase.calculators.vasp import Vasp

    return Vasp(directory=str(directory), command=params["command"],
                kpts=kpoint_mesh(atoms, params["kpoint_density"]), gamma=True, **params["parameters"])
