"""Reference calculations: the trusted (DFT) calculator behind one small registry.

Backends, one module each: `emt` (ASE EMT — a fast stand-in for DFT, the default),
`gpaw` (plane-wave DFT), `vasp`, `espresso` (Quantum ESPRESSO), and any ASE calculator by
import path (`custom`). `get_reference(section)` validates the YAML `reference:` section
and returns a `Reference` whose `single_point` and `relax` return an `Outcome` and never
raise for a failed calculation.
"""

from csp.reference.core import BACKENDS, Outcome, Reference, get_reference, validate_section
from csp.reference.operations import ReferenceRelaxSettings

__all__ = ["BACKENDS", "Outcome", "Reference", "ReferenceRelaxSettings", "get_reference", "validate_section"]
