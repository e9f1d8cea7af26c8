"""Wyckoff positions of the 230 space groups, derived from spglib's symmetry database.

No Wyckoff table is copied from elsewhere: for each space group the operations of its
default setting (``spglib.get_symmetry_from_database`` on the smallest Hall number of the
group: unique axis b for monoclinic groups, origin choice 1, hexagonal axes for rhombohedral
groups; centring translations included) are applied to a grid of points with spacing 1/24
(trigonal and hexagonal groups) or 1/16 (all others) of the conventional cell, which contains
a generic point of every Wyckoff position (special coordinates are multiples of 1/8 in the
non-hexagonal groups, of 1/6 and 1/4 in the hexagonal ones; the test that the 230 groups give
the 1731 Wyckoff positions of the International Tables confirms it). For every grid point the site-symmetry group
(the operations that fix it modulo lattice translations) is found; grid points are classed
together when they lie in one orbit or share a site-symmetry group on the same fixed-point
subspace (modulo lattice translations). Each class is one Wyckoff position: multiplicity
= |G| / |site-symmetry group| in the conventional cell, and a parametrisation
``x = origin + free · basis`` of its fixed-point subspace (`dof` free parameters).

The derived table is stored in ``csp/structures/wyckoff_table.json`` (regenerate with
``python -m csp.structures.wyckoff``; a test re-derives it and compares).

Wyckoff letters are taken from spglib (``get_symmetry_dataset(...).wyckoffs``) on one
structure that occupies every derived position with its own species, so the letters are
those of the International Tables up to the choice of origin among equivalent ones (the
Euclidean normaliser), which is as far as letters of a structure are defined.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import spglib
from ase import Atoms
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from csp.errors import InputError
from csp.structures import spg

TABLE_PATH = Path(__file__).with_name("wyckoff_table.json")
_GRID = 24  # hexagonal and trigonal groups (coordinates in sixths and quarters)
_GRID_OTHER = 16  # all other groups (special coordinates are multiples of 1/8)
_TOL = 1e-6


@dataclass(frozen=True)
class WyckoffPosition:
    """One Wyckoff position in the conventional cell of its space group's default setting."""

    letter: str
    multiplicity: int  # atoms per conventional cell
    site_symmetry_order: int  # order of the site-symmetry group
    origin: np.ndarray  # (3,) fractional point of the fixed-point subspace
    basis: np.ndarray  # (dof, 3) fractional directions of the free parameters

    @property
    def dof(self) -> int:
        """Number of free coordinates (0 for a fixed point)."""
        return int(self.basis.shape[0])

    @property
    def label(self) -> str:
        """Multiplicity and letter, e.g. ``4a``."""
        return f"{self.multiplicity}{self.letter}"

    def point(self, free: np.ndarray) -> np.ndarray:
        """Fractional point for free parameters ``free`` (dof,), wrapped into [0, 1)."""
        return np.mod(self.origin + np.asarray(free, float) @ self.basis, 1.0)


@dataclass(frozen=True)
class SpaceGroup:
    """Operations (conventional cell, centring included) and Wyckoff positions of a group."""

    number: int
    hall_number: int
    symbol: str
    centering: str  # first letter of the Hall symbol: P A B C I F R
    rotations: np.ndarray  # (n, 3, 3) int, acting on fractional coordinates
    translations: np.ndarray  # (n, 3)
    positions: tuple[WyckoffPosition, ...]  # ordered by letter

    @property
    def order(self) -> int:
        """Number of operations per conventional cell (= multiplicity of the general position)."""
        return len(self.rotations)

    def orbit(self, point: np.ndarray, tol: float = 1e-4) -> np.ndarray:
        """Distinct images (m, 3) of a fractional point under the group, wrapped into [0, 1)."""
        images = np.mod(self.rotations @ np.asarray(point, float) + self.translations, 1.0)
        d = images[:, None, :] - images[None, :, :]
        same = np.all(np.abs(d - np.round(d)) < tol, axis=2)
        first = np.argmax(same, axis=1)  # index of the first image equal to each image
        return images[first == np.arange(len(images))]

    def by_label(self, label: str) -> WyckoffPosition:
        """The position with label e.g. ``"4a"`` or letter ``"a"``."""
        for w in self.positions:
            if label in (w.label, w.letter):
                return w
        raise InputError(f"space group {self.number}: no Wyckoff position '{label}'")


@lru_cache(maxsize=None)
def default_hall_numbers() -> dict[int, int]:
    """Space-group number -> smallest Hall number (spglib's default setting)."""
    out: dict[int, int] = {}
    for hall in range(1, 531):
        number = spg.call(spglib.get_spacegroup_type, hall).number
        out.setdefault(number, hall)
    return out


def _grid_size(number: int) -> int:
    return _GRID if 143 <= number <= 194 else _GRID_OTHER


def _fixed_subspace(rots: np.ndarray, trans: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Point and basis (dof, 3) of {x : R x + t = x for all (R, t)} (non-empty by construction)."""
    a = (rots - np.eye(3)).reshape(-1, 3)
    b = -trans.reshape(-1)
    x0, *_ = np.linalg.lstsq(a, b, rcond=None)
    _, s, vt = np.linalg.svd(a)
    rank = int(np.sum(s > 1e-8))
    basis = vt[rank:]
    # scale each direction so its largest component is 1: one unit of a free parameter is
    # then at most one lattice period along an axis
    basis = np.array([v / v[np.argmax(np.abs(v))] for v in basis]).reshape(-1, 3)
    return x0, basis


def _derive(number: int) -> SpaceGroup:
    hall = default_hall_numbers()[number]
    sym = spg.call(spglib.get_symmetry_from_database, hall)
    rots = np.asarray(sym["rotations"], dtype=np.int64)
    trans = np.mod(np.asarray(sym["translations"], float), 1.0)
    sgtype = spg.call(spglib.get_spacegroup_type, hall)
    n_ops = len(rots)

    grid = _grid_size(number)
    g = np.arange(grid) / grid
    pts = np.stack(np.meshgrid(g, g, g, indexing="ij"), axis=-1).reshape(-1, 3)
    n_pts = len(pts)
    images = np.einsum("oij,pj->opi", rots, pts) + trans[:, None, :]  # (n_ops, n_pts, 3)
    diff = pts[None] - images  # R p + t + shift = p  =>  shift = p - (R p + t)
    shift = np.round(diff)
    fixed = np.all(np.abs(diff - shift) < _TOL, axis=2)  # (n_ops, n_pts)

    # orbit edges: point -> its image (grid index)
    idx = np.mod(np.round(images * grid).astype(np.int64), grid)
    img_index = (idx[..., 0] * grid + idx[..., 1]) * grid + idx[..., 2]
    rows = [np.repeat(np.arange(n_pts)[None], n_ops, axis=0).ravel()]
    cols = [img_index.ravel()]

    # stabiliser keys: which ops fix the point and with which lattice shift
    # (two independent random 64-bit hashes of the stabiliser; equal stabilisers, equal keys)
    weights = np.random.default_rng(12345).integers(1, 2**62, size=(2, n_ops, 4))
    feats = np.concatenate([fixed[..., None], shift * fixed[..., None] + 3], axis=2)
    key = np.einsum("opk,hok->ph", feats.astype(np.int64), weights)
    _, first, key_id = np.unique(key, axis=0, return_index=True, return_inverse=True)
    key_id = key_id.ravel()
    rows.append(np.arange(n_pts))
    cols.append(first[key_id])

    # keys with the same operations whose fixed subspaces coincide modulo a lattice translation
    ops_sets: dict[bytes, list[int]] = {}
    for k, p in enumerate(first):
        ops_sets.setdefault(fixed[:, p].tobytes(), []).append(int(p))
    box = np.array(np.meshgrid(*[np.arange(-2, 3)] * 3, indexing="ij")).reshape(3, -1).T
    for members in ops_sets.values():
        if len(members) < 2:
            continue
        ops = np.flatnonzero(fixed[:, members[0]])
        for i, p in enumerate(members):
            r, t = rots[ops], trans[ops] + shift[ops, p]
            for q in members[i + 1:]:
                cand = pts[q][None] - box  # q - m for lattice vectors m
                res = np.einsum("oij,mj->moi", r, cand) + t[None] - cand[:, None, :]
                if np.any(np.all(np.abs(res) < _TOL, axis=(1, 2))):
                    rows.append(np.array([p]))
                    cols.append(np.array([q]))

    r_all, c_all = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(r_all), np.int8), (r_all, c_all)), shape=(n_pts, n_pts))
    n_comp, comp = connected_components(graph, directed=False)

    raw = []
    for c in range(n_comp):
        members = np.flatnonzero(comp == c)
        orders = fixed[:, members].sum(axis=0)
        p = members[np.argmin(orders)]  # the most generic grid point of this class
        ops = np.flatnonzero(fixed[:, p])
        origin, basis = _fixed_subspace(rots[ops].astype(float), trans[ops] + shift[ops, p])
        raw.append((n_ops // len(ops), len(ops), np.mod(origin, 1.0), basis, pts[p]))
    letters = _spglib_letters(number, rots, trans, [r[4] for r in raw], [r[3] for r in raw])
    positions = sorted(
        (WyckoffPosition(letters[i], m, o, org, bas) for i, (m, o, org, bas, _) in enumerate(raw)),
        key=lambda w: (w.letter.isupper(), w.letter),  # spglib writes the general α as "A"
    )
    return SpaceGroup(number, hall, sgtype.international_short, sgtype.hall_symbol.lstrip("-")[0],
                      rots, trans, tuple(positions))


def generic_lattice(number: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """A conventional cell (rows, Å, volume arbitrary) with only the metric the group demands."""
    rng = rng if rng is not None else np.random.default_rng(0)
    a, b, c = rng.uniform(0.8, 1.25, 3) * 5.0
    al, be, ga = rng.uniform(75.0, 105.0, 3)
    if number <= 2:
        pass
    elif number <= 15:  # monoclinic, unique axis b
        al = ga = 90.0
    elif number <= 74:
        al = be = ga = 90.0
    elif number <= 142:
        b, al, be, ga = a, 90.0, 90.0, 90.0
    elif number <= 194:  # trigonal (hexagonal axes) and hexagonal
        b, al, be, ga = a, 90.0, 90.0, 120.0
    else:
        b = c = a
        al = be = ga = 90.0
    from ase.geometry import cellpar_to_cell

    return cellpar_to_cell([a, b, c, al, be, ga])


def _spglib_letters(number, rots, trans, points, bases) -> list[str]:
    """ITA letters of the derived positions from one structure holding all of them."""
    rng = np.random.default_rng(number)
    cell = generic_lattice(number, rng)
    positions, species = [], []
    # two extra general-position orbits remove symmetry that a few orbits alone could have
    gen = [rng.uniform(0.0, 1.0, 3) for _ in range(2)]
    points, bases = list(points) + gen, list(bases) + [np.eye(3)] * 2
    for k, (p, basis) in enumerate(zip(points, bases)):
        # move off the grid point along the free directions to a random generic point
        q = p + rng.uniform(0.05, 0.3, len(basis)) @ basis if len(basis) else p
        orbit = np.mod(rots @ q + trans, 1.0)
        orbit = orbit[np.unique(np.round(orbit * 1e5).astype(np.int64) % 100000, axis=0,
                                return_index=True)[1]]
        positions.append(orbit)
        species += [k + 1] * len(orbit)
    ds = spg.symmetry_dataset((cell, np.vstack(positions), species), symprec=1e-5)
    if ds is None or ds.number != number:
        raise RuntimeError(f"space group {number}: Wyckoff derivation failed the spglib check")
    letters = []
    start = 0
    for orbit in positions[:-2]:
        letters.append(ds.wyckoffs[start])
        start += len(orbit)
    if len(set(letters)) != len(letters):
        raise RuntimeError(f"space group {number}: Wyckoff letters are not distinct")
    return letters


def derive_space_group(number: int) -> SpaceGroup:
    """Derive space group `number` and its Wyckoff positions from spglib (0.05–2 s)."""
    _check_number(number)
    return _derive(int(number))


def _check_number(number) -> None:
    if isinstance(number, bool) or not isinstance(number, (int, np.integer)) \
            or not 1 <= int(number) <= 230:
        raise InputError(f"space group {number!r}: must be an integer between 1 and 230")


def _to_record(group: SpaceGroup) -> list:
    return [[w.letter, w.multiplicity, w.site_symmetry_order,
             np.round(w.origin, 12).tolist(), np.round(w.basis, 12).tolist()]
            for w in group.positions]


def write_table(path: str | Path = TABLE_PATH) -> None:
    """Derive all 230 groups and write the Wyckoff table (JSON) that `space_group` loads."""
    table = {str(n): _to_record(_derive(n)) for n in range(1, 231)}
    Path(path).write_text(json.dumps(table, separators=(",", ":")) + "\n")


@lru_cache(maxsize=1)
def _table() -> dict:
    return json.loads(TABLE_PATH.read_text())


# conventional -> primitive: rows are primitive vectors in units of the conventional ones
_PRIMITIVE = {
    "P": np.eye(3),
    "A": np.array([[1, 0, 0], [0, 0.5, -0.5], [0, 0.5, 0.5]]),
    "B": np.array([[0.5, 0, -0.5], [0, 1, 0], [0.5, 0, 0.5]]),
    "C": np.array([[0.5, 0.5, 0], [-0.5, 0.5, 0], [0, 0, 1]]),
    "I": np.array([[-0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.5, 0.5, -0.5]]),
    "F": np.array([[0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]]),
    "R": np.array([[2 / 3, 1 / 3, 1 / 3], [-1 / 3, 1 / 3, 1 / 3], [-1 / 3, -2 / 3, 1 / 3]]),
}


def primitive_cell(cell: np.ndarray, frac: np.ndarray, numbers: np.ndarray, centering: str) -> Atoms:
    """Atoms in the primitive cell of a centred conventional cell (rows, Å; fractional
    positions), keeping the Cartesian positions; `centering` is P, A, B, C, I, F or R (obverse)."""
    m = _PRIMITIVE[centering]
    pcell = m @ cell
    if np.linalg.det(pcell) < 0:
        pcell = -pcell
    pfrac = np.mod((frac @ cell) @ np.linalg.inv(pcell), 1.0)
    keep: list[int] = []
    for i, p in enumerate(pfrac):
        if not any(np.all(np.abs((p - pfrac[j]) - np.round(p - pfrac[j])) < 1e-5) for j in keep):
            keep.append(i)
    order = sorted(keep, key=lambda i: numbers[i])
    numbers = np.asarray(numbers)
    return Atoms(numbers=numbers[order], scaled_positions=pfrac[order], cell=pcell, pbc=True)


@lru_cache(maxsize=None)
def space_group(number: int) -> SpaceGroup:
    """Space group `number` (1–230): operations from spglib, Wyckoff positions from the table
    written by `write_table` (itself derived by `derive_space_group`)."""
    _check_number(number)
    number = int(number)
    hall = default_hall_numbers()[number]
    sym = spg.call(spglib.get_symmetry_from_database, hall)
    sgtype = spg.call(spglib.get_spacegroup_type, hall)
    positions = tuple(WyckoffPosition(letter, mult, order, np.array(origin, float),
                                      np.array(basis, float).reshape(-1, 3))
                      for letter, mult, order, origin, basis in _table()[str(number)])
    return SpaceGroup(number, hall, sgtype.international_short, sgtype.hall_symbol.lstrip("-")[0],
                      np.asarray(sym["rotations"], dtype=np.int64),
                      np.mod(np.asarray(sym["translations"], float), 1.0), positions)


if __name__ == "__main__":  # regenerate the table: python -m csp.structures.wyckoff
    write_table()
