"""Extrapolation grade of an MTP (Podryabinkin & Shapeev 2017, as in MLIP): the MaxVol active set
over the rows of derivatives of the energy with respect to the coefficients.

Rows, over the linear coefficients (`coefficients="linear"`, csp's default; columns: S species
coefficients, then the moment coefficients xi):
- configuration mode: dE/d(theta_lin) / N = [n_t / N, sum_i b_i / N] per configuration;
- neighbourhood mode: dV_i/d(theta_lin) = [onehot(t_i), b_i] per atom,
with b_i = m_i[alpha_moment_mapping] the scalar basis values of atom i. Over all coefficients
(`coefficients="all"`, MLIP's CoeffCount order: radial [t_i, t_j, mu, beta], species, moment)
the rows are prefixed by dV_i/d(radial), back-propagated through the contractions with the
trainer's per-pair kernels (csp.mtp.fit_kernels); these rows equal MLIP's CalcSiteEnergyGrad
(the rows stored in MLIP's own active sets, to 1e-14 relative). The grade of a row b is
gamma = max_j |(b A^-1)_j| over the r x r active set A; training rows grade <= 1, gamma > 1 is
extrapolation.

MLIP's own active sets (the `#MVS_v1.1` block of `mlp train` output and `.almtp` files, read by
`csp.mtp.io.read_almtp`) become ActiveSets with `ActiveSet.from_mlip`: grades with them
reproduce MLIP's `calculate_grade` (mlip-grade conformance data: MV_grade to 5e-7 absolute,
3e-7 relative; nbh_grades to 5e-6, the 5 decimals MLIP prints).

Linear or all coefficients for csp's own active learning: linear (the default; the campaign
uses it), because on the training sets a search has (4-200 configurations, configuration mode)
the all-coefficient rows cannot span their space and cost more, while flagging the same
structures. Measured on the conformance potentials:
- rank: the all-coefficient rows have exact null directions (e.g. f_mu -> lambda f_mu with the
  moment coefficient of each basis function containing f_mu k times scaled by lambda^-k leaves
  every energy unchanged): level-10 Cu, 41 coefficients, reaches rank 34
  (configuration) / 35 (neighbourhood) from 50 or 101 configurations and never 41 (MLIP's own
  active set of that potential keeps 6 initial eps rows); one configuration row per structure
  means >= 235 structures before a 3-species level-10 set (235 coefficients, 19 linear) could
  span. The linear rows reach full rank (17) from 10-25 configurations. Rank-deficient
  directions are covered by virtual rows only, and grade ~1/eps;
- agreement (level-10 Cu, active set from K of train101, 100 structures of mild.cfg):
  configuration mode, K = 4..100: the two grades classify 100 % (gamma > 2.1) and 99-100 %
  (gamma > 10) of the structures alike; neighbourhood mode 91-95 % and 88-98 %. 3-species
  level 10 from 12 configurations: 100 % at 2.1, 62 % at 10 (all: every structure > 10,
  linear: 8 of 13) -- the all-coefficient set is still almost all virtual;
- cost per grade call (100 cells x 32 atoms, level 10 Cu): grade_flat 57 ms linear, 92 ms
  all (3-species 27 atoms x 25: 13 vs 63 ms; level 16: 46 vs 92 ms). In a relaxation the
  linear grade reuses the site basis of the energy evaluation (`grade_from_site_basis`,
  0.14 ms next to 66 ms for the energies); the all-coefficient grade needs the radial
  derivatives, i.e. a second pass over the neighbours (+140 % per step, +410 % for 3 species);
- where "all" is better: matching MLIP. Built by csp from 100 configurations, it classifies
  mild.cfg as MLIP's own active set (from 101) does in 98 % of the structures at 2.1 and at 10
  (Spearman 1.00); the linear one 93 % / 91 % (Spearman 0.98).

Totality: any training set (none, one structure, duplicates, supercells of each other, fewer
rows than columns) gives an active set. Columns are equilibrated (unit norm; columns below
1e-9 of the largest norm -- rounding noise, e.g. basis functions that vanish by symmetry in a
cubic cell -- are not blown up), virtual rows eps * e_k (eps = 1e-6) complete the directions the
rows do not span, and MaxVol with a rank-revealing start (csp.mtp.maxvol) picks the active set
from [rows; virtual rows]. Every training row then grades <= 1 (+1e-9): a structure of the
training set, or a supercell of one, is never extrapolative, while a structure with a
component the training set never saw (e.g. a new species) grades ~1/eps.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from numba import njit

from csp.errors import InputError
from csp.mtp import fit_kernels as fk
from csp.mtp.fit_data import FitData, as_configurations
from csp.mtp.maxvol import maxvol
from csp.mtp.neighbors import csr_batch
from csp.mtp.potential import MTP

MODES = ("configuration", "neighborhood")
# csp's active learning grades in neighbourhood mode: one row per atom, so even the first potential
# of a stage (tens of configurations, up to ~300 basis functions at level 20) has a full-rank active
# set; in configuration mode (one row per configuration) a level-16 stage starting on ~60
# configurations graded every structure "broken" (directions no training row spans grade ~1/eps)
DEFAULT_MODE = "neighborhood"
COEFFICIENTS = ("linear", "all")
VIRTUAL_EPS = 1e-6
NOISE_FLOOR = 1e-9  # columns with norm below this fraction of the largest are rounding noise


def fingerprint(mtp: MTP, coefficients: str = "linear") -> str:
    """Hash of what the rows depend on: basis structure, cutoff and radial coefficients (and, for
    rows over all coefficients, the moment coefficients: they enter d V / d radial)."""
    h = hashlib.sha256()
    arrays = [mtp.alpha_index_basic, mtp.alpha_index_times, mtp.alpha_moment_mapping,
              mtp.radial_coeffs, np.array([mtp.min_dist, mtp.max_dist, mtp.scaling, mtp.species_count])]
    if coefficients == "all":
        arrays.append(mtp.moment_coeffs)
    for arr in arrays:
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:16]


def _check_choice(mode: str | None, coefficients: str | None) -> None:
    if mode is not None and mode not in MODES:
        raise InputError(f"unknown grade mode {mode!r} (configuration, neighborhood)")
    if coefficients is not None and coefficients not in COEFFICIENTS:
        raise InputError(f"unknown grade coefficients {coefficients!r} (linear, all)")


def _data(mtp: MTP, structures: Sequence, species: Sequence[str] | None) -> FitData:
    if isinstance(structures, FitData):
        return structures
    configs = as_configurations(structures, species or mtp.elements)
    return FitData.build(configs, mtp.max_dist, mtp.species_count)


@njit(cache=True)
def _site_rows_all(basic, times, mapping, n_moments, rc, mc, rmin, rmax, scaling,
                   types, pair_off, pj, rij):
    """(Ntot, n_params) rows dV_i/dtheta over all coefficients, MLIP's CoeffCount order:
    radial [t_i, t_j, mu, beta] (C order), species, moment coefficients. The per-pair scratch
    and the forward pass are the trainer's (fit_kernels); dV_i/dm is back-propagated through
    the contractions as in the trainer's adjoint (energy part, no force terms)."""
    ntot = types.shape[0]
    S, R, B = rc.shape[0], rc.shape[2], rc.shape[3]
    nbasic = basic.shape[0]
    ntimes = times.shape[0]
    nsc = mapping.shape[0]
    nr = S * S * R * B
    mp = max(fk._max_pairs(pair_off), 1)
    numax = fk._max_numax(basic)
    f = np.empty((mp, R)); df = np.empty((mp, R))
    phi = np.empty((mp, B)); dphi = np.empty((mp, B))
    mono = np.empty((mp, nbasic)); dmono = np.empty((mp, nbasic, 3))
    uvec = np.empty((mp, 3)); rlen = np.empty(mp)
    px = np.empty(numax + 1); py = np.empty(numax + 1); pz = np.empty(numax + 1)
    m = np.zeros(n_moments); g = np.zeros(n_moments); P = np.empty(R)
    out = np.zeros((ntot, nr + S + nsc))
    for i in range(ntot):
        ti = types[i]
        npair = fk._setup_atom(i, pair_off, pj, rij, types, basic, rc, rmin, rmax, scaling,
                               f, df, phi, dphi, mono, dmono, uvec, rlen, px, py, pz)
        fk._forward(npair, basic, times, f, mono, m)
        out[i, nr + ti] = 1.0
        g[:] = 0.0
        for q in range(nsc):
            out[i, nr + S + q] = m[mapping[q]]
            g[mapping[q]] += mc[q]
        for t in range(ntimes - 1, -1, -1):
            ii, jj, w, k = times[t, 0], times[t, 1], times[t, 2], times[t, 3]
            gk = g[k]
            if gk != 0.0:
                g[ii] += w * gk * m[jj]
                g[jj] += w * gk * m[ii]
        for l in range(npair):
            tj = types[pj[pair_off[i] + l]]
            P[:] = 0.0
            for a in range(nbasic):
                P[basic[a, 0]] += g[a] * mono[l, a]
            base = (ti * S + tj) * R * B
            for mu in range(R):
                for b in range(B):
                    out[i, base + mu * B + b] += P[mu] * phi[l, b]
    return out


def _site_rows(mtp: MTP, types: np.ndarray, pair_off: np.ndarray, pj: np.ndarray, rij: np.ndarray,
               coefficients: str = "linear") -> np.ndarray:
    """Rows dV_i/dtheta from flat neighbour data (global pj): (Ntot, S + n_scalar) over the
    linear coefficients, (Ntot, n_params) over all."""
    if coefficients == "all":
        return _site_rows_all(mtp.alpha_index_basic, mtp.alpha_index_times, mtp.alpha_moment_mapping,
                              mtp.alpha_moments_count, mtp.radial_coeffs, mtp.moment_coeffs,
                              mtp.min_dist, mtp.max_dist, mtp.scaling, types, pair_off, pj, rij)
    b = fk.site_basis(mtp.alpha_index_basic, mtp.alpha_index_times, mtp.alpha_moment_mapping,
                      mtp.alpha_moments_count, mtp.radial_coeffs, mtp.min_dist, mtp.max_dist,
                      mtp.scaling, types, pair_off, pj, rij)
    return _with_species(mtp, types, b)


def _with_species(mtp: MTP, types: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Rows [one-hot species | scalar basis values] = dV_i/d(species_coeffs, moment_coeffs)."""
    onehot = np.zeros((len(types), mtp.species_count))
    onehot[np.arange(len(types)), types] = 1.0
    return np.hstack([onehot, basis])


def n_columns(mtp: MTP, coefficients: str = "linear") -> int:
    """Length of a row: S + n_scalar (linear) or n_params (all)."""
    return mtp.n_params if coefficients == "all" else mtp.species_count + mtp.alpha_scalar_moments


def neighborhood_rows(mtp: MTP, data: FitData, coefficients: str = "linear") -> np.ndarray:
    """Rows dV_i/dtheta per atom, (Ntot, n_columns)."""
    return _site_rows(mtp, data.types, data.pair_off, data.pj, data.rij, coefficients)


def configuration_rows(mtp: MTP, data: FitData, nbh: np.ndarray | None = None,
                       coefficients: str = "linear") -> np.ndarray:
    """Rows dE/dtheta / N per configuration, (K, n_columns)."""
    if nbh is None:
        nbh = neighborhood_rows(mtp, data, coefficients)
    return _mean_rows(nbh, data.atom_off)


def _mean_rows(nbh: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Per-structure mean of per-site rows (structure s: sites offsets[s]:offsets[s+1])."""
    return np.add.reduceat(nbh, offsets[:-1], axis=0) / np.diff(offsets)[:, None]


def grade_flat(mtp: MTP, active_set: "ActiveSet", cells: np.ndarray, positions: np.ndarray, types: np.ndarray,
               offsets: np.ndarray) -> np.ndarray:
    """Grade per structure of B periodic cells given as flat arrays — cells (B,3,3) Å, positions
    (Ntot,3) Å, types (Ntot,) indices into the potential's species, offsets (B+1,) — the layout
    of `csp.mtp.Batch` and of the batched relaxation. Same numbers as `grade`, without building
    Configurations or per-structure neighbour lists in Python (one numba call for all pairs)."""
    active_set.check(mtp)
    cells = np.ascontiguousarray(cells, dtype=np.float64)
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    types = np.ascontiguousarray(types, dtype=np.int64)
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    if len(cells) == 0:
        return np.zeros(0)
    pbcs = np.ones((len(cells), 3), dtype=np.bool_)
    pair_off, pj, rij = csr_batch(cells, pbcs, positions, offsets, float(mtp.max_dist))
    rows = _site_rows(mtp, types, pair_off, pj, rij, active_set.coefficients)
    return _grades_of_sites(active_set, rows, offsets)


def grade_from_site_basis(mtp: MTP, active_set: "ActiveSet", site_basis: np.ndarray, types: np.ndarray,
                          offsets: np.ndarray) -> np.ndarray:
    """Grade per structure from the scalar basis values per site that the energy evaluation
    already computed (`calc_efs_batch(..., site_basis=True).site_basis`): no second pass over
    the neighbours. This runs at every step of every relaxation. Linear-coefficient active sets
    only (rows over all coefficients need the radial derivatives: use `grade_flat`)."""
    active_set.check(mtp)
    if active_set.coefficients != "linear":
        raise ValueError("grade_from_site_basis needs a linear-coefficient active set; "
                         "an all-coefficient one is graded by grade_flat")
    offsets = np.asarray(offsets, dtype=np.int64)
    if len(offsets) < 2:
        return np.zeros(0)
    return _grades_of_sites(active_set, _with_species(mtp, np.asarray(types, np.int64), site_basis), offsets)


def _grades_of_sites(active_set: "ActiveSet", nbh: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Per-structure grade from per-site rows: max over sites (neighbourhood mode) or the grade
    of the per-atom mean row dE/dθ / N (configuration mode)."""
    if active_set.mode == "neighborhood":
        return np.maximum.reduceat(active_set.grades_of_rows(nbh), offsets[:-1])
    return active_set.grades_of_rows(_mean_rows(nbh, offsets))


@dataclass
class ActiveSet:
    """An active set: r x r matrix of rows (in column-equilibrated units `scale`), its inverse,
    the mode, the potential fingerprint it belongs to, per row the training configuration it
    came from (-1: virtual row) and the coefficients the rows differentiate by ("linear" or
    "all")."""

    mode: str
    matrix: np.ndarray    # (r, r) active rows times scale
    inverse: np.ndarray   # (r, r)
    scale: np.ndarray     # (r,) column scale factors
    owners: np.ndarray    # (r,) index of the training configuration per row, -1 virtual
    potential: str        # fingerprint(mtp, coefficients)
    coefficients: str = "linear"

    @classmethod
    def build(cls, mtp: MTP, training: Sequence, mode: str = DEFAULT_MODE,
              species: Sequence[str] | None = None, coefficients: str = "linear") -> "ActiveSet":
        """MaxVol active set of the training structures (Configurations, ase.Atoms or a FitData),
        over the linear coefficients (default) or all coefficients (as MLIP). Total: any number
        of structures (none, one, duplicates, supercells of each other) gives an active set in
        which every training row grades <= 1."""
        _check_choice(mode, coefficients)
        ncol = n_columns(mtp, coefficients)
        if not isinstance(training, FitData) and len(training) == 0:
            rows, owner = np.zeros((0, ncol)), np.zeros(0, np.int64)
        else:
            rows, owner = _rows_with_owner(mtp, _data(mtp, training, species), mode, coefficients)
        return cls.from_rows(rows, owner, mode, fingerprint(mtp, coefficients), coefficients)

    @classmethod
    def from_rows(cls, rows: np.ndarray, owner: np.ndarray, mode: str, potential: str,
                  coefficients: str = "linear") -> "ActiveSet":
        """MaxVol active set of the rows (n x r, any n and rank): columns are equilibrated
        (unit norm), r virtual rows eps * e_k regularise the directions the rows do not span,
        and MaxVol (rank-revealing start) picks r rows of [rows; virtual] of maximal volume, so
        every given row has coefficients |b A^-1| <= 1 + 1e-9."""
        rows = np.asarray(rows, dtype=np.float64)
        owner = np.asarray(owner, np.int64)
        finite = np.isfinite(rows).all(axis=1)
        if not finite.all():  # a broken structure (e.g. overlapping atoms) adds no information
            rows, owner = rows[finite], owner[finite]
        ncol = rows.shape[1]
        norms = np.sqrt(np.sum(rows ** 2, axis=0))
        floor = NOISE_FLOOR * float(norms.max()) if norms.size else 0.0
        ok = norms > max(floor, 1e-300)
        scale = np.where(ok, 1.0 / np.where(ok, norms, 1.0), 1.0 / floor if floor > 0.0 else 1.0)
        scaled = rows * scale
        top = float(np.abs(scaled).max()) if scaled.size else 0.0
        eps = VIRTUAL_EPS * (top if top > 0.0 else 1.0)
        full = np.vstack([scaled, eps * np.eye(ncol)])
        own = np.concatenate([owner, -np.ones(ncol, np.int64)])
        idx = maxvol(full)
        if len(idx) != ncol:  # cannot happen: the virtual rows span every column
            raise RuntimeError(f"active set has rank {len(idx)} < {ncol}")
        A = full[idx]
        return cls(mode, A, np.linalg.inv(A), scale, own[idx], potential, coefficients)

    @classmethod
    def from_mlip(cls, mtp: MTP, selection) -> "ActiveSet":
        """MLIP's own active set (`csp.mtp.io.MLIPSelection`, read from an `.almtp` or from
        `mlp train` output) for grading with csp: rows over all coefficients, MLIP's matrix and
        inverse unchanged, so grades reproduce MLIP's `calculate_grade`."""
        n = mtp.n_params
        if selection.matrix.shape != (n, n):
            raise InputError(f"MLIP active set is {selection.matrix.shape[0]} x {selection.matrix.shape[1]}, "
                             f"the potential has {n} coefficients")
        mode = selection.mode
        if mode == "mixed":
            raise InputError("MLIP active set selects by forces/stresses (force_weight or stress_weight "
                             "non-zero): csp grades neighbourhoods or configurations only")
        scale = np.ones(n)
        if mode == "configuration":
            if int(selection.weight_scaling) != 2:
                raise InputError(f"MLIP active set has weight_scaling {selection.weight_scaling}: "
                                 "csp's configuration rows are dE/dtheta / N (weight_scaling 2)")
            scale = scale * float(selection.energy_weight)
        return cls(mode, np.asarray(selection.matrix, np.float64), np.asarray(selection.inverse, np.float64),
                   scale, np.asarray(selection.links, np.int64)[:, 0].copy(), fingerprint(mtp, "all"), "all")

    def to_mlip(self, mtp: MTP, training: Sequence, species: Sequence[str] | None = None):
        """This (all-coefficient) active set as MLIP's selection block (`csp.mtp.io.MLIPSelection`,
        written by `write_mtp(..., selection=...)` into an `.almtp`), given the training structures
        it was built from: raw (unscaled) matrix and inverse, links to the selected structures
        and MLIP's equation index of each row; virtual rows become MLIP's initial rows (-1 -1)."""
        from csp.mtp.io import MLIPSelection

        self.check(mtp)
        if self.coefficients != "all":
            raise InputError("MLIP's active set is over all coefficients: build it with coefficients='all'")
        configs = as_configurations(training, species or mtp.elements)
        matrix = self.matrix / self.scale
        inverse = self.scale[:, None] * self.inverse
        used = sorted({int(o) for o in self.owners if o >= 0})
        if used and used[-1] >= len(configs):
            raise InputError(f"active set refers to training structure {used[-1]}, {len(configs)} given")
        data = FitData.build([configs[c] for c in used], mtp.max_dist, mtp.species_count) if used else None
        nbh = neighborhood_rows(mtp, data, "all") if used else None
        links = -np.ones((len(matrix), 2), np.int64)
        for k, c in enumerate(self.owners):
            if c < 0:
                continue
            pos = used.index(int(c))
            if self.mode == "configuration":
                links[k] = (pos, 0)
                continue
            a0, a1 = data.atom_off[pos], data.atom_off[pos + 1]
            atom = int(np.argmin(np.abs(nbh[a0:a1] - matrix[k]).max(axis=1)))
            links[k] = (pos, 1 + 3 * (a1 - a0) + 9 + atom)
        selected = []
        for pos, c in enumerate(used):
            cfg = copy.deepcopy(configs[c])
            cfg.features = {k: v for k, v in cfg.features.items() if k not in ("MV_grade", "selected_eqn_inds")}
            cfg.features["selected_eqn_inds"] = ",".join(str(e) for e in sorted(links[links[:, 0] == pos, 1]))
            selected.append(cfg)
        conf = self.mode == "configuration"
        return MLIPSelection(matrix=matrix, inverse=inverse, links=links, configurations=selected,
                             energy_weight=1.0 if conf else 0.0, site_en_weight=0.0 if conf else 1.0,
                             weight_scaling=2)

    def check(self, mtp: MTP) -> None:
        """InputError unless this active set was built for `mtp`'s basis and radial coefficients."""
        if fingerprint(mtp, self.coefficients) != self.potential:
            raise InputError("active set does not belong to this potential (rebuild it from the training set)")

    def grades_of_rows(self, rows: np.ndarray) -> np.ndarray:
        """gamma = max_j |(b A^-1)_j| per row."""
        if len(rows) == 0:
            return np.zeros(0)
        return np.abs((rows * self.scale) @ self.inverse).max(axis=1)

    def save(self, path: str | Path) -> None:
        """Write to `path` (numpy .npz content, exact binary values)."""
        with open(path, "wb") as fh:
            np.savez(fh, mode=np.array(self.mode), matrix=self.matrix, inverse=self.inverse,
                     scale=self.scale, owners=self.owners, potential=np.array(self.potential),
                     coefficients=np.array(self.coefficients))

    @classmethod
    def load(cls, path: str | Path) -> "ActiveSet":
        """Read an active set written by save()."""
        try:
            with np.load(path, allow_pickle=False) as z:
                coefficients = str(z["coefficients"]) if "coefficients" in z.files else "linear"
                return cls(str(z["mode"]), z["matrix"], z["inverse"], z["scale"], z["owners"],
                           str(z["potential"]), coefficients)
        except (OSError, KeyError, ValueError) as exc:
            raise InputError(f"{path}: not a csp active-set file ({exc})") from None


def active_set_path(potential_path: str | Path) -> Path:
    """The sidecar file of a potential: POT.mtp -> POT.mtp.als."""
    return Path(str(potential_path) + ".als")


def _rows_with_owner(mtp: MTP, data: FitData, mode: str, coefficients: str = "linear") -> tuple[np.ndarray, np.ndarray]:
    nbh = neighborhood_rows(mtp, data, coefficients)
    if mode == "neighborhood":
        return nbh, np.repeat(np.arange(data.n_configs), data.natoms)
    return configuration_rows(mtp, data, nbh), np.arange(data.n_configs)


def grade(mtp: MTP, active_set: ActiveSet, structures: Sequence, *, species: Sequence[str] | None = None,
          per_atom: bool = False, mode: str | None = None):
    """Extrapolation grade per structure (Configurations or ase.Atoms). In neighbourhood mode the
    structure's grade is the maximum over its atoms (as MLIP's MV_grade). With per_atom=True
    also returns the list of per-atom neighbourhood grades (neighbourhood mode only). `mode`,
    if given, must equal the active set's mode."""
    active_set.check(mtp)
    if mode is not None and mode != active_set.mode:
        raise InputError(f"active set is in {active_set.mode} mode, {mode} grades requested (rebuild it)")
    if per_atom and active_set.mode != "neighborhood":
        raise InputError("per-atom grades need a neighborhood-mode active set")
    if not isinstance(structures, FitData) and len(structures) == 0:
        return (np.zeros(0), []) if per_atom else np.zeros(0)
    data = _data(mtp, structures, species)
    nbh = neighborhood_rows(mtp, data, active_set.coefficients)
    if len(nbh) == 0:
        return (np.zeros(0), []) if per_atom else np.zeros(0)
    if per_atom:
        g_atoms = active_set.grades_of_rows(nbh)
        per_cfg = np.maximum.reduceat(g_atoms, data.atom_off[:-1])
        return per_cfg, [g_atoms[data.atom_off[c]:data.atom_off[c + 1]] for c in range(data.n_configs)]
    return _grades_of_sites(active_set, nbh, data.atom_off)
