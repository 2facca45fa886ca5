"""Computations the notebooks used to do in their cells, now package functions."""

from __future__ import annotations

import numpy as np

from workbench.index import tuning_queries


def test_tuning_queries_are_noisy_unit_item_vectors_then_the_text_queries():
    vectors = np.arange(1, 41, dtype=np.float32).reshape(10, 4)
    text = np.full((2, 4), 7.0, dtype=np.float32)
    queries = tuning_queries(vectors, 3, np.random.default_rng(0), noise=0.0, text_queries=text)
    pick = np.random.default_rng(0).choice(10, size=3, replace=False)
    assert queries.dtype == np.float32 and queries.shape == (5, 4)
    np.testing.assert_allclose(queries[:3], vectors[pick] / np.linalg.norm(vectors[pick], axis=1, keepdims=True),
                               rtol=1e-6)
    np.testing.assert_array_equal(queries[3:], text)


def test_tuning_queries_sample_at_most_every_item_and_draw_their_noise_from_rng():
    vectors = np.eye(4, dtype=np.float32)
    rng = np.random.default_rng(1)
    queries = tuning_queries(vectors, 100, rng, noise=0.05)
    assert queries.shape == (4, 4)
    again = np.random.default_rng(1)
    pick = again.choice(4, size=4, replace=False)
    noise = 0.05 * again.standard_normal((4, 4)).astype(np.float32)
    np.testing.assert_allclose(queries, vectors[pick] + noise, rtol=1e-6)
    assert rng.integers(1000) == again.integers(1000)  # the caller's generator moved on exactly as before


def test_modality_weights_global_for_the_weighted_mean_and_averaged_over_present_products():
    import torch

    from workbench.encoders.analysis import modality_weights
    from workbench.encoders.fusion import FusionConfig, FusionOutput, make_fusion

    modalities = ("text", "image")
    mean = make_fusion(FusionConfig(strategy="weighted_mean", d=4, modalities=modalities))
    with torch.no_grad():
        mean.logits.copy_(torch.log(torch.tensor([3.0, 1.0])))

    def per_product(items, masks):  # product 0 has both modalities, product 1 only text
        return FusionOutput(torch.zeros(2, 4), torch.tensor([[0.2, 0.8], [1.0, 0.0]]))

    items = {m: torch.ones(2, 4) for m in modalities}
    masks = {"text": torch.tensor([True, True]), "image": torch.tensor([True, False])}
    table = modality_weights({"weighted_mean": mean, "gated": per_product}, items, masks, modalities)
    got = {(r["fusion"], r["modality"]): round(r["weight"], 6) for r in table.iter_rows(named=True)}
    assert list(table["fusion"]) == ["weighted_mean", "weighted_mean", "gated", "gated"]
    # image: only product 0 has it, so its mean is 0.8, not (0.8 + 0) / 2
    assert got == {("weighted_mean", "text"): 0.75, ("weighted_mean", "image"): 0.25,
                   ("gated", "text"): 0.6, ("gated", "image"): 0.8}


def test_mean_metrics_skip_nan_users_and_rankers_not_evaluated():
    from workbench.experiments.rankers import mean_metrics

    per_user = {"bpr": {"ndcg@10": np.array([0.5, np.nan, 0.2]), "recall@10": np.array([1.0, 0.0, 0.0])}}
    assert mean_metrics(per_user, ("oracle", "bpr"), k=10, metrics=("ndcg", "recall")) == {
        "bpr": {"ndcg@10": 0.35, "recall@10": 0.3333}}


def test_movielens_means_average_over_seeds_per_ranker_without_params():
    from workbench.experiments.rankers import movielens_means

    rows = [{"ranker": "ease", "seed": 42, "map": 0.1, "params": {"l2": 1.0}},
            {"ranker": "ease", "seed": 43, "map": 0.2, "params": {"l2": 2.0}},
            {"ranker": "bpr", "seed": 42, "map": 0.05, "params": {}}]
    assert movielens_means(rows) == {"bpr": {"map": 0.05}, "ease": {"map": 0.15}}


def test_fit_with_popularity_puts_popularity_first_and_fits_it_on_train():
    from datetime import UTC, datetime

    import polars as pl

    from workbench.experiments.rankers import fit_with_popularity

    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    train = pl.DataFrame({"user_id": ["u0", "u1", "u1", "u2"], "item_id": ["b", "b", "a", "b"],
                          "timestamp": [t0] * 4})
    rankers = fit_with_popularity({}, train, ["a", "b", "c"])
    assert list(rankers) == ["popularity"]
    # b has 3 interactions, a 1, c none: that order for a user nobody has seen
    np.testing.assert_array_equal(rankers["popularity"].score(["u9"], ["a", "b", "c"]).argsort()[0][::-1], [1, 0, 2])


def test_headline_metrics_group_each_task_by_stage_with_the_rounded_gain():
    from types import SimpleNamespace

    import polars as pl

    from workbench.experiments.system_run import SystemRun, SystemRunConfig, headline_metrics

    headline = pl.DataFrame({"task": ["queries", "queries", "next_item", "next_item"],
                             "stage": ["retrieval", "reranked", "retrieval", "reranked"],
                             "metric": ["ndcg@10"] * 4, "mean": [0.5, 0.6, 0.1, 0.2]})
    tasks = {"queries": SimpleNamespace(comparison={"diff": 0.12345, "low": 0.01, "high": 0.2, "p": 0.01}),
             "next_item": SimpleNamespace(comparison={"diff": -0.0004, "low": -0.1, "high": 0.1})}
    run = SystemRun(SystemRunConfig(), tasks, {}, None, {"wins": {"fused": 3}}, "saved")
    metrics = headline_metrics(run, headline)
    assert list(metrics) == ["next_item", "queries", "modality_wins"]
    assert metrics["queries"] == {"retrieval": {"ndcg@10": 0.5}, "reranked": {"ndcg@10": 0.6},
                                  "reranking_gain": {"diff": 0.123, "low": 0.01, "high": 0.2}}
    assert metrics["next_item"]["reranking_gain"]["diff"] == -0.0 and metrics["modality_wins"] == {"fused": 3}


def test_index_fusion_keeps_the_dense_part_of_the_chosen_system():
    from types import SimpleNamespace

    import torch

    from workbench.encoders.analysis import index_fusion
    from workbench.encoders.fusion import FusionConfig, make_fusion

    modalities = ("text", "image")
    learned = make_fusion(FusionConfig(strategy="gated_attention", d=4, modalities=modalities))
    systems = {"fused/gated_attention": SimpleNamespace(name="fused/gated_attention", kind="learned"),
               "late": SimpleNamespace(name="late", kind="late", weights={"text": 0.75, "image": 0.25}),
               "image": SimpleNamespace(name="image", kind="single"),
               "bm25": SimpleNamespace(name="bm25", kind="lexical"),
               "hybrid convex": SimpleNamespace(name="hybrid convex", kind="hybrid")}
    tuning = {"hybrid convex": {"dense": "late"}}
    fusions = {"gated_attention": learned}

    def kept(name):
        return index_fusion(name, systems, tuning, fusions, "fused/gated_attention", 4, modalities)

    assert kept("fused/gated_attention") == ("fused/gated_attention", learned)
    assert kept("bm25") == ("fused/gated_attention", learned)  # cross-modal queries still have vectors
    name, late = kept("hybrid convex")
    assert name == "late"
    np.testing.assert_allclose(list(late.global_weights().values()), [0.75, 0.25], rtol=1e-5)
    name, single = kept("image")
    items = {m: torch.eye(4)[:1] for m in modalities}
    both = {m: torch.tensor([True]) for m in modalities}
    assert name == "image" and single(items, both).weights[0, 1] > 0.99
