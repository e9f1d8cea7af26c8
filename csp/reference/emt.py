"""`emt` backend: ASE's effective-medium theory (EMT) potential.

EMT is a stand-in for DFT: it is fast (milliseconds per call), needs no installation and
covers Al, Cu, Ag, Au, Ni, Pd, Pt (plus H, C, N, O with poor accuracy). It lets the
whole pipeline run in minutes for examples and tests; its energies are not DFT energies.
No settings; runs in-process.
"""

from __future__ import annotations

from pathlib import Path

from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.calculators.emt import EMT, parameters as _EMT_PARAMETERS

from csp.validate import fail, mapping

NAME = "emt"
KEYS: tuple[str, ...] = ()
ISOLATION = "inline"
TIMEOUT: float | None = None
FALLBACKS: list[dict] = []
ELEMENTS = tuple(_EMT_PARAMETERS)


def validate(params: dict, where: str) -> dict:
    """EMT has no settings: any key is an error."""
    mapping(params, where, KEYS)
    return {}


def check_elements(params: dict, elements: list[str], where: str) -> None:
    """EMT only knows a few elements; name the first one it does not."""
    for s in elements:
        if s not in _EMT_PARAMETERS:
            fail(where, f"element {s} is not supported by the emt reference (supported: {', '.join(ELEMENTS)})")


def make_calculator(params: dict, atoms: Atoms, directory: Path) -> Calculator:
    return EMT()
