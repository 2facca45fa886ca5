"""From a catalog to tensors: decoded-media cache, text features and the training dataset.

Decoding PNGs and WAVs is the slow part of every epoch, so each catalog's
media are decoded **once** into a safetensors file (images uint8 (N, H, W, 3),
audio int16 (N, T), presence masks) under `<work>/cache` or the project's
`.cache/encoders`, keyed by the products table's sha256 and the decode
settings. A frozen text backbone's pooled outputs are cached the same way
(keyed by the backbone's weights and the texts), so with a frozen backbone an
epoch trains only the projection head.

`MultimodalDataset` returns `dict[str, Tensor]` per product: `item_idx`, the
modalities (`image` uint8 (3, H, W), `audio` int16 (T,), `text_pooled` or
`text_input_ids`/`text_attention_mask`), a presence mask per modality
(`image_mask`, …), and one training query relevant to the product
(`query_pooled`/…, `query_idx`, `query_mask`) drawn from the training qrels.
Missing media hold zeros *and a False mask*; the alignment task never lets a
masked value into the loss. Workers and pinned memory are chosen for the
device by `workbench.train.fit`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import torch
from torch import Tensor
from torch.utils.data import Dataset

from workbench.catalog import Catalog, read_catalog
from workbench.catalog.splits import DEFAULT_VALIDATION_FRACTION, split_queries
from workbench.encoders.image import ImageTower
from workbench.encoders.model import EncoderConfig, state_digest
from workbench.encoders.text import TextTower
from workbench.errors import CatalogError
from workbench.files import save_tensors_atomic
from workbench.media import load_audio, load_image

CACHE_VERSION = 1


def product_texts(products: pl.DataFrame) -> list[str]:
    """What the text tower reads per product: title, brand and description (not the
    attributes column, which would hand every modality's attributes to the text)."""
    cols = [c for c in ("title", "brand", "description") if c in products.columns]
    if not cols:
        raise CatalogError("products: no title/brand/description column to build product texts from")
    parts = products.select([pl.col(c).cast(pl.Utf8).fill_null("").str.strip_chars() for c in cols])
    return [". ".join(p for p in row if p) for row in parts.iter_rows()]


def _digest(*parts: object) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(repr(p).encode())
        h.update(b"\0")
    return h.hexdigest()[:20]


def _products_digest(catalog: Catalog) -> str:
    recorded = catalog.manifest.get("sha256", {}) if catalog.manifest else {}
    digest = recorded.get("products.parquet") or recorded.get("products")
    if digest:
        return str(digest)
    from workbench.catalog import sha256_file

    return sha256_file(catalog.root / "products.parquet")


def default_cache_dir(work_dir: str | Path | None = None) -> Path:
    if work_dir is not None:
        return Path(work_dir) / "cache"
    from workbench.paths import cache_dir

    return cache_dir() / "encoders"


def _save_atomic(path: Path, tensors: dict[str, Tensor], meta: dict) -> None:
    save_tensors_atomic(path, tensors, metadata={"meta": json.dumps(meta)})


def _load_cached(path: Path) -> dict[str, Tensor] | None:
    """Cached tensors, or None (missing or unreadable: rebuilt rather than trusted)."""
    if not path.exists():
        return None
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError):
        return None


@dataclass
class MediaCache:
    item_ids: list[str]
    image: Tensor  # (N, H, W, 3) uint8, zeros where missing
    image_mask: Tensor  # (N,) bool
    audio: Tensor  # (N, T) int16, zeros where missing
    audio_mask: Tensor  # (N,) bool
    path: Path | None = None


def build_media_cache(
    catalog: Catalog,
    image_size: int,
    sample_rate: int,
    seconds: float,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    threads: int | None = None,
) -> MediaCache:
    """Decode every product image and clip once (fixed size/length) and cache the result.

    A second call with the same catalog and settings only reads the cache file.
    Undecodable media raise `MediaError` naming the product's file.
    """
    products = catalog.products.select("item_id", "image", "audio").collect()
    ids = products.get_column("item_id").to_list()
    key = _digest(CACHE_VERSION, _products_digest(catalog), image_size, sample_rate, seconds)
    path = default_cache_dir() / f"media-{key}.safetensors" if cache_dir is None else Path(cache_dir) / f"media-{key}.safetensors"
    n_samples = int(round(seconds * sample_rate))
    cached = _load_cached(path)
    if cached is not None and cached["image"].shape[0] == len(ids):
        return MediaCache(ids, cached["image"], cached["image_mask"].bool(), cached["audio"], cached["audio_mask"].bool(), path)

    images = torch.zeros(len(ids), image_size, image_size, 3, dtype=torch.uint8)
    audio = torch.zeros(len(ids), n_samples, dtype=torch.int16)
    img_rel = products.get_column("image").to_list()
    aud_rel = products.get_column("audio").to_list()
    image_mask = torch.tensor([r is not None for r in img_rel], dtype=torch.bool)
    audio_mask = torch.tensor([r is not None for r in aud_rel], dtype=torch.bool)

    def decode_image(i: int) -> None:
        images[i].numpy()[:] = load_image(catalog.media_path(img_rel[i]), size=image_size)

    def decode_audio(i: int) -> None:
        wave = load_audio(catalog.media_path(aud_rel[i]), sample_rate=sample_rate, seconds=seconds)
        audio[i].numpy()[:] = np.clip(np.round(wave * 32767.0), -32768, 32767)

    jobs = [(decode_image, i) for i in np.flatnonzero(image_mask.numpy())]
    jobs += [(decode_audio, i) for i in np.flatnonzero(audio_mask.numpy())]
    # PIL and libsndfile release the GIL while decoding, so threads overlap the I/O and decode.
    with ThreadPoolExecutor(max_workers=threads or min(8, os.cpu_count() or 2)) as pool:
        it = pool.map(lambda job: job[0](int(job[1])), jobs)
        if progress:
            from workbench.progress import progress_bar

            it = progress_bar(it, total=len(jobs), desc="decoding media (once per catalog)", unit="file")
        for _ in it:
            pass
    meta = {"catalog": str(catalog.root), "image_size": image_size, "sample_rate": sample_rate, "seconds": seconds}
    _save_atomic(path, {"image": images, "image_mask": image_mask, "audio": audio, "audio_mask": audio_mask}, meta)
    return MediaCache(ids, images, image_mask, audio, audio_mask, path)


def _cached_features(path: Path, n: int, field: str, compute) -> Tensor:
    """`compute()` once, kept in the safetensors file `path`; a missing, unreadable or
    wrongly sized file is recomputed rather than trusted."""
    cached = _load_cached(path)
    if cached is not None and field in cached and cached[field].shape[0] == n:
        return cached[field]
    values = compute()
    _save_atomic(path, {field: values}, {"n": n})
    return values


def pooled_text_features(
    tower: TextTower, texts: Sequence[str], cache_dir: str | Path | None = None, name: str = "texts",
    batch_size: int = 256, progress: bool = True,
) -> Tensor:
    """Frozen-backbone pooled outputs (N, hidden) float32 on the CPU, cached by weights and texts."""
    key = _digest(CACHE_VERSION, state_digest(tower.backbone), tower.config.max_length, _digest(*texts))
    folder = default_cache_dir() if cache_dir is None else Path(cache_dir)
    return _cached_features(
        folder / f"text-{name}-{key}.safetensors", len(texts), "pooled",
        lambda: tower.pool_texts(list(texts), batch_size=batch_size, progress=progress).float().cpu(),
    )


@torch.no_grad()
def pooled_image_features(
    tower: ImageTower, images: Tensor, mask: Tensor, cache_dir: str | Path | None = None, name: str = "products",
    batch_size: int = 64, progress: bool = True,
) -> Tensor:
    """A frozen image backbone's features (N, feature_dim) float32 on the CPU, zeros where
    `mask` is False; cached by the backbone's weights and the decoded images (uint8 (N, 3, H, W))."""
    hwc = images.permute(0, 2, 3, 1)  # the media cache's own layout: hashed without a copy
    # numpy's stubs give ndarray __buffer__ only on Python >= 3.12; it is a buffer on 3.11 too
    h = hashlib.sha256((hwc if hwc.is_contiguous() else hwc.contiguous()).numpy())  # type: ignore[arg-type]
    h.update(mask.numpy())  # type: ignore[arg-type]
    key = _digest(CACHE_VERSION, state_digest(tower.backbone), tower.feature_signature(), h.hexdigest())
    folder = default_cache_dir() if cache_dir is None else Path(cache_dir)

    def compute() -> Tensor:
        device = next(tower.parameters()).device
        was_training = tower.training
        tower.eval()
        out = torch.zeros(len(images), tower.feature_dim)
        rows = torch.nonzero(mask).flatten()
        starts = range(0, len(rows), batch_size)
        if progress:
            from workbench.progress import progress_bar

            starts = progress_bar(starts, desc="image backbone features (once per catalog)", unit="batch")
        for start in starts:
            idx = rows[start : start + batch_size]
            out[idx] = tower.features(images[idx].to(device)).float().cpu()
        tower.train(was_training)
        return out

    return _cached_features(folder / f"image-{name}-{key}.safetensors", len(images), "features", compute)


@dataclass
class CatalogTensors:
    """Everything the towers read about one catalog, as tensors aligned with `item_ids`."""

    item_ids: list[str]
    texts: list[str]
    text: dict[str, Tensor]  # {"pooled": (N, h)} or {"input_ids", "attention_mask"} (N, L)
    text_mask: Tensor
    image: Tensor  # (N, 3, H, W) uint8
    image_mask: Tensor
    audio: Tensor  # (N, T) int16
    audio_mask: Tensor
    query_ids: list[str] = field(default_factory=list)
    query_texts: list[str] = field(default_factory=list)
    query: dict[str, Tensor] = field(default_factory=dict)
    image_features: Tensor | None = None  # (N, F) from a frozen image backbone, else None

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def masks(self) -> dict[str, Tensor]:
        return {"text": self.text_mask, "image": self.image_mask, "audio": self.audio_mask}


def prepare_catalog(
    catalog: Catalog | str | Path,
    config: EncoderConfig,
    text_tower: TextTower | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    image_tower: ImageTower | None = None,
) -> CatalogTensors:
    """Decode (or read from cache) a catalog's media and text features for `config`'s towers.

    With a frozen text backbone the texts become cached pooled features; with a
    fine-tuned one, token ids padded to `text.max_length`. With a frozen
    (pretrained) image backbone, `image_tower` computes cached image features.
    """
    cat = catalog if isinstance(catalog, Catalog) else read_catalog(catalog)
    products = cat.products.collect()
    item_ids = products.get_column("item_id").to_list()
    texts = product_texts(products)
    media = build_media_cache(
        cat, config.image.image_size, config.audio.sample_rate, config.audio.seconds, cache_dir, progress
    )
    if media.item_ids != item_ids:
        raise CatalogError(f"{cat.root / 'products.parquet'}: item order differs from its media cache {media.path}")
    queries = cat.queries.collect() if cat.queries is not None else pl.DataFrame({"query_id": [], "text": []}, schema={"query_id": pl.Utf8, "text": pl.Utf8})
    query_ids = queries.get_column("query_id").to_list()
    query_texts = queries.get_column("text").fill_null("").to_list()
    text: dict[str, Tensor] = {}
    query: dict[str, Tensor] = {}
    if "text" in config.modalities:
        if text_tower is None:
            raise CatalogError("prepare_catalog: the config has a text modality but no text tower was given")
        if config.text.frozen:
            text = {"pooled": pooled_text_features(text_tower, texts, cache_dir, "products", progress=progress)}
            if query_texts:  # a catalog without queries trains on product pairs only
                query = {"pooled": pooled_text_features(text_tower, query_texts, cache_dir, "queries", progress=progress)}
        else:
            text = text_tower.tokenize(texts)
            query = text_tower.tokenize(query_texts) if query_texts else {}
    image_chw = media.image.permute(0, 3, 1, 2)  # CHW for torchvision; a view, not a copy
    image_features = None
    if "image" in config.modalities and config.image.frozen:
        if image_tower is None:
            raise CatalogError("prepare_catalog: the config has a frozen image backbone but no image tower was given")
        image_features = pooled_image_features(image_tower, image_chw, media.image_mask, cache_dir, progress=progress)
    return CatalogTensors(
        item_ids=item_ids,
        texts=texts,
        text=text,
        text_mask=torch.tensor([bool(t) for t in texts], dtype=torch.bool),
        image=image_chw,
        image_mask=media.image_mask,
        audio=media.audio,
        audio_mask=media.audio_mask,
        query_ids=query_ids,
        query_texts=query_texts,
        query=query,
        image_features=image_features,
    )


def query_item_pairs(
    catalog: Catalog,
    item_ids: Sequence[str],
    query_ids: Sequence[str],
    split: str = "train",
    min_relevance: int = 1,
    test_fraction: float = 0.2,
    seed: int = 0,
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
) -> np.ndarray:
    """(query index, item index, relevance) rows of the qrels of one query split.

    The split is `workbench.catalog.splits.split_queries`, the one every stage
    uses: towers and fusions train on `train`, choices are made on `validation`,
    claims on `test`, so no test query is ever trained on or chosen with.
    """
    if split not in ("train", "validation", "test", "all"):
        raise CatalogError(f"split={split!r}: expected train, validation, test or all")
    if catalog.qrels is None or not query_ids:
        return np.zeros((0, 3), dtype=np.int64)
    parts = split_queries(list(query_ids), test_fraction=test_fraction, seed=seed,
                          validation_fraction=validation_fraction)
    keep = {**parts._asdict(), "all": list(query_ids)}[split]
    q_index = pl.DataFrame({"query_id": list(query_ids), "q": np.arange(len(query_ids))}).filter(pl.col("query_id").is_in(keep))
    i_index = pl.DataFrame({"item_id": list(item_ids), "i": np.arange(len(item_ids))})
    pairs = (
        catalog.qrels.filter(pl.col("relevance") >= min_relevance)
        .collect()
        .join(q_index, on="query_id")
        .join(i_index, on="item_id")
        .sort("q", "i")
        .select("q", "i", pl.col("relevance").cast(pl.Int64))
    )
    return pairs.to_numpy().astype(np.int64).reshape(-1, 3)


class MultimodalDataset(Dataset):
    """One sample per product: its modalities, masks and one training query (if any)."""

    def __init__(
        self,
        tensors: CatalogTensors,
        modalities: Sequence[str],
        pairs: np.ndarray | None = None,
        image_transform=None,
    ) -> None:
        self.t = tensors
        self.modalities = tuple(modalities)
        self.image_transform = image_transform
        self.queries_of: list[tuple[Tensor, Tensor] | None] = [None] * tensors.n_items
        if pairs is not None and len(pairs) and tensors.query:
            by_item: dict[int, list[tuple[int, int]]] = {}
            for q, i, rel in pairs.tolist():
                by_item.setdefault(i, []).append((q, rel))
            for i, qs in by_item.items():
                self.queries_of[i] = (torch.tensor([q for q, _ in qs]), torch.tensor([float(r) for _, r in qs]))
        self._query_keys = list(tensors.query)

    def __len__(self) -> int:
        return self.t.n_items

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {k: v[0] for k, v in self.__getitems__([i]).items()}

    def __getitems__(self, indices: Sequence[int]) -> dict[str, Tensor]:
        """A whole batch by tensor indexing (the DataLoader calls this with `collate_batch`)."""
        t = self.t
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        out: dict[str, Tensor] = {"item_idx": idx}
        if "text" in self.modalities:
            for k, v in t.text.items():
                out[f"text_{k}"] = v[idx]
            out["text_mask"] = t.text_mask[idx]
        if "image" in self.modalities and t.image_features is not None:
            out["image_features"] = t.image_features[idx]
            out["image_mask"] = t.image_mask[idx]
        elif "image" in self.modalities:
            img = t.image[idx]
            if self.image_transform is not None:
                # Per-sample random crops/flips (a batched v2 call would share one draw).
                img = torch.stack([self.image_transform(x) for x in img])
            out["image"] = img
            out["image_mask"] = t.image_mask[idx]
        if "audio" in self.modalities:
            out["audio"] = t.audio[idx]
            out["audio_mask"] = t.audio_mask[idx]
        if self._query_keys and "text" in self.modalities:
            qs, present = [], []
            for i in idx.tolist():
                cand = self.queries_of[i]
                if cand is None:
                    qs.append(-1)
                    present.append(False)
                else:
                    # Graded relevance: a highly relevant query is drawn more often.
                    qs.append(int(cand[0][torch.multinomial(cand[1], 1)]))
                    present.append(True)
            q = torch.tensor(qs)
            for k in self._query_keys:
                out[f"query_{k}"] = t.query[k][q.clamp(min=0)]
            out["query_idx"] = q
            out["query_mask"] = torch.tensor(present)
        return out


def collate_batch(batch):
    """`collate_fn` for datasets whose `__getitems__` already returns a batched dict."""
    return batch


class EmbeddingPairDataset(Dataset):
    """(query, relevant product) pairs over precomputed tower outputs, for training a fusion."""

    def __init__(
        self,
        item_embeddings: dict[str, Tensor],
        item_masks: dict[str, Tensor],
        query_embeddings: Tensor,
        pairs: np.ndarray,
    ) -> None:
        if len(pairs) == 0:
            raise CatalogError("no (query, item) training pairs: the catalog's qrels have no training query")
        self.items = {m: e.float().cpu() for m, e in item_embeddings.items()}
        self.masks = {m: item_masks[m].bool().cpu() for m in item_embeddings}
        self.queries = query_embeddings.float().cpu()
        self.pairs = torch.as_tensor(np.asarray(pairs)[:, :2], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, k: int) -> dict[str, Tensor]:
        return {key: v[0] for key, v in self.__getitems__([k]).items()}

    def __getitems__(self, ks: Sequence[int]) -> dict[str, Tensor]:
        pairs = self.pairs[torch.as_tensor(list(ks), dtype=torch.long)]
        q, i = pairs[:, 0], pairs[:, 1]
        out = {"query": self.queries[q], "query_mask": torch.ones(len(q), dtype=torch.bool), "query_idx": q, "item_idx": i}
        for m, e in self.items.items():
            out[m] = e[i]
            out[f"{m}_mask"] = self.masks[m][i]
        return out
