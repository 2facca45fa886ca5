"""`workbench recommend`: split a catalog's interactions, train a ranker, write and score its lists.

`run_recommend(RecommendConfig(...))` writes into `out`:

* `recommendations.parquet`: user_id, item_id, rank (1-based), score, for every
  test user, with each user's training items excluded;
* `train.parquet`, `test.parquet`: the split it used (input columns unchanged),
  so anyone can score the lists with their own tools;
* `metrics.json`: what it returns, without the timings (those go to `timings.json`).

Cold test users (no training history) get popularity; their count is in the result.
Rankers that read item content (`MODELS[name].uses_content`) get
`workbench.rankers.features.item_content` of the catalog's products, with the
fused embeddings of `--embeddings` when given.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from workbench.catalog import read_catalog
from workbench.catalog.splits import SPLIT_KINDS, Split, make_split
from workbench.checkpoint import json_safe
from workbench.errors import CatalogError, ConfigError, EvaluationError
from workbench.files import write_json_atomic, write_parquet_atomic
from workbench.metrics import coverage, ranking_metrics, relevance_matrix
from workbench.rankers.base import Recommendations, load_item_embeddings
from workbench.rankers.features import item_content
from workbench.rankers.registry import MODELS, make_ranker
from workbench.reproducibility import split_timings

__all__ = ["MODELS", "RecommendConfig", "make_ranker", "run_recommend"]


@dataclass
class RecommendConfig:
    """Settings of `workbench recommend` (one CLI flag per field)."""

    catalog: str  # --catalog DIR
    model: str = "bpr"  # --model: a name of workbench.rankers.MODELS
    split: str = "stratified"  # --split stratified|leave_last|temporal
    seed: int = 42  # --seed: split (stratified) and training seed
    k: int = 10  # --k
    out: str = "recommendations"  # --out OUTDIR
    embeddings: str | None = None  # --embeddings: items.parquet with a `fused` column (optional)
    epochs: int | None = None  # --epochs: override the model's default
    device: str = "auto"  # --device
    ratio: float = 0.75  # --ratio: train share of each user's rows (stratified)
    test_fraction: float = 0.2  # --test-fraction (temporal)
    progress: bool = True


def evaluate_recommendations(recs: Recommendations, users: np.ndarray, test: pl.DataFrame,
                             item_ids: np.ndarray, k: int) -> dict[str, float]:
    """Full-ranking metrics of `recs` (rows = `users`) against the test interactions."""
    rel = relevance_matrix(test, list(users), list(item_ids), query_col="user_id",
                           relevance_col=None, unknown_items="ignore")
    metrics = ranking_metrics(recs.indices, rel, ks=(k,))
    metrics[f"coverage@{k}"] = coverage(recs.indices, len(item_ids))
    return {key: float(v) for key, v in metrics.items()}


def recommendations_frame(users: np.ndarray, recs: Recommendations) -> pl.DataFrame:
    """Long table user_id, item_id, rank (1-based), score; padding (-1) rows dropped."""
    n, k = recs.indices.shape
    keep = recs.indices.reshape(-1) >= 0
    return pl.DataFrame({
        "user_id": np.repeat(np.asarray(users, dtype=str), k)[keep],
        "item_id": recs.item_ids.reshape(-1)[keep],
        "rank": np.tile(np.arange(1, k + 1, dtype=np.int32), n)[keep],
        "score": recs.scores.reshape(-1)[keep].astype(np.float64),
    })


def run_recommend(config: RecommendConfig) -> dict[str, Any]:
    """Split, train, recommend for every test user, write the files, return the metrics dict."""
    if config.model not in MODELS:
        raise ConfigError(f"--model {config.model!r}: expected one of {', '.join(MODELS)}")
    if config.split not in SPLIT_KINDS:
        raise ConfigError(f"--split {config.split!r}: expected one of {', '.join(SPLIT_KINDS)}")
    cat = read_catalog(config.catalog)
    if cat.interactions is None:
        raise CatalogError(f"{cat.root}: the catalog has no interactions.parquet; rankers need interactions")
    item_ids = cat.products.select(pl.col("item_id")).collect()["item_id"].to_numpy().astype(str)
    kwargs: dict[str, Any] = {}
    if config.split == "stratified":
        kwargs["ratio"] = config.ratio
    elif config.split == "temporal":
        kwargs["test_fraction"] = config.test_fraction
    split: Split = make_split(cat.interactions, config.split, seed=config.seed, **kwargs)
    if split.test.height == 0:
        raise EvaluationError(
            f"{config.split} split of {cat.root / 'interactions.parquet'} left the test set empty "
            f"({split.report.n_rows} rows, {split.report.train_only_users} users too short to hold out); "
            "nothing to evaluate")
    embeddings = load_item_embeddings(config.embeddings, item_ids) if config.embeddings else None
    if MODELS[config.model].uses_content:
        # what the products are (category, brand, attributes, price) plus the fused embeddings
        embeddings = item_content(cat.products, item_ids, embeddings)
    # epochs only means something to trained rankers (BPR, sequential)
    epochs = config.epochs if MODELS[config.model].trained else None
    ranker = make_ranker(config.model, seed=config.seed, epochs=epochs, device=config.device,
                         progress=config.progress)
    ranker.fit(split.train, item_ids, item_embeddings=embeddings)
    users = np.sort(split.test["user_id"].unique().to_numpy().astype(str))
    recs = ranker.recommend(users, config.k, exclude_seen=True)
    metrics = evaluate_recommendations(recs, users, split.test, item_ids, config.k)

    out = Path(config.out)
    write_parquet_atomic(out / "recommendations.parquet", recommendations_frame(users, recs))
    write_parquet_atomic(out / "train.parquet", split.train)
    write_parquet_atomic(out / "test.parquet", split.test)
    result = {
        "catalog": str(cat.root),
        "model": config.model,
        "split": config.split,
        "seed": config.seed,
        "k": config.k,
        "n_test_users": len(users),
        "cold_users": recs.n_cold,
        "metrics": {key: round(v, 6) for key, v in sorted(metrics.items())},
        "split_report": split.report.to_dict(),
        "history": [{key: v for key, v in rec.items() if isinstance(v, int | float)}
                    for rec in getattr(ranker, "history", [])],
    }
    # Seconds and samples/s vary run to run: they go to timings.json, so that the same
    # seed on the same machine gives a byte-identical metrics.json.
    kept, timings = split_timings(json_safe(result))  # a diverged loss is NaN: null in JSON
    write_json_atomic(out / "metrics.json", kept)
    write_json_atomic(out / "timings.json", timings)
    return result
