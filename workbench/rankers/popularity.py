"""Popularity rankers: every user gets the same list (minus what they have seen).

`window=None` counts all training interactions; a `timedelta` window counts only
those within `window` of the latest training timestamp (recent popularity), with
the all-time count breaking ties so that the order is total and meaningful.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workbench.errors import ConfigError
from workbench.rankers.base import Ranker


class PopularityRanker(Ranker):
    """Global or recent-window interaction counts."""

    name = "popularity"

    def __init__(self, window: timedelta | None = None, device: str = "auto") -> None:
        super().__init__(device)
        if window is not None and window <= timedelta(0):
            raise ConfigError(f"window={window}: expected a positive timedelta or None")
        self.window = window

    def _training_popularity(self) -> np.ndarray:
        counts = self._item_counts
        if self.window is None:
            return counts.astype(np.float32)
        start = self._train_times.max() - int(self.window / timedelta(microseconds=1))
        recent = np.bincount(self._train_items[self._train_times >= start], minlength=len(counts))
        # all-time count / (max + 1) < 1 only breaks ties between equal recent counts
        return (recent + counts / (counts.max() + 1.0)).astype(np.float32)

    def _fit(self, item_embeddings: np.ndarray | None) -> None:
        self.history = []  # nothing to train

    def _scores(self, users: torch.Tensor) -> torch.Tensor:
        return self._fallback.expand(len(users), -1).clone()

    def _saved_config(self) -> dict[str, Any]:
        return {"window_us": None if self.window is None else self.window // timedelta(microseconds=1)}

    def _saved_tensors(self) -> dict[str, torch.Tensor]:
        return {}  # the saved popularity scores are the whole model

    @classmethod
    def _from_config(cls, config: dict[str, Any], device: str, source: Path) -> PopularityRanker:
        window = config.get("window_us")
        return cls(window=None if window is None else timedelta(microseconds=window), device=device)

    def _restore_model(self, doc: dict[str, Any], tensors: dict[str, torch.Tensor], folder: Path) -> None:
        """Nothing beyond the popularity scores, which the base class restores."""
