"""Item-item rankers: a user's score for an item is a weighted sum over the items they have seen.

score(u, j) = sum_i x_ui * W_ij, with x_u the user's binary training history.

* **EASE** (Steck, 2019, "Embarrassingly Shallow Autoencoders"): W is the
  closed-form ridge regression of each item's column on all the others, with a
  zero diagonal: P = (XᵀX + Λ)⁻¹, W = -P / diag(P), diag(W) = 0, with
  Λ = λI (`EASEConfig.l2`), plus EDLAE's emphasised dropout when
  `EASEConfig.dropout` is set. W is dense (n_items²
  floats), so EASE refuses catalogues above `EASEConfig.max_items`.
* **item-kNN**: W_ij is the cosine similarity of items i and j over users
  (xᵢ·xⱼ / (‖xᵢ‖‖xⱼ‖ + shrink)), kept for the `k` most similar items i of each
  item j and zero elsewhere (k nonzeros per column; saved as the (n_items, k)
  neighbour lists). Both hold n_items² floats (`max_items` caps it).

Both are ID-only: an item without training interactions has a zero column and
is never recommended (cold items need a content ranker, `SequentialRanker` with
item embeddings). Scoring builds each batch's history rows on the device from
the seen-items CSR (no per-user host work) and multiplies them by W there.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from workbench.checkpoint import DOC_FILE, WEIGHTS_FILE
from workbench.errors import CheckpointError, ConfigError
from workbench.rankers.base import STATE_PREFIX, Ranker
from workbench.rankers.fingerprint import RERUN


@dataclass
class EASEConfig:
    l2: float = 300.0  # λ (tuned on MovieLens-100k validation)
    # EDLAE's emphasised dropout (Steck, 2020, "Autoencoders that don't overfit towards the
    # identity"): item i's L2 weight grows to λ + p / (1 - p) * (its count), which training with
    # input dropout p implies; 0 is plain EASE. It shrinks the weights learnt from frequent
    # items more (+0.004 nDCG@10 on MovieLens-100k, bench/movielens_benchmark.py).
    dropout: float = 0.0
    max_items: int = 30_000  # W is dense: n_items² float32 (30k items: 3.6 GB)
    device: str = "auto"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.l2) and self.l2 > 0):
            raise ConfigError(f"EASEConfig.l2={self.l2!r}: expected a finite L2 weight > 0")
        if not (isinstance(self.dropout, int | float) and 0.0 <= self.dropout < 1.0):
            raise ConfigError(f"EASEConfig.dropout={self.dropout!r}: expected a probability in [0, 1)")
        if self.max_items < 1:
            raise ConfigError(f"EASEConfig.max_items={self.max_items}: expected >= 1")


@dataclass
class ItemKNNConfig:
    k: int = 100  # neighbours kept per item
    shrink: float = 0.0  # added to the norm product: damps similarities of rarely-seen items
    max_items: int = 30_000  # the fit holds the dense n_items² co-occurrence matrix
    device: str = "auto"

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ConfigError(f"ItemKNNConfig.k={self.k!r}: expected a positive integer")
        if not (math.isfinite(self.shrink) and self.shrink >= 0):
            raise ConfigError(f"ItemKNNConfig.shrink={self.shrink!r}: expected a finite value >= 0")
        if self.max_items < 1:
            raise ConfigError(f"ItemKNNConfig.max_items={self.max_items}: expected >= 1")


class _ItemItemRanker(Ranker):
    """Shared scoring and saving of the rankers whose model is an item-item matrix W."""

    config_class: type

    def __init__(self, config: Any | None = None) -> None:
        self.config = config or self.config_class()
        super().__init__(self.config.device)
        self._indptr: Tensor | None = None  # the seen-items CSR on the device, for scoring
        self._indices: Tensor | None = None

    def _history_on_device(self) -> None:
        self._indptr = torch.from_numpy(self._seen.indptr.astype(np.int64)).to(self.device)
        self._indices = torch.from_numpy(self._seen.indices.astype(np.int64)).to(self.device)

    def _history_rows(self, users: Tensor) -> Tensor:
        """(b, n_items) float32 0/1 training histories of `users`, built on the device."""
        indptr, indices = self._indptr, self._indices
        if indptr is None or indices is None:
            raise self._not_fitted()
        start, end = indptr[users], indptr[users + 1]
        lens = end - start
        rows = torch.repeat_interleave(torch.arange(len(users), device=users.device), lens)
        # position of each entry inside its user's slice of `indices`
        first = torch.repeat_interleave(start - (torch.cumsum(lens, 0) - lens), lens)
        cols = indices[first + torch.arange(len(rows), device=users.device)]
        out = torch.zeros(len(users), len(self.item_ids), dtype=torch.float32, device=users.device)
        out[rows, cols] = 1.0
        return out

    def _train_matrix(self) -> sp.csr_matrix:
        """The binary (users x items) training matrix, float64 for the fit."""
        return self._seen.astype(np.float64)

    def _saved_config(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self.config).items() if k != "device"}

    @classmethod
    def _from_config(cls, config: dict[str, Any], device: str, source: Path) -> Ranker:
        try:
            return cls(cls.config_class(**{**config, "device": device}))
        except (TypeError, ConfigError) as exc:
            raise CheckpointError(f"{source}: invalid {cls.config_class.__name__} ({exc}); {RERUN}") from exc


class EASERanker(_ItemItemRanker):
    """EASE: closed-form item-item ridge regression with a zero diagonal (see the module docstring)."""

    name = "ease"
    config_class = EASEConfig

    def _fit(self, item_embeddings: np.ndarray | None) -> None:
        n = len(self.item_ids)
        if n > self.config.max_items:
            raise ConfigError(
                f"EASE: {n} items exceed EASEConfig.max_items={self.config.max_items} (its item-item matrix "
                f"is dense, {n}² floats); use item-kNN or raise max_items on a machine with the memory")
        x = self._train_matrix()
        # The Gram matrix and its inverse in float64 (on the device): λ is small next to
        # the counts of popular items, and float32 inverses drift visibly between machines.
        gram = torch.from_numpy((x.T @ x).toarray()).to(self.device)
        p_drop = self.config.dropout
        gram.diagonal().add_(self.config.l2 + p_drop / (1.0 - p_drop) * gram.diagonal())
        p = torch.linalg.inv(gram)
        w = -p / torch.diagonal(p)[None, :]
        w.fill_diagonal_(0.0)
        self.weights = w.float().contiguous()
        self._history_on_device()
        self.history = []

    def _scores(self, users: Tensor) -> Tensor:
        return self._history_rows(users) @ self.weights

    def _saved_tensors(self) -> dict[str, Tensor]:
        return {f"{STATE_PREFIX}weights": self.weights}

    def _restore_model(self, doc: dict[str, Any], tensors: dict[str, Tensor], folder: Path) -> None:
        w = tensors.get(f"{STATE_PREFIX}weights")
        n = len(self.item_ids)
        if w is None or tuple(w.shape) != (n, n):
            raise CheckpointError(f"{folder / WEIGHTS_FILE}: {STATE_PREFIX}weights missing or not of shape "
                                  f"({n}, {n}) (items x items); {RERUN}")
        self.weights = w.to(self.device)
        self._history_on_device()


class ItemKNNRanker(_ItemItemRanker):
    """Item-kNN: cosine similarities over users, the k nearest per item (see the module docstring)."""

    name = "itemknn"
    config_class = ItemKNNConfig

    def _fit(self, item_embeddings: np.ndarray | None) -> None:
        x = self._train_matrix().tocsc()
        n = len(self.item_ids)
        if n > self.config.max_items:
            raise ConfigError(
                f"item-kNN: {n} items exceed ItemKNNConfig.max_items={self.config.max_items} (the fit holds "
                f"a dense {n}² co-occurrence matrix); raise max_items on a machine with the memory")
        k = min(self.config.k, max(n - 1, 1))
        co = torch.from_numpy((x.T @ x).toarray().astype(np.float32)).to(self.device)  # counts: exact in float32
        norm = torch.sqrt(torch.diagonal(co).clone())
        sim = co / (norm[:, None] * norm[None, :] + self.config.shrink + 1e-12)
        sim.fill_diagonal_(0.0)
        # top k neighbours i of each item j: a column-wise top-k of sim[:, j] (sim is symmetric)
        vals, idx = torch.topk(sim, k, dim=0)
        self._set_neighbours(idx.T.contiguous(), vals.T.float().contiguous())
        self._history_on_device()
        self.history = []

    def _set_neighbours(self, idx: Tensor, vals: Tensor) -> None:
        """`idx`, `vals` (n_items, k): item j's neighbours i and their similarity W_ij."""
        self.neighbour_index, self.neighbour_sim = idx, vals
        n, k = idx.shape
        # Dense W (rows: the seen item i, columns: the scored item j): the fit already held an
        # n x n matrix, and a dense product is fast and the same on every device.
        w = torch.zeros(n, n, dtype=torch.float32, device=idx.device)
        w[idx.reshape(-1), torch.arange(n, device=idx.device).repeat_interleave(k)] = vals.reshape(-1)
        self._w = w

    def _scores(self, users: Tensor) -> Tensor:
        return self._history_rows(users) @ self._w

    def _saved_tensors(self) -> dict[str, Tensor]:
        return {f"{STATE_PREFIX}neighbour_index": self.neighbour_index,
                f"{STATE_PREFIX}neighbour_sim": self.neighbour_sim}

    def _restore_model(self, doc: dict[str, Any], tensors: dict[str, Tensor], folder: Path) -> None:
        idx = tensors.get(f"{STATE_PREFIX}neighbour_index")
        sim = tensors.get(f"{STATE_PREFIX}neighbour_sim")
        n = len(self.item_ids)
        if idx is None or sim is None or idx.shape != sim.shape or idx.ndim != 2 or idx.shape[0] != n:
            raise CheckpointError(f"{folder / WEIGHTS_FILE}: {STATE_PREFIX}neighbour_index/_sim missing or "
                                  f"not both of shape ({n}, k); {RERUN} ({folder / DOC_FILE})")
        self._set_neighbours(idx.to(self.device), sim.to(self.device))
        self._history_on_device()
