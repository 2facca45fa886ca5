"""`ScannIndex`: approximate search with ScaNN, and building its searcher."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from workbench.index.base import VectorIndex
from workbench.index.config import MIN_PARTITION_SIZE, IndexConfig
from workbench.index.folder_format import SCANN_DIR
from workbench.index.native_stderr import _native_stderr_to_log
from workbench.index.scann_simd import _scann


class ScannIndex(VectorIndex):
    """ScaNN: k-means tree partitioning, anisotropic asymmetric hashing, exact re-ordering."""

    kind = "scann"

    def __init__(
        self,
        item_ids: np.ndarray,
        dim: int,
        config: IndexConfig,
        fingerprint: str,
        items: pl.DataFrame,
        searcher: Any,  # scann's ScannSearcher (the package has no type information)
        build_s: float = 0.0,
    ) -> None:
        super().__init__(item_ids, dim, config, fingerprint, items, build_s)
        self.searcher = searcher
        if config.num_threads:
            searcher.set_num_threads(config.num_threads)

    def _search_batch(self, q, k, leaves_to_search=None, reorder=None):
        leaves = leaves_to_search or self.config.leaves_to_search
        pre = max(reorder if reorder is not None else self.config.reorder, k)
        if self.config.reorder == 0 and reorder is None:
            pre = -1  # no re-ordering configured: ScaNN returns its hashed scores
        if q.shape[0] == 1:
            # One query (a user's request): ScaNN's single-query call runs on the calling
            # thread with no hand-off to its pool (85 vs 114 us per query measured at 100k).
            # It returns a short list unpadded; pad it like the batched call's NaN rows.
            one_idx, one_scores = self.searcher.search(
                q[0],
                final_num_neighbors=k,
                pre_reorder_num_neighbors=pre,
                leaves_to_search=leaves,
            )
            idx = np.full((1, k), -1, dtype=np.int64)
            scores = np.full((1, k), -np.inf, dtype=np.float32)
            found = min(len(one_idx), k)
            idx[0, :found] = np.asarray(one_idx[:found], dtype=np.int64)
            scores[0, :found] = np.asarray(one_scores[:found], dtype=np.float32)
            return idx, scores
        idx, scores = self.searcher.search_batched_parallel(
            q,
            final_num_neighbors=k,
            pre_reorder_num_neighbors=pre,
            leaves_to_search=leaves,
            batch_size=256,
        )
        idx = np.asarray(idx, dtype=np.int64)
        scores = np.asarray(scores, dtype=np.float32)
        short = np.isnan(scores)  # ScaNN pads short lists with row 0 and a NaN score
        idx[short] = -1
        scores[short] = -np.inf
        return idx, scores

    def _payload(self, folder: Path) -> None:
        (folder / SCANN_DIR).mkdir()
        # relative paths: the folder is renamed after writing and may be moved later
        with _native_stderr_to_log("ScaNN serialize"):
            self.searcher.serialize(str(folder / SCANN_DIR), relative_path=True)


def _build_scann(vectors: np.ndarray, cfg: IndexConfig) -> Any:
    ops = _scann()
    n = vectors.shape[0]
    builder = ops.builder(vectors, 10, "dot_product").tree(
        num_leaves=cfg.num_leaves,
        num_leaves_to_search=cfg.leaves_to_search,
        training_sample_size=min(cfg.training_sample_size or n, n),
        spherical=cfg.spherical,
        # k-means++ initialisation: ScaNN's random initialisation re-seeds small
        # partitions from an unseeded source, so builds differed run to run
        random_init=False,
        min_partition_size=min(MIN_PARTITION_SIZE, max(1, n // max(cfg.num_leaves or 1, 1))),
    )
    builder = builder.score_ah(
        cfg.dims_per_block,
        anisotropic_quantization_threshold=cfg.anisotropic_threshold,
        training_sample_size=min(cfg.training_sample_size or n, n),
    )
    if cfg.reorder:
        builder = builder.reorder(cfg.reorder)
    with _native_stderr_to_log("ScaNN build"):
        return builder.build()
