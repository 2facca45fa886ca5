"""Evaluate rankers the way notebook 05 and the MovieLens benchmark do.

* `evaluate_ranker`: full-ranking metrics of a fitted ranker on a test split
  (every item ranked, the user's training items excluded), optionally per user
  for bootstrap intervals;
* `epoch_evaluator`: an `eval_fn` for the rankers, so `history` holds learning curves;
* `oracle_metrics`: what the synthetic generator's own next-item probabilities
  score under the same protocol (the ceiling a ranker can hope for);
* `cold_start_metrics`: on a `cold_items` split, how well a ranker recommends
  products nobody interacted with in training (recall@k of the held-out items);
* `ordered_apart`: whether rankers keep an order with bootstrap intervals apart;
* `RECOMMENDERS_ML100K`: Microsoft Recommenders' published MovieLens-100k numbers
  and `movielens_protocol_metrics`, which computes ours in their conventions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Literal, overload

import numpy as np
import plotly.graph_objects as go
import polars as pl
import scipy.sparse as sp

from workbench.errors import EvaluationError
from workbench.evaluate.metrics import (
    coverage,
    ranking_metrics,
    relevance_matrix,
    top_k_from_scores,
)
from workbench.evaluate.splits import Split
from workbench.rankers.base import Ranker
from workbench.rankers.tuning import TuneResult

# Recommenders README, "Algorithm comparison" on MovieLens 100k: stratified 75/25
# split per user (seed 42), top-10, training items removed. MAP is their `map`
# (average precision over the top 10 divided by *all* of the user's test items).
RECOMMENDERS_ML100K: dict[str, dict[str, float]] = {
    "BPR (Cornac)": {"map": 0.132478, "ndcg@10": 0.441997, "precision@10": 0.388229, "recall@10": 0.212522},
    "BiVAE (Cornac)": {"ndcg@10": 0.475077},
}


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
) -> dict[str, float]: ...


@overload
def oracle_metrics(
    truth: Mapping[str, pl.DataFrame], train: pl.DataFrame, test: pl.DataFrame,
    item_ids: Sequence[str], k: int = 10, ks: Sequence[int] = (10,), per_query: Literal[True] = ...,
) -> dict[str, np.ndarray]: ...


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
    scores = oracle_scores(dict(truth), list(users), [last_of.get(u) for u in users])
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
                              "(workbench.evaluate.splits.cold_items_split)")
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
    from workbench.evaluate.bootstrap import bootstrap_ci

    ci = bootstrap_ci({n: per_query[n] for n in order}, n_resamples=n_resamples, seed=seed,
                      confidence=confidence)
    return all(ci[a].low > ci[b].high for a, b in zip(order, order[1:], strict=False))


def tune_rankers(budgets: Mapping[str, int], train: pl.DataFrame, items: Sequence[str], seed: int = 0,
                 item_embeddings: np.ndarray | None = None, fixed: Mapping[str, Mapping] | None = None,
                 validation: str = "leave_last") -> dict[str, TuneResult]:
    """`tune_ranker` for each ranker of `budgets` (name -> trials), on a validation split of `train`.

    `fixed[name]` holds parameters kept out of the search (e.g. the `ci` profile's
    epochs); rankers without hyperparameters (popularity) get one trial.
    """
    from workbench.rankers.tuning import tune_ranker

    fixed = fixed or {}
    return {name: tune_ranker(name, train, items, budget, seed, item_embeddings=item_embeddings,
                              fixed=fixed.get(name), validation=validation)
            for name, budget in budgets.items()}


def fit_rankers(tuned: Mapping[str, TuneResult], train: pl.DataFrame, items: Sequence[str],
                item_embeddings: np.ndarray | None = None, seed: int = 0,
                eval_fn: Callable[[Ranker], dict[str, float]] | None = None) -> dict[str, Ranker]:
    """Each ranker built with its chosen parameters and fitted on all of `train`.

    `eval_fn` (e.g. `epoch_evaluator(test)`) is attached to trained rankers for learning curves;
    it only records, it never chooses.
    """
    out = {}
    for name, result in tuned.items():
        ranker = result.make(seed=seed)
        if eval_fn is not None and hasattr(ranker, "eval_fn"):
            ranker.eval_fn = eval_fn
        out[name] = ranker.fit(train, items, item_embeddings=item_embeddings)
    return out


def tuned_table(tuned: Mapping[str, TuneResult]) -> pl.DataFrame:
    """One row per ranker: trials run, the best validation metric and the chosen parameters."""
    def fmt(v: object) -> str:
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    return pl.DataFrame([{"ranker": n, "trials": len(r.trials), f"validation {r.metric}": round(r.value, 4),
                          "chosen": (r.note if r.note else
                                     ", ".join(f"{k}={fmt(v)}" for k, v in sorted(r.params.items())) or "-")}
                         for n, r in tuned.items()])


def metrics_table(per_user: Mapping[str, Mapping[str, np.ndarray]], k: int = 10,
                  metrics: Sequence[str] = ("ndcg", "recall", "mrr"), n_resamples: int = 1000,
                  seed: int = 0) -> pl.DataFrame:
    """Mean and 95 % bootstrap interval (resampling users) of each metric, one row per ranker."""
    from workbench.evaluate.bootstrap import bootstrap_ci

    rows = []
    for name, pq in per_user.items():
        ci = bootstrap_ci({m: pq[f"{m}@{k}"] for m in metrics}, n_resamples=n_resamples, seed=seed)
        rows.append({"ranker": name, **{f"{m}@{k}": f"{iv.mean:.3f} [{iv.low:.3f}, {iv.high:.3f}]"
                                        for m, iv in ci.items()}})
    return pl.DataFrame(rows)


def cold_start_table(rankers: Mapping[str, Ranker], split: Split, k: int = 10) -> pl.DataFrame:
    """`cold_start_metrics` of each ranker, with whether it reads item content (`Ranker.reads_content`)."""
    rows = []
    for name, ranker in rankers.items():
        m = cold_start_metrics(ranker, split, k=k)
        rows.append({"ranker": name, "uses content": bool(ranker.reads_content),
                     f"recall@{k}": m[f"recall@{k}"], f"recall@{k} among cold": m[f"recall@{k}_among_cold"],
                     f"cold share of top-{k}": m[f"cold_share@{k}"]})
    return pl.DataFrame(rows)


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


def movielens_runs(interactions: pl.DataFrame, items: Sequence[str], budgets: Mapping[str, int],
                   seeds: Sequence[int] = (42, 43, 44), fixed: Mapping[str, Mapping] | None = None,
                   k: int = 10, ratio: float = 0.75,
                   log: Callable[[str], None] | None = None) -> list[dict[str, object]]:
    """Recommenders' MovieLens protocol, each ranker tuned on validation, for each seed.

    Per seed: `stratified_split(ratio, seed)` (their split, row for row); each
    ranker of `budgets` is tuned by `tune_ranker` on a stratified validation split
    of that seed's *train* rows (never its test rows), refitted on all train rows
    with the chosen parameters and scored in their conventions
    (`movielens_protocol_metrics`). Returns one row per (ranker, seed): the
    metrics, the chosen parameters (`params`) and the validation nDCG.
    """
    from workbench.evaluate.splits import stratified_split
    from workbench.rankers.tuning import tune_ranker

    fixed = fixed or {}
    rows: list[dict[str, object]] = []
    for seed in seeds:
        split = stratified_split(interactions, ratio, seed=seed)
        for name, budget in budgets.items():
            tuned = tune_ranker(name, split.train, items, budget, seed, validation="stratified",
                                fixed=fixed.get(name))
            ranker = tuned.make(seed=seed).fit(split.train, items)
            m = movielens_protocol_metrics(ranker, split.test, k=k)
            rows.append({"ranker": name, "seed": seed, **m, "validation_ndcg": tuned.value,
                         "params": dict(tuned.params)})
            if log is not None:
                log(f"seed {seed} {name:<10} nDCG@{k} {m[f'ndcg@{k}']:.4f} (validation {tuned.value:.4f}; "
                    f"{', '.join(f'{a}={b:.4g}' if isinstance(b, float) else f'{a}={b}' for a, b in sorted(tuned.params.items()))})")
    return rows


def movielens_table(rows: Sequence[Mapping[str, object]], k: int = 10) -> pl.DataFrame:
    """Mean ± standard deviation over seeds per ranker, beside Recommenders' published rows."""
    cols = ("map", f"ndcg@{k}", f"precision@{k}", f"recall@{k}")
    ours = []
    for name in dict.fromkeys(r["ranker"] for r in rows):
        runs = [r for r in rows if r["ranker"] == name]
        cell = {}
        for c in cols:
            v = np.array([r[c] for r in runs], dtype=np.float64)
            sd = float(v.std(ddof=1)) if len(v) > 1 else 0.0
            cell[c] = f"{v.mean():.4f} ± {sd:.4f}"
        ours.append({"source": "ours", "ranker": name, "seeds": len(runs), **cell})
    theirs = [{"source": "Recommenders README", "ranker": n, "seeds": None,
               **{c: (f"{v[c]:.6f}" if c in v else "") for c in cols}} for n, v in RECOMMENDERS_ML100K.items()]
    return pl.DataFrame(ours + theirs)
