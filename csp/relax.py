"""Batched relaxation of many small periodic cells at once (atoms and cell), FIRE.

All structures of a batch live in flat arrays (cells (B,3,3) Å, positions (Ntot,3) Å, types
(Ntot,), offsets (B+1,)); every step evaluates all still-running structures with ONE call of an
`Evaluator` (for the MTP: `csp.mtp.evaluate.calc_efs_batch`) and advances each structure's own
FIRE state (time step, mixing, velocity). Each structure stops on its own when converged
(max |F_i| < fmax eV/Å and max |σ_ij + p δ_ij| < stress_tol eV/Å³), at `max_steps`, when it
fails (non-finite energy, collapsed or exploded cell), or when the extrapolation grade passes
`break_threshold`. Grades above `select_threshold` record the configuration (the one with the
highest grade per structure) as a training candidate.

Cell degrees of freedom follow ASE's UnitCellFilter: positions r = u Fᵀ for a deformation
gradient F (cell = cell₀ Fᵀ), generalised coordinates (u, c F) with c = number of atoms, and
generalised forces (f F, −V (σ + p I) F⁻ᵀ / c). Energies eV, forces eV/Å, stress eV/Å³ (ASE).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
from ase import Atoms

RUNNING, CONVERGED, MAX_STEPS, BROKEN, FAILED = 0, 1, 2, 3, 4
STATUS_NAMES = ("running", "converged", "max_steps", "broken", "failed")
# a structure's energy evaluated at a geometry relaxed before (with another potential), not relaxed
# again: the learning loop's re-evaluation (csp.campaign.learn)
EVALUATED = "evaluated"
# statuses whose energy a screening may use (relaxed, or evaluated at a relaxed geometry)
USABLE = (STATUS_NAMES[CONVERGED], STATUS_NAMES[MAX_STEPS], EVALUATED)
OPTIMIZERS = ("bfgs", "fire")   # `relax_batch(optimizer=...)`

# (cells (B,3,3), positions (N,3), types (N,), offsets (B+1,)) -> energies (B,), forces (N,3), stresses (B,6)
Evaluator = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]
# same arguments -> extrapolation grade per structure (B,)
Grader = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]

_VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))


@dataclass(frozen=True)
class FireParams:
    """FIRE parameters (Bitzek et al. 2006; ASE's defaults)."""

    dt: float = 0.1
    dtmax: float = 1.0
    maxstep: float = 0.2
    nmin: int = 5
    finc: float = 1.1
    fdec: float = 0.5
    astart: float = 0.1
    fa: float = 0.99


@dataclass
class Snapshot:
    """An extrapolative configuration met during relaxation."""

    index: int            # structure index in the batch
    step: int
    grade: float
    cell: np.ndarray      # (3,3) Å
    positions: np.ndarray  # (n,3) Å


@dataclass
class RelaxResult:
    """Final state of every structure of a batch (arrays in batch order)."""

    cells: np.ndarray        # (B,3,3) Å
    positions: np.ndarray    # (Ntot,3) Å
    offsets: np.ndarray      # (B+1,)
    energies: np.ndarray     # (B,) eV (last evaluated point)
    fmax: np.ndarray         # (B,) eV/Å
    smax: np.ndarray         # (B,) eV/Å³
    steps: np.ndarray        # (B,) optimiser steps taken
    status: np.ndarray       # (B,) RUNNING..FAILED codes
    max_grade: np.ndarray    # (B,) highest grade seen (0 without a grader)
    snapshots: list[Snapshot] = field(default_factory=list)
    evaluations: int = 0     # number of batched evaluator calls

    def status_name(self, b: int) -> str:
        return STATUS_NAMES[int(self.status[b])]

    def structure(self, b: int, types: np.ndarray, symbols: Sequence[str]) -> Atoms:
        """Structure b as Atoms (species symbols by type index)."""
        sl = slice(self.offsets[b], self.offsets[b + 1])
        return Atoms([symbols[t] for t in types[sl]], positions=self.positions[sl], cell=self.cells[b], pbc=True)


def voigt_to_full(s: np.ndarray) -> np.ndarray:
    """(B,6) Voigt (xx yy zz yz xz xy) -> (B,3,3) symmetric."""
    full = np.empty((len(s), 3, 3))
    for k, (i, j) in enumerate(_VOIGT):
        full[:, i, j] = s[:, k]
        full[:, j, i] = s[:, k]
    return full


def _segment_sum(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Sum of a per-atom quantity over each structure (offsets of non-empty segments)."""
    return np.add.reduceat(values, offsets[:-1], axis=0)


def relax_batch(evaluate: Evaluator, cells: np.ndarray, positions: np.ndarray, types: np.ndarray,
                offsets: np.ndarray, *, fmax: float = 0.01, stress_tol: float = 6.0e-4,
                max_steps: int = 500, pressure: float = 0.0, relax_cell: bool = True,
                grade: Grader | None = None, select_threshold: float | None = None,
                break_threshold: float | None = None, grade_every: int = 1,
                fire: FireParams = FireParams(), optimizer: str = "fire", bfgs_alpha: float = 70.0,
                bfgs_maxstep: float = 0.2,
                progress: Callable[[int, int], None] | None = None) -> RelaxResult:
    """Relax B structures together (see module docstring). Inputs are not modified.

    optimizer: "fire" (ASE's FIRE) or "bfgs" (ASE's BFGS: dense quasi-Newton Hessian per structure,
    initial `bfgs_alpha` eV/Å², no step longer than `bfgs_maxstep` Å per row, vectorised over
    structures of equal size). pressure in eV/Å³; `progress(n_finished, B)` is called whenever
    structures finish.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; allowed: {', '.join(OPTIMIZERS)}")
    cells0 = np.array(cells, dtype=float).reshape(-1, 3, 3)
    u = np.array(positions, dtype=float).reshape(-1, 3)
    types = np.asarray(types)
    offsets = np.asarray(offsets, dtype=np.int64)
    nb = len(cells0)
    counts = np.diff(offsets)
    if len(offsets) != nb + 1 or offsets[-1] != len(u) or np.any(counts < 1):
        raise ValueError("relax_batch: offsets must have B+1 entries, start at 0, end at N, no empty cells")
    owner = np.repeat(np.arange(nb), counts)
    c_fac = counts.astype(float)

    F = np.tile(np.eye(3), (nb, 1, 1))
    v_u = np.zeros_like(u)
    v_g = np.zeros((nb, 3, 3))
    dt = np.full(nb, fire.dt)
    alpha = np.full(nb, fire.astart)
    n_pos = np.zeros(nb, dtype=np.int64)
    started = np.zeros(nb, dtype=bool)

    status = np.zeros(nb, dtype=np.int64)
    energies = np.full(nb, np.nan)
    fmax_out = np.full(nb, np.inf)
    smax_out = np.full(nb, np.inf)
    steps = np.zeros(nb, dtype=np.int64)
    max_grade = np.zeros(nb)
    best_snap: dict[int, Snapshot] = {}
    evaluations = 0
    eye = np.eye(3)
    bfgs = None
    if optimizer == "bfgs":
        bfgs = _BfgsState(counts, bfgs_alpha)
    vol0 = np.abs(np.linalg.det(cells0)) / counts

    active = np.arange(nb)
    aidx = np.arange(len(u))
    sub_off = offsets.copy()
    loc_owner = owner.copy()
    step = 0
    finished_before = 0
    while len(active):
        Fa = F[active]
        cell_a = np.matmul(cells0[active], np.transpose(Fa, (0, 2, 1)))
        r_a = np.einsum("nk,njk->nj", u[aidx], Fa[loc_owner])
        e, f, s = evaluate(cell_a, r_a, types[aidx], sub_off)
        evaluations += 1
        e = np.asarray(e, dtype=float)
        f = np.asarray(f, dtype=float).reshape(-1, 3)
        s = np.asarray(s, dtype=float).reshape(-1, 6)
        energies[active] = e
        vol = np.abs(np.linalg.det(cell_a))
        f_norm2 = np.einsum("ij,ij->i", f, f)
        fm = np.sqrt(np.maximum.reduceat(f_norm2, sub_off[:-1]))
        sig = voigt_to_full(s) + pressure * eye
        sm = np.abs(sig).reshape(-1, 9).max(axis=1) if relax_cell else np.zeros(len(active))
        fmax_out[active] = fm
        smax_out[active] = sm

        new_status = np.zeros(len(active), dtype=np.int64)
        bad = ~np.isfinite(e) | ~np.isfinite(fm) | ~np.isfinite(sm)
        per_atom = vol / counts[active]
        bad |= (per_atom < 0.1 * vol0[active]) | (per_atom > 10.0 * vol0[active])
        if grade is not None and step % grade_every == 0:
            g = np.asarray(grade(cell_a, r_a, types[aidx], sub_off), dtype=float)
            max_grade[active] = np.maximum(max_grade[active], g)
            if select_threshold is not None:
                for k in np.nonzero(g > select_threshold)[0]:
                    b = int(active[k])
                    if b not in best_snap or g[k] > best_snap[b].grade:
                        sl = slice(sub_off[k], sub_off[k + 1])
                        best_snap[b] = Snapshot(b, step, float(g[k]), cell_a[k].copy(), r_a[sl].copy())
            if break_threshold is not None:
                new_status[g > break_threshold] = BROKEN
        conv = (fm < fmax) & (sm < stress_tol)
        new_status[conv & (new_status == RUNNING)] = CONVERGED
        new_status[bad] = FAILED
        new_status[(new_status == RUNNING) & (steps[active] >= max_steps)] = MAX_STEPS

        run_loc = new_status == RUNNING
        if not np.all(run_loc):
            status[active] = new_status
        # optimiser step for the structures still running, on their local (compacted) arrays
        if np.any(run_loc):
            b_run = active[run_loc]
            atom_run = run_loc[loc_owner]
            ia = aidx[atom_run]
            f_u = np.einsum("nj,njk->nk", f[atom_run], Fa[loc_owner[atom_run]])
            own = owner[ia]
            if relax_cell:
                f_g = -(vol[run_loc] / c_fac[b_run])[:, None, None] * np.matmul(
                    sig[run_loc], np.linalg.inv(np.transpose(Fa[run_loc], (0, 2, 1))))
            else:
                f_g = np.zeros((len(b_run), 3, 3))
            if bfgs is not None:
                F_keep = None if relax_cell else F[b_run].copy()
                bfgs.step(b_run, ia, f_u, f_g, u, F, offsets, c_fac, bfgs_maxstep)
                if F_keep is not None:
                    F[b_run] = F_keep
                steps[b_run] += 1
        if np.any(run_loc) and bfgs is None:
            r_off = np.concatenate(([0], np.cumsum(counts[b_run])))
            vu = v_u[ia]
            vg = v_g[b_run]
            vf = _segment_sum(np.einsum("ij,ij->i", f_u, vu), r_off) + np.einsum("nij,nij->n", f_g, vg)
            ff = _segment_sum(np.einsum("ij,ij->i", f_u, f_u), r_off) + np.einsum("nij,nij->n", f_g, f_g)
            vv = _segment_sum(np.einsum("ij,ij->i", vu, vu), r_off) + np.einsum("nij,nij->n", vg, vg)
            first = ~started[b_run]
            up = (vf > 0.0) & ~first
            down = (vf <= 0.0) & ~first
            a_r = alpha[b_run]
            mix = np.where(up, np.sqrt(vv) / np.sqrt(np.maximum(ff, 1e-300)), 0.0)
            keep = np.where(up, 1.0 - a_r, np.where(down, 0.0, 1.0))
            add = np.where(up, a_r * mix, 0.0)
            lo = (up & (n_pos[b_run] > fire.nmin))
            dt_r = dt[b_run]
            dt_r = np.where(lo, np.minimum(dt_r * fire.finc, fire.dtmax), dt_r)
            a_r = np.where(lo, a_r * fire.fa, a_r)
            n_pos[b_run] = np.where(up, n_pos[b_run] + 1, np.where(down, 0, n_pos[b_run]))
            a_r = np.where(down, fire.astart, a_r)
            dt_r = np.where(down, dt_r * fire.fdec, dt_r)
            started[b_run] = True
            k_at = np.searchsorted(b_run, own)
            vu = keep[k_at, None] * vu + add[k_at, None] * f_u + dt_r[k_at, None] * f_u
            vg = keep[:, None, None] * vg + add[:, None, None] * f_g + dt_r[:, None, None] * f_g
            du = dt_r[k_at, None] * vu
            dg = dt_r[:, None, None] * vg
            norm = np.sqrt(_segment_sum(np.einsum("ij,ij->i", du, du), r_off) + np.einsum("nij,nij->n", dg, dg))
            scale = np.where(norm > fire.maxstep, fire.maxstep / np.maximum(norm, 1e-300), 1.0)
            # generalised coordinates: (u, c F); position update in u is du (frame of F)
            u[ia] += scale[k_at, None] * du
            F[b_run] += scale[:, None, None] * dg / c_fac[b_run][:, None, None]
            v_u[ia] = vu
            v_g[b_run] = vg
            alpha[b_run] = a_r
            dt[b_run] = dt_r
            steps[b_run] += 1
        step += 1
        if not np.all(run_loc):
            active = active[run_loc]
            mask = np.zeros(nb, dtype=bool)
            mask[active] = True
            amask = mask[owner]
            aidx = np.nonzero(amask)[0]
            sub_off = np.concatenate(([0], np.cumsum(counts[active])))
            loc_owner = np.repeat(np.arange(len(active)), counts[active])
            if progress is not None:
                progress(nb - len(active), nb)
        elif progress is not None and finished_before != nb - len(active):
            progress(nb - len(active), nb)
        finished_before = nb - len(active)

    final_cells = np.matmul(cells0, np.transpose(F, (0, 2, 1)))
    final_pos = np.einsum("nk,njk->nj", u, F[owner])
    snaps = [best_snap[b] for b in sorted(best_snap)]
    return RelaxResult(final_cells, final_pos, offsets.copy(), energies, fmax_out, smax_out, steps, status,
                       max_grade, snaps, evaluations)


def _newton_step(H: np.ndarray, f: np.ndarray) -> np.ndarray:
    """ASE's BFGS step for a stack of Hessians: d = V (Vᵀf / |w|) with H = V diag(w) Vᵀ. When
    every H is positive definite (the usual case: the update keeps it so while dx·df > 0) this
    is exactly H⁻¹f, which a Cholesky check plus a solve give ~10× cheaper than the
    eigendecomposition; otherwise the eigendecomposition, as ASE does."""
    try:
        np.linalg.cholesky(H)
    except np.linalg.LinAlgError:
        w, V = np.linalg.eigh(H)
        return np.einsum("gij,gj->gi", V, np.einsum("gi,gij->gj", f, V) / np.abs(w))
    return np.linalg.solve(H, f[..., None])[..., 0]


class _BfgsState:
    """Per-structure BFGS Hessians, stored in one array per structure size."""

    def __init__(self, counts: np.ndarray, alpha: float):
        self.group_pos = np.zeros(len(counts), dtype=np.int64)
        self.H: dict[int, np.ndarray] = {}
        self.x0: dict[int, np.ndarray] = {}
        self.f0: dict[int, np.ndarray] = {}
        self.has_prev = np.zeros(len(counts), dtype=bool)
        for n_at in np.unique(counts):
            members = np.nonzero(counts == n_at)[0]
            self.group_pos[members] = np.arange(len(members))
            n = 3 * (int(n_at) + 3)
            self.H[int(n_at)] = np.tile(alpha * np.eye(n), (len(members), 1, 1))
            self.x0[int(n_at)] = np.zeros((len(members), n))
            self.f0[int(n_at)] = np.zeros((len(members), n))

    def step(self, b_run, ia, f_u, f_g, u, F, offsets, c_fac, maxstep) -> None:
        counts = np.diff(offsets)
        sizes = counts[b_run]
        for n_at in np.unique(sizes):
            n_at = int(n_at)
            selm = sizes == n_at
            sel = b_run[selm]
            G = len(sel)
            idx = offsets[sel][:, None] + np.arange(n_at)
            fx = np.concatenate([f_u[np.searchsorted(ia, idx)], f_g[selm]], axis=1).reshape(G, -1)
            x = np.concatenate([u[idx], c_fac[sel][:, None, None] * F[sel]], axis=1).reshape(G, -1)
            gi = self.group_pos[sel]
            H = self.H[n_at][gi]
            dx = x - self.x0[n_at][gi]
            df = fx - self.f0[n_at][gi]
            a = np.einsum("gi,gi->g", dx, df)
            dg = np.einsum("gij,gj->gi", H, dx)
            b = np.einsum("gi,gi->g", dx, dg)
            ok = self.has_prev[sel] & (np.abs(dx).max(axis=1) >= 1e-7) & (np.abs(a) > 0) & (np.abs(b) > 0)
            if np.any(ok):
                H[ok] -= (df[ok, :, None] * df[ok, None, :] / a[ok, None, None]
                          + dg[ok, :, None] * dg[ok, None, :] / b[ok, None, None])
            d = _newton_step(H, fx)
            longest = np.sqrt((d.reshape(G, -1, 3) ** 2).sum(axis=2)).max(axis=1)
            d *= np.where(longest >= maxstep, maxstep / np.maximum(longest, 1e-300), 1.0)[:, None]
            self.H[n_at][gi] = H
            self.x0[n_at][gi] = x
            self.f0[n_at][gi] = fx
            self.has_prev[sel] = True
            xn = (x + d).reshape(G, n_at + 3, 3)
            u[idx] = xn[:, :n_at]
            F[sel] = xn[:, n_at:] / c_fac[sel][:, None, None]


def pack(structures: Sequence[Atoms], species: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Flat arrays (cells, positions, types, offsets) of a list of Atoms; type = index in species."""
    index = {s: i for i, s in enumerate(species)}
    cells = np.array([a.cell.array for a in structures], dtype=float).reshape(-1, 3, 3)
    positions = np.concatenate([a.positions for a in structures]) if structures else np.zeros((0, 3))
    try:
        types = np.array([index[s] for a in structures for s in a.get_chemical_symbols()], dtype=np.int64)
    except KeyError as exc:
        raise ValueError(f"element {exc.args[0]} is not one of the species {list(species)}") from None
    offsets = np.concatenate(([0], np.cumsum([len(a) for a in structures]))).astype(np.int64)
    return cells, positions, types, offsets


def relax_structures(evaluate: Evaluator, structures: Sequence[Atoms], species: Sequence[str],
                     **kwargs) -> tuple[list[Atoms], RelaxResult]:
    """Relax a list of Atoms with `relax_batch`; returns relaxed copies and the raw result."""
    cells, positions, types, offsets = pack(structures, species)
    res = relax_batch(evaluate, cells, positions, types, offsets, **kwargs)
    out = []
    for b, src in enumerate(structures):
        atoms = res.structure(b, types, species)
        atoms.info.update(src.info)
        out.append(atoms)
    return out, res


def ase_evaluator(make_calc: Callable[[], object], species: Sequence[str]) -> Evaluator:
    """An Evaluator that loops over structures with an ASE calculator (reference/test use)."""

    def evaluate(cells, positions, types, offsets):
        nb = len(cells)
        e = np.empty(nb)
        f = np.empty_like(positions)
        s = np.empty((nb, 6))
        for b in range(nb):
            sl = slice(offsets[b], offsets[b + 1])
            atoms = Atoms([species[t] for t in types[sl]], positions=positions[sl], cell=cells[b], pbc=True)
            atoms.calc = make_calc()
            e[b] = atoms.get_potential_energy()
            f[sl] = atoms.get_forces()
            s[b] = atoms.get_stress(voigt=True)
        return e, f, s

    return evaluate
