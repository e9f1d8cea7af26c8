"""The k-point mesh rule shared by the plane-wave reference backends (gpaw, vasp, espresso)."""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.calculators.calculator import kptdensity2monkhorstpack


def kpoint_mesh(atoms: Atoms, density: float) -> tuple[int, int, int]:
    """Monkhorst-Pack mesh with at least `density` points per Å⁻¹ of reciprocal length.

    n_i = ceil(2π |b_i| · density) along periodic directions, 1 along non-periodic ones.
    Computed once from the starting cell of a call and kept fixed during a relaxation, so the
    energy is a smooth function of the cell within one call.
    """
    mesh = kptdensity2monkhorstpack(atoms, kptdensity=density, even=False)
    return tuple(int(n) if p else 1 for n, p in zip(np.asarray(mesh), atoms.pbc))
