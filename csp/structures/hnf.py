"""Hermite and Smith normal forms of 3×3 integer matrices (superlattices of a parent lattice).

Column convention (Hart & Forcade, PRB 77, 224115 (2008)): the parent lattice vectors are the
columns of A, a superlattice of index n is B = A·H with H an integer matrix, det H = n. Two
matrices H, H' give the same superlattice iff H' = H·U with U unimodular; the lower-triangular
Hermite normal form

    H = [[a, 0, 0], [b, c, 0], [d, e, f]],  a·c·f = n,  0 ≤ b < c,  0 ≤ d < f,  0 ≤ e < f

is the unique representative. The Smith normal form L·H·R = S = diag(s1, s2, s3), s1 | s2 | s3,
L and R unimodular, gives the quotient group Z^3 / H·Z^3 ≅ Z_s1 × Z_s2 × Z_s3: the parent lattice
point p (integer coordinates) belongs to the coset with label L·p mod S.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
from numba import njit

Matrix = np.ndarray  # 3×3 int64


@njit(cache=True)
def _egcd(x: int, y: int):
    if x != 0 and y % x == 0:
        return abs(x), (1 if x > 0 else -1), 0
    old_r, r = x, y
    old_s, s = 1, 0
    old_t, t = 0, 1
    while r != 0:
        q = old_r // r
        old_r, r = r, old_r - q * r
        old_s, s = s, old_s - q * s
        old_t, t = t, old_t - q * t
    if old_r < 0:
        return -old_r, -old_s, -old_t
    return old_r, old_s, old_t


@njit(cache=True)
def _hnf_batch(mats: np.ndarray) -> np.ndarray:
    """Column-style lower-triangular HNF of each non-singular (3, 3) matrix in mats (B, 3, 3)."""
    out = mats.copy()
    for b in range(out.shape[0]):
        h = out[b]
        for row, i, j in ((0, 0, 1), (0, 0, 2), (1, 1, 2)):
            x = h[row, i]
            y = h[row, j]
            if y == 0:
                continue
            g, u, v = _egcd(x, y)
            p, q = -(y // g), x // g
            for r in range(3):
                ci = h[r, i]
                cj = h[r, j]
                h[r, i] = u * ci + v * cj
                h[r, j] = p * ci + q * cj
        for k in range(3):
            if h[k, k] < 0:
                for r in range(3):
                    h[r, k] = -h[r, k]
        q = h[1, 0] // h[1, 1]
        for r in range(3):
            h[r, 0] -= q * h[r, 1]
        for k in range(2):
            q = h[2, k] // h[2, 2]
            for r in range(3):
                h[r, k] -= q * h[r, 2]
    return out


def hnfs_of_index(n: int) -> Iterator[Matrix]:
    """Every lower-triangular HNF of determinant n, in a fixed order (a, c, f, b, d, e)."""
    for a in range(1, n + 1):
        if n % a:
            continue
        for c in range(1, n // a + 1):
            if (n // a) % c:
                continue
            f = n // (a * c)
            for b in range(c):
                for d in range(f):
                    for e in range(f):
                        yield np.array([[a, 0, 0], [b, c, 0], [d, e, f]], dtype=np.int64)


def hermite_normal_form(m: Matrix) -> Matrix:
    """Lower-triangular column-style HNF of a non-singular integer 3×3 matrix (H = M·U)."""
    h = [[int(x) for x in row] for row in np.asarray(m)]

    def col_op(i: int, j: int, p: int, q: int, r: int, s: int) -> None:
        # columns (i, j) <- (p*ci + q*cj, r*ci + s*cj) for all rows
        for row in h:
            x, y = row[i], row[j]
            row[i], row[j] = p * x + q * y, r * x + s * y

    def clear(row: int, i: int, j: int) -> None:
        # make h[row][j] == 0 by extended Euclid on columns i, j (unimodular)
        x, y = h[row][i], h[row][j]
        if y == 0:
            return
        g, u, v = _ext_gcd(x, y)
        # new ci = u*ci + v*cj (entry g); new cj = -(y/g)*ci + (x/g)*cj (entry 0)
        col_op(i, j, u, v, -(y // g), x // g)

    clear(0, 0, 1)
    clear(0, 0, 2)
    clear(1, 1, 2)
    for k in range(3):
        if h[k][k] < 0:
            for row in h:
                row[k] = -row[k]
    if h[0][0] == 0 or h[1][1] == 0 or h[2][2] == 0:
        raise ValueError("singular matrix has no Hermite normal form")
    # reduce column 0 by column 1 (entry b), then columns 0, 1 by column 2 (entries d, e)
    q = h[1][0] // h[1][1]
    for row in h:
        row[0] -= q * row[1]
    for k in (0, 1):
        q = h[2][k] // h[2][2]
        for row in h:
            row[k] -= q * row[2]
    return np.array(h, dtype=np.int64)


def _ext_gcd(x: int, y: int) -> tuple[int, int, int]:
    """(g, u, v) with u*x + v*y = g = gcd(x, y) ≥ 0; (|x|, ±1, 0) when x divides y."""
    if x != 0 and y % x == 0:
        return abs(x), (1 if x > 0 else -1), 0
    old_r, r = x, y
    old_s, s = 1, 0
    old_t, t = 0, 1
    while r:
        q = old_r // r
        old_r, r = r, old_r - q * r
        old_s, s = s, old_s - q * s
        old_t, t = t, old_t - q * t
    if old_r < 0:
        old_r, old_s, old_t = -old_r, -old_s, -old_t
    return old_r, old_s, old_t


def smith_normal_form(h: Matrix) -> tuple[Matrix, Matrix, Matrix]:
    """(S, L, R) with L·H·R = S = diag(s1, s2, s3), s1 | s2 | s3, s_i > 0, L and R unimodular."""
    s = [[int(x) for x in row] for row in np.asarray(h)]
    left = [[int(i == j) for j in range(3)] for i in range(3)]
    right = [[int(i == j) for j in range(3)] for i in range(3)]

    def row_comb(i: int, j: int, p: int, q: int, r: int, t: int) -> None:
        for mat in (s, left):
            a, b = mat[i], mat[j]
            mat[i] = [p * x + q * y for x, y in zip(a, b)]
            mat[j] = [r * x + t * y for x, y in zip(a, b)]

    def col_comb(i: int, j: int, p: int, q: int, r: int, t: int) -> None:
        for mat in (s, right):
            for row in mat:
                x, y = row[i], row[j]
                row[i], row[j] = p * x + q * y, r * x + t * y

    for k in range(3):
        while True:
            # move a non-zero entry of the trailing block with smallest |value| to (k, k)
            entries = [(abs(s[i][j]), i, j) for i in range(k, 3) for j in range(k, 3) if s[i][j]]
            if not entries:
                raise ValueError("singular matrix has no Smith normal form")
            _, i, j = min(entries)
            if i != k:
                s[i], s[k] = s[k], s[i]
                left[i], left[k] = left[k], left[i]
            if j != k:
                for mat in (s, right):
                    for row in mat:
                        row[j], row[k] = row[k], row[j]
            # clear column k below and row k to the right with gcd steps
            for i in range(k + 1, 3):
                if s[i][k]:
                    g, u, v = _ext_gcd(s[k][k], s[i][k])
                    a, b = s[k][k] // g, s[i][k] // g
                    row_comb(k, i, u, v, -b, a)
            for j in range(k + 1, 3):
                if s[k][j]:
                    g, u, v = _ext_gcd(s[k][k], s[k][j])
                    a, b = s[k][k] // g, s[k][j] // g
                    col_comb(k, j, u, v, -b, a)
            if any(s[i][k] for i in range(k + 1, 3)):
                continue
            # divisibility: the pivot must divide every entry of the trailing block
            bad = [(i, j) for i in range(k + 1, 3) for j in range(k + 1, 3) if s[i][j] % s[k][k]]
            if bad:
                i, _ = bad[0]
                row_comb(k, i, 1, 1, 0, 1)  # row k += row i, then repeat the elimination
                continue
            break
        if s[k][k] < 0:
            s[k] = [-x for x in s[k]]
            left[k] = [-x for x in left[k]]
    return (np.array(s, dtype=np.int64), np.array(left, dtype=np.int64),
            np.array(right, dtype=np.int64))


def integer_inverse(u: Matrix) -> Matrix:
    """Inverse of a unimodular integer matrix (exact)."""
    inv = np.rint(np.linalg.inv(np.asarray(u, dtype=float))).astype(np.int64)
    if not np.array_equal(inv @ u, np.eye(3, dtype=np.int64)):
        raise ValueError("matrix is not unimodular")
    return inv


def preserves_lattice(h: Matrix, rotations: np.ndarray) -> np.ndarray:
    """Boolean mask of the integer rotations W (fractional, parent basis) with H⁻¹·W·H integer."""
    hinv = np.linalg.inv(np.asarray(h, dtype=float))
    x = np.einsum("ij,njk,kl->nil", hinv, rotations.astype(float), h.astype(float))
    return np.all(np.abs(x - np.rint(x)) < 1e-8, axis=(1, 2))


def unique_hnfs(n: int, rotations: np.ndarray) -> list[Matrix]:
    """Representatives of the superlattices of index n inequivalent under the rotations W.

    `rotations` are the parent's point-group operations as integer matrices acting on
    fractional (column) coordinates of the parent cell. H' ~ H iff H' = HNF(W·H).
    """
    seen: set[bytes] = set()
    out: list[Matrix] = []
    rot = np.ascontiguousarray(rotations, dtype=np.int64)
    for h in hnfs_of_index(n):
        key = h.tobytes()
        if key in seen:
            continue
        out.append(h)
        for image in _hnf_batch(rot @ h):
            seen.add(image.tobytes())
    return out


def hnf_label(h: Matrix) -> tuple[int, int, int, int, int, int]:
    """The six free entries (a, b, c, d, e, f) of a lower-triangular HNF."""
    return (int(h[0, 0]), int(h[1, 0]), int(h[1, 1]), int(h[2, 0]), int(h[2, 1]), int(h[2, 2]))


def hnf_from_label(label: Sequence[int]) -> Matrix:
    """Inverse of `hnf_label`."""
    a, b, c, d, e, f = (int(x) for x in label)
    return np.array([[a, 0, 0], [b, c, 0], [d, e, f]], dtype=np.int64)
