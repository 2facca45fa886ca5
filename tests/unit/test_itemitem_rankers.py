"""EASE and item-kNN behind the ranker interface, the MODELS registry and `recommend --model`."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from tests.unit.test_rankers import ITEMS, cycles, frame, hit_rate_in_group, products, two_tastes
from workbench.catalog import write_catalog
from workbench.catalog.splits import leave_last_out
from workbench.errors import CheckpointError, ConfigError
from workbench.experiments.recommend import RecommendConfig, run_recommend
from workbench.rankers import (
    MODELS,
    EASEConfig,
    EASERanker,
    ItemKNNConfig,
    ItemKNNRanker,
    PopularityRanker,
    load_ranker,
    make_ranker,
    save_rankers,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def dense_history(ranker, users) -> np.ndarray:
    rows = ranker.user_index(users)[0]
    return ranker._seen[rows].toarray().astype(np.float64)


def test_ease_is_the_closed_form_with_a_zero_diagonal() -> None:
    df = two_tastes()
    ease = EASERanker(EASEConfig(l2=5.0, device="cpu")).fit(df, ITEMS)
    x = ease._seen.toarray().astype(np.float64)
    p = np.linalg.inv(x.T @ x + 5.0 * np.eye(12))
    w = -p / np.diag(p)[None, :]
    np.fill_diagonal(w, 0.0)
    np.testing.assert_allclose(ease.weights.numpy(), w, rtol=1e-4, atol=1e-6)
    users = [f"u{u}" for u in range(40)]
    np.testing.assert_allclose(ease.score(users, ITEMS), dense_history(ease, users) @ w, rtol=1e-4, atol=1e-5)
    assert hit_rate_in_group(ease) >= 0.9 > hit_rate_in_group(PopularityRanker().fit(df, ITEMS))
    # EDLAE's emphasised dropout: item i's L2 weight is l2 + p / (1 - p) * its count
    edlae = EASERanker(EASEConfig(l2=5.0, dropout=0.5, device="cpu")).fit(df, ITEMS)
    gram = x.T @ x
    p = np.linalg.inv(gram + np.diag(5.0 + 1.0 * np.diag(gram)))
    w = -p / np.diag(p)[None, :]
    np.fill_diagonal(w, 0.0)
    np.testing.assert_allclose(edlae.weights.numpy(), w, rtol=1e-4, atol=1e-6)
    for bad in (-0.1, 1.0, "0.5"):
        with pytest.raises(ConfigError, match="dropout=.*expected a probability in"):
            EASEConfig(dropout=bad).validate()


def test_itemknn_keeps_the_k_most_cosine_similar_items() -> None:
    df = two_tastes()
    # k=5: each item's five group-mates (the only items it co-occurs with), so no ties decide
    knn = ItemKNNRanker(ItemKNNConfig(k=5, shrink=0.0, device="cpu")).fit(df, ITEMS)
    x = knn._seen.toarray().astype(np.float64)
    norms = np.linalg.norm(x, axis=0)
    cos = (x.T @ x) / np.outer(norms, norms)
    np.fill_diagonal(cos, 0.0)
    w = np.zeros_like(cos)
    for j in range(12):  # item j keeps its 5 most similar items i
        top = np.argsort(-cos[:, j], kind="stable")[:5]
        w[top, j] = cos[top, j]
    assert knn.neighbour_index.shape == (12, 5)
    rebuilt = np.zeros((12, 12))
    for j in range(12):
        rebuilt[knn.neighbour_index[j].numpy(), j] = knn.neighbour_sim[j].numpy()
    np.testing.assert_allclose(rebuilt, w, rtol=1e-5, atol=1e-7)
    users = [f"u{u}" for u in range(40)]
    np.testing.assert_allclose(knn.score(users, ITEMS), dense_history(knn, users) @ w, rtol=1e-4, atol=1e-5)
    assert hit_rate_in_group(knn) >= 0.9
    # shrink damps similarity: every kept weight gets smaller
    damped = ItemKNNRanker(ItemKNNConfig(k=5, shrink=10.0, device="cpu")).fit(df, ITEMS)
    assert damped.neighbour_sim.sum() < knn.neighbour_sim.sum()


def test_item_item_rankers_ignore_items_without_interactions_and_refuse_bad_configs() -> None:
    df = frame([("a", "i0", 0), ("a", "i1", 1), ("b", "i1", 0), ("b", "i2", 1)])
    for ranker in (EASERanker(EASEConfig(l2=1.0, device="cpu")), ItemKNNRanker(ItemKNNConfig(k=2, device="cpu"))):
        ranker.fit(df, ITEMS)
        scores = ranker.score(["a", "b"], ITEMS)
        assert (scores[:, 3:] == 0).all()  # never interacted with: no evidence for them at all
        assert ranker.recommend(["a"], 1).item_ids[0, 0] == "i2"  # the co-occurring item
        np.testing.assert_array_equal(ranker.score(["ghost"], ITEMS)[0], ranker.popularity_scores())
        assert ranker.recommend(["ghost", "a"], 2).cold_users.tolist() == [True, False]
    with pytest.raises(ConfigError, match="l2=0"):
        EASEConfig(l2=0).validate()
    with pytest.raises(ConfigError, match="k=0"):
        ItemKNNConfig(k=0).validate()
    with pytest.raises(ConfigError, match="shrink=-1"):
        ItemKNNConfig(shrink=-1).validate()
    with pytest.raises(ConfigError, match="exceed EASEConfig.max_items=5"):
        EASERanker(EASEConfig(max_items=5, device="cpu")).fit(df, ITEMS)


def test_history_rows_on_the_device_match_the_csr() -> None:
    ranker = EASERanker(EASEConfig(device="cpu")).fit(cycles(), ITEMS)
    users = torch.tensor([3, 0, 3, 7])
    np.testing.assert_array_equal(ranker._history_rows(users).numpy(),
                                  ranker._seen[users.numpy()].toarray())
    assert isinstance(ranker._seen, sp.csr_matrix)


def test_every_registered_ranker_saves_and_loads_with_identical_scores(tmp_path) -> None:
    split = leave_last_out(cycles())
    emb = np.random.default_rng(0).normal(size=(12, 5)).astype(np.float32)
    small = {"bpr": {"dim": 4, "epochs": 2}, "sequential": {"dim": 8, "heads": 2, "max_len": 4, "epochs": 2}}
    rankers = {name: make_ranker(name, seed=0, device="cpu", **small.get(name, {})).fit(
        split.train, ITEMS, item_embeddings=emb) for name in MODELS}
    save_rankers(rankers, tmp_path, catalog_fingerprint="cat", split=split)
    users = [f"u{u}" for u in range(30)] + ["ghost"]
    for name, ranker in rankers.items():
        back = load_ranker(tmp_path / name, device="cpu")
        assert type(back) is type(ranker) and back.fingerprint == ranker.fingerprint
        np.testing.assert_array_equal(back.score(users, ITEMS), ranker.score(users, ITEMS))
        a, b = ranker.recommend(users, 4), back.recommend(users, 4)
        np.testing.assert_array_equal(a.indices, b.indices)
        np.testing.assert_array_equal(a.scores, b.scores)


def test_saved_item_item_ranker_with_wrong_tensors_is_refused(tmp_path) -> None:
    from safetensors.torch import load_file, save_file

    folder = EASERanker(EASEConfig(device="cpu")).fit(cycles(), ITEMS).save(tmp_path / "ease")
    tensors = load_file(folder / "model.safetensors")
    tensors["ranker.weights"] = tensors["ranker.weights"][:5]
    save_file(tensors, folder / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"ranker.weights missing or not of shape \(12, 12\)"):
        load_ranker(folder)


def test_make_ranker_knows_the_registry_and_refuses_unknown_names_and_parameters() -> None:
    assert list(MODELS) == ["popularity", "bpr", "sequential", "ease", "itemknn"]
    assert MODELS["sequential"].uses_content and not MODELS["ease"].uses_content
    ease = make_ranker("ease", l2=42.0)
    assert isinstance(ease, EASERanker) and ease.config.l2 == 42.0
    bpr = make_ranker("bpr", seed=3, epochs=2, dim=8, lr=0.01)
    assert (bpr.config.dim, bpr.config.train.epochs, bpr.config.train.lr, bpr.config.train.seed) == (8, 2, 0.01, 3)
    with pytest.raises(ConfigError, match="unknown model 'knn': expected one of popularity, bpr, sequential, ease, itemknn"):
        make_ranker("knn")
    with pytest.raises(ConfigError, match=r"ease: unknown parameter\(s\) epochs, lr; expected dropout, l2, max_items"):
        make_ranker("ease", epochs=3, lr=0.1)
    with pytest.raises(ConfigError, match="no hyperparameters"):
        make_ranker("popularity", k=3)
    with pytest.raises(ConfigError, match="l2=-1"):
        make_ranker("ease", l2=-1.0)


def test_recommend_command_offers_the_registry_and_refuses_an_unknown_model(tmp_path, capsys) -> None:
    from workbench.cli import main

    cat = write_catalog(tmp_path / "cat", products=products(), interactions=two_tastes())
    with pytest.raises(SystemExit) as exc:
        main(["recommend", "--catalog", str(cat), "--out", str(tmp_path / "o"), "--model", "nope"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'nope'" in err and "'ease', 'itemknn'" in err
    for model in ("ease", "itemknn"):
        out = tmp_path / model
        assert main(["recommend", "--catalog", str(cat), "--out", str(out), "--model", model,
                     "--split", "leave_last", "--k", "3", "--device", "cpu"]) == 0
        assert (out / "recommendations.parquet").is_file()
    capsys.readouterr()
    result = run_recommend(RecommendConfig(catalog=str(cat), model="ease", split="leave_last", k=3,
                                           out=str(tmp_path / "api"), epochs=5, progress=False))
    assert result["model"] == "ease" and result["metrics"]["ndcg@3"] > 0
