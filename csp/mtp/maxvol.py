"""MaxVol: a square submatrix of (locally) maximal volume |det| among the rows of a tall matrix
(Goreinov, Oseledets, Savostyanov, Tyrtyshnikov, Zamarashkin 2010), and greedy row insertion.

For an active set A (r x r rows of B), the coefficients of any row b in the basis of the
active rows are c = b A^-1; MaxVol guarantees max|c_j| <= 1 + tol for every row of B.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg


def maxvol(B: np.ndarray, tol: float = 1e-9, max_iters: int = 10000) -> np.ndarray:
    """Indices (r,) of r rows of B (n x r, n >= r, full column rank) whose square submatrix has
    locally maximal |det|: every row of B has coefficients |B A^-1| <= 1 + tol."""
    B = np.asarray(B, dtype=np.float64)
    n, r = B.shape
    if n < r:
        raise ValueError(f"maxvol needs at least as many rows ({n}) as columns ({r})")
    # start from the pivot rows of an LU factorisation with partial pivoting
    p, _, _ = scipy.linalg.lu(B, p_indices=True)
    rows = np.array(p[:r], dtype=np.int64)
    C = np.linalg.solve(B[rows].T, B.T).T  # C = B A^-1, (n, r)
    for _ in range(max_iters):
        i, j = np.unravel_index(np.argmax(np.abs(C)), C.shape)
        if abs(C[i, j]) <= 1.0 + tol:
            break
        # replace active row j by row i: rank-1 update of C
        cj = C[:, j].copy()
        ci = C[i, :].copy()
        ci[j] -= 1.0
        C -= np.outer(cj / C[i, j], ci)
        rows[j] = i
    return rows


def coefficients(rows: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    """b A^-1 for each row b of `rows` (m x r), given A^-1 (r x r)."""
    return np.asarray(rows, dtype=np.float64) @ inverse


def greedy_insert(active: np.ndarray, candidates: np.ndarray, threshold: float = 1.0 + 1e-9,
                  max_swaps: int | None = None) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Greedily swap candidate rows into the active set `active` (r x r) while some candidate has
    a coefficient |c_j| > threshold (each swap multiplies |det| by that factor).

    Returns the new active matrix and the list of swaps (candidate row index, active slot)."""
    A = np.array(active, dtype=np.float64)
    R = np.asarray(candidates, dtype=np.float64)
    swaps: list[tuple[int, int]] = []
    if R.size == 0:
        return A, swaps
    C = np.linalg.solve(A.T, R.T).T
    limit = max_swaps if max_swaps is not None else 10 * max(len(R), A.shape[0]) + 100
    while len(swaps) < limit:
        i, j = np.unravel_index(np.argmax(np.abs(C)), C.shape)
        if abs(C[i, j]) <= threshold:
            break
        old = A[j].copy()
        A[j] = R[i]
        swaps.append((int(i), int(j)))
        # C' = C - C[:, j] (c_i - e_j) / c_ij  for the replaced basis row
        ci = C[i, :].copy()
        ci[j] -= 1.0
        C -= np.outer(C[:, j] / C[i, j], ci)
        del old
    return A, swaps
