"""Extrapolation grade of an MTP (Podryabinkin & Shapeev 2017, as in MLIP): the MaxVol active set
over the rows of derivatives of the energy with respect to the linear coefficients.

Rows (columns: S species coefficients, then the moment coefficients xi):
- configuration mode: dE/d(theta_lin) / N = [n_t / N, sum_i b_i / N] per configuration;
- neighbourhood mode: dV_i/d(theta_lin) = [onehot(t_i), b_i] per atom,
with b_i = m_i[alpha_moment_mapping] the scalar basis values of atom i. The grade of a row b is
gamma = max_j |(b A^-1)_j| over the r x r active set A; training rows grade <= 1, gamma > 1 is
extrapolation. Only the linear coefficients are used (the radial ones are held fixed): MLIP's
own trainer linearises over all coefficients it owns (CoeffCount), which needs at least as many
training rows as radial+linear parameters; csp keeps the smaller, always well-posed linear set
(the basis of the GUIDE and of Podryabinkin-Shapeev's MTP active learning papers).

Comparison with MLIP (conformance multi_10: MLIP's grades in out.cfg come from an active set
built on the full 1001-configuration trajectory, over all its coefficients; in.cfg is every 40th
configuration): an active set built by csp from in.cfg alone (neighbourhood mode, 675 rows, 19
columns) grades every in.cfg configuration <= 1 (MLIP: <= 1.0007), and MV_grade = max nbh_grades
in both. The rankings agree only weakly: Spearman 0.45 over the 25 configuration grades and 0.21
over the 675 neighbourhood grades (configuration mode from 25 rows: -0.06; csp's rows extended
by the radial-coefficient derivatives, 235 columns, from in.cfg: 0.04 / 0.08), as expected when
the active sets are built from different data (25 vs 1001 configurations) and coefficient sets.

Few training rows: if the training rows do not span all columns, virtual rows eps * e_k (in
column-equilibrated units, eps = 1e-6) complete the active set, so a structure with a component
the training set never saw (e.g. a new species) grades ~1/eps.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from csp.errors import InputError
from csp.mtp import fit_kernels as fk
from csp.mtp.fit_data import FitData, as_configurations
from csp.mtp.maxvol import maxvol
from csp.mtp.neighbors import csr_batch
from csp.mtp.potential import MTP

MODES = ("configuration", "neighborhood")
VIRTUAL_EPS = 1e-6


def fingerprint(mtp: MTP) -> str:
    """Hash of what the rows depend on: basis structure, cutoff and radial coefficients."""
    h = hashlib.sha256()
    for arr in (mtp.alpha_index_basic, mtp.alpha_index_times, mtp.alpha_moment_mapping,
                mtp.radial_coeffs, np.array([mtp.min_dist, mtp.max_dist, mtp.scaling, mtp.species_count])):
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:16]


def _data(mtp: MTP, structures: Sequence, species: Sequence[str] | None) -> FitData:
    if isinstance(structures, FitData):
        return structures
    configs = as_configurations(structures, species or mtp.elements)
    return FitData.build(configs, mtp.max_dist, mtp.species_count)


def _site_rows(mtp: MTP, types: np.ndarray, pair_off: np.ndarray, pj: np.ndarray, rij: np.ndarray) -> np.ndarray:
    """(Ntot, S + n_scalar) rows dV_i/d(theta_lin) from flat neighbour data (global pj)."""
    b = fk.site_basis(mtp.alpha_index_basic, mtp.alpha_index_times, mtp.alpha_moment_mapping,
                      mtp.alpha_moments_count, mtp.radial_coeffs, mtp.min_dist, mtp.max_dist,
                      mtp.scaling, types, pair_off, pj, rij)
    return _with_species(mtp, types, b)


def _with_species(mtp: MTP, types: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Rows [one-hot species | scalar basis values] = dV_i/d(species_coeffs, moment_coeffs)."""
    onehot = np.zeros((len(types), mtp.species_count))
    onehot[np.arange(len(types)), types] = 1.0
    return np.hstack([onehot, basis])


def neighborhood_rows(mtp: MTP, data: FitData) -> np.ndarray:
    """(Ntot, S + n_scalar) rows dV_i/d(theta_lin)."""
    return _site_rows(mtp, data.types, data.pair_off, data.pj, data.rij)


def configuration_rows(mtp: MTP, data: FitData, nbh: np.ndarray | None = None) -> np.ndarray:
    """(K, S + n_scalar) rows dE/d(theta_lin) / N."""
    if nbh is None:
        nbh = neighborhood_rows(mtp, data)
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
    return _grades_of_sites(active_set, _site_rows(mtp, types, pair_off, pj, rij), offsets)


def grade_from_site_basis(mtp: MTP, active_set: "ActiveSet", site_basis: np.ndarray, types: np.ndarray,
                          offsets: np.ndarray) -> np.ndarray:
    """Grade per structure from the scalar basis values per site that the energy evaluation
    already computed (`calc_efs_batch(..., site_basis=True).site_basis`): no second pass over
    the neighbours. This runs at every step of every relaxation."""
    active_set.check(mtp)
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
    the mode, the potential fingerprint it belongs to and, per row, the training configuration
    it came from (-1: virtual row)."""

    mode: str
    matrix: np.ndarray    # (r, r) active rows times scale
    inverse: np.ndarray   # (r, r)
    scale: np.ndarray     # (r,) column scale factors
    owners: np.ndarray    # (r,) index of the training configuration per row, -1 virtual
    potential: str        # fingerprint(mtp)

    @classmethod
    def build(cls, mtp: MTP, training: Sequence, mode: str = "neighborhood",
              species: Sequence[str] | None = None) -> "ActiveSet":
        """MaxVol active set of the training structures (Configurations or ase.Atoms)."""
        if mode not in MODES:
            raise InputError(f"unknown grade mode {mode!r} (configuration, neighborhood)")
        data = _data(mtp, training, species)
        rows, owner = _rows_with_owner(mtp, data, mode)
        ncol = rows.shape[1]
        norms = np.sqrt(np.sum(rows ** 2, axis=0))
        scale = np.where(norms > 0, 1.0 / np.where(norms > 0, norms, 1.0), 1.0)
        scaled = rows * scale
        eps = VIRTUAL_EPS * max(float(np.abs(scaled).max()), 1e-300)
        full = np.vstack([scaled, eps * np.eye(ncol)])
        own = np.concatenate([owner, -np.ones(ncol, np.int64)])
        idx = maxvol(full)
        A = full[idx]
        return cls(mode, A, np.linalg.inv(A), scale, own[idx], fingerprint(mtp))

    def check(self, mtp: MTP) -> None:
        """InputError unless this active set was built for `mtp`'s basis and radial coefficients."""
        if fingerprint(mtp) != self.potential:
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
                     scale=self.scale, owners=self.owners, potential=np.array(self.potential))

    @classmethod
    def load(cls, path: str | Path) -> "ActiveSet":
        """Read an active set written by save()."""
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls(str(z["mode"]), z["matrix"], z["inverse"], z["scale"], z["owners"],
                           str(z["potential"]))
        except (OSError, KeyError, ValueError) as exc:
            raise InputError(f"{path}: not a csp active-set file ({exc})") from None


def active_set_path(potential_path: str | Path) -> Path:
    """The sidecar file of a potential: POT.mtp -> POT.mtp.als."""
    return Path(str(potential_path) + ".als")


def _rows_with_owner(mtp: MTP, data: FitData, mode: str) -> tuple[np.ndarray, np.ndarray]:
    nbh = neighborhood_rows(mtp, data)
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
    data = _data(mtp, structures, species)
    nbh = neighborhood_rows(mtp, data)
    if len(nbh) == 0:
        return (np.zeros(0), []) if per_atom else np.zeros(0)
    if per_atom:
        g_atoms = active_set.grades_of_rows(nbh)
        per_cfg = np.maximum.reduceat(g_atoms, data.atom_off[:-1])
        return per_cfg, [g_atoms[data.atom_off[c]:data.atom_off[c + 1]] for c in range(data.n_configs)]
    return _grades_of_sites(active_set, nbh, data.atom_off)
