"""Interaction splits: no leakage, cold users/items reported, Recommenders' stratified semantics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from workbench.catalog.splits import (
    assert_no_leakage,
    leave_last_out,
    make_split,
    split_queries,
    stratified_split,
    temporal_split,
)
from workbench.errors import EvaluationError

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def frame(rows: list[tuple[str, str, int]]) -> pl.DataFrame:
    """(user, item, minutes after T0) rows."""
    return pl.DataFrame({
        "user_id": [r[0] for r in rows],
        "item_id": [r[1] for r in rows],
        "timestamp": [T0 + timedelta(minutes=r[2]) for r in rows],
        "event": ["view"] * len(rows),
        "value": [None] * len(rows),
    }, schema={"user_id": pl.Utf8, "item_id": pl.Utf8, "timestamp": pl.Datetime("us", "UTC"),
               "event": pl.Utf8, "value": pl.Float64})


def random_frame(n_users: int = 30, n_items: int = 40, n_rows: int = 600, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return frame([(f"u{rng.integers(n_users)}", f"i{rng.integers(n_items)}", int(rng.integers(10_000)))
                  for _ in range(n_rows)])


def test_split_queries_is_deterministic_and_disjoint() -> None:
    ids = [f"q{i}" for i in range(200)]
    a = split_queries(ids, 0.2, seed=1)
    assert a == split_queries(ids, 0.2, seed=1)
    assert a.validation == [] and not set(a.train) & set(a.test) and len(a.train) + len(a.test) == 200
    b = split_queries(ids, 0.2, seed=1, validation_fraction=0.2)
    assert b.test == a.test  # a validation share comes out of training, never out of test
    assert set(b.train) | set(b.validation) == set(a.train) and not set(b.train) & set(b.validation)
    assert 25 <= len(b.validation) <= 55


@pytest.mark.parametrize("test, validation", [(-0.1, 0.2), (0.2, 1.0), (0.5, 0.5)])
def test_split_queries_refuses_fractions_that_leave_nothing_to_train(test, validation) -> None:
    with pytest.raises(EvaluationError, match="fraction"):
        split_queries(["q1"], test, validation_fraction=validation)


def test_leave_last_out_takes_each_users_latest_and_keeps_short_users() -> None:
    df = frame([("a", "1", 5), ("a", "2", 1), ("a", "3", 9), ("b", "1", 3), ("b", "4", 4), ("c", "5", 2)])
    s = leave_last_out(df)
    assert sorted(zip(s.test["user_id"], s.test["item_id"], strict=True)) == [("a", "3"), ("b", "4")]
    assert s.report.train_only_users == 1  # c has a single row: kept in train, counted
    assert s.train.height == 4 and s.train.columns == df.columns
    # ties in time: the later input row is the later event
    tie = leave_last_out(frame([("a", "1", 0), ("a", "2", 0), ("a", "3", 0)]))
    assert tie.test["item_id"].to_list() == ["3"]


def test_leave_last_out_n_last_and_time_order_on_random_data() -> None:
    df = random_frame()
    s = leave_last_out(df, n_last=2)
    assert s.report.n_train + s.report.n_test == df.height
    last_train = s.train.group_by("user_id").agg(pl.col("timestamp").max())
    first_test = s.test.group_by("user_id").agg(pl.col("timestamp").min().alias("t_test"))
    joined = first_test.join(last_train, on="user_id")
    assert (joined["t_test"] >= joined["timestamp"]).all()
    assert (s.test.group_by("user_id").len()["len"] == 2).all()


def test_temporal_split_is_global_and_reports_cold_users_and_items() -> None:
    df = frame([("a", "1", 0), ("a", "2", 10), ("b", "1", 20), ("c", "9", 30), ("a", "1", 40)])
    s = temporal_split(df, cutoff=T0 + timedelta(minutes=25))
    assert s.train["timestamp"].max() < s.test["timestamp"].min()
    assert s.report.cold_test_users == 1 and s.report.cold_test_items == 1  # user c, item 9
    assert s.report.cold_test_rows == 1
    assert s.report.test_pairs_seen_in_train == 1  # (a, 1) again: repeat consumption is counted
    assert s.test.height == 2  # cold rows are kept, not dropped
    frac = temporal_split(random_frame(), test_fraction=0.25)
    assert abs(frac.report.n_test / frac.report.n_rows - 0.25) < 0.03


def test_stratified_split_ratio_per_user_and_seeded() -> None:
    df = random_frame()
    a, b, c = stratified_split(df, 0.75, seed=3), stratified_split(df, 0.75, seed=3), stratified_split(df, 0.75, seed=4)
    assert a.train.equals(b.train)
    assert not a.train.equals(c.train)
    n = df.group_by("user_id").len()
    tr = a.train.group_by("user_id").len().rename({"len": "n_train"})
    joined = n.join(tr, on="user_id")
    assert (joined["n_train"] == np.round(0.75 * joined["len"].to_numpy())).all()


def test_stratified_split_matches_recommenders_row_for_row() -> None:
    pytest.importorskip("recommenders", reason="Microsoft Recommenders not installed (optional peer)")
    from recommenders.datasets.python_splitters import python_stratified_split

    df = random_frame(n_users=40, n_rows=900, seed=7)
    pdf = df.with_row_index("row").to_pandas()
    theirs, _ = python_stratified_split(pdf, ratio=0.75, col_user="user_id", col_item="item_id", seed=42)
    ours = stratified_split(df.with_row_index("row"), 0.75, seed=42)
    assert sorted(theirs["row"].tolist()) == sorted(ours.train["row"].to_list())


def test_leakage_guard_and_bad_input() -> None:
    df = random_frame().with_row_index("_row")
    with pytest.raises(EvaluationError, match="leaks: 1 interaction row"):
        assert_no_leakage(df.head(10), df.slice(9, 5))
    with pytest.raises(EvaluationError, match="lost rows"):
        assert_no_leakage(df.head(10), df.slice(10, 5), n_rows=df.height)
    with pytest.raises(EvaluationError, match="missing column"):
        leave_last_out(pl.DataFrame({"user_id": ["a"]}))
    with pytest.raises(EvaluationError, match="unknown split"):
        make_split(random_frame(), "kfold")
    with pytest.raises(EvaluationError, match="ratio"):
        stratified_split(random_frame(), 1.5)
    with pytest.raises(EvaluationError, match="empty"):
        temporal_split(random_frame().head(0))
    empty = leave_last_out(random_frame().head(0))  # documented: an empty table gives an empty split
    assert empty.train.height == 0 and empty.test.height == 0
