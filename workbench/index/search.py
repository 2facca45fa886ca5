"""Cross-modal queries: encode text, images or audio with the towers, search, and explain
each hit by the item's fusion weights."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import polars as pl
import torch

from workbench.errors import ConfigError
from workbench.index.base import VectorIndex


class QueryEncoder(Protocol):
    def encode_text(self, texts: list[str]) -> Any: ...
    def encode_images(self, paths: list[Path]) -> Any: ...
    def encode_audio(self, paths: list[Path]) -> Any: ...


def _to_numpy(vectors: Any) -> np.ndarray:
    if isinstance(vectors, torch.Tensor):
        return vectors.detach().float().cpu().numpy()
    return np.asarray(vectors, dtype=np.float32)


def search_vectors(
    index: VectorIndex,
    query_vectors: Any,
    k: int = 10,
    labels: Sequence[str] | None = None,
) -> pl.DataFrame:
    """Search and explain: one row per (query, rank) with the item's fusion weights.

    Columns: query, rank (1-based), item_id, score, weight_<modality>... and
    `leading_modality` (the modality with the largest fusion weight for that item;
    tied modalities joined by "+").
    """
    q = _to_numpy(query_vectors)
    if q.ndim == 1:
        q = q[None, :]
    ids, scores = index.search(q, k)
    n = ids.shape[0]
    names = list(labels) if labels is not None else [str(i) for i in range(n)]
    if len(names) != n:
        raise ConfigError(f"{len(names)} query labels for {n} query vectors")
    hits = pl.DataFrame(
        {
            "query": np.repeat(np.asarray(names, dtype=object), k).tolist(),
            "rank": np.tile(np.arange(1, k + 1, dtype=np.int32), n),
            "item_id": ids.reshape(-1).tolist(),
            "score": scores.reshape(-1),
        }
    )
    info = index.items
    weights = [c for c in info.columns if c.startswith("weight_")]
    out = hits.join(info, on="item_id", how="left", maintain_order="left")
    if weights:
        # the modality whose weight is largest for that item explains the match
        # (ties, e.g. a plain mean over two modalities, name every tied modality: "text+image")
        w = out.select(weights).fill_null(-1.0).to_numpy()
        names = [c.removeprefix("weight_") for c in weights]
        top = w.max(axis=1, keepdims=True)
        lead = [
            "+".join(n for n, hit in zip(names, row, strict=True) if hit) if best >= 0 else None
            for row, best in zip(np.isclose(w, top, atol=1e-3), top[:, 0], strict=True)
        ]
        out = out.with_columns(pl.Series("leading_modality", lead, dtype=pl.Utf8))
    return out


def search_by_text(
    encoder: QueryEncoder, index: VectorIndex, text: str | Sequence[str], k: int = 10
) -> pl.DataFrame:
    """Encode text with the text tower and search the (fused) index; an empty query is refused."""
    texts = [text] if isinstance(text, str) else list(text)
    empty = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if empty:
        raise ConfigError(f"query {empty[0]} is empty: expected some words to search for "
                          f"({len(empty)} of {len(texts)} queries are empty)")
    return search_vectors(index, encoder.encode_text(texts), k, labels=texts)


def search_by_image(
    encoder: QueryEncoder, index: VectorIndex, path: str | Path | Sequence[str | Path], k: int = 10
) -> pl.DataFrame:
    """Encode image file(s) with the image tower and search the index."""
    paths = [Path(path)] if isinstance(path, str | Path) else [Path(p) for p in path]
    return search_vectors(index, encoder.encode_images(paths), k, labels=[p.name for p in paths])


def search_by_audio(
    encoder: QueryEncoder, index: VectorIndex, path: str | Path | Sequence[str | Path], k: int = 10
) -> pl.DataFrame:
    """Encode audio file(s) with the audio tower and search the index."""
    paths = [Path(path)] if isinstance(path, str | Path) else [Path(p) for p in path]
    return search_vectors(index, encoder.encode_audio(paths), k, labels=[p.name for p in paths])
