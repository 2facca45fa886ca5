"""Two-stage evaluation on a tiny hand-made catalog, with fake and real (exact) indexes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from workbench.errors import ConfigError, EvaluationError
from workbench.evaluate.system import (
    QueryTask,
    SystemConfig,
    evaluate_two_stage,
    explanation_weights,
    measure_latency,
    modality_breakdown,
    next_item_task,
    query_task,
    rerank,
    retrieve,
)

ITEMS = np.array([f"i{j}" for j in range(8)])


class FakeIndex:
    """Returns a fixed ranking per query (row of `order`), scores descending."""

    def __init__(self, item_ids, order):
        self.item_ids = np.asarray(item_ids)
        self.order = np.asarray(order)

    def search_indices(self, queries, k=10):
        n = np.asarray(queries).shape[0]
        rows = (
            self.order[:n, :k] if self.order.shape[0] >= n else np.tile(self.order[:1, :k], (n, 1))
        )
        return rows.copy(), np.tile(np.linspace(1.0, 0.1, k)[: rows.shape[1]], (n, 1)).astype(
            np.float32
        )


class FakeRanker:
    """Scores an item by a fixed per-item preference; users named 'anon' never appear."""

    def __init__(self, item_ids, pref):
        self.lookup = {i: p for i, p in zip(item_ids, pref, strict=True)}
        self.calls = []

    def score(self, user_ids, item_ids):
        self.calls.append(list(user_ids))
        return np.vectorize(self.lookup.get)(np.asarray(item_ids)).astype(np.float32)


def _task(user_ids=("u1", "u2"), relevance=None, exclude=None):
    rel = (
        relevance
        if relevance is not None
        else sp.csr_matrix(([1.0, 1.0], ([0, 1], [7, 6])), shape=(2, 8))
    )
    return QueryTask(
        "t", np.array(["q1", "q2"]), np.ones((2, 4), np.float32), rel, list(user_ids), exclude
    )


def test_retrieve_excludes_and_pads():
    index = FakeIndex(ITEMS, [[0, 1, 2, 3, 4, 5, 6, 7]])
    ex = sp.csr_matrix(([1.0, 1.0], ([0, 0], [1, 3])), shape=(1, 8))
    idx, scores = retrieve(index, np.ones((1, 4)), 4, ex)
    np.testing.assert_array_equal(idx, [[0, 2, 4, 5]])
    assert np.all(np.diff(scores[0]) < 0)
    short = FakeIndex(ITEMS, [[5, 6, -1, -1]])
    idx, scores = retrieve(short, np.ones((1, 4)), 4, None)
    np.testing.assert_array_equal(idx, [[5, 6, -1, -1]])
    assert np.isneginf(scores[0, 2:]).all()


def test_rerank_orders_by_ranker_and_leaves_anonymous_alone():
    cand = np.array([[0, 1, 2, -1], [0, 1, 2, 3]])
    scores = np.array([[3.0, 2.0, 1.0, -np.inf], [4.0, 3.0, 2.0, 1.0]])
    ranker = FakeRanker(ITEMS, [0.0, 1.0, 5.0, 9.0, 0, 0, 0, 0])
    out = rerank(ranker, ITEMS, cand, scores, ["u1", None], alpha=1.0)
    np.testing.assert_array_equal(out, [[2, 1, 0, -1], [0, 1, 2, 3]])
    assert ranker.calls == [["u1"]]  # the anonymous query never reached the ranker
    both = rerank(ranker, ITEMS, cand, scores, ["u1", None], alpha=1.0, rerank_anonymous=True)
    np.testing.assert_array_equal(both[1], [3, 2, 1, 0])
    np.testing.assert_array_equal(
        rerank(ranker, ITEMS, cand, scores, ["u1", "u2"], alpha=0.0), cand
    )
    # Blend: retrieval z = (1.22, 0, -1.22), ranker z = (-0.93, -0.46, 1.39) over the
    # three valid candidates; alpha 0.3 keeps retrieval's order, 0.6 gives (2, 0, 1).
    blend = rerank(ranker, ITEMS, cand[:1], scores[:1], ["u1"], alpha=0.3)
    np.testing.assert_array_equal(blend, [[0, 1, 2, -1]])
    blend = rerank(ranker, ITEMS, cand[:1], scores[:1], ["u1"], alpha=0.6)
    np.testing.assert_array_equal(blend, [[2, 0, 1, -1]])


def test_two_stage_metrics_and_comparison():
    # Retrieval puts the relevant item (7 for q1, 6 for q2) at rank 4 and 3; the ranker loves them.
    order = [[0, 1, 2, 7, 3, 4, 5, 6], [0, 1, 6, 2, 3, 4, 5, 7]]
    index = FakeIndex(ITEMS, order)
    ranker = FakeRanker(ITEMS, [0, 0, 0, 0, 0, 0, 8.0, 9.0])
    cfg = SystemConfig(k=2, ks=(2,), candidates=4, alpha=1.0, n_resamples=200)
    res = evaluate_two_stage(_task(), index, ranker, cfg, exact_index=FakeIndex(ITEMS, order))
    assert res.metrics["retrieval"]["recall@2"] == 0.0
    assert res.metrics["retrieval"]["candidate_recall"] == 1.0
    assert res.metrics["reranked"]["ndcg@2"] == 1.0
    assert res.metrics["reranked"]["mrr@2"] == 1.0
    assert res.metrics["exact_retrieval"]["ann_recall"] == 1.0
    np.testing.assert_array_equal(res.ranked[:, 0], [7, 6])
    assert res.comparison["diff"] == pytest.approx(1.0)
    # Two queries cannot make a significant difference: of the 4 sign flips, 2 are as
    # extreme, so p ~ 0.5 and the report says so despite the +1.0 difference.
    assert res.comparison["p_value"] == pytest.approx(0.5, abs=0.1)
    assert res.comparison["summary"].startswith("no clear difference")
    assert res.intervals["reranked"]["ndcg@2"]["low"] == 1.0
    assert res.per_query["query_id"].to_list() == ["q1", "q2"]
    d = res.to_dict()
    assert d["n_queries"] == 2 and d["config"]["candidates"] == 4


def test_ann_recall_below_one_when_the_index_misses_items():
    exact = FakeIndex(ITEMS, [[0, 1, 2, 3]] * 2)
    approx = FakeIndex(ITEMS, [[0, 1, 4, 5]] * 2)
    cfg = SystemConfig(k=2, ks=(2,), candidates=4, n_resamples=50)
    res = evaluate_two_stage(_task(), approx, None, cfg, exact_index=exact)
    assert res.metrics["exact_retrieval"]["ann_recall"] == 0.5


def test_two_stage_with_the_exact_index_and_a_bad_alignment():
    index_mod = pytest.importorskip("workbench.index")
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(8, 4)).astype(np.float32)
    index = index_mod.build_index(ITEMS, vecs, index_mod.IndexConfig(kind="exact", device="cpu"))
    queries = vecs[[3, 5]] + 0.01
    rel = sp.csr_matrix(([2.0, 3.0], ([0, 1], [3, 5])), shape=(2, 8))
    task = QueryTask("q", np.array(["a", "b"]), queries, rel, [None, None])
    res = evaluate_two_stage(
        task, index, None, SystemConfig(k=3, ks=(1, 3), candidates=5, n_resamples=50)
    )
    assert (
        res.metrics["reranked"]["ndcg@1"] == 1.0
    )  # nearest neighbour of a jittered item is itself
    bad = QueryTask("q", np.array(["a", "b"]), queries, sp.csr_matrix((2, 9)), [None, None])
    with pytest.raises(EvaluationError, match="9 item columns but the index holds 8"):
        evaluate_two_stage(bad, index)


def test_config_and_task_validation():
    with pytest.raises(ConfigError, match="candidates=5 < k=10"):
        SystemConfig(k=10, candidates=5)
    with pytest.raises(ConfigError, match="alpha"):
        SystemConfig(alpha=1.5)
    with pytest.raises(EvaluationError, match="expected equal"):
        QueryTask("x", np.array(["a"]), np.ones((2, 3)), sp.csr_matrix((1, 3)), [None])
    with pytest.raises(EvaluationError, match="no query has a relevant item"):
        evaluate_two_stage(
            _task(relevance=sp.csr_matrix((2, 8))), FakeIndex(ITEMS, [list(range(8))] * 2)
        )


def test_query_task_from_frames():
    queries = pl.DataFrame({"query_id": ["q2", "q1"], "text": ["x", "y"], "user_id": ["u1", None]})
    qrels = pl.DataFrame(
        {"query_id": ["q1", "q2", "q3"], "item_id": ["i1", "i2", "i3"], "relevance": [3, 1, 2]}
    )
    task = query_task(queries, qrels, np.ones((2, 4)), ITEMS)
    assert task.user_ids == ["u1", None]
    np.testing.assert_array_equal(task.relevance.toarray()[:, 1:3], [[0, 1], [3, 0]])


def test_next_item_task_builds_history_vectors():
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    ts = [t0 + timedelta(days=d) for d in range(5)]
    train = pl.DataFrame(
        {"user_id": ["a", "a", "a", "b"], "item_id": ["i0", "i1", "i2", "i3"], "timestamp": ts[:4]}
    )
    test = pl.DataFrame(
        {"user_id": ["a", "b", "c"], "item_id": ["i4", "i3", "i5"], "timestamp": ts[2:]}
    )
    vecs = np.eye(8, dtype=np.float32)
    task = next_item_task(train, test, ITEMS, vecs, last_n=2)
    assert task.query_ids.tolist() == ["a", "b"]
    assert task.info["users_without_history"] == 1  # user c
    np.testing.assert_allclose(task.vectors[0], (vecs[1] + vecs[2]) / 2)  # last two of a
    assert task.exclude[0].indices.tolist() == [0, 1, 2]
    assert task.relevance[0].indices.tolist() == [4]
    assert task.relevance[1].nnz == 0  # b's test item was seen in training: excluded, not relevant
    with pytest.raises(EvaluationError, match="item_id 'zz' is not in the index"):
        next_item_task(train, test.with_columns(pl.lit("zz").alias("item_id")), ITEMS, vecs)


def test_modality_breakdown_winners():
    task = _task(relevance=sp.csr_matrix(([1.0, 1.0], ([0, 1], [7, 6])), shape=(2, 8)))
    idx = {
        "text": FakeIndex(ITEMS, [[7, 0], [0, 1]]),  # wins q1
        "image": FakeIndex(ITEMS[::-1], [[5, 6], [1, 0]]),  # reversed ids: 1 -> i6, wins q2
        "fused": FakeIndex(ITEMS, [[7, 6], [6, 7]]),
    }
    frame, summary = modality_breakdown(task, idx, ITEMS, k=2)
    assert frame["winner"].to_list() == ["text", "image"]
    assert summary["wins"] == {"image": 1, "text": 1}
    assert summary["mean_ndcg"]["fused"] == 1.0


def test_latency_and_explanations():
    index = FakeIndex(ITEMS, [list(range(8))] * 2)
    lat = measure_latency(
        _task(),
        index,
        FakeRanker(ITEMS, np.arange(8.0)),
        SystemConfig(k=2, candidates=4),
        n_queries=2,
        encode=lambda i: np.ones(4),
        progress=False,
    )
    assert set(lat) == {"encode", "retrieve", "rerank", "total"}
    assert lat["total"]["n"] == 2
    assert lat["total"]["p50_ms"] <= lat["total"]["p95_ms"] <= lat["total"]["p99_ms"]
    weights = pl.DataFrame(
        {"item_id": ITEMS, "weight_text": [0.7] * 8, "weight_image": [0.3] * 7 + [None]}
    )
    exp = explanation_weights(np.array([[0, 7], [1, -1]]), weights)
    assert exp["mean_weight_text"] == pytest.approx(0.7)
    assert exp["mean_weight_image"] == pytest.approx(0.2)
    assert exp["lead_text"] == 1.0 and exp["lead_tie"] == 0.0
    even = pl.DataFrame({"item_id": ITEMS, "weight_text": [0.5] * 8, "weight_image": [0.5] * 8})
    tie = explanation_weights(np.array([[0, 1]]), even)
    assert (tie["lead_text"], tie["lead_image"], tie["lead_tie"]) == (0.0, 0.0, 1.0)


def test_system_run_headline_sections_and_figures():
    from workbench.experiments.system_run import SystemRun, SystemRunConfig

    order = [[0, 1, 2, 7, 3, 4, 5, 6], [0, 1, 6, 2, 3, 4, 5, 7]]
    cfg = SystemConfig(k=2, ks=(2,), candidates=4, alpha=1.0, n_resamples=100)
    ranker = FakeRanker(ITEMS, [0, 0, 0, 0, 0, 0, 8.0, 9.0])
    res = evaluate_two_stage(
        _task(), FakeIndex(ITEMS, order), ranker, cfg, exact_index=FakeIndex(ITEMS, order)
    )
    lat = {"queries": {"total": {"p50_ms": 1.0, "p95_ms": 2.0, "p99_ms": 3.0, "n": 2}}}
    run = SystemRun(
        SystemRunConfig(system=SystemConfig(k=2)), {"queries": res}, lat, None, {"wins": {"text": 2}}, "fake"
    )
    head = run.headline()
    row = head.filter((head["stage"] == "reranked") & (head["metric"] == "ndcg@2")).to_dicts()[0]
    assert (row["mean"], row["low"], row["high"], row["n"]) == (1.0, 1.0, 1.0, 2)
    sections = run.report_sections()
    titles = [t for t, _ in sections]
    assert titles[:2] == ["System under evaluation", "queries: metrics with 95% bootstrap intervals"]
    assert "queries: per-modality breakdown" in titles
    assert "<td>stage 2 ranker</td><td style='text-align:left'>fake</td>" in sections[0][1]
    assert "the ANN index finds 1.000 of the exact top 4" in sections[1][1]
    assert set(run.figures()) == {
        "queries: metrics per stage",
        "queries: latency",
        "queries: which modality wins",
    }
    assert run.results["info"]["ranker_source"] == "fake"
    assert "latency" not in str(run.results)


# --------------------------------------------------------------------------- the ranker notebook 07 uses


def _interactions(n_users: int = 12) -> pl.DataFrame:
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    rows = [(f"u{u}", f"i{(u + t) % 8}", t0 + timedelta(hours=t)) for u in range(n_users) for t in range(4)]
    return pl.DataFrame(rows, schema=["user_id", "item_id", "timestamp"], orient="row")


def _saved_popularity(work, split, catalog="cat-1"):
    from workbench.rankers import PopularityRanker

    ranker = PopularityRanker(device="cpu").fit(split.train, ITEMS)
    ranker.save(work / "rankers" / "popularity", catalog_fingerprint=catalog, split=split)
    return ranker


def test_system_run_loads_the_saved_ranker_and_names_it(tmp_path):
    from workbench.catalog.splits import leave_last_out
    from workbench.experiments.system_run import SystemRun, SystemRunConfig, _load_ranker
    from workbench.rankers import TrainingFingerprint

    split = leave_last_out(_interactions())
    saved = _saved_popularity(tmp_path, split)
    expect = TrainingFingerprint.of("cat-1", split, ITEMS)
    cfg = SystemRunConfig(ranker="popularity", device="cpu")
    ranker, source = _load_ranker(tmp_path, cfg, expect, split, ITEMS, np.eye(8, dtype=np.float32))
    assert source == "loaded <work>/rankers/popularity (trained in notebook 05, 0 epochs)"
    users = [f"u{u}" for u in range(12)]
    assert np.array_equal(ranker.score(users, ITEMS), saved.score(users, ITEMS))
    run = SystemRun(cfg, {}, {}, None, {}, source, ranker_fingerprint=ranker.fingerprint.to_dict())
    info = run.results["info"]
    assert info["ranker_source"] == source and info["ranker_fingerprint"] == expect.to_dict()


def test_system_run_refuses_a_ranker_trained_on_another_split_or_catalog(tmp_path):
    from workbench.catalog.splits import leave_last_out, stratified_split
    from workbench.errors import CheckpointError
    from workbench.experiments.system_run import SystemRunConfig, _load_ranker
    from workbench.rankers import TrainingFingerprint

    df = _interactions()
    split = leave_last_out(df)
    cfg = SystemRunConfig(ranker="popularity", device="cpu")
    vectors = np.eye(8, dtype=np.float32)
    other = stratified_split(df, 0.75, seed=3)
    _saved_popularity(tmp_path, other)
    with pytest.raises(CheckpointError, match=r"rankers/popularity: .*split stratified\(ratio=0.75, seed=3\) "
                                              r"\(this run: leave_last.*re-run notebook 05"):
        _load_ranker(tmp_path, cfg, TrainingFingerprint.of("cat-1", split, ITEMS), split, ITEMS, vectors)
    _saved_popularity(tmp_path, split, catalog="another-catalog")
    with pytest.raises(CheckpointError, match=r"catalog another-cata \(this run: cat-1\)"):
        _load_ranker(tmp_path, cfg, TrainingFingerprint.of("cat-1", split, ITEMS), split, ITEMS, vectors)


def test_system_run_fits_a_ranker_only_when_none_was_saved(tmp_path):
    from workbench.catalog.splits import leave_last_out
    from workbench.experiments.system_run import SystemRunConfig, _load_ranker
    from workbench.rankers import PopularityRanker, TrainingFingerprint

    split = leave_last_out(_interactions())
    expect = TrainingFingerprint.of("cat-1", split, ITEMS)
    cfg = SystemRunConfig(ranker="popularity", device="cpu")
    ranker, source = _load_ranker(tmp_path, cfg, expect, split, ITEMS, np.eye(8, dtype=np.float32))
    assert source == ("fitted popularity here: no saved ranker at <work>/rankers/popularity "
                      "(run notebook 05 to evaluate the one it trained)")
    assert isinstance(ranker, PopularityRanker) and ranker.fingerprint == expect
    with pytest.raises(EvaluationError, match="'knn': no saved ranker at .*rankers/knn"):
        _load_ranker(tmp_path, SystemRunConfig(ranker="knn"), expect, split, ITEMS, None)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"latency_queries": -1}, "latency_queries=-1: expected >= 0"),
    ({"query_test_fraction": 1.0}, r"query_test_fraction=1.0: expected a share in \(0, 1\)"),
    ({"last_n": 0}, "last_n=0: expected >= 1"),
    ({"max_users": 0}, "max_users=0: expected >= 1 or None"),
    ({"ranker_epochs": -2}, "ranker_epochs=-2: expected >= 0 or None"),
])
def test_system_run_config_validates_itself(kwargs, message):
    from workbench.errors import ConfigError
    from workbench.experiments.system_run import SystemRunConfig

    with pytest.raises(ConfigError, match=message):
        SystemRunConfig(**kwargs)
    with pytest.raises(ConfigError, match="candidates=5 < k=10"):  # the two-stage part checks its own
        SystemRunConfig(system=SystemConfig(k=10, candidates=5))
    assert SystemRunConfig().system.cutoffs == (5, 10)  # the notebook's default cut-offs
