"""The MTP as the batched relaxation's evaluator (`csp.relax.Evaluator`) and grader.

One `calc_efs_batch` call per optimiser step for the whole batch; the grader of the same step
reuses the per-site basis values of that evaluation. Energies eV, forces eV/Å, stresses eV/Å³.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from csp.relax import Evaluator, Grader


def mtp_evaluator(mtp, site_basis: Callable[[np.ndarray, np.ndarray, np.ndarray], None] | None = None) -> Evaluator:
    """An Evaluator for a `csp.mtp.MTP`: one `calc_efs_batch` call per step for the whole batch.

    Structures are periodic in 3D; types index the potential's species. With `site_basis`, every
    call also hands (positions, offsets, per-site scalar basis values) to it — the by-product the
    extrapolation grade of the same step needs."""
    from csp.mtp.evaluate import Batch, calc_efs_batch

    def evaluate(cells, positions, types, offsets):
        batch = Batch(cells=cells, pbc=np.ones((len(cells), 3), dtype=bool), positions=positions,
                      types=types, offsets=offsets)
        res = calc_efs_batch(mtp, batch, check=False, site_basis=site_basis is not None)
        if site_basis is not None:
            site_basis(positions, offsets, res.site_basis)
        return res.energies, res.forces, res.stresses

    return evaluate


def grader(mtp, aset) -> Grader:
    """Per-structure extrapolation grade γ of flat batches (periodic cells)."""
    from csp.mtp.grade import grade_flat

    def grade(cells, positions, types, offsets):
        return grade_flat(mtp, aset, cells, positions, types, offsets)

    return grade


def graded_evaluator(mtp, aset) -> tuple[Evaluator, Grader]:
    """An (evaluator, grader) pair for the batched relaxation in which the grade reuses the
    per-site basis values of the energy evaluation of the same step (one pass over the
    neighbours per step instead of two). The grader falls back to a full evaluation when it is
    asked about positions other than those just evaluated."""
    from csp.mtp.grade import grade_from_site_basis

    last: dict[str, Any] = {}
    fallback = grader(mtp, aset)

    def keep(positions, offsets, basis):
        last.update(positions=positions, offsets=np.array(offsets), basis=basis)

    evaluate = mtp_evaluator(mtp, site_basis=keep)

    def grade(cells, positions, types, offsets):
        if positions is last.get("positions") and np.array_equal(offsets, last["offsets"]):
            return grade_from_site_basis(mtp, aset, last["basis"], types, offsets)
        return fallback(cells, positions, types, offsets)

    return evaluate, grade
