"""Numba kernels: MTP energy, forces and virial with the neighbour search fused in.

Per atom i: neighbours are gathered from the ghost images (csp.mtp.neighbors), then
  1. radial basis by Chebyshev recursion, f_mu(r) and f_mu'(r) for every neighbour;
  2. unit-vector monomials u_x^a u_y^b u_z^c (all a+b+c <= max nu) and basic moments;
  3. contractions forward (file order), site energy V_i;
  4. reverse pass: dV_i/dm for every moment, then per neighbour dV_i/dr_ij;
  5. forces F_i += dV_i/dr_ij, F_j -= dV_i/dr_ij and virial sum r_ij (x) dV_i/dr_ij.
Units: Å, eV, eV/Å; the virial W = sum r_ij (x) dE/dr_ij is in eV (stress = W / V, ASE sign).
All arrays are flat numpy arrays; one call handles one structure or a whole batch.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from csp.mtp.neighbors import gather, prepare


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


def pack(mtp) -> tuple:
    """Flat arrays of a potential in the layout the kernels expect (computed once per potential)."""
    basic = mtp.alpha_index_basic
    max_nu = int(basic[:, 1:].sum(axis=1).max()) if len(basic) else 0
    powers, parent, axis, lower, index = angular_table(max_nu)
    basic_mu = np.ascontiguousarray(basic[:, 0]) if len(basic) else np.zeros(0, np.int64)
    basic_ang = np.array([index[tuple(int(v) for v in row[1:])] for row in basic], np.int64)
    times = mtp.alpha_index_times
    t_i = np.ascontiguousarray(times[:, 0]) if len(times) else np.zeros(0, np.int64)
    t_j = np.ascontiguousarray(times[:, 1]) if len(times) else np.zeros(0, np.int64)
    t_w = np.ascontiguousarray(times[:, 2].astype(np.float64)) if len(times) else np.zeros(0)
    t_k = np.ascontiguousarray(times[:, 3]) if len(times) else np.zeros(0, np.int64)
    # runs of basic moments with one mu and consecutive monomials: (start, mu, first monomial, length)
    blocks = []
    for n in range(len(basic_mu)):
        if blocks and basic_mu[n] == blocks[-1][1] and basic_ang[n] == blocks[-1][2] + blocks[-1][3] \
                and n == blocks[-1][0] + blocks[-1][3]:
            blocks[-1][3] += 1
        else:
            blocks.append([n, int(basic_mu[n]), int(basic_ang[n]), 1])
    blocks = np.array(blocks, np.int64).reshape(-1, 4)
    return (np.ascontiguousarray(mtp.radial_coeffs), np.ascontiguousarray(mtp.species_coeffs),
            np.ascontiguousarray(mtp.moment_coeffs), np.ascontiguousarray(mtp.alpha_moment_mapping),
            blocks, basic_ang, t_i, t_j, t_w, t_k,
            np.ascontiguousarray(powers.astype(np.float64)), parent, axis, lower,
            np.array([mtp.min_dist, mtp.max_dist, mtp.scaling]), int(mtp.alpha_moments_count))


@njit(cache=True, fastmath=True)
def site_energy(ti, nn, rv, tj, P, S, grad):
    """Site energy V_i (eV) of a centre of type ti with nn neighbours (vectors rv[:nn], types
    tj[:nn]); writes dV_i/dr_ij into grad[:nn]. P = pack(mtp); S = scratch arrays (_scratch)."""
    (rc, spc, mc, mapping, blocks, basic_ang, t_i, t_j, t_w, t_k, pw, parent, axis, lower, geo, n_alpha) = P
    f, df, mono, m, g, gf, gang, T, dT = S
    rmin, rmax, scaling = geo[0], geo[1], geo[2]
    nmu = rc.shape[2]
    nb = rc.shape[3]
    n_ang = pw.shape[0]
    n_blocks = blocks.shape[0]
    inv_span = 1.0 / (rmax - rmin)
    for k in range(n_alpha):
        m[k] = 0.0
    for q in range(nn):
        x, y, z = rv[q, 0], rv[q, 1], rv[q, 2]
        r = np.sqrt(x * x + y * y + z * z)
        # radial basis
        xi = (2.0 * r - rmin - rmax) * inv_span
        dxi = 2.0 * inv_span
        T[0] = 1.0
        dT[0] = 0.0
        if nb > 1:
            T[1] = xi
            dT[1] = 1.0
        for b in range(2, nb):
            T[b] = 2.0 * xi * T[b - 1] - T[b - 2]
            dT[b] = 2.0 * T[b - 1] + 2.0 * xi * dT[b - 1] - dT[b - 2]
        d = r - rmax
        d2s = scaling * d * d
        dd2s = 2.0 * scaling * d
        c = rc[ti, tj[q]]
        for mu in range(nmu):
            sf = 0.0
            sd = 0.0
            for b in range(nb):
                sf += c[mu, b] * T[b]
                sd += c[mu, b] * dT[b]
            f[q, mu] = sf * d2s
            df[q, mu] = sd * dxi * d2s + sf * dd2s
        # monomials of the unit vector
        inv_r = 1.0 / r
        u0, u1, u2 = x * inv_r, y * inv_r, z * inv_r
        mono[q, 0] = 1.0
        for a in range(1, n_ang):
            ax = axis[a]
            uu = u0 if ax == 0 else (u1 if ax == 1 else u2)
            mono[q, a] = mono[q, parent[a]] * uu
        for bl in range(n_blocks):
            n0, mu, a0, ln = blocks[bl, 0], blocks[bl, 1], blocks[bl, 2], blocks[bl, 3]
            fq = f[q, mu]
            for c in range(ln):
                m[n0 + c] += fq * mono[q, a0 + c]
    # contractions forward
    for t in range(t_k.shape[0]):
        m[t_k[t]] += t_w[t] * m[t_i[t]] * m[t_j[t]]
    energy = spc[ti]
    for k in range(n_alpha):
        g[k] = 0.0
    for s in range(mapping.shape[0]):
        energy += mc[s] * m[mapping[s]]
        g[mapping[s]] += mc[s]
    # reverse pass
    for t in range(t_k.shape[0] - 1, -1, -1):
        gk = g[t_k[t]] * t_w[t]
        if gk != 0.0:
            g[t_i[t]] += gk * m[t_j[t]]
            g[t_j[t]] += gk * m[t_i[t]]
    # per-neighbour gradient
    for q in range(nn):
        x, y, z = rv[q, 0], rv[q, 1], rv[q, 2]
        r = np.sqrt(x * x + y * y + z * z)
        inv_r = 1.0 / r
        u0, u1, u2 = x * inv_r, y * inv_r, z * inv_r
        for mu in range(nmu):
            gf[mu] = 0.0
        for a in range(n_ang):
            gang[a] = 0.0
        for bl in range(n_blocks):
            n0, mu, a0, ln = blocks[bl, 0], blocks[bl, 1], blocks[bl, 2], blocks[bl, 3]
            fq = f[q, mu]
            acc = 0.0
            for c in range(ln):
                gn = g[n0 + c]
                acc += gn * mono[q, a0 + c]
                gang[a0 + c] += gn * fq
            gf[mu] += acc
        srad = 0.0
        for mu in range(nmu):
            srad += gf[mu] * df[q, mu]
        gx = srad * u0
        gy = srad * u1
        gz = srad * u2
        # reverse pass through the monomial recursion mono[a] = mono[parent[a]] * u[axis[a]]
        # gives dV/du; then dV/dr_vec = (dV/du - (dV/du . u) u) / r (u = r_vec / r)
        gu0 = 0.0
        gu1 = 0.0
        gu2 = 0.0
        for a in range(n_ang - 1, 0, -1):
            ga = gang[a]
            if ga != 0.0:
                pa = parent[a]
                ax = axis[a]
                if ax == 0:
                    gu0 += ga * mono[q, pa]
                    gang[pa] += ga * u0
                elif ax == 1:
                    gu1 += ga * mono[q, pa]
                    gang[pa] += ga * u1
                else:
                    gu2 += ga * mono[q, pa]
                    gang[pa] += ga * u2
        dot = gu0 * u0 + gu1 * u1 + gu2 * u2
        grad[q, 0] = gx + (gu0 - dot * u0) * inv_r
        grad[q, 1] = gy + (gu1 - dot * u1) * inv_r
        grad[q, 2] = gz + (gu2 - dot * u2) * inv_r
    return energy


@njit(cache=True)
def _scratch(P, cap):
    rc, pw, n_alpha = P[0], P[10], P[15]
    nmu, nb, n_ang = rc.shape[2], rc.shape[3], pw.shape[0]
    return (np.zeros((cap, nmu)), np.zeros((cap, nmu)), np.zeros((cap, n_ang)), np.zeros(n_alpha),
            np.zeros(n_alpha), np.zeros(nmu), np.zeros(n_ang), np.zeros(max(nb, 2)), np.zeros(max(nb, 2)))


@njit(cache=True)
def efs_batch(cells, pbcs, positions, types, offsets, P, energies, forces, virials, site_rows):
    """Energies per atom (Ntot,), forces (Ntot,3) and virials (B,3,3) for B structures whose
    atoms are positions[offsets[b]:offsets[b+1]]; outputs are overwritten. Neighbours are found
    inside (cutoff = max_dist). If site_rows has Ntot rows, it receives every site's scalar basis
    values (Ntot, n_scalar) = dV_i/d(moment_coeffs), a by-product of the energy used for the
    extrapolation grade; pass an empty (0, n) array otherwise."""
    cutoff = P[14][1]
    mapping = P[3]
    want_rows = site_rows.shape[0] == positions.shape[0] and positions.shape[0] > 0
    cap = 128
    S = _scratch(P, cap)
    rv = np.empty((cap, 3))
    jj = np.empty(cap, np.int64)
    tj = np.empty(cap, np.int64)
    grad = np.empty((cap, 3))
    for s in range(cells.shape[0]):
        o0 = offsets[s]
        o1 = offsets[s + 1]
        pos = positions[o0:o1]
        wpos, gpos, gidx, use_bins, lo, size, nbins, start, order = prepare(cells[s], pbcs[s], pos, cutoff)
        for a in range(3):
            for b in range(3):
                virials[s, a, b] = 0.0
        for i in range(o1 - o0):
            forces[o0 + i, 0] = 0.0
            forces[o0 + i, 1] = 0.0
            forces[o0 + i, 2] = 0.0
        for i in range(o1 - o0):
            nn = gather(wpos[i], gpos, gidx, use_bins, lo, size, nbins, start, order, cutoff, rv, jj)
            if nn > cap:
                cap = 2 * nn
                S = _scratch(P, cap)
                rv = np.empty((cap, 3))
                jj = np.empty(cap, np.int64)
                tj = np.empty(cap, np.int64)
                grad = np.empty((cap, 3))
                nn = gather(wpos[i], gpos, gidx, use_bins, lo, size, nbins, start, order, cutoff, rv, jj)
            for q in range(nn):
                tj[q] = types[o0 + jj[q]]
            energies[o0 + i] = site_energy(types[o0 + i], nn, rv, tj, P, S, grad)
            if want_rows:
                m = S[3]
                for q in range(mapping.shape[0]):
                    site_rows[o0 + i, q] = m[mapping[q]]
            for q in range(nn):
                j = o0 + jj[q]
                for a in range(3):
                    forces[o0 + i, a] += grad[q, a]
                    forces[j, a] -= grad[q, a]
                    for b in range(3):
                        virials[s, a, b] += rv[q, a] * grad[q, b]
