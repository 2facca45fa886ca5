"""Vector indexes over item embeddings: ScaNN for speed, exact search as ground truth.

A small typed factory: `IndexConfig` says what to build (`IndexConfig.for_size(n)`
gives defaults that suit `n` items), `build_index(item_ids, vectors, config)`
returns a `VectorIndex`, whose `search(queries, k)` returns item ids and scores.
Similarity is the dot product of L2-normalised vectors (cosine), for items and
queries alike.

Saved indexes are folders published atomically (`workbench.files.staging_dir`):
`index.json` (settings, the embedding fingerprint, a sha256 of every other file),
`items.parquet` (the item-id table, plus any per-item columns such as fusion
weights) and either `scann/` (ScaNN's own assets) or `vectors.npy` (exact).
`load_index` checks every field of `index.json` against a schema before it reads
anything else, then refuses missing, extra, linked or altered files, an item table
or vector file that does not match `index.json` and, when given the embeddings it
will be used with, a fingerprint that does not match them.

ScaNN's C++ code logs through absl straight to file descriptor 2; those lines are
captured around each native call and passed to this module's logger at DEBUG.

Tuning: `sweep` measures recall@k against `ExactIndex`, queries/s and build time
for each setting; `choose_setting` picks the fastest that meets a recall target.
Cross-modal queries (`search_by_text`, `search_by_image`, `search_by_audio`)
encode a query with the trained towers and return hits with the item's fusion
weights, which say which modality the item's fused vector leans on.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import polars as pl
import torch

from workbench.device import resolve_device
from workbench.errors import CatalogError, ConfigError, IndexFileError
from workbench.files import (
    atomic_path,
    sha256_file,
    staging_dir,
    write_json_atomic,
    write_parquet_atomic,
)

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
SCANN_ASSETS = f"{SCANN_DIR}/scann_assets.pbtxt"

log = logging.getLogger(__name__)


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


def inner_product_items(vectors: np.ndarray) -> np.ndarray:
    """Item vectors for maximum-inner-product search through this module's cosine indexes.

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
        # an open file: np.save would append ".npy" to the temporary name
        with atomic_path(folder / VECTORS_FILE) as tmp, open(tmp, "wb") as fh:
            np.save(fh, self.vectors, allow_pickle=False)


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


# fd 2 belongs to the whole process: one capture at a time (re-entrant, as each level
# saves and restores whatever fd 2 was when it began)
_STDERR_LOCK = threading.RLock()


@contextlib.contextmanager
def _native_stderr_to_log(what: str) -> Iterator[None]:
    """Send what C++ code writes to file descriptor 2 to this module's logger (DEBUG).

    ScaNN logs through absl, which writes straight to fd 2 ("WARNING: All log messages
    before absl::InitializeLog() ...", "I0000 ... partitioner_factory_base.cc:58] ...")
    and reads no environment variable that turns this off (absl's --minloglevel and
    --stderrthreshold are command-line flags only). So fd 2 points at a temporary file
    for the duration and is restored in `finally`. In a Jupyter kernel fd 2 is
    ipykernel's pipe to the notebook, and that pipe is what is put back.
    If the call raises, the captured text is also written back to stderr, since it
    may explain the failure; if the process dies inside the call (an absl CHECK
    aborts), the lines stay in the temporary file, named workbench-native-stderr-*.
    Python code writing to stderr from another thread meanwhile is captured too.
    """
    with _STDERR_LOCK:
        try:
            saved = os.dup(2)
        except OSError:  # no fd 2 at all (a daemon): nothing reaches a terminal anyway
            yield
            return
        sink = tempfile.NamedTemporaryFile(prefix="workbench-native-stderr-", delete=False)
        failed = False
        try:
            if sys.stderr is not None:
                sys.stderr.flush()  # Python's own buffered text belongs before the capture
            os.dup2(sink.fileno(), 2)
            try:
                yield
            except BaseException:
                failed = True
                raise
            finally:
                os.dup2(saved, 2)
        finally:
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode("utf-8", errors="replace")
            sink.close()
            os.unlink(sink.name)
            for line in text.splitlines():
                if line.strip():
                    log.debug("%s: %s", what, line)
            if failed and text and sys.stderr is not None:
                sys.stderr.write(text)
                sys.stderr.flush()


# --------------------------------------------------------------------------- ScaNN's SIMD kernels
#
# ScaNN picks its kernels (LUT16 asymmetric hashing, k-means, dot products) by the flags
# research_scann::flags_internal::should_use_avx2 / should_use_avx512, set at load time
# from `port::TestCPUFeature`. In the scann 1.4.2 wheel that function is compiled to
# `return false` (its CPUID block is guarded by a macro the wheel's build never defines),
# so every CPU runs the SSE4/AVX1 fallback. Measured on a 2-core AVX-512 Xeon, 100k x 256:
# the AVX2 kernels search 1.3x faster at the same recall and train the index ~1.3x faster;
# AVX2 and AVX-512 builds were byte-identical and every kernel level returned the same
# neighbours. So the flags are set here, once, from the CPU's own feature bits, before the
# first searcher is built or loaded (kernels are chosen per call; layouts do not depend on
# them, so a saved index loads under any level).

SCANN_KERNELS = ("baseline", "avx2", "avx512")
SCANN_KERNELS_ENV = "WORKBENCH_SCANN_KERNELS"
# AVX2 is the level every other numeric library is capped at (workbench.reproducibility):
# the same kernels on every AVX2 machine. AVX-512 measured no faster here (see bench_index).
DEFAULT_SCANN_KERNELS = "avx2"
_KERNEL_FEATURES = {
    "baseline": (),
    "avx2": ("avx2", "fma"),
    "avx512": ("avx2", "fma", "avx512f", "avx512dq", "avx512bw", "avx512vl"),
}
_NUMPY_FEATURES = {"avx2": "AVX2", "fma": "FMA3", "avx512f": "AVX512F", "avx512dq": "AVX512DQ",
                   "avx512bw": "AVX512BW", "avx512vl": "AVX512VL"}
_scann_kernels_in_use: str | None = None
_KERNELS_LOCK = threading.Lock()


def _cpu_has(level: str) -> bool:
    """Whether this CPU (and OS) runs `level`'s instructions: /proc/cpuinfo and numpy's own
    CPUID probe must both say so (a wrong answer here would be an illegal instruction)."""
    from workbench.reproducibility import cpu_flags

    wanted = _KERNEL_FEATURES[level]
    if not wanted:
        return True
    if not set(wanted) <= cpu_flags():
        return False
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as probed
    except ImportError:  # pragma: no cover - numpy < 2 or a layout change: cpuinfo alone
        return True
    # NPY_DISABLE_CPU_FEATURES (the pinning) hides only numpy's own AVX-512 loop groups,
    # not these base bits, so they still report the CPU
    return all(probed.get(_NUMPY_FEATURES[f], False) for f in wanted)


def scann_kernels(requested: str | None = None) -> str:
    """The SIMD level ScaNN runs at in this process: "baseline" (the wheel's SSE4/AVX1
    code), "avx2" or "avx512".

    Decided once, at the first ScaNN build or load: `WORKBENCH_SCANN_KERNELS` if set, else
    `DEFAULT_SCANN_KERNELS`, lowered to what the CPU supports. `requested` (before any
    searcher exists) asks for a level explicitly, e.g. a benchmark comparing them; later
    calls return the level in effect, since kernels must not change under live searchers.
    """
    global _scann_kernels_in_use
    with _KERNELS_LOCK:
        if _scann_kernels_in_use is not None:
            if requested is not None and requested != _scann_kernels_in_use:
                raise ConfigError(
                    f"scann_kernels({requested!r}): ScaNN already runs {_scann_kernels_in_use!r} "
                    "kernels in this process; choose the level before the first index is built"
                )
            return _scann_kernels_in_use
        level = requested or os.environ.get(SCANN_KERNELS_ENV, "").strip() or DEFAULT_SCANN_KERNELS
        if level not in SCANN_KERNELS:
            raise ConfigError(
                f"{SCANN_KERNELS_ENV}={level!r}: expected one of {', '.join(SCANN_KERNELS)}"
            )
        # the best level at or below the one asked for that this CPU runs
        for candidate in SCANN_KERNELS[SCANN_KERNELS.index(level) :: -1]:
            if _cpu_has(candidate):
                break
        _scann_kernels_in_use = _apply_scann_kernels(candidate)
        if _scann_kernels_in_use != level:
            log.info("ScaNN kernels: %s requested, %s in use", level, _scann_kernels_in_use)
        return _scann_kernels_in_use


def _apply_scann_kernels(level: str) -> str:
    """Set ScaNN's dispatch flags for `level`; returns the level actually set."""
    import ctypes

    _scann_module()
    native = sys.modules.get("scann_pybind")
    if native is None or not getattr(native, "__file__", None):  # pragma: no cover
        return "baseline"
    try:
        lib = ctypes.CDLL(native.__file__)  # the library already loaded: same handle
        flags = {
            name: ctypes.c_bool.in_dll(
                lib, f"_ZN14research_scann14flags_internal{len(name)}{name}E"
            )
            for name in ("should_use_avx2", "should_use_avx512")
        }
    except (OSError, ValueError) as exc:  # another scann build without these symbols
        log.debug("ScaNN kernels left as built (%s)", exc)
        return "baseline"
    flags["should_use_avx2"].value = level in ("avx2", "avx512")
    flags["should_use_avx512"].value = level == "avx512"
    return level


def _scann_module():
    try:
        from scann.scann_ops.py import scann_ops_pybind
    except ImportError as exc:  # pragma: no cover - scann is a Linux dependency
        raise ConfigError(
            "IndexConfig.kind='scann' needs the scann package (Linux); use kind='exact'"
        ) from exc
    return scann_ops_pybind


def _scann():
    ops = _scann_module()
    scann_kernels()  # before the first searcher: see the comment above SCANN_KERNELS
    return ops


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
    with _native_stderr_to_log("ScaNN build"):
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


# --------------------------------------------------------------------------- index.json schema
#
# `load_index` checks index.json against this schema before it reads anything else, so
# a tampered or hand-edited file gets an IndexFileError naming the field and what was
# expected instead of a TypeError or KeyError deep inside loading.


@dataclass(frozen=True)
class _Value:
    """A leaf: what the error message says was expected, and the test of a value."""

    expected: str
    ok: Callable[[Any], bool]


@dataclass(frozen=True)
class _Object:
    """A JSON object with exactly these fields: none missing, none unknown."""

    fields: Mapping[str, _Value | _Object | _Map]
    expected: str = "a JSON object"


@dataclass(frozen=True)
class _Map:
    """A JSON object whose keys are data (file paths), each key and value checked."""

    key: _Value
    value: _Value
    expected: str


def _is_int(v: Any) -> bool:
    return type(v) is int  # not bool: JSON true is no count


def _int_at_least(lo: int) -> _Value:
    what = "a positive integer" if lo == 1 else f"an integer >= {lo}"
    return _Value(what, lambda v: _is_int(v) and v >= lo)


def _exactly(value: Any) -> _Value:
    return _Value(json.dumps(value), lambda v: type(v) is type(value) and v == value)


def _one_of(*values: str) -> _Value:
    return _Value("one of " + ", ".join(map(json.dumps, values)), lambda v: v in values)


def _matches(pattern: str, expected: str) -> _Value:
    regex = re.compile(pattern)
    return _Value(expected, lambda v: isinstance(v, str) and regex.fullmatch(v) is not None)


def _is_relative_inside(key: Any) -> bool:
    """A relative POSIX path without '.', '..' or empty parts: a name inside the folder."""
    if not isinstance(key, str) or not key or key.startswith("/") or "\\" in key or "\0" in key:
        return False
    return all(part not in ("", ".", "..") for part in key.split("/"))


_DIGEST = _matches(r"[0-9a-fA-F]{64}", "a 64-character hex digest")
_KIND = _one_of("scann", "exact")

# one entry per IndexConfig field (a test keeps the two in step); saved configs are
# resolved, so no field is null and kind is never "auto"
_CONFIG_SCHEMA = _Object(
    {
        "kind": _KIND,
        "num_leaves": _int_at_least(1),
        "leaves_to_search": _int_at_least(1),
        "reorder": _int_at_least(0),
        "dims_per_block": _int_at_least(1),
        "anisotropic_threshold": _Value(
            "a finite number",
            lambda v: type(v) in (int, float) and math.isfinite(v),
        ),
        "training_sample_size": _int_at_least(1),
        "spherical": _Value("true or false", lambda v: type(v) is bool),
        "brute_force_threshold": _int_at_least(0),
        "num_threads": _int_at_least(0),
        "batch_size": _int_at_least(1),
        "device": _matches(
            r"auto|cpu|mps|cuda(:\d+)?", '"auto", "cpu", "mps", "cuda" or "cuda:<n>"'
        ),
    }
)

_META_SCHEMA = _Object(
    {
        "format": _exactly(FORMAT_NAME),
        "version": _exactly(FORMAT_VERSION),
        "kind": _KIND,
        "n_items": _int_at_least(1),
        "dim": _int_at_least(1),
        "embeddings": _Object(
            {
                "sha256": _DIGEST,
                "shape": _Value(
                    "[n_items, dim], a list of two positive integers",
                    lambda v: (
                        isinstance(v, list)
                        and len(v) == 2
                        and all(_is_int(x) and x >= 1 for x in v)
                    ),
                ),
                "dtype": _exactly("float32"),
            }
        ),
        "config": _CONFIG_SCHEMA,
        "files": _Map(
            key=_Value(
                "a relative path inside the index folder (not absolute, no '..')",
                _is_relative_inside,
            ),
            value=_DIGEST,
            expected="a JSON object mapping each file's relative path to its sha256",
        ),
    }
)


def _shown(value: Any) -> str:
    """A value as index.json spells it, shortened, with its JSON type."""
    if value is None:
        return "null"
    kinds = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
    }
    text = json.dumps(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"{text} ({kinds.get(type(value), type(value).__name__)})"


def _validate(value: Any, spec: _Value | _Object | _Map, name: str, where: Path) -> None:
    """Raise IndexFileError naming `where`, the dotted field `name` and what `spec` expects."""
    if not isinstance(spec, _Value) and not isinstance(value, dict):
        subject = f"field '{name}' is" if name else "holds"
        raise IndexFileError(f"{where}: {subject} {_shown(value)}; expected {spec.expected}")
    if isinstance(spec, _Value):
        if not spec.ok(value):
            raise IndexFileError(
                f"{where}: field '{name}' is {_shown(value)}; expected {spec.expected}"
            )
    elif isinstance(spec, _Map):
        for key, item in value.items():
            if not spec.key.ok(key):
                raise IndexFileError(
                    f"{where}: field '{name}' has the key {json.dumps(key)}; "
                    f"expected {spec.key.expected}"
                )
            _validate(item, spec.value, f"{name}[{json.dumps(key)}]", where)
    else:
        for key, sub in spec.fields.items():
            child = f"{name}.{key}" if name else key
            if key not in value:
                raise IndexFileError(
                    f"{where}: field '{child}' is missing; expected {sub.expected}"
                )
            _validate(value[key], sub, child, where)
        unknown = sorted(set(value) - set(spec.fields))
        if unknown:
            names = ", ".join(f"'{name}.{k}'" if name else f"'{k}'" for k in unknown)
            raise IndexFileError(
                f"{where}: unknown field(s) {names}; expected only {', '.join(spec.fields)}"
            )


def _check_consistency(meta: dict[str, Any], where: Path) -> None:
    """What the schema cannot say field by field: fields that must agree with each other."""
    n, dim, kind, cfg = meta["n_items"], meta["dim"], meta["kind"], meta["config"]
    if meta["embeddings"]["shape"] != [n, dim]:
        raise IndexFileError(
            f"{where}: field 'embeddings.shape' is {meta['embeddings']['shape']}; "
            f"expected [n_items, dim] = [{n}, {dim}]"
        )
    if cfg["kind"] != kind:
        raise IndexFileError(
            f"{where}: field 'config.kind' is {json.dumps(cfg['kind'])}; "
            f"expected {json.dumps(kind)}, the field 'kind'"
        )
    if kind == "scann" and cfg["num_leaves"] > n:
        raise IndexFileError(
            f"{where}: field 'config.num_leaves' is {cfg['num_leaves']}; "
            f"expected at most n_items = {n}"
        )
    if kind == "scann" and cfg["leaves_to_search"] > cfg["num_leaves"]:
        raise IndexFileError(
            f"{where}: field 'config.leaves_to_search' is {cfg['leaves_to_search']}; "
            f"expected at most config.num_leaves = {cfg['num_leaves']}"
        )
    required = [ITEMS_FILE, VECTORS_FILE] if kind == "exact" else [ITEMS_FILE, SCANN_ASSETS]
    missing = [rel for rel in required if rel not in meta["files"]]
    if missing:
        raise IndexFileError(
            f"{where}: field 'files' lacks {missing}; expected the files of a {kind} index"
        )
    stray = sorted(
        rel
        for rel in meta["files"]
        if rel not in required and not (kind == "scann" and rel.startswith(f"{SCANN_DIR}/"))
    )
    if stray:
        holds = (
            f"{ITEMS_FILE} and {VECTORS_FILE}"
            if kind == "exact"
            else f"{ITEMS_FILE} and {SCANN_DIR}/…"
        )
        raise IndexFileError(
            f"{where}: field 'files' lists {stray}; "
            f"expected only the files of a {kind} index ({holds})"
        )


# --------------------------------------------------------------------------- persistence


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        # json.loads would keep the last silently: two values, no way to know which was meant
        raise ValueError(f"key(s) {repeated} appear more than once in one object")
    return dict(pairs)


def _file_kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    return "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"


def _read_meta(meta_path: Path) -> dict[str, Any]:
    """index.json parsed and checked against the schema; nothing else is read first."""
    try:
        mode = os.lstat(meta_path).st_mode
    except FileNotFoundError:
        raise IndexFileError(
            f"{meta_path}: missing; not a saved index (expected {META_FILE})"
        ) from None
    if not stat.S_ISREG(mode):
        raise IndexFileError(
            f"{meta_path}: is {_file_kind(mode)}; expected the JSON file VectorIndex.save writes"
        )
    text = meta_path.read_bytes()
    # JSON, UTF-8 and duplicate-key errors are all ValueErrors; deep nesting recurses
    try:
        meta = json.loads(text.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except (ValueError, RecursionError) as exc:
        raise IndexFileError(
            f"{meta_path}: not valid JSON ({exc}); expected the file VectorIndex.save writes"
        ) from exc
    # "format" is the schema's first field: another file format is named as such first
    _validate(meta, _META_SCHEMA, "", meta_path)
    _check_consistency(meta, meta_path)
    return meta


def _files_in(folder: Path) -> list[str]:
    """Relative paths of the regular files under `folder`, sorted.

    Links and special files are refused: save writes neither, a link could point
    outside the folder, and a fifo would hang the checksum.
    """
    found = []
    for root, dirs, names in os.walk(folder):  # followlinks=False: never leaves the folder
        for name in sorted(dirs + names):
            path = Path(root) / name
            mode = os.lstat(path).st_mode
            if stat.S_ISREG(mode):
                found.append(path.relative_to(folder).as_posix())
            elif not stat.S_ISDIR(mode):
                raise IndexFileError(
                    f"{path}: is {_file_kind(mode)}; expected only regular files and "
                    "folders inside the index folder"
                )
    return sorted(found)


def _read_items(path: Path, n_items: int) -> pl.DataFrame:
    """items.parquet: readable, a unique non-null string `item_id` per row, n_items rows."""
    try:
        items = pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise IndexFileError(f"{path}: not a readable parquet file ({exc})") from exc
    if "item_id" not in items.columns:
        raise IndexFileError(
            f"{path}: no item_id column (columns: {items.columns}); "
            "expected an item_id column of strings"
        )
    ids = items["item_id"]
    if ids.dtype != pl.String:
        raise IndexFileError(f"{path}: column item_id is {ids.dtype}; expected strings")
    if ids.null_count():
        raise IndexFileError(
            f"{path}: column item_id holds {ids.null_count()} null(s); expected an id in every row"
        )
    repeated = ids.filter(ids.is_duplicated()).unique(maintain_order=True).head(5).to_list()
    if repeated:
        raise IndexFileError(f"{path}: column item_id repeats {repeated}; expected unique ids")
    if items.height != n_items:
        raise IndexFileError(
            f"{path}: {items.height} rows; expected n_items = {n_items} (from {META_FILE})"
        )
    return items


def _read_vectors(path: Path, n_items: int, dim: int) -> np.ndarray:
    """vectors.npy: a float32 (n_items, dim) array, read without pickle."""
    try:
        vectors = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise IndexFileError(f"{path}: not a readable .npy file ({exc})") from exc
    if not isinstance(vectors, np.ndarray):  # an .npz archive under the .npy name
        raise IndexFileError(f"{path}: an .npz archive; expected one .npy array")
    if vectors.dtype != np.float32 or vectors.shape != (n_items, dim):
        raise IndexFileError(
            f"{path}: {vectors.dtype} array of shape {vectors.shape}; "
            f"expected float32 of shape {(n_items, dim)} (n_items, dim)"
        )
    return vectors


def _read_scann_assets(scann_dir: Path, recorded: Mapping[str, str]) -> str:
    """scann_assets.pbtxt, whose every asset_path names a file recorded in index.json
    (an absolute or '..' path would make ScaNN read outside the folder)."""
    path = scann_dir / "scann_assets.pbtxt"
    try:
        assets = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise IndexFileError(f"{path}: unreadable ({exc})") from exc
    for asset in re.findall(r'asset_path:\s*"([^"]*)"', assets):
        if not _is_relative_inside(asset) or f"{SCANN_DIR}/{asset}" not in recorded:
            raise IndexFileError(
                f"{path}: asset_path {json.dumps(asset)}; expected the name of a file in "
                f"{SCANN_DIR}/ recorded in {META_FILE}"
            )
    return assets


def load_index(
    directory: str | Path,
    expected_vectors: np.ndarray | str | None = None,
    device: str | None = None,
) -> VectorIndex:
    """Load a saved index after checking index.json and every file against it.

    expected_vectors: the embeddings the index will be used with (an array) or their
    `embedding_fingerprint`; a mismatch raises `IndexFileError` (rebuild the index).
    Any other fault (a field of index.json, a missing, extra, linked or altered file,
    an item table or vector file unlike index.json) raises `IndexFileError` too.
    """
    folder = Path(directory)
    if not folder.exists():
        raise IndexFileError(f"{folder}: no index folder here")
    if not folder.is_dir():
        raise IndexFileError(
            f"{folder}: not a folder; expected a saved index folder holding {META_FILE}"
        )
    meta = _read_meta(folder / META_FILE)
    recorded: dict[str, str] = meta["files"]
    present = set(_files_in(folder)) - {META_FILE}
    missing = sorted(set(recorded) - present)
    if missing:
        raise IndexFileError(f"{folder}: missing file(s) {missing} recorded in {META_FILE}")
    extra = sorted(present - set(recorded))
    if extra:
        # never load what was not written by save (ScaNN would unpickle scann_docids.pkl)
        raise IndexFileError(f"{folder}: unexpected file(s) {extra} not recorded in {META_FILE}")
    for rel, digest in recorded.items():
        if sha256_file(folder / rel) != digest.lower():
            raise IndexFileError(
                f"{folder / rel}: sha256 differs from {META_FILE}; file was altered"
            )

    fingerprint = meta["embeddings"]["sha256"].lower()
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

    n_items, dim = meta["n_items"], meta["dim"]
    cfg_dict = dict(meta["config"])
    if device is not None:
        cfg_dict["device"] = device
    cfg = IndexConfig(**cfg_dict)
    items = _read_items(folder / ITEMS_FILE, n_items)
    ids = np.asarray(items["item_id"].to_list(), dtype=str)
    if meta["kind"] == "exact":
        vectors = _read_vectors(folder / VECTORS_FILE, n_items, dim)
        return ExactIndex(ids, vectors, cfg, fingerprint, items)
    ops = _scann()
    scann_dir = folder / SCANN_DIR
    assets = _read_scann_assets(scann_dir, recorded)
    try:
        with _native_stderr_to_log("ScaNN load"):
            raw = ops.scann_pybind.ScannNumpy(str(scann_dir), assets)
    except Exception as exc:  # ScaNN raises plain RuntimeError on bad assets
        raise IndexFileError(f"{scann_dir}: ScaNN could not load its assets ({exc})") from exc
    searcher = ops.ScannSearcher(raw)
    if searcher.size() != n_items:
        raise IndexFileError(f"{scann_dir}: {searcher.size()} vectors, expected {n_items}")
    return ScannIndex(ids, dim, cfg, fingerprint, items, searcher)


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


def search_grid(num_leaves: int, k: int = 10) -> tuple[list[int], list[int]]:
    """A fine grid of the two query-time settings for an index of `num_leaves` partitions.

    Leaves searched: every count from 1 to 8, then steps of about 25% up to a tenth of
    the leaves (every leaf below 100 partitions, where that is still cheap); re-order
    depths from k to 20k in steps of about 25-50%. At recall@10 0.95 on clustered
    256-d vectors the fastest settings searched 0.2-1% of the leaves and re-ordered
    20-60 candidates (bench_index.py), between the old grid's points.
    """
    if num_leaves < 1:
        raise ConfigError(f"search_grid: num_leaves={num_leaves}; expected a positive integer")
    top = num_leaves if num_leaves < 100 else max(8, num_leaves // 10)
    leaves = set(range(1, min(8, top) + 1))
    value = 8.0
    while value < top:
        value *= 1.25
        leaves.add(min(top, round(value)))
    reorder = {max(k, round(k * f)) for f in (1, 1.5, 2, 2.5, 3, 4, 5, 7, 10, 15, 20)}
    return sorted(leaves), sorted(reorder)


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
    dims_per_block: Iterable[int] | None = None,
    anisotropic_threshold: Iterable[float] | None = None,
) -> list[dict[str, Any]]:
    """Recall@k against exact search, queries/s and build time of each ScaNN setting.

    leaves_to_search and reorder are query-time settings, so one index is built per
    build-time combination (`num_leaves` x `dims_per_block` x `anisotropic_threshold`,
    each defaulting to `config`'s value) and searched with each pair; `build_s` is that
    index's build time. qps is the best of `repeats` timed passes over all queries (on
    the index's `num_threads`). `exact` can pass precomputed exact top-k row indices
    (from `exact_baseline`).
    """
    import itertools

    from workbench.progress import progress_bar

    arr = _as_matrix(vectors, "item vectors")
    q = _as_matrix(queries, "queries")
    base = (config or IndexConfig()).resolved(arr.shape[0])
    if exact is None:
        exact, _ = exact_baseline(item_ids, arr, q, k, repeats=1, device=base.device)
    # fewer than k re-ordered candidates cannot fill a top-k list: raise them to k
    leaves_list, reorder_list = sorted(set(leaves_to_search)), sorted({max(r, k) for r in reorder})
    leaf_counts = sorted(set(num_leaves)) if num_leaves is not None else [base.num_leaves]
    blocks = sorted(set(dims_per_block)) if dims_per_block is not None else [base.dims_per_block]
    thresholds = (
        sorted(set(anisotropic_threshold))
        if anisotropic_threshold is not None
        else [base.anisotropic_threshold]
    )
    builds = list(itertools.product(leaf_counts, blocks, thresholds))
    rows = []
    total = sum(len({min(v, nl) for v in leaves_list}) for nl, _, _ in builds) * len(reorder_list)
    bar = progress_bar(total=total, desc="sweep", enabled=progress)
    for nl, dpb, thr in builds:
        # build with the largest reorder so any smaller one can be asked for at query time
        cfg = replace(
            base,
            kind="scann",
            num_leaves=nl,
            reorder=max(max(reorder_list), k),
            dims_per_block=dpb,
            anisotropic_threshold=thr,
        )
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
                        "dims_per_block": dpb,
                        "anisotropic_threshold": thr,
                        f"recall@{k}": round(recall_at_k(idx, exact, k), 4),
                        "qps": round(q.shape[0] / seconds, 1),
                        "build_s": round(index.build_s, 3),
                    }
                )
                bar.update()
        del index  # one index in memory at a time (a 1M-item index holds ~1.2 GB)
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
        # wider code blocks hash fewer codes per item: less work at equal leaves/reorder
        return (
            -r["leaves_to_search"] / r.get("num_leaves", 1),
            -r["reorder"],
            r.get("dims_per_block", 0),
        )

    meeting = [r for r in rows if r[key] >= recall_target]
    if meeting:
        best = max(meeting, key=lambda r: (*speed(r), r[key]))
    else:
        best = max(rows, key=lambda r: (r[key], *speed(r)))
    return {**best, "meets_target": bool(meeting), "recall_target": recall_target}


def sweep_claims(
    rows: Sequence[dict[str, Any]], k: int = 10, full_recall: float = 0.99, slack: float = 0.02
) -> dict[str, bool]:
    """What a sweep must show on any machine, as booleans with wide margins.

    The recalls themselves move in the third decimal between CPUs (ScaNN picks its
    SIMD code by CPU); these claims do not: the best recall per number of partitions
    searched grows (never falling by more than `slack`) from the fewest to the most
    partitions, and searching every partition finds at least `full_recall` of the
    exact top-k.
    """
    if not rows:
        raise ConfigError("sweep_claims: the sweep is empty")
    key = f"recall@{k}"
    best: dict[int, float] = {}
    for r in rows:
        best[r["leaves_to_search"]] = max(best.get(r["leaves_to_search"], 0.0), r[key])
    curve = [best[n] for n in sorted(best)]
    grows = curve[-1] > curve[0] and all(b >= a - slack for a, b in zip(curve, curve[1:], strict=False))
    everything = [r[key] for r in rows if r["leaves_to_search"] >= r.get("num_leaves", r["leaves_to_search"])]
    return {
        f"recall@{k} grows with the partitions searched": grows,
        f"searching every partition finds the exact top-{k} (recall >= {full_recall:g})":
            bool(everything) and max(everything) >= full_recall,
    }


def config_for_setting(base: IndexConfig, setting: dict[str, Any]) -> IndexConfig:
    """`base` with the num_leaves / leaves_to_search / reorder (and, when the row has
    them, dims_per_block / anisotropic_threshold) of a sweep row."""
    return replace(
        base,
        kind="scann",
        num_leaves=int(setting.get("num_leaves", base.num_leaves)),
        leaves_to_search=int(setting["leaves_to_search"]),
        reorder=int(setting["reorder"]),
        dims_per_block=int(setting.get("dims_per_block", base.dims_per_block)),
        anisotropic_threshold=float(
            setting.get("anisotropic_threshold", base.anisotropic_threshold)
        ),
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
    """Encode text with the text tower and search the (fused) index; an empty query is refused."""
    texts = [text] if isinstance(text, str) else list(text)
    empty = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if empty:
        raise ConfigError(f"query {empty[0]} is empty: expected some words to search for "
                          f"({len(empty)} of {len(texts)} queries are empty)")
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
