"""Ranking metrics: hand-computed values, equality with trec_eval and Recommenders, bad input."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workbench.errors import EvaluationError
from workbench.metrics import (
    coverage,
    intra_list_diversity,
    ranking_metrics,
    relevance_matrix,
    top_k_from_scores,
)

TREC = {
    "ndcg": "ndcg_cut_{k}",
    "precision": "P_{k}",
    "recall": "recall_{k}",
    "map": "map_cut_{k}",
    "hit_rate": "success_{k}",
}


@st.composite
def runs_and_qrels(draw, max_queries=8, max_items=30, max_len=14):
    """Random lists (unique items, -1 padded) and graded qrels (0..3, some queries unjudged)."""
    n_items = draw(st.integers(1, max_items))
    n_q = draw(st.integers(1, max_queries))
    width = draw(st.integers(0, max_len))
    ranked = np.full((n_q, width), -1, dtype=np.int64)
    rows, cols, vals = [], [], []
    for q in range(n_q):
        items = draw(
            st.lists(st.integers(0, n_items - 1), unique=True, max_size=min(width, n_items))
        )
        ranked[q, : len(items)] = items
        judged = draw(
            st.dictionaries(st.integers(0, n_items - 1), st.integers(0, 3), max_size=n_items)
        )
        for item, grade in judged.items():
            rows.append(q)
            cols.append(item)
            vals.append(grade)
    rel = sp.csr_matrix((np.array(vals, dtype=float), (rows, cols)), shape=(n_q, n_items))
    ks = tuple(sorted(draw(st.sets(st.integers(1, max_len + 3), min_size=1, max_size=3))))
    return ranked, rel, ks


def _trec(ranked, rel, k, measures):
    import pytrec_eval

    n_q = ranked.shape[0]
    qrel = {f"q{q}": {f"d{j}": int(rel[q, j]) for j in rel[q].indices} for q in range(n_q)}
    qrel = {q: d for q, d in qrel.items() if d}  # trec_eval needs judgments
    # Strictly decreasing scores: trec_eval re-sorts by score (ties by docno), so
    # scores must encode our order exactly. Truncate at k so recip_rank is mrr@k.
    run = {
        f"q{q}": {f"d{j}": float(100 - r) for r, j in enumerate(ranked[q, :k]) if j >= 0}
        for q in range(n_q)
    }
    run = {q: d for q, d in run.items() if d and q in qrel}
    if not run:
        return {}
    evaluator = pytrec_eval.RelevanceEvaluator(qrel, measures)
    return evaluator.evaluate(run)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(runs_and_qrels())
def test_equal_to_trec_eval(data):
    pytest.importorskip("pytrec_eval")
    ranked, rel, ks = data
    ours = ranking_metrics(ranked, rel, ks=ks, per_query=True)
    n_rel = np.diff(sp.csr_matrix(rel >= 1).indptr)
    for k in ks:
        measures = {
            f"ndcg_cut.{k}",
            f"P.{k}",
            f"recall.{k}",
            f"map_cut.{k}",
            f"success.{k}",
            "recip_rank",
        }
        trec = _trec(ranked, rel, k, measures)
        for q in range(ranked.shape[0]):
            if n_rel[q] == 0:
                # No relevant item: undefined, NaN (trec_eval reports 0 or drops the query).
                assert all(math.isnan(ours[f"{m}@{k}"][q]) for m in TREC)
                continue
            res = trec.get(f"q{q}")
            if res is None:  # empty list: trec_eval drops the query, we score it 0
                assert all(ours[f"{m}@{k}"][q] == 0.0 for m in (*TREC, "mrr"))
                continue
            for ours_name, trec_name in TREC.items():
                assert ours[f"{ours_name}@{k}"][q] == pytest.approx(
                    res[trec_name.format(k=k)], abs=1e-9
                )
            assert ours[f"mrr@{k}"][q] == pytest.approx(res["recip_rank"], abs=1e-9)


def _recommenders_frames(ranked, rel):
    pd = pytest.importorskip("pandas")
    rel = sp.csr_matrix(rel >= 1).multiply(rel).tocsr()
    rel.eliminate_zeros()
    coo = rel.tocoo()
    truth = pd.DataFrame({"userID": coo.row, "itemID": coo.col, "rating": coo.data.astype(float)})
    q, r = np.nonzero(ranked >= 0)
    pred = pd.DataFrame(
        {"userID": q, "itemID": ranked[q, r], "prediction": (1000.0 - r).astype(float)}
    )
    return truth, pred


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(runs_and_qrels(max_queries=6, max_items=20, max_len=10))
def test_equal_to_recommenders(data):
    """Recommenders averages over users present in both truth and predictions."""
    pe = pytest.importorskip("recommenders.evaluation.python_evaluation")
    ranked, rel, ks = data
    truth, pred = _recommenders_frames(ranked, rel)
    if truth.empty or pred.empty:
        return
    common = np.intersect1d(truth["userID"].unique(), pred["userID"].unique())
    if common.size == 0:
        return
    args = dict(
        col_user="userID", col_item="itemID", col_rating="rating", col_prediction="prediction"
    )
    for k in ks:
        ours = ranking_metrics(ranked, rel, ks=(k,), per_query=True, convention="recommenders")
        trec_map = ranking_metrics(ranked, rel, ks=(k,), per_query=True)[f"map@{k}"]

        def mean(values, common=common):
            return float(np.mean(values[common]))

        # Recommenders' ndcg_at_k outer-joins the *whole* truth table, so it
        # averages over every user with a relevant item (users without a list
        # score 0), as we do; its other measures average over common users only.
        judged = truth["userID"].unique()

        def mean_all(values, judged=judged):
            return float(np.mean(values[judged]))

        assert mean(ours[f"precision@{k}"]) == pytest.approx(
            pe.precision_at_k(truth, pred, k=k, **args), abs=1e-9
        )
        assert mean(ours[f"recall@{k}"]) == pytest.approx(
            pe.recall_at_k(truth, pred, k=k, **args), abs=1e-9
        )
        assert mean(ours[f"map@{k}"]) == pytest.approx(
            pe.map_at_k(truth, pred, k=k, **args), abs=1e-9
        )
        # Recommenders' `map` (divides by all relevant) is trec_eval's map_cut.
        assert mean(trec_map) == pytest.approx(pe.map(truth, pred, k=k, **args), abs=1e-9)
        assert mean_all(ours[f"ndcg@{k}"]) == pytest.approx(
            pe.ndcg_at_k(truth, pred, k=k, **args), abs=1e-9
        )
        for gain, score_type in (("linear", "raw"), ("exponential", "exp")):
            g = ranking_metrics(
                ranked, rel, ks=(k,), per_query=True, convention="recommenders", gain=gain
            )
            peer = pe.ndcg_at_k(truth, pred, k=k, score_type=score_type, **args)
            assert mean_all(g[f"ndcg@{k}"]) == pytest.approx(peer, abs=1e-9)


def test_hand_computed_graded_example():
    # One query, grades: item 0 -> 3, item 2 -> 1, item 5 -> 2; list [2, 4, 0]
    rel = sp.csr_matrix(([3.0, 1.0, 2.0], ([0, 0, 0], [0, 2, 5])), shape=(1, 6))
    ranked = np.array([[2, 4, 0]])
    m = ranking_metrics(ranked, rel, ks=(3,))
    dcg = 1 / math.log2(2) + 3 / math.log2(4)
    idcg = 3 / math.log2(2) + 2 / math.log2(3) + 1 / math.log2(4)
    assert m["ndcg@3"] == pytest.approx(dcg / idcg)
    assert m["precision@3"] == pytest.approx(2 / 3)
    assert m["recall@3"] == pytest.approx(2 / 3)
    assert m["mrr@3"] == 1.0
    assert m["map@3"] == pytest.approx((1 / 1 + 2 / 3) / 3)
    assert m["hit_rate@3"] == 1.0
    rec = ranking_metrics(ranked, rel, ks=(2,), convention="recommenders")
    assert rec["map@2"] == pytest.approx(1 / 2)  # one hit at rank 1, / min(3, 2)
    assert rec["ndcg@2"] == pytest.approx(1.0 / (1 + 1 / math.log2(3)))  # binary gain
    exp = ranking_metrics(ranked, rel, ks=(3,), gain="exponential")
    edcg = 1 / math.log2(2) + 7 / math.log2(4)
    eidcg = 7 + 3 / math.log2(3) + 1 / math.log2(4)
    assert exp["ndcg@3"] == pytest.approx(edcg / eidcg)


def test_queries_without_relevant_items_are_excluded_and_empty_lists_score_zero():
    rel = sp.csr_matrix(([1.0, 1.0, 0.0], ([0, 1, 2], [0, 1, 2])), shape=(3, 4))
    ranked = np.array([[0, 1], [-1, -1], [2, 3]])
    per = ranking_metrics(ranked, rel, ks=(2,), per_query=True)
    assert per["recall@2"][0] == 1.0
    assert per["recall@2"][1] == 0.0  # empty list, one relevant item
    assert math.isnan(per["recall@2"][2])  # only a grade-0 judgment: undefined
    assert ranking_metrics(ranked, rel, ks=(2,))["recall@2"] == pytest.approx(0.5)


def test_k_longer_than_the_lists_pads():
    rel = sp.csr_matrix(([1.0], ([0], [1])), shape=(1, 3))
    m = ranking_metrics(np.array([[1]]), rel, ks=(1, 5))
    assert m["precision@1"] == 1.0 and m["precision@5"] == pytest.approx(0.2)
    assert set(m) == {
        f"{n}@{k}"
        for n in ("ndcg", "recall", "precision", "map", "mrr", "hit_rate")
        for k in (1, 5)
    }


def test_min_relevance_threshold():
    rel = sp.csr_matrix(([1.0, 3.0], ([0, 0], [0, 1])), shape=(1, 2))
    assert ranking_metrics(np.array([[0, 1]]), rel, ks=(1,), min_relevance=2)["precision@1"] == 0.0


@pytest.mark.parametrize("k", [0, -3])
def test_bad_k(k):
    rel = sp.csr_matrix(np.ones((1, 2)))
    with pytest.raises(EvaluationError, match="cut-off k"):
        ranking_metrics(np.array([[0, 1]]), rel, ks=(k,))


def test_duplicate_items_rejected():
    rel = sp.csr_matrix(np.ones((2, 4)))
    with pytest.raises(EvaluationError, match=r"row 1 lists item 3 more than once"):
        ranking_metrics(np.array([[0, 1, 2], [3, 0, 3]]), rel)


def test_padding_in_the_middle_and_out_of_range_rejected():
    rel = sp.csr_matrix(np.ones((1, 4)))
    with pytest.raises(EvaluationError, match="padding"):
        ranking_metrics(np.array([[0, -1, 2]]), rel)
    with pytest.raises(EvaluationError, match="n_items=4"):
        ranking_metrics(np.array([[0, 4]]), rel)
    with pytest.raises(EvaluationError, match=">= 0, or -1"):
        ranking_metrics(np.array([[0, -2]]), rel)


def test_shape_mismatch_and_bad_grades_rejected():
    with pytest.raises(EvaluationError, match="one row per query"):
        ranking_metrics(np.array([[0]]), sp.csr_matrix(np.ones((2, 2))))
    with pytest.raises(EvaluationError, match="negative"):
        ranking_metrics(np.array([[0]]), sp.csr_matrix(np.array([[-1.0, 1.0]])))
    with pytest.raises(EvaluationError, match="none of the 1 queries"):
        ranking_metrics(np.array([[0]]), sp.csr_matrix((1, 2)))
    with pytest.raises(EvaluationError, match="convention"):
        ranking_metrics(np.array([[0]]), sp.csr_matrix(np.ones((1, 2))), convention="sklearn")


def test_top_k_from_scores_ties_exclusion_and_nan():
    scores = np.array([[0.5, 0.9, 0.9, 0.1], [1.0, 2.0, 3.0, 4.0]])
    top = top_k_from_scores(scores, 2)
    np.testing.assert_array_equal(top, [[1, 2], [3, 2]])  # tie 0.9/0.9: lower index first
    ex = sp.csr_matrix(([1, 1, 1], ([1, 1, 1], [1, 2, 3])), shape=(2, 4))
    np.testing.assert_array_equal(top_k_from_scores(scores, 3, exclude=ex)[1], [0, -1, -1])
    np.testing.assert_array_equal(top_k_from_scores(scores[:1], 6)[0], [1, 2, 0, 3, -1, -1])
    bad = scores.copy()
    bad[1, 2] = np.nan
    with pytest.raises(EvaluationError, match="row 1, item 2 is NaN"):
        top_k_from_scores(bad, 2)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_top_k_matches_full_stable_sort(seed):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 4, size=(5, 12)).astype(float)  # many ties
    k = int(rng.integers(1, 14))
    expected = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    got = top_k_from_scores(scores, k)
    np.testing.assert_array_equal(got[:, : expected.shape[1]], expected)


def test_coverage_and_diversity():
    ranked = np.array([[0, 1, -1], [1, 2, -1]])
    assert coverage(ranked, 5) == pytest.approx(3 / 5)
    assert coverage(ranked, 5, k=1) == pytest.approx(2 / 5)
    vecs = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    per = intra_list_diversity(ranked, vecs, per_query=True)
    assert per[0] == pytest.approx(1.0)  # orthogonal
    assert per[1] == pytest.approx(1 - 1 / math.sqrt(2))
    assert math.isnan(intra_list_diversity(np.array([[0, -1]]), vecs, per_query=True)[0])
    # Brute force on random lists.
    rng = np.random.default_rng(0)
    v = rng.normal(size=(20, 4))
    r = np.stack([rng.permutation(20)[:6] for _ in range(7)])
    u = v / np.linalg.norm(v, axis=1, keepdims=True)
    brute = [np.mean([1 - u[a] @ u[b] for a in row for b in row if a != b]) for row in r]
    assert intra_list_diversity(r, v) == pytest.approx(np.mean(brute))


def test_relevance_matrix_from_qrels():
    qrels = pl.DataFrame(
        {
            "query_id": ["q1", "q1", "q9", "q2"],
            "item_id": ["b", "a", "a", "c"],
            "relevance": [2, 1, 3, 0],
        }
    )
    mat = relevance_matrix(qrels, ["q1", "q2"], ["a", "b", "c"])
    np.testing.assert_array_equal(mat.toarray(), [[1, 2, 0], [0, 0, 0]])
    with pytest.raises(EvaluationError, match="unknown queries, e.g. 'q9'"):
        relevance_matrix(qrels, ["q1", "q2"], ["a", "b", "c"], unknown_queries="raise")
    with pytest.raises(EvaluationError, match="items not in the catalog, e.g. 'c'"):
        relevance_matrix(qrels, ["q1", "q2"], ["a", "b"])
    binary = relevance_matrix(qrels.lazy(), ["q1"], ["a", "b", "c"], relevance_col=None)
    np.testing.assert_array_equal(binary.toarray(), [[1, 1, 0]])
