"""Derivative-structure enumeration (Hart & Forcade, PRB 77, 224115 (2008); multilattices:
PRB 80, 014120 (2009)), written for csp.

For each index n (number of parent cells in the supercell):

1. the Hermite normal forms H of determinant n, one per class of superlattices equivalent
   under the parent's point group (`csp.structures.hnf.unique_hnfs`);
2. the Smith normal form L·H·R = S turns the n·d supercell sites into (site d, group element
   g ∈ Z_s1×Z_s2×Z_s3) pairs; the supercell translations and the parent's space-group
   operations that leave the superlattice invariant act on them as permutations;
3. labelings (one species index per site) are generated in lexicographic order by a numba
   backtracking search honouring site restrictions and per-species count limits; a labeling is
   kept iff it is the lexicographically smallest of its orbit under that permutation group and
   no non-trivial supercell translation leaves it unchanged (not superperiodic).

Conventions (those of the published counts, e.g. enumlib: fcc binary 2, 2, 6, 19, 28, 80, 104,
390 for n = 1…8): species are distinguishable (Cu3Pd and CuPd3 are two structures); labelings
that do not use every species are kept (pure elements at n = 1, binaries inside a ternary
enumeration) unless `all_species=True`; superperiodic labelings are dropped, so each structure
appears once, at its smallest cell.

atoms.info["labeling"] has one letter per site, 'a' = elements[0], 'b' = elements[1], …
(letters, so that extxyz keeps it a string); the sites are ordered i = d·n + g1·s2·s3 + g2·s3 + g3
for parent site d and SNF group element (g1, g2, g3), which is also the order of the atoms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

import numpy as np
from ase import Atoms
from ase.cell import Cell
from ase.data import atomic_numbers
from ase.geometry import minkowski_reduce
from numba import njit

from csp.errors import InputError
from csp.structures.hnf import (
    hnf_label,
    integer_inverse,
    preserves_lattice,
    smith_normal_form,
    unique_hnfs,
)
from csp.structures.lattices import Parent, get_parent
from csp.structures.volume import atomic_volume

MAX_SPECIES = 10
_CHUNK = 4096


# ----------------------------------------------------------------------------- numba kernels
@njit(cache=True)
def _is_canonical(lab: np.ndarray, perms: np.ndarray) -> bool:
    """True if no permuted labeling lab[perm] is lexicographically smaller than lab."""
    m = lab.shape[0]
    for g in range(perms.shape[0]):
        for i in range(m):
            a = lab[perms[g, i]]
            b = lab[i]
            if a < b:
                return False
            if a > b:
                break
    return True


@njit(cache=True)
def _is_superperiodic(lab: np.ndarray, trans: np.ndarray) -> bool:
    """True if a non-identity supercell translation leaves the labeling unchanged."""
    m = lab.shape[0]
    for t in range(trans.shape[0]):
        same = True
        for i in range(m):
            if lab[trans[t, i]] != lab[i]:
                same = False
                break
        if same:
            return True
    return False


@njit(cache=True)
def _next_labelings(perms, trans, allowed, minc, maxc, lab, counts, state, out):
    """Fill `out` with the next canonical, non-superperiodic labelings; resumable.

    perms (G, m) int32: group without identity; trans (T, m) int32: non-identity translations;
    allowed (m, k) bool; minc/maxc (k,) int64 count limits; lab (m,) int8 and counts (k,) int64
    and state[0] (current depth, -1 when exhausted) carry the search state between calls.
    Returns the number of rows written to out (≤ out.shape[0]).
    """
    m = lab.shape[0]
    k = counts.shape[0]
    max_out = out.shape[0]
    nout = 0
    pos = state[0]
    while pos >= 0:
        cur = lab[pos]
        if cur >= 0:
            counts[cur] -= 1
        remaining = m - pos - 1
        c = cur + 1
        while c < k:
            if allowed[pos, c] and counts[c] < maxc[c]:
                need = 0
                for j in range(k):
                    cj = counts[j] + (1 if j == c else 0)
                    if cj < minc[j]:
                        need += minc[j] - cj
                if need <= remaining:
                    break
            c += 1
        if c == k:
            lab[pos] = -1
            pos -= 1
            continue
        lab[pos] = c
        counts[c] += 1
        if pos < m - 1:
            pos += 1
            continue
        if _is_canonical(lab, perms) and not _is_superperiodic(lab, trans):
            for i in range(m):
                out[nout, i] = lab[i]
            nout += 1
            if nout == max_out:
                state[0] = pos
                return nout
    state[0] = -1
    return nout


# ----------------------------------------------------------------------------- group action
@dataclass
class SuperCell:
    """One superlattice of the parent: its HNF, SNF group and site permutation group."""

    index: int                 # n, parent cells per supercell
    hnf: np.ndarray            # (3, 3) int, column convention
    snf: np.ndarray            # (3,) diagonal of S
    perms: np.ndarray          # (G, m) int32, symmetry group without identity
    trans: np.ndarray          # (n-1, m) int32, non-identity translations
    frac_sites: np.ndarray     # (m, 3) site positions, fractional in the parent basis


def _flat(g: np.ndarray, s: np.ndarray) -> np.ndarray:
    return (g[..., 0] * s[1] + g[..., 1]) * s[2] + g[..., 2]


def supercell_group(parent: Parent, h: np.ndarray, rotations: np.ndarray,
                    translations: np.ndarray) -> SuperCell:
    """Site permutations of the supercell A·H: translations × lattice-preserving operations."""
    n = int(round(abs(np.linalg.det(h))))
    d = parent.n_sites
    s_mat, left, _ = smith_normal_form(h)
    s = np.diag(s_mat).astype(np.int64)
    linv = integer_inverse(left)
    g = np.stack(np.meshgrid(np.arange(s[0]), np.arange(s[1]), np.arange(s[2]),
                             indexing="ij"), axis=-1).reshape(-1, 3)  # flat order
    reps = g @ linv.T  # a parent lattice point in each coset
    m = n * d
    # translations: (d, g) -> (d, g + t)
    trans = np.empty((n, m), dtype=np.int32)
    for t in range(n):
        shifted = _flat((g + g[t]) % s, s)
        for dd in range(d):
            trans[t, dd * n:(dd + 1) * n] = dd * n + shifted
    # lattice-preserving space-group operations, all at once
    keep = preserves_lattice(h, rotations)
    w = rotations[keep]                                              # (O, 3, 3)
    x = np.einsum("oij,dj->odi", w, parent.sites) + translations[keep][:, None, :]
    diff = x[:, :, None, :] - parent.sites[None, None, :, :]         # (O, d, d', 3)
    hit = np.all(np.abs(diff - np.rint(diff)) < 1e-4, axis=-1)
    if not np.all(hit.sum(axis=-1) == 1):
        raise RuntimeError("space-group operation does not map parent sites onto sites")
    target = np.argmax(hit, axis=-1)                                 # (O, d)
    shift = np.rint(np.take_along_axis(diff, target[:, :, None, None], axis=2)[:, :, 0, :])
    moved = np.einsum("oij,nj->oni", w, reps)[:, None, :, :] + shift[:, :, None, :].astype(
        np.int64)                                                    # (O, d, n, 3)
    labels = (moved @ left.T) % s
    rot = (target[:, :, None] * n + _flat(labels, s)).reshape(len(w), m).astype(np.int32)
    full = rot[:, trans].reshape(-1, m)  # full[r*n + t][i] = rot[r][trans[t][i]]
    full = np.unique(full, axis=0)
    identity = np.arange(m, dtype=np.int32)
    full = full[~np.all(full == identity, axis=1)]
    frac_sites = np.concatenate([reps + parent.sites[dd] for dd in range(d)])
    return SuperCell(n, h, s, np.ascontiguousarray(full), np.ascontiguousarray(trans[1:]),
                     frac_sites)


# ----------------------------------------------------------------------------- inputs
def _check_elements(elements: Sequence[str] | str) -> list[str]:
    if isinstance(elements, str):
        elements = [e.strip() for e in elements.split(",") if e.strip()]
    elements = list(elements)
    if not elements:
        raise InputError("enumerate: no elements given")
    if len(set(elements)) != len(elements):
        raise InputError(f"enumerate: repeated element in {','.join(elements)}")
    if len(elements) > MAX_SPECIES:
        raise InputError(f"enumerate: at most {MAX_SPECIES} species, got {len(elements)}")
    for e in elements:
        atomic_volume(e)  # raises InputError for an unknown element
    return elements


def _concentration_limits(concentrations, elements: Sequence[str]) -> np.ndarray:
    """(k, 2) array of [min, max] atomic fractions per species."""
    lim = np.array([[0.0, 1.0]] * len(elements))
    if not concentrations:
        return lim
    for el, value in dict(concentrations).items():
        if el not in elements:
            raise InputError(f"concentrations: element '{el}' is not one of {','.join(elements)}")
        try:
            lo, hi = (float(value), float(value)) if np.isscalar(value) else map(float, value)
        except (TypeError, ValueError):
            raise InputError(f"concentrations: '{el}' needs a fraction or [min, max], "
                             f"got {value!r}") from None
        if not (0.0 <= lo <= hi <= 1.0):
            raise InputError(f"concentrations: '{el}' range [{lo}, {hi}] is not within [0, 1]")
        lim[elements.index(el)] = (lo, hi)
    if lim[:, 0].sum() > 1.0 + 1e-9 or lim[:, 1].sum() < 1.0 - 1e-9:
        raise InputError("concentrations: impossible limits (minimum fractions sum above 1 or "
                         "maximum fractions sum below 1)")
    return lim


def _count_limits(lim: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    minc = np.ceil(lim[:, 0] * m - 1e-9).astype(np.int64)
    maxc = np.floor(lim[:, 1] * m + 1e-9).astype(np.int64)
    return minc, maxc


def _feasible(minc: np.ndarray, maxc: np.ndarray, m: int) -> bool:
    return bool(np.all(minc <= maxc) and minc.sum() <= m <= maxc.sum())


@dataclass
class _Plan:
    parent: Parent
    elements: list[str]
    sizes: list[int]
    limits: np.ndarray
    all_species: bool
    rotations: np.ndarray
    translations: np.ndarray
    allowed_d: np.ndarray  # (d, k) bool


def _plan(lattice, elements, max_atoms, min_atoms, concentrations, site_species,
          all_species) -> _Plan:
    elements = _check_elements(elements)
    parent = get_parent(lattice)
    if site_species is not None:
        if len(site_species) != parent.n_sites:
            raise InputError(f"site restrictions: {len(site_species)} given for the "
                             f"{parent.n_sites} sites of parent '{parent.name}'")
        for entry in site_species:
            for el in entry or ():
                if el not in elements:
                    raise InputError(f"site restrictions: '{el}' is not one of "
                                     f"{','.join(elements)}")
        parent = parent.with_site_species(site_species)
    allowed_d = np.array([[e in parent.allowed(i, elements) for e in elements]
                          for i in range(parent.n_sites)], dtype=bool)
    if not np.all(allowed_d.any(axis=1)):
        raise InputError("site restrictions: a parent site allows none of the elements")
    try:
        max_atoms = int(max_atoms)
        min_atoms = int(min_atoms)
    except (TypeError, ValueError):
        raise InputError("enumerate: min/max atoms must be integers") from None
    if min_atoms <= 0 or max_atoms <= 0:
        raise InputError(f"enumerate: atom counts must be positive (min {min_atoms}, "
                         f"max {max_atoms})")
    if min_atoms > max_atoms:
        raise InputError(f"enumerate: min atoms {min_atoms} exceeds max atoms {max_atoms}")
    d = parent.n_sites
    sizes = [n for n in range(1, max_atoms // d + 1) if n * d >= min_atoms]
    if not sizes:
        raise InputError(f"enumerate: no cell of parent '{parent.name}' ({d} sites) has "
                         f"between {min_atoms} and {max_atoms} atoms")
    limits = _concentration_limits(concentrations, elements)
    ok = False
    for n in sizes:
        minc, maxc = _count_limits(limits, n * d)
        if all_species:
            minc = np.maximum(minc, 1)
        if _feasible(minc, maxc, n * d):
            ok = True
            break
    if not ok:
        raise InputError(f"concentrations: no cell of {min_atoms}-{max_atoms} atoms on "
                         f"'{parent.name}' realises the requested concentrations")
    rotations, translations = parent.symmetry(elements)
    return _Plan(parent, elements, sizes, limits, bool(all_species), rotations, translations,
                 allowed_d)


def _labelings(plan: _Plan, cell: SuperCell, chunk: int = _CHUNK) -> Iterator[np.ndarray]:
    """Chunks (rows, m) int8 of kept labelings of one supercell."""
    m = cell.frac_sites.shape[0]
    k = len(plan.elements)
    minc, maxc = _count_limits(plan.limits, m)
    if plan.all_species:
        minc = np.maximum(minc, 1)
    if not _feasible(minc, maxc, m):
        return
    allowed = np.repeat(plan.allowed_d, cell.index, axis=0)
    lab = np.full(m, -1, dtype=np.int8)
    counts = np.zeros(k, dtype=np.int64)
    state = np.zeros(1, dtype=np.int64)
    out = np.empty((chunk, m), dtype=np.int8)
    while state[0] >= 0:
        nout = _next_labelings(cell.perms, cell.trans, allowed, minc, maxc, lab, counts,
                               state, out)
        if nout:
            yield out[:nout]


def _supercells(plan: _Plan) -> Iterator[SuperCell]:
    for n in plan.sizes:
        for h in unique_hnfs(n, plan.rotations):
            yield supercell_group(plan.parent, h, plan.rotations, plan.translations)


# ----------------------------------------------------------------------------- Atoms
_ATOMS_LAYOUT = {"arrays", "info", "_cellobj", "_pbc", "_celldisp", "_constraints", "_calc"}


def _fast_atoms_ok() -> bool:
    probe = Atoms("H", positions=[[0.0, 0.0, 0.0]], cell=np.eye(3), pbc=True)
    return set(probe.__dict__) == _ATOMS_LAYOUT and set(probe.arrays) == {"numbers",
                                                                          "positions"}


_FAST_ATOMS = _fast_atoms_ok()


def make_atoms(numbers: np.ndarray, positions: np.ndarray, cell: np.ndarray) -> Atoms:
    """A periodic ase.Atoms built without Atoms.__init__'s checks (4x faster).

    Equivalent to Atoms(numbers=numbers, positions=positions, cell=cell, pbc=True); falls
    back to that call if this ASE version lays out Atoms differently. Arrays are not copied:
    pass fresh ones (int64 numbers, float64 positions (N, 3), cell (3, 3)).
    """
    if not _FAST_ATOMS:
        return Atoms(numbers=numbers, positions=positions, cell=cell, pbc=True)
    atoms = Atoms.__new__(Atoms)
    atoms.arrays = {"numbers": numbers, "positions": positions}
    atoms._cellobj = Cell(cell)
    atoms._pbc = np.ones(3, dtype=bool)
    atoms._celldisp = np.zeros(3)
    atoms._constraints = []
    atoms._calc = None
    atoms.info = {}
    return atoms


# ----------------------------------------------------------------------------- public API
def count_structures(lattice: "str | Parent", elements: Sequence[str] | str, max_atoms: int,
                     min_atoms: int = 1, concentrations: Mapping | None = None,
                     site_species: Sequence[Sequence[str] | None] | None = None,
                     all_species: bool = False, by_size: bool = False) -> "int | dict[int, int]":
    """Number of derivative structures (same arguments as `enumerate_structures`).

    With by_size=True, a dict {number of atoms: count}.
    """
    plan = _plan(lattice, elements, max_atoms, min_atoms, concentrations, site_species,
                 all_species)
    counts: dict[int, int] = {n * plan.parent.n_sites: 0 for n in plan.sizes}
    for cell in _supercells(plan):
        for block in _labelings(plan, cell, chunk=1 << 16):
            counts[cell.index * plan.parent.n_sites] += len(block)
    return counts if by_size else sum(counts.values())


def enumerate_structures(lattice: "str | Parent", elements: Sequence[str] | str,
                         max_atoms: int, min_atoms: int = 1,
                         concentrations: Mapping | None = None,
                         site_species: Sequence[Sequence[str] | None] | None = None,
                         all_species: bool = False) -> Iterator[Atoms]:
    """Stream every symmetrically distinct derivative structure of a parent lattice.

    lattice: "fcc", "bcc", "sc", "hcp", "diamond", a structure file (its atoms are the parent
    sites; must be a primitive cell) or a `Parent`. elements: species symbols (k ≥ 1).
    min_atoms/max_atoms: atoms per cell (= n·d for n parent cells of d sites).
    concentrations: {symbol: fraction or (min, max)} atomic-fraction limits.
    site_species: per parent site, the allowed symbols (None = all).
    all_species: drop structures that lack one of the elements.

    Yields ase.Atoms (periodic, Minkowski-reduced cell) whose volume is Vegard's rule over
    the composition (`csp.structures.volume`), with info: source="enumerate", lattice,
    index (n), hnf (a, b, c, d, e, f), labeling (letters 'a'… = elements[0]…, see module doc).
    Memory use does not grow with the number of structures.
    """
    plan = _plan(lattice, elements, max_atoms, min_atoms, concentrations, site_species,
                 all_species)
    numbers = np.array([atomic_numbers[e] for e in plan.elements], dtype=np.int64)
    vols = np.array([atomic_volume(e) for e in plan.elements])
    k = len(plan.elements)
    name = plan.parent.name
    pcell = plan.parent.cell
    for cell in _supercells(plan):
        supercell = cell.hnf.T.astype(float) @ pcell
        reduced, _ = minkowski_reduce(supercell)
        cart = cell.frac_sites @ pcell
        frac = cart @ np.linalg.inv(reduced)
        frac -= np.floor(frac + 1e-9)
        cart = frac @ reduced
        base_volume = abs(np.linalg.det(reduced))
        label = np.array(hnf_label(cell.hnf), dtype=np.int64)
        n = cell.index
        for block in _labelings(plan, cell):
            comp = np.zeros((len(block), k), dtype=np.int64)
            for j in range(k):
                comp[:, j] = (block == j).sum(axis=1)
            scale = np.cbrt(comp @ vols / base_volume)
            codes = (block + 97).view(np.uint8)
            for row, s, code in zip(block, scale, codes):
                atoms = make_atoms(numbers[row], cart * s, reduced * s)
                atoms.info = {"source": "enumerate", "lattice": name, "index": n,
                              "hnf": label.copy(), "labeling": code.tobytes().decode()}
                yield atoms
