"""Hessians by finite differences of forces and the soft (low-curvature) modes of a cell.

The Hessian ``H_ij = ∂²E/∂x_i∂x_j`` (eV/Å², 3N×3N, cell fixed) is obtained from central
differences of the forces, ``H[:, k] = −(F(x + h e_k) − F(x − h e_k)) / 2h``; all 6N displaced
configurations are evaluated in ONE call of a batched `csp.relax.Evaluator` (the MTP's
`calc_efs_batch`, or `csp.relax.ase_evaluator` for any ASE calculator). The three rigid
translations (zero modes of a periodic crystal) are projected out; the remaining modes sorted
by curvature are the soft modes used by `SoftMutation`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from ase import Atoms

from csp.relax import Evaluator


def translation_basis(n_atoms: int) -> np.ndarray:
    """(3N, 3) orthonormal rigid translations of n_atoms atoms."""
    t = np.zeros((3 * n_atoms, 3))
    for k in range(3):
        t[k::3, k] = 1.0 / np.sqrt(n_atoms)
    return t


def hessian(atoms: Atoms, evaluate: Evaluator, species: Sequence[str], step: float = 0.01) -> np.ndarray:
    """Symmetrised (3N, 3N) Hessian (eV/Å²) of `atoms` at fixed cell; `step` in Å."""
    n = len(atoms)
    index = {s: i for i, s in enumerate(species)}
    types0 = np.array([index[s] for s in atoms.get_chemical_symbols()], dtype=np.int64)
    pos0 = atoms.positions
    disp = []
    for k in range(3 * n):
        for sign in (1.0, -1.0):
            p = pos0.copy()
            p[k // 3, k % 3] += sign * step
            disp.append(p)
    nb = len(disp)
    cells = np.repeat(atoms.cell.array[None], nb, axis=0)
    positions = np.concatenate(disp)
    types = np.tile(types0, nb)
    offsets = np.arange(nb + 1, dtype=np.int64) * n
    _, forces, _ = evaluate(cells, positions, types, offsets)
    forces = np.asarray(forces).reshape(nb, 3 * n)
    h = -(forces[0::2] - forces[1::2]) / (2.0 * step)  # row k = derivative wrt coordinate k
    return 0.5 * (h + h.T)


def soft_modes(h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(curvatures (3N−3,) eV/Å² ascending, unit modes (3N−3, 3N)) without rigid translations."""
    n3 = h.shape[0]
    t = translation_basis(n3 // 3)
    p = np.eye(n3) - t @ t.T
    w, v = np.linalg.eigh(p @ h @ p)
    overlap = np.linalg.norm(t.T @ v, axis=0)          # translational content of each eigenvector
    keep = np.sort(np.argsort(overlap)[: n3 - 3])      # drop the three translations
    w, v = w[keep], v[:, keep]
    order = np.argsort(w, kind="stable")
    return w[order], v[:, order].T


def curvature(h: np.ndarray, direction: np.ndarray) -> float:
    """Rayleigh quotient v·H·v / v·v (eV/Å²) of a displacement direction (3N,) or (N,3)."""
    v = np.asarray(direction, float).ravel()
    return float(v @ h @ v / (v @ v))
