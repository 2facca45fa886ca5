"""Vector indexes over item embeddings: ScaNN for speed, exact search as ground truth.

A small typed factory: `IndexConfig` says what to build (`IndexConfig.for_size(n)`
gives defaults that suit `n` items), `build_index(item_ids, vectors, config)`
returns a `VectorIndex`, whose `search(queries, k)` returns item ids and scores.
Similarity is the dot product of L2-normalised vectors (cosine), for items and
queries alike.

Saved indexes are folders written atomically (a temporary sibling folder, then a
rename): `index.json` (settings, the embedding fingerprint, a sha256 of every
other file), `items.parquet` (the item-id table, plus any per-item columns such
as fusion weights) and either `scann/` (ScaNN's own assets) or `vectors.npy`
(exact). `load_index` refuses missing, extra or altered files and, when given the
embeddings it will be used with, a fingerprint that does not match them.

Tuning: `sweep` measures recall@k against `ExactIndex`, queries/s and build time
for each setting; `choose_setting` picks the fastest that meets a recall target.
Cross-modal queries (`search_by_text`, `search_by_image`, `search_by_audio`)
encode a query with the trained towers and return hits with the item's fusion
weights, which say which modality the item's fused vector leans on.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import polars as pl
import torch

from workbench.device import resolve_device
from workbench.errors import CatalogError, ConfigError, IndexFileError

FORMAT_NAME = "workbench-vector-index"
FORMAT_VERSION = 1
KINDS = ("scann", "exact", "auto")
META_FILE = "index.json"
ITEMS_FILE = "items.parquet"
SCANN_DIR = "scann"
VECTORS_FILE = "vectors.npy"
# Items below this count are searched exactly: with a few thousand vectors a
# matrix product is already sub-millisecond per query and partitioning only costs recall.
DEFAULT_BRUTE_FORCE_THRESHOLD = 20_000
MIN_PARTITION_SIZE = 50  # ScaNN's default min_cluster_size; fewer items per leaf is wasted work


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class IndexConfig:
    """What to build. `None` fields are filled from the number of items by `resolved`.

    kind: "scann" (tree partitioning + asymmetric hashing + exact re-ordering),
    "exact" (matrix product + top-k), or "auto" (exact below
    `brute_force_threshold` items, ScaNN above).
    num_leaves / leaves_to_search: partitions built / searched per query.
    reorder: candidates re-scored exactly after asymmetric hashing (0: none).
    dims_per_block: dimensions per asymmetric-hashing code block (2 is ScaNN's usual).
    anisotropic_threshold: the dot-product quantisation threshold of anisotropic
    hashing (ScaNN's `anisotropic_quantization_threshold`; 0.2 suits unit vectors).
    training_sample_size: vectors sampled to train the partitioner and codebooks.
    spherical: spherical k-means partitions (centroids on the unit sphere), the right
    geometry for unit vectors: on clustered 256-d data it lifted recall@10 at 2% of the
    leaves searched from 0.83 to 0.99 against plain k-means.
    num_threads: ScaNN search threads (0: all cores).
    batch_size: queries per search batch (bounds memory of exact search).
    device: torch device of exact search ("auto": cuda when present).
    """

    kind: str = "auto"
    num_leaves: int | None = None
    leaves_to_search: int | None = None
    reorder: int | None = None
    dims_per_block: int = 2
    anisotropic_threshold: float = 0.2
    training_sample_size: int | None = None
    spherical: bool = True
    brute_force_threshold: int = DEFAULT_BRUTE_FORCE_THRESHOLD
    num_threads: int = 0
    batch_size: int = 1024
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"IndexConfig.kind={self.kind!r}: expected one of {', '.join(KINDS)}")
        for name in ("num_leaves", "leaves_to_search", "training_sample_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"IndexConfig.{name}={value}: expected a positive integer")
        if self.reorder is not None and self.reorder < 0:
            raise ConfigError(f"IndexConfig.reorder={self.reorder}: expected 0 or more")
        if self.dims_per_block < 1:
            raise ConfigError(f"IndexConfig.dims_per_block={self.dims_per_block}: expected >= 1")
        if self.batch_size < 1:
            raise ConfigError(f"IndexConfig.batch_size={self.batch_size}: expected >= 1")

    @classmethod
    def for_size(cls, n_items: int, **overrides: Any) -> IndexConfig:
        """Defaults for `n_items`: about sqrt(n) leaves of at least 50 items, a tenth of
        them searched, 100 candidates re-ordered; exact search below the threshold."""
        if n_items < 1:
            raise ConfigError(f"IndexConfig.for_size: n_items={n_items}; an index needs items")
        threshold = overrides.get("brute_force_threshold", DEFAULT_BRUTE_FORCE_THRESHOLD)
        num_leaves = max(1, min(round(math.sqrt(n_items)), n_items // MIN_PARTITION_SIZE))
        defaults: dict[str, Any] = {
            "kind": "exact" if n_items < threshold else "scann",
            "num_leaves": num_leaves,
            "leaves_to_search": max(1, math.ceil(num_leaves / 10)),
            "reorder": 100,
            "training_sample_size": min(n_items, 100_000),  # ScaNN's own default
        }
        defaults.update(overrides)
        return cls(**defaults)

    def resolved(self, n_items: int) -> IndexConfig:
        """A copy with `kind` decided and every `None` filled in for `n_items`."""
        base = IndexConfig.for_size(n_items, brute_force_threshold=self.brute_force_threshold)
        filled = {
            f.name: getattr(base, f.name)
            if getattr(self, f.name) is None
            else getattr(self, f.name)
            for f in fields(self)
        }
        if self.kind == "auto":
            filled["kind"] = base.kind
        cfg = IndexConfig(**filled)
        if cfg.kind == "scann":
            if cfg.num_leaves > n_items:  # type: ignore[operator]
                raise ConfigError(
                    f"IndexConfig.num_leaves={cfg.num_leaves} exceeds the {n_items} items to index"
                )
            cfg = replace(cfg, leaves_to_search=min(cfg.leaves_to_search, cfg.num_leaves))  # type: ignore[type-var]
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- input checks


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


def _normalise(arr: np.ndarray, what: str, names: Sequence[str] | None = None) -> np.ndarray:
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


# --------------------------------------------------------------------------- indexes


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
        """Write the index folder atomically; an existing folder is replaced only on success."""
        target = Path(directory)
        if target.exists() and not overwrite:
            raise IndexFileError(f"{target}: exists; pass overwrite=True to replace it")
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.parent / f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
        try:
            self.items.write_parquet(staging / ITEMS_FILE)
            self._payload(staging)
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
                "files": {rel: _sha256_file(staging / rel) for rel in _list_files(staging)},
            }
            (staging / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
            _fsync_tree(staging)
            old = None
            if target.exists():
                old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
                os.replace(target, old)
            os.replace(staging, target)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return target


class ExactIndex(VectorIndex):
    """Exact cosine search: a matrix product and top-k in torch, on cuda when present.

    The ground truth for recall. Items stay on the device; queries go in batches
    (pinned + non_blocking on cuda) and results come back to the host once, at the end.
    """

    kind = "exact"

    def __init__(self, item_ids, vectors: np.ndarray, config, fingerprint, items, build_s=0.0):
        super().__init__(item_ids, vectors.shape[1], config, fingerprint, items, build_s)
        self.vectors = vectors  # normalised float32, kept for saving
        self.device = resolve_device(config.device)
        self._items_t = torch.from_numpy(vectors).to(self.device)

    def search_indices(self, queries, k=10, batch_size=None, **overrides):
        q = self._check(queries, k)
        bs = batch_size or self.config.batch_size
        q_t = torch.from_numpy(q)
        if self.device.type == "cuda":
            q_t = q_t.pin_memory()
        top_i, top_s = [], []
        with torch.inference_mode():
            for start in range(0, q_t.shape[0], bs):
                chunk = q_t[start : start + bs].to(self.device, non_blocking=True)
                scores, idx = torch.topk(chunk @ self._items_t.T, k, dim=1)
                top_i.append(idx)
                top_s.append(scores)
            # one transfer at the end: no per-batch host sync
            idx = torch.cat(top_i).cpu().numpy().astype(np.int64, copy=False)
            scores = torch.cat(top_s).float().cpu().numpy()
        return idx, scores

    def _payload(self, folder: Path) -> None:
        np.save(folder / VECTORS_FILE, self.vectors, allow_pickle=False)


class ScannIndex(VectorIndex):
    """ScaNN: k-means tree partitioning, anisotropic asymmetric hashing, exact re-ordering."""

    kind = "scann"

    def __init__(self, item_ids, dim, config, fingerprint, items, searcher, build_s=0.0):
        super().__init__(item_ids, dim, config, fingerprint, items, build_s)
        self.searcher = searcher
        if config.num_threads:
            searcher.set_num_threads(config.num_threads)

    def _search_batch(self, q, k, leaves_to_search=None, reorder=None):
        leaves = leaves_to_search or self.config.leaves_to_search
        pre = max(reorder if reorder is not None else self.config.reorder, k)
        if self.config.reorder == 0 and reorder is None:
            pre = -1  # no re-ordering configured: ScaNN returns its hashed scores
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
        self.searcher.serialize(str(folder / SCANN_DIR), relative_path=True)


def _scann():
    try:
        from scann.scann_ops.py import scann_ops_pybind
    except ImportError as exc:  # pragma: no cover - scann is a Linux dependency
        raise ConfigError(
            "IndexConfig.kind='scann' needs the scann package (Linux); use kind='exact'"
        ) from exc
    return scann_ops_pybind


def _build_scann(vectors: np.ndarray, cfg: IndexConfig):
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
    return builder.build()


def build_index(
    item_ids: Sequence[str] | np.ndarray,
    vectors: Any,
    config: IndexConfig | None = None,
    items: pl.DataFrame | None = None,
) -> VectorIndex:
    """Build an index over `vectors` (n, d), one row per id in `item_ids`.

    `items` (optional) is a frame with an `item_id` column and per-item columns to
    keep with the index (fusion weights); it is aligned to `item_ids`.
    """
    arr = _as_matrix(vectors, "item vectors")
    ids = np.asarray([str(i) for i in item_ids], dtype=str)
    if ids.shape[0] != arr.shape[0]:
        raise ConfigError(f"{ids.shape[0]} item ids but {arr.shape[0]} item vectors")
    if len(set(ids.tolist())) != ids.shape[0]:
        uniq, counts = np.unique(ids, return_counts=True)
        raise ConfigError(f"item ids are not unique: {uniq[counts > 1][:5].tolist()} repeat")
    fingerprint = embedding_fingerprint(arr)
    unit = _normalise(arr, "item vectors", names=ids)
    cfg = (config or IndexConfig()).resolved(arr.shape[0])
    table = _item_table(ids, items)
    start = time.perf_counter()
    if cfg.kind == "exact":
        index: VectorIndex = ExactIndex(ids, unit, cfg, fingerprint, table)
    else:
        searcher = _build_scann(unit, cfg)
        index = ScannIndex(ids, arr.shape[1], cfg, fingerprint, table, searcher)
    index.build_s = time.perf_counter() - start
    return index


def _item_table(ids: np.ndarray, items: pl.DataFrame | None) -> pl.DataFrame:
    base = pl.DataFrame({"item_id": ids.tolist()}, schema={"item_id": pl.Utf8})
    if items is None:
        return base
    if "item_id" not in items.columns:
        raise ConfigError("items frame: expected an item_id column")
    extra = items.select(pl.col("item_id").cast(pl.Utf8), pl.exclude("item_id"))
    joined = base.join(extra.unique("item_id", keep="first"), on="item_id", how="left")
    return joined


# --------------------------------------------------------------------------- persistence


def _list_files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_tree(folder: Path) -> None:
    for p in folder.rglob("*"):
        if p.is_file():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())


def load_index(
    directory: str | Path,
    expected_vectors: np.ndarray | str | None = None,
    device: str | None = None,
) -> VectorIndex:
    """Load a saved index after checking every file against its recorded sha256.

    expected_vectors: the embeddings the index will be used with (an array) or their
    `embedding_fingerprint`; a mismatch raises `IndexFileError` (rebuild the index).
    """
    folder = Path(directory)
    meta_path = folder / META_FILE
    if not folder.is_dir():
        raise IndexFileError(f"{folder}: no index folder here")
    if not meta_path.is_file():
        raise IndexFileError(f"{meta_path}: missing; not a saved index (expected {META_FILE})")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IndexFileError(f"{meta_path}: not valid JSON ({exc})") from exc
    if meta.get("format") != FORMAT_NAME or meta.get("version") != FORMAT_VERSION:
        raise IndexFileError(
            f"{meta_path}: format {meta.get('format')!r} v{meta.get('version')!r}; "
            f"expected {FORMAT_NAME!r} v{FORMAT_VERSION}"
        )
    recorded: dict[str, str] = meta.get("files", {})
    present = set(_list_files(folder)) - {META_FILE}
    missing = sorted(set(recorded) - present)
    if missing:
        raise IndexFileError(f"{folder}: missing file(s) {missing} recorded in {META_FILE}")
    extra = sorted(present - set(recorded))
    if extra:
        # never load what was not written by save (ScaNN would unpickle scann_docids.pkl)
        raise IndexFileError(f"{folder}: unexpected file(s) {extra} not recorded in {META_FILE}")
    for rel, digest in recorded.items():
        if _sha256_file(folder / rel) != digest:
            raise IndexFileError(
                f"{folder / rel}: sha256 differs from {META_FILE}; file was altered"
            )

    fingerprint = meta["embeddings"]["sha256"]
    if expected_vectors is not None:
        expected = (
            expected_vectors
            if isinstance(expected_vectors, str)
            else embedding_fingerprint(_as_matrix(expected_vectors, "expected_vectors"))
        )
        if expected != fingerprint:
            raise IndexFileError(
                f"{folder}: built from embeddings {fingerprint[:12]}… (shape "
                f"{meta['embeddings']['shape']}) but the embeddings given are {expected[:12]}…; "
                "rebuild the index for these embeddings"
            )

    cfg_dict = dict(meta["config"])
    if device is not None:
        cfg_dict["device"] = device
    cfg = IndexConfig(**cfg_dict)
    items = pl.read_parquet(folder / ITEMS_FILE)
    ids = np.asarray(items["item_id"].to_list(), dtype=str)
    if ids.shape[0] != meta["n_items"]:
        raise IndexFileError(
            f"{folder / ITEMS_FILE}: {ids.shape[0]} rows, expected {meta['n_items']}"
        )
    if meta["kind"] == "exact":
        vectors = np.load(folder / VECTORS_FILE, allow_pickle=False)
        if vectors.shape != (meta["n_items"], meta["dim"]):
            raise IndexFileError(
                f"{folder / VECTORS_FILE}: shape {vectors.shape}, expected "
                f"{(meta['n_items'], meta['dim'])}"
            )
        return ExactIndex(ids, vectors, cfg, fingerprint, items)
    if meta["kind"] == "scann":
        ops = _scann()
        scann_dir = folder / SCANN_DIR
        assets = (scann_dir / "scann_assets.pbtxt").read_text()
        try:
            raw = ops.scann_pybind.ScannNumpy(str(scann_dir), assets)
        except Exception as exc:  # ScaNN raises plain RuntimeError on bad assets
            raise IndexFileError(f"{scann_dir}: ScaNN could not load its assets ({exc})") from exc
        searcher = ops.ScannSearcher(raw)
        if searcher.size() != meta["n_items"]:
            raise IndexFileError(
                f"{scann_dir}: {searcher.size()} vectors, expected {meta['n_items']}"
            )
        return ScannIndex(ids, meta["dim"], cfg, fingerprint, items, searcher)
    raise IndexFileError(f"{meta_path}: kind {meta['kind']!r}; expected 'scann' or 'exact'")


# --------------------------------------------------------------------------- tuning


def recall_at_k(approx: np.ndarray, exact: np.ndarray, k: int) -> float:
    """Mean over queries of |approx top-k ∩ exact top-k| / k (ids or indices; -1 pads)."""
    approx, exact = np.asarray(approx), np.asarray(exact)
    if approx.shape[0] != exact.shape[0]:
        raise ConfigError(f"recall: {approx.shape[0]} approximate rows vs {exact.shape[0]} exact")
    if approx.shape[0] == 0:
        raise ConfigError("recall: no queries")
    if approx.shape[1] < k or exact.shape[1] < k:
        raise ConfigError(
            f"recall@{k}: result lists hold {approx.shape[1]} / {exact.shape[1]} items"
        )
    hits = 0
    for a, e in zip(approx[:, :k], exact[:, :k], strict=True):
        truth = {x for x in e.tolist() if x != -1}
        hits += len(truth.intersection(x for x in a.tolist() if x != -1))
    return hits / (k * approx.shape[0])


def _timed_search(index: VectorIndex, queries: np.ndarray, k: int, repeats: int, **kw):
    best = math.inf
    result = None
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        result = index.search_indices(queries, k, **kw)
        best = min(best, time.perf_counter() - start)
    return result, best


def exact_baseline(
    item_ids: Sequence[str] | np.ndarray,
    vectors: Any,
    queries: Any,
    k: int = 10,
    repeats: int = 3,
    device: str = "auto",
) -> tuple[np.ndarray, float]:
    """Exact top-k row indices of `queries` and the exact search's queries/s."""
    exact = build_index(item_ids, vectors, IndexConfig(kind="exact", device=device))
    q = _as_matrix(queries, "queries")
    (idx, _), seconds = _timed_search(exact, q, k, repeats)
    return idx, q.shape[0] / seconds


def sweep(
    item_ids: Sequence[str] | np.ndarray,
    vectors: Any,
    queries: Any,
    k: int = 10,
    leaves_to_search: Iterable[int] = (1, 2, 4, 8, 16),
    reorder: Iterable[int] = (10, 20, 50, 100),
    num_leaves: Iterable[int] | None = None,
    config: IndexConfig | None = None,
    exact: np.ndarray | None = None,
    repeats: int = 3,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Recall@k against exact search, queries/s and build time of each ScaNN setting.

    leaves_to_search and reorder are query-time settings, so one index is built per
    `num_leaves` value and searched with each pair; `build_s` is that index's build
    time. qps is the best of `repeats` timed passes over all queries. `exact` can
    pass precomputed exact top-k row indices (from `exact_baseline`).
    """
    from tqdm.auto import tqdm

    arr = _as_matrix(vectors, "item vectors")
    q = _as_matrix(queries, "queries")
    base = (config or IndexConfig()).resolved(arr.shape[0])
    if exact is None:
        exact, _ = exact_baseline(item_ids, arr, q, k, repeats=1, device=base.device)
    # fewer than k re-ordered candidates cannot fill a top-k list: raise them to k
    leaves_list, reorder_list = sorted(set(leaves_to_search)), sorted({max(r, k) for r in reorder})
    leaf_counts = sorted(set(num_leaves)) if num_leaves is not None else [base.num_leaves]
    rows = []
    total = sum(len({min(v, nl) for v in leaves_list}) for nl in leaf_counts) * len(reorder_list)
    bar = tqdm(total=total, desc="sweep", disable=not progress)
    for nl in leaf_counts:
        # build with the largest reorder so any smaller one can be asked for at query time
        cfg = replace(base, kind="scann", num_leaves=nl, reorder=max(max(reorder_list), k))
        index = build_index(item_ids, arr, cfg)
        # more leaves than exist means "search them all"
        for lts in sorted({min(v, nl) for v in leaves_list}):
            for ro in reorder_list:
                (idx, _), seconds = _timed_search(
                    index, q, k, repeats, leaves_to_search=lts, reorder=ro
                )
                rows.append(
                    {
                        "num_leaves": nl,
                        "leaves_to_search": lts,
                        "reorder": ro,
                        f"recall@{k}": round(recall_at_k(idx, exact, k), 4),
                        "qps": round(q.shape[0] / seconds, 1),
                        "build_s": round(index.build_s, 3),
                    }
                )
                bar.update()
    bar.close()
    return rows


def choose_setting(
    rows: Sequence[dict[str, Any]], recall_target: float = 0.95, k: int = 10, by: str = "qps"
) -> dict[str, Any]:
    """The fastest setting whose recall@k meets the target.

    `by="qps"` ranks settings by measured queries/s, which can flip between
    near-equal settings from one run to the next; `by="work"` ranks them by the
    work per query (share of leaves searched, then re-order size), which is
    deterministic, so a report built on the chosen index re-runs to the same
    numbers. When none meets the target, the setting with the highest recall is
    returned; either way the row gains `meets_target`.
    """
    if not rows:
        raise ConfigError("choose_setting: the sweep is empty")
    if by not in ("qps", "work"):
        raise ConfigError(f"choose_setting: by={by!r}, expected 'qps' or 'work'")
    key = f"recall@{k}"

    def speed(r: dict[str, Any]) -> tuple[float, ...]:
        if by == "qps":
            return (r["qps"],)
        return (-r["leaves_to_search"] / r.get("num_leaves", 1), -r["reorder"])

    meeting = [r for r in rows if r[key] >= recall_target]
    if meeting:
        best = max(meeting, key=lambda r: (*speed(r), r[key]))
    else:
        best = max(rows, key=lambda r: (r[key], *speed(r)))
    return {**best, "meets_target": bool(meeting), "recall_target": recall_target}


def config_for_setting(base: IndexConfig, setting: dict[str, Any]) -> IndexConfig:
    """`base` with the num_leaves / leaves_to_search / reorder of a sweep row."""
    return replace(
        base,
        kind="scann",
        num_leaves=int(setting.get("num_leaves", base.num_leaves)),
        leaves_to_search=int(setting["leaves_to_search"]),
        reorder=int(setting["reorder"]),
    )


# --------------------------------------------------------------------------- embeddings file


@dataclass
class ItemEmbeddings:
    """One column of `<work>/embeddings/items.parquet` as a matrix, plus per-item info."""

    item_ids: np.ndarray
    vectors: np.ndarray
    column: str
    info: pl.DataFrame  # item_id + weight_<modality> columns, aligned with item_ids
    meta: dict[str, Any] = field(default_factory=dict)


def read_item_embeddings(path: str | Path, column: str = "fused") -> ItemEmbeddings:
    """Read `column` (`fused`, `text`, `image`, `audio`) of the embeddings file.

    Rows where the column is null (items lacking that modality) are left out.
    `path` is the parquet file or the `<work>/embeddings` folder holding it.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "items.parquet"
    if not path.is_file():
        raise CatalogError(f"{path}: embeddings file not found (run the encoders notebook first)")
    frame = pl.read_parquet(path)
    if "item_id" not in frame.columns or column not in frame.columns:
        raise CatalogError(
            f"{path}: expected columns item_id and {column!r}; found {frame.columns}"
        )
    frame = frame.filter(pl.col(column).is_not_null())
    if frame.height == 0:
        raise CatalogError(f"{path}: no rows with a {column!r} embedding; nothing to index")
    vectors = np.asarray(frame[column].to_list(), dtype=np.float32)
    if vectors.ndim != 2:
        raise CatalogError(f"{path}: column {column!r} holds vectors of different lengths")
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    weights = [c for c in frame.columns if c.startswith("weight_")]
    return ItemEmbeddings(
        item_ids=np.asarray(frame["item_id"].cast(pl.Utf8).to_list(), dtype=str),
        vectors=vectors,
        column=column,
        info=frame.select("item_id", *weights),
        meta=meta,
    )


# --------------------------------------------------------------------------- cross-modal queries


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
    """Encode text with the text tower and search the (fused) index."""
    texts = [text] if isinstance(text, str) else list(text)
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


# --------------------------------------------------------------------------- CLI entry point


@dataclass
class IndexJob:
    """What `workbench index` does: build an index over `<work>/embeddings/items.parquet`
    (column `column`) with `config` (default: `IndexConfig.for_size`) and save it to
    `<work>/index` (or `out_dir`)."""

    work_dir: str
    column: str = "fused"
    config: IndexConfig | None = None
    out_dir: str | None = None


def build_work_index(job: IndexJob) -> Path:
    """Build and save the index of a work folder; returns the index folder."""
    emb = read_item_embeddings(Path(job.work_dir) / "embeddings", job.column)
    config = job.config or IndexConfig.for_size(len(emb.item_ids))
    index = build_index(emb.item_ids, emb.vectors, config, items=emb.info)
    return index.save(Path(job.out_dir) if job.out_dir else Path(job.work_dir) / "index")
