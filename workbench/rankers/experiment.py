"""Evaluate rankers the way notebook 05 and the MovieLens benchmark do.

* `evaluate_ranker`: full-ranking metrics of a fitted ranker on a test split
  (every item ranked, the user's training items excluded), optionally per user
  for bootstrap intervals;
* `epoch_evaluator`: an `eval_fn` for the rankers, so `history` holds learning curves;
* `oracle_metrics`: what the synthetic generator's own next-item probabilities
  score under the same protocol (the ceiling a ranker can hope for);
* `RECOMMENDERS_ML100K`: Microsoft Recommenders' published MovieLens-100k numbers
  and `movielens_protocol_metrics`, which computes ours in their conventions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
import polars as pl

from workbench.evaluate.metrics import (
    coverage,
    ranking_metrics,
    relevance_matrix,
    top_k_from_scores,
)
from workbench.rankers.base import Ranker

# Recommenders README, "Algorithm comparison" on MovieLens 100k: stratified 75/25
# split per user (seed 42), top-10, training items removed. MAP is their `map`
# (average precision over the top 10 divided by *all* of the user's test items).
RECOMMENDERS_ML100K: dict[str, dict[str, float]] = {
    "BPR (Cornac)": {"map": 0.132478, "ndcg@10": 0.441997, "precision@10": 0.388229, "recall@10": 0.212522},
    "BiVAE (Cornac)": {"ndcg@10": 0.475077},
}


def test_relevance(test: pl.DataFrame, users: Sequence[str], item_ids: Sequence[str]):
    """Binary (n_users, n_items) relevance of the test interactions; unknown items ignored."""
    return relevance_matrix(test, list(users), list(item_ids), query_col="user_id",
                            relevance_col=None, unknown_items="ignore")


def evaluate_ranker(
    ranker: Ranker, test: pl.DataFrame, k: int = 10, ks: Sequence[int] = (10,),
    per_query: bool = False, users: Sequence[str] | None = None, convention: str = "trec",
) -> dict[str, float] | dict[str, np.ndarray]:
    """Metrics of `ranker.recommend(users, k)` against `test` (default users: all test users)."""
    users = np.sort(test["user_id"].unique().to_numpy().astype(str)) if users is None else np.asarray(users)
    recs = ranker.recommend(users, max(k, *ks), exclude_seen=True)
    rel = test_relevance(test, users, ranker.item_ids)
    out = ranking_metrics(recs.indices, rel, ks=tuple(ks), per_query=per_query, convention=convention)
    if not per_query:
        out = {key: float(v) for key, v in out.items()}
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


def oracle_metrics(
    truth: Mapping[str, pl.DataFrame], train: pl.DataFrame, test: pl.DataFrame,
    item_ids: Sequence[str], k: int = 10, ks: Sequence[int] = (10,), per_query: bool = False,
) -> dict[str, float] | dict[str, np.ndarray]:
    """Metrics of the synthetic generator's own next-item scores under the same protocol.

    The oracle knows each user's taste and uses their last training item as the
    previous item (`workbench.catalog.synthetic.oracle_scores`); training items
    are excluded exactly as for the rankers.
    """
    from workbench.catalog.synthetic import oracle_scores

    users = np.sort(test["user_id"].unique().to_numpy().astype(str))
    last = (train.with_row_index("_row").sort("timestamp", "_row").group_by("user_id")
            .agg(pl.col("item_id").last()))
    last_of = dict(zip(last["user_id"].to_list(), last["item_id"].to_list(), strict=True))
    scores = oracle_scores(truth, list(users), [last_of.get(u) for u in users])
    truth_order = {it: i for i, it in enumerate(truth["items"]["item_id"].to_list())}
    scores = scores[:, [truth_order[i] for i in item_ids]]
    seen = relevance_matrix(train, list(users), list(item_ids), query_col="user_id",
                            relevance_col=None, unknown_queries="ignore")
    ranked = top_k_from_scores(scores, max(k, *ks), exclude=seen)
    out = ranking_metrics(ranked, test_relevance(test, users, item_ids), ks=tuple(ks), per_query=per_query)
    return out if per_query else {key: float(v) for key, v in out.items()}


def learning_curve_figure(histories: Mapping[str, Sequence[Mapping[str, float]]],
                          metric: str = "test_ndcg@10") -> go.Figure:
    """Training loss and a test metric per epoch for each ranker (two panels side by side)."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("training loss", metric))
    for i, (name, hist) in enumerate(histories.items()):
        if not hist:
            continue
        epochs = [h["epoch"] for h in hist]
        colour = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")[i % 4]
        fig.add_trace(go.Scatter(x=epochs, y=[h["loss"] for h in hist], name=f"{name} loss",
                                 line={"color": colour}), row=1, col=1)
        if metric in hist[0]:
            fig.add_trace(go.Scatter(x=epochs, y=[h[metric] for h in hist], name=f"{name} {metric}",
                                     line={"color": colour, "dash": "dot"}), row=1, col=2)
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(height=380, margin={"t": 40, "b": 40}, legend={"orientation": "h", "y": -0.25})
    return fig


def movielens_protocol_metrics(ranker: Ranker, test: pl.DataFrame, k: int = 10) -> dict[str, float]:
    """MAP, nDCG@10, Precision@10, Recall@10 in Recommenders' python_evaluation conventions.

    Their `map` divides by all of a user's test items (our `convention="trec"`),
    nDCG uses binary gain with the ideal list cut at k (same for binary relevance),
    precision divides by k; averages over users with test items.
    """
    m = evaluate_ranker(ranker, test, k=k, ks=(k,), convention="trec")
    return {"map": m[f"map@{k}"], f"ndcg@{k}": m[f"ndcg@{k}"],
            f"precision@{k}": m[f"precision@{k}"], f"recall@{k}": m[f"recall@{k}"]}
