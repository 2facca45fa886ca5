"""The three rankers behind one interface, the recommend command, and bad input."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
import torch

from workbench.catalog import write_catalog
from workbench.catalog.splits import leave_last_out, stratified_split
from workbench.errors import CatalogError, CheckpointError, ConfigError, EvaluationError
from workbench.experiments.recommend import RecommendConfig, run_recommend
from workbench.metrics import ranking_metrics, relevance_matrix
from workbench.rankers import (
    BPRConfig,
    BPRRanker,
    PopularityRanker,
    SequentialConfig,
    SequentialRanker,
    TrainingFingerprint,
    load_item_embeddings,
    load_ranker,
    save_rankers,
)
from workbench.train import TrainConfig

T0 = datetime(2024, 1, 1, tzinfo=UTC)
ITEMS = [f"i{j}" for j in range(12)]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def frame(rows: list[tuple[str, str, int]]) -> pl.DataFrame:
    return pl.DataFrame({
        "user_id": [r[0] for r in rows], "item_id": [r[1] for r in rows],
        "timestamp": [T0 + timedelta(hours=r[2]) for r in rows],
        "event": ["click"] * len(rows), "value": [None] * len(rows),
    }, schema={"user_id": pl.Utf8, "item_id": pl.Utf8, "timestamp": pl.Datetime("us", "UTC"),
               "event": pl.Utf8, "value": pl.Float64})


def two_tastes(n_users: int = 40, seed: int = 0) -> pl.DataFrame:
    """Even users like items i0..i5, odd users i6..i11; each sees 4 of their 6."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        group = np.arange(6) + (6 if u % 2 else 0)
        for t, j in enumerate(rng.choice(group, 4, replace=False)):
            rows.append((f"u{u}", f"i{j}", t))
    return frame(rows)


def cycles(n_users: int = 30, length: int = 8, seed: int = 0) -> pl.DataFrame:
    """Each user walks i(s), i(s+1), ... around the 12 items: the next item is fully predictable."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        start = int(rng.integers(12))
        rows += [(f"u{u}", f"i{(start + t) % 12}", t) for t in range(length)]
    return frame(rows)


def quick_train(epochs: int, lr: float = 1e-2, batch_size: int = 64, **kw) -> TrainConfig:
    return TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, warmup=0.0, progress=False,
                       device="cpu", **kw)


def test_popularity_global_recent_and_exclude_seen() -> None:
    df = frame([("a", "i1", 0), ("b", "i1", 1), ("c", "i1", 2), ("a", "i2", 100), ("b", "i2", 101),
                ("c", "i3", 102)])
    pop = PopularityRanker().fit(df, ITEMS)
    ids, scores = pop.recommend(["a", "zz"], k=3, exclude_seen=True)
    assert ids[0][0] == "i3" and not {"i1", "i2"} & set(ids[0])  # a saw i1 and i2
    assert scores[0].tolist() == [1.0, 0.0, 0.0]
    assert ids[1].tolist() == ["i1", "i2", "i3"]  # unknown user: plain popularity
    assert scores[1].tolist() == [3.0, 2.0, 1.0]
    recent = PopularityRanker(window=timedelta(hours=10)).fit(df, ITEMS)
    assert recent.recommend(["zz"], 2).item_ids[0].tolist() == ["i2", "i3"]  # recent beats all-time
    assert recent.recommend(["a"], 3, exclude_seen=False).item_ids[0].tolist() == ["i2", "i3", "i1"]
    with pytest.raises(ConfigError, match="positive timedelta"):
        PopularityRanker(window=timedelta(0))


def test_cold_users_flagged_and_bad_input() -> None:
    df = two_tastes()
    pop = PopularityRanker().fit(df, ITEMS)
    recs = pop.recommend(["u0", "new-user", "u1"], k=4)
    assert recs.cold_users.tolist() == [False, True, False] and recs.n_cold == 1
    with pytest.raises(ConfigError, match="exceeds the item universe of 12"):
        pop.recommend(["u0"], k=13)
    with pytest.raises(ConfigError, match="positive integer"):
        pop.recommend(["u0"], k=0)
    with pytest.raises(CatalogError, match="'nope' is not in the ranker's item universe"):
        pop.score(["u0"], ["i1", "nope"])
    with pytest.raises(CatalogError, match="not in the item universe"):
        PopularityRanker().fit(df, ITEMS[:3])
    with pytest.raises(CatalogError, match="empty"):
        PopularityRanker().fit(df.head(0), ITEMS)
    with pytest.raises(ConfigError, match="not fitted"):
        PopularityRanker().recommend(["u0"], 1)
    empty = pop.recommend([], k=5)
    assert empty.item_ids.shape == (0, 5) and empty.n_cold == 0
    # a user who has seen everything but 2 items: the list is padded, not filled with seen items
    full = frame([("a", j, t) for t, j in enumerate(ITEMS[:10])])
    recs = PopularityRanker().fit(full, ITEMS).recommend(["a"], k=4)
    assert recs.item_ids[0].tolist() == ["i10", "i11", "", ""]
    assert recs.indices[0].tolist() == [10, 11, -1, -1] and np.isneginf(recs.scores[0, 2:]).all()


def hit_rate_in_group(ranker, n_users: int = 40) -> float:
    users = [f"u{u}" for u in range(n_users)]
    ids = ranker.recommend(users, k=2).item_ids
    own = [set(f"i{j + (6 if u % 2 else 0)}" for j in range(6)) for u in range(n_users)]
    return float(np.mean([all(i in own[u] for i in ids[u]) for u in range(n_users)]))


def test_bpr_learns_two_tastes_and_beats_popularity() -> None:
    df = two_tastes()
    bpr = BPRRanker(BPRConfig(dim=8, l2=1e-4, train=quick_train(15, lr=3e-2))).fit(df, ITEMS)
    assert hit_rate_in_group(bpr) >= 0.9
    assert hit_rate_in_group(PopularityRanker().fit(df, ITEMS)) < 0.7
    assert len(bpr.history) == 15 and bpr.history[-1]["loss"] < bpr.history[0]["loss"]
    # score: matrix form, per-user candidate form and recommend agree
    recs = bpr.recommend(["u0", "u1"], k=3)
    mat = bpr.score(["u0", "u1"], ITEMS)
    np.testing.assert_allclose(np.sort(mat[0][[ITEMS.index(i) for i in recs.item_ids[0]]])[::-1],
                               recs.scores[0], rtol=1e-5)
    per_row = bpr.score(["u0", "u1"], np.array([recs.item_ids[0], recs.item_ids[1]]))
    np.testing.assert_allclose(per_row, recs.scores, rtol=1e-5)
    # batching does not change the answer
    users = [f"u{u}" for u in range(40)]
    np.testing.assert_array_equal(bpr.recommend(users, 5, batch_size=7).indices,
                                  bpr.recommend(users, 5, batch_size=4096).indices)
    # a cold user is served popularity
    np.testing.assert_allclose(bpr.score(["ghost"], ITEMS)[0], bpr.popularity_scores())


def test_bpr_negatives_avoid_seen_items() -> None:
    from workbench.rankers.mf import BPRDataset

    users, items = np.array([0, 0, 0, 1]), np.array([0, 1, 2, 3])
    data = BPRDataset(users, items, n_items=4, n_negatives=50)
    torch.manual_seed(0)
    batch = data.__getitems__([0, 1, 2, 3])
    assert (batch["neg"][:3] == 3).all()  # user 0 has seen 0, 1, 2: only 3 is a negative
    assert not (batch["neg"][3] == 3).any()


def test_bpr_fused_init_starts_item_factors_on_the_embeddings_principal_directions() -> None:
    df = two_tastes()
    emb = np.zeros((12, 4), dtype=np.float32)
    emb[:6, 0], emb[6:, 1] = 1.0, 1.0  # content separates the two tastes
    untrained = quick_train(0)  # no epoch: the factors as initialised
    init = BPRRanker(BPRConfig(dim=4, init_std=0.1, fused="init", train=untrained)).fit(
        df, ITEMS, item_embeddings=emb).item_factors()
    # centred, this content is one direction (taste i0-i5 against i6-i11): the first factor
    # carries it, the others are zero, and the whole is scaled to init_std
    np.testing.assert_allclose(init[:6], np.tile(init[0], (6, 1)))
    np.testing.assert_allclose(init[6:], -init[:6])
    np.testing.assert_allclose(np.abs(init[:, 0]), 0.2, rtol=1e-5)
    np.testing.assert_allclose(init[:, 1:], 0.0, atol=1e-6)
    assert init.std() == pytest.approx(0.1, rel=1e-4)
    # richer content (6 dims, 8 factors): the first 6 factors keep the embeddings' centred
    # geometry (every dot product, so every distance) up to one scale; 2 factors of noise pad it
    content = np.random.default_rng(0).normal(size=(12, 6)).astype(np.float32)
    factors = BPRRanker(BPRConfig(dim=8, fused="init", train=untrained)).fit(
        df, ITEMS, item_embeddings=content).item_factors()
    centred = content - content.mean(0)
    gram, target = factors[:, :6] @ factors[:, :6].T, centred @ centred.T
    np.testing.assert_allclose(gram, gram[0, 0] / target[0, 0] * target, rtol=1e-3, atol=1e-6)
    assert factors.std() == pytest.approx(0.1, rel=1e-4)
    # without fused, the same seed draws random factors: items of one taste do not coincide
    plain = BPRRanker(BPRConfig(dim=4, train=untrained)).fit(df, ITEMS).item_factors()
    assert not np.allclose(plain[0], plain[1], atol=1e-3)
    # "both" starts from the same factors and keeps the embeddings for its pull
    both = BPRRanker(BPRConfig(dim=4, fused="both", train=untrained)).fit(df, ITEMS, item_embeddings=emb)
    np.testing.assert_allclose(both.item_factors(), init)
    np.testing.assert_array_equal(both.model.fused.numpy(), emb)


def test_bpr_fused_regularise_checkpoints_and_bad_embeddings(tmp_path) -> None:
    df = two_tastes()
    emb = np.zeros((12, 4), dtype=np.float32)
    emb[:6, 0], emb[6:, 1] = 1.0, 1.0  # content separates the two tastes
    cfg = BPRConfig(dim=4, fused="both", fused_weight=0.1,
                    train=quick_train(2, out_dir=str(tmp_path / "ckpt")))
    bpr = BPRRanker(cfg).fit(df, ITEMS, item_embeddings=emb)
    assert (tmp_path / "ckpt" / "latest.json").is_file()
    assert "fused_pull" in bpr.history[0]
    with pytest.raises(ConfigError, match="needs item_embeddings"):
        BPRRanker(BPRConfig(fused="init", train=quick_train(1))).fit(df, ITEMS)
    with pytest.raises(ConfigError, match="one per item"):
        BPRRanker(BPRConfig(fused="init", train=quick_train(1))).fit(df, ITEMS, item_embeddings=emb[:5])


def test_sequential_learns_next_item_and_uses_fused_embeddings() -> None:
    df = cycles()
    cfg = SequentialConfig(max_len=6, dim=16, heads=2, layers=1, dropout=0.0,
                           train=quick_train(40, lr=1e-2, batch_size=32))
    seq = SequentialRanker(cfg).fit(df, ITEMS)
    users = [f"u{u}" for u in range(30)]
    last = df.group_by("user_id").agg(pl.col("item_id").sort_by("timestamp").last())
    last = dict(zip(last["user_id"], last["item_id"], strict=True))
    expected = [f"i{(int(last[u][1:]) + 1) % 12}" for u in users]
    got = seq.recommend(users, k=1, exclude_seen=False).item_ids[:, 0]
    assert np.mean(got == np.array(expected)) >= 0.9
    # BPR cannot know the order: the sequence model must do clearly better on the next item
    bpr = BPRRanker(BPRConfig(dim=8, train=quick_train(10, lr=3e-2))).fit(df, ITEMS)
    assert np.mean(bpr.recommend(users, 1, exclude_seen=False).item_ids[:, 0] == np.array(expected)) < 0.5
    for loss in ("sampled_softmax", "bce"):
        cfg2 = SequentialConfig(max_len=6, dim=8, heads=1, layers=1, loss=loss, n_negatives=5,
                                train=quick_train(2))
        emb = np.random.default_rng(0).normal(size=(12, 3)).astype(np.float32)
        r = SequentialRanker(cfg2).fit(df, ITEMS, item_embeddings=emb)
        assert r.model.fused_proj is not None and np.isfinite(r.history[-1]["loss"])
        assert np.isfinite(r.score(users[:3], ITEMS)).all()
    with pytest.raises(ConfigError, match="divisible"):
        SequentialConfig(dim=10, heads=3)
    with pytest.raises(ConfigError, match="two or more"):
        SequentialRanker(SequentialConfig(max_len=4, dim=8, heads=1, train=quick_train(1))).fit(
            frame([("a", "i1", 0), ("b", "i2", 0)]), ITEMS)


def test_padding_never_produces_nan() -> None:
    from workbench.rankers.sequential import SASRecModel

    model = SASRecModel(n_items=5, max_len=6, dim=8, heads=2, layers=2, dropout=0.0)
    seq = torch.tensor([[0, 0, 0, 0, 0, 3], [1, 2, 3, 4, 5, 1], [0, 0, 0, 0, 0, 0]])
    assert torch.isfinite(model.encode(seq)).all()


def test_load_item_embeddings_aligns_and_zero_fills(tmp_path) -> None:
    path = tmp_path / "items.parquet"
    pl.DataFrame({"item_id": ["i2", "i0"], "fused": [[1.0, 2.0], [3.0, 4.0]]}).write_parquet(path)
    emb = load_item_embeddings(path, ["i0", "i1", "i2"])
    np.testing.assert_array_equal(emb, [[3, 4], [0, 0], [1, 2]])
    with pytest.raises(CatalogError, match="no such embeddings file"):
        load_item_embeddings(tmp_path / "missing.parquet", ["i0"])


def products() -> pl.DataFrame:
    return pl.DataFrame({"item_id": ITEMS, "title": ITEMS, "description": ITEMS,
                         "category": ["a/b"] * 12})


def test_run_recommend_writes_lists_split_and_metrics(tmp_path) -> None:
    cat = write_catalog(tmp_path / "cat", products=products(), interactions=two_tastes())
    out = tmp_path / "out"
    result = run_recommend(RecommendConfig(catalog=str(cat), model="popularity", split="leave_last",
                                           k=3, out=str(out), progress=False))
    recs = pl.read_parquet(out / "recommendations.parquet")
    train, test = pl.read_parquet(out / "train.parquet"), pl.read_parquet(out / "test.parquet")
    assert recs.columns == ["user_id", "item_id", "rank", "score"]
    assert recs.height == 40 * 3 and test.height == 40 and train.height == 120
    assert recs.join(train, on=["user_id", "item_id"], how="semi").height == 0  # training items excluded
    # the returned metrics are the metrics of the written files
    users = sorted(test["user_id"].unique().to_list())
    ranked = (recs.sort("user_id", "rank").with_columns(pl.col("item_id").str.slice(1).cast(pl.Int64))
              ["item_id"].to_numpy().reshape(40, 3))
    rel = relevance_matrix(test, users, ITEMS, query_col="user_id", relevance_col=None)
    assert result["metrics"]["ndcg@3"] == pytest.approx(ranking_metrics(ranked, rel, ks=(3,))["ndcg@3"], abs=1e-6)
    assert result["cold_users"] == 0 and (out / "metrics.json").is_file()
    bpr = run_recommend(RecommendConfig(catalog=str(cat), model="bpr", split="stratified", k=2,
                                        out=str(tmp_path / "out2"), epochs=2, progress=False))
    assert set(bpr["metrics"]) >= {"ndcg@2", "recall@2", "precision@2", "map@2", "coverage@2"}


def test_run_recommend_bad_input(tmp_path) -> None:
    one_each = frame([(f"u{u}", f"i{u}", 0) for u in range(5)])
    cat = write_catalog(tmp_path / "cat", products=products(), interactions=one_each)
    with pytest.raises(EvaluationError, match="test set empty"):
        run_recommend(RecommendConfig(catalog=str(cat), model="popularity", split="leave_last",
                                      out=str(tmp_path / "o")))
    with pytest.raises(ConfigError, match="--model 'knn'"):
        run_recommend(RecommendConfig(catalog=str(cat), model="knn"))
    no_inter = write_catalog(tmp_path / "cat2", products=products())
    with pytest.raises(CatalogError, match="no interactions"):
        run_recommend(RecommendConfig(catalog=str(no_inter), model="popularity"))


# --------------------------------------------------------------------------- saved rankers


def fitted_rankers(split) -> dict:
    emb = np.random.default_rng(0).normal(size=(12, 3)).astype(np.float32)
    rankers = {
        "popularity": PopularityRanker(window=timedelta(hours=3), device="cpu"),
        "bpr": BPRRanker(BPRConfig(dim=4, fused="both", train=quick_train(2))),
        "sequential": SequentialRanker(SequentialConfig(max_len=4, dim=8, heads=2, layers=1,
                                                        train=quick_train(2))),
    }
    for r in rankers.values():
        r.fit(split.train, ITEMS, item_embeddings=emb)
    return rankers


def test_saved_rankers_score_exactly_like_the_fitted_ones(tmp_path) -> None:
    split = leave_last_out(cycles())
    rankers = fitted_rankers(split)
    folders = save_rankers(rankers, tmp_path / "rankers", catalog_fingerprint="cat-1", split=split)
    assert [f.name for f in folders] == ["popularity", "bpr", "sequential"]
    assert sorted(p.name for p in (tmp_path / "rankers").iterdir()) == ["bpr", "popularity", "sequential"]
    users = [f"u{u}" for u in range(30)] + ["ghost"]  # a cold user too
    candidates = np.array([ITEMS[(u % 12):] + ITEMS[:(u % 12)] for u in range(len(users))])
    for name, ranker in rankers.items():
        folder = tmp_path / "rankers" / name
        assert sorted(p.name for p in folder.iterdir()) == ["ids.parquet", "model.json", "model.safetensors"]
        doc = json.loads((folder / "model.json").read_text())
        assert doc["format"] == "workbench.checkpoint/1" and doc["kind"] == f"ranker.{name}"
        back = load_ranker(folder, device="cpu")  # the folder is all it needs
        assert type(back) is type(ranker)
        a, b = ranker.recommend(users, 5), back.recommend(users, 5)
        assert np.array_equal(a.indices, b.indices) and np.array_equal(a.scores, b.scores)
        assert np.array_equal(a.cold_users, b.cold_users)
        assert np.array_equal(ranker.score(users, ITEMS), back.score(users, ITEMS))
        assert np.array_equal(ranker.score(users, candidates), back.score(users, candidates))
        assert np.array_equal(ranker.recommend(users, 3, exclude_seen=False).indices,
                              back.recommend(users, 3, exclude_seen=False).indices)
        assert back.summary() == ranker.summary() and len(back.history) == len(ranker.history)
        assert back.fingerprint == ranker.fingerprint
        assert back.fingerprint.catalog == "cat-1" and back.fingerprint.split["kind"] == "leave_last"
    assert load_ranker(tmp_path / "rankers" / "popularity").window == timedelta(hours=3)
    assert load_ranker(tmp_path / "rankers" / "sequential").config.max_len == 4
    # Saving again replaces the folder whole and leaves no staging folders behind.
    rankers["popularity"].save(tmp_path / "rankers" / "popularity")
    assert sorted(p.name for p in (tmp_path / "rankers").iterdir()) == ["bpr", "popularity", "sequential"]


def test_load_ranker_refuses_a_ranker_trained_on_other_data(tmp_path) -> None:
    df = cycles()
    split = leave_last_out(df)
    pop = PopularityRanker(device="cpu").fit(split.train, ITEMS)
    folder = pop.save(tmp_path / "popularity", catalog_fingerprint="cat-1", split=split)
    same = TrainingFingerprint.of("cat-1", split, ITEMS[::-1])  # item order does not matter
    assert load_ranker(folder, expect=same).fingerprint == same
    with pytest.raises(CheckpointError, match=r"popularity: this ranker was trained on other data .*catalog "
                                              r"cat-1 \(this run: cat-2\); re-run notebook 05"):
        load_ranker(folder, expect=TrainingFingerprint.of("cat-2", split, ITEMS))
    stratified = stratified_split(df, 0.75, seed=1)
    with pytest.raises(CheckpointError) as err:
        load_ranker(folder, expect=TrainingFingerprint.of("cat-1", stratified, ITEMS))
    msg = str(err.value)
    assert "split leave_last(min_train=1, n_last=1) (this run: stratified(ratio=0.75, seed=1))" in msg
    assert "training interactions" in msg and "\n" not in msg and msg.endswith("on this catalog and split")
    more = ITEMS + ["i12"]
    with pytest.raises(CheckpointError, match=r"an item universe of 12 items.*\(this run: 13 items"):
        load_ranker(folder, expect=TrainingFingerprint.of("cat-1", split, more))
    # Saved without a catalog fingerprint: nothing to compare with, refused too.
    anonymous = PopularityRanker(device="cpu").fit(split.train, ITEMS).save(tmp_path / "anon")
    with pytest.raises(CheckpointError, match="catalog unknown"):
        load_ranker(anonymous, expect=same)
    # The split given to save must be the one the ranker was fitted on.
    with pytest.raises(ConfigError, match="not fitted on the train rows of this stratified split"):
        pop.save(tmp_path / "wrong", catalog_fingerprint="cat-1", split=stratified)
    assert not (tmp_path / "wrong").exists()


def test_load_ranker_bad_folders(tmp_path) -> None:
    from workbench.encoders import FusionConfig, make_fusion, save_fusion

    split = leave_last_out(cycles())
    folder = PopularityRanker(device="cpu").fit(split.train, ITEMS).save(tmp_path / "pop")
    ids = folder / "ids.parquet"
    pl.read_parquet(ids).reverse().write_parquet(ids)  # ids out of step with the weights
    with pytest.raises(CheckpointError, match=r"pop/ids.parquet: sha256 differs .*re-run notebook 05"):
        load_ranker(folder)
    ids.unlink()
    with pytest.raises(CheckpointError, match=r"ids.parquet: missing"):
        load_ranker(folder)
    save_fusion(make_fusion(FusionConfig(d=4, hidden=4)), tmp_path / "fusion")
    with pytest.raises(CheckpointError, match=r"a 'fusion' checkpoint, expected 'ranker.popularity'"):
        load_ranker(tmp_path / "fusion")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_ranker(tmp_path / "nothing")
    with pytest.raises(ConfigError, match="not fitted"):
        PopularityRanker().save(tmp_path / "unfitted")


def test_bpr_content_factors_rank_an_item_nobody_clicked_by_its_content(tmp_path) -> None:
    # i11 never appears in training; its content says it belongs with i6..i10 (the odd users' items)
    df = two_tastes().filter(pl.col("item_id") != "i11")
    emb = np.zeros((12, 2), dtype=np.float32)
    emb[:6, 0], emb[6:, 1] = 1.0, 1.0
    cfg = BPRConfig(dim=4, l2=1e-4, fused="content", user_profile=True, train=quick_train(30, lr=3e-2))
    bpr = BPRRanker(cfg).fit(df, ITEMS, item_embeddings=emb)
    assert bpr.reads_content and not BPRRanker(BPRConfig(train=quick_train(1))).fit(df, ITEMS).reads_content
    odd, even = [f"u{u}" for u in range(1, 40, 2)], [f"u{u}" for u in range(0, 40, 2)]
    s_odd, s_even = bpr.score(odd, ["i11"])[:, 0], bpr.score(even, ["i11"])[:, 0]
    assert s_odd.min() > s_even.max()  # content alone separates the tastes for the new item
    assert hit_rate_in_group(bpr) >= 0.9
    # the effective factors include the content part; scores equal factors . user + bias
    assert bpr.item_factors().shape == (12, 4)
    back = load_ranker(bpr.save(tmp_path / "bpr"), device="cpu")
    assert np.array_equal(back.score(odd + even, ITEMS), bpr.score(odd + even, ITEMS)) and back.reads_content
    with pytest.raises(ConfigError, match="user_profile"):
        BPRConfig(fused="regularise", user_profile=True)
    with pytest.raises(ConfigError, match="needs item_embeddings"):
        BPRRanker(BPRConfig(fused="content", train=quick_train(1))).fit(df, ITEMS)


def test_sequential_attention_window_sees_only_the_last_items() -> None:
    from workbench.rankers.sequential import SASRecModel

    torch.manual_seed(0)
    model = SASRecModel(n_items=9, max_len=6, dim=8, heads=2, layers=2, dropout=0.0, attention_window=2).eval()
    a = torch.tensor([[1, 2, 3, 4, 5, 6]])
    b = torch.tensor([[7, 8, 9, 4, 5, 6]])  # differs only before the last three items
    with torch.no_grad():
        ha, hb = model.encode(a), model.encode(b)
    # 2 layers of a 2-item window: the last state depends on the last 3 items only
    assert torch.allclose(ha[0, -1], hb[0, -1], atol=1e-6)
    c = torch.tensor([[1, 2, 3, 9, 5, 6]])  # differs 3 items back: now it must change
    with torch.no_grad():
        assert not torch.allclose(model.encode(c)[0, -1], ha[0, -1], atol=1e-4)
    full = SASRecModel(n_items=9, max_len=6, dim=8, heads=2, layers=2, dropout=0.0).eval()
    with torch.no_grad():
        assert not torch.allclose(full.encode(a)[0, -1], full.encode(b)[0, -1], atol=1e-4)
    with pytest.raises(ConfigError, match="attention_window"):
        SequentialConfig(attention_window=-1)
    seq = SequentialRanker(SequentialConfig(max_len=6, dim=8, heads=1, layers=1, attention_window=2,
                                            train=quick_train(1))).fit(cycles(), ITEMS)
    assert seq.model.attention_window == 2 and seq.model_config["attention_window"] == 2


def complement_walks(n_users: int = 40, length: int = 10, seed: int = 0) -> pl.DataFrame:
    """Items i0..i11 in 6 pairs (i2k, i2k+1); after i2k comes i2k+1, after i2k+1 a random item."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        j = int(rng.integers(12))
        for t in range(length):
            rows.append((f"u{u}", f"i{j}", t))
            j = j + 1 if j % 2 == 0 else int(rng.integers(12))
    return frame(rows)


def test_sequential_transition_term_learns_a_first_order_rule(tmp_path) -> None:
    # No attention (layers=0), only the transition term: it must learn "after i2k comes i2k+1".
    df = complement_walks()
    emb = np.eye(12, dtype=np.float32)  # content = the item's identity, so the rule is learnable
    cfg = SequentialConfig(max_len=4, dim=12, heads=1, layers=0, dropout=0.0, transition_rank=8,
                           train=quick_train(60, lr=3e-2, batch_size=16))
    seq = SequentialRanker(cfg).fit(df, ITEMS, item_embeddings=emb)
    assert seq.model.encoder is None and seq.model.trans_in.out_features == 8
    last = df.group_by("user_id").agg(pl.col("item_id").sort_by("timestamp").last())
    even = [(u, int(i[1:])) for u, i in zip(last["user_id"], last["item_id"], strict=True) if int(i[1:]) % 2 == 0]
    assert len(even) >= 5
    got = seq.recommend([u for u, _ in even], k=1, exclude_seen=False).item_ids[:, 0]
    assert np.mean(got == np.array([f"i{j + 1}" for _, j in even])) >= 0.9
    # (the history reaches this model only through the transition term, and item popularity alone
    # would put one item first for every user: at most one pair in `even` right)
    back = load_ranker(seq.save(tmp_path / "seq"), device="cpu")
    users = sorted(df["user_id"].unique().to_list())
    assert np.array_equal(back.score(users, ITEMS), seq.score(users, ITEMS))
    assert back.model.trans_out.weight.abs().sum() > 0


def test_sequential_pool_context_reads_items_before_the_window(tmp_path) -> None:
    from workbench.rankers.sequential import SequenceWindows, context_before

    seqs = [np.arange(1, 9)]  # one user, items 1..8
    data = SequenceWindows(seqs, max_len=3, context=2)
    batch = data.__getitems__(list(range(len(data))))
    # windows of 4 cut from the end: [5..8], [2..5], [0, 0, 1, 2]; context = the 2 items before each
    assert batch["seq"].tolist() == [[5, 6, 7], [2, 3, 4], [0, 0, 1]]
    first = batch["seq"][0].tolist(), batch["context"][0].tolist()
    assert first == ([5, 6, 7], [3, 4])
    assert batch["context"][-1].tolist() == [0, 0]  # nothing before the first window
    assert context_before(seqs, 3, 4).tolist() == [[2, 3, 4, 5]]
    assert context_before([np.array([1, 2])], 3, 2).tolist() == [[0, 0]]
    # The user's taste pool at scoring time sees the context: changing an early item changes scores.
    df = two_tastes()
    emb = np.random.default_rng(0).normal(size=(12, 3)).astype(np.float32)
    cfg = SequentialConfig(max_len=2, dim=8, heads=1, layers=1, history_pool=True, pool_context=4,
                           train=quick_train(3))
    r = SequentialRanker(cfg).fit(df, ITEMS, item_embeddings=emb)
    assert r._history_context.shape == (40, 4) and (r._history_context[:, -2:] > 0).all()
    with torch.no_grad():
        r.model.pool.weight.normal_()  # a non-zero pool, so the context matters
    windows, ctx = r._history(torch.arange(2))
    a = r.model.all_scores(windows, ctx)
    b = r.model.all_scores(windows, torch.zeros_like(ctx))
    assert not torch.allclose(a, b)
    back = load_ranker(r.save(tmp_path / "seq"), device="cpu")
    users = sorted(df["user_id"].unique().to_list())
    assert np.array_equal(back.score(users, ITEMS), r.score(users, ITEMS))
    assert torch.equal(back._history_context, r._history_context)


def test_sequential_config_rejects_bad_transition_and_pool_context() -> None:
    with pytest.raises(ConfigError, match="transition_rank"):
        SequentialConfig(transition_rank=-1)
    with pytest.raises(ConfigError, match="pool_context"):
        SequentialConfig(pool_context=-3)
    with pytest.raises(ConfigError, match="needs history_pool"):
        SequentialConfig(pool_context=5, history_pool=False)
    with pytest.raises(ConfigError, match="layers"):
        SequentialConfig(layers=-1)
    SequentialConfig(layers=0, transition_rank=4, history_pool=True, pool_context=10)
    with pytest.raises(ConfigError, match="layers=0 .* reads nothing of the history"):
        SequentialConfig(layers=0)


def test_sequential_keeps_user_states_between_requests_and_drops_them_when_the_weights_change() -> None:
    df = cycles()
    cfg = SequentialConfig(max_len=6, dim=16, heads=2, layers=1, dropout=0.0, train=quick_train(3))
    seq = SequentialRanker(cfg).fit(df, ITEMS)
    users = [f"u{u}" for u in range(30)]
    candidates = np.array([ITEMS[(u % 12):] + ITEMS[:(u % 12)] for u in range(len(users))])[:, :5]
    full = np.take_along_axis(seq.score(users, ITEMS), seq.item_index(candidates), 1)
    one = seq.score(users[3:4], candidates[3:4])  # computes and keeps u3's state only
    assert int(seq._states_cache[2].sum()) == 1
    np.testing.assert_allclose(one, full[3:4], atol=1e-5)
    both = seq.score(users, candidates)  # the others computed now, u3's read back
    np.testing.assert_allclose(both, full, atol=1e-5)
    assert np.array_equal(seq.score(users[3:4], candidates[3:4]), one)
    with torch.no_grad():  # new weights: the kept states are stale and recomputed
        for p in seq.model.parameters():
            p.mul_(1.5)
    after = seq.score(users, candidates)
    assert not np.allclose(after, both)
    np.testing.assert_allclose(after, np.take_along_axis(seq.score(users, ITEMS), seq.item_index(candidates), 1),
                               atol=1e-5)
