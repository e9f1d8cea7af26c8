"""The audit's pure parts: the error model, its confidence bound and the sample."""

from __future__ import annotations

import math

import numpy as np
import pytest

from csp.campaign.audit import audit_sample, error_model, miss_probability, sample_size, upper_sigma


def test_composition_linear_error_does_not_count():
    """A shift of each element's chemical potential moves no energy above the hull: removed."""
    rng = np.random.default_rng(0)
    comps = [{"Cu": int(k), "Pd": int(8 - k)} for k in rng.integers(0, 9, 40)]
    x = np.array([c["Cu"] / 8 for c in comps])
    noise = rng.normal(0.0, 0.002, len(comps))
    em = error_model(0.030 * x - 0.010 * (1 - x) + noise, comps, ["Cu", "Pd"])
    assert em.mu["Cu"] == pytest.approx(0.030, abs=0.002) and em.mu["Pd"] == pytest.approx(-0.010, abs=0.002)
    assert em.sigma_estimate == pytest.approx(np.std(noise), rel=0.15)
    assert em.rmse > 5 * em.sigma_estimate
    assert em.shift({"Cu": 3, "Pd": 1}) == pytest.approx(0.75 * em.mu["Cu"] + 0.25 * em.mu["Pd"])
    few = error_model([0.01, 0.02], [{"Cu": 1}, {"Pd": 1}], ["Cu", "Pd"])   # too few points: no fit
    assert few.mu == {"Cu": 0.0, "Pd": 0.0} and few.sigma_estimate == pytest.approx(math.sqrt(0.00025))


def test_upper_bound_of_sigma():
    assert upper_sigma(1.0, 30) == pytest.approx(1.21, abs=0.01)
    assert upper_sigma(1.0, 10) == pytest.approx(1.43, abs=0.01)
    assert upper_sigma(1.0, 1000) < 1.05
    assert upper_sigma(1.0, 0) == float("inf")
    # coverage: the bound is above the true σ in ~90 % of samples of 20
    rng = np.random.default_rng(1)
    hits = [upper_sigma(float(np.sqrt(np.mean(rng.normal(0, 1, 20) ** 2))), 20) >= 1.0 for _ in range(2000)]
    assert 0.87 < np.mean(hits) < 0.93
    assert miss_probability(4.0) == pytest.approx(0.00234, abs=1e-5)


def test_audit_sample_takes_vertices_then_a_seeded_draw_near_the_hull():
    above = {i: (0.0 if i in (1, 7) else 0.001 * i) for i in range(1, 101)}
    ids = audit_sample(above, n=10, within=0.03, exclude={7}, seed=3)
    assert 1 in ids and 7 not in ids
    assert len(ids) == 11                                  # one vertex + 10 drawn
    assert all(above[i] <= 0.03 for i in ids)             # enough candidates near the hull
    assert ids == audit_sample(above, n=10, within=0.03, exclude={7}, seed=3)
    assert ids != audit_sample(above, n=10, within=0.03, exclude={7}, seed=4)
    wide = audit_sample(above, n=50, within=0.03, exclude=set(), seed=0)
    assert len(wide) == 52 and sum(above[i] > 0.03 for i in wide) == 50 - 28   # beyond `within` once exhausted
    assert sample_size(5000, 20, 0.02) == 100 and sample_size(300, 20, 0.02) == 20 and sample_size(8, 20, 0.02) == 8
    assert sample_size(400_000, 20, 0.02, 200) == 200 and sample_size(400_000, 20, 0.02) == 8000


def test_audit_sample_measures_every_stratum_near_the_hull():
    """A minority source near the hull (3 prototypes among 200 enumerated structures) is audited
    even when a uniform draw of 10 would most likely miss it; without strata the draw is as before."""
    above = {i: 0.0001 * i for i in range(1, 204)}
    strata = {i: ("prototype" if i in (50, 120, 170) else "enumerate/fcc") for i in above}
    ids = audit_sample(above, n=10, within=0.03, exclude=set(), seed=0, strata=strata)
    assert {50, 120, 170} <= set(ids) and len(ids) == 10
    assert audit_sample(above, n=10, within=0.03, exclude=set(), seed=0) == \
        audit_sample(above, n=10, within=0.03, exclude=set(), seed=0, strata={i: "x" for i in above})
