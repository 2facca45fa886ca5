"""The rankers' two-tower form (user vectors . item vectors == score) and the two-stage
next-item evaluation that retrieves with it through an inner-product index."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.unit.test_rankers import ITEMS, quick_train, two_tastes
from workbench.catalog.splits import leave_last_out
from workbench.errors import ConfigError
from workbench.evaluate.system import SystemConfig, evaluate_two_stage, next_item_task
from workbench.index import IndexConfig, build_index, inner_product_items, inner_product_queries
from workbench.rankers import (
    BPRConfig,
    BPRRanker,
    EASERanker,
    PopularityRanker,
    SequentialConfig,
    SequentialRanker,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _content(n: int = len(ITEMS)) -> np.ndarray:
    return np.random.default_rng(1).normal(size=(n, 6)).astype(np.float32)


def _fitted(df=None):
    df = two_tastes() if df is None else df
    bpr = BPRRanker(BPRConfig(dim=8, train=quick_train(3))).fit(df, ITEMS)
    content_bpr = BPRRanker(BPRConfig(dim=8, fused="content", user_profile=True, train=quick_train(3))).fit(
        df, ITEMS, item_embeddings=_content())
    seq = SequentialRanker(SequentialConfig(dim=8, max_len=4, item_bias=True, history_pool=True,
                                            train=quick_train(3))).fit(df, ITEMS, item_embeddings=_content())
    return df, {"bpr": bpr, "content bpr": content_bpr, "sequential": seq}


def test_two_tower_vectors_reproduce_the_scores_for_warm_and_cold_users() -> None:
    _, rankers = _fitted()
    users = np.array(["u0", "u1", "u7", "nobody"])  # the last one was never seen: popularity
    for name, ranker in rankers.items():
        items = ranker.two_tower_items()
        vecs = ranker.two_tower_users(users)
        assert items.shape == (len(ITEMS), vecs.shape[1]) and items.dtype == np.float32
        np.testing.assert_allclose(vecs @ items.T, ranker.score(users, ITEMS), rtol=1e-4, atol=1e-4,
                                   err_msg=name)
        assert vecs[-1, :-1].sum() == 0 and vecs[-1, -1] == 1.0  # the cold user: popularity only
        np.testing.assert_allclose(items[:, -1], ranker.popularity_scores())
        # computed once and kept: a second call gives the same item matrix
        np.testing.assert_array_equal(ranker.two_tower_items(), items)


def test_rankers_without_a_dot_product_have_no_two_tower_form() -> None:
    df = two_tastes()
    for ranker in (PopularityRanker().fit(df, ITEMS), EASERanker().fit(df, ITEMS)):
        assert ranker.two_tower_items() is None
        with pytest.raises(ConfigError, match="not a dot product"):
            ranker.two_tower_users(["u0"])


def test_inner_product_reduction_keeps_the_inner_product_order() -> None:
    rng = np.random.default_rng(0)
    items = rng.normal(size=(200, 5)) * rng.uniform(0.1, 3.0, size=(200, 1))  # very unequal norms
    queries = rng.normal(size=(7, 5))
    index = build_index([f"i{j}" for j in range(200)], inner_product_items(items), IndexConfig(kind="exact"))
    got, _ = index.search_indices(inner_product_queries(queries), 20)
    want = np.argsort(-(queries @ items.T), axis=1, kind="stable")[:, :20]
    np.testing.assert_array_equal(got, want)
    # every augmented row has the largest norm; the query coordinate is 0
    assert np.allclose(np.linalg.norm(inner_product_items(items), axis=1), np.linalg.norm(items, axis=1).max())
    with pytest.raises(ConfigError, match="NaN or inf"):
        inner_product_items(np.array([[1.0, np.nan]]))


def test_two_stage_next_item_with_the_rankers_own_vectors_matches_full_ranking() -> None:
    split = leave_last_out(two_tastes())
    _, rankers = _fitted(split.train)
    ranker = rankers["sequential"]
    item_ids = np.asarray(ITEMS)
    index = build_index(item_ids, inner_product_items(ranker.two_tower_items()), IndexConfig(kind="exact"))
    task = next_item_task(split.train, split.test, item_ids, _content(), last_n=3,
                          user_vectors=lambda users: inner_product_queries(ranker.two_tower_users(users)))
    assert task.info["query"] == "ranker user vectors"
    cfg = SystemConfig(k=3, candidates=5, alpha=1.0, n_resamples=50)
    full = ranker.recommend(task.query_ids, cfg.candidates, exclude_seen=True).indices
    res = evaluate_two_stage(task, index, ranker, cfg, full_ranking=full)
    # exact inner-product retrieval of the ranker's own vectors is the ranker's full ranking
    assert res.metrics["retrieval"]["candidate_recall"] == pytest.approx(res.metrics["full_ranking"]["recall@5"])
    assert res.metrics["reranked"]["ndcg@3"] == pytest.approx(res.metrics["full_ranking"]["ndcg@3"])
    assert res.metrics["full_ranking"]["recall@5"] > 0  # the test is not vacuous
    assert res.metrics["vs_full_ranking"]["candidate_recall"] == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="full_ranking has 2 rows"):
        evaluate_two_stage(task, index, ranker, cfg, full_ranking=full[:2])


def test_candidate_scores_agree_with_full_scores_and_follow_weight_changes() -> None:
    _, rankers = _fitted()
    seq = rankers["sequential"]
    users = np.array(["u0", "u3", "nobody"])
    cands = np.array([ITEMS[:4], ITEMS[4:8], ITEMS[8:]])
    full = seq.score(users, ITEMS)
    picked = np.take_along_axis(full, seq.item_index(cands), axis=1)
    np.testing.assert_allclose(seq.score(users, cands), picked, rtol=1e-5, atol=1e-6)
    # the kept item vectors are recomputed once the weights change
    with torch.no_grad():
        seq.model.fused_proj.weight.mul_(2.0)
    full = seq.score(users, ITEMS)
    np.testing.assert_allclose(seq.score(users, cands), np.take_along_axis(full, seq.item_index(cands), axis=1),
                               rtol=1e-5, atol=1e-6)


def test_items_without_training_interactions_are_never_negatives() -> None:
    from workbench.rankers.mf import BPRDataset
    from workbench.rankers.sequential import SASRecModel, SequentialTask

    # BPR: negatives are drawn among the items someone interacted with
    users, items = np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 2, 3])
    torch.manual_seed(0)
    pool = BPRDataset(users, items, n_items=10, n_negatives=50, unseen_negatives=False)
    neg = pool.__getitems__(list(range(len(pool))))["neg"]
    assert set(neg.unique().tolist()) <= {0, 1, 2, 3}
    everything = BPRDataset(users, items, n_items=10, n_negatives=50)
    assert set(everything.__getitems__(list(range(len(everything))))["neg"].unique().tolist()) - {0, 1, 2, 3}
    # the sequence model's softmax: an unseen item gets no gradient as a negative
    model = SASRecModel(n_items=6, max_len=4, dim=8, heads=2, layers=1, dropout=0.0, fused_dim=3)
    model.fused[1:] = torch.eye(6, 3) + 0.1
    model.in_training[5] = False  # item 5 (row 5) never appeared in training
    batch = {"seq": torch.tensor([[1, 2, 3, 4]]), "target": torch.tensor([[2, 3, 4, 1]])}
    for unseen, moved in ((False, False), (True, True)):
        model.zero_grad(set_to_none=True)
        vectors = model.item_vectors()
        vectors.retain_grad()
        task = SequentialTask("softmax", unseen_negatives=unseen)
        # the loss reads item_vectors() itself: route its gradient through the same tensor
        model.item_vectors = lambda id_keep=None, v=vectors: v
        task.loss(model, batch)["loss"].backward()
        del model.item_vectors
        assert (vectors.grad[5].abs().sum() > 0) == moved
