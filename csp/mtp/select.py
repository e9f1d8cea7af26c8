"""Greedy MaxVol selection of candidate structures for reference calculations: the candidates
whose rows most enlarge the volume |det A| of the active set (MLIP's `select-add`)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from csp.mtp.fit_data import FitData
from csp.mtp.grade import ActiveSet, _data, _rows_with_owner
from csp.mtp.maxvol import greedy_insert
from csp.mtp.potential import MTP


def select(mtp: MTP, active_set: ActiveSet, candidates: Sequence, n: int | None = None, *,
           species: Sequence[str] | None = None, threshold: float = 1.0 + 1e-6) -> list[int]:
    """Indices of the candidates to compute (in the order they were chosen), at most `n`.

    Greedy over structures: the candidate owning the row with the largest coefficient
    |(b A^-1)_j| > threshold w.r.t. the current active set A (the largest factor by which one
    swap multiplies |det A|) is chosen, then all its rows (its neighbourhoods, in that mode)
    are swapped into A while any still exceeds the threshold, as it will be computed whole;
    repeat. Only rows that extrapolate w.r.t. the given active set (grade > threshold) take
    part. So duplicates and supercells of a chosen structure are inside the span afterwards
    (grade <= 1) and are not chosen, and a structure identical to a training structure of the
    active set (or a supercell of one) grades <= 1 and is never chosen. Total: rank-deficient
    active sets and candidate sets (duplicates, fewer rows than columns) are handled by
    `greedy_insert`."""
    active_set.check(mtp)
    if n is not None and n < 1:
        return []
    if not isinstance(candidates, FitData) and len(candidates) == 0:
        return []
    data: FitData = _data(mtp, candidates, species)
    if data.n_configs == 0:
        return []
    rows, owner = _rows_with_owner(mtp, data, active_set.mode, active_set.coefficients)
    # only rows that extrapolate w.r.t. the current active set carry new information
    keep = active_set.grades_of_rows(rows) > threshold
    rows, owner = rows[keep] * active_set.scale, owner[keep]
    if len(rows) == 0:
        return []
    A = active_set.matrix.copy()
    pool = np.ones(len(rows), dtype=bool)
    chosen: list[int] = []
    while n is None or len(chosen) < n:
        idx = np.flatnonzero(pool)
        if len(idx) == 0:
            break
        _, swaps = greedy_insert(A, rows[idx], threshold=threshold, max_swaps=1)
        if not swaps:
            break
        best = int(owner[idx[swaps[0][0]]])
        # the whole structure will be computed: all its rows join the active set
        mine = owner == best
        A, _ = greedy_insert(A, rows[mine], threshold=threshold)
        pool &= ~mine
        chosen.append(best)
    return chosen
