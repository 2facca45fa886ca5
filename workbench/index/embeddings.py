"""The embeddings file `<work>/embeddings/items.parquet`, one column read as a matrix."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from workbench.errors import CatalogError


@dataclass
class ItemEmbeddings:
    """One column of `<work>/embeddings/items.parquet` as a matrix, plus per-item info."""

    item_ids: np.ndarray
    vectors: np.ndarray
    column: str
    info: pl.DataFrame  # item_id + weight_<modality> columns, aligned with item_ids
    meta: dict[str, Any] = field(default_factory=dict)


def read_item_embeddings(path: str | Path, column: str = "fused") -> ItemEmbeddings:
    """Read `column` (`fused`, `text`, `image`, `audio`) of the embeddings file.

    Rows where the column is null (items lacking that modality) are left out.
    `path` is the parquet file or the `<work>/embeddings` folder holding it.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "items.parquet"
    if not path.is_file():
        raise CatalogError(f"{path}: embeddings file not found (run the encoders notebook first)")
    frame = pl.read_parquet(path)
    if "item_id" not in frame.columns or column not in frame.columns:
        raise CatalogError(
            f"{path}: expected columns item_id and {column!r}; found {frame.columns}"
        )
    frame = frame.filter(pl.col(column).is_not_null())
    if frame.height == 0:
        raise CatalogError(f"{path}: no rows with a {column!r} embedding; nothing to index")
    vectors = np.asarray(frame[column].to_list(), dtype=np.float32)
    if vectors.ndim != 2:
        raise CatalogError(f"{path}: column {column!r} holds vectors of different lengths")
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    weights = [c for c in frame.columns if c.startswith("weight_")]
    return ItemEmbeddings(
        item_ids=np.asarray(frame["item_id"].cast(pl.Utf8).to_list(), dtype=str),
        vectors=vectors,
        column=column,
        info=frame.select("item_id", *weights),
        meta=meta,
    )
