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
captured around each native call and passed to the `workbench.index.native_stderr`
logger at DEBUG.

Tuning: `sweep` measures recall@k against `ExactIndex`, queries/s and build time
for each setting; `choose_setting` picks the fastest that meets a recall target.
Cross-modal queries (`search_by_text`, `search_by_image`, `search_by_audio`)
encode a query with the trained towers and return hits with the item's fusion
weights, which say which modality the item's fused vector leans on.

Modules, each importing only those above it:
  config         IndexConfig and the defaults for a number of items
  vectors        input checks, normalising, the embedding fingerprint, inner-product search
  folder_format  the saved folder's file names and the schema of index.json
  native_stderr  ScaNN's C++ logs (fd 2) to a logger
  scann_simd     the SIMD kernels ScaNN runs at, and importing ScaNN
  base           VectorIndex: the search interface, and saving
  exact_backend  ExactIndex (torch)
  scann_backend  ScannIndex, and building a ScaNN searcher
  build          build_index
  storage        load_index
  tuning         recall_at_k, sweep, choose_setting, sweep_claims, config_for_setting, tuning_queries
  embeddings     read_item_embeddings (the embeddings file)
  search         search_vectors, search_by_text / _image / _audio
  job            IndexJob, build_work_index (the `workbench index` command)
"""

from workbench.index.base import VectorIndex
from workbench.index.build import build_index
from workbench.index.config import (
    DEFAULT_BRUTE_FORCE_THRESHOLD,
    KINDS,
    MIN_PARTITION_SIZE,
    IndexConfig,
)
from workbench.index.embeddings import ItemEmbeddings, read_item_embeddings
from workbench.index.exact_backend import ExactIndex
from workbench.index.folder_format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    ITEMS_FILE,
    META_FILE,
    SCANN_ASSETS,
    SCANN_DIR,
    VECTORS_FILE,
)
from workbench.index.job import IndexJob, build_work_index
from workbench.index.scann_backend import ScannIndex
from workbench.index.scann_simd import (
    DEFAULT_SCANN_KERNELS,
    SCANN_KERNELS,
    SCANN_KERNELS_ENV,
    scann_kernels,
)
from workbench.index.search import (
    QueryEncoder,
    search_by_audio,
    search_by_image,
    search_by_text,
    search_vectors,
)
from workbench.index.storage import load_index
from workbench.index.tuning import (
    choose_setting,
    config_for_setting,
    exact_baseline,
    recall_at_k,
    search_grid,
    sweep,
    sweep_claims,
    tuning_queries,
)
from workbench.index.vectors import (
    embedding_fingerprint,
    inner_product_items,
    inner_product_queries,
)

__all__ = [
    "DEFAULT_BRUTE_FORCE_THRESHOLD",
    "DEFAULT_SCANN_KERNELS",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "ITEMS_FILE",
    "KINDS",
    "META_FILE",
    "MIN_PARTITION_SIZE",
    "SCANN_ASSETS",
    "SCANN_DIR",
    "SCANN_KERNELS",
    "SCANN_KERNELS_ENV",
    "VECTORS_FILE",
    "ExactIndex",
    "IndexConfig",
    "IndexJob",
    "ItemEmbeddings",
    "QueryEncoder",
    "ScannIndex",
    "VectorIndex",
    "build_index",
    "build_work_index",
    "choose_setting",
    "config_for_setting",
    "embedding_fingerprint",
    "exact_baseline",
    "inner_product_items",
    "inner_product_queries",
    "load_index",
    "read_item_embeddings",
    "recall_at_k",
    "scann_kernels",
    "search_by_audio",
    "search_by_image",
    "search_by_text",
    "search_grid",
    "search_vectors",
    "sweep",
    "sweep_claims",
    "tuning_queries",
]
