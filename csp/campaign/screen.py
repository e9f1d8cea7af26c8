"""Screening: the convex hull of MTP energies and the window of candidates kept above it.

After a stage, every relaxed candidate has an MTP energy; those within the stage's bound (window ×
audited σ, csp.campaign.audit; eV/atom) of the MTP convex hull survive to the next stage.
The hull is built once per distinct composition (the lowest energy there), so the cost grows with
the number of compositions, not of candidates. Energies in eV/atom.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from pymatgen.core import Composition

from csp.errors import InputError
from csp.hull import HullEntry, build_hull


@dataclass(frozen=True)
class ScreenEntry:
    """One relaxed candidate: id, composition {element: count}, energy per atom (eV/atom)."""

    id: int
    composition: Mapping[str, float]
    energy_per_atom: float


def energies_above_hull(entries: Sequence[ScreenEntry], elements: Sequence[str]) -> dict[int, float]:
    """Energy above the convex hull (eV/atom, ≥ 0 up to rounding) of every entry.

    The hull (`csp.hull.build_hull`) is built from the lowest energy of each reduced composition.
    Compositions are resolved once per distinct cell composition (a pool of 10^5 structures has
    a few hundred), so neither time nor memory grows with a pymatgen object per entry."""
    reduced: dict[tuple, Composition] = {}

    def reduce(counts: Mapping[str, float]) -> Composition:
        key = tuple(sorted((el, n) for el, n in counts.items() if n))
        if key not in reduced:
            reduced[key] = Composition(dict(key)).reduced_composition
        return reduced[key]

    best: dict[Composition, ScreenEntry] = {}
    for e in entries:
        comp = reduce(e.composition)
        if np.isfinite(e.energy_per_atom) and (comp not in best or e.energy_per_atom < best[comp].energy_per_atom):
            best[comp] = e
    missing = [el for el in elements if Composition(el) not in best]
    if missing:
        raise InputError(f"no relaxed candidate of pure {', '.join(missing)}: the hull needs every element "
                         "(enable candidates.enumerate or include an elemental prototype)")
    hull_entries = [HullEntry(id=str(e.id), composition={str(k): float(v) for k, v in c.as_dict().items()},
                              energy=e.energy_per_atom * c.num_atoms) for c, e in best.items()]
    hull = build_hull(hull_entries, elements)
    # per reduced composition: the formation energy is linear in the energy per atom,
    # E_f(e) = e − ref(c), and the hull's formation energy there is fixed
    ref: dict[Composition, float] = {}
    floor: dict[Composition, float] = {}
    for c in set(reduced.values()):
        comp = {str(k): float(v) for k, v in c.as_dict().items()}
        ref[c] = -hull.formation_energy(comp, 0.0)
        floor[c] = hull.hull_energy(comp)
    out = {}
    for e in entries:
        if not np.isfinite(e.energy_per_atom):
            out[e.id] = float("inf")
            continue
        c = reduce(e.composition)
        out[e.id] = float(e.energy_per_atom - ref[c] - floor[c])
    return out


def within_window(entries: Sequence[ScreenEntry], elements: Sequence[str], bound: float) -> tuple[list[int], dict[int, float]]:
    """Ids of entries at most `bound` eV/atom above the hull (sorted), and every e_above_hull."""
    if bound < 0:
        raise ValueError("bound must be non-negative")
    above = energies_above_hull(entries, elements)
    kept = sorted(i for i, d in above.items() if d <= bound)
    return kept, above
