"""Vectors going into an index: checked, L2-normalised, fingerprinted, or turned into an
inner-product search (`inner_product_items` / `inner_product_queries`)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from workbench.errors import ConfigError


def embedding_fingerprint(vectors: np.ndarray) -> str:
    """sha256 over the float32 C-order bytes and the shape: identifies the embeddings
    an index was built from, independent of where they were stored."""
    arr = np.ascontiguousarray(vectors, dtype=np.float32)
    digest = hashlib.sha256(f"float32:{arr.shape[0]}x{arr.shape[1]}:".encode())
    digest.update(arr.tobytes())
    return digest.hexdigest()


def _as_matrix(vectors: Any, what: str) -> np.ndarray:
    if isinstance(vectors, torch.Tensor):
        vectors = vectors.detach().float().cpu().numpy()
    arr = np.asarray(vectors, dtype=np.float32)
    if arr.ndim != 2:
        raise ConfigError(f"{what}: expected a 2-D array (rows, dim), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ConfigError(f"{what}: no rows; expected at least one vector")
    if arr.shape[1] == 0:
        raise ConfigError(f"{what}: vectors have dimension 0")
    return arr


def inner_product_items(vectors: np.ndarray) -> np.ndarray:
    """Item vectors for maximum-inner-product search through this package's cosine indexes.

    Each row gets one more coordinate, sqrt(M**2 - |x|**2) with M the largest row
    norm, so every row has norm M; with `inner_product_queries` (a 0 in that
    coordinate) the cosine of query and item is q.x / (|q| M): per query, the same
    order as the inner product (the MIPS-to-nearest-neighbour reduction of
    Bachrach et al., 2014). What a two-tower stage needs, whose scores are
    unnormalised dot products (`Ranker.two_tower`).
    """
    x = np.asarray(vectors, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ConfigError(f"inner_product_items: expected a non-empty (n, d) array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ConfigError("inner_product_items: item vectors hold NaN or inf; expected finite values")
    sq = (x * x).sum(axis=1)
    extra = np.sqrt(np.maximum(sq.max() - sq, 0.0))
    return np.ascontiguousarray(np.concatenate([x, extra[:, None]], axis=1), dtype=np.float32)


def inner_product_queries(vectors: np.ndarray) -> np.ndarray:
    """Query vectors for an index built on `inner_product_items`: a 0 appended to each row."""
    q = np.asarray(vectors, dtype=np.float32)
    if q.ndim == 1:
        q = q[None, :]
    return np.ascontiguousarray(np.concatenate([q, np.zeros((q.shape[0], 1), np.float32)], axis=1))


def _normalise(
    arr: np.ndarray, what: str, names: Sequence[str] | np.ndarray | None = None
) -> np.ndarray:
    """L2-normalise rows; NaN/inf and zero rows cannot be, so they are errors naming the rows."""
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        rows = np.flatnonzero(~finite)[:5].tolist()
        label = [names[r] for r in rows] if names is not None else rows
        raise ConfigError(
            f"{what}: {int((~finite).sum())} vector(s) hold NaN or inf (first rows: {label}); "
            "expected finite values"
        )
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    zero = norms[:, 0] <= 1e-12
    if zero.any():
        rows = np.flatnonzero(zero)[:5].tolist()
        label = [names[r] for r in rows] if names is not None else rows
        raise ConfigError(
            f"{what}: {int(zero.sum())} zero vector(s) (first rows: {label}); a zero vector "
            "has no direction to compare by cosine"
        )
    return np.ascontiguousarray(arr / norms, dtype=np.float32)
