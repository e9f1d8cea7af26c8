"""MaxVol: a square submatrix of (locally) maximal volume |det| among the rows of a tall matrix
(Goreinov, Oseledets, Savostyanov, Tyrtyshnikov, Zamarashkin 2010), and greedy row insertion.

For an active set A (r x r rows of B), the coefficients of any row b in the basis of the
active rows are c = b A^-1; MaxVol guarantees max|c_j| <= 1 + tol for every row of B.

Both functions are total: they never raise on rank-deficient input (fewer rows than columns,
duplicate rows, numerically dependent rows). The start is rank-revealing (QR with column
pivoting on B^T picks k = numerical-rank independent rows); if k < r the swaps run in the
k-dimensional row space of B, where those k rows form a non-singular basis. Callers that need
a square r x r active set complete the data with regularising rows first (see
`csp.mtp.grade.ActiveSet.build`: tiny "virtual" rows eps * e_k).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

RCOND = 1e-12  # relative threshold on the pivots of the rank-revealing QR


def independent_rows(B: np.ndarray, rcond: float = RCOND) -> np.ndarray:
    """Indices of k rows of B that are numerically independent (k = numerical rank, pivots
    |R_kk| > rcond * |R_00| of a QR with column pivoting of B^T), most independent first."""
    B = np.asarray(B, dtype=np.float64)
    n, r = B.shape
    if n == 0 or r == 0 or not np.isfinite(B).all():
        return np.zeros(0, np.int64)
    R, piv = scipy.linalg.qr(B.T, mode="r", pivoting=True, check_finite=False)
    d = np.abs(np.diag(R))
    if d.size == 0 or d[0] == 0.0:
        return np.zeros(0, np.int64)
    k = int(np.sum(d > rcond * d[0]))
    return np.asarray(piv[:k], dtype=np.int64)


def _coefficients(A: np.ndarray, R: np.ndarray) -> np.ndarray:
    """C = R A^-1 for a non-singular square A (least squares if A is numerically singular)."""
    try:
        return np.linalg.solve(A.T, R.T).T
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(A.T, R.T, rcond=None)[0].T


def _row_space(B: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """B in coordinates of an orthonormal basis of the span of B[rows] (n x k)."""
    Q, _ = np.linalg.qr(B[rows].T)
    return B @ Q


def maxvol(B: np.ndarray, tol: float = 1e-9, max_iters: int = 10000, rcond: float = RCOND) -> np.ndarray:
    """Indices of k rows of B (n x r) whose k x k submatrix (in the row space of B) has locally
    maximal |det|: every row of B is a combination of them with coefficients |c_j| <= 1 + tol.

    k = r when B has full column rank (the usual case, n >= r); otherwise k is the numerical
    rank of B (k < r when n < r or rows are dependent, k = 0 for a zero matrix)."""
    B = np.asarray(B, dtype=np.float64)
    if B.ndim != 2:
        raise ValueError("maxvol needs a 2-D matrix")
    n, r = B.shape
    rows = independent_rows(B, rcond)
    k = len(rows)
    if k == 0:
        return rows
    Y = B if k == r else _row_space(B, rows)
    rows = rows.copy()
    for _ in range(8):  # refresh C from scratch against drift of the rank-1 updates
        C = _coefficients(Y[rows], Y)
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
        if np.abs(_coefficients(Y[rows], Y)).max() <= 1.0 + tol:
            break
    return rows


def coefficients(rows: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    """b A^-1 for each row b of `rows` (m x r), given A^-1 (r x r)."""
    return np.asarray(rows, dtype=np.float64) @ inverse


def greedy_insert(active: np.ndarray, candidates: np.ndarray, threshold: float = 1.0 + 1e-9,
                  max_swaps: int | None = None, rcond: float = RCOND) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Greedily swap candidate rows into the active set `active` (r x r) while some candidate has
    a coefficient |c_j| > threshold (each swap multiplies |det| by that factor).

    A singular `active` is accepted: its dependent slots are filled first, each with the
    candidate farthest from the span of the independent active rows (the largest volume gain);
    the swaps then run in the row space of the independent slots.

    Returns the new active matrix and the list of swaps (candidate row index, active slot)."""
    A = np.array(active, dtype=np.float64)
    R = np.asarray(candidates, dtype=np.float64)
    swaps: list[tuple[int, int]] = []
    if R.size == 0 or A.size == 0:
        return A, swaps
    r = A.shape[0]
    R = R.reshape(-1, A.shape[1])
    limit = max_swaps if max_swaps is not None else 10 * max(len(R), r) + 100
    scale = max(float(np.abs(A).max()), float(np.abs(R).max()), 1e-300)
    # fill the slots of a rank-deficient active set
    while len(swaps) < limit:
        ind = independent_rows(A, rcond)
        if len(ind) == r:
            break
        if len(ind):
            Q, _ = np.linalg.qr(A[ind].T)
            resid = R - (R @ Q) @ Q.T
        else:
            resid = R
        dist = np.sqrt(np.sum(resid ** 2, axis=1))
        i = int(np.argmax(dist))
        if dist[i] <= rcond * scale:
            break
        j = int(np.setdiff1d(np.arange(r), ind)[0])
        A[j] = R[i]
        swaps.append((i, j))
    slots = independent_rows(A, rcond)
    if len(slots) == 0 or len(swaps) >= limit:
        return A, swaps
    if len(slots) == r:
        slots = np.arange(r)
        Ak, Rk = A, R
    else:
        Q, _ = np.linalg.qr(A[slots].T)
        Ak, Rk = A[slots] @ Q, R @ Q
    C = _coefficients(Ak, Rk)
    while len(swaps) < limit:
        i, j = np.unravel_index(np.argmax(np.abs(C)), C.shape)
        if abs(C[i, j]) <= threshold:
            break
        A[slots[j]] = R[i]
        swaps.append((int(i), int(slots[j])))
        # C' = C - C[:, j] (c_i - e_j) / c_ij  for the replaced basis row
        ci = C[i, :].copy()
        ci[j] -= 1.0
        C -= np.outer(C[:, j] / C[i, j], ci)
    return A, swaps
