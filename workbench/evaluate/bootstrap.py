"""Bootstrap confidence intervals of mean per-query metrics and paired system comparisons.

Both are seeded (``numpy.random.default_rng(seed)``) and vectorised: the
resamples are drawn in blocks of a few million indices, each block reduced
with one numpy call, so memory stays bounded and no Python loop runs per
resample or per query. The same seed, data and ``n_resamples`` give the same
numbers on every machine.

* :func:`bootstrap_ci`: percentile interval of the mean (Efron), over the
  queries where the metric is defined (NaN per-query values are dropped).
* :func:`paired_comparison`: for two systems scored on the same queries, the
  mean difference ``b - a``, a paired-bootstrap percentile interval of it and a
  two-sided p-value, either from a paired randomisation (sign-flip) test
  (default; Smucker, Allan & Carterette 2007 recommend it for IR) or from the
  bootstrap under the null (differences re-centred at 0).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import overload

import numpy as np

from workbench.errors import EvaluationError

_BLOCK = 4_000_000  # indices drawn per block: bounds memory at ~32 MB


@dataclass(frozen=True)
class Interval:
    """Mean of a per-query metric with its bootstrap interval."""

    mean: float
    low: float
    high: float
    n: int
    confidence: float

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PairedResult:
    """Difference ``b - a`` of two systems on the same queries."""

    metric: str
    name_a: str
    name_b: str
    mean_a: float
    mean_b: float
    diff: float
    low: float
    high: float
    p_value: float
    n: int
    confidence: float
    method: str

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self, digits: int = 3) -> str:
        """One sentence for a report, e.g. "B beats A on ndcg@10 by 0.031 (95% CI …)"."""

        def f(x: float, sign: str = "") -> str:
            # round first and add 0.0 so that -0.0001 prints as 0.000, not -0.000
            return f"{round(x, digits) + 0.0:{sign}.{digits}f}"

        pct = f"{self.confidence * 100:g}%"
        ci = f"{pct} CI {f(self.low)} to {f(self.high)}"
        tail = f"({ci}, p={self.p_value:.{max(digits, 3)}f}, n={self.n} queries, {self.method})"
        # A verdict needs both: the interval excludes 0 and the test rejects at 1 - confidence.
        significant = self.p_value < 1 - self.confidence
        if significant and self.low > 0:
            verdict = f"{self.name_b} beats {self.name_a} on {self.metric} by {f(self.diff)}"
        elif significant and self.high < 0:
            verdict = f"{self.name_a} beats {self.name_b} on {self.metric} by {f(-self.diff)}"
        else:
            verdict = (
                f"no clear difference between {self.name_b} and {self.name_a} on {self.metric}: "
                f"{f(self.diff, '+')}"
            )
        return f"{verdict} {tail}"


def _check(values: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise EvaluationError(f"{name} has shape {arr.shape}: expected one value per query (1-d)")
    if np.isinf(arr).any():
        raise EvaluationError(f"{name} holds infinite values: expected finite per-query metrics")
    return arr


def _check_params(n_resamples: int, confidence: float) -> None:
    if not isinstance(n_resamples, int | np.integer) or n_resamples < 1:
        raise EvaluationError(f"n_resamples={n_resamples!r}: expected a positive integer")
    if not 0 < confidence < 1:
        raise EvaluationError(f"confidence={confidence!r}: expected a value between 0 and 1")


def _resampled_means(values: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    n = values.size
    per_block = max(1, _BLOCK // n)
    out = np.empty(n_resamples)
    for start in range(0, n_resamples, per_block):
        b = min(per_block, n_resamples - start)
        idx = rng.integers(0, n, size=(b, n))
        out[start : start + b] = values[idx].mean(axis=1)
    return out


def _interval(means: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


@overload
def bootstrap_ci(
    per_query: np.ndarray,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval: ...


@overload
def bootstrap_ci(
    per_query: Mapping[str, np.ndarray],
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Interval]: ...


def bootstrap_ci(
    per_query: np.ndarray | Mapping[str, np.ndarray],
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval | dict[str, Interval]:
    """Percentile bootstrap interval of the mean of per-query values.

    ``per_query`` is one array, or a dict ``{"ndcg@10": array, ...}`` as returned
    by ``ranking_metrics(..., per_query=True)`` (then a dict of intervals comes
    back, each metric resampled with its own generator seeded from ``seed`` and
    the metric's name, so adding or removing a metric never changes the others'
    intervals).
    NaN values (queries where the metric is undefined) are dropped.
    """
    _check_params(n_resamples, confidence)
    if isinstance(per_query, Mapping):
        return {
            name: _one_interval(per_query[name], n_resamples, confidence, _child_seed(seed, name))
            for name in sorted(per_query)
        }
    return _one_interval(per_query, n_resamples, confidence, seed)


def _one_interval(per_query: np.ndarray, n_resamples: int, confidence: float,
                  seed: int | list[int]) -> Interval:
    values = _check(per_query, "per_query")
    values = values[~np.isnan(values)]
    if values.size == 0:
        raise EvaluationError("per_query holds no defined value: cannot bootstrap an empty mean")
    rng = np.random.default_rng(seed)
    means = _resampled_means(values, n_resamples, rng)
    low, high = _interval(means, confidence)
    return Interval(float(values.mean()), low, high, int(values.size), confidence)


def _child_seed(seed: int, name: str) -> list[int]:
    # A stable per-name stream: the seed plus the name's bytes (not Python's
    # randomised hash), so intervals do not depend on which other metrics exist.
    return [int(seed), *name.encode()]


def paired_comparison(
    a: np.ndarray,
    b: np.ndarray,
    *,
    metric: str = "metric",
    name_a: str = "A",
    name_b: str = "B",
    n_resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
    method: str = "randomization",
) -> PairedResult:
    """Compare system B with system A on the same queries (per-query values aligned).

    Queries where either value is NaN are dropped. Returns the mean difference
    ``b - a``, its paired-bootstrap percentile interval and a two-sided p-value:
    ``method="randomization"`` flips the sign of each query's difference at
    random (exchangeability under H0); ``method="bootstrap"`` resamples the
    re-centred differences. Both use ``(1 + #extreme) / (1 + n_resamples)`` so
    the p-value is never 0.
    """
    _check_params(n_resamples, confidence)
    if method not in ("randomization", "bootstrap"):
        raise EvaluationError(f"method={method!r}: expected 'randomization' or 'bootstrap'")
    a = _check(a, name_a)
    b = _check(b, name_b)
    if a.shape != b.shape:
        raise EvaluationError(
            f"{name_a} has {a.size} queries and {name_b} has {b.size}: "
            "a paired comparison needs both systems scored on the same queries, in the same order"
        )
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    if a.size == 0:
        raise EvaluationError(f"no query has a defined {metric} for both {name_a} and {name_b}")
    d = b - a
    observed = float(d.mean())
    rng = np.random.default_rng(seed)
    boot = _resampled_means(d, n_resamples, rng)
    low, high = _interval(boot, confidence)
    null = _sign_flip_means(d, n_resamples, rng) if method == "randomization" else None
    if null is None:
        null = _resampled_means(d - observed, n_resamples, rng)
    # A small tolerance so ties with the observed value count as extreme.
    extreme = np.count_nonzero(np.abs(null) >= abs(observed) - 1e-12)
    p = (1 + extreme) / (1 + n_resamples)
    return PairedResult(
        metric=metric,
        name_a=name_a,
        name_b=name_b,
        mean_a=float(a.mean()),
        mean_b=float(b.mean()),
        diff=observed,
        low=low,
        high=high,
        p_value=float(p),
        n=int(d.size),
        confidence=confidence,
        method=method,
    )


def _sign_flip_means(d: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    n = d.size
    per_block = max(1, _BLOCK // n)
    out = np.empty(n_resamples)
    for start in range(0, n_resamples, per_block):
        blk = min(per_block, n_resamples - start)
        signs = rng.integers(0, 2, size=(blk, n), dtype=np.int8) * 2 - 1
        out[start : start + blk] = signs @ d / n
    return out
