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
    """Indices of the candidates to compute (in the order they were first chosen), at most `n`.

    Rows of the candidates (in the active set's mode) are swapped into a copy of the active set
    greedily, always taking the row with the largest coefficient |(b A^-1)_j| > threshold (each
    swap multiplies |det A| by it). Only rows that extrapolate w.r.t. the given active set
    (grade > threshold) take part. A candidate is selected if one of its rows is in the final
    active set; duplicates of a selected structure are then inside the span (grade 1) and are
    not selected."""
    active_set.check(mtp)
    data: FitData = _data(mtp, candidates, species)
    if data.n_configs == 0:
        return []
    rows, owner = _rows_with_owner(mtp, data, active_set.mode)
    # only rows that extrapolate w.r.t. the current active set carry new information
    keep = active_set.grades_of_rows(rows) > threshold
    rows, owner = rows[keep] * active_set.scale, owner[keep]
    if len(rows) == 0:
        return []
    A = active_set.matrix.copy()
    slot_owner = -2 * np.ones(A.shape[0], np.int64)  # -2: an original active row
    first_seen: dict[int, int] = {}
    chosen: list[int] = []
    while True:
        A, swaps = greedy_insert(A, rows, threshold=threshold, max_swaps=1)
        if not swaps:
            break
        i, j = swaps[0]
        slot_owner[j] = owner[i]
        first_seen.setdefault(int(owner[i]), len(first_seen))
        current = {int(o) for o in slot_owner if o >= 0}
        chosen = sorted(current, key=lambda o: first_seen[o])
        if n is not None and len(chosen) >= n:
            break
    return chosen[:n] if n is not None else chosen
