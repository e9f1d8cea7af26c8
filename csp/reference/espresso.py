"""`espresso` backend: Quantum ESPRESSO ``pw.x`` through ASE's ``Espresso`` calculator.

Settings (YAML keys, with defaults):
  command: pw.x          how to run pw.x (``mpirun -n 16 pw.x``); ASE adds ``-in espresso.pwi``.
  pseudo_dir: required   directory holding the pseudopotentials.
  pseudopotentials: required   mapping element -> file name, e.g. {Cu: Cu.pbe-dn-kjpaw_psl.1.0.0.UPF}.
  kpoint_density: 5.0    k-points per Å⁻¹ (Γ-centred mesh fixed from the starting cell).
  parameters: {}         pw.x namelist keywords (ASE's ``input_data``), merged over csp's defaults:
                         ecutwfc=60 Ry, occupations=smearing, smearing=mv, degauss=0.01 Ry,
                         conv_thr=1e-8, tprnfor=True, tstress=True.
Energy convention: pw.x reports the free energy; with cold (Marzari-Vanderbilt) smearing
of 0.01 Ry it differs from the σ→0 energy by well under 1 meV/atom. Keep one smearing
and one cutoff across a campaign. Runs in a child process by default.
"""

from __future__ import annotations

from pathlib import Path

from ase import Atoms

from csp.reference.kpoints import kpoint_mesh
from csp.validate import fail, mapping, number, string

NAME = "espresso"
INPUT_DEFAULTS = {"ecutwfc": 60.0, "occupations": "smearing", "smearing": "mv", "degauss": 0.01,
                  "conv_thr": 1e-8, "tprnfor": True, "tstress": True}
KEYS = ("command", "pseudo_dir", "pseudopotentials", "kpoint_density", "parameters")
ISOLATION = "process"
TIMEOUT: float | None = 12 * 3600.0
FALLBACKS = [{"parameters": {"electron_maxstep": 300, "mixing_beta": 0.2}}]


def validate(params: dict, where: str) -> dict:
    mapping(params, where, KEYS)
    if "pseudopotentials" not in params:
        fail(f"{where}.pseudopotentials", "required: a mapping element -> pseudopotential file")
    if "pseudo_dir" not in params:
        fail(f"{where}.pseudo_dir", "required: the directory holding the pseudopotentials")
    pseudos = mapping(params["pseudopotentials"], f"{where}.pseudopotentials")
    for element, name in pseudos.items():
        string(name, f"{where}.pseudopotentials.{element}")
    return {
        "command": string(params.get("command", "pw.x"), f"{where}.command"),
        "pseudo_dir": string(params["pseudo_dir"], f"{where}.pseudo_dir"),
        "pseudopotentials": pseudos,
        "kpoint_density": number(params.get("kpoint_density", 5.0), f"{where}.kpoint_density", positive=True),
        "parameters": {**INPUT_DEFAULTS, **mapping(params.get("parameters"), f"{where}.parameters")},
    }


def check_elements(params: dict, elements: list[str], where: str) -> None:
    """Every element needs a pseudopotential in `pseudopotentials`, and its file in `pseudo_dir`."""
    missing = sorted(set(elements) - set(params["pseudopotentials"]))
    if missing:
        fail("reference.pseudopotentials", f"no pseudopotential for {', '.join(missing)} (needed by {where})")
    pseudo_dir = Path(params["pseudo_dir"]).expanduser()
    if not pseudo_dir.is_dir():
        fail("reference.pseudo_dir", f"directory {str(pseudo_dir)!r} not found")
    absent = [f"{el}: {params['pseudopotentials'][el]}" for el in elements
              if not (pseudo_dir / params["pseudopotentials"][el]).is_file()]
    if absent:
        fail("reference.pseudopotentials", f"file not found in pseudo_dir {str(pseudo_dir)!r}: {', '.join(absent)}")


def make_calculator(params: dict, atoms: Atoms, directory: Path):
    from ase.calculators.espresso import Espresso, EspressoProfile

    missing = sorted(set(atoms.get_chemical_symbols()) - set(params["pseudopotentials"]))
    if missing:
        fail("reference.pseudopotentials", f"no pseudopotential for {', '.join(missing)}")
    profile = EspressoProfile(command=params["command"], pseudo_dir=params["pseudo_dir"])
    return Espresso(profile=profile, directory=str(directory), input_data=dict(params["parameters"]),
                    pseudopotentials=dict(params["pseudopotentials"]),
                    kpts=kpoint_mesh(atoms, params["kpoint_density"]), koffset=(0, 0, 0))
