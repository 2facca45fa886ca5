"""Hyperparameters chosen on validation (tune_ranker), content features, and new products (cold start)."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from tests.unit.test_rankers import ITEMS, frame, quick_train, two_tastes
from workbench.catalog.splits import cold_items_split, leave_last_out, stratified_split
from workbench.errors import CatalogError, ConfigError, EvaluationError
from workbench.evaluate.rankers import cold_start_metrics, ordered_apart
from workbench.experiments.tuning import tune_ranker, validation_split
from workbench.rankers import (
    ContentConfig,
    EASERanker,
    PopularityRanker,
    SequentialConfig,
    SequentialRanker,
    item_content,
    load_ranker,
    make_ranker,
)
from workbench.rankers.registry import Choice, FloatRange, IntRange

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


# --------------------------------------------------------------------------- content features


def catalog_products() -> pl.DataFrame:
    return pl.DataFrame({
        "item_id": ITEMS,
        "category": ["home/chair"] * 4 + ["home/table"] * 2 + ["toys/kite"] * 6,
        "brand": ["A", "B"] * 6,
        "price": [10.0, 20.0, None, 40.0] * 3,
        "attributes": [json.dumps({"style": "modern" if j % 3 else "rustic", "genres": ["x", "y"][: 1 + j % 2]})
                       for j in range(12)],
    })


def test_item_content_encodes_what_the_products_are() -> None:
    products = catalog_products()
    fused = np.random.default_rng(0).normal(size=(12, 3)).astype(np.float32)
    x = item_content(products, ITEMS[::-1], fused)  # rows follow the order asked for
    again = item_content(products.reverse(), ITEMS[::-1], fused)  # not the table's order
    np.testing.assert_array_equal(x, again)
    ids = ITEMS[::-1]
    # the same leaf: identical category block; the same top only: closer than another top
    chairs, tables, kites = (ids.index(i) for i in ("i0", "i4", "i6"))
    cat_only = item_content(products, ids, config=ContentConfig(brand=0, attributes=0, price=0, embeddings=0))
    assert cat_only.shape == (12, 5)  # home, toys, home/chair, home/table, toys/kite
    np.testing.assert_allclose(np.linalg.norm(cat_only, axis=1).mean(), 1.0, rtol=1e-6)
    assert cat_only[chairs] @ cat_only[tables] > cat_only[chairs] @ cat_only[kites] == 0
    # fused (rows aligned with the ids asked for) is the last block, scaled to unit mean norm
    np.testing.assert_allclose(x[:, -3:] * np.linalg.norm(fused, axis=1).mean(), fused, rtol=1e-5)
    with pytest.raises(CatalogError, match="item_id 'nope' is not in the products table"):
        item_content(products, ["i0", "nope"])
    with pytest.raises(ConfigError, match=r"embeddings .fused. have shape \(5, 3\)"):
        item_content(products, ITEMS, fused[:5])
    with pytest.raises(ConfigError, match="ContentConfig.brand=-1"):
        item_content(products, ITEMS, config=ContentConfig(brand=-1))


# --------------------------------------------------------------------------- tuning


def test_tune_ranker_refuses_a_budget_of_zero_and_bad_spaces() -> None:
    df = two_tastes()
    for budget in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match="budget=.*expected at least 1 trial"):
            tune_ranker("ease", df, ITEMS, budget)
    with pytest.raises(ConfigError, match="unknown model 'nope'"):
        tune_ranker("nope", df, ITEMS, 2)
    with pytest.raises(ConfigError, match="l2 both searched and fixed"):
        tune_ranker("ease", df, ITEMS, 2, space={"l2": FloatRange(1.0, 10.0)}, fixed={"l2": 3.0})
    # fixing a parameter of the spec's own space takes it out of the search
    only_fixed = tune_ranker("ease", df, ITEMS, 3, fixed={"l2": 3.0, "dropout": 0.2})
    assert only_fixed.params == {"l2": 3.0, "dropout": 0.2} and len(only_fixed.trials) == 1
    with pytest.raises(ConfigError, match="low < high"):
        FloatRange(2.0, 1.0)
    with pytest.raises(ConfigError, match="low > 0"):
        IntRange(0, 5, log=True)
    with pytest.raises(ConfigError, match="validation split 'random'"):
        tune_ranker("ease", df, ITEMS, 2, validation="random")


def test_tune_ranker_chooses_on_validation_carved_from_train_deterministically() -> None:
    df = two_tastes(n_users=60)
    split = leave_last_out(df)
    result = tune_ranker("ease", split.train, ITEMS, budget=5, seed=3)
    again = tune_ranker("ease", split.train, ITEMS, budget=5, seed=3)
    assert result.trials == again.trials and result.params == again.params  # seeded sampler
    assert len(result.trials) == 5 and result.trials[0]["params"] == {"l2": 300.0, "dropout": 0.0}  # the defaults first
    assert result.value == max(t["value"] for t in result.trials)
    assert 1.0 <= result.params["l2"] <= 5000.0
    # the validation rows come from train only: each user's last *training* row
    val = validation_split(split.train, "leave_last")
    assert val.test.join(split.test, on=["user_id", "item_id", "timestamp"], how="semi").height == 0
    assert val.train.height + val.test.height == split.train.height
    assert result.n_validation_users == val.test["user_id"].n_unique()
    ranker = result.make()
    assert isinstance(ranker, EASERanker) and ranker.config.l2 == result.params["l2"]
    assert result.table().columns == ["trial", "ndcg@10", "l2", "dropout"]


def test_tune_ranker_fixed_parameters_choices_and_a_stratified_validation() -> None:
    df = two_tastes(n_users=40)
    train = stratified_split(df, 0.75, seed=1).train
    result = tune_ranker("bpr", train, ITEMS, budget=2, seed=0, validation="stratified",
                         space={"dim": Choice((4, 8)), "l2": FloatRange(1e-4, 1e-2, log=True)},
                         fixed={"epochs": 2, "lr": 0.03, "batch_size": 64})
    assert {"epochs", "lr", "batch_size", "dim", "l2"} == set(result.params)
    assert result.params["epochs"] == 2 and result.params["dim"] in (4, 8)
    assert result.make().config.train.epochs == 2
    one = tune_ranker("popularity", train, ITEMS, budget=3)  # nothing to search: one trial
    assert len(one.trials) == 1 and one.params == {}


def test_validation_split_with_nothing_to_hold_out_is_refused() -> None:
    with pytest.raises(EvaluationError, match="held out nothing"):
        validation_split(frame([("a", "i0", 0), ("b", "i1", 0)]), "leave_last")


# --------------------------------------------------------------------------- cold start


def grouped_content() -> np.ndarray:
    """Content that says which taste group an item belongs to (what the product is)."""
    emb = np.zeros((12, 2), dtype=np.float32)
    emb[:6, 0], emb[6:, 1] = 1.0, 1.0
    return emb


def test_cold_items_split_holds_out_every_interaction_of_some_items() -> None:
    df = two_tastes(n_users=40)
    split = cold_items_split(df, fraction=0.25, seed=0)
    cold = set(split.test["item_id"].to_list())
    assert len(cold) == 3 == split.report.cold_test_items == split.report.params["n_cold_items"]
    assert not cold & set(split.train["item_id"].to_list())  # nobody saw them in training
    assert split.test.height == df.filter(pl.col("item_id").is_in(list(cold))).height
    assert split.report.n_train + split.report.n_test == df.height
    assert cold_items_split(df, 0.25, seed=0).test.equals(split.test)  # seeded
    assert set(cold_items_split(df, 0.25, seed=1).test["item_id"].to_list()) != cold


@pytest.mark.parametrize("fraction, message", [(0.01, "rounds to 0 cold items"), (0.99, "every item cold"),
                                               (0.0, r"must be in \(0, 1\)")])
def test_cold_items_split_that_leaves_nothing_is_an_error(fraction, message) -> None:
    with pytest.raises(EvaluationError, match=message):
        cold_items_split(two_tastes(n_users=10), fraction=fraction)


def test_content_rankers_recommend_new_items_that_id_only_rankers_cannot(tmp_path) -> None:
    df = two_tastes(n_users=60)
    split = cold_items_split(df, fraction=0.25, seed=0)
    content = grouped_content()
    seq = SequentialRanker(SequentialConfig(max_len=4, dim=8, heads=1, layers=1, dropout=0.0,
                                            id_embeddings=False, item_bias=True,
                                            train=quick_train(30, lr=3e-2)))
    seq.fit(split.train, ITEMS, item_embeddings=content)
    id_only = {"popularity": PopularityRanker(device="cpu"), "ease": EASERanker(),
               "bpr": make_ranker("bpr", dim=4, epochs=3, device="cpu")}
    for r in id_only.values():
        r.fit(split.train, ITEMS)
    got = cold_start_metrics(seq, split, k=3)
    assert got["cold_items"] == 3 and got["users"] + got["cold_users"] == split.report.n_users_test
    assert got["recall@3"] > 0.5 and got["cold_share@3"] > 0.2  # they make the real lists
    assert got["recall@3_among_cold"] > 0.9  # and in the order of the users' tastes
    assert cold_start_metrics(id_only["popularity"], split, k=3)["recall@3"] == 0.0  # count 0: last
    for name in ("ease", "bpr"):  # no evidence for an unseen item: a slot only by accident
        assert cold_start_metrics(id_only[name], split, k=3)["recall@3"] < got["recall@3"] / 3, name
    # the content path survives saving: the unseen items keep content-only scores
    back = load_ranker(seq.save(tmp_path / "seq"), device="cpu")
    np.testing.assert_array_equal(back.score(["u0", "u1"], ITEMS), seq.score(["u0", "u1"], ITEMS))
    with pytest.raises(EvaluationError, match="expected a cold_items split"):
        cold_start_metrics(seq, leave_last_out(df))


def test_unseen_items_are_scored_from_content_alone() -> None:
    df = two_tastes(n_users=20)
    seen_items = set(df["item_id"].to_list())
    cfg = SequentialConfig(max_len=4, dim=8, heads=1, layers=1, item_bias=True, train=quick_train(1))
    r = SequentialRanker(cfg).fit(df, ITEMS + ["extra"], item_embeddings=np.ones((13, 2), np.float32))
    keep = r.model.id_keep[1:].numpy()
    assert keep[-1] == 0 and (keep[:-1] == 1).all() and "extra" not in seen_items
    off = SequentialRanker(SequentialConfig(max_len=4, dim=8, heads=1, layers=1, unseen_from_content=False,
                                            train=quick_train(1)))
    assert off.fit(df, ITEMS + ["extra"], item_embeddings=np.ones((13, 2), np.float32)).model.id_keep.all()
    with pytest.raises(ConfigError, match="id_embeddings=False needs item_embeddings"):
        SequentialRanker(SequentialConfig(max_len=4, dim=8, heads=1, id_embeddings=False,
                                          train=quick_train(1))).fit(df, ITEMS)
    with pytest.raises(ConfigError, match="id_dropout=1.0"):
        SequentialConfig(id_dropout=1.0)


def test_unknown_users_get_the_documented_popularity_fallback_from_every_ranker() -> None:
    from workbench.rankers import MODELS

    df = two_tastes()
    small = {"bpr": {"dim": 4, "epochs": 1}, "sequential": {"dim": 8, "heads": 2, "max_len": 4, "epochs": 1}}
    pop = PopularityRanker().fit(df, ITEMS)
    for name in MODELS:
        r = make_ranker(name, device="cpu", **small.get(name, {})).fit(df, ITEMS, item_embeddings=grouped_content())
        recs = r.recommend(["never-seen", "u0"], k=3)
        assert recs.cold_users.tolist() == [True, False] and recs.n_cold == 1, name
        assert recs.item_ids[0].tolist() == pop.recommend(["never-seen"], k=3).item_ids[0].tolist(), name


def test_ordered_apart_needs_intervals_that_do_not_overlap() -> None:
    rng = np.random.default_rng(0)
    a, b, c = rng.normal(0.6, 0.1, 400), rng.normal(0.4, 0.1, 400), rng.normal(0.2, 0.1, 400)
    assert ordered_apart({"a": a, "b": b, "c": c}, ["a", "b", "c"])
    assert not ordered_apart({"a": a, "b": b, "c": c}, ["b", "a", "c"])
    assert not ordered_apart({"a": a, "b": a + 1e-3}, ["b", "a"])  # overlapping


def test_a_ranker_that_cannot_fit_on_validation_keeps_its_defaults_and_says_why() -> None:
    from tests.unit.test_rankers import frame
    from workbench.experiments.rankers import tuned_table

    # every user has two rows: the validation split leaves one each, too few for sequences
    df = frame([(f"u{u}", f"i{(u + j) % 12}", j) for u in range(20) for j in range(2)])
    result = tune_ranker("sequential", df, ITEMS, 2, fixed={"epochs": 1})
    assert result.trials == [] and result.params == {"epochs": 1} and np.isnan(result.value)
    assert "not tuned" in result.note and "two or more training interactions" in result.note
    assert tuned_table({"sequential": result})["chosen"][0] == result.note
