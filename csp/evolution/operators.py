"""Variation operators of the evolutionary search (USPEX-style; own implementation).

Each operator is a small callable class with one job: ``op(parents, rng) -> Atoms | None``.
A child always satisfies the `SearchSpace` (allowed composition, volume within bounds,
non-degenerate cell, no two atoms closer than ``distance_factor · (r_i + r_j)``); when no
valid child is found within `max_tries` attempts the operator returns None. The child carries
its lineage in ``atoms.info``: ``operator`` (name) and ``parents`` (the parents' ``info["id"]``).
Lengths Å, volumes Å³, curvatures eV/Å².
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from ase import Atoms

from csp.evolution.softmode import hessian, soft_modes
from ase.data import atomic_numbers, covalent_radii

from csp.evolution.space import SearchSpace, clash_matrix, reduced
from csp.structures.random_structures import _min_distances
from csp.relax import Evaluator


class Operator:
    """Base class: `name`, number of parents, the search space and the attempt budget."""

    name = "operator"
    n_parents = 1

    def __init__(self, space: SearchSpace, max_tries: int = 50):
        self.space = space
        self.max_tries = int(max_tries)

    def __call__(self, parents: Sequence[Atoms], rng: np.random.Generator) -> Atoms | None:
        if len(parents) != self.n_parents:
            raise ValueError(f"{self.name} takes {self.n_parents} parent(s), got {len(parents)}")
        for _ in range(self.max_tries):
            child = self.attempt(parents, rng)
            if child is not None and self.space.valid(child):
                child.info = {"operator": self.name,
                              "parents": [str(p.info.get("id", "?")) for p in parents], **child.info}
                return child
        return None

    def attempt(self, parents: Sequence[Atoms], rng: np.random.Generator) -> Atoms | None:
        """One try (may return an invalid child; `__call__` checks and retries)."""
        raise NotImplementedError


def _atoms(symbols: Sequence[str], frac: np.ndarray, cell: np.ndarray) -> Atoms:
    frac = np.asarray(frac, float).reshape(-1, 3)
    atoms = Atoms(list(symbols), scaled_positions=frac - np.floor(frac), cell=cell, pbc=True)
    return atoms


def _scale_to_volume(atoms: Atoms, volume: float) -> Atoms:
    atoms.set_cell(atoms.cell.array * (volume / abs(atoms.cell.volume)) ** (1.0 / 3.0), scale_atoms=True)
    return atoms


def _clamp_volume(space: SearchSpace, atoms: Atoms, target: float) -> Atoms:
    lo, hi = space.volume_bounds(space.counts(atoms))
    return _scale_to_volume(atoms, float(np.clip(target, lo, hi)))


def _add_atom(space: SearchSpace, atoms: Atoms, symbol: str, rng: np.random.Generator,
              trials: int = 30) -> Atoms | None:
    """`atoms` plus one `symbol` atom at the random position (of `trials`) farthest from
    contacts (relative to the minimum distances), or None if every position clashes."""
    rcell, frac = reduced(atoms)
    cand = rng.uniform(0.0, 1.0, (trials, 3))
    radius = covalent_radii[atomic_numbers[symbol]]
    lim = space.distance_factor * (radius + covalent_radii[atoms.numbers])
    ratio = (_min_distances(cand, frac, rcell) / lim[None, :]).min(axis=1) if len(atoms) else np.full(trials, np.inf)
    best = int(np.argmax(ratio))
    if ratio[best] < 1.0:
        return None
    out = Atoms(list(atoms.get_chemical_symbols()) + [symbol], scaled_positions=np.vstack([frac, cand[best]]),
                cell=rcell, pbc=True)
    return out


def drop_clashes(space: SearchSpace, atoms: Atoms) -> Atoms:
    """Remove atoms, most-clashing first, until no two are closer than the minimum distance."""
    clash = clash_matrix(atoms, space.distance_factor)
    keep = np.ones(len(atoms), bool)
    while keep.sum() > 1:
        c = (clash & keep[None, :]).sum(axis=1) * keep
        if c.max() == 0:
            break
        keep[int(np.argmax(c))] = False
    return atoms[keep]


def repair_counts(space: SearchSpace, atoms: Atoms, rng: np.random.Generator,
                  target: Sequence[int] | None = None) -> Atoms | None:
    """Bring the atom counts of `atoms` into the search space (or to exactly `target` counts):
    first transmute atoms of over-represented elements into missing ones (geometry kept), then
    delete random surplus atoms or insert missing ones at free positions. None if impossible."""
    el = space.elements
    counts = space.counts(atoms)
    n = int(counts.sum())
    if target is None:
        if space.composition is not None:
            sizes = np.array(space.allowed_sizes())
            near = sizes[np.abs(sizes - n) == np.abs(sizes - n).min()]
            z = int(rng.choice(near)) // sum(space.composition)
            target = np.array(space.composition) * z
        else:
            if space.allowed(counts):
                return atoms
            size = int(np.clip(n, space.min_atoms, space.max_atoms))
            target = _nearest_allowed(space, counts, size, rng)
            if target is None:
                return None
    target = np.asarray(target, int)
    atoms = atoms.copy()
    symbols = atoms.get_chemical_symbols()
    surplus = [i for i in range(len(el)) for _ in range(max(0, counts[i] - target[i]))]
    deficit = [i for i in range(len(el)) for _ in range(max(0, target[i] - counts[i]))]
    rng.shuffle(surplus)
    rng.shuffle(deficit)
    while surplus and deficit:                      # transmute
        s, d = surplus.pop(), deficit.pop()
        candidates = [k for k, sym in enumerate(symbols) if sym == el[s]]
        k = int(rng.choice(candidates))
        symbols[k] = el[d]
    atoms.set_chemical_symbols(symbols)
    if surplus:                                     # delete
        remove = []
        for s in surplus:
            candidates = [k for k, sym in enumerate(symbols) if sym == el[s] and k not in remove]
            remove.append(int(rng.choice(candidates)))
        del atoms[sorted(remove)]
    for d in deficit:                               # insert
        atoms = _add_atom(space, atoms, el[d], rng)
        if atoms is None:
            return None
    return atoms


def _nearest_allowed(space: SearchSpace, counts: np.ndarray, size: int,
                     rng: np.random.Generator) -> np.ndarray | None:
    """Allowed counts of `size` atoms closest (L1) to `counts` rescaled to `size`; ties at random."""
    k = len(space.elements)
    want = counts / max(counts.sum(), 1) * size
    best, best_d = [], np.inf
    for comp in _compositions(size, k):
        if not space.allowed(comp):
            continue
        d = float(np.abs(np.array(comp) - want).sum())
        if d < best_d - 1e-9:
            best, best_d = [comp], d
        elif abs(d - best_d) <= 1e-9:
            best.append(comp)
    if not best:
        return None
    return np.array(best[int(rng.integers(len(best)))])


def _compositions(n: int, k: int):
    if k == 1:
        yield (n,)
        return
    for first in range(n + 1):
        for rest in _compositions(n - first, k - 1):
            yield (first,) + rest


class Heredity(Operator):
    """Cut-and-splice: the child takes the slab ``0 ≤ s_k < w`` (fractional coordinate along a
    random cell axis k, after random shifts of both parents) from parent A and the rest from
    parent B, in the common cell ``w·L_A + (1 − w)·L_B`` (reduced cells); atom counts are then
    repaired to the requested composition (fixed-composition space, or `target`) or into the
    variable-composition space, and the volume set to the parents' mean volume per atom."""

    name = "heredity"
    n_parents = 2

    def __init__(self, space: SearchSpace, max_tries: int = 50, slab: tuple[float, float] = (0.25, 0.75),
                 target: Sequence[int] | None = None):
        super().__init__(space, max_tries)
        self.slab = slab
        self.target = None if target is None else tuple(int(t) for t in target)
        if self.target is not None and not space.allowed(self.target):
            raise ValueError(f"heredity: target counts {self.target} are not in the search space")

    def attempt(self, parents, rng):
        a, b = parents
        (la, fa), (lb, fb) = reduced(a), reduced(b)
        fa = (fa + rng.uniform(0, 1, 3)) % 1.0
        fb = (fb + rng.uniform(0, 1, 3)) % 1.0
        axis = int(rng.integers(3))
        w = rng.uniform(*self.slab)
        ia = np.flatnonzero(fa[:, axis] < w)
        ib = np.flatnonzero(fb[:, axis] >= w)
        if len(ia) + len(ib) == 0:
            return None
        sa, sb = np.array(a.get_chemical_symbols()), np.array(b.get_chemical_symbols())
        cell = w * la + (1.0 - w) * lb
        child = _atoms(list(sa[ia]) + list(sb[ib]), np.vstack([fa[ia], fb[ib]]), cell)
        vpa = w * abs(a.cell.volume) / len(a) + (1.0 - w) * abs(b.cell.volume) / len(b)
        child = drop_clashes(self.space, _scale_to_volume(child, vpa * len(child)))
        child = repair_counts(self.space, child, rng, self.target)
        if child is None:
            return None
        return _clamp_volume(self.space, child, vpa * len(child))


class LatticeMutation(Operator):
    """Random symmetric strain ``L' = L (I + ε)``, ε_ij ~ N(0, strain²) (ε symmetric, no
    rotation), volume restored to the parent's and kept within the space's volume bounds."""

    name = "lattice"

    def __init__(self, space: SearchSpace, max_tries: int = 50, strain: float = 0.1):
        super().__init__(space, max_tries)
        self.strain = float(strain)

    def attempt(self, parents, rng):
        (p,) = parents
        e = rng.normal(0.0, self.strain, (3, 3))
        eps = 0.5 * (e + e.T)
        child = p.copy()
        child.calc = None
        child.info = {}
        child.set_cell(p.cell.array @ (np.eye(3) + eps), scale_atoms=True)
        return _clamp_volume(self.space, child, abs(p.cell.volume))


class Permutation(Operator):
    """Swap the species of 1..max(1, N/4) random pairs of unlike atoms (composition kept)."""

    name = "permutation"

    def attempt(self, parents, rng):
        (p,) = parents
        symbols = p.get_chemical_symbols()
        if len(set(symbols)) < 2:
            return None
        child = Atoms(symbols, positions=p.positions, cell=p.cell, pbc=True)
        n_swaps = int(rng.integers(1, max(1, len(p) // 4) + 1))
        for _ in range(n_swaps):
            i = int(rng.integers(len(symbols)))
            others = [j for j, s in enumerate(symbols) if s != symbols[i]]
            j = int(rng.choice(others))
            symbols[i], symbols[j] = symbols[j], symbols[i]
        child.set_chemical_symbols(symbols)
        return child


class Transmutation(Operator):
    """Change the species of one random atom (moves in composition; variable-composition only)."""

    name = "transmutation"

    def attempt(self, parents, rng):
        (p,) = parents
        if not self.space.variable or len(self.space.elements) < 2:
            return None
        symbols = p.get_chemical_symbols()
        i = int(rng.integers(len(symbols)))
        choices = [e for e in self.space.elements if e != symbols[i]]
        symbols[i] = choices[int(rng.integers(len(choices)))]
        child = Atoms(symbols, positions=p.positions, cell=p.cell, pbc=True)
        if not self.space.allowed(self.space.counts(child)):
            return None
        return _clamp_volume(self.space, child, abs(p.cell.volume))


class SoftMutation(Operator):
    """Soft-mode mutation: displace the atoms along one of the `n_modes` lowest-curvature
    eigenvectors of the Hessian (translations excluded; finite differences of the forces of
    `evaluate`, one batched call), with a random sign and a largest atomic displacement drawn
    from `amplitude` (Å), halved until the child is valid. The cell is unchanged. Hessians are
    cached per parent id. `species`: the type order `evaluate` expects (default: the space's
    elements). ``info``: soft_mode (index), soft_mode_curvature (eV/Å²)."""

    name = "softmode"

    def __init__(self, space: SearchSpace, evaluate: Evaluator, max_tries: int = 10, n_modes: int = 3,
                 amplitude: tuple[float, float] = (0.3, 0.8), step: float = 0.01, cache_size: int = 256,
                 species: Sequence[str] | None = None):
        super().__init__(space, max_tries)
        self.evaluate = evaluate
        self.species = tuple(space.elements if species is None else species)  # type order of `evaluate`
        self.n_modes = int(n_modes)
        self.amplitude = amplitude
        self.step = float(step)
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._cache_size = int(cache_size)

    def modes(self, parent: Atoms) -> tuple[np.ndarray, np.ndarray]:
        """(curvatures ascending, modes (3N−3, 3N)) of a parent (cached by info['id'])."""
        key = parent.info.get("id")
        if key is not None and key in self._cache:
            return self._cache[key]
        h = hessian(parent, self.evaluate, self.species, self.step)
        result = soft_modes(h)
        if key is not None:
            if len(self._cache) >= self._cache_size:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = result
        return result

    def attempt(self, parents, rng):
        (p,) = parents
        if len(p) < 2:
            return None
        w, v = self.modes(p)
        k = int(rng.integers(min(self.n_modes, len(w))))
        mode = v[k].reshape(-1, 3)
        amp = rng.uniform(*self.amplitude) * rng.choice((-1.0, 1.0))
        disp = mode / np.linalg.norm(mode, axis=1).max()
        for _ in range(4):
            child = Atoms(p.get_chemical_symbols(), positions=p.positions + amp * disp, cell=p.cell, pbc=True)
            if self.space.valid(child):
                child.info = {"soft_mode": k, "soft_mode_curvature": float(w[k])}
                return child
            amp *= 0.5
        return None


class RandomFresh(Operator):
    """A new random symmetric structure (`csp.structures.random_structures`) — keeps diversity."""

    name = "random"
    n_parents = 0

    def attempt(self, parents, rng):
        from csp.errors import InputError
        from csp.structures.random_structures import random_structures

        sp = self.space
        comp = None if sp.composition is None else list(sp.composition)
        n_el = len(sp.elements) if comp is None else sum(1 for c in comp if c)
        lo = max(sp.min_atoms, n_el if comp is None else 1)
        try:
            (atoms,) = random_structures(list(sp.elements), 1, sp.max_atoms, seed=int(rng.integers(2**31)),
                                         min_atoms=lo, composition=comp, max_attempts=200)
        except InputError:
            return None
        atoms.info = {k: v for k, v in atoms.info.items() if k in ("space_group",)}
        return atoms
