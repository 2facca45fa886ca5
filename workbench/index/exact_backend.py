"""`ExactIndex`: exact cosine search in torch, the ground truth of recall."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from workbench.device import resolve_device
from workbench.files import atomic_path
from workbench.index.base import VectorIndex
from workbench.index.config import IndexConfig
from workbench.index.folder_format import VECTORS_FILE


class ExactIndex(VectorIndex):
    """Exact cosine search: a matrix product and top-k in torch, on cuda when present.

    The ground truth for recall. Items stay on the device; queries go in batches
    (pinned + non_blocking on cuda) and results come back to the host once, at the end.
    """

    kind = "exact"

    def __init__(
        self,
        item_ids: np.ndarray,
        vectors: np.ndarray,
        config: IndexConfig,
        fingerprint: str,
        items: pl.DataFrame,
        build_s: float = 0.0,
    ) -> None:
        super().__init__(item_ids, vectors.shape[1], config, fingerprint, items, build_s)
        self.vectors = vectors  # normalised float32, kept for saving
        self.device = resolve_device(config.device)
        self._items_t = torch.from_numpy(vectors).to(self.device)

    def search_indices(
        self, queries: Any, k: int = 10, batch_size: int | None = None, **overrides: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        q = self._check(queries, k)
        bs = batch_size or self.config.batch_size
        q_t = torch.from_numpy(q)
        if self.device.type == "cuda":
            q_t = q_t.pin_memory()
        top_i, top_s = [], []
        with torch.inference_mode():
            for start in range(0, q_t.shape[0], bs):
                chunk = q_t[start : start + bs].to(self.device, non_blocking=True)
                batch_scores, batch_idx = torch.topk(chunk @ self._items_t.T, k, dim=1)
                top_i.append(batch_idx)
                top_s.append(batch_scores)
            # one transfer at the end: no per-batch host sync
            idx = torch.cat(top_i).cpu().numpy().astype(np.int64, copy=False)
            scores = torch.cat(top_s).float().cpu().numpy()
        return idx, scores

    def _payload(self, folder: Path) -> None:
        # an open file: np.save would append ".npy" to the temporary name
        with atomic_path(folder / VECTORS_FILE) as tmp, open(tmp, "wb") as fh:
            np.save(fh, self.vectors, allow_pickle=False)
