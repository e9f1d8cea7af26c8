"""Screening: the convex hull of MTP energies and the window of candidates kept above it.

After a stage, every relaxed candidate has an MTP energy; those within `window × σ` (σ the stage
potential's cross-validated RMSE, eV/atom) of the MTP convex hull survive to the next stage.
The hull is built once per distinct composition (the lowest energy there), so the cost grows with
the number of compositions, not of candidates. Energies in eV/atom.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
from pymatgen.core import Composition

from csp.errors import InputError


@dataclass(frozen=True)
class ScreenEntry:
    """One relaxed candidate: id, composition {element: count}, energy per atom (eV/atom)."""

    id: int
    composition: Mapping[str, float]
    energy_per_atom: float


def energies_above_hull(entries: Sequence[ScreenEntry], elements: Sequence[str]) -> dict[int, float]:
    """Energy above the convex hull (eV/atom, ≥ 0 up to rounding) of every entry."""
    by_comp: dict[Composition, float] = {}
    comps = []
    for e in entries:
        comp = Composition({el: n for el, n in e.composition.items() if n}).reduced_composition
        comps.append(comp)
        if not np.isfinite(e.energy_per_atom):
            continue
        if comp not in by_comp or e.energy_per_atom < by_comp[comp]:
            by_comp[comp] = e.energy_per_atom
    present = {str(el) for comp in by_comp for el in comp.elements}
    missing = [el for el in elements if el not in present or Composition(el) not in by_comp]
    if missing:
        raise InputError(f"no relaxed candidate of pure {', '.join(missing)}: the hull needs every element "
                         "(enable candidates.enumerate or include an elemental prototype)")
    pd = PhaseDiagram([PDEntry(c, e * c.num_atoms) for c, e in by_comp.items()])
    hull_at = {c: pd.get_hull_energy_per_atom(c) for c in by_comp}
    return {e.id: float(e.energy_per_atom - hull_at[c]) if np.isfinite(e.energy_per_atom) else float("inf")
            for e, c in zip(entries, comps)}


def within_window(entries: Sequence[ScreenEntry], elements: Sequence[str], window: float) -> tuple[list[int], dict[int, float]]:
    """Ids of entries at most `window` eV/atom above the hull (sorted), and every e_above_hull."""
    if window < 0:
        raise ValueError("window must be non-negative")
    above = energies_above_hull(entries, elements)
    kept = sorted(i for i, d in above.items() if d <= window)
    return kept, above
