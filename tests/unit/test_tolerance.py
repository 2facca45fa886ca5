"""Comparing metrics documents: identical, within tolerance, outside, and the messages that say so."""

from __future__ import annotations

import math

import pytest

from workbench.errors import EvaluationError
from workbench.evaluate.tolerance import (
    DEFAULT_TOLERANCES,
    Tolerance,
    compare_metrics,
    flatten,
    tolerance_for,
)


def test_flatten_names_every_leaf():
    doc = {"a": {"b": 1, "c": [0.5, {"d": None}]}, "e": "x", "f": True}
    assert flatten(doc) == {"a.b": 1, "a.c.0": 0.5, "a.c.1.d": None, "e": "x", "f": True}
    with pytest.raises(EvaluationError, match="'a' holds a set"):
        flatten({"a": {1, 2}})


def test_first_matching_rule_wins():
    rules = (Tolerance("*.popularity.*", 1e-4, "untrained"), Tolerance("*", 0.05, "trained"))
    assert tolerance_for("catalog.popularity.ndcg@10", rules).abs == 1e-4
    assert tolerance_for("catalog.bpr.ndcg@10", rules).abs == 0.05
    with pytest.raises(EvaluationError, match="no tolerance matches metric 'x'"):
        tolerance_for("x", (Tolerance("y", 0, "only y"),))


@pytest.mark.parametrize("bad", [-1.0, math.nan])
def test_a_tolerance_must_be_a_non_negative_number(bad):
    with pytest.raises(EvaluationError, match="expected a value >= 0"):
        Tolerance("*", bad, "x")


def test_compare_sorts_each_metric_into_a_verdict():
    a = {"m": {"ndcg@10": 0.50, "recall@10": 0.40, "mrr@10": 0.9}, "name": "text", "only_a": 1, "n": 64}
    b = {"m": {"ndcg@10": 0.50, "recall@10": 0.43, "mrr@10": 0.7}, "name": "image", "only_b": 2, "n": 64}
    result = compare_metrics(a, b, (Tolerance("*", 0.05, "trained"),), names=("ref", "run"))
    status = {r.key: r.status for r in result.rows}
    assert status == {"m.ndcg@10": "identical", "m.recall@10": "within", "m.mrr@10": "outside",
                      "name": "differs", "only_a": "only_a", "only_b": "only_b", "n": "identical"}
    assert not result.ok
    assert [r.key for r in result.outside()] == ["m.mrr@10", "name", "only_a", "only_b"]
    line = next(r for r in result.rows if r.key == "m.mrr@10").describe("ref", "run")
    assert line == ("m.mrr@10: ref 0.9 vs run 0.7 (difference -0.2, tolerance 0.05, rule '*'): outside")
    assert "m.recall@10" in result.table(only_changed=True) and "m.ndcg@10" not in result.table(only_changed=True)
    assert result.summary() == "7 metrics: 1 differs, 2 identical, 1 only a, 1 only b, 1 outside, 1 within"


def test_ignored_keys_and_types_that_must_match():
    result = compare_metrics({"x": {"summary": "beats by 0.013"}, "flag": True, "v": 1},
                             {"x": {"summary": "beats by 0.014"}, "flag": 1, "v": 1.0},
                             ignore=("*.summary",))
    status = {r.key: r.status for r in result.rows}
    assert status == {"flag": "differs", "v": "identical"}  # a boolean is no number; 1 == 1.0


def test_default_rules_hold_identity_exactly_and_trained_floats_loosely():
    exact = ("data.sha256.products.parquet", "config.seed", "notebooks.01_catalog.counts.products",
             "results.queries.n_queries", "results.queries.intervals.reranked.ndcg@10.n")
    for key in exact:
        assert tolerance_for(key, DEFAULT_TOLERANCES).abs == 0.0, key
    assert tolerance_for("notebooks.05_rankers.catalog.popularity.ndcg@10", DEFAULT_TOLERANCES).abs == 1e-4
    assert tolerance_for("notebooks.03_fusion.ndcg@10.text", DEFAULT_TOLERANCES).abs == 0.05
    assert tolerance_for("notebooks.06_scann_index.chosen.reorder", DEFAULT_TOLERANCES).abs == math.inf
