"""Numba kernels for training an MTP: per-atom basis values, the loss with its adjoint gradient,
and the rows of the linear least-squares problem.

All kernels work on a flat training set (see `csp.mtp.fit_data.FitData`): configurations
`c` own atoms `atom_off[c]:atom_off[c+1]`; atom `i` owns pairs `pair_off[i]:pair_off[i+1]`
with global neighbour index `pj[p]` (an atom of the same configuration) and vector
`rij[p] = r_j(image) - r_i` in Å.

Notation (see csp/mtp/potential.py): basic moments m_a = sum_j f_mu(r) u_x^a u_y^b u_z^c,
contractions m[k] += w m[i] m[j] in file order, V_i = s[t_i] + sum_q xi_q m[map_q].
Virial W = -dE/d(strain) (MLIP's PlusStress, eV), a full symmetric 3x3 matrix.

Loss (MLIP's default "vibrations" weighting, summed over configurations):
    w_e (E - E_ref)^2 / N + w_f sum_i |F_i - F_ref_i|^2 + w_s sum_ab (W_ab - W_ref_ab)^2 / N.
Its gradient is computed as an adjoint: with residuals held fixed,
    dL/dtheta = d/dtheta [ a_E E - D_d E ],  a_E = 2 w_e dE / N,
where D_d E = sum_pairs dE/dr_p . d_p is the derivative of E along the pair displacements
d_p = 2 w_f (dF_j - dF_i) + G r_p, G = 2 w_s dW / N.  D_d E is propagated forward (dual
numbers) through the moments and contractions, then everything is back-propagated once.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def _radial(r, rmin, rmax, scaling, nb, phi, dphi):
    """Chebyshev radial basis phi_b(r) = scaling T_b(xi) (r - rmax)^2 and d phi_b / dr."""
    ksi = (2.0 * r - rmin - rmax) / (rmax - rmin)
    dksi = 2.0 / (rmax - rmin)
    q = r - rmax
    q2 = q * q
    dq2 = 2.0 * q
    t0, t1 = 1.0, ksi
    d0, d1 = 0.0, 1.0
    phi[0] = scaling * q2
    dphi[0] = scaling * dq2
    if nb > 1:
        phi[1] = scaling * t1 * q2
        dphi[1] = scaling * (d1 * dksi * q2 + t1 * dq2)
    for b in range(2, nb):
        t2 = 2.0 * ksi * t1 - t0
        d2 = 2.0 * t1 + 2.0 * ksi * d1 - d0
        phi[b] = scaling * t2 * q2
        dphi[b] = scaling * (d2 * dksi * q2 + t2 * dq2)
        t0, t1 = t1, t2
        d0, d1 = d1, d2


@njit(cache=True)
def _setup_atom(i, pair_off, pj, rij, types, basic, rc, rmin, rmax, scaling,
                f, df, phi, dphi, mono, dmono, uvec, rlen, px, py, pz):
    """Fill per-pair scratch for atom i: radial values f[l, mu], df[l, mu], basis phi/dphi,
    monomials mono[l, a] = u^abc and their gradients dmono[l, a, :] w.r.t. the pair vector."""
    ti = types[i]
    nbasic = basic.shape[0]
    R = rc.shape[2]
    B = rc.shape[3]
    npair = pair_off[i + 1] - pair_off[i]
    numax = px.shape[0] - 1
    for l in range(npair):
        p = pair_off[i] + l
        x, y, z = rij[p, 0], rij[p, 1], rij[p, 2]
        r = np.sqrt(x * x + y * y + z * z)
        rlen[l] = r
        ux, uy, uz = x / r, y / r, z / r
        uvec[l, 0], uvec[l, 1], uvec[l, 2] = ux, uy, uz
        _radial(r, rmin, rmax, scaling, B, phi[l], dphi[l])
        tj = types[pj[p]]
        for mu in range(R):
            s = 0.0
            ds = 0.0
            for b in range(B):
                s += rc[ti, tj, mu, b] * phi[l, b]
                ds += rc[ti, tj, mu, b] * dphi[l, b]
            f[l, mu] = s
            df[l, mu] = ds
        px[0], py[0], pz[0] = 1.0, 1.0, 1.0
        for n in range(1, numax + 1):
            px[n] = px[n - 1] * ux
            py[n] = py[n - 1] * uy
            pz[n] = pz[n - 1] * uz
        inv_r = 1.0 / r
        for a in range(nbasic):
            ea, eb, ec = basic[a, 1], basic[a, 2], basic[a, 3]
            nu = ea + eb + ec
            M = px[ea] * py[eb] * pz[ec]
            mono[l, a] = M
            gx = ea * px[ea - 1] * py[eb] * pz[ec] if ea > 0 else 0.0
            gy = eb * px[ea] * py[eb - 1] * pz[ec] if eb > 0 else 0.0
            gz = ec * px[ea] * py[eb] * pz[ec - 1] if ec > 0 else 0.0
            dmono[l, a, 0] = (gx - nu * M * ux) * inv_r
            dmono[l, a, 1] = (gy - nu * M * uy) * inv_r
            dmono[l, a, 2] = (gz - nu * M * uz) * inv_r
    return npair


@njit(cache=True)
def _forward(npair, basic, times, f, mono, m):
    """Basic moments from the pair scratch, then the contractions (in file order)."""
    m[:] = 0.0
    nbasic = basic.shape[0]
    for l in range(npair):
        for a in range(nbasic):
            m[a] += f[l, basic[a, 0]] * mono[l, a]
    for t in range(times.shape[0]):
        m[times[t, 3]] += times[t, 2] * m[times[t, 0]] * m[times[t, 1]]


@njit(cache=True)
def _max_pairs(pair_off):
    mx = 0
    for i in range(pair_off.shape[0] - 1):
        mx = max(mx, pair_off[i + 1] - pair_off[i])
    return mx


@njit(cache=True)
def _max_numax(basic):
    mx = 0
    for a in range(basic.shape[0]):
        mx = max(mx, basic[a, 1] + basic[a, 2] + basic[a, 3])
    return mx


@njit(cache=True)
def site_basis(basic, times, mapping, n_moments, rc, rmin, rmax, scaling,
               types, pair_off, pj, rij):
    """Per-atom scalar basis values b[i, q] = m_i[map_q] (Ntot, n_scalar); dV_i/dxi = b[i]."""
    ntot = types.shape[0]
    R, B = rc.shape[2], rc.shape[3]
    nbasic = basic.shape[0]
    mp = max(_max_pairs(pair_off), 1)
    numax = _max_numax(basic)
    f = np.empty((mp, R)); df = np.empty((mp, R))
    phi = np.empty((mp, B)); dphi = np.empty((mp, B))
    mono = np.empty((mp, nbasic)); dmono = np.empty((mp, nbasic, 3))
    uvec = np.empty((mp, 3)); rlen = np.empty(mp)
    px = np.empty(numax + 1); py = np.empty(numax + 1); pz = np.empty(numax + 1)
    m = np.zeros(n_moments)
    out = np.zeros((ntot, mapping.shape[0]))
    for i in range(ntot):
        npair = _setup_atom(i, pair_off, pj, rij, types, basic, rc, rmin, rmax, scaling,
                            f, df, phi, dphi, mono, dmono, uvec, rlen, px, py, pz)
        _forward(npair, basic, times, f, mono, m)
        for q in range(mapping.shape[0]):
            out[i, q] = m[mapping[q]]
    return out


@njit(cache=True)
def loss_and_grad(basic, times, mapping, n_moments, rc, sc, mc, rmin, rmax, scaling,
                  atom_off, types, pair_off, pj, rij,
                  e_ref, f_ref, w_ref, has_e, has_f, has_s, we, wf, ws, want_grad,
                  e_out, f_out, w_out, g_rc, g_sc, g_mc):
    """Loss summed over configurations (see module docstring); predictions written to
    e_out (K,), f_out (Ntot, 3), w_out (K, 3, 3) (virial, eV). If want_grad, the gradient is
    added to g_rc (S,S,R,B), g_sc (S,), g_mc (n_scalar,). Returns the loss."""
    K = atom_off.shape[0] - 1
    R, B = rc.shape[2], rc.shape[3]
    nbasic = basic.shape[0]
    ntimes = times.shape[0]
    nsc = mapping.shape[0]
    mp = max(_max_pairs(pair_off), 1)
    numax = _max_numax(basic)
    f = np.empty((mp, R)); df = np.empty((mp, R))
    phi = np.empty((mp, B)); dphi = np.empty((mp, B))
    mono = np.empty((mp, nbasic)); dmono = np.empty((mp, nbasic, 3))
    uvec = np.empty((mp, 3)); rlen = np.empty(mp)
    px = np.empty(numax + 1); py = np.empty(numax + 1); pz = np.empty(numax + 1)
    m = np.zeros(n_moments); g = np.zeros(n_moments)
    md = np.zeros(n_moments); mbar = np.zeros(n_moments); mdbar = np.zeros(n_moments)
    dvec = np.empty((mp, 3)); ud = np.empty(mp); mdot_d = np.empty((mp, nbasic))
    P = np.empty(R); Q = np.empty(R)
    G = np.zeros((3, 3))
    loss = 0.0
    for c in range(K):
        a0, a1 = atom_off[c], atom_off[c + 1]
        N = a1 - a0
        E = 0.0
        W = np.zeros((3, 3))
        for i in range(a0, a1):
            f_out[i, 0] = 0.0; f_out[i, 1] = 0.0; f_out[i, 2] = 0.0
        # ---- pass A: energy, forces, virial
        for i in range(a0, a1):
            npair = _setup_atom(i, pair_off, pj, rij, types, basic, rc, rmin, rmax, scaling,
                                f, df, phi, dphi, mono, dmono, uvec, rlen, px, py, pz)
            _forward(npair, basic, times, f, mono, m)
            V = sc[types[i]]
            g[:] = 0.0
            for q in range(nsc):
                V += mc[q] * m[mapping[q]]
                g[mapping[q]] += mc[q]
            E += V
            for t in range(ntimes - 1, -1, -1):
                ii, jj, w, k = times[t, 0], times[t, 1], times[t, 2], times[t, 3]
                gk = g[k]
                if gk != 0.0:
                    g[ii] += w * gk * m[jj]
                    g[jj] += w * gk * m[ii]
            for l in range(npair):
                p = pair_off[i] + l
                gx = 0.0; gy = 0.0; gz = 0.0
                for a in range(nbasic):
                    ga = g[a]
                    mu = basic[a, 0]
                    s1 = ga * df[l, mu] * mono[l, a]
                    s2 = ga * f[l, mu]
                    gx += s1 * uvec[l, 0] + s2 * dmono[l, a, 0]
                    gy += s1 * uvec[l, 1] + s2 * dmono[l, a, 1]
                    gz += s1 * uvec[l, 2] + s2 * dmono[l, a, 2]
                j = pj[p]
                f_out[j, 0] -= gx; f_out[j, 1] -= gy; f_out[j, 2] -= gz
                f_out[i, 0] += gx; f_out[i, 1] += gy; f_out[i, 2] += gz
                for bb in range(3):
                    W[0, bb] -= gx * rij[p, bb]
                    W[1, bb] -= gy * rij[p, bb]
                    W[2, bb] -= gz * rij[p, bb]
        # symmetrise the virial (exact for a rotation-invariant potential)
        for aa in range(3):
            for bb in range(aa + 1, 3):
                s = 0.5 * (W[aa, bb] + W[bb, aa])
                W[aa, bb] = s
                W[bb, aa] = s
        e_out[c] = E
        for aa in range(3):
            for bb in range(3):
                w_out[c, aa, bb] = W[aa, bb]
        # ---- residuals and loss
        aE = 0.0
        if has_e[c] and we != 0.0:
            dE = E - e_ref[c]
            loss += we * dE * dE / N
            aE = 2.0 * we * dE / N
        if has_s[c] and ws != 0.0:
            for aa in range(3):
                for bb in range(3):
                    dW = W[aa, bb] - w_ref[c, aa, bb]
                    loss += ws * dW * dW / N
                    G[aa, bb] = 2.0 * ws * dW / N
        else:
            G[:, :] = 0.0
        use_f = has_f[c] and wf != 0.0
        if use_f:
            for i in range(a0, a1):
                for aa in range(3):
                    dF = f_out[i, aa] - f_ref[i, aa]
                    loss += wf * dF * dF
        if not want_grad:
            continue
        # ---- pass B: adjoint of a_E E - D_d E
        for i in range(a0, a1):
            ti = types[i]
            g_sc[ti] += aE
            npair = _setup_atom(i, pair_off, pj, rij, types, basic, rc, rmin, rmax, scaling,
                                f, df, phi, dphi, mono, dmono, uvec, rlen, px, py, pz)
            m[:] = 0.0
            md[:] = 0.0
            for l in range(npair):
                p = pair_off[i] + l
                j = pj[p]
                for aa in range(3):
                    d = G[aa, 0] * rij[p, 0] + G[aa, 1] * rij[p, 1] + G[aa, 2] * rij[p, 2]
                    if use_f:
                        d += 2.0 * wf * ((f_out[j, aa] - f_ref[j, aa]) - (f_out[i, aa] - f_ref[i, aa]))
                    dvec[l, aa] = d
                ud[l] = uvec[l, 0] * dvec[l, 0] + uvec[l, 1] * dvec[l, 1] + uvec[l, 2] * dvec[l, 2]
                for a in range(nbasic):
                    mu = basic[a, 0]
                    dm = dmono[l, a, 0] * dvec[l, 0] + dmono[l, a, 1] * dvec[l, 1] + dmono[l, a, 2] * dvec[l, 2]
                    mdot_d[l, a] = dm
                    m[a] += f[l, mu] * mono[l, a]
                    md[a] += df[l, mu] * ud[l] * mono[l, a] + f[l, mu] * dm
            for t in range(ntimes):
                ii, jj, w, k = times[t, 0], times[t, 1], times[t, 2], times[t, 3]
                md[k] += w * (md[ii] * m[jj] + m[ii] * md[jj])
                m[k] += w * m[ii] * m[jj]
            mbar[:] = 0.0
            mdbar[:] = 0.0
            for q in range(nsc):
                g_mc[q] += aE * m[mapping[q]] - md[mapping[q]]
                mbar[mapping[q]] += aE * mc[q]
                mdbar[mapping[q]] -= mc[q]
            for t in range(ntimes - 1, -1, -1):
                ii, jj, w, k = times[t, 0], times[t, 1], times[t, 2], times[t, 3]
                bk = mbar[k]
                dk = mdbar[k]
                if bk != 0.0 or dk != 0.0:
                    mdbar[ii] += w * dk * m[jj]
                    mdbar[jj] += w * dk * m[ii]
                    mbar[ii] += w * (bk * m[jj] + dk * md[jj])
                    mbar[jj] += w * (bk * m[ii] + dk * md[ii])
            for l in range(npair):
                p = pair_off[i] + l
                tj = types[pj[p]]
                P[:] = 0.0
                Q[:] = 0.0
                for a in range(nbasic):
                    mu = basic[a, 0]
                    P[mu] += mbar[a] * mono[l, a] + mdbar[a] * mdot_d[l, a]
                    Q[mu] += mdbar[a] * mono[l, a] * ud[l]
                for mu in range(R):
                    for b in range(B):
                        g_rc[ti, tj, mu, b] += P[mu] * phi[l, b] + Q[mu] * dphi[l, b]
    return loss


@njit(cache=True)
def linear_rows(basic, times, mapping, n_moments, S, rc, rmin, rmax, scaling,
                atom_off, types, pair_off, pj, rij, c0, c1, row_off, rows):
    """Rows of the linear problem for configurations c0..c1-1, written from row_off[c]-row_off[c0]:
    1 energy row (dE/d[s, xi]), 3N force rows (-d^2E/dx d[s, xi]) ordered atom-major, and
    6 virial rows (-d^2E/deps d[s, xi], Voigt xx yy zz yz xz xy). Columns: S species, then xi."""
    R, B = rc.shape[2], rc.shape[3]
    nbasic = basic.shape[0]
    ntimes = times.shape[0]
    nsc = mapping.shape[0]
    mp = max(_max_pairs(pair_off), 1)
    numax = _max_numax(basic)
    f = np.empty((mp, R)); df = np.empty((mp, R))
    phi = np.empty((mp, B)); dphi = np.empty((mp, B))
    mono = np.empty((mp, nbasic)); dmono = np.empty((mp, nbasic, 3))
    uvec = np.empty((mp, 3)); rlen = np.empty(mp)
    px = np.empty(numax + 1); py = np.empty(numax + 1); pz = np.empty(numax + 1)
    m = np.zeros(n_moments)
    maxn = 0
    for c in range(c0, c1):
        maxn = max(maxn, atom_off[c + 1] - atom_off[c])
    slot = -np.ones(maxn, dtype=np.int64)
    mdbuf = np.zeros((n_moments, 3 * (maxn + 1) + 6))
    slot_atom = np.empty(maxn, dtype=np.int64)
    base = row_off[c0]
    for c in range(c0, c1):
        a0, a1 = atom_off[c], atom_off[c + 1]
        r0 = row_off[c] - base
        for i in range(a0, a1):
            ti = types[i]
            npair = _setup_atom(i, pair_off, pj, rij, types, basic, rc, rmin, rmax, scaling,
                                f, df, phi, dphi, mono, dmono, uvec, rlen, px, py, pz)
            _forward(npair, basic, times, f, mono, m)
            rows[r0, ti] += 1.0
            for q in range(nsc):
                rows[r0, S + q] += m[mapping[q]]
            # distinct neighbour atoms -> slots; slot 0 is the centre atom
            nslot = 1
            slot[i - a0] = 0
            slot_atom[0] = i
            for l in range(npair):
                j = pj[pair_off[i] + l]
                if slot[j - a0] < 0:
                    slot[j - a0] = nslot
                    slot_atom[nslot] = j
                    nslot += 1
            ndir = 3 * nslot + 6
            md = mdbuf[:, :ndir]
            md[:, :] = 0.0
            for l in range(npair):
                p = pair_off[i] + l
                sj = slot[pj[p] - a0]
                rx, ry, rz = rij[p, 0], rij[p, 1], rij[p, 2]
                for a in range(nbasic):
                    mu = basic[a, 0]
                    s1 = df[l, mu] * mono[l, a]
                    fm = f[l, mu]
                    g0 = s1 * uvec[l, 0] + fm * dmono[l, a, 0]
                    g1 = s1 * uvec[l, 1] + fm * dmono[l, a, 1]
                    g2 = s1 * uvec[l, 2] + fm * dmono[l, a, 2]
                    md[a, 3 * sj] += g0
                    md[a, 3 * sj + 1] += g1
                    md[a, 3 * sj + 2] += g2
                    md[a, 0] -= g0
                    md[a, 1] -= g1
                    md[a, 2] -= g2
                    v = 3 * nslot
                    md[a, v] += g0 * rx
                    md[a, v + 1] += g1 * ry
                    md[a, v + 2] += g2 * rz
                    md[a, v + 3] += 0.5 * (g1 * rz + g2 * ry)
                    md[a, v + 4] += 0.5 * (g0 * rz + g2 * rx)
                    md[a, v + 5] += 0.5 * (g0 * ry + g1 * rx)
            for t in range(ntimes):
                ii, jj, w, k = times[t, 0], times[t, 1], times[t, 2], times[t, 3]
                mi = m[ii]
                mj = m[jj]
                for dd in range(ndir):
                    md[k, dd] += w * (md[ii, dd] * mj + mi * md[jj, dd])
            for s in range(nslot):
                j = slot_atom[s]
                for aa in range(3):
                    row = r0 + 1 + 3 * (j - a0) + aa
                    for q in range(nsc):
                        rows[row, S + q] -= md[mapping[q], 3 * s + aa]
            nat = a1 - a0
            for v in range(6):
                row = r0 + 1 + 3 * nat + v
                for q in range(nsc):
                    rows[row, S + q] -= md[mapping[q], 3 * nslot + v]
            for s in range(nslot):
                slot[slot_atom[s] - a0] = -1
    return rows
