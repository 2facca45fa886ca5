"""Item content features for rankers: what a product *is*, as one dense matrix.

Interactions are sparse (a thousand products, a few clicks each), so a ranker
that only knows item IDs cannot learn most items, and cannot rank a product
nobody has interacted with at all. `item_content(products, item_ids, fused)`
turns the catalog's own columns into a float32 matrix, rows aligned with
`item_ids`, that rankers take as `item_embeddings`:

* **category**: one-hot of every prefix of the "/"-separated path
  ("furniture", "furniture/chair"), so items share what their branches share;
* **brand** and **attributes**: one-hot of the brand and of each attribute's
  string (or list-of-strings) values, the `max_values` most frequent per field;
* **price**: standardised log price (0 where missing);
* **embeddings**: the fused multimodal embedding of notebook 03
  (`<work>/embeddings/items.parquet`), and optionally each modality's own
  (`text`, `image`, `audio`), which carry what only the image or the audio
  shows (colour, material): one block each (`load_content_embeddings`).

Each block is scaled to unit mean row norm (times its weight in `ContentConfig`),
so no block drowns the others because it happens to have more columns. Nothing
here reads the synthetic ground truth: only `products.parquet` and the embeddings.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from workbench.errors import CatalogError, ConfigError

EMBEDDING_COLUMNS = ("fused", "text", "image", "audio")  # the columns of <work>/embeddings/items.parquet


@dataclass
class ContentConfig:
    """Which blocks `item_content` builds and their weights (0 drops a block)."""

    category: float = 1.0
    brand: float = 1.0
    attributes: float = 1.0
    price: float = 0.5
    embeddings: float = 1.0  # each embedding block (fused, and text/image/audio when given)
    max_values: int = 64  # most frequent values kept per attribute field (the rest: no column)

    def __post_init__(self) -> None:
        for name in ("category", "brand", "attributes", "price", "embeddings"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"ContentConfig.{name}={value!r}: expected a weight >= 0")
        if self.max_values < 1:
            raise ConfigError(f"ContentConfig.max_values={self.max_values}: expected >= 1")


def _one_hot(values: Sequence[Sequence[str]], max_values: int) -> np.ndarray:
    """(n, m) multi-hot of each row's values over the `max_values` most frequent ones."""
    counts = Counter(v for row in values for v in row)
    # most frequent first, ties by value: the column order is deterministic
    vocab = [v for v, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:max_values]]
    col = {v: j for j, v in enumerate(vocab)}
    out = np.zeros((len(values), len(vocab)), dtype=np.float32)
    for i, row in enumerate(values):
        for v in row:
            j = col.get(v)
            if j is not None:
                out[i, j] = 1.0
    return out


def _unit_rows(block: np.ndarray, weight: float) -> np.ndarray:
    """Scale `block` so that its mean row norm is `weight` (an all-zero block stays zero)."""
    norm = float(np.linalg.norm(block, axis=1).mean()) if block.size else 0.0
    return block * (weight / norm) if norm > 0 else block


def _attribute_values(raw: str | None) -> list[tuple[str, str]]:
    if not raw:
        return []
    try:
        doc = json.loads(raw)
    except (TypeError, ValueError):
        return []
    if not isinstance(doc, dict):
        return []
    out = []
    for key, value in doc.items():
        values = value if isinstance(value, list) else [value]
        out += [(str(key), v) for v in values if isinstance(v, str) and v]
    return out


def load_content_embeddings(path: str | Path, item_ids: Sequence[str] | np.ndarray,
                            columns: Sequence[str] = EMBEDDING_COLUMNS) -> dict[str, np.ndarray]:
    """The embedding `columns` present in `path` (`<work>/embeddings/items.parquet`), aligned to `item_ids`.

    Items without a value (a product with no image) get a zero row; a missing
    file is a `CatalogError` naming it (see `load_item_embeddings`).
    """
    from workbench.rankers.base import load_item_embeddings

    path = Path(path)
    if not path.is_file():
        raise CatalogError(f"{path}: no such embeddings file; expected <work>/embeddings/items.parquet")
    present = set(pl.read_parquet_schema(path))
    return {c: load_item_embeddings(path, item_ids, column=c) for c in columns if c in present}


def item_content(products: pl.DataFrame | pl.LazyFrame, item_ids: Sequence[str] | np.ndarray,
                 embeddings: np.ndarray | Mapping[str, np.ndarray] | None = None,
                 config: ContentConfig | None = None) -> np.ndarray:
    """(len(item_ids), d) float32 content features, rows aligned with `item_ids` (see the module doc).

    `products` needs `item_id` and may have `category`, `brand`, `price` and
    `attributes`; `embeddings` (one (len(item_ids), d) array, e.g. the fused
    embeddings, or a dict of them by name, as `load_content_embeddings` returns)
    are appended, one block each, in the dict's order. An item of `item_ids`
    missing from `products` raises `CatalogError` naming it.
    """
    config = config or ContentConfig()
    df = products.collect() if isinstance(products, pl.LazyFrame) else products
    if "item_id" not in df.columns:
        raise CatalogError("products: no item_id column; expected the catalog's products table")
    ids = [str(i) for i in item_ids]
    order = pl.DataFrame({"item_id": ids}).with_row_index("_pos")
    rows = order.join(df.with_columns(pl.col("item_id").cast(pl.Utf8)), on="item_id", how="left",
                      coalesce=True).sort("_pos")
    if rows.height != len(ids):
        raise CatalogError("products: duplicate item_id; expected one row per product")
    known = set(df["item_id"].cast(pl.Utf8).to_list())
    missing = [i for i in ids if i not in known]
    if missing:
        raise CatalogError(f"products: item_id {missing[0]!r} is not in the products table "
                           f"({len(missing)} items missing); expected every ranked item")
    blocks: list[np.ndarray] = []

    def column(name: str) -> list:
        return rows[name].to_list() if name in rows.columns else [None] * len(ids)

    if config.category > 0:
        paths = [str(c).split("/") if c else [] for c in column("category")]
        prefixes = [["/".join(p[:k]) for k in range(1, len(p) + 1)] for p in paths]
        blocks.append(_unit_rows(_one_hot(prefixes, 10 * config.max_values), config.category))
    if config.brand > 0:
        blocks.append(_unit_rows(_one_hot([[b] if b else [] for b in column("brand")], config.max_values),
                                 config.brand))
    if config.attributes > 0:
        pairs = [_attribute_values(a) for a in column("attributes")]
        fields = sorted({k for row in pairs for k, _ in row})
        for field in fields:  # one block per field: its top values, never another field's
            vals = [[v for k, v in row if k == field] for row in pairs]
            blocks.append(_unit_rows(_one_hot(vals, config.max_values), config.attributes / max(1, len(fields)) ** 0.5))
    if config.price > 0 and "price" in rows.columns:
        price = rows["price"].cast(pl.Float64).to_numpy()
        ok = np.isfinite(price) & (price > 0)
        if ok.sum() > 1:
            logp = np.log(np.where(ok, price, 1.0))
            z = np.where(ok, (logp - logp[ok].mean()) / (logp[ok].std() + 1e-12), 0.0)
            blocks.append((z[:, None] * config.price).astype(np.float32))
    named = {"fused": embeddings} if isinstance(embeddings, np.ndarray) else dict(embeddings or {})
    for name, emb in named.items():
        if config.embeddings <= 0:
            break
        emb = np.asarray(emb, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[0] != len(ids):
            raise ConfigError(f"embeddings {name!r} have shape {emb.shape}; expected ({len(ids)}, d), "
                              "rows aligned with item_ids")
        blocks.append(_unit_rows(emb, config.embeddings))
    blocks = [b for b in blocks if b.shape[1]]
    if not blocks:
        raise CatalogError("products: no content to build features from (no category, brand, attributes, "
                           "price or fused embeddings)")
    return np.concatenate(blocks, axis=1).astype(np.float32)
