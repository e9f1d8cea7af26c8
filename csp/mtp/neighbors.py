"""Neighbour search (numba): all pairs (i, image of j) with 0 < r < cutoff.

Works for any cell shape, cells smaller than the cutoff (many periodic images, self-images
included) and non-periodic directions. Method: wrap atoms into the cell, build the "ghost"
images whose fractional coordinates lie within cutoff/d_k of the cell (d_k the spacing of lattice
planes), then scan ghosts directly (small cells) or through a Cartesian bin grid (large cells).
The njit building blocks are reused by the fused evaluation kernels. Distances in Å.
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
def build_ghosts(cell, pbc, positions, cutoff):
    """Wrapped positions (N,3) and ghost images (G,3) with their atom index (G,); every image
    that can be within `cutoff` of a wrapped atom is included (the atoms themselves too)."""
    n = positions.shape[0]
    ecell = effective_cell(cell, pbc)
    inv = np.linalg.inv(ecell)
    frac = positions @ inv
    reach = np.zeros(3)
    nimg = np.zeros(3, np.int64)
    for k in range(3):
        if pbc[k]:
            for a in range(n):
                frac[a, k] -= np.floor(frac[a, k])
                if frac[a, k] >= 1.0:
                    frac[a, k] = 0.0
            # |b_k| = norm of column k of inv(ecell) = 1 / plane spacing
            bk = np.sqrt(inv[0, k] ** 2 + inv[1, k] ** 2 + inv[2, k] ** 2)
            reach[k] = cutoff * bk
            nimg[k] = int(np.ceil(reach[k])) + 1
    wpos = np.empty((n, 3))
    for a in range(n):
        for d in range(3):  # same arithmetic as the ghosts below, so self-images give r = 0 exactly
            wpos[a, d] = frac[a, 0] * ecell[0, d] + frac[a, 1] * ecell[1, d] + frac[a, 2] * ecell[2, d]
    # count then fill
    count = 0
    for pa in range(2):
        if pa == 1:
            gpos = np.empty((count, 3))
            gidx = np.empty(count, np.int64)
            count = 0
        for n0 in range(-nimg[0], nimg[0] + 1):
            for n1 in range(-nimg[1], nimg[1] + 1):
                for n2 in range(-nimg[2], nimg[2] + 1):
                    for a in range(n):
                        s0 = frac[a, 0] + n0
                        s1 = frac[a, 1] + n1
                        s2 = frac[a, 2] + n2
                        if pbc[0] and (s0 < -reach[0] or s0 >= 1.0 + reach[0]):
                            continue
                        if pbc[1] and (s1 < -reach[1] or s1 >= 1.0 + reach[1]):
                            continue
                        if pbc[2] and (s2 < -reach[2] or s2 >= 1.0 + reach[2]):
                            continue
                        if pa == 1:
                            for d in range(3):
                                gpos[count, d] = s0 * ecell[0, d] + s1 * ecell[1, d] + s2 * ecell[2, d]
                            gidx[count] = a
                        count += 1
    return wpos, gpos, gidx


@njit(cache=True)
def build_bins(gpos, cutoff):
    """Cartesian bin grid over the ghosts: (origin (3,), nbins (3,), start (nb+1,), order (G,))."""
    g = gpos.shape[0]
    lo = np.empty(3)
    nb = np.ones(3, np.int64)
    for d in range(3):
        lo[d] = gpos[:, d].min() if g > 0 else 0.0
        hi = gpos[:, d].max() if g > 0 else 0.0
        nb[d] = max(1, int((hi - lo[d]) / cutoff))
        if nb[d] > 1000:
            nb[d] = 1000
    size = np.empty(3)
    for d in range(3):
        hi = gpos[:, d].max() if g > 0 else 0.0
        size[d] = max((hi - lo[d]) / nb[d], 1e-12)
    total = nb[0] * nb[1] * nb[2]
    binof = np.empty(g, np.int64)
    start = np.zeros(total + 1, np.int64)
    for a in range(g):
        c0 = min(nb[0] - 1, int((gpos[a, 0] - lo[0]) / size[0]))
        c1 = min(nb[1] - 1, int((gpos[a, 1] - lo[1]) / size[1]))
        c2 = min(nb[2] - 1, int((gpos[a, 2] - lo[2]) / size[2]))
        b = (c0 * nb[1] + c1) * nb[2] + c2
        binof[a] = b
        start[b + 1] += 1
    for b in range(total):
        start[b + 1] += start[b]
    fill = start[:-1].copy()
    order = np.empty(g, np.int64)
    for a in range(g):
        order[fill[binof[a]]] = a
        fill[binof[a]] += 1
    return lo, size, nb, start, order


@njit(cache=True)
def gather(p, gpos, gidx, use_bins, lo, size, nb, start, order, cutoff, out_r, out_j):
    """Neighbours of the point p: writes r_ghost - p into out_r and atom indices into out_j
    (up to their capacity) and returns the total count (caller grows buffers if larger)."""
    cut2 = cutoff * cutoff
    cap = out_j.shape[0]
    count = 0
    if not use_bins:
        for a in range(gpos.shape[0]):
            dx = gpos[a, 0] - p[0]
            dy = gpos[a, 1] - p[1]
            dz = gpos[a, 2] - p[2]
            r2 = dx * dx + dy * dy + dz * dz
            if r2 < cut2 and r2 > 0.0:
                if count < cap:
                    out_r[count, 0] = dx
                    out_r[count, 1] = dy
                    out_r[count, 2] = dz
                    out_j[count] = gidx[a]
                count += 1
        return count
    c0 = min(nb[0] - 1, max(0, int((p[0] - lo[0]) / size[0])))
    c1 = min(nb[1] - 1, max(0, int((p[1] - lo[1]) / size[1])))
    c2 = min(nb[2] - 1, max(0, int((p[2] - lo[2]) / size[2])))
    for b0 in range(max(0, c0 - 1), min(nb[0], c0 + 2)):
        for b1 in range(max(0, c1 - 1), min(nb[1], c1 + 2)):
            for b2 in range(max(0, c2 - 1), min(nb[2], c2 + 2)):
                b = (b0 * nb[1] + b1) * nb[2] + b2
                for q in range(start[b], start[b + 1]):
                    a = order[q]
                    dx = gpos[a, 0] - p[0]
                    dy = gpos[a, 1] - p[1]
                    dz = gpos[a, 2] - p[2]
                    r2 = dx * dx + dy * dy + dz * dz
                    if r2 < cut2 and r2 > 0.0:
                        if count < cap:
                            out_r[count, 0] = dx
                            out_r[count, 1] = dy
                            out_r[count, 2] = dz
                            out_j[count] = gidx[a]
                        count += 1
    return count


@njit(cache=True)
def prepare(cell, pbc, positions, cutoff):
    """Ghosts and (if large) bins for one structure; returns everything `gather` needs."""
    wpos, gpos, gidx = build_ghosts(cell, pbc, positions, cutoff)
    use_bins = gpos.shape[0] > BIN_THRESHOLD
    if use_bins:
        lo, size, nb, start, order = build_bins(gpos, cutoff)
    else:
        lo = np.zeros(3)
        size = np.ones(3)
        nb = np.ones(3, np.int64)
        start = np.zeros(2, np.int64)
        order = np.zeros(0, np.int64)
    return wpos, gpos, gidx, use_bins, lo, size, nb, start, order


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
    cap = 64
    buf_r = np.empty((cap, 3))
    buf_j = np.empty(cap, np.int64)
    total_cap = max(16, ntot * 32)
    all_r = np.empty((total_cap, 3))
    all_j = np.empty(total_cap, np.int64)
    for s in range(cells.shape[0]):
        o0 = offsets[s]
        wpos, gpos, gidx, use_bins, lo, size, nb, start, order = prepare(cells[s], pbcs[s],
                                                                         positions[o0:offsets[s + 1]], cutoff)
        for i in range(offsets[s + 1] - o0):
            cnt = gather(wpos[i], gpos, gidx, use_bins, lo, size, nb, start, order, cutoff, buf_r, buf_j)
            if cnt > cap:
                cap = 2 * cnt
                buf_r = np.empty((cap, 3))
                buf_j = np.empty(cap, np.int64)
                cnt = gather(wpos[i], gpos, gidx, use_bins, lo, size, nb, start, order, cutoff, buf_r, buf_j)
            o = pair_off[o0 + i]
            if o + cnt > total_cap:
                total_cap = 2 * (o + cnt)
                new_r = np.empty((total_cap, 3))
                new_j = np.empty(total_cap, np.int64)
                new_r[:o] = all_r[:o]
                new_j[:o] = all_j[:o]
                all_r, all_j = new_r, new_j
            all_r[o:o + cnt] = buf_r[:cnt]
            for q in range(cnt):
                all_j[o + q] = buf_j[q] + o0
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
