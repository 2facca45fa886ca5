"""`build_index`: the factory that checks the input and builds the configured index."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from workbench.errors import ConfigError
from workbench.index.base import VectorIndex
from workbench.index.config import IndexConfig
from workbench.index.exact_backend import ExactIndex
from workbench.index.scann_backend import ScannIndex, _build_scann
from workbench.index.vectors import _as_matrix, _normalise, embedding_fingerprint


def build_index(
    item_ids: Sequence[str] | np.ndarray,
    vectors: Any,
    config: IndexConfig | None = None,
    items: pl.DataFrame | None = None,
) -> VectorIndex:
    """Build an index over `vectors` (n, d), one row per id in `item_ids`.

    `items` (optional) is a frame with an `item_id` column and per-item columns to
    keep with the index (fusion weights); it is aligned to `item_ids`.
    """
    arr = _as_matrix(vectors, "item vectors")
    ids = np.asarray([str(i) for i in item_ids], dtype=str)
    if ids.shape[0] != arr.shape[0]:
        raise ConfigError(f"{ids.shape[0]} item ids but {arr.shape[0]} item vectors")
    if len(set(ids.tolist())) != ids.shape[0]:
        uniq, counts = np.unique(ids, return_counts=True)
        raise ConfigError(f"item ids are not unique: {uniq[counts > 1][:5].tolist()} repeat")
    fingerprint = embedding_fingerprint(arr)
    unit = _normalise(arr, "item vectors", names=ids)
    cfg = (config or IndexConfig()).resolved(arr.shape[0])
    table = _item_table(ids, items)
    start = time.perf_counter()
    if cfg.kind == "exact":
        index: VectorIndex = ExactIndex(ids, unit, cfg, fingerprint, table)
    else:
        searcher = _build_scann(unit, cfg)
        index = ScannIndex(ids, arr.shape[1], cfg, fingerprint, table, searcher)
    index.build_s = time.perf_counter() - start
    return index


def _item_table(ids: np.ndarray, items: pl.DataFrame | None) -> pl.DataFrame:
    base = pl.DataFrame({"item_id": ids.tolist()}, schema={"item_id": pl.Utf8})
    if items is None:
        return base
    if "item_id" not in items.columns:
        raise ConfigError("items frame: expected an item_id column")
    extra = items.select(pl.col("item_id").cast(pl.Utf8), pl.exclude("item_id"))
    joined = base.join(extra.unique("item_id", keep="first"), on="item_id", how="left")
    return joined
