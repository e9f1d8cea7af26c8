"""Parent lattices for derivative-structure enumeration: built-ins and parents read from files.

A parent is a (multi)lattice: a cell (rows are lattice vectors, Å, any scale: enumerated
structures are rescaled by Vegard's rule), the fractional positions of its d sites, and for
each site the tuple of species allowed there (None = every species of the search).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import spglib

from csp.errors import InputError
from csp.structures import spg

SYMPREC = 1e-5


@dataclass
class Parent:
    """A parent (multi)lattice. `cell` rows are lattice vectors (Å); `sites` fractional (d, 3)."""

    name: str
    cell: np.ndarray
    sites: np.ndarray
    site_species: list[tuple[str, ...] | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.cell = np.asarray(self.cell, dtype=float).reshape(3, 3)
        self.sites = np.asarray(self.sites, dtype=float).reshape(-1, 3)
        if not self.site_species:
            self.site_species = [None] * len(self.sites)
        if len(self.site_species) != len(self.sites):
            raise InputError(f"parent '{self.name}': {len(self.site_species)} site restrictions "
                             f"for {len(self.sites)} sites")
        if abs(np.linalg.det(self.cell)) < 1e-8:
            raise InputError(f"parent '{self.name}': singular cell")

    @property
    def n_sites(self) -> int:
        """Number of sites d in the parent cell."""
        return len(self.sites)

    @property
    def volume(self) -> float:
        """Parent cell volume in Å³."""
        return float(abs(np.linalg.det(self.cell)))

    def with_site_species(self, site_species: Sequence[Sequence[str] | None] | None) -> "Parent":
        """A copy with per-site allowed species (one entry per parent site, None = all)."""
        if site_species is None:
            return Parent(self.name, self.cell.copy(), self.sites.copy())
        restr = [None if s is None else tuple(s) for s in site_species]
        return Parent(self.name, self.cell.copy(), self.sites.copy(), restr)

    def symmetry(self, elements: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Space-group operations (W (m,3,3) int, τ (m,3)) in the parent's fractional basis.

        Sites with different allowed-species sets are treated as different types, so every
        operation maps each site onto one with the same restriction. Raises InputError if the
        parent is not primitive (its labelings would be counted more than once).
        """
        types = self.site_types(elements)
        cell = (self.cell, self.sites, types)
        sym = spg.call(spglib.get_symmetry, cell, symprec=SYMPREC)
        if sym is None:
            raise InputError(f"parent '{self.name}': spglib could not determine its symmetry")
        rotations = np.asarray(sym["rotations"], dtype=np.int64)
        translations = np.asarray(sym["translations"], dtype=float)
        pure = np.all(rotations == np.eye(3, dtype=np.int64), axis=(1, 2))
        if pure.sum() > 1:
            raise InputError(f"parent '{self.name}' is not a primitive cell "
                             f"({pure.sum()} lattice translations map it onto itself); "
                             "give its primitive cell")
        return rotations, translations

    def site_types(self, elements: Sequence[str]) -> np.ndarray:
        """Integer type of each site: sites with the same allowed species share a type."""
        allowed = [tuple(sorted(self.allowed(i, elements))) for i in range(self.n_sites)]
        keys = {a: t for t, a in enumerate(dict.fromkeys(allowed))}
        return np.array([keys[a] for a in allowed], dtype=np.int64)

    def allowed(self, site: int, elements: Sequence[str]) -> tuple[str, ...]:
        """Species allowed on parent site `site` (in the order of `elements`)."""
        restr = self.site_species[site]
        if restr is None:
            return tuple(elements)
        return tuple(e for e in elements if e in restr)


def _fcc() -> Parent:
    return Parent("fcc", [[0.0, 0.5, 0.5], [0.5, 0.0, 0.5], [0.5, 0.5, 0.0]], [[0, 0, 0]])


def _bcc() -> Parent:
    return Parent("bcc", [[-0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.5, 0.5, -0.5]], [[0, 0, 0]])


def _sc() -> Parent:
    return Parent("sc", np.eye(3), [[0, 0, 0]])


def _hcp() -> Parent:
    c = np.sqrt(8.0 / 3.0)
    cell = [[1.0, 0.0, 0.0], [-0.5, np.sqrt(3.0) / 2.0, 0.0], [0.0, 0.0, c]]
    return Parent("hcp", cell, [[1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.75]])


def _diamond() -> Parent:
    return Parent("diamond", [[0.0, 0.5, 0.5], [0.5, 0.0, 0.5], [0.5, 0.5, 0.0]],
                  [[0, 0, 0], [0.25, 0.25, 0.25]])


BUILTIN = {"fcc": _fcc, "bcc": _bcc, "sc": _sc, "hcp": _hcp, "diamond": _diamond}


def get_parent(lattice: "str | Path | Parent") -> Parent:
    """A built-in parent by name (fcc, bcc, sc, hcp, diamond), a `Parent`, or one read from a
    structure file (any format ase.io reads; its atoms are the parent sites)."""
    if isinstance(lattice, Parent):
        return lattice
    key = str(lattice)
    if key.lower() in BUILTIN:
        return BUILTIN[key.lower()]()
    path = Path(key)
    if not path.exists():
        raise InputError(f"unknown lattice '{key}': use one of {', '.join(BUILTIN)} "
                         "or a structure file")
    import ase.io

    try:
        atoms = ase.io.read(path)
    except Exception as exc:  # ase raises many types for unreadable files
        raise InputError(f"cannot read parent lattice from '{key}': {exc}") from None
    if len(atoms) == 0 or not np.all(atoms.pbc) or atoms.cell.rank != 3:
        raise InputError(f"parent lattice '{key}' must be a periodic 3-D structure with atoms")
    return Parent(path.stem, atoms.cell.array.copy(), atoms.get_scaled_positions(wrap=True))
