"""`VectorIndex`: the search interface of every index, and saving it as a folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from workbench.errors import ConfigError, IndexFileError
from workbench.files import sha256_file, staging_dir, write_json_atomic, write_parquet_atomic
from workbench.index.config import IndexConfig
from workbench.index.folder_format import FORMAT_NAME, FORMAT_VERSION, ITEMS_FILE, META_FILE
from workbench.index.vectors import _as_matrix, _normalise


class VectorIndex:
    """Common interface of `ScannIndex` and `ExactIndex`."""

    kind: str = ""

    def __init__(
        self,
        item_ids: np.ndarray,
        dim: int,
        config: IndexConfig,
        fingerprint: str,
        items: pl.DataFrame,
        build_s: float = 0.0,
    ) -> None:
        self.item_ids = item_ids
        self.dim = dim
        self.config = config
        self.fingerprint = fingerprint
        self.items = items  # item_id plus per-item columns (e.g. weight_<modality>)
        self.build_s = build_s

    @property
    def n_items(self) -> int:
        return int(self.item_ids.shape[0])

    def __len__(self) -> int:
        return self.n_items

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(n_items={self.n_items}, dim={self.dim}, config={self.config})"
        )

    def _check(self, queries: Any, k: int) -> np.ndarray:
        if not isinstance(k, int | np.integer) or k < 1:
            raise ConfigError(f"k={k!r}: expected a positive integer")
        if k > self.n_items:
            raise ConfigError(f"k={k} exceeds the {self.n_items} items in the index")
        arr = _as_matrix(queries, "queries")
        if arr.shape[1] != self.dim:
            raise ConfigError(
                f"queries have dimension {arr.shape[1]} but the index holds {self.dim}-d vectors"
            )
        return _normalise(arr, "queries")

    def search_indices(
        self, queries: Any, k: int = 10, batch_size: int | None = None, **overrides: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k row indices (n, k) int64 into `item_ids` and scores (n, k) float32, best first.

        A list shorter than k (ScaNN searched leaves holding fewer than k items) is
        padded with index -1 and score -inf.
        """
        q = self._check(queries, k)
        bs = batch_size or self.config.batch_size
        parts = [self._search_batch(q[i : i + bs], k, **overrides) for i in range(0, len(q), bs)]
        idx = np.concatenate([p[0] for p in parts]).astype(np.int64, copy=False)
        scores = np.concatenate([p[1] for p in parts]).astype(np.float32, copy=False)
        return idx, scores

    def search(
        self, queries: Any, k: int = 10, batch_size: int | None = None, **overrides: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k item ids (n, k) str and scores (n, k) float32 (cosine), best first."""
        idx, scores = self.search_indices(queries, k, batch_size, **overrides)
        # -1 pads a short list (few leaves searched): its id is "" and its score -inf
        return np.where(idx >= 0, self.item_ids[np.maximum(idx, 0)], ""), scores

    def _search_batch(
        self, q: np.ndarray, k: int, **overrides: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _payload(self, folder: Path) -> None:
        raise NotImplementedError

    def save(self, directory: str | Path, overwrite: bool = True) -> Path:
        """Write the index folder atomically; an existing index is replaced only on success.

        The folder is built in a staging sibling and swapped in whole, so `directory`
        always holds a complete index; a save killed midway leaves a staging folder
        that the next save to the same place removes.
        """
        target = Path(directory)
        if target.exists():
            if not overwrite:
                raise IndexFileError(f"{target}: exists; pass overwrite=True to replace it")
            # replacing deletes the old folder: never do that to something that is not an index
            if not target.is_dir() or (
                any(target.iterdir()) and not (target / META_FILE).is_file()
            ):
                raise IndexFileError(
                    f"{target}: exists and is not a saved index (no {META_FILE}); "
                    "refusing to replace it; expected a new path or an index folder"
                )
        with staging_dir(target) as staging:
            write_parquet_atomic(staging.path / ITEMS_FILE, self.items)
            self._payload(staging.path)
            written = staging.files()
            meta = {
                "format": FORMAT_NAME,
                "version": FORMAT_VERSION,
                "kind": self.kind,
                "n_items": self.n_items,
                "dim": self.dim,
                "config": self.config.to_dict(),
                "embeddings": {
                    "sha256": self.fingerprint,
                    "shape": [self.n_items, self.dim],
                    "dtype": "float32",
                },
                "files": {rel: sha256_file(staging.path / rel) for rel in written},
            }
            write_json_atomic(staging.path / META_FILE, meta)
            staging.publish()
        return target
