"""The search space of an evolutionary run: allowed compositions, volumes and distances.

A `SearchSpace` says which atom counts per element a cell may hold (variable composition:
`min_atoms`..`max_atoms` atoms, each element's atomic fraction within `fraction_range`; or a
fixed composition ratio), the allowed volume per atom (a factor range on Vegard's volume, Å³)
and the minimum interatomic distance ``distance_factor · (r_i + r_j)`` with covalent radii,
as `csp.structures.random_structures` uses. Pure elements are allowed in variable-composition
searches: the convex hull needs them as references.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import spglib
from ase import Atoms
from ase.data import atomic_numbers, covalent_radii
from ase.geometry import minkowski_reduce

from csp.errors import InputError
from csp.structures import spg
from csp.structures.random_structures import _min_distances, _shortest_lattice_vector
from csp.structures.volume import atomic_volume
from csp.validate import setting


@dataclass(frozen=True)
class SearchSpace:
    """elements: chemical symbols (type index = position). composition: fixed integer ratio per
    element (None = variable). fraction_range: element -> (lo, hi) allowed atomic fraction.
    volume_range: allowed volume per atom as factors of the Vegard volume. distance_factor:
    minimum distance as a fraction of the sum of covalent radii."""

    elements: tuple[str, ...]
    max_atoms: int = setting(16, lo=1, hi=200)
    min_atoms: int = setting(1, lo=1)
    composition: tuple[int, ...] | None = setting(None)
    fraction_range: Mapping[str, tuple[float, float]] = setting(factory=dict)
    volume_range: tuple[float, float] = setting((0.6, 2.0))
    distance_factor: float = setting(0.75, lo=0.1, hi=1.5)

    def __post_init__(self) -> None:
        els = tuple(self.elements)
        object.__setattr__(self, "elements", els)
        if not els or len(set(els)) != len(els) or any(e not in atomic_numbers or e == "X" for e in els):
            raise InputError(f"evolution: elements must be distinct chemical symbols, got {list(els)}")
        if not 1 <= self.min_atoms <= self.max_atoms:
            raise InputError(f"evolution: need 1 <= min_atoms <= max_atoms, got {self.min_atoms}, {self.max_atoms}")
        if self.composition is not None:
            comp = tuple(int(c) for c in self.composition)
            if len(comp) != len(els) or min(comp) < 0 or sum(comp) == 0:
                raise InputError(f"evolution: composition {list(self.composition)} needs {len(els)} "
                                 f"non-negative integers, not all zero")
            object.__setattr__(self, "composition", comp)
            if not self.allowed_sizes():
                raise InputError(f"evolution: composition {list(comp)} does not fit in "
                                 f"{self.min_atoms}..{self.max_atoms} atoms")
        for el, (lo, hi) in self.fraction_range.items():
            if el not in els or not 0.0 <= lo <= hi <= 1.0:
                raise InputError(f"evolution: fraction_range of {el} must be 0 <= lo <= hi <= 1 for one of "
                                 f"the elements, got ({lo}, {hi})")
        lo, hi = self.volume_range
        if not 0.0 < lo <= hi:
            raise InputError(f"evolution: volume_range must be 0 < low <= high, got {self.volume_range}")

    # ------------------------------------------------------------------ composition
    @property
    def variable(self) -> bool:
        return self.composition is None

    def counts(self, atoms: Atoms) -> np.ndarray:
        """Atoms per element (order of `elements`); raises ValueError for a foreign element."""
        symbols = atoms.get_chemical_symbols()
        extra = set(symbols) - set(self.elements)
        if extra:
            raise ValueError(f"elements {sorted(extra)} are not in the search space {list(self.elements)}")
        return np.array([symbols.count(e) for e in self.elements], dtype=int)

    def allowed_sizes(self) -> list[int]:
        """Cell sizes a fixed-composition structure may have."""
        unit = sum(self.composition)
        return [unit * z for z in range(1, self.max_atoms // unit + 1) if unit * z >= self.min_atoms]

    def allowed(self, counts: Sequence[int]) -> bool:
        """True if a cell with these atom counts per element belongs to the search space."""
        counts = np.asarray(counts, dtype=int)
        n = int(counts.sum())
        if np.any(counts < 0) or not self.min_atoms <= n <= self.max_atoms:
            return False
        if self.composition is not None:
            unit = np.array(self.composition)
            z = n // int(unit.sum())
            return bool(n % int(unit.sum()) == 0 and np.array_equal(counts, z * unit))
        for el, (lo, hi) in self.fraction_range.items():
            x = counts[self.elements.index(el)] / n
            if x < lo - 1e-12 or x > hi + 1e-12:
                return False
        return True

    def admits_seed(self, atoms: Atoms) -> bool:
        """Whether a structure may seed the first generation: its size is within bounds and its
        composition allowed (pure elements always are: the hull needs them)."""
        try:
            counts = self.counts(atoms)
        except ValueError:
            return False
        return self.min_atoms <= len(atoms) <= self.max_atoms and (
            self.allowed(counts) or len(set(atoms.get_chemical_symbols())) == 1)

    # ------------------------------------------------------------------ geometry
    def vegard_volume_per_atom(self, counts: Sequence[int]) -> float:
        """Vegard volume per atom (Å³) of a cell with these counts."""
        counts = np.asarray(counts, dtype=float)
        vols = np.array([atomic_volume(e) for e in self.elements])
        return float(counts @ vols / counts.sum())

    def volume_bounds(self, counts: Sequence[int]) -> tuple[float, float]:
        """Allowed cell volume (Å³) for these counts."""
        v = self.vegard_volume_per_atom(counts) * float(np.sum(counts))
        return v * self.volume_range[0], v * self.volume_range[1]

    def radii(self) -> np.ndarray:
        return np.array([covalent_radii[atomic_numbers[e]] for e in self.elements])

    def too_close(self, atoms: Atoms) -> bool:
        """True if two atoms (or an atom and its own image) are closer than the minimum distance."""
        return too_close(atoms, self.distance_factor)

    def valid(self, atoms: Atoms) -> bool:
        """Composition allowed, volume within bounds, sane cell and no close contacts."""
        try:
            counts = self.counts(atoms)
        except ValueError:
            return False
        if not self.allowed(counts) or not np.all(np.isfinite(atoms.cell.array)):
            return False
        lo, hi = self.volume_bounds(counts)
        v = abs(atoms.cell.volume)
        if not lo * (1 - 1e-9) <= v <= hi * (1 + 1e-9):
            return False
        rcell, frac = reduced(atoms)
        return _angles_ok(rcell) and _distance_ratio(rcell, frac, atoms.numbers, self.distance_factor) >= 1.0


def reduce_cell(cell: np.ndarray) -> np.ndarray:
    """A Niggli-reduced basis (spglib, C) of the same lattice; Minkowski (ASE) if spglib fails."""
    rcell = spg.call(spglib.niggli_reduce, np.asarray(cell, float))
    if rcell is None:
        rcell, _ = minkowski_reduce(cell)
    return np.asarray(rcell, float)


def reduced(atoms: Atoms) -> tuple[np.ndarray, np.ndarray]:
    """(Niggli-reduced cell (3,3) Å, fractional coordinates in [0,1)) of the same crystal."""
    rcell = reduce_cell(atoms.cell.array)
    frac = np.linalg.solve(rcell.T, atoms.positions.T).T
    return rcell, frac - np.floor(frac)


def reduced_copy(atoms: Atoms) -> Atoms:
    """The same crystal in a right-handed Niggli-reduced cell, atoms wrapped into it, info kept
    (operators may return very oblique cells, whose neighbour lists explode in size)."""
    rcell = reduce_cell(atoms.cell.array)
    if np.linalg.det(rcell) < 0:
        rcell = -rcell
    frac = np.linalg.solve(rcell.T, atoms.positions.T).T
    out = Atoms(atoms.numbers, scaled_positions=frac - np.floor(frac), cell=rcell, pbc=True)
    out.info = dict(atoms.info)
    return out


def _distance_ratio(rcell: np.ndarray, frac: np.ndarray, numbers: np.ndarray, distance_factor: float) -> float:
    r = covalent_radii[numbers] * distance_factor
    ratio = np.inf
    if len(frac) > 1:
        d = _min_distances(frac, frac, rcell)
        np.fill_diagonal(d, np.inf)
        ratio = (d / (r[:, None] + r[None, :])).min()
    return float(min(ratio, _shortest_lattice_vector(rcell) / (2.0 * r.max())))


def min_distance_ratio(atoms: Atoms, distance_factor: float = 0.75) -> float:
    """min over pairs (and self-images) of d_ij / (distance_factor · (r_i + r_j))."""
    rcell, frac = reduced(atoms)
    return _distance_ratio(rcell, frac, atoms.numbers, distance_factor)


def too_close(atoms: Atoms, distance_factor: float = 0.75) -> bool:
    """True if any distance is below ``distance_factor · (r_i + r_j)`` (covalent radii)."""
    return min_distance_ratio(atoms, distance_factor) < 1.0


def clash_matrix(atoms: Atoms, distance_factor: float = 0.75) -> np.ndarray:
    """(N, N) bool: atoms i and j (i ≠ j) are closer than the minimum distance."""
    rcell, frac = reduced(atoms)
    r = covalent_radii[atoms.numbers] * distance_factor
    d = _min_distances(frac, frac, rcell)
    np.fill_diagonal(d, np.inf)
    return d < r[:, None] + r[None, :]


def _angles_ok(rcell: np.ndarray, min_angle: float = 30.0) -> bool:
    lengths = np.linalg.norm(rcell, axis=1)
    for i, j in ((0, 1), (0, 2), (1, 2)):
        c = rcell[i] @ rcell[j] / (lengths[i] * lengths[j])
        ang = np.degrees(np.arccos(np.clip(c, -1.0, 1.0)))
        if not min_angle <= ang <= 180.0 - min_angle:
            return False
    return True


def cell_ok(cell: np.ndarray, min_angle: float = 30.0) -> bool:
    """A non-degenerate cell: every angle of its Niggli-reduced form within
    [min_angle, 180 − min_angle] degrees."""
    cell = np.asarray(cell, float)
    if not np.all(np.isfinite(cell)) or abs(np.linalg.det(cell)) < 1e-6:
        return False
    return _angles_ok(reduce_cell(cell), min_angle)
