"""Notebook 05's ranker experiments and the MovieLens benchmark, built on `workbench.evaluate.rankers`.

* `tune_rankers` / `fit_rankers`: each ranker's hyperparameters chosen on a
  validation split of train (`workbench.experiments.tuning`), then fitted on all of it;
* `fit_with_popularity`: those rankers beside popularity, the set the notebook compares;
* `tuned_table`, `metrics_table`, `cold_start_table`, `learning_curve_figure`: what the notebook shows;
* `mean_metrics`, `movielens_means`: the means its metrics.json records;
* `RECOMMENDERS_ML100K`, `movielens_runs`, `movielens_table`: Microsoft Recommenders'
  published MovieLens-100k numbers and ours under their protocol.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
import polars as pl

from workbench.catalog.splits import Split, stratified_split
from workbench.evaluate.bootstrap import bootstrap_ci
from workbench.evaluate.rankers import cold_start_metrics, movielens_protocol_metrics
from workbench.experiments.tuning import TuneResult, tune_ranker
from workbench.rankers.base import Ranker
from workbench.rankers.popularity import PopularityRanker

# Recommenders README, "Algorithm comparison" on MovieLens 100k: stratified 75/25
# split per user (seed 42), top-10, training items removed. MAP is their `map`
# (average precision over the top 10 divided by *all* of the user's test items).
RECOMMENDERS_ML100K: dict[str, dict[str, float]] = {
    "BPR (Cornac)": {"map": 0.132478, "ndcg@10": 0.441997, "precision@10": 0.388229, "recall@10": 0.212522},
    "BiVAE (Cornac)": {"ndcg@10": 0.475077},
}


def tune_rankers(budgets: Mapping[str, int], train: pl.DataFrame, items: Sequence[str], seed: int = 0,
                 item_embeddings: np.ndarray | None = None, fixed: Mapping[str, Mapping] | None = None,
                 validation: str = "leave_last") -> dict[str, TuneResult]:
    """`tune_ranker` for each ranker of `budgets` (name -> trials), on a validation split of `train`.

    `fixed[name]` holds parameters kept out of the search (e.g. the `ci` profile's
    epochs); rankers without hyperparameters (popularity) get one trial.
    """
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


def fit_with_popularity(tuned: Mapping[str, TuneResult], train: pl.DataFrame, items: Sequence[str],
                        item_embeddings: np.ndarray | None = None, seed: int = 0,
                        eval_fn: Callable[[Ranker], dict[str, float]] | None = None) -> dict[str, Ranker]:
    """The rankers notebook 05 compares: popularity (nothing to tune) first, then `fit_rankers(tuned, ...)`."""
    return {"popularity": PopularityRanker().fit(train, items),
            **fit_rankers(tuned, train, items, item_embeddings=item_embeddings, seed=seed, eval_fn=eval_fn)}


def mean_metrics(per_user: Mapping[str, Mapping[str, np.ndarray]], names: Sequence[str], k: int = 10,
                 metrics: Sequence[str] = ("ndcg", "recall", "mrr")) -> dict[str, dict[str, float]]:
    """`{ranker: {"<metric>@k": mean over users}}` (NaN users left out, 4 decimals) for the `names` evaluated."""
    return {n: {f"{m}@{k}": round(float(np.nanmean(per_user[n][f"{m}@{k}"])), 4) for m in metrics}
            for n in names if n in per_user}


def movielens_means(rows: Sequence[Mapping[str, object]]) -> dict[str, dict[str, float]]:
    """`movielens_runs` rows averaged over seeds: `{ranker: {metric: mean}}` (4 decimals), rankers sorted."""
    runs = pl.DataFrame([{k: v for k, v in r.items() if k != "params"} for r in rows]).group_by("ranker")
    return {r["ranker"]: {k: round(v, 4) for k, v in r.items() if k not in ("ranker", "seed")}
            for r in runs.agg(pl.exclude("seed").mean()).sort("ranker").to_dicts()}
