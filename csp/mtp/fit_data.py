"""A training set as flat arrays for the numba training kernels (csp.mtp.fit_kernels).

Configurations are accepted as `csp.mtp.io.Configuration` or as `ase.Atoms` (with a species
list mapping element symbol -> type index). Neighbour lists are built once per cutoff.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from csp.errors import InputError
from csp.mtp.io import Configuration, atoms_to_cfg

_VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))


def as_configurations(structures: Sequence, species: Sequence[str] | None = None) -> list[Configuration]:
    """Configurations from Configuration or ase.Atoms items (Atoms need `species`)."""
    out: list[Configuration] = []
    for k, s in enumerate(structures):
        if isinstance(s, Configuration):
            out.append(s)
        elif hasattr(s, "get_chemical_symbols"):
            if species is None:
                raise InputError(f"structure {k} is an ase.Atoms: a species list (type order) is needed")
            out.append(atoms_to_cfg(s, species))
        else:
            raise InputError(f"structure {k}: expected a Configuration or ase.Atoms, got {type(s).__name__}")
    return out


def _pairs(cfg: Configuration, cutoff: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR neighbour list (offsets (N+1,), j (P,), rij (P,3)) of all pairs with 0 < r < cutoff."""
    from csp.mtp.neighbors import neighbor_list

    if cfg.cell is None:
        cell, pbc = np.eye(3), np.zeros(3, dtype=np.bool_)
    else:
        cell, pbc = cfg.cell, np.ones(3, dtype=np.bool_)
    offsets, j, rij = neighbor_list(cell, pbc, cfg.positions, cutoff)[:3]
    return np.asarray(offsets, np.int64), np.asarray(j, np.int64), np.asarray(rij, np.float64)


def plus_stress_matrix(ps: np.ndarray) -> np.ndarray:
    """3x3 symmetric virial (eV) from MLIP's PlusStress (xx yy zz yz xz xy)."""
    w = np.empty((3, 3))
    for v, (a, b) in enumerate(_VOIGT):
        w[a, b] = w[b, a] = ps[v]
    return w


def matrix_to_voigt(w: np.ndarray) -> np.ndarray:
    """(..., 3, 3) -> (..., 6) in the order xx yy zz yz xz xy."""
    return np.stack([w[..., a, b] for a, b in _VOIGT], axis=-1)


@dataclass
class FitData:
    """Flat training set: atoms of configuration c are atom_off[c]:atom_off[c+1]; pairs of atom i
    are pair_off[i]:pair_off[i+1] with global neighbour index pj and vector rij (Å)."""

    cutoff: float
    atom_off: np.ndarray
    types: np.ndarray
    pair_off: np.ndarray
    pj: np.ndarray
    rij: np.ndarray
    e_ref: np.ndarray   # (K,) eV
    f_ref: np.ndarray   # (Ntot, 3) eV/Å
    w_ref: np.ndarray   # (K, 3, 3) eV, virial = PlusStress
    has_e: np.ndarray
    has_f: np.ndarray
    has_s: np.ndarray
    volumes: np.ndarray  # (K,) Å³, nan if non-periodic

    @property
    def n_configs(self) -> int:
        return int(len(self.atom_off) - 1)

    @property
    def natoms(self) -> np.ndarray:
        return np.diff(self.atom_off)

    @classmethod
    def build(cls, configs: Sequence[Configuration], cutoff: float, species_count: int | None = None) -> "FitData":
        """Neighbour lists and reference values of `configs` for a potential with this cutoff (Å)."""
        K = len(configs)
        atom_off = np.zeros(K + 1, np.int64)
        types, pair_off, pj, rij = [], [np.zeros(1, np.int64)], [], []
        e_ref = np.zeros(K); w_ref = np.zeros((K, 3, 3))
        has_e = np.zeros(K, np.bool_); has_f = np.zeros(K, np.bool_); has_s = np.zeros(K, np.bool_)
        f_ref, volumes = [], np.full(K, np.nan)
        npairs = 0
        for c, cfg in enumerate(configs):
            n = cfg.size
            if n == 0:
                raise InputError(f"configuration {c} has no atoms")
            if species_count is not None and int(cfg.types.max()) >= species_count:
                raise InputError(f"configuration {c} has atom type {int(cfg.types.max())}, "
                                 f"potential has {species_count} species")
            atom_off[c + 1] = atom_off[c] + n
            off, j, r = _pairs(cfg, cutoff)
            types.append(cfg.types)
            pair_off.append(off[1:] + npairs)
            pj.append(j + atom_off[c])
            rij.append(r)
            npairs += len(j)
            if cfg.energy is not None:
                e_ref[c], has_e[c] = cfg.energy, True
            if cfg.forces is not None:
                f_ref.append(cfg.forces); has_f[c] = True
            else:
                f_ref.append(np.zeros((n, 3)))
            if cfg.plus_stress is not None:
                w_ref[c], has_s[c] = plus_stress_matrix(cfg.plus_stress), True
            if cfg.cell is not None:
                volumes[c] = cfg.volume
        return cls(float(cutoff), atom_off, np.concatenate(types).astype(np.int64),
                   np.concatenate(pair_off).astype(np.int64),
                   np.concatenate(pj).astype(np.int64) if pj else np.zeros(0, np.int64),
                   np.concatenate(rij).reshape(-1, 3) if rij else np.zeros((0, 3)),
                   e_ref, np.concatenate(f_ref).reshape(-1, 3), w_ref, has_e, has_f, has_s, volumes)

    def subset(self, indices: Sequence[int]) -> "FitData":
        """The configurations `indices` (in that order) as a new FitData (no neighbour search)."""
        idx = np.asarray(indices, np.int64)
        atom_off = np.zeros(len(idx) + 1, np.int64)
        types, pair_off, pj, rij, f_ref = [], [np.zeros(1, np.int64)], [], [], []
        npairs = 0
        for n, c in enumerate(idx):
            a0, a1 = self.atom_off[c], self.atom_off[c + 1]
            atom_off[n + 1] = atom_off[n] + (a1 - a0)
            p0, p1 = self.pair_off[a0], self.pair_off[a1]
            types.append(self.types[a0:a1])
            pair_off.append(self.pair_off[a0 + 1:a1 + 1] - p0 + npairs)
            pj.append(self.pj[p0:p1] - a0 + atom_off[n])
            rij.append(self.rij[p0:p1])
            f_ref.append(self.f_ref[a0:a1])
            npairs += p1 - p0
        return FitData(self.cutoff, atom_off, np.concatenate(types), np.concatenate(pair_off),
                       np.concatenate(pj), np.concatenate(rij).reshape(-1, 3),
                       self.e_ref[idx].copy(), np.concatenate(f_ref).reshape(-1, 3), self.w_ref[idx].copy(),
                       self.has_e[idx].copy(), self.has_f[idx].copy(), self.has_s[idx].copy(),
                       self.volumes[idx].copy())
