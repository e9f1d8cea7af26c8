"""Random symmetric crystal structures (in the spirit of AIRSS and PyXtal; own implementation).

Each structure: a random space group (from 2–230 by default) compatible with a composition,
a random Wyckoff combination that produces exactly that composition, random free coordinates,
a random lattice of the group's crystal system scaled to the Vegard volume times a random
factor, and minimum interatomic distances ``d_min(i, j) = distance_factor · (r_i + r_j)`` with
``r`` the covalent radii of B. Cordero et al., Dalton Trans. (2008) 2832, as tabulated in
``ase.data.covalent_radii``. A structure is kept only if spglib (symprec 0.01 Å) finds the
requested space group, so accidental higher symmetry is rejected.

The number of atoms refers to the primitive cell, which is what is returned (the conventional
cell of a centred group holds 2, 3 or 4 times as many). Wyckoff positions come from
`csp.structures.wyckoff`. Attempts are bounded: after `max_attempts` failures an `InputError`
says why, so a request that cannot be met never hangs.
"""

from __future__ import annotations

import itertools
from functools import lru_cache
from typing import Iterator, Mapping, Sequence

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers, covalent_radii
from ase.geometry import cellpar_to_cell

from csp.errors import InputError
from csp.structures import spg
from csp.structures.volume import vegard_volume
from csp.structures.wyckoff import SpaceGroup, WyckoffPosition, primitive_cell, space_group

_CENTRING_ORDER = {"P": 1, "A": 2, "B": 2, "C": 2, "I": 2, "F": 4, "R": 3}
_SHIFTS = np.array(list(itertools.product((-1, 0, 1), repeat=3)), float)
_DFS_NODES = 2000  # node budget of one Wyckoff-combination search


def random_structures(
    elements: Sequence[str],
    count: int,
    max_atoms: int,
    seed: int = 0,
    *,
    min_atoms: int = 1,
    composition: Mapping[str, int] | Sequence[int] | None = None,
    space_groups: Sequence[int] | None = None,
    volume_factor: tuple[float, float] = (1.0, 1.3),
    distance_factor: float = 0.75,
    max_attempts: int | None = None,
) -> Iterator[Atoms]:
    """Yield `count` random symmetric structures (primitive cells) of the given elements.

    elements: chemical symbols; with ``composition=None`` every structure contains each
    element at least once, with `min_atoms`..`max_atoms` atoms (variable composition).
    Sampling: a space group uniformly among those that can realise the request, then a cell
    size uniformly among the group's feasible ones, then a composition of that size.
    composition: integer ratio per element (mapping or sequence in the order of `elements`);
    the structure holds an integer number of formula units ≤ `max_atoms`.
    space_groups: allowed space-group numbers (default 2–230). volume_factor: range of the
    random factor on the Vegard volume (Å³). distance_factor: minimum distance as a fraction
    of the sum of covalent radii. max_attempts: failed attempts allowed per structure
    (default 2000) before `InputError`. Provenance is in ``atoms.info``.
    """
    elements = _check_elements(elements)
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
        raise InputError(f"random structures: count must be a non-negative integer, got {count!r}")
    for key, val in (("max_atoms", max_atoms), ("min_atoms", min_atoms)):
        if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val <= 0:
            raise InputError(f"random structures: {key} must be a positive integer, got {val!r}")
    lo, hi = (float(v) for v in volume_factor)
    if not 0.0 < lo <= hi:
        raise InputError(f"random structures: volume_factor must be 0 < low <= high, got {volume_factor}")
    if not 0.0 < distance_factor <= 1.5:
        raise InputError(f"random structures: distance_factor must be in (0, 1.5], got {distance_factor}")
    max_attempts = 2000 if max_attempts is None else int(max_attempts)
    if max_attempts <= 0:
        raise InputError(f"random structures: max_attempts must be positive, got {max_attempts}")
    groups = _check_groups(space_groups)
    fixed = _fixed_compositions(elements, composition, min_atoms, max_atoms)
    if fixed is None:
        _check_variable(elements, min_atoms, max_atoms)
    samplers = [sp for sp in (_Sampler(g, len(elements), min_atoms, max_atoms, fixed)
                              for g in groups) if sp.feasible]
    if not samplers:
        what = _compositions_text(elements, fixed) if fixed is not None else \
            f"{len(elements)} elements in {min_atoms}..{max_atoms} atoms"
        raise InputError(f"random structures: no space group in {_groups_text(space_groups)} "
                         f"has Wyckoff positions that give {what}")
    radii = np.array([covalent_radii[atomic_numbers[e]] for e in elements])
    rng = np.random.default_rng(seed)
    for index in range(count):
        for attempt in range(1, max_attempts + 1):
            sampler = samplers[rng.integers(len(samplers))]  # space group first, as AIRSS
            comp = sampler.composition(rng)  # then the cell size, then the composition
            group = space_group(sampler.number)
            atoms = _attempt(group, elements, comp, radii, rng, (lo, hi), distance_factor)
            if atoms is not None:
                atoms.info.update(source="random", seed=int(seed), index=index, attempts=attempt)
                yield atoms
                break
        else:
            raise InputError(
                f"random structures: no structure of {','.join(elements)} with at most "
                f"{max_atoms} atoms in {_groups_text(space_groups)} met the minimum distances "
                f"(distance_factor={distance_factor}) after {max_attempts} attempts")


# ----------------------------------------------------------------------------- input checks

def _check_elements(elements: Sequence[str]) -> list[str]:
    if isinstance(elements, str):
        elements = [e.strip() for e in elements.split(",") if e.strip()]
    elements = list(elements)
    if not elements:
        raise InputError("random structures: no elements given")
    for e in elements:
        if e not in atomic_numbers or e == "X":
            raise InputError(f"random structures: unknown element '{e}'")
    if len(set(elements)) != len(elements):
        raise InputError(f"random structures: repeated element in {','.join(elements)}")
    return elements


def _check_groups(space_groups: Sequence[int] | None) -> list[int]:
    if space_groups is None:
        return list(range(2, 231))
    groups = []
    for g in space_groups:
        if isinstance(g, bool) or not isinstance(g, (int, np.integer)) or not 1 <= g <= 230:
            raise InputError(f"random structures: space group {g!r} is not an integer in 1–230")
        groups.append(int(g))
    if not groups:
        raise InputError("random structures: empty list of space groups")
    return sorted(set(groups))


def _fixed_compositions(elements, composition, min_atoms, max_atoms
                        ) -> list[tuple[int, ...]] | None:
    """Atom counts per element (primitive cell) for a fixed ratio, or None if variable."""
    if composition is None:
        return None
    k = len(elements)
    if isinstance(composition, Mapping):
        unknown = set(composition) - set(elements)
        if unknown:
            raise InputError(f"random structures: composition element(s) {sorted(unknown)} "
                             f"not among the elements {','.join(elements)}")
        ratio = [composition.get(e, 0) for e in elements]
    else:
        ratio = list(composition)
        if len(ratio) != k:
            raise InputError(f"random structures: composition {ratio} needs {k} numbers")
    if any(isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r < 0 for r in ratio) \
            or sum(ratio) == 0:
        raise InputError(f"random structures: composition {ratio} must be non-negative integers")
    size = int(sum(ratio))
    out = [tuple(int(r) * z for r in ratio) for z in range(1, max_atoms // size + 1)
           if min_atoms <= size * z]
    if not out:
        raise InputError(f"random structures: composition {ratio} ({size} atoms per formula "
                         f"unit) does not fit in {min_atoms}..{max_atoms} atoms")
    return out


def _check_variable(elements, min_atoms, max_atoms) -> None:
    k = len(elements)
    if max_atoms < k:
        raise InputError(f"random structures: {k} elements need at least {k} atoms, "
                         f"max_atoms is {max_atoms}")
    if max_atoms > 200:
        raise InputError(f"random structures: max_atoms {max_atoms} is too large (≤ 200)")
    if min_atoms > max_atoms:
        raise InputError(f"random structures: min_atoms {min_atoms} exceeds max_atoms {max_atoms}")


def _groups_text(space_groups) -> str:
    return "space groups 2–230" if space_groups is None else \
        "space group(s) " + ",".join(str(g) for g in space_groups)


def _compositions_text(elements, compositions) -> str:
    def one(c):
        return "".join(f"{e}{n}" for e, n in zip(elements, c) if n)
    if len(compositions) <= 3:
        return "composition " + " / ".join(one(c) for c in compositions)
    return f"{len(compositions)} compositions ({one(compositions[0])} … {one(compositions[-1])})"


# ----------------------------------------------------------------------------- Wyckoff choice

@lru_cache(maxsize=None)
def _reachable(number: int, n_max: int) -> np.ndarray:
    """reach[n], n ≤ n_max: n atoms (conventional cell) are a sum of Wyckoff multiplicities of
    group `number`, each fixed-point position used at most once (0/1), free ones any number."""
    group = space_group(number)
    reach = np.zeros(n_max + 1, bool)
    reach[0] = True
    for w in group.positions:
        m = w.multiplicity
        if m > n_max:
            continue
        for _ in range(1 if w.dof == 0 else n_max // m):
            reach[m:] |= reach[:-m].copy()
    return reach


class _Sampler:
    """Compositions (primitive-cell counts) that a space group's Wyckoff positions allow."""

    def __init__(self, number: int, k: int, min_atoms: int, max_atoms: int,
                 fixed: list[tuple[int, ...]] | None):
        self.number = number
        z = _CENTRING_ORDER[space_group(number).centering]
        reach = _reachable(number, max_atoms * z)
        ok = np.array([n == 0 or reach[n * z] for n in range(max_atoms + 1)])
        self.fixed = None if fixed is None else \
            [c for c in fixed if all(ok[n] for n in c)]
        if fixed is None:
            # ways[j][s]: ordered choices of j allowed counts (≥ 1) that sum to s
            allowed = ok.astype(float)
            allowed[0] = 0.0
            ways = [np.zeros(max_atoms + 1)]
            ways[0][0] = 1.0
            for _ in range(k):
                ways.append(np.convolve(ways[-1], allowed)[: max_atoms + 1])
            self.ways, self.allowed, self.k = ways, allowed, k
            self.totals = [n for n in range(min_atoms, max_atoms + 1) if ways[k][n] > 0]
        self.feasible = bool(self.fixed) if fixed is not None else bool(self.totals)

    def composition(self, rng: np.random.Generator) -> tuple[int, ...]:
        """A random allowed composition: uniform cell size, then uniform composition."""
        if self.fixed is not None:
            return self.fixed[rng.integers(len(self.fixed))]
        remaining = self.totals[rng.integers(len(self.totals))]
        counts = []
        for left in range(self.k - 1, -1, -1):
            n = np.arange(1, remaining + 1)
            weight = self.allowed[n] * self.ways[left][remaining - n]
            pick = int(n[rng.choice(len(n), p=weight / weight.sum())])
            counts.append(pick)
            remaining -= pick
        return tuple(counts)


def _choose_wyckoff(group: SpaceGroup, counts: Sequence[int], rng: np.random.Generator
                    ) -> list[tuple[int, WyckoffPosition]] | None:
    """Random (element index, position) list realising `counts` (conventional cell), or None."""
    positions = list(group.positions)
    nodes = [0]
    order = [i for i in rng.permutation(len(counts)) if counts[i] > 0]

    def fill(k: int, remaining: int, used: frozenset, chosen: list):
        nodes[0] += 1
        if nodes[0] > _DFS_NODES:
            return None
        if remaining == 0:
            if k + 1 == len(order):
                return chosen
            return fill(k + 1, counts[order[k + 1]], used, chosen)
        options = [w for w in positions if w.multiplicity <= remaining
                   and not (w.dof == 0 and w.label in used)]
        for j in rng.permutation(len(options)):
            w = options[j]
            res = fill(k, remaining - w.multiplicity, used | {w.label} if w.dof == 0 else used,
                       chosen + [(order[k], w)])
            if res is not None:
                return res
        return None

    return fill(0, counts[order[0]], frozenset(), []) if order else None


# ----------------------------------------------------------------------------- geometry

def _random_cell(number: int, volume: float, rng: np.random.Generator) -> np.ndarray:
    """Conventional cell (rows, Å) of the group's crystal system with the given volume."""
    a, b, c = rng.uniform(0.7, 1.4, 3)
    al, be, ga = rng.uniform(70.0, 110.0, 3)
    if number <= 2:
        pass
    elif number <= 15:  # monoclinic, unique axis b
        al = ga = 90.0
    elif number <= 74:
        al = be = ga = 90.0
    elif number <= 142:
        b, al, be, ga = a, 90.0, 90.0, 90.0
    elif number <= 194:  # trigonal on hexagonal axes, hexagonal
        b, al, be, ga = a, 90.0, 90.0, 120.0
    else:
        b = c = a
        al = be = ga = 90.0
    cell = cellpar_to_cell([a, b, c, al, be, ga])
    return cell * (volume / abs(np.linalg.det(cell))) ** (1.0 / 3.0)


def _min_distances(frac_new, frac_old, cell) -> np.ndarray:
    """Periodic distances (Å) between new (m,3) and old (n,3) fractional points, shape (m, n)."""
    d = frac_new[:, None, :] - frac_old[None, :, :]
    d -= np.round(d)
    cart = (d[:, :, None, :] + _SHIFTS[None, None]) @ cell
    return np.sqrt((cart ** 2).sum(-1)).min(axis=2)


def _attempt(group, elements, comp, radii, rng, vol_range, dfac) -> Atoms | None:
    z = _CENTRING_ORDER[group.centering]
    counts = [n * z for n in comp]
    plan = _choose_wyckoff(group, counts, rng)
    if plan is None:
        return None
    symbols = [e for e, n in zip(elements, comp) for _ in range(n)]
    volume = vegard_volume(symbols) * z * rng.uniform(*vol_range)
    cell = _random_cell(group.number, volume, rng)
    # self-image distances: every lattice vector must be longer than the largest d_min
    present = [i for i, n in enumerate(comp) if n]
    if _shortest_lattice_vector(cell) < 2 * dfac * radii[present].max():
        return None
    frac = np.zeros((0, 3))
    species = np.zeros(0, int)
    labels = []
    for elem, w in plan:
        for _ in range(20):
            point = w.point(rng.uniform(0.0, 1.0, w.dof) * 12.0)  # many periods: uniform mod 1
            orbit = group.orbit(point)
            if len(orbit) != w.multiplicity:
                continue
            dmin = dfac * (radii[elem] + radii[species]) if len(frac) else None
            within = _min_distances(orbit, orbit, cell) + np.eye(len(orbit)) * 1e9
            if within.min() < 2 * dfac * radii[elem]:
                continue
            if dmin is not None and np.any(_min_distances(orbit, frac, cell) < dmin[None, :]):
                continue
            frac = np.vstack([frac, orbit])
            species = np.concatenate([species, np.full(len(orbit), elem)])
            labels.append(f"{elements[elem]}:{w.label}")
            break
        else:
            return None
    numbers = np.array([atomic_numbers[elements[i]] for i in species])
    ds = spg.symmetry_dataset((cell, frac, numbers), symprec=1e-2)
    if ds is None or ds.number != group.number:
        return None
    atoms = primitive_cell(cell, frac, numbers, group.centering)
    if len(atoms) != sum(comp):
        return None
    atoms.info.update(space_group=group.number, space_group_symbol=group.symbol,
                      wyckoff=" ".join(labels))
    return atoms


def _shortest_lattice_vector(cell: np.ndarray) -> float:
    vecs = _SHIFTS[np.any(_SHIFTS != 0, axis=1)] @ cell
    return float(np.sqrt((vecs ** 2).sum(1)).min())
