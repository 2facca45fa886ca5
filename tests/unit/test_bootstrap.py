"""Bootstrap intervals and paired comparisons: coverage, determinism, known answers, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.errors import EvaluationError
from workbench.evaluate.bootstrap import Interval, bootstrap_ci, paired_comparison


def test_interval_is_seeded_and_brackets_the_mean():
    rng = np.random.default_rng(1)
    x = rng.uniform(size=400)
    a = bootstrap_ci(x, n_resamples=1000, seed=3)
    b = bootstrap_ci(x, n_resamples=1000, seed=3)
    assert a == b
    assert a.low < a.mean < a.high
    assert a.mean == pytest.approx(x.mean())
    # Width close to the normal approximation 2 * 1.96 * sd / sqrt(n).
    expected = 2 * 1.96 * x.std(ddof=1) / np.sqrt(x.size)
    assert (a.high - a.low) == pytest.approx(expected, rel=0.15)
    assert bootstrap_ci(x, n_resamples=1000, seed=4) != a


def test_interval_coverage_close_to_nominal():
    # 200 samples from a known distribution: the 90% interval covers the true
    # mean in roughly 90% of them (binomial sd ~ 2%, so [0.83, 0.96] is safe).
    rng = np.random.default_rng(0)
    hits = 0
    for i in range(200):
        x = rng.exponential(size=60)
        ci = bootstrap_ci(x, n_resamples=400, confidence=0.9, seed=i)
        hits += ci.low <= 1.0 <= ci.high
    assert 0.83 <= hits / 200 <= 0.96


def test_dict_input_drops_nan_and_is_independent_of_other_metrics():
    x = np.array([0.1, np.nan, 0.5, 0.9, 0.3])
    res = bootstrap_ci({"ndcg@10": x, "recall@10": x * 2}, n_resamples=500)
    assert isinstance(res["ndcg@10"], Interval)
    assert res["ndcg@10"].n == 4
    alone = bootstrap_ci({"ndcg@10": x}, n_resamples=500)
    assert alone["ndcg@10"] == res["ndcg@10"]


def test_large_n_is_blocked_not_materialised():
    x = np.random.default_rng(0).uniform(size=200_000)
    ci = bootstrap_ci(x, n_resamples=50)
    assert ci.low < x.mean() < ci.high


def test_paired_comparison_detects_a_real_difference():
    rng = np.random.default_rng(0)
    a = rng.uniform(size=300)
    b = a + 0.05 + rng.normal(scale=0.05, size=300)
    res = paired_comparison(a, b, metric="ndcg@10", name_a="MF", name_b="SASRec", n_resamples=2000)
    assert res.diff == pytest.approx(float(np.mean(b - a)))
    assert 0 < res.low < res.diff < res.high
    assert res.p_value == pytest.approx(1 / 2001)  # nothing as extreme in 2000 sign flips
    s = res.summary()
    assert s.startswith("SASRec beats MF on ndcg@10 by 0.0")
    assert "95% CI" in s
    boot = paired_comparison(a, b, n_resamples=2000, method="bootstrap")
    assert boot.p_value < 0.01


def test_paired_comparison_no_difference():
    rng = np.random.default_rng(5)
    a = rng.uniform(size=200)
    b = a + rng.normal(scale=0.1, size=200)  # mean difference ~ 0
    res = paired_comparison(a, b, n_resamples=2000, seed=1)
    assert res.low < 0 < res.high
    assert res.p_value > 0.05
    assert res.summary().startswith("no clear difference")


def test_no_verdict_when_interval_and_test_disagree():
    from workbench.evaluate.bootstrap import PairedResult

    res = PairedResult(
        "ndcg@10", "A", "B", 0.1, 0.2, 0.1, 0.01, 0.2, 0.08, 50, 0.95, "randomization"
    )
    assert res.summary().startswith("no clear difference")  # CI excludes 0 but p = 0.08
    sig = PairedResult(
        "ndcg@10", "A", "B", 0.1, 0.2, 0.1, 0.01, 0.2, 0.01, 50, 0.95, "randomization"
    )
    assert sig.summary().startswith("B beats A on ndcg@10 by 0.100")


def test_randomization_p_value_exact_on_tiny_sample():
    # d = (1, 1, 1): of the 8 sign patterns, 2 reach |mean| >= 1, so p -> 0.25.
    res = paired_comparison(np.zeros(3), np.ones(3), n_resamples=20000, seed=0)
    assert res.p_value == pytest.approx(0.25, abs=0.015)


def test_paired_bad_input():
    with pytest.raises(EvaluationError, match="same queries"):
        paired_comparison(np.zeros(3), np.zeros(4))
    with pytest.raises(EvaluationError, match="no query has a defined"):
        paired_comparison(np.array([np.nan]), np.array([1.0]))
    with pytest.raises(EvaluationError, match="method"):
        paired_comparison(np.zeros(3), np.zeros(3), method="t-test")
    with pytest.raises(EvaluationError, match="confidence"):
        bootstrap_ci(np.zeros(3), confidence=95)
    with pytest.raises(EvaluationError, match="no defined value"):
        bootstrap_ci(np.array([np.nan, np.nan]))
    with pytest.raises(EvaluationError, match="n_resamples"):
        bootstrap_ci(np.zeros(3), n_resamples=0)
