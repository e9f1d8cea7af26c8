"""The audit of a stage potential: its error measured where the screening judges.

After a stage's relaxations converge, reference single points at the MTP-relaxed geometry of a
sample of relaxed candidates, *held out* (none of them has training data), give the error model
of the potential on exactly the quantity the window is applied to. The sample (`audit_sample`):
every MTP-hull vertex not audited before, plus a seeded random draw of `max(min_size,
fraction × pool)` candidates within `range` eV/atom of the MTP hull. (Auditing the lowest
structure of every composition instead was measured to bias σ low by 1.6–2.7× on a Cu-Pt fcc ≤ 8
pool: those are the simplest, best-learned structures, and with ~25 compositions they filled
the whole sample.)

Error model (`error_model`): residuals e_i = E_MTP − E_ref per atom (eV/atom). A part of e that
is linear in the composition (a chemical-potential shift per element, fitted by least squares
when there are at least three points per element) moves every energy above the hull by exactly
zero, so it is removed; σ is the RMSE of what remains, raised to its 90 % upper confidence bound
for the sample size (`upper_sigma`). The window keeps candidates within `bound = window × σ` of
the MTP hull. The distance to the hull is a difference of a candidate's
and (a combination of) hull vertices' energies, whose error has a variance of about 2σ²; under a
normal model the probability that a true hull phase lies beyond the bound is
`0.5·erfc(window / 2)` (2.3e-3 at the default 4σ), reported with the bound.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Mapping, Sequence

import numpy as np


@dataclass(frozen=True)
class ErrorModel:
    """Audited error of a potential (eV/atom): `sigma` (90 % upper confidence bound of the RMSE
    after removing the composition-linear part; `sigma_estimate` the RMSE itself), `rmse` and
    `bias` (mean) of the raw residuals, `q95` and `max` of the absolute corrected residuals, the
    per-element shift `mu` removed, `n` points."""

    n: int
    sigma: float
    sigma_estimate: float
    rmse: float
    bias: float
    q95: float
    max: float
    mu: dict

    def as_dict(self) -> dict:
        return asdict(self)

    def shift(self, composition: Mapping[str, float]) -> float:
        """The composition-linear part of the error at `composition` (atom counts or fractions)."""
        total = sum(composition.values())
        return sum(self.mu.get(el, 0.0) * n / total for el, n in composition.items()) if total else 0.0


def fractions(composition: Mapping[str, float], elements: Sequence[str]) -> np.ndarray:
    total = float(sum(composition.values()))
    return np.array([composition.get(el, 0.0) / total for el in elements])


def error_model(errors: Sequence[float], compositions: Sequence[Mapping[str, float]],
                elements: Sequence[str]) -> ErrorModel:
    """The error model of residuals `errors` (MTP − reference, eV/atom) at `compositions`."""
    e = np.asarray(errors, dtype=float)
    n = len(e)
    if n == 0:
        return ErrorModel(0, float("nan"), float("nan"), float("nan"), float("nan"), float("nan"), float("nan"), {})
    X = np.array([fractions(c, elements) for c in compositions]).reshape(n, len(elements))
    mu = np.zeros(len(elements))
    if n >= 3 * len(elements):
        mu = np.linalg.lstsq(X, e, rcond=None)[0]
    resid = e - X @ mu
    a = np.abs(resid)
    estimate = float(np.sqrt(np.mean(resid ** 2)))
    return ErrorModel(n=n, sigma=upper_sigma(estimate, n), sigma_estimate=estimate, rmse=float(np.sqrt(np.mean(e ** 2))),
                      bias=float(e.mean()), q95=float(np.quantile(a, 0.95)), max=float(a.max()),
                      mu={el: float(m) for el, m in zip(elements, mu)})


def upper_sigma(sigma: float, n: int, confidence: float = 0.9) -> float:
    """One-sided upper confidence bound of an RMSE estimated from `n` normal residuals:
    σ·sqrt(n / χ²_{1−confidence}(n)) (×1.21 at n = 30, ×1.43 at n = 10): a small audit must not
    buy a narrow window by chance."""
    from scipy.stats import chi2

    if n <= 0 or not np.isfinite(sigma):
        return float("inf")
    return float(sigma * math.sqrt(n / chi2.ppf(1.0 - confidence, n)))


def miss_probability(window: float) -> float:
    """Probability (normal model, see module docstring) that a true hull phase lies beyond a
    window of `window` σ."""
    return 0.5 * math.erfc(window / 2.0)


def sample_size(pool: int, min_size: int, fraction: float, max_size: int | None = None) -> int:
    """Audit points per round: max(min_size, ceil(fraction × pool)), at most `max_size` and the pool."""
    n = max(min_size, int(math.ceil(fraction * pool)))
    return min(pool, n if max_size is None else min(n, max(max_size, min_size)))


STRATUM_MIN = 3   # audit points drawn first from every stratum (source and lattice) near the hull


def audit_sample(above: Mapping[int, float], n: int, within: float, exclude: set[int], seed: int,
                 strata: Mapping[int, str] | None = None) -> list[int]:
    """Ids to audit: every MTP-hull vertex (above <= 1e-9 eV/atom) not in `exclude` — a wrong
    vertex moves the whole window — plus a seeded random draw of `n` ids among those within
    `within` eV/atom of the hull (then beyond it, if that is exhausted): a representative sample
    of where the window is decided. With `strata` (id -> e.g. "enumerate/fcc", "prototype"),
    the draw first takes up to STRATUM_MIN ids of every stratum near the hull, so that a
    minority source (prototypes, random structures, another lattice) whose error differs from
    the majority's is measured too; the rest of the draw is uniform. Sorted.

    `above`: id -> eV/atom above the MTP hull (finite for usable energies)."""
    ids = sorted(i for i, d in above.items() if np.isfinite(d) and i not in exclude)
    vertices = [i for i in ids if above[i] <= 1e-9]
    rest = [i for i in ids if above[i] > 1e-9]
    rng = np.random.default_rng(seed)
    near = [i for i in rest if above[i] <= within]
    picked: list[int] = []
    if strata is not None:
        groups: dict[str, list[int]] = {}
        for i in near:
            groups.setdefault(strata.get(i, ""), []).append(i)
        if len(groups) > 1:
            for name in sorted(groups):
                members = groups[name]
                for k in rng.permutation(len(members))[:STRATUM_MIN]:
                    if len(picked) < n:
                        picked.append(members[int(k)])
    chosen = set(picked)
    for pool in ([i for i in near if i not in chosen], [i for i in rest if above[i] > within]):
        for k in rng.permutation(len(pool)):
            if len(picked) >= n:
                break
            picked.append(pool[int(k)])
    return sorted(set(vertices) | set(picked))
