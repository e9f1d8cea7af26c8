"""Neighbour search (numba): all pairs (i, image of j) with 0 < r < cutoff.

Works for any cell shape, cells smaller than the cutoff (many periodic images, self-images
included) and non-periodic directions. Method: wrap atoms into the cell, build the "ghost"
images whose fractional coordinates lie within cutoff/d_k of the cell (d_k the spacing of lattice
planes; per atom and direction only those shifts are visited), then scan the ghosts directly
(small cells) or through a Cartesian bin grid (large cells) with a branch-free compaction.
Ghosts and neighbours are kept as separate x, y, z arrays in reusable buffers (no allocation per
atom). The njit building blocks are reused by the fused evaluation kernels. Distances in Å.
No fastmath here: wrapped positions and ghosts share one arithmetic so self-images give r = 0.
"""

from __future__ import annotations

import numpy as np
from numba import njit

BIN_THRESHOLD = 600  # ghosts above which a bin grid is used instead of a direct scan


@njit(cache=True)
def _cross(a, b):
    return np.array([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])


@njit(cache=True)
def effective_cell(cell, pbc):
    """Cell whose non-periodic vectors are replaced by unit vectors orthogonal to the periodic
    ones, so that fractional coordinates along periodic directions measure true plane spacings."""
    ecell = cell.copy()
    per = np.zeros(3, np.int64)
    nper = 0
    for k in range(3):
        if pbc[k]:
            per[nper] = k
            nper += 1
    if nper == 3:
        return ecell
    if nper == 0:
        return np.eye(3)
    if nper == 2:
        a = cell[per[0]]
        b = cell[per[1]]
        n = _cross(a, b)
        n = n / np.sqrt(np.sum(n * n))
        for k in range(3):
            if not pbc[k]:
                ecell[k] = n
        return ecell
    a = cell[per[0]]
    e = np.zeros(3)
    e[np.argmin(np.abs(a))] = 1.0
    u = _cross(a, e)
    u = u / np.sqrt(np.sum(u * u))
    v = _cross(a, u)
    v = v / np.sqrt(np.sum(v * v))
    m = 0
    for k in range(3):
        if not pbc[k]:
            ecell[k] = u if m == 0 else v
            m += 1
    return ecell


@njit(cache=True)
def inverse3(a):
    """Inverse of a 3x3 matrix by cofactors (no LAPACK call, no scipy at numba start-up)."""
    inv = np.empty((3, 3))
    c00 = a[1, 1] * a[2, 2] - a[1, 2] * a[2, 1]
    c01 = a[1, 2] * a[2, 0] - a[1, 0] * a[2, 2]
    c02 = a[1, 0] * a[2, 1] - a[1, 1] * a[2, 0]
    idet = 1.0 / (a[0, 0] * c00 + a[0, 1] * c01 + a[0, 2] * c02)
    inv[0, 0] = c00 * idet
    inv[1, 0] = c01 * idet
    inv[2, 0] = c02 * idet
    inv[0, 1] = (a[0, 2] * a[2, 1] - a[0, 1] * a[2, 2]) * idet
    inv[1, 1] = (a[0, 0] * a[2, 2] - a[0, 2] * a[2, 0]) * idet
    inv[2, 1] = (a[0, 1] * a[2, 0] - a[0, 0] * a[2, 1]) * idet
    inv[0, 2] = (a[0, 1] * a[1, 2] - a[0, 2] * a[1, 1]) * idet
    inv[1, 2] = (a[0, 2] * a[1, 0] - a[0, 0] * a[1, 2]) * idet
    inv[2, 2] = (a[0, 0] * a[1, 1] - a[0, 1] * a[1, 0]) * idet
    return inv


@njit(cache=True)
def build_ghosts(cell, pbc, positions, cutoff, gx, gy, gz, gi):
    """Wrapped positions wpos (N,3) and the ghost images that can be within `cutoff` of a
    wrapped atom (the atoms themselves too): returns (wpos, G, gx, gy, gz, gi) with the ghosts'
    Cartesian coordinates gx/gy/gz[:G] and atom indices gi[:G]. The buffers are reused and
    regrown when G exceeds their length. Per atom and direction only the image shifts inside
    the reach are visited (no rejected candidates)."""
    n = positions.shape[0]
    ecell = effective_cell(cell, pbc)
    inv = inverse3(ecell)
    frac = np.empty((n, 3))
    reach = np.zeros(3)
    for k in range(3):
        if pbc[k]:
            # |b_k| = norm of column k of inv(ecell) = 1 / plane spacing
            reach[k] = cutoff * np.sqrt(inv[0, k] ** 2 + inv[1, k] ** 2 + inv[2, k] ** 2)
    for a in range(n):
        for k in range(3):
            f = positions[a, 0] * inv[0, k] + positions[a, 1] * inv[1, k] + positions[a, 2] * inv[2, k]
            if pbc[k]:
                f -= np.floor(f)
                if f >= 1.0:
                    f = 0.0
            frac[a, k] = f
    wpos = np.empty((n, 3))
    for a in range(n):
        for d in range(3):  # same arithmetic as the ghosts below, so self-images give r = 0 exactly
            wpos[a, d] = frac[a, 0] * ecell[0, d] + frac[a, 1] * ecell[1, d] + frac[a, 2] * ecell[2, d]
    # image shifts per atom and direction: s = frac + shift in [-reach, 1 + reach)
    lo = np.zeros((n, 3), np.int64)
    hi = np.zeros((n, 3), np.int64)
    total = 0
    for a in range(n):
        cnt = 1
        for k in range(3):
            if pbc[k]:
                f = frac[a, k]
                r = reach[k]
                low = int(np.floor(-r - f)) - 1
                while f + low < -r:
                    low += 1
                high = int(np.ceil(1.0 + r - f)) + 1
                while f + high >= 1.0 + r:
                    high -= 1
                lo[a, k] = low
                hi[a, k] = high
                cnt *= high - low + 1
        total += cnt
    if total > gx.shape[0]:
        cap = max(total, 2 * gx.shape[0])
        gx = np.empty(cap)
        gy = np.empty(cap)
        gz = np.empty(cap)
        gi = np.empty(cap, np.int64)
    c = 0
    for a in range(n):
        for n0 in range(lo[a, 0], hi[a, 0] + 1):
            s0 = frac[a, 0] + n0
            for n1 in range(lo[a, 1], hi[a, 1] + 1):
                s1 = frac[a, 1] + n1
                for n2 in range(lo[a, 2], hi[a, 2] + 1):
                    s2 = frac[a, 2] + n2
                    gx[c] = s0 * ecell[0, 0] + s1 * ecell[1, 0] + s2 * ecell[2, 0]
                    gy[c] = s0 * ecell[0, 1] + s1 * ecell[1, 1] + s2 * ecell[2, 1]
                    gz[c] = s0 * ecell[0, 2] + s1 * ecell[1, 2] + s2 * ecell[2, 2]
                    gi[c] = a
                    c += 1
    return wpos, total, gx, gy, gz, gi


@njit(cache=True)
def build_bins(g, gx, gy, gz, gi, cutoff):
    """Cartesian bin grid (bins >= cutoff wide) over the ghosts; the ghosts are permuted into
    bin order in place. Returns (origin (3,), size (3,), nbins (3,), start (nbins+1,))."""
    lo = np.zeros(3)
    hi = np.zeros(3)
    if g > 0:
        lo[0], hi[0] = gx[:g].min(), gx[:g].max()
        lo[1], hi[1] = gy[:g].min(), gy[:g].max()
        lo[2], hi[2] = gz[:g].min(), gz[:g].max()
    nb = np.ones(3, np.int64)
    size = np.empty(3)
    for d in range(3):
        nb[d] = min(1000, max(1, int((hi[d] - lo[d]) / cutoff)))
        size[d] = max((hi[d] - lo[d]) / nb[d], 1e-12)
    total = nb[0] * nb[1] * nb[2]
    binof = np.empty(g, np.int64)
    start = np.zeros(total + 1, np.int64)
    for a in range(g):
        c0 = min(nb[0] - 1, int((gx[a] - lo[0]) / size[0]))
        c1 = min(nb[1] - 1, int((gy[a] - lo[1]) / size[1]))
        c2 = min(nb[2] - 1, int((gz[a] - lo[2]) / size[2]))
        b = (c0 * nb[1] + c1) * nb[2] + c2
        binof[a] = b
        start[b + 1] += 1
    for b in range(total):
        start[b + 1] += start[b]
    fill = start[:-1].copy()
    sx = gx[:g].copy()
    sy = gy[:g].copy()
    sz = gz[:g].copy()
    si = gi[:g].copy()
    for a in range(g):
        q = fill[binof[a]]
        fill[binof[a]] += 1
        gx[q] = sx[a]
        gy[q] = sy[a]
        gz[q] = sz[a]
        gi[q] = si[a]
    return lo, size, nb, start


@njit(cache=True)
def _scan(px, py, pz, a0, a1, gx, gy, gz, gi, cut2, X, Y, Z, J, c):
    # branch-free compaction: every candidate is written, the count advances only for hits
    for a in range(a0, a1):
        dx = gx[a] - px
        dy = gy[a] - py
        dz = gz[a] - pz
        r2 = dx * dx + dy * dy + dz * dz
        X[c] = dx
        Y[c] = dy
        Z[c] = dz
        J[c] = gi[a]
        c += 1 if (r2 < cut2) & (r2 > 0.0) else 0
    return c


@njit(cache=True)
def setup(cell, pbc, positions, cutoff, gx, gy, gz, gi):
    """Ghosts and (if many) bins of one structure: (wpos, G, gx, gy, gz, gi, use_bins, lo, size,
    nbins, start), everything `gather` needs; buffers as in build_ghosts."""
    wpos, g, gx, gy, gz, gi = build_ghosts(cell, pbc, positions, cutoff, gx, gy, gz, gi)
    use_bins = g > BIN_THRESHOLD
    if use_bins:
        lo, size, nb, start = build_bins(g, gx, gy, gz, gi, cutoff)
    else:
        lo = np.zeros(3)
        size = np.ones(3)
        nb = np.ones(3, np.int64)
        start = np.zeros(2, np.int64)
        start[1] = g
    return wpos, g, gx, gy, gz, gi, use_bins, lo, size, nb, start


@njit(cache=True)
def gather(p, g, gx, gy, gz, gi, use_bins, lo, size, nb, start, cutoff, X, Y, Z, J):
    """Neighbours (0 < r < cutoff) of the point p: writes r_ghost - p into X, Y, Z and atom
    indices into J and returns their count, or -m if the buffers (length >= m needed) are too
    short. Without bins a length >= G always suffices."""
    cut2 = cutoff * cutoff
    if not use_bins:
        if X.shape[0] < g:
            return -g
        return _scan(p[0], p[1], p[2], 0, g, gx, gy, gz, gi, cut2, X, Y, Z, J, 0)
    c0 = min(nb[0] - 1, max(0, int((p[0] - lo[0]) / size[0])))
    c1 = min(nb[1] - 1, max(0, int((p[1] - lo[1]) / size[1])))
    c2 = min(nb[2] - 1, max(0, int((p[2] - lo[2]) / size[2])))
    need = 0
    for b0 in range(max(0, c0 - 1), min(nb[0], c0 + 2)):
        for b1 in range(max(0, c1 - 1), min(nb[1], c1 + 2)):
            b = (b0 * nb[1] + b1) * nb[2]
            need += start[b + min(nb[2], c2 + 2)] - start[b + max(0, c2 - 1)]
    if X.shape[0] < need:
        return -need
    c = 0
    for b0 in range(max(0, c0 - 1), min(nb[0], c0 + 2)):
        for b1 in range(max(0, c1 - 1), min(nb[1], c1 + 2)):
            b = (b0 * nb[1] + b1) * nb[2]  # bins of one (b0, b1) row along axis 2 are contiguous
            c = _scan(p[0], p[1], p[2], start[b + max(0, c2 - 1)], start[b + min(nb[2], c2 + 2)],
                      gx, gy, gz, gi, cut2, X, Y, Z, J, c)
    return c


@njit(cache=True)
def _csr(cell, pbc, positions, cutoff):
    offsets = np.zeros(2, np.int64)
    offsets[1] = positions.shape[0]
    return csr_batch(cell.reshape(1, 3, 3), pbc.reshape(1, 3), positions, offsets, cutoff)


@njit(cache=True)
def csr_batch(cells, pbcs, positions, offsets, cutoff):
    """Neighbour lists of B structures in one call (atoms of structure s are
    positions[offsets[s]:offsets[s+1]]): pair_off (Ntot+1,), j (P,) as GLOBAL atom indices,
    rij (P,3) = r_j_image - r_i in Å, for all pairs with 0 < |r| < cutoff."""
    ntot = offsets[cells.shape[0]]
    pair_off = np.zeros(ntot + 1, np.int64)
    gx = np.empty(256)
    gy = np.empty(256)
    gz = np.empty(256)
    gi = np.empty(256, np.int64)
    X = np.empty(256)
    Y = np.empty(256)
    Z = np.empty(256)
    J = np.empty(256, np.int64)
    total_cap = max(16, ntot * 32)
    all_r = np.empty((total_cap, 3))
    all_j = np.empty(total_cap, np.int64)
    for s in range(cells.shape[0]):
        o0 = offsets[s]
        wpos, g, gx, gy, gz, gi, use_bins, lo, size, nb, start = setup(
            cells[s], pbcs[s], positions[o0:offsets[s + 1]], cutoff, gx, gy, gz, gi)
        for i in range(offsets[s + 1] - o0):
            cnt = gather(wpos[i], g, gx, gy, gz, gi, use_bins, lo, size, nb, start, cutoff, X, Y, Z, J)
            if cnt < 0:
                X = np.empty(-2 * cnt)
                Y = np.empty(-2 * cnt)
                Z = np.empty(-2 * cnt)
                J = np.empty(-2 * cnt, np.int64)
                cnt = gather(wpos[i], g, gx, gy, gz, gi, use_bins, lo, size, nb, start, cutoff, X, Y, Z, J)
            o = pair_off[o0 + i]
            if o + cnt > total_cap:
                total_cap = 2 * (o + cnt)
                new_r = np.empty((total_cap, 3))
                new_j = np.empty(total_cap, np.int64)
                new_r[:o] = all_r[:o]
                new_j[:o] = all_j[:o]
                all_r, all_j = new_r, new_j
            for q in range(cnt):
                all_r[o + q, 0] = X[q]
                all_r[o + q, 1] = Y[q]
                all_r[o + q, 2] = Z[q]
                all_j[o + q] = J[q] + o0
            pair_off[o0 + i + 1] = o + cnt
    m = pair_off[ntot]
    return pair_off, all_j[:m].copy(), all_r[:m].copy()


def normalize_cell(cell, pbc, n_atoms: int) -> tuple[np.ndarray, np.ndarray]:
    """Validated float (3,3) cell and bool (3,) pbc; periodic vectors must be independent."""
    cell = np.ascontiguousarray(cell if cell is not None else np.zeros((3, 3)), dtype=np.float64).reshape(3, 3)
    pbc = np.ascontiguousarray(np.broadcast_to(np.asarray(pbc, dtype=bool), (3,)))
    if pbc.any():
        per = cell[pbc]
        if np.linalg.matrix_rank(per, tol=1e-9 * max(1.0, np.abs(per).max())) < per.shape[0]:
            raise ValueError("periodic cell vectors are degenerate")
    return cell, pbc


def neighbor_list(cell, pbc, positions, cutoff: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs (i, image of j) with 0 < |r| < cutoff (Å) as CSR arrays:
    offsets (N+1,), j (P,), rij (P,3) = r_j_image - r_i; neighbours of i are offsets[i]:offsets[i+1]."""
    positions = np.ascontiguousarray(positions, dtype=np.float64).reshape(-1, 3)
    cell, pbc = normalize_cell(cell, pbc, len(positions))
    if cutoff <= 0:
        raise ValueError("cutoff must be positive")
    return _csr(cell, pbc, positions, float(cutoff))
