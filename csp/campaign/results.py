"""What a campaign concluded, read from its store: the ONE final hull (reference energies only).

`final_hull(store, elements)` is used by the pipeline (`Campaign.hull()`), by the report
(`csp.report.data.collect`) and by `csp export`, so all three agree on the same entries.
"""

from __future__ import annotations

from typing import Sequence

from csp.hull import DEFAULT_TOLERANCE, Hull, HullEntry, build_hull

RELAX = "relax"   # reference_calls.kind of a reference relaxation


def reference_entries(store) -> list[HullEntry]:
    """Every successful reference relaxation as a hull entry: id = str(candidate id) (the call's
    key when it has no candidate), energy in eV (the store's energy: E, or E + pV under pressure),
    atoms = the reference-relaxed structure."""
    entries = []
    for rec in store.reference_calls(RELAX):
        if rec.ok and rec.atoms is not None and rec.energy is not None:
            ident = str(rec.candidate_id) if rec.candidate_id is not None else rec.key
            entries.append(HullEntry.from_atoms(rec.atoms, id=ident, energy=rec.energy))
    return entries


def final_hull(store, elements: Sequence[str], tolerance: float = DEFAULT_TOLERANCE) -> Hull:
    """The campaign's convex hull from reference energies only (InputError when it cannot be
    built yet, e.g. no reference relaxation or an element without a pure structure)."""
    return build_hull(reference_entries(store), elements=list(elements), tolerance=tolerance)
