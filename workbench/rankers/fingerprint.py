"""What a ranker was trained on, so that a saved one is only evaluated on the same data.

A `TrainingFingerprint` names the catalog (a string from the caller, e.g.
``workbench.report.data_fingerprint(catalog_dir)["fingerprint"]``), the split
(kind, seed and parameters) and sha256 digests of the training interactions
(user_id, item_id, timestamp, in a canonical order) and of the item universe
(sorted ids, so the order of `items` does not matter: rankers look items up by id).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from workbench.catalog.splits import Split
from workbench.errors import CheckpointError

RERUN = "re-run notebook 05 to train and save the rankers on this catalog and split"


def _update_strings(h: Any, values: pl.Series) -> None:
    # Byte lengths first: they make the concatenation unambiguous ("ab"+"c" vs "a"+"bc").
    h.update(values.str.len_bytes().to_numpy().astype("<i8").tobytes())
    h.update(values.str.join("").item().encode())


def interactions_digest(interactions: pl.DataFrame) -> str:
    """sha256 of the (user_id, item_id, timestamp in µs) rows, sorted: independent of row order."""
    canon = interactions.select(
        pl.col("user_id").cast(pl.Utf8), pl.col("item_id").cast(pl.Utf8),
        pl.col("timestamp").dt.epoch("us"),
    ).sort(["user_id", "item_id", "timestamp"])
    h = hashlib.sha256(b"workbench.interactions/1\n")
    _update_strings(h, canon["user_id"])
    _update_strings(h, canon["item_id"])
    h.update(canon["timestamp"].to_numpy().astype("<i8").tobytes())
    return h.hexdigest()


def items_digest(item_ids: Sequence[str] | np.ndarray) -> str:
    """sha256 of the sorted item ids."""
    h = hashlib.sha256(b"workbench.items/1\n")
    _update_strings(h, pl.Series([str(i) for i in item_ids], dtype=pl.Utf8).sort())
    return h.hexdigest()


def split_spec(split: Split) -> dict[str, Any]:
    """The split's identity: kind, seed and parameters (as JSON types)."""
    r = split.report
    return json.loads(json.dumps({"kind": r.kind, "seed": r.seed, "params": r.params}, default=str))


@dataclass(frozen=True)
class TrainingFingerprint:
    """The catalog, split, training interactions and item universe a ranker was fitted on."""

    catalog: str | None  # None: saved without one
    split: dict[str, Any] | None  # split_spec(); None: saved without one
    interactions: str  # interactions_digest of the training rows
    n_interactions: int
    items: str  # items_digest of the item universe
    n_items: int

    @classmethod
    def of(cls, catalog: str, split: Split, item_ids: Sequence[str] | np.ndarray) -> TrainingFingerprint:
        """What a ranker fitted on `split.train` over `item_ids` would record (the check's side)."""
        return cls(catalog, split_spec(split), interactions_digest(split.train), split.train.height,
                   items_digest(item_ids), len(item_ids))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str | Path) -> TrainingFingerprint:
        try:
            return cls(**data)
        except TypeError as exc:
            raise CheckpointError(f"{source}: unreadable training fingerprint ({exc}); {RERUN}") from exc

    def differences(self, other: TrainingFingerprint) -> list[str]:
        """One phrase per part that differs: 'catalog X (this run: Y)', …, empty when equal."""
        out = []
        if self.catalog != other.catalog:
            out.append(f"catalog {_short(self.catalog)} (this run: {_short(other.catalog)})")
        if self.split != other.split:
            out.append(f"split {_describe_split(self.split)} (this run: {_describe_split(other.split)})")
        if self.items != other.items:
            out.append(f"an item universe of {self.n_items} items, sha256 {_short(self.items)} "
                       f"(this run: {other.n_items} items, {_short(other.items)})")
        if self.interactions != other.interactions:
            out.append(f"{self.n_interactions} training interactions, sha256 {_short(self.interactions)} "
                       f"(this run: {other.n_interactions}, {_short(other.interactions)})")
        return out


def _short(digest: str | None) -> str:
    return "unknown" if digest is None else digest[:12]


def _describe_split(spec: Mapping[str, Any] | None) -> str:
    if spec is None:
        return "unknown"
    params = {**spec.get("params", {}), **({"seed": spec["seed"]} if spec.get("seed") is not None else {})}
    return f"{spec.get('kind')}({', '.join(f'{k}={v}' for k, v in sorted(params.items()))})"


def check_fingerprint(folder: str | Path, saved: TrainingFingerprint, expect: TrainingFingerprint) -> None:
    """Refuse (CheckpointError, one line) a ranker in `folder` trained on other data than `expect`."""
    diffs = saved.differences(expect)
    if diffs:
        raise CheckpointError(f"{folder}: this ranker was trained on other data than this run evaluates: "
                              f"{'; '.join(diffs)}; {RERUN}")
