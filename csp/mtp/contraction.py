"""Our own generator of MTP contraction schemes (which moment tensors exist and how they are
contracted into scalar basis functions), and untrained potentials of any level.

Moment tensor M_{mu,nu} (rank nu) has level lev = 2 + 4 mu + nu. A scalar basis function is a
complete contraction of a product of at most four moment tensors with total level <= L; each
contraction pattern is a loop-free multigraph on the tensors (node degree = rank, an edge = one
contracted index pair), counted up to isomorphism (disconnected patterns, i.e. products of
scalars, included). This reproduces the number of scalar basis functions of MLIP's templates
(levels 6, 10, 16, 20: 5, 16, 92, 288).

Each pattern is evaluated as a sequence of pairwise contractions of symmetric tensors stored by
their distinct components (powers (a, b, c)): contracting A (rank p) with B (rank q) over k index
pairs gives the symmetrised rank p+q-2k tensor with components
    S[l] = sum_{a+b=l, |a|=p-k} sum_{|c|=k} mn(a) mn(b) mn(c) / mn(l) * A[a+c] * B[b+c]
(mn = multinomial coefficient), scaled by a constant so that all weights are integers (MLIP's
format). A constant factor per basis function is immaterial: the fit absorbs it.
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction
from functools import lru_cache
from typing import Sequence

import numpy as np

from csp.errors import InputError
from csp.mtp.potential import MTP

MAX_FACTORS = 4


def default_radial_funcs_count(level: int) -> int:
    """Number of radial functions MLIP's templates use at this level: max mu + 1."""
    return (level - 2) // 4 + 1


@lru_cache(maxsize=None)
def powers(rank: int) -> tuple[tuple[int, int, int], ...]:
    """Distinct components of a symmetric rank-`rank` tensor, MLIP's order (a desc, then b desc)."""
    return tuple((a, b, rank - a - b) for a in range(rank, -1, -1) for b in range(rank - a, -1, -1))


def _mn(p: Sequence[int]) -> int:
    return math.factorial(sum(p)) // (math.factorial(p[0]) * math.factorial(p[1]) * math.factorial(p[2]))


@lru_cache(maxsize=None)
def contraction_terms(p: int, q: int, k: int) -> tuple[tuple[tuple[int, int, int], ...], ...]:
    """Integer-weight terms of sym(A (x)_k B): for each result component l (order of powers(r)),
    a tuple of (index in A, index in B, weight)."""
    r = p + q - 2 * k
    ia = {pw: n for n, pw in enumerate(powers(p))}
    ib = {pw: n for n, pw in enumerate(powers(q))}
    rows = []
    for lam in powers(r):
        acc: dict[tuple[int, int], Fraction] = {}
        for al in powers(p - k):
            be = tuple(lam[d] - al[d] for d in range(3))
            if min(be) < 0 or sum(be) != q - k:
                continue
            for ka in powers(k):
                key = (ia[tuple(al[d] + ka[d] for d in range(3))], ib[tuple(be[d] + ka[d] for d in range(3))])
                acc[key] = acc.get(key, Fraction(0)) + Fraction(_mn(al) * _mn(be) * _mn(ka), _mn(lam))
        rows.append(acc)
    den = 1
    for acc in rows:
        for w in acc.values():
            den = den * w.denominator // math.gcd(den, w.denominator)
    ints = [{key: int(w * den) for key, w in acc.items() if w != 0} for acc in rows]
    g = 0
    for acc in ints:
        for w in acc.values():
            g = math.gcd(g, w)
    g = g or 1
    return tuple(tuple((i, j, w // g) for (i, j), w in sorted(acc.items())) for acc in ints)


# ---------------------------------------------------------------------- contraction patterns

def _graphs(labels: Sequence[tuple[int, int]]) -> list[tuple[int, ...]]:
    """Non-isomorphic loop-free multigraphs with node degrees labels[i][1], as edge multiplicity
    tuples over the node pairs (0,1), (0,2), ... ; labels are sorted (mu, nu)."""
    n = len(labels)
    pairs = list(itertools.combinations(range(n), 2))
    perms = [pm for pm in itertools.permutations(range(n)) if all(labels[pm[i]] == labels[i] for i in range(n))]
    found: set[tuple[int, ...]] = set()
    rem = [lab[1] for lab in labels]
    x: list[int] = []

    def rec(pi: int):
        if pi == len(pairs):
            if not any(rem):
                e = dict(zip(pairs, x))
                found.add(min(tuple(e[tuple(sorted((pm[a], pm[b])))] for a, b in pairs) for pm in perms))
            return
        a, b = pairs[pi]
        for v in range(min(rem[a], rem[b]) + 1):
            rem[a] -= v
            rem[b] -= v
            x.append(v)
            rec(pi + 1)
            x.pop()
            rem[a] += v
            rem[b] += v

    rec(0)
    return sorted(found)


def contraction_patterns(level: int, radial_funcs_count: int | None = None):
    """All (labels, edges) patterns with total level <= `level`, sorted by level."""
    R = default_radial_funcs_count(level) if radial_funcs_count is None else radial_funcs_count
    tensors = [(mu, nu) for mu in range(R) for nu in range(level) if 2 + 4 * mu + nu <= level]
    out = []
    for nf in range(1, MAX_FACTORS + 1):
        for combo in itertools.combinations_with_replacement(tensors, nf):
            lev = sum(2 + 4 * mu + nu for mu, nu in combo)
            if lev > level or sum(nu for _, nu in combo) % 2:
                continue
            for edges in _graphs(list(combo)):
                out.append((lev, combo, edges))
    out.sort(key=lambda t: (t[0], len(t[1]), t[1], t[2]))
    return out


def _merge_orders(labels, edges):
    """Pairwise merge sequences of a pattern, as nested keys, best (most absorptions) first."""
    n = len(labels)
    pairs = list(itertools.combinations(range(n), 2))
    emat = np.zeros((n, n), np.int64)
    for (a, b), v in zip(pairs, edges):
        emat[a, b] = emat[b, a] = v

    def ext(nodes):
        return int(sum(emat[a, b] for a in nodes for b in range(n) if b not in nodes))

    results = []

    def rec(clusters, partial):
        if len(clusters) == 1:
            results.append((partial, clusters[0][0]))
            return
        options = []
        for u, v in itertools.combinations(range(len(clusters)), 2):
            (ka, na), (kb, nb) = clusters[u], clusters[v]
            k = int(sum(emat[a, b] for a in na for b in nb))
            ea, eb = ext(na), ext(nb)
            if k == 0 and (ea or eb):
                continue
            absorb = k == min(ea, eb)
            options.append((not absorb, u, v, k))
        options.sort()
        for not_abs, u, v, k in options[:3]:
            (ka, na), (kb, nb) = clusters[u], clusters[v]
            key = ("P",) + tuple(sorted([ka, kb], key=repr)) + (k,)
            rest = [c for w, c in enumerate(clusters) if w not in (u, v)]
            rec(rest + [(key, na | nb)], partial + int(not_abs))

    rec([(("M", mu, nu), frozenset([i])) for i, (mu, nu) in enumerate(labels)], 0)
    results.sort(key=lambda t: t[0])
    return [key for _, key in results]


def _rank(key) -> int:
    if key[0] == "M":
        return key[2]
    return _rank(key[1]) + _rank(key[2]) - 2 * key[3]


def _level(key) -> int:
    if key[0] == "M":
        return 2 + 4 * key[1] + key[2]
    return _level(key[1]) + _level(key[2])


NUMERIC_CHECK_LEVEL = 22  # up to this level, evaluation orders are chosen to keep the basis independent


class _Probe:
    """Values of candidate basis functions on fixed random neighbourhoods, with an orthonormal
    basis of the accepted ones, to prefer evaluation orders that are linearly independent."""

    def __init__(self, n: int):
        rng = np.random.default_rng(12345)
        self.env = rng.normal(0.0, 1.5, (n + 64, 8, 3))
        r = np.linalg.norm(self.env, axis=2)
        self.u = self.env / r[..., None]
        self.r = r
        self.memo: dict = {}
        self.Q = np.zeros((len(self.env), 0))

    def value(self, key) -> np.ndarray:
        if key in self.memo:
            return self.memo[key]
        if key[0] == "M":
            mu, nu = key[1], key[2]
            rad = np.cos(1.3 * (mu + 1) * self.r) * np.exp(-0.4 * (mu + 1) * self.r)
            u = self.u
            val = np.stack([np.sum(rad * u[..., 0] ** a * u[..., 1] ** b * u[..., 2] ** c, axis=1)
                            for a, b, c in powers(nu)], axis=1)
        else:
            A, B = self.value(key[1]), self.value(key[2])
            terms = contraction_terms(_rank(key[1]), _rank(key[2]), key[3])
            val = np.stack([sum(w * A[:, i] * B[:, j] for i, j, w in row) for row in terms], axis=1)
        self.memo[key] = val
        return val

    def _residual(self, key) -> np.ndarray:
        v = self.value(key)[:, 0]
        v = v / max(np.linalg.norm(v), 1e-300)
        for _ in range(2):
            v = v - self.Q @ (self.Q.T @ v)
        return v

    def is_new(self, key) -> bool:
        return float(np.linalg.norm(self._residual(key))) > 1e-8

    def add(self, key) -> None:
        v = self._residual(key)
        norm = np.linalg.norm(v)
        if norm > 1e-8:
            self.Q = np.column_stack([self.Q, v / norm])


def generate_scheme(level: int, radial_funcs_count: int | None = None):
    """Contraction scheme (copies of cached arrays); see _generate_scheme."""
    if not 2 <= level <= 28:
        raise InputError(f"MTP level must be between 2 and 28, got {level}")
    basic, times, mapping, count = _generate_scheme(int(level), radial_funcs_count)
    return basic.copy(), times.copy(), mapping.copy(), count


@lru_cache(maxsize=8)
def _generate_scheme(level: int, radial_funcs_count: int | None):
    """Contraction scheme of the given level (2..28) in MLIP's layout.

    Returns (alpha_index_basic (n_basic,4), alpha_index_times (n_times,4), alpha_moment_mapping,
    alpha_moments_count). Basic moments come first (all components of each M_{mu,nu} used),
    then every intermediate tensor's components; contractions are listed in dependency order."""
    if not 2 <= level <= 28:
        raise InputError(f"MTP level must be between 2 and 28, got {level}")
    scalars = []
    used = set()
    probe = _Probe(len(contraction_patterns(level, radial_funcs_count))) if level <= NUMERIC_CHECK_LEVEL else None
    for lev, labels, edges in contraction_patterns(level, radial_funcs_count):
        candidates = [key for key in dict.fromkeys(_merge_orders(labels, edges)) if key not in used]
        if not candidates:
            raise RuntimeError(f"no distinct contraction order for pattern {labels} {edges}")
        chosen = candidates[0]
        if probe is not None and len(labels) >= 3:
            # among the evaluation orders, prefer one that adds a new direction to the basis
            for key in candidates:
                if probe.is_new(key):
                    chosen = key
                    break
        if probe is not None:
            probe.add(chosen)
        used.add(chosen)
        scalars.append(chosen)
    # collect tensors in dependency order
    basic_keys: set = set()
    order: list = []
    seen: set = set()

    def visit(key):
        if key in seen:
            return
        seen.add(key)
        if key[0] == "M":
            basic_keys.add(key)
            return
        visit(key[1])
        visit(key[2])
        order.append(key)

    for key in scalars:
        visit(key)
    start: dict = {}
    basic_rows = []
    for key in sorted(basic_keys, key=lambda k: (k[1], k[2])):
        start[key] = len(basic_rows)
        basic_rows += [(key[1], *pw) for pw in powers(key[2])]
    count = len(basic_rows)
    times_rows = []
    for key in order:
        start[key] = count
        a, b, k = key[1], key[2], key[3]
        terms = contraction_terms(_rank(a), _rank(b), k)
        same = a == b
        for comp, row in enumerate(terms):
            merged: dict[tuple[int, int], int] = {}
            for i, j, w in row:
                ii, jj = start[a] + i, start[b] + j
                if same and ii > jj:
                    ii, jj = jj, ii
                merged[(ii, jj)] = merged.get((ii, jj), 0) + w
            for (ii, jj), w in merged.items():
                if w:
                    times_rows.append((ii, jj, w, count + comp))
        count += len(terms)
    mapping = [start[key] for key in scalars]
    return (np.array(basic_rows, np.int64).reshape(-1, 4), np.array(times_rows, np.int64).reshape(-1, 4),
            np.array(mapping, np.int64), count)


def init_mtp(level: int, elements: Sequence[str] | int, min_dist: float, max_dist: float,
             radial_basis_size: int = 8, radial_funcs_count: int | None = None, seed: int = 0) -> MTP:
    """An untrained potential: generated contraction scheme, radial coefficients drawn from
    N(0, 1/radial_basis_size) with `seed`, zero species and moment coefficients, scaling 1.
    `elements` is a list of symbols (stored as metadata csp_elements) or a species count.
    Distances in Å."""
    if isinstance(elements, int):
        species_count, names = elements, None
    else:
        names = [str(e) for e in elements]
        species_count = len(names)
        if len(set(names)) != species_count:
            raise InputError(f"duplicate elements in {','.join(names)}")
    if species_count < 1:
        raise InputError("need at least one element")
    if not 0 <= min_dist < max_dist:
        raise InputError(f"need 0 <= min_dist < max_dist, got {min_dist}, {max_dist}")
    if radial_basis_size < 2:
        raise InputError("radial_basis_size must be at least 2")
    R = default_radial_funcs_count(level) if radial_funcs_count is None else int(radial_funcs_count)
    if R < 1:
        raise InputError("radial_funcs_count must be positive")
    basic, times, mapping, n_alpha = generate_scheme(level, R)
    rng = np.random.default_rng(seed)
    radial = rng.normal(0.0, 1.0 / np.sqrt(radial_basis_size),
                        (species_count, species_count, R, radial_basis_size))
    meta = {"csp_level": str(level)}
    if names is not None:
        meta["csp_elements"] = ",".join(names)
    return MTP(species_count=species_count, min_dist=float(min_dist), max_dist=float(max_dist),
               radial_basis_size=int(radial_basis_size), radial_funcs_count=R, radial_coeffs=radial,
               alpha_moments_count=n_alpha, alpha_index_basic=basic, alpha_index_times=times,
               alpha_moment_mapping=mapping, species_coeffs=np.zeros(species_count),
               moment_coeffs=np.zeros(len(mapping)), scaling=1.0, potential_name=f"MTP{level}",
               metadata=meta)
