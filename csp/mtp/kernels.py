"""Numba kernels: MTP energy, forces and virial with the neighbour search fused in.

Per atom i: neighbours are gathered from the ghost images (csp.mtp.neighbors) into separate
x, y, z arrays (grouped by neighbour species), then, vectorised over the neighbours q:
  1. radial basis by Chebyshev recursion T_b(xi_q), T_b'(xi_q); f_mu(r_q), f_mu'(r_q);
  2. unit-vector monomials u_x^a u_y^b u_z^c (all a+b+c <= max nu) and basic moments
     m_k = sum_q f_mu(r_q) mono_a(u_q);
  3. contractions forward (scheduled, see contraction_schedule), site energy V_i;
  4. reverse pass: dV_i/dm for every moment, then per neighbour dV_i/dr_ij;
  5. forces F_i += dV_i/dr_ij, F_j -= dV_i/dr_ij and virial sum r_ij (x) dV_i/dr_ij.
Arrays indexed [row, q] keep q contiguous so that the compiler vectorises every step over the
~40 neighbours of an atom (SIMD); all scratch arrays live in a workspace allocated once per call.
Units: Å, eV, eV/Å; the virial W = sum r_ij (x) dE/dr_ij is in eV (stress = W / V, ASE sign).
All arrays are flat numpy arrays; one call handles one structure or a whole batch.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from csp.errors import InputError
from csp.mtp.neighbors import gather, setup


def angular_table(max_nu: int):
    """All monomials (a, b, c) with a+b+c <= max_nu, ordered by degree.

    Returns powers (n_ang, 3) int64, parent (n_ang,) int64 and parent_axis (n_ang,) int64
    (monomial = parent monomial * u[axis]; -1 for the constant), lower (n_ang, 3) int64
    (index of the monomial with that power lowered by one, -1 if the power is 0)."""
    powers = [(a, b, nu - a - b) for nu in range(max_nu + 1) for a in range(nu, -1, -1)
              for b in range(nu - a, -1, -1)]
    index = {p: k for k, p in enumerate(powers)}
    parent = np.full(len(powers), -1, np.int64)
    axis = np.full(len(powers), -1, np.int64)
    lower = np.full((len(powers), 3), -1, np.int64)
    for k, p in enumerate(powers):
        for d in range(3):
            if p[d] > 0:
                q = list(p)
                q[d] -= 1
                lower[k, d] = index[tuple(q)]
        for d in range(3):
            if p[d] > 0:
                parent[k], axis[k] = lower[k, d], d
                break
    return np.array(powers, np.int64).reshape(-1, 3), parent, axis, lower, index


def contraction_schedule(times: np.ndarray, n_alpha: int) -> tuple:
    """MLIP's contractions m[k] += w m[i] m[j] (alpha_index_times rows [i, j, w, k]) reordered
    for speed: by dependency level (a moment's contributions all precede its uses) and, within a
    level, round-robin over the targets k, so that consecutive rows never wait on each other's
    result. Each m[k] still receives its contributions in file order (same sums as MLIP).
    Returns the forward schedule tijk (T,3) int32 [i, j, k] and w (T,), and the rows in file
    order (T,3), (T,) for the reverse pass (walked backwards; measured faster in that order).
    Requires every moment to be complete before it is used (true for MLIP's and csp's schemes)."""
    times = np.asarray(times).reshape(-1, 4)
    T = len(times)
    ti = times[:, 0].astype(np.int64)
    tj = times[:, 1].astype(np.int64)
    tk = times[:, 3].astype(np.int64)
    last_write = np.full(n_alpha, -1, np.int64)
    last_write[tk] = np.arange(T)
    for t in range(T):
        for x in (ti[t], tj[t]):
            if last_write[x] >= t:
                raise InputError(f"alpha_index_times row {t}: moment {x} is used before its last "
                                 "contribution (rows not in dependency order)")
    depth = np.zeros(n_alpha, np.int64)
    for t in range(T):
        depth[tk[t]] = max(depth[tk[t]], 1 + max(depth[ti[t]], depth[tj[t]]))
    order = []
    for level in np.unique(depth[tk]):
        runs: dict[int, list[int]] = {}
        for t in np.flatnonzero(depth[tk] == level):
            runs.setdefault(int(tk[t]), []).append(int(t))
        lists = list(runs.values())
        for r in range(max(len(rows) for rows in lists)):
            order += [rows[r] for rows in lists if r < len(rows)]
    order = np.array(order, np.int64)
    rows = np.stack([ti, tj, tk], axis=1).reshape(-1, 3).astype(np.int32)
    w = np.ascontiguousarray(times[:, 2], dtype=np.float64)
    return np.ascontiguousarray(rows[order]), np.ascontiguousarray(w[order]), np.ascontiguousarray(rows), w


def pack(mtp) -> tuple:
    """Flat arrays of a potential in the layout the kernels expect (computed once per potential):
    (radial_coeffs, species_coeffs, moment_coeffs, alpha_moment_mapping, basic_mu, basic_ang,
    forward rows, forward weights, reverse rows, reverse weights (contraction_schedule), parent,
    axis, geometry [min_dist, max_dist, scaling], alpha_moments_count)."""
    basic = mtp.alpha_index_basic
    max_nu = int(basic[:, 1:].sum(axis=1).max()) if len(basic) else 0
    powers, parent, axis, lower, index = angular_table(max_nu)
    basic_mu = np.ascontiguousarray(basic[:, 0], dtype=np.int64) if len(basic) else np.zeros(0, np.int64)
    basic_ang = np.array([index[tuple(int(v) for v in row[1:])] for row in basic], np.int64)
    n_alpha = int(mtp.alpha_moments_count)
    return ((np.ascontiguousarray(mtp.radial_coeffs, dtype=np.float64),
             np.ascontiguousarray(mtp.species_coeffs, dtype=np.float64),
             np.ascontiguousarray(mtp.moment_coeffs, dtype=np.float64),
             np.ascontiguousarray(mtp.alpha_moment_mapping, dtype=np.int64),
             basic_mu, basic_ang)
            + contraction_schedule(mtp.alpha_index_times, n_alpha)
            + (parent, axis, np.array([mtp.min_dist, mtp.max_dist, mtp.scaling]), n_alpha))


@njit(cache=True)
def _workspace(P, cap):
    """Per-neighbour scratch arrays [row, q] for up to `cap` neighbours, and per-site vectors."""
    rc, n_alpha, parent = P[0], P[13], P[10]
    nmu, nb, n_ang = rc.shape[2], rc.shape[3], parent.shape[0]
    return (np.empty((3, cap)),            # 0  U: unit vectors
            np.empty((4, cap)),            # 1  radial scalars: inv_r, xi, (r-rmax)^2 s, 2 (r-rmax) s
            np.empty((max(nb, 2), cap)),   # 2  T_b(xi)
            np.empty((max(nb, 2), cap)),   # 3  T_b'(xi)
            np.empty((nmu, cap)),          # 4  f_mu(r)
            np.empty((nmu, cap)),          # 5  f_mu'(r)
            np.empty((n_ang, cap)),        # 6  monomials of u
            np.empty((nmu, cap)),          # 7  dV/df_mu
            np.empty((n_ang, cap)),        # 8  dV/dmono
            np.empty((3, cap)),            # 9  dV/du
            np.empty((3, cap)),            # 10 dV/dr_ij
            np.empty(n_alpha),             # 11 moments m
            np.empty(n_alpha))             # 12 dV/dm


@njit(cache=True, fastmath=True)
def site_energy(ti, nn, X, Y, Z, seg, P, W):
    """Site energy V_i (eV) of a centre of type ti with nn neighbours at X, Y, Z[:nn] (r_j - r_i),
    grouped by species: neighbours seg[t]:seg[t+1] are of type t. Writes dV_i/dr_ij into
    W[10][:, :nn] and the moments into W[11]. P = pack(mtp), W = _workspace(P, >= nn)."""
    (rc, spc, mc, mapping, basic_mu, basic_ang, tijk, t_w, rijk, r_w, parent, axis, geo, n_alpha) = P
    U, RS, T, dT, f, df, mono, gf, gang, gu, G, m, g = W
    rmin, rmax, scaling = geo[0], geo[1], geo[2]
    nmu = rc.shape[2]
    nb = rc.shape[3]
    n_ang = parent.shape[0]
    n_basic = basic_mu.shape[0]
    inv_span = 1.0 / (rmax - rmin)
    dxi = 2.0 * inv_span
    # geometry and radial scalars per neighbour
    for q in range(nn):
        x = X[q]
        y = Y[q]
        z = Z[q]
        r = np.sqrt(x * x + y * y + z * z)
        inv_r = 1.0 / r
        U[0, q] = x * inv_r
        U[1, q] = y * inv_r
        U[2, q] = z * inv_r
        RS[0, q] = inv_r
        xi = (2.0 * r - rmin - rmax) * inv_span
        RS[1, q] = xi
        d = r - rmax
        RS[2, q] = scaling * d * d
        RS[3, q] = 2.0 * scaling * d
        T[0, q] = 1.0
        dT[0, q] = 0.0
        T[1, q] = xi
        dT[1, q] = 1.0
    for b in range(2, nb):
        for q in range(nn):
            xi = RS[1, q]
            T[b, q] = 2.0 * xi * T[b - 1, q] - T[b - 2, q]
            dT[b, q] = 2.0 * T[b - 1, q] + 2.0 * xi * dT[b - 1, q] - dT[b - 2, q]
    # radial functions: one coefficient block per neighbour species
    for t in range(seg.shape[0] - 1):
        q0 = seg[t]
        q1 = seg[t + 1]
        if q1 == q0:
            continue
        c = rc[ti, t]
        for mu in range(nmu):
            c0 = c[mu, 0]
            for q in range(q0, q1):
                f[mu, q] = c0
                df[mu, q] = 0.0
            for b in range(1, nb):
                cb = c[mu, b]
                for q in range(q0, q1):
                    f[mu, q] += cb * T[b, q]
                    df[mu, q] += cb * dT[b, q]
    for mu in range(nmu):
        for q in range(nn):
            s = f[mu, q]
            df[mu, q] = df[mu, q] * dxi * RS[2, q] + s * RS[3, q]
            f[mu, q] = s * RS[2, q]
    # monomials of the unit vector and basic moments
    for q in range(nn):
        mono[0, q] = 1.0
    for a in range(1, n_ang):
        pa = parent[a]
        ax = axis[a]
        for q in range(nn):
            mono[a, q] = mono[pa, q] * U[ax, q]
    for k in range(n_basic):
        mu = basic_mu[k]
        a = basic_ang[k]
        s = 0.0
        for q in range(nn):
            s += f[mu, q] * mono[a, q]
        m[k] = s
    for k in range(n_basic, n_alpha):
        m[k] = 0.0
    # contractions forward (scheduled order), energy, reverse pass (file order backwards)
    n_times = t_w.shape[0]
    for t in range(n_times):
        m[tijk[t, 2]] += t_w[t] * m[tijk[t, 0]] * m[tijk[t, 1]]
    energy = spc[ti]
    for k in range(n_alpha):
        g[k] = 0.0
    for s in range(mapping.shape[0]):
        energy += mc[s] * m[mapping[s]]
        g[mapping[s]] += mc[s]
    for t in range(n_times - 1, -1, -1):
        gk = g[rijk[t, 2]] * r_w[t]
        i = rijk[t, 0]
        j = rijk[t, 1]
        g[i] += gk * m[j]
        g[j] += gk * m[i]
    # back to the neighbours: dV/df_mu and dV/dmono
    for mu in range(nmu):
        for q in range(nn):
            gf[mu, q] = 0.0
    for a in range(n_ang):
        for q in range(nn):
            gang[a, q] = 0.0
    for k in range(n_basic):
        gk = g[k]
        if gk != 0.0:
            mu = basic_mu[k]
            a = basic_ang[k]
            for q in range(nn):
                gf[mu, q] += gk * mono[a, q]
                gang[a, q] += gk * f[mu, q]
    # reverse pass through mono[a] = mono[parent[a]] * u[axis[a]] gives dV/du
    for d in range(3):
        for q in range(nn):
            gu[d, q] = 0.0
    for a in range(n_ang - 1, 0, -1):
        pa = parent[a]
        ax = axis[a]
        for q in range(nn):
            ga = gang[a, q]
            gu[ax, q] += ga * mono[pa, q]
            gang[pa, q] += ga * U[ax, q]
    # dV/dr_vec = (dV/dr) u + (dV/du - (dV/du . u) u) / r
    for q in range(nn):
        G[0, q] = 0.0
    for mu in range(nmu):
        for q in range(nn):
            G[0, q] += gf[mu, q] * df[mu, q]
    for q in range(nn):
        srad = G[0, q]
        u0 = U[0, q]
        u1 = U[1, q]
        u2 = U[2, q]
        g0 = gu[0, q]
        g1 = gu[1, q]
        g2 = gu[2, q]
        dot = g0 * u0 + g1 * u1 + g2 * u2
        inv_r = RS[0, q]
        G[0, q] = srad * u0 + (g0 - dot * u0) * inv_r
        G[1, q] = srad * u1 + (g1 - dot * u1) * inv_r
        G[2, q] = srad * u2 + (g2 - dot * u2) * inv_r
    return energy


@njit(cache=True, fastmath=True)
def _scatter(o0, i, nn, X, Y, Z, J, G, forces, virial):
    """F_i += sum_q dV_i/dr_q, F_j -= dV_i/dr_q, virial += sum_q r_q (x) dV_i/dr_q."""
    f0 = f1 = f2 = 0.0
    v00 = v01 = v02 = v10 = v11 = v12 = v20 = v21 = v22 = 0.0
    for q in range(nn):
        g0 = G[0, q]
        g1 = G[1, q]
        g2 = G[2, q]
        f0 += g0
        f1 += g1
        f2 += g2
        x = X[q]
        y = Y[q]
        z = Z[q]
        v00 += x * g0
        v01 += x * g1
        v02 += x * g2
        v10 += y * g0
        v11 += y * g1
        v12 += y * g2
        v20 += z * g0
        v21 += z * g1
        v22 += z * g2
    forces[o0 + i, 0] += f0
    forces[o0 + i, 1] += f1
    forces[o0 + i, 2] += f2
    for q in range(nn):
        j = o0 + J[q]
        forces[j, 0] -= G[0, q]
        forces[j, 1] -= G[1, q]
        forces[j, 2] -= G[2, q]
    virial[0, 0] += v00
    virial[0, 1] += v01
    virial[0, 2] += v02
    virial[1, 0] += v10
    virial[1, 1] += v11
    virial[1, 2] += v12
    virial[2, 0] += v20
    virial[2, 1] += v21
    virial[2, 2] += v22


@njit(cache=True)
def efs_batch(cells, pbcs, positions, types, offsets, P, energies, forces, virials, site_rows):
    """Energies per atom (Ntot,), forces (Ntot,3) and virials (B,3,3) for B structures whose
    atoms are positions[offsets[b]:offsets[b+1]]; outputs are overwritten. Neighbours are found
    inside (cutoff = max_dist). If site_rows has Ntot rows, it receives every site's scalar basis
    values (Ntot, n_scalar) = dV_i/d(moment_coeffs), a by-product of the energy used for the
    extrapolation grade; pass an empty (0, n) array otherwise."""
    cutoff = P[12][1]
    mapping = P[3]
    n_species = P[0].shape[1]
    want_rows = site_rows.shape[0] == positions.shape[0] and positions.shape[0] > 0
    gx = np.empty(512)
    gy = np.empty(512)
    gz = np.empty(512)
    gi = np.empty(512, np.int64)
    # gathered neighbours (unsorted) and, for several species, grouped by species
    X = np.empty(512)
    Y = np.empty(512)
    Z = np.empty(512)
    J = np.empty(512, np.int64)
    sX = np.empty(512)
    sY = np.empty(512)
    sZ = np.empty(512)
    sJ = np.empty(512, np.int64)
    seg = np.zeros(n_species + 1, np.int64)
    fill = np.zeros(n_species, np.int64)
    wcap = 64
    W = _workspace(P, wcap)
    for s in range(cells.shape[0]):
        o0 = offsets[s]
        o1 = offsets[s + 1]
        wpos, g, gx, gy, gz, gi, use_bins, lo, size, nb, start = setup(
            cells[s], pbcs[s], positions[o0:o1], cutoff, gx, gy, gz, gi)
        for a in range(3):
            for b in range(3):
                virials[s, a, b] = 0.0
        for i in range(o1 - o0):
            forces[o0 + i, 0] = 0.0
            forces[o0 + i, 1] = 0.0
            forces[o0 + i, 2] = 0.0
        for i in range(o1 - o0):
            nn = gather(wpos[i], g, gx, gy, gz, gi, use_bins, lo, size, nb, start, cutoff, X, Y, Z, J)
            if nn < 0:
                X = np.empty(-2 * nn)
                Y = np.empty(-2 * nn)
                Z = np.empty(-2 * nn)
                J = np.empty(-2 * nn, np.int64)
                sX = np.empty(-2 * nn)
                sY = np.empty(-2 * nn)
                sZ = np.empty(-2 * nn)
                sJ = np.empty(-2 * nn, np.int64)
                nn = gather(wpos[i], g, gx, gy, gz, gi, use_bins, lo, size, nb, start, cutoff, X, Y, Z, J)
            if nn > wcap:
                wcap = 2 * nn
                W = _workspace(P, wcap)
            if n_species == 1:
                seg[1] = nn
                qX, qY, qZ, qJ = X, Y, Z, J
            else:  # counting sort by neighbour species
                for t in range(n_species + 1):
                    seg[t] = 0
                for q in range(nn):
                    seg[types[o0 + J[q]] + 1] += 1
                for t in range(n_species):
                    seg[t + 1] += seg[t]
                    fill[t] = seg[t]
                for q in range(nn):
                    t = types[o0 + J[q]]
                    p = fill[t]
                    fill[t] += 1
                    sX[p] = X[q]
                    sY[p] = Y[q]
                    sZ[p] = Z[q]
                    sJ[p] = J[q]
                qX, qY, qZ, qJ = sX, sY, sZ, sJ
            energies[o0 + i] = site_energy(types[o0 + i], nn, qX, qY, qZ, seg, P, W)
            if want_rows:
                m = W[11]
                for k in range(mapping.shape[0]):
                    site_rows[o0 + i, k] = m[mapping[k]]
            _scatter(o0, i, nn, qX, qY, qZ, qJ, W[10], forces, virials[s])
