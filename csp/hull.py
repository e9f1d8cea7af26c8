"""Convex hull of formation energies (pymatgen `PhaseDiagram`) for any number of elements.

Energies are eV per atom; e_above_hull and formation energies are eV/atom (tables show
meV/atom). Elemental references are the lowest-energy structure of each pure element in
the set; an element without any pure structure is an input error. A structure is "on the
hull" (`stable`) when it is a vertex of the hull, and "near hull" when it lies within
`tolerance` (default 1 meV/atom) of it — which includes structures exactly on a hull facet.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from ase import Atoms
from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
from pymatgen.core import Composition, Element

from csp.errors import InputError

DEFAULT_TOLERANCE = 0.001  # eV/atom


def atom_counts(atoms: Atoms) -> dict[str, float]:
    """Composition of a structure as {element: number of atoms in the cell}."""
    comp: dict[str, float] = {}
    for el in atoms.get_chemical_symbols():
        comp[el] = comp.get(el, 0.0) + 1.0
    return comp


@dataclass(frozen=True)
class HullEntry:
    """One structure with its total energy. composition: element -> atoms in the cell; energy: eV."""

    id: str
    composition: dict[str, float]
    energy: float
    atoms: Atoms | None = field(default=None, compare=False, repr=False)

    @property
    def natoms(self) -> float:
        return float(sum(self.composition.values()))

    @property
    def energy_per_atom(self) -> float:
        return self.energy / self.natoms

    @classmethod
    def from_atoms(cls, atoms: Atoms, id: str | None = None, energy: float | None = None) -> "HullEntry":
        """Entry from an Atoms object; energy (eV) from the argument, its calculator or info['energy']."""
        if energy is None:
            energy = atoms_energy(atoms)
        if energy is None:
            raise InputError(f"structure {id or atoms.get_chemical_formula()} has no energy")
        comp = atom_counts(atoms)
        ident = id if id is not None else str(atoms.info.get("id", atoms.get_chemical_formula()))
        return cls(id=ident, composition=comp, energy=float(energy), atoms=atoms)


@dataclass(frozen=True)
class HullRow:
    """Hull quantities of one entry (eV/atom). composition: atomic fractions over `Hull.elements`.
    decomposition: id -> fraction of atoms of the hull phases it decomposes into (itself if stable)."""

    id: str
    formula: str
    composition: dict[str, float]
    natoms: int
    energy_per_atom: float
    formation_energy_per_atom: float
    e_above_hull: float
    decomposition: dict[str, float]
    stable: bool
    near_hull: bool

    def as_dict(self) -> dict:
        return {"id": self.id, "formula": self.formula, "composition": self.composition, "natoms": self.natoms,
                "energy_per_atom": self.energy_per_atom, "formation_energy_per_atom": self.formation_energy_per_atom,
                "e_above_hull": self.e_above_hull, "decomposition": self.decomposition,
                "stable": self.stable, "near_hull": self.near_hull}


@dataclass
class Hull:
    """A built hull: `rows` in the order of `entries`; `references` element -> id of its reference."""

    elements: list[str]
    entries: list[HullEntry]
    rows: list[HullRow]
    references: dict[str, str]
    tolerance: float
    phase_diagram: PhaseDiagram = field(repr=False)

    def stable(self) -> list[HullRow]:
        """Hull phases (vertices), sorted by composition."""
        return sorted((r for r in self.rows if r.stable), key=self._order)

    def near_hull(self) -> list[HullRow]:
        return sorted((r for r in self.rows if r.near_hull), key=self._order)

    def row(self, id: str) -> HullRow:
        for r in self.rows:
            if r.id == id:
                return r
        raise KeyError(id)

    def entry(self, id: str) -> HullEntry:
        for e in self.entries:
            if e.id == id:
                return e
        raise KeyError(id)

    def formation_energy(self, composition: dict[str, float], energy_per_atom: float) -> float:
        """Formation energy (eV/atom) of any energy at `composition` against this hull's references."""
        total = sum(composition.values())
        mu = {el: self.phase_diagram.el_refs[Element(el)].energy_per_atom for el in self.elements}
        return energy_per_atom - sum(n / total * mu[el] for el, n in composition.items())

    def hull_energy(self, composition: dict[str, float]) -> float:
        """Formation energy (eV/atom) of the hull itself at `composition`."""
        comp = Composition(composition)
        return self.formation_energy(composition, self.phase_diagram.get_hull_energy_per_atom(comp))

    def _order(self, row: HullRow):
        return tuple(row.composition.get(el, 0.0) for el in self.elements[1:]) + (row.e_above_hull, row.id)

    def table(self) -> str:
        """Text table, sorted by composition then distance to the hull (energies in meV/atom)."""
        head = f"{'id':>12} {'formula':>12} {'N':>4} {'E (eV/at)':>11} {'Ef (meV/at)':>12} {'Ehull (meV/at)':>15}  flags  decomposition"
        lines = [head, "-" * len(head)]
        for r in sorted(self.rows, key=self._order):
            flag = "stable" if r.stable else ("near" if r.near_hull else "")
            decomp = "" if r.stable else " + ".join(f"{f:.3f} {i}" for i, f in r.decomposition.items())
            lines.append(f"{r.id:>12} {r.formula:>12} {r.natoms:>4d} {r.energy_per_atom:>11.5f} "
                         f"{1000 * r.formation_energy_per_atom:>12.2f} {1000 * r.e_above_hull:>15.2f}  {flag:<6} {decomp}")
        return "\n".join(lines)


def atoms_energy(atoms: Atoms) -> float | None:
    """Total energy (eV) of `atoms` from its calculator results or info['energy'], else None."""
    calc = atoms.calc
    if calc is not None and "energy" in getattr(calc, "results", {}):
        return float(calc.results["energy"])
    value = atoms.info.get("energy")
    return None if value is None else float(value)


def build_hull(entries: Iterable[HullEntry | Atoms], elements: Sequence[str] | None = None,
               tolerance: float = DEFAULT_TOLERANCE) -> Hull:
    """Build the hull of `entries` (HullEntry or Atoms with energies) in the space of `elements`
    (default: all elements present, sorted by atomic number). tolerance: eV/atom for near_hull."""
    items = [e if isinstance(e, HullEntry) else HullEntry.from_atoms(e, id=str(e.info.get("id", i)))
             for i, e in enumerate(entries)]
    if not items:
        raise InputError("no structures with energies to build a hull from")
    seen: set[str] = set()
    for e in items:
        if e.id in seen:
            raise InputError(f"structure id {e.id} is used twice; ids must be unique")
        seen.add(e.id)
    present = sorted({el for e in items for el in e.composition}, key=lambda s: Element(s).Z)
    if elements is None:
        elements = present
    elements = list(elements)
    for e in items:
        if not math.isfinite(e.energy):
            raise InputError(f"structure {e.id}: energy is not finite")
        extra = sorted(set(e.composition) - set(elements))
        if extra:
            raise InputError(f"structure {e.id} contains {', '.join(extra)}, not among the hull elements "
                             f"{', '.join(elements)}")
    for el in elements:
        if not any(set(e.composition) == {el} for e in items):
            raise InputError(f"no elemental reference for {el}: the set needs at least one structure of pure {el}")
    pd_entries = [PDEntry(Composition(e.composition), e.energy, name=e.id, attribute=i) for i, e in enumerate(items)]
    pd = PhaseDiagram(pd_entries, elements=[Element(el) for el in elements])
    stable_idx = {entry.attribute for entry in pd.stable_entries}
    rows = []
    for i, (e, entry) in enumerate(zip(items, pd_entries)):
        if i in stable_idx:
            decomp, ehull = {e.id: 1.0}, 0.0
        else:
            parts, ehull = pd.get_decomp_and_e_above_hull(entry, allow_negative=True)
            decomp = {p.name: float(amount) for p, amount in sorted(parts.items(), key=lambda kv: -kv[1])}
        comp = Composition(e.composition)
        rows.append(HullRow(
            id=e.id, formula=comp.reduced_formula,
            composition={el: float(comp.get_atomic_fraction(Element(el))) for el in elements},
            natoms=int(round(e.natoms)), energy_per_atom=e.energy_per_atom,
            formation_energy_per_atom=float(pd.get_form_energy_per_atom(entry)),
            e_above_hull=float(ehull), decomposition=decomp, stable=i in stable_idx,
            near_hull=i in stable_idx or float(ehull) <= tolerance + 1e-12))
    refs = {el.symbol: ref.name for el, ref in pd.el_refs.items()}
    return Hull(elements=elements, entries=items, rows=rows, references=refs, tolerance=tolerance,
                phase_diagram=pd)


def read_entries(path: str | os.PathLike) -> list[HullEntry]:
    """Structures with energies from any ASE-readable file (extxyz: energy= in the comment line).

    id: info['id'] (or 'candidate_id', 'name'), else the 0-based index in the file.
    """
    import ase.io

    try:
        frames = ase.io.read(path, index=":", parallel=False)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception as exc:
        raise InputError(f"{path}: cannot read structures: {' '.join(str(exc).split())}") from None
    entries = []
    for i, atoms in enumerate(frames):
        ident = next((str(atoms.info[k]) for k in ("id", "candidate_id", "name") if k in atoms.info), str(i))
        energy = atoms_energy(atoms)
        if energy is None:
            raise InputError(f"{path}: structure {i} (id {ident}) has no energy")
        entries.append(HullEntry.from_atoms(atoms, id=ident, energy=energy))
    if len({e.id for e in entries}) != len(entries):
        raise InputError(f"{path}: structure ids are not unique")
    return entries


# -- the campaign's conclusion: the ONE final hull -------------------------------------------------
REFERENCE_RELAXATION = "relax"   # the kind of a reference relaxation among a campaign store's calls


def reference_entries(store) -> list[HullEntry]:
    """Every successful reference relaxation of a campaign store (`store.reference_calls(kind)`,
    csp.campaign.store) as a hull entry: id = str(candidate id) (the call's key when it has no
    candidate), energy in eV (the store's energy: E, or E + pV under pressure), atoms = the
    reference-relaxed structure."""
    entries = []
    for rec in store.reference_calls(REFERENCE_RELAXATION):
        if rec.ok and rec.atoms is not None and rec.energy is not None:
            ident = str(rec.candidate_id) if rec.candidate_id is not None else rec.key
            entries.append(HullEntry.from_atoms(rec.atoms, id=ident, energy=rec.energy))
    return entries


def final_hull(store, elements: Sequence[str], tolerance: float = DEFAULT_TOLERANCE) -> Hull:
    """A campaign's convex hull from reference energies only (InputError when it cannot be built
    yet, e.g. no reference relaxation or an element without a pure structure). The campaign, its
    report, `csp export` and `csp status` all use this one, so they agree on the same entries."""
    return build_hull(reference_entries(store), elements=list(elements), tolerance=tolerance)
