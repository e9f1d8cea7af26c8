"""Deduplication of large candidate pools (10^5–10^6 structures).

Two structures are the same if pymatgen's `StructureMatcher` says so (rotations,
translations, atom order, supercells, small distortions and an overall volume change are all
allowed). Calling the matcher on every pair is impossible for large pools, so each structure
first gets cheap invariants and the matcher only sees pairs that agree on all of them:

1. reduced composition (exact);
2. a neighbour fingerprint: for every ordered species pair (a, b), the Gaussian-smoothed number
   of b-neighbours of an a-atom at distances r/r0 ≈ 0.8, 1.05, …, 2.05 (r0 = (V/N)^(1/3), i.e.
   neighbour distances scaled by the volume), as mean and spread over the a-atoms. Invariant
   under rotation, translation, atom order, supercells and isotropic scaling; continuous in
   the atomic positions;
3. spglib space group at `symprec` (0.1 Å) (computed only when 1–2 leave a candidate: spglib
   is the expensive step). spglib occasionally reports a lower group for a slightly noisy
   copy (a 0.005 Å-rattled long C2/m cell can come out P-1), so near candidates (fingerprint
   within fp_tol/2) of another space group also get a StructureMatcher comparison: the
   nearest one, and those whose group at symprec or 2·symprec shares one with the query's
   (at most `max_rescues` calls). Orbit (Wyckoff) multiplicities are not used: spglib's
   equivalent_atoms of a rattled supercell can split an orbit, which would split copies.

A candidate pair whose spglib-standardised cells coincide up to an origin shift is a proven
duplicate (fast path, `same_standard_cell`); otherwise StructureMatcher decides, on spglib's
idealised primitive cells (Niggli-reduced once per structure and cached) when available, with
ltol = 0.1 (half pymatgen's default: at 0.2 a ~17 % anisotropic strain maps one long 12-layer
bcc stacking onto a different decoration within stol, which merged distinct structures).
Candidates of the same space group whose fingerprints differ by fp_tol to 2·fp_tol get the
fast-path proof only: a species with a single atom in the cell is not averaged, and two rattled
copies can differ by slightly more than fp_tol.

The fingerprint lives in a grid hash over three of its components; a lookup probes the
neighbouring grid cell whenever the query lies within `fp_tol` of a cell boundary, so two
copies on either side of a rounding boundary still meet. Structures whose fingerprints differ
by less than `fp_tol` in every component are candidates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import product
from typing import Iterable

import numpy as np
from ase import Atoms
from numba import njit

from csp.structures import spg

CENTRES = np.array([0.80, 1.05, 1.30, 1.55, 1.80, 2.05])  # in units of r0 = (V/N)^(1/3)
SIGMA = 0.125
CUTOFF = CENTRES[-1] + 4.0 * SIGMA
_HASH_STEP = 1.0  # grid step of the hashed fingerprint components (neighbour counts)


@njit(cache=True)
def _fingerprint_kernel(numbers, positions, cell, centres, sigma, cutoff):
    """Flattened fingerprint: [mean (k, k, G), spread (k, k, G)] over centre atoms of each
    species (species sorted by atomic number) of the per-atom smoothed neighbour counts."""
    n = positions.shape[0]
    g = centres.shape[0]
    species = np.unique(numbers)
    k = species.shape[0]
    types = np.searchsorted(species, numbers)
    inv = np.linalg.inv(cell)
    volume = abs(np.linalg.det(cell))
    r0 = (volume / n) ** (1.0 / 3.0)
    radius = cutoff * r0
    # wrap positions into the cell
    frac = positions @ inv
    frac -= np.floor(frac)
    cart = frac @ cell
    # lattice translations that can bring two atoms of the cell within the radius
    reach = np.empty(3, dtype=np.int64)
    for c in range(3):
        reach[c] = int(np.ceil(radius * np.sqrt(inv[0, c] ** 2 + inv[1, c] ** 2
                                                + inv[2, c] ** 2))) + 1
    diameter = 0.0
    for s1 in (-1.0, 1.0):
        for s2 in (-1.0, 1.0):
            v = cell[0] + s1 * cell[1] + s2 * cell[2]
            d = np.sqrt(v[0] ** 2 + v[1] ** 2 + v[2] ** 2)
            if d > diameter:
                diameter = d
    env = np.zeros((n, k, g))
    rc2 = radius * radius
    far = radius + diameter
    inv2s2 = 1.0 / (2.0 * sigma * sigma)
    width = 4.0 * sigma
    for a0 in range(-reach[0], reach[0] + 1):
        for a1 in range(-reach[1], reach[1] + 1):
            for a2 in range(-reach[2], reach[2] + 1):
                sx = a0 * cell[0, 0] + a1 * cell[1, 0] + a2 * cell[2, 0]
                sy = a0 * cell[0, 1] + a1 * cell[1, 1] + a2 * cell[2, 1]
                sz = a0 * cell[0, 2] + a1 * cell[1, 2] + a2 * cell[2, 2]
                if sx * sx + sy * sy + sz * sz > far * far:
                    continue
                for i in range(n):
                    for j in range(n):
                        dx = cart[j, 0] + sx - cart[i, 0]
                        dy = cart[j, 1] + sy - cart[i, 1]
                        dz = cart[j, 2] + sz - cart[i, 2]
                        d2 = dx * dx + dy * dy + dz * dz
                        if d2 < 1e-12 or d2 > rc2:
                            continue
                        x = np.sqrt(d2) / r0
                        tj = types[j]
                        for q in range(g):
                            u = x - centres[q]
                            if -width < u < width:
                                env[i, tj, q] += np.exp(-u * u * inv2s2)
    mean = np.zeros((k, k, g))
    spread = np.zeros((k, k, g))
    count = np.zeros(k)
    for i in range(n):
        count[types[i]] += 1.0
        mean[types[i]] += env[i]
    for a in range(k):
        mean[a] /= count[a]
    for i in range(n):
        dev = env[i] - mean[types[i]]
        spread[types[i]] += dev * dev
    for a in range(k):
        spread[a] = np.sqrt(spread[a] / count[a])
    out = np.empty(2 * k * k * g)
    out[: k * k * g] = mean.ravel()
    out[k * k * g:] = spread.ravel()
    return out


def reduced_formula(numbers: np.ndarray) -> tuple[tuple[int, int], ...]:
    """Composition as ((Z, count), …) reduced by the gcd of the counts."""
    counts = np.bincount(np.asarray(numbers))
    species = np.flatnonzero(counts)
    counts = counts[species]
    counts = counts // np.gcd.reduce(counts)
    return tuple(zip(species.tolist(), counts.tolist()))


def fingerprint(atoms: Atoms) -> np.ndarray:
    """Neighbour fingerprint (species by atomic number), flattened: mean then spread over the
    centre atoms of each type of the smoothed (type, neighbour type, distance) counts."""
    return _fingerprint_kernel(atoms.numbers.astype(np.int64),
                               np.ascontiguousarray(atoms.positions, dtype=np.float64),
                               np.ascontiguousarray(atoms.cell.array, dtype=np.float64),
                               CENTRES, SIGMA, CUTOFF)


@dataclass
class _Symmetry:
    key: tuple                      # (space-group number,)
    lattice: np.ndarray | None      # standardised cell scaled to 1 Å³/atom (rows)
    frac: np.ndarray | None         # standardised fractional positions
    types: np.ndarray | None
    prim_cell: tuple | None = None  # dataset pieces that define spglib's primitive cell
    _primitive: object = None

    @property
    def primitive(self):
        """The idealised primitive cell as a Niggli-reduced pymatgen Structure (cached)."""
        if self._primitive is None and self.prim_cell is not None:
            from pymatgen.core import Lattice, Structure

            lat, frac, types = _primitive_cell(*self.prim_cell)
            self._primitive = Structure(Lattice(lat), types.tolist(),
                                        frac).get_reduced_structure()
        return self._primitive


def _symmetry(atoms: Atoms, symprec: float) -> _Symmetry:
    lattice = np.asarray(atoms.cell.array, dtype=float)
    frac = np.linalg.solve(lattice.T, atoms.positions.T).T % 1.0
    cell = (lattice, frac, atoms.numbers)
    try:
        ds = spg.symmetry_dataset(cell, symprec=symprec)  # None: spglib found no symmetry
    except Exception:  # malformed input that spglib rejects outside its own errors
        ds = None
    if ds is None:
        return _Symmetry((0,), None, None, None)
    std_lattice = np.asarray(ds.std_lattice, dtype=float)
    types = np.asarray(ds.std_types)
    std_frac = np.asarray(ds.std_positions, dtype=float) % 1.0
    lattice = std_lattice / (abs(np.linalg.det(std_lattice)) / len(types)) ** (1.0 / 3.0)
    # ds.primitive_lattice is in the input frame: rotate it to the standard frame
    prim_lattice = np.asarray(ds.primitive_lattice, dtype=float) @ np.asarray(
        ds.std_rotation_matrix, dtype=float).T
    prim = (prim_lattice, std_lattice, std_frac, types, np.asarray(ds.std_mapping_to_primitive))
    return _Symmetry((int(ds.number),), lattice, std_frac, types, prim)


def _primitive_cell(prim_lattice, std_lattice, std_frac, types, mapping):
    """spglib's idealised primitive cell (lattice, fractional positions, types) from the
    standardised conventional cell and its mapping to the primitive one.

    The primitive vectors are the centring combinations (multiples of 1/6) of the idealised
    standard vectors nearest to the (rotated, non-idealised) primitive lattice."""
    centring = np.rint(prim_lattice @ np.linalg.inv(std_lattice) * 6.0) / 6.0
    prim_lattice = centring @ std_lattice
    _, first = np.unique(mapping, return_index=True)
    cart = std_frac[first] @ std_lattice
    frac = (cart @ np.linalg.inv(prim_lattice)) % 1.0
    return prim_lattice, frac, types[first]


def same_standard_cell(a: _Symmetry, b: _Symmetry, tol: float = 0.05) -> bool:
    """True if two spglib-standardised cells coincide up to an origin shift.

    Lattices (scaled to 1 Å³/atom, standard orientation) must agree within `tol` per
    component and every atom must land within `tol` (same units) of an atom of the same type.
    A True answer proves the structures equal; False proves nothing (the two standard
    descriptions may differ by a normaliser operation), so callers fall back to
    StructureMatcher.
    """
    if a.lattice is None or b.lattice is None or len(a.types) != len(b.types):
        return False
    if np.max(np.abs(a.lattice - b.lattice)) > tol:
        return False
    if not np.array_equal(np.sort(a.types), np.sort(b.types)):
        return False
    # anchor on the rarest species
    species, counts = np.unique(a.types, return_counts=True)
    anchor = species[np.argmin(counts)]
    return _shift_match(a.frac, a.types.astype(np.int64), b.frac, b.types.astype(np.int64),
                        a.lattice, int(anchor), tol)


@njit(cache=True)
def _shift_match(fa, ta, fb, tb, lat, anchor, tol):
    """True if some origin shift maps every atom of b within tol (Å) of an atom of a."""
    n = fa.shape[0]
    i0 = 0
    while ta[i0] != anchor:
        i0 += 1
    for j in range(n):
        if tb[j] != anchor:
            continue
        ok = True
        for p in range(n):
            best = 1e300
            for q in range(n):
                if ta[q] != tb[p]:
                    continue
                d = np.empty(3)
                for c in range(3):
                    x = fb[p, c] + fa[i0, c] - fb[j, c] - fa[q, c]
                    d[c] = x - np.rint(x)
                dist2 = 0.0
                for c in range(3):
                    v = d[0] * lat[0, c] + d[1] * lat[1, c] + d[2] * lat[2, c]
                    dist2 += v * v
                if dist2 < best:
                    best = dist2
            if best >= tol * tol:
                ok = False
                break
        if ok:
            return True
    return False


@dataclass
class _Bucket:
    """Ids in one grid cell and their fingerprints as rows of a growing matrix."""

    ids: list
    fps: np.ndarray

    def append(self, ident: int, fp: np.ndarray) -> None:
        if len(self.ids) == len(self.fps):
            self.fps = np.concatenate([self.fps, np.empty_like(self.fps)])
        self.fps[len(self.ids)] = fp
        self.ids.append(ident)


@dataclass
class _Entry:
    atoms: Atoms
    formula: tuple
    fp: np.ndarray
    sym: _Symmetry | None = None
    structure: object = None
    loose: _Symmetry | None = None


@dataclass
class Deduplicator:
    """Incremental deduplication: `add(atoms)` returns the id of the structure's first copy.

    symprec: spglib tolerance (Å) of the symmetry invariant. fp_tol: largest difference of any
    fingerprint component (neighbour counts) between copies of one structure for the full
    comparison; candidates up to wide_factor * fp_tol of the same space group only get the
    standard-cell proof (a rattled copy's fingerprint can miss fp_tol when a species has one
    atom). max_rescues: most StructureMatcher calls against candidates of another space
    group. ltol, stol, angle_tol: StructureMatcher tolerances; ltol is half pymatgen's
    default 0.2, which merges distinct long one-dimensional stackings (a ~17 % anisotropic
    strain of one 12-layer bcc cell maps it onto another decoration within stol).
    use_symmetry=False skips the spglib invariant (for noisy structures whose detected
    symmetry may differ).
    """

    symprec: float = 0.1
    fp_tol: float = 0.3
    ltol: float = 0.1
    stol: float = 0.3
    angle_tol: float = 5.0
    use_symmetry: bool = True
    max_rescues: int = 4
    wide_factor: float = 2.0
    n_matcher_calls: int = 0
    n_symmetry_calls: int = 0
    n_fast_matches: int = 0
    n_symmetry_rescues: int = 0
    n_wide_matches: int = 0
    _grid: dict = field(default_factory=dict, repr=False)
    _entries: list = field(default_factory=list, repr=False)
    _matcher: object = field(default=None, repr=False)
    _prim_matcher: object = field(default=None, repr=False)

    def __post_init__(self) -> None:
        from pymatgen.analysis.structure_matcher import StructureMatcher

        self._matcher = StructureMatcher(ltol=self.ltol, stol=self.stol,
                                         angle_tol=self.angle_tol, primitive_cell=True,
                                         scale=True, attempt_supercell=True)
        # for pairs whose (cached) spglib primitive cells are compared directly
        self._prim_matcher = StructureMatcher(ltol=self.ltol, stol=self.stol,
                                              angle_tol=self.angle_tol, primitive_cell=False,
                                              scale=True, attempt_supercell=False)

    def __len__(self) -> int:
        """Number of distinct structures seen so far."""
        return len(self._entries)

    def representative(self, ident: int) -> Atoms:
        """The first structure stored under id `ident`."""
        return self._entries[ident].atoms

    def _cells(self, fp: np.ndarray, probe: bool) -> list[tuple[int, ...]]:
        x = fp[: min(3, len(fp))] / _HASH_STEP
        base = np.floor(x).astype(int)
        if not probe:
            return [tuple(base.tolist())]
        tol = self.wide_factor * self.fp_tol / _HASH_STEP
        choices = []
        for xi, bi in zip(x.tolist(), base.tolist()):
            opts = [bi]
            if xi - bi < tol:
                opts.append(bi - 1)
            if bi + 1 - xi < tol:
                opts.append(bi + 1)
            choices.append(opts)
        return list(product(*choices))

    def _sym(self, entry: _Entry) -> _Symmetry:
        if entry.sym is None:
            self.n_symmetry_calls += 1
            entry.sym = (_symmetry(entry.atoms, self.symprec) if self.use_symmetry
                         else _Symmetry((), None, None, None))
        return entry.sym

    def _loose_sym(self, entry: _Entry) -> _Symmetry:
        """Symmetry at twice symprec (only its space-group key is used: a rescue hint)."""
        if entry.loose is None:
            self.n_symmetry_calls += 1
            entry.loose = (_symmetry(entry.atoms, 2.0 * self.symprec) if self.use_symmetry
                           else _Symmetry((), None, None, None))
        return entry.loose

    def _structure(self, entry: _Entry):
        if entry.structure is None:
            from pymatgen.io.ase import AseAtomsAdaptor

            entry.structure = AseAtomsAdaptor.get_structure(entry.atoms)
        return entry.structure

    def _find(self, query: _Entry) -> int | None:
        ids, blocks = [], []
        for cell in self._cells(query.fp, probe=True):
            bucket = self._grid.get((query.formula, cell))
            if bucket is not None:
                ids.extend(bucket.ids)
                blocks.append(bucket.fps[: len(bucket.ids)])
        if not ids:
            return None
        candidates = ids
        fps = blocks[0] if len(blocks) == 1 else np.concatenate(blocks)
        diff = np.max(np.abs(fps - query.fp), axis=1)
        order = np.argsort(diff)
        other_symmetry = []  # candidates whose detected space group differs, nearest first
        for idx in order:
            if diff[idx] >= self.fp_tol:
                break
            other = self._entries[candidates[idx]]
            if self._sym(other).key != self._sym(query).key:
                other_symmetry.append(idx)
                continue
            if same_standard_cell(self._sym(other), self._sym(query)):
                self.n_fast_matches += 1
                return candidates[idx]
            self.n_matcher_calls += 1
            pa, pb = self._sym(query).primitive, self._sym(other).primitive
            if pa is not None and pb is not None:
                same = len(pa) == len(pb) and self._prim_matcher.fit(
                    pa, pb, skip_structure_reduction=True)
            else:
                same = self._matcher.fit(self._structure(query), self._structure(other))
            if same:
                return candidates[idx]
        # the fingerprint of a species with one or two atoms in the cell is not averaged and a
        # rattled copy can miss fp_tol (up to 0.33 for 0.005 Å on a 12-atom CuPd11): candidates
        # up to wide_factor * fp_tol of the same space group get the cheap proof only
        for idx in order:
            if diff[idx] < self.fp_tol:
                continue
            if diff[idx] >= self.wide_factor * self.fp_tol:
                break
            other = self._entries[candidates[idx]]
            if (self._sym(other).key == self._sym(query).key
                    and same_standard_cell(self._sym(other), self._sym(query))):
                self.n_fast_matches += 1
                self.n_wide_matches += 1
                return candidates[idx]
        # spglib can lose symmetry on a slightly noisy copy (its tolerance fallback: a
        # 0.005 Å-rattled long C2/m cell comes out P-1 at symprec 0.1 and C2/m at 0.2). Near
        # candidates (fingerprint within fp_tol/2) of another space group get one full
        # StructureMatcher comparison (at most max_rescues) if they are the nearest such
        # candidate or if their space groups at symprec or twice symprec share one. Trying
        # only the nearest is not enough: fingerprints tie between some distinct structures
        # (fcc Cu6Pd6 HNF (1,0,1,0,6,12) C2/m and (1,0,2,0,0,6) C2, same labelling).
        rescue = [idx for idx in other_symmetry if diff[idx] < 0.5 * self.fp_tol]
        if not rescue:
            return None
        qkeys = None
        calls = 0
        for rank, idx in enumerate(rescue):
            if calls == self.max_rescues:
                break
            other = self._entries[candidates[idx]]
            if rank > 0:
                if qkeys is None:
                    qkeys = {self._sym(query).key, self._loose_sym(query).key}
                okeys = {self._sym(other).key, self._loose_sym(other).key}
                if not qkeys & okeys:
                    continue
            self.n_matcher_calls += 1
            calls += 1
            if self._matcher.fit(self._structure(query), self._structure(other)):
                self.n_symmetry_rescues += 1
                return candidates[idx]
        return None

    def find(self, atoms: Atoms) -> int | None:
        """Id of a stored structure that `atoms` duplicates, or None (stores nothing)."""
        return self._find(self._entry(atoms))

    def _entry(self, atoms: Atoms) -> _Entry:
        return _Entry(atoms, reduced_formula(atoms.numbers), fingerprint(atoms))

    def add(self, atoms: Atoms) -> int:
        """Id (0, 1, 2, … in order of first appearance) of the stored structure that `atoms`
        duplicates, or a new id; `len(self)` grows by one exactly when the id is new."""
        entry = self._entry(atoms)
        found = self._find(entry)
        if found is not None:
            return found
        entry.atoms = atoms.copy()
        new_id = len(self._entries)
        self._entries.append(entry)
        key = (entry.formula, self._cells(entry.fp, probe=False)[0])
        bucket = self._grid.get(key)
        if bucket is None:
            bucket = self._grid[key] = _Bucket([], np.empty((4, len(entry.fp))))
        bucket.append(new_id, entry.fp)
        return new_id


def deduplicate(structures: Iterable[Atoms], **options) -> list[list[int]]:
    """Group a pool of structures into sets of duplicates.

    Returns one list of input indices per distinct structure, in order of first appearance;
    the first index of each group is the kept representative (`[g[0] for g in groups]`).
    Options are those of `Deduplicator`.
    """
    dedup = Deduplicator(**options)
    groups: list[list[int]] = []
    for i, atoms in enumerate(structures):
        ident = dedup.add(atoms)
        if ident == len(groups):
            groups.append([i])
        else:
            groups[ident].append(i)
    return groups
