"""Evaluate a fitted ranker the way notebook 05, tuning and the MovieLens benchmark do.

* `evaluate_ranker`: full-ranking metrics of a fitted ranker on a test split
  (every item ranked, the user's training items excluded), optionally per user
  for bootstrap intervals;
* `epoch_evaluator`: an `eval_fn` for the rankers, so `history` holds learning curves;
* `oracle_metrics`: what the synthetic generator's own next-item probabilities
  score under the same protocol (the ceiling a ranker can hope for; with
  `order=False`, the ceiling of rankers that ignore order);
* `cold_start_metrics`: on a `cold_items` split, how well a ranker recommends
  products nobody interacted with in training (recall@k of the held-out items);
* `ordered_apart`: whether rankers keep an order with bootstrap intervals apart;
* `movielens_protocol_metrics`: our metrics in Microsoft Recommenders' conventions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Literal, overload

import numpy as np
import polars as pl
import scipy.sparse as sp

from workbench.catalog.splits import Split
from workbench.errors import EvaluationError
from workbench.evaluate.bootstrap import bootstrap_ci
from workbench.evaluate.oracle import oracle_scores
from workbench.metrics import (
    coverage,
    ranking_metrics,
    relevance_matrix,
    top_k_from_scores,
)
from workbench.rankers.base import Ranker


def test_relevance(test: pl.DataFrame, users: Sequence[str] | np.ndarray,
                   item_ids: Sequence[str] | np.ndarray) -> sp.csr_matrix:
    """Binary (n_users, n_items) relevance of the test interactions; unknown items ignored."""
    return relevance_matrix(test, list(users), list(item_ids), query_col="user_id",
                            relevance_col=None, unknown_items="ignore")


@overload
def evaluate_ranker(
    ranker: Ranker, test: pl.DataFrame, k: int = 10, ks: Sequence[int] = (10,),
    per_query: Literal[False] = False, users: Sequence[str] | np.ndarray | None = None, convention: str = "trec",
) -> dict[str, float]: ...


@overload
def evaluate_ranker(
    ranker: Ranker, test: pl.DataFrame, k: int = 10, ks: Sequence[int] = (10,),
    per_query: Literal[True] = ..., users: Sequence[str] | np.ndarray | None = None, convention: str = "trec",
) -> dict[str, np.ndarray]: ...


def evaluate_ranker(
    ranker: Ranker, test: pl.DataFrame, k: int = 10, ks: Sequence[int] = (10,),
    per_query: bool = False, users: Sequence[str] | np.ndarray | None = None, convention: str = "trec",
) -> dict[str, float] | dict[str, np.ndarray]:
    """Metrics of `ranker.recommend(users, k)` against `test` (default users: all test users)."""
    user_ids = np.sort(test["user_id"].unique().to_numpy().astype(str)) if users is None else np.asarray(users)
    recs = ranker.recommend(user_ids, max(k, *ks), exclude_seen=True)
    rel = test_relevance(test, user_ids, ranker.item_ids)
    if per_query:
        return ranking_metrics(recs.indices, rel, ks=tuple(ks), per_query=True, convention=convention)
    out = ranking_metrics(recs.indices, rel, ks=tuple(ks), convention=convention)
    out[f"coverage@{k}"] = coverage(recs.indices[:, :k], len(ranker.item_ids))
    out["cold_users"] = float(recs.n_cold)
    return out


def epoch_evaluator(test: pl.DataFrame, k: int = 10,
                    metrics: Sequence[str] = ("ndcg", "recall")) -> Callable[[Ranker], dict[str, float]]:
    """An `eval_fn` that scores the ranker on `test` after every epoch (learning curves)."""
    users = np.sort(test["user_id"].unique().to_numpy().astype(str))

    def evaluate(ranker: Ranker) -> dict[str, float]:
        res = evaluate_ranker(ranker, test, k=k, ks=(k,), users=users)
        return {f"test_{m}@{k}": res[f"{m}@{k}"] for m in metrics}

    return evaluate


@overload
def oracle_metrics(
    truth: Mapping[str, pl.DataFrame], train: pl.DataFrame, test: pl.DataFrame,
    item_ids: Sequence[str], k: int = 10, ks: Sequence[int] = (10,), per_query: Literal[False] = False,
    order: bool = True,
) -> dict[str, float]: ...


@overload
def oracle_metrics(
    truth: Mapping[str, pl.DataFrame], train: pl.DataFrame, test: pl.DataFrame,
    item_ids: Sequence[str], k: int = 10, ks: Sequence[int] = (10,), per_query: Literal[True] = ...,
    order: bool = True,
) -> dict[str, np.ndarray]: ...


def oracle_metrics(
    truth: Mapping[str, pl.DataFrame], train: pl.DataFrame, test: pl.DataFrame,
    item_ids: Sequence[str], k: int = 10, ks: Sequence[int] = (10,), per_query: bool = False,
    order: bool = True,
) -> dict[str, float] | dict[str, np.ndarray]:
    """Metrics of the synthetic generator's own next-item scores under the same protocol.

    The oracle knows each user's taste and uses their last training item as the
    previous item (`workbench.evaluate.oracle.oracle_scores`); training items
    are excluded exactly as for the rankers. `order=False` gives the ceiling of
    rankers that ignore order (BPR, EASE, item-kNN): the same taste and
    popularity, no previous item.
    """
    users = np.sort(test["user_id"].unique().to_numpy().astype(str))
    last_of: dict[str, str] = {}
    if order:
        last = (train.with_row_index("_row").sort("timestamp", "_row").group_by("user_id")
                .agg(pl.col("item_id").last()))
        last_of = dict(zip(last["user_id"].to_list(), last["item_id"].to_list(), strict=True))
    scores = oracle_scores(truth, list(users), [last_of.get(u) for u in users])
    truth_order = {it: i for i, it in enumerate(truth["items"]["item_id"].to_list())}
    scores = scores[:, [truth_order[i] for i in item_ids]]
    seen = relevance_matrix(train, list(users), list(item_ids), query_col="user_id",
                            relevance_col=None, unknown_queries="ignore")
    ranked = top_k_from_scores(scores, max(k, *ks), exclude=seen)
    rel = test_relevance(test, users, item_ids)
    if per_query:
        return ranking_metrics(ranked, rel, ks=tuple(ks), per_query=True)
    return ranking_metrics(ranked, rel, ks=tuple(ks))


def cold_start_metrics(ranker: Ranker, split: Split, k: int = 10) -> dict[str, float]:
    """How a ranker fitted on `split.train` (a `cold_items` split) serves the held-out, unseen items.

    For every test user with a training history (cold users are served popularity
    and counted apart), the test items are that user's interactions with cold
    items, none of which any ranker saw in training. Returns

    * `recall@k`: share of a user's cold items in their real top-k list over the
      whole catalog (training items excluded), averaged over users: can the
      ranker *recommend* new products at all? ID-only rankers score 0 here;
    * `recall@k_among_cold`: the same when only the cold items are ranked: does
      its order of new products make sense? (random order: about k / n_cold);
    * `cold_share@k`: share of all top-k slots that hold a cold item;
    * `users`, `cold_users`, `cold_items`: counts.
    """
    report = split.report
    if report.kind != "cold_items":
        raise EvaluationError(f"cold_start_metrics: a {report.kind} split; expected a cold_items split "
                              "(workbench.catalog.splits.cold_items_split)")
    cold_ids = np.sort(split.test["item_id"].cast(pl.Utf8).unique().to_numpy().astype(str))
    if len(cold_ids) == 0:
        raise EvaluationError("cold_start_metrics: the split holds out no items; nothing to evaluate")
    users_all = np.sort(split.test["user_id"].unique().to_numpy().astype(str))
    _, cold_user = ranker.user_index(users_all)
    users = users_all[~cold_user]
    if len(users) == 0:
        raise EvaluationError("cold_start_metrics: every test user is cold (no training history)")
    item_ids = list(ranker.item_ids)
    rel = test_relevance(split.test, users, item_ids)
    recs = ranker.recommend(users, k, exclude_seen=True)
    full = ranking_metrics(recs.indices, rel, ks=(k,), metrics=("recall",))[f"recall@{k}"]
    cold_cols = ranker.item_index(cold_ids)
    is_cold = np.zeros(len(item_ids), dtype=bool)
    is_cold[cold_cols] = True
    share = float(is_cold[recs.indices[recs.indices >= 0]].sum() / max(1, recs.indices.size))
    # Among the cold items only: score them, rank, compare with the same relevance columns.
    kk = min(k, len(cold_ids))
    scores = ranker.score(users, cold_ids)
    ranked_local = top_k_from_scores(scores, kk)
    ranked = np.where(ranked_local >= 0, cold_cols[np.maximum(ranked_local, 0)], -1)
    among = ranking_metrics(ranked, rel, ks=(kk,), metrics=("recall",))[f"recall@{kk}"]
    return {f"recall@{k}": float(full), f"recall@{k}_among_cold": float(among), f"cold_share@{k}": share,
            "users": float(len(users)), "cold_users": float(cold_user.sum()), "cold_items": float(len(cold_ids))}


def ordered_apart(per_query: Mapping[str, np.ndarray], order: Sequence[str], n_resamples: int = 1000,
                  seed: int = 0, confidence: float = 0.95) -> bool:
    """True when the mean of each ranker in `order` beats the next one with bootstrap intervals apart.

    `per_query[name]` holds one ranker's per-user metric (NaN: undefined);
    `order` lists the names best first. Intervals: `bootstrap_ci` percentile
    intervals of each mean; "apart" means the lower bound of each is above the
    upper bound of the next.
    """
    ci = bootstrap_ci({n: per_query[n] for n in order}, n_resamples=n_resamples, seed=seed,
                      confidence=confidence)
    return all(ci[a].low > ci[b].high for a, b in zip(order, order[1:], strict=False))


def movielens_protocol_metrics(ranker: Ranker, test: pl.DataFrame, k: int = 10) -> dict[str, float]:
    """MAP, nDCG@10, Precision@10, Recall@10 in Recommenders' python_evaluation conventions.

    Their `map` divides by all of a user's test items (our `convention="trec"`),
    nDCG uses binary gain with the ideal list cut at k (same for binary relevance),
    precision divides by k; averages over users with test items.
    """
    m = evaluate_ranker(ranker, test, k=k, ks=(k,), convention="trec")
    return {"map": m[f"map@{k}"], f"ndcg@{k}": m[f"ndcg@{k}"],
            f"precision@{k}": m[f"precision@{k}"], f"recall@{k}": m[f"recall@{k}"]}
