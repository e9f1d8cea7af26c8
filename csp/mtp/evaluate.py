"""Evaluate an MTP: energy (eV), per-atom energies (eV), forces (eV/Å), stress (eV/Å³, ASE sign,
Voigt xx yy zz yz xz xy) for one structure or a batch of many structures in one numba call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np

from csp.errors import InputError
from csp.mtp.kernels import efs_batch, pack
from csp.mtp.potential import MTP

_VOIGT = ([0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1])


def packed(mtp: MTP) -> tuple:
    """Kernel arrays of `mtp`, cached on the object and rebuilt if its arrays change."""
    key = tuple(hash(a.tobytes()) for a in (mtp.radial_coeffs, mtp.species_coeffs, mtp.moment_coeffs,
                                             mtp.alpha_index_basic, mtp.alpha_index_times,
                                             mtp.alpha_moment_mapping)) + (mtp.min_dist, mtp.max_dist,
                                                                           mtp.scaling)
    cached = mtp.__dict__.get("_csp_packed")
    if cached is None or cached[0] != key:
        cached = (key, pack(mtp))
        mtp.__dict__["_csp_packed"] = cached
    return cached[1]


def virial_to_stress(virial: np.ndarray, volume: float) -> np.ndarray:
    """Voigt stress (eV/Å³, ASE sign) from the virial sum r_ij (x) dE/dr_ij (eV); NaN if V = 0."""
    sym = 0.5 * (virial + np.swapaxes(virial, -1, -2))
    voigt = sym[..., _VOIGT[0], _VOIGT[1]]
    volume = np.asarray(volume, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = voigt / volume[..., None]
    return np.where(volume[..., None] > 0, out, np.nan)


class EFS(NamedTuple):
    """Result of one structure: energy eV, energies (N,) eV, forces (N,3) eV/Å, stress (6,) eV/Å³
    (NaN for non-periodic structures), virial (3,3) eV = sum r_ij (x) dE/dr_ij."""

    energy: float
    energies: np.ndarray
    forces: np.ndarray
    stress: np.ndarray
    virial: np.ndarray


def species_types(atoms, species: Sequence[str] | None, mtp: MTP) -> np.ndarray:
    """Atom types of `atoms` given the species order (default: the potential's elements, else
    atomic numbers must already be 0..S-1 is not assumed: species is then required)."""
    if species is None:
        species = mtp.elements
    if species is None:
        raise InputError("species order unknown: give species=[...] (the potential has no csp_elements)")
    index = {s: k for k, s in enumerate(species)}
    try:
        types = np.array([index[s] for s in atoms.get_chemical_symbols()], dtype=np.int64)
    except KeyError as exc:
        raise InputError(f"structure {atoms.get_chemical_formula()}: element {exc.args[0]} not in "
                         f"species {','.join(species)}") from None
    if types.size and types.max() >= mtp.species_count:
        raise InputError(f"structure {atoms.get_chemical_formula()}: species {species[types.max()]} is "
                         f"type {types.max()} but the potential has {mtp.species_count} species")
    return types


@dataclass
class Batch:
    """Many structures as flat arrays: cells (B,3,3) Å, pbc (B,3) bool, positions (Ntot,3) Å,
    types (Ntot,) int64, offsets (B+1,) (atoms of structure b are offsets[b]:offsets[b+1])."""

    cells: np.ndarray
    pbc: np.ndarray
    positions: np.ndarray
    types: np.ndarray
    offsets: np.ndarray

    def __post_init__(self) -> None:
        self.cells = np.ascontiguousarray(self.cells, dtype=np.float64).reshape(-1, 3, 3)
        self.pbc = np.ascontiguousarray(self.pbc, dtype=np.bool_).reshape(-1, 3)
        self.positions = np.ascontiguousarray(self.positions, dtype=np.float64).reshape(-1, 3)
        self.types = np.ascontiguousarray(self.types, dtype=np.int64).ravel()
        self.offsets = np.ascontiguousarray(self.offsets, dtype=np.int64).ravel()
        B = len(self.cells)
        if self.pbc.shape != (B, 3) or self.offsets.shape != (B + 1,) or self.offsets[0] != 0 \
                or self.offsets[-1] != len(self.positions) or len(self.types) != len(self.positions) \
                or np.any(np.diff(self.offsets) < 0):
            raise ValueError("inconsistent Batch arrays")

    @property
    def size(self) -> int:
        """Number of structures B."""
        return len(self.cells)

    @classmethod
    def from_atoms(cls, atoms_list: Sequence, species: Sequence[str]) -> "Batch":
        """Flatten a list of ase.Atoms; symbol species[t] becomes type t."""
        index = {s: k for k, s in enumerate(species)}
        counts = [len(a) for a in atoms_list]
        offsets = np.zeros(len(atoms_list) + 1, np.int64)
        offsets[1:] = np.cumsum(counts)
        try:
            types = np.array([index[s] for a in atoms_list for s in a.get_chemical_symbols()], np.int64)
        except KeyError as exc:
            raise InputError(f"element {exc.args[0]} not in species {','.join(species)}") from None
        positions = np.concatenate([a.positions for a in atoms_list]) if atoms_list else np.zeros((0, 3))
        return cls(cells=np.array([a.cell[:] for a in atoms_list]).reshape(-1, 3, 3),
                   pbc=np.array([a.pbc for a in atoms_list]).reshape(-1, 3),
                   positions=positions, types=types, offsets=offsets)

    @classmethod
    def from_configurations(cls, configs: Sequence) -> "Batch":
        """Flatten MLIP Configurations (cell None = non-periodic)."""
        counts = [c.size for c in configs]
        offsets = np.zeros(len(configs) + 1, np.int64)
        offsets[1:] = np.cumsum(counts)
        cells = np.array([c.cell if c.cell is not None else np.zeros((3, 3)) for c in configs]).reshape(-1, 3, 3)
        pbc = np.array([[c.cell is not None] * 3 for c in configs], dtype=bool).reshape(-1, 3)
        positions = np.concatenate([c.positions for c in configs]) if configs else np.zeros((0, 3))
        types = np.concatenate([c.types for c in configs]) if configs else np.zeros(0, np.int64)
        return cls(cells=cells, pbc=pbc, positions=positions, types=types, offsets=offsets)


class BatchResult(NamedTuple):
    """energies (B,) eV, forces (Ntot,3) eV/Å, stresses (B,6) eV/Å³ (NaN if V = 0),
    site_energies (Ntot,) eV, virials (B,3,3) eV; site_basis (Ntot, n_scalar) scalar basis values
    per site (dV_i/d moment_coeffs) when requested, else None."""

    energies: np.ndarray
    forces: np.ndarray
    stresses: np.ndarray
    site_energies: np.ndarray
    virials: np.ndarray
    site_basis: np.ndarray | None = None


def _check(mtp: MTP, batch: Batch) -> None:
    if batch.types.size and (batch.types.min() < 0 or batch.types.max() >= mtp.species_count):
        raise InputError(f"atom type {int(batch.types.max())} outside the potential's "
                         f"{mtp.species_count} species")
    if not batch.size:
        return
    # periodic vectors must be independent: Gram determinant (non-periodic rows -> identity)
    gram = batch.cells @ np.swapaxes(batch.cells, 1, 2)
    mask = batch.pbc[:, :, None] & batch.pbc[:, None, :]
    gram = np.where(mask, gram, np.eye(3)[None])
    norms = np.where(batch.pbc, np.einsum("bii->bi", gram), 1.0).prod(axis=1)
    bad = ~(np.linalg.det(gram) > 1e-12 * norms)
    if bad.any():
        raise InputError(f"structure {int(np.argmax(bad))}: periodic cell vectors are degenerate")


def calc_efs_batch(mtp: MTP, batch: Batch, check: bool = True, site_basis: bool = False) -> BatchResult:
    """Energies, forces and stresses of all structures of `batch` in ONE numba call.
    `check=False` skips input validation (for hot loops that already validated the batch);
    `site_basis=True` also returns every site's scalar basis values (for the grade)."""
    if check:
        _check(mtp, batch)
    n = len(batch.positions)
    site = np.empty(n)
    forces = np.empty((n, 3))
    virials = np.empty((batch.size, 3, 3))
    rows = np.zeros((n if site_basis else 0, len(mtp.alpha_moment_mapping)))
    efs_batch(batch.cells, batch.pbc, batch.positions, batch.types, batch.offsets, packed(mtp),
              site, forces, virials, rows)
    owner = np.repeat(np.arange(batch.size), np.diff(batch.offsets))
    energies = np.bincount(owner, weights=site, minlength=batch.size).astype(np.float64)
    volumes = np.abs(np.linalg.det(batch.cells)) if batch.size else np.zeros(0)
    volumes = np.where(batch.pbc.all(axis=1), volumes, 0.0)
    stresses = virial_to_stress(virials, volumes)
    return BatchResult(energies, forces, stresses, site, virials, rows if site_basis else None)


def calc_efs(mtp: MTP, atoms, species: Sequence[str] | None = None) -> EFS:
    """Energy, per-atom energies, forces and stress of one ase.Atoms (species order defaults to
    the potential's csp_elements). Stress is NaN unless the structure is periodic in 3D."""
    types = species_types(atoms, species, mtp)
    batch = Batch(cells=atoms.cell[:][None], pbc=np.asarray(atoms.pbc)[None], positions=atoms.positions,
                  types=types, offsets=np.array([0, len(atoms)]))
    res = calc_efs_batch(mtp, batch)
    return EFS(float(res.energies[0]), res.site_energies, res.forces, res.stresses[0], res.virials[0])


def calc_efs_configurations(mtp: MTP, configs: Sequence) -> BatchResult:
    """Evaluate MLIP Configurations (types as stored) in one batch."""
    return calc_efs_batch(mtp, Batch.from_configurations(configs))
