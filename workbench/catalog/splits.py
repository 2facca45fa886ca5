"""Train/validation/test splits of queries and train/test splits of interactions, guarded against leakage."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

import numpy as np
import polars as pl

from workbench.errors import EvaluationError

logger = logging.getLogger(__name__)


# Share of queries the series holds out for choosing (fusion kind, weights, hybrid weight).
DEFAULT_VALIDATION_FRACTION = 0.2


class QuerySplit(NamedTuple):
    """Query ids for training, for choosing (validation) and for the claims (test)."""

    train: list[str]
    validation: list[str]
    test: list[str]


def split_queries(
    query_ids: Sequence[str],
    test_fraction: float = 0.2,
    seed: int = 0,
    validation_fraction: float = 0.0,
) -> QuerySplit:
    """Deterministic query split by a hash of (seed, query_id): stable across runs and machines.

    Used by every stage that trains on queries (alignment, fusion), every stage that
    chooses on them (fusion kind, weights: validation) and every stage that reports on
    them (test), so no test query is ever trained on or chosen with. A query's hash
    decides its part once: raising `validation_fraction` takes validation queries out
    of training and never changes the test set.
    """
    for name, value in (("test_fraction", test_fraction), ("validation_fraction", validation_fraction)):
        if not 0 <= value < 1:
            raise EvaluationError(f"{name}={value!r}: expected a fraction in [0, 1)")
    if test_fraction + validation_fraction >= 1:
        raise EvaluationError(
            f"test_fraction + validation_fraction = {test_fraction + validation_fraction:g}: "
            "expected less than 1, so that some queries are left to train on"
        )
    train: list[str] = []
    validation: list[str] = []
    test: list[str] = []
    for qid in query_ids:
        digest = hashlib.sha256(f"{seed}:{qid}".encode()).digest()
        u = int.from_bytes(digest[:8], "big") / 2**64
        part = test if u < test_fraction else validation if u < test_fraction + validation_fraction else train
        part.append(qid)
    return QuerySplit(train, validation, test)


# ---------------------------------------------------------------------------
# Interaction splits for rankers
# ---------------------------------------------------------------------------

_INTERACTION_COLUMNS = ("user_id", "item_id", "timestamp")
SPLIT_KINDS = ("leave_last", "temporal", "stratified", "cold_items")


@dataclass
class SplitReport:
    """What a split put where; cold users/items are counted, never dropped silently.

    `cold_test_users`: users with test rows but no train rows (rankers serve them
    popularity); `cold_test_items`: items in the test rows never seen in train;
    `train_only_users`: users kept whole in train because they had too few rows to
    hold any out; `test_pairs_seen_in_train`: test (user, item) pairs that also occur
    in train (repeat consumption): with `exclude_seen` a ranker cannot retrieve them.
    """

    kind: str
    seed: int | None
    n_rows: int
    n_train: int
    n_test: int
    n_users_train: int
    n_users_test: int
    cold_test_users: int
    cold_test_items: int
    cold_test_rows: int
    train_only_users: int
    test_pairs_seen_in_train: int
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Split:
    """A train/test split of an interactions table (rows of the input, unchanged columns)."""

    train: pl.DataFrame
    test: pl.DataFrame
    report: SplitReport


def _as_frame(interactions: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    df = interactions.collect() if isinstance(interactions, pl.LazyFrame) else interactions
    missing = [c for c in _INTERACTION_COLUMNS if c not in df.columns]
    if missing:
        raise EvaluationError(
            f"interactions: missing column(s) {', '.join(missing)}; expected at least "
            f"{', '.join(_INTERACTION_COLUMNS)}"
        )
    if "_row" in df.columns:
        raise EvaluationError("interactions: column '_row' is reserved by the splitter")
    # `_row` is the leakage guard's identity of an input row.
    return df.with_row_index("_row")


def _finish(df: pl.DataFrame, is_test: pl.Series | np.ndarray, kind: str, seed: int | None,
            train_only_users: int, params: dict[str, Any]) -> Split:
    mask = pl.Series("_test", np.asarray(is_test, dtype=bool))
    train = df.filter(~mask)
    test = df.filter(mask)
    assert_no_leakage(train, test, n_rows=df.height)
    train_users = set(train["user_id"].unique().to_list())
    train_items = set(train["item_id"].unique().to_list())
    cold_u = test.filter(~pl.col("user_id").is_in(list(train_users)))
    cold_i = test.filter(~pl.col("item_id").is_in(list(train_items)))
    cold_rows = test.filter(
        ~pl.col("user_id").is_in(list(train_users)) | ~pl.col("item_id").is_in(list(train_items))
    ).height
    seen_pairs = test.join(
        train.select("user_id", "item_id").unique(), on=["user_id", "item_id"], how="semi"
    ).select("user_id", "item_id").unique().height
    report = SplitReport(
        kind=kind, seed=seed, n_rows=df.height, n_train=train.height, n_test=test.height,
        n_users_train=len(train_users), n_users_test=test["user_id"].n_unique(),
        cold_test_users=cold_u["user_id"].n_unique(), cold_test_items=cold_i["item_id"].n_unique(),
        cold_test_rows=cold_rows, train_only_users=train_only_users,
        test_pairs_seen_in_train=seen_pairs, params=params,
    )
    if report.cold_test_users or report.cold_test_items:
        logger.info(
            "%s split: %d cold test users, %d cold test items (%d test rows) kept in test",
            kind, report.cold_test_users, report.cold_test_items, cold_rows,
        )
    return Split(train=train.drop("_row"), test=test.drop("_row"), report=report)


def assert_no_leakage(train: pl.DataFrame, test: pl.DataFrame, n_rows: int | None = None) -> None:
    """Raise `EvaluationError` if an input row (column `_row`) is in both train and test.

    With `n_rows`, also check that train and test together hold every input row
    exactly once (nothing dropped silently).
    """
    both = train.join(test.select("_row"), on="_row", how="semi")
    if both.height:
        rows = ", ".join(str(r) for r in both["_row"].head(5).to_list())
        raise EvaluationError(
            f"split leaks: {both.height} interaction row(s) are in both train and test "
            f"(input rows {rows}); expected disjoint sets"
        )
    if n_rows is not None and train.height + test.height != n_rows:
        raise EvaluationError(
            f"split lost rows: train {train.height} + test {test.height} != input {n_rows}"
        )


def leave_last_out(
    interactions: pl.DataFrame | pl.LazyFrame, n_last: int = 1, min_train: int = 1
) -> Split:
    """Per user, the `n_last` latest interactions go to test, the rest to train.

    Ties in time are broken by input row order (later row = later event). Users
    with fewer than `n_last + min_train` rows stay whole in train (counted in
    `report.train_only_users`).
    """
    if n_last < 1 or min_train < 1:
        raise EvaluationError(f"leave_last_out: n_last={n_last} and min_train={min_train} must be >= 1")
    df = _as_frame(interactions)
    ranked = df.sort(["user_id", "timestamp", "_row"]).with_columns(
        (pl.len().over("user_id")).alias("_n"),
        (pl.int_range(pl.len()).over("user_id")).alias("_pos"),
    )
    is_test = (pl.col("_n") >= n_last + min_train) & (pl.col("_pos") >= pl.col("_n") - n_last)
    ranked = ranked.with_columns(is_test.alias("_is_test")).sort("_row")
    train_only = ranked.filter(pl.col("_n") < n_last + min_train)["user_id"].n_unique()
    out = _finish(ranked.drop("_n", "_pos", "_is_test"), ranked["_is_test"].to_numpy(),
                  "leave_last", None, train_only, {"n_last": n_last, "min_train": min_train})
    _check_user_time_order(out)
    return out


def temporal_split(
    interactions: pl.DataFrame | pl.LazyFrame,
    test_fraction: float = 0.2,
    cutoff: datetime | None = None,
) -> Split:
    """Global split by time: rows at or after `cutoff` are test.

    Without `cutoff`, it is the timestamp at the `1 - test_fraction` quantile, so
    about `test_fraction` of the rows are test. Users or items first seen after
    the cutoff are cold in test and counted in the report.
    """
    df = _as_frame(interactions)
    if df.height == 0:
        raise EvaluationError("temporal_split: interactions table is empty; nothing to split")
    if cutoff is None:
        if not 0.0 < test_fraction < 1.0:
            raise EvaluationError(f"temporal_split: test_fraction={test_fraction} must be in (0, 1)")
        ts = np.sort(df["timestamp"].dt.epoch("us").to_numpy())
        cut_us = int(ts[min(len(ts) - 1, int(np.floor((1.0 - test_fraction) * len(ts))))])
        is_test = df["timestamp"].dt.epoch("us").to_numpy() >= cut_us
        cutoff_str = str(df.filter(pl.Series(is_test))["timestamp"].min())
    else:
        is_test = (df["timestamp"] >= cutoff).to_numpy()
        cutoff_str = str(cutoff)
    out = _finish(df, is_test, "temporal", None, 0,
                  {"test_fraction": test_fraction, "cutoff": cutoff_str})
    # the columns' integers (one dtype on both sides), nulls left out as max() and min() leave them
    train_times = out.train["timestamp"].drop_nulls().to_physical().to_numpy()
    test_times = out.test["timestamp"].drop_nulls().to_physical().to_numpy()
    if train_times.size and test_times.size and train_times.max() > test_times.min():
        raise EvaluationError("temporal_split: a train row is later than a test row")
    return out


def stratified_split(
    interactions: pl.DataFrame | pl.LazyFrame, ratio: float = 0.75, seed: int = 42
) -> Split:
    """Random per-user split, Microsoft Recommenders' `python_stratified_split` semantics.

    Each row gets `np.random.RandomState(seed).rand()` in input order; within each
    user, rows sorted by that key are train while their rank (1-based) is
    `<= round(ratio * n_user_rows)` (round half to even, as pandas does). Given the
    same row order and seed, the result equals Recommenders' split row for row.
    A user with one row keeps it in train when round(ratio) = 1, else in test.
    """
    if not 0.0 < ratio < 1.0:
        raise EvaluationError(f"stratified_split: ratio={ratio} must be in (0, 1)")
    df = _as_frame(interactions)
    rand = np.random.RandomState(seed).rand(df.height)  # Recommenders draws with this legacy RNG
    ranked = df.with_columns(pl.Series("_rand", rand)).sort(["user_id", "_rand"]).with_columns(
        pl.len().over("user_id").alias("_n"),
        (pl.int_range(pl.len()).over("user_id") + 1).alias("_rank"),
    ).sort("_row")
    n_train = np.round(ratio * ranked["_n"].to_numpy())  # numpy rounds half to even, like pandas
    is_test = ranked["_rank"].to_numpy() > n_train
    train_only = int(
        ranked.filter(pl.Series(~is_test)).group_by("user_id").len().height
        - ranked.filter(pl.Series(is_test))["user_id"].n_unique()
    )
    return _finish(ranked.drop("_rand", "_n", "_rank"), is_test, "stratified", seed,
                   max(train_only, 0), {"ratio": ratio})


def cold_items_split(
    interactions: pl.DataFrame | pl.LazyFrame, fraction: float = 0.1, seed: int = 0
) -> Split:
    """Hold out every interaction of a seeded share of the items: those items are new in test.

    Of the distinct items in `interactions` (sorted by id), `round(fraction * n)`
    are drawn with `numpy.random.default_rng(seed)`; all their rows go to test and
    none to train, so no ranker has seen them. Only rankers that read what an item
    *is* (its content) can recommend them. The report counts them
    (`cold_test_items`, and `params["n_cold_items"]`); users whose every row was on
    a cold item are cold users in test (`cold_test_users`). A draw that leaves no
    cold item, or no training row, is an `EvaluationError`.
    """
    if not 0.0 < fraction < 1.0:
        raise EvaluationError(f"cold_items_split: fraction={fraction} must be in (0, 1)")
    df = _as_frame(interactions)
    items = np.sort(df["item_id"].cast(pl.Utf8).unique().to_numpy().astype(str))
    n_cold = int(round(fraction * len(items)))
    if n_cold == 0:
        raise EvaluationError(
            f"cold_items_split: fraction={fraction} of {len(items)} interacted items rounds to 0 cold "
            "items; expected a catalog with enough items (or a larger fraction) to hold some out")
    if n_cold >= len(items):
        raise EvaluationError(
            f"cold_items_split: fraction={fraction} of {len(items)} items makes every item cold; "
            "nothing would be left to train on")
    cold = items[np.random.default_rng(seed).permutation(len(items))[:n_cold]]
    is_test = df["item_id"].cast(pl.Utf8).is_in(cold.tolist()).to_numpy()
    out = _finish(df, is_test, "cold_items", seed, 0, {"fraction": fraction, "n_cold_items": n_cold})
    if out.train.height == 0:
        raise EvaluationError("cold_items_split: the cold items hold every interaction; nothing left to train on")
    return out


def make_split(
    interactions: pl.DataFrame | pl.LazyFrame, kind: str, seed: int = 42, **kwargs: Any
) -> Split:
    """Dispatch by name: `leave_last`, `temporal`, `stratified` or `cold_items` (the CLI's `--split`)."""
    if kind == "cold_items":
        return cold_items_split(interactions, seed=seed, **kwargs)
    if kind == "leave_last":
        return leave_last_out(interactions, **kwargs)
    if kind == "temporal":
        return temporal_split(interactions, **kwargs)
    if kind == "stratified":
        return stratified_split(interactions, seed=seed, **kwargs)
    raise EvaluationError(f"unknown split {kind!r}: expected one of {', '.join(SPLIT_KINDS)}")


def _check_user_time_order(split: Split) -> None:
    """For leave-last-out: no user's test row may precede one of their train rows."""
    if not split.test.height:
        return
    last_train = split.train.group_by("user_id").agg(pl.col("timestamp").max().alias("_tmax"))
    first_test = split.test.group_by("user_id").agg(pl.col("timestamp").min().alias("_tmin"))
    bad = first_test.join(last_train, on="user_id").filter(pl.col("_tmin") < pl.col("_tmax"))
    if bad.height:
        raise EvaluationError(
            f"leave_last_out leaks: user {bad['user_id'][0]!r} has a test row before a train row"
        )
