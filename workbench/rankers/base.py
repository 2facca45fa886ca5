"""The interface every ranker shares: vocabularies, scoring, batched full ranking.

A ranker is fitted on an interactions table (`user_id`, `item_id`, `timestamp`,
`event`, `value`; every row is an implicit positive) over an item universe (the
catalog's `item_id`s; items nobody interacted with can still be recommended).

Documented behaviour on awkward input:

* **Cold users** (not in the training interactions, including unknown ids) are
  served the popularity scores of the training data. `recommend` returns which
  users were cold (`Recommendations.cold_users`) and logs a warning with the count.
* **Unknown items** passed to `score` raise `CatalogError` naming the item.
* **Ties**: equal scores within a list are ordered by item index; which of several
  items tied at the k-th place makes the list is left to `torch.topk`.
* **k** must be 1..n_items (`ConfigError` otherwise). With `exclude_seen`, a user
  who has seen almost everything may have fewer than k rankable items: the list is
  padded with item id `""`, index -1 and score `-inf`.
* An empty list of users gives empty (0, k) arrays.

**Saving.** `ranker.save(folder, catalog_fingerprint=..., split=...)` writes a
`workbench.checkpoint` folder of kind `ranker.<name>`: the model's tensors, the
ranker's own state under `ranker.*` (the seen-items matrix as CSR index tensors,
item counts, the popularity served to cold users, and what a subclass's `_scores`
needs), `ids.parquet` (item and user ids in index order; strings cannot go into
safetensors; its sha256 is recorded) and, in `model.json`, the ranker's config,
its history and its `TrainingFingerprint`. `workbench.rankers.load_ranker(folder)`
rebuilds it from the folder alone; its `score` and `recommend` equal the saved one's.
"""

from __future__ import annotations

import dataclasses
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp
import torch

from workbench.catalog.splits import Split
from workbench.checkpoint import DOC_FILE, WEIGHTS_FILE, json_safe, load_into, save_checkpoint
from workbench.device import resolve_device
from workbench.errors import CatalogError, CheckpointError, ConfigError
from workbench.files import sha256_file, staging_dir, write_parquet_atomic
from workbench.rankers.fingerprint import (
    RERUN,
    TrainingFingerprint,
    interactions_digest,
    items_digest,
    split_spec,
)
from workbench.train import TrainConfig

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("user_id", "item_id", "timestamp")
KIND_PREFIX = "ranker."  # checkpoint kind: ranker.<name>
STATE_PREFIX = "ranker."  # tensor names of the ranker's own state; the rest are the model's
IDS_FILE = "ids.parquet"


class Recommendations(tuple):
    """`(item_ids, scores)` that also says which users were cold.

    Unpacks as a pair (`ids, scores = ranker.recommend(...)`); the attributes
    `item_ids` (n, k) str, `scores` (n, k) float32, `indices` (n, k) int64 into
    `ranker.item_ids` (-1 pads) and `cold_users` (n,) bool are always there.
    """

    item_ids: np.ndarray
    scores: np.ndarray
    indices: np.ndarray
    cold_users: np.ndarray

    def __new__(cls, item_ids: np.ndarray, scores: np.ndarray, indices: np.ndarray,
                cold_users: np.ndarray) -> Recommendations:
        self = super().__new__(cls, (item_ids, scores))
        self.item_ids, self.scores, self.indices, self.cold_users = item_ids, scores, indices, cold_users
        return self

    @property
    def n_cold(self) -> int:
        return int(self.cold_users.sum())


def as_interactions(interactions: pl.DataFrame | pl.LazyFrame, what: str = "interactions") -> pl.DataFrame:
    """Collect and check the columns a ranker needs."""
    df = interactions.collect() if isinstance(interactions, pl.LazyFrame) else interactions
    if not isinstance(df, pl.DataFrame):
        raise CatalogError(f"{what}: expected a polars DataFrame, got {type(df).__name__}")
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise CatalogError(f"{what}: missing column(s) {', '.join(missing)}; expected {', '.join(REQUIRED_COLUMNS)}")
    return df


class Ranker(ABC):
    """Base class: subclasses implement `_fit` and `_scores` (warm users, on the device)."""

    name = "ranker"

    def __init__(self, device: str = "auto") -> None:
        self.device_name = device
        self.device = resolve_device(device)
        self._item_ids: np.ndarray | None = None
        self._user_ids: np.ndarray | None = None
        self.history: list[dict[str, Any]] = []  # per-epoch records of trained rankers
        self.fingerprint: TrainingFingerprint | None = None  # what it was fitted on
        self._tower: torch.Tensor | None = None  # item factors of the two-tower form, once computed

    # ----------------------------------------------------------------- fitting
    def fit(
        self,
        interactions: pl.DataFrame | pl.LazyFrame,
        items: Sequence[str] | np.ndarray | None = None,
        item_embeddings: np.ndarray | None = None,
    ) -> Ranker:
        """Fit on `interactions` over the item universe `items` (default: items seen in them).

        `item_embeddings` (n_items, d), rows aligned with `items`, are the fused item
        embeddings; rankers that cannot use them ignore them.
        """
        df = as_interactions(interactions)
        if df.height == 0:
            raise CatalogError("interactions: empty; a ranker needs at least one training interaction")
        self._set_vocab(df, items)
        self._tower = None
        if item_embeddings is not None:
            item_embeddings = np.asarray(item_embeddings, dtype=np.float32)
            if item_embeddings.shape[0] != len(self.item_ids):
                raise ConfigError(
                    f"item_embeddings has {item_embeddings.shape[0]} rows, expected one per item "
                    f"({len(self.item_ids)}), in the order of `items`"
                )
        self._fit(item_embeddings)
        return self

    def _set_vocab(self, df: pl.DataFrame, items: Sequence[str] | np.ndarray | None) -> None:
        if items is None:
            item_ids = np.sort(df["item_id"].unique().to_numpy().astype(str))
        else:
            item_ids = np.asarray([str(i) for i in items], dtype=str)
            if len(np.unique(item_ids)) != len(item_ids):
                raise CatalogError("items: duplicate item_id in the item universe; expected unique ids")
        if len(item_ids) == 0:
            raise CatalogError("items: empty item universe")
        user_ids = np.sort(df["user_id"].unique().to_numpy().astype(str))
        # Map ids with joins (vectorised), keeping the input row order.
        imap = pl.DataFrame({"item_id": item_ids, "_i": np.arange(len(item_ids), dtype=np.int64)})
        umap = pl.DataFrame({"user_id": user_ids, "_u": np.arange(len(user_ids), dtype=np.int64)})
        mapped = (
            df.select(pl.col("user_id").cast(pl.Utf8), pl.col("item_id").cast(pl.Utf8),
                      pl.col("timestamp").dt.epoch("us").alias("_t"))
            .with_row_index("_row")
            .join(imap, on="item_id", how="left")
            .join(umap, on="user_id", how="left")
            .sort("_row")
        )
        unknown = mapped.filter(pl.col("_i").is_null())
        if unknown.height:
            raise CatalogError(
                f"interactions row {unknown['_row'][0]}: item_id {unknown['item_id'][0]!r} is not in the "
                f"item universe ({unknown.height} rows name unknown items); expected catalog item ids"
            )
        self._train_users = mapped["_u"].to_numpy()
        self._train_items = mapped["_i"].to_numpy()
        self._train_times = mapped["_t"].to_numpy()
        n_u, n_i = len(user_ids), len(item_ids)
        seen = sp.csr_matrix(
            (np.ones(len(self._train_users), dtype=np.float32), (self._train_users, self._train_items)),
            shape=(n_u, n_i),
        )
        seen.sum_duplicates()
        seen.data[:] = 1.0
        self._set_state(item_ids, user_ids, seen, np.bincount(self._train_items, minlength=n_i).astype(np.float64))
        self.n_train = len(self._train_users)
        # Catalog and split are unknown here: `save` adds them from its caller.
        self.fingerprint = TrainingFingerprint(None, None, interactions_digest(df), df.height,
                                               items_digest(item_ids), n_i)
        self._set_popularity(self._training_popularity())

    def _set_state(self, item_ids: np.ndarray, user_ids: np.ndarray, seen: sp.csr_matrix,
                   item_counts: np.ndarray) -> None:
        """Vocabularies, seen items and counts: what fitting computes and loading restores."""
        self._item_ids = item_ids
        self._items_order = np.argsort(item_ids, kind="stable")  # vectorised id -> index lookups
        self._items_sorted = item_ids[self._items_order]
        self._user_ids = user_ids
        self._seen = seen
        self._item_counts = item_counts

    def _set_popularity(self, scores: np.ndarray) -> None:
        self._popularity = np.asarray(scores, dtype=np.float32)
        self._fallback = torch.as_tensor(self._popularity, device=self.device)

    def _training_popularity(self) -> np.ndarray:
        """The popularity of the training data: interaction counts per item."""
        return self._item_counts.astype(np.float32)

    @property
    def reads_content(self) -> bool:
        """Whether the fitted ranker scores items from their content (so it can rank unseen items)."""
        return False

    def popularity_scores(self) -> np.ndarray:
        """Scores served to cold users (training popularity)."""
        return self._popularity.copy()

    @abstractmethod
    def _fit(self, item_embeddings: np.ndarray | None) -> None:
        """Train the model on `self._train_*` (indices into `user_ids` / `item_ids`)."""

    @abstractmethod
    def _scores(self, users: torch.Tensor) -> torch.Tensor:
        """(b, n_items) float scores for warm user indices `users` (a tensor on the device)."""

    def _item_factors(self) -> torch.Tensor | None:
        """(n_items, d) item factors V with `_scores(users) == _user_factors(users, V) @ V.T`, or
        None when the scores are not a dot product (popularity, EASE, item-kNN)."""
        return None

    def _user_factors(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """(b, d) user factors for warm users, given `_item_factors()`."""
        raise NotImplementedError(f"{type(self).__name__} has no two-tower form")

    # ----------------------------------------------------------------- lookup
    def _not_fitted(self) -> ConfigError:
        return ConfigError(f"{type(self).__name__} is not fitted: call fit(interactions, items) first")

    def _check_fitted(self) -> None:
        if self._item_ids is None:
            raise self._not_fitted()

    @property
    def item_ids(self) -> np.ndarray:
        """The item universe, in index order; `ConfigError` before `fit`."""
        if self._item_ids is None:
            raise self._not_fitted()
        return self._item_ids

    @property
    def user_ids(self) -> np.ndarray:
        """The training users, sorted (their indices are the model's); `ConfigError` before `fit`."""
        if self._user_ids is None:
            raise self._not_fitted()
        return self._user_ids

    def user_index(self, user_ids: Sequence[str] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Indices of `user_ids` in the training vocabulary and a cold mask (index 0 where cold)."""
        self._check_fitted()
        idx, found = _lookup(self.user_ids, user_ids)  # user_ids (the vocabulary) is sorted
        idx[~found] = 0
        return idx, ~found

    def item_index(self, item_ids: Sequence[str] | np.ndarray) -> np.ndarray:
        """Indices into `item_ids`; an unknown item raises `CatalogError` naming it."""
        self._check_fitted()
        arr = np.asarray(item_ids)
        sorted_idx, found = _lookup(self._items_sorted, arr.reshape(-1))
        if not found.all():
            item = arr.reshape(-1)[np.flatnonzero(~found)[0]]
            raise CatalogError(
                f"item_id {str(item)!r} is not in the ranker's item universe ({len(self.item_ids)} items); "
                "expected an item of the catalog it was fitted on"
            )
        return self._items_order[sorted_idx].reshape(arr.shape)

    def _batch_scores(self, users: np.ndarray, cold: np.ndarray) -> torch.Tensor:
        """(b, n_items) float32 scores: model scores for warm users, popularity for cold ones."""
        b = len(users)
        if cold.all():
            return self._fallback.expand(b, -1).clone()
        u = torch.from_numpy(users)
        if self.device.type == "cuda":
            u = u.pin_memory()
        u = u.to(self.device, non_blocking=True)
        with torch.no_grad():
            scores = self._scores(u).float()
        if cold.any():
            scores[torch.from_numpy(cold).to(self.device)] = self._fallback
        return scores

    # ----------------------------------------------------------------- public API
    def score(
        self, user_ids: Sequence[str] | np.ndarray, item_ids: Sequence[str] | np.ndarray,
        batch_size: int = 2048,
    ) -> np.ndarray:
        """Scores of items for users (cold users get popularity scores).

        `item_ids` 1-d (m,) gives an (n_users, m) matrix; 2-d (n_users, m) scores each
        user's own candidate list (re-ranking), also (n_users, m). Unknown items raise.
        """
        users, cold = self.user_index(user_ids)
        items = self.item_index(item_ids)
        per_row = items.ndim == 2
        if per_row and items.shape[0] != len(users):
            raise ConfigError(
                f"score: item_ids has {items.shape[0]} rows for {len(users)} users; "
                "expected one candidate row per user (or a 1-d list of items)"
            )
        m = items.shape[-1]
        out = np.empty((len(users), m), dtype=np.float32)
        cols = torch.from_numpy(items).to(self.device)
        for start in range(0, len(users), batch_size):
            stop = min(start + batch_size, len(users))
            if per_row:
                picked = self._batch_candidate_scores(users[start:stop], cold[start:stop], cols[start:stop])
            else:
                picked = self._batch_scores(users[start:stop], cold[start:stop])[:, cols]
            out[start:stop] = picked.cpu().numpy()
        return out

    def _candidate_scores(self, users: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """(b, m) scores of each warm user's own candidates `cols` (b, m). By default the full
        scores, gathered; a ranker that can score a few items without scoring all overrides it
        (re-ranking a request's candidates then costs O(candidates), not O(items))."""
        return self._scores(users).gather(1, cols)

    def _batch_candidate_scores(self, users: np.ndarray, cold: np.ndarray, cols: torch.Tensor) -> torch.Tensor:
        """(b, m) float32 candidate scores: the model's for warm users, popularity for cold ones."""
        out = self._fallback[cols].clone()
        warm = np.flatnonzero(~cold)
        if len(warm):
            rows = torch.from_numpy(warm).to(self.device)
            u = torch.from_numpy(users[warm]).to(self.device)
            with torch.no_grad():
                out[rows] = self._candidate_scores(u, cols[rows]).float()
        return out

    def two_tower_items(self) -> np.ndarray | None:
        """(n_items, d + 1) float32 item vectors whose dot products with `two_tower_users` are
        `score`, rows in `item_ids` order; None for a ranker whose scores are not a dot product.

        What a two-tower retrieval stage needs: the items go into an inner-product index
        once (`workbench.index.inner_product_items`), a user's vector is computed per
        request. The last coordinate is the training popularity: cold users, whose
        vector is 1 there and 0 elsewhere, retrieve by it, as `score` serves them.
        Computed once per fitted model and kept.
        """
        tower = self._tower_items()
        if tower is None:
            return None
        pop = torch.as_tensor(self._popularity, device=tower.device)[:, None]
        return torch.cat([tower.float(), pop], 1).cpu().numpy()

    def _tower_items(self) -> torch.Tensor | None:
        """`_item_factors()`, detached, computed once per fitted model; None without a two-tower form."""
        self._check_fitted()
        if self._tower is None:
            with torch.no_grad():
                items = self._item_factors()
            if items is None:
                return None
            self._tower = items.detach()
        return self._tower

    def two_tower_users(self, user_ids: Sequence[str] | np.ndarray, batch_size: int = 2048) -> np.ndarray:
        """(n, d + 1) float32 user vectors for `two_tower_items` (see there); a ranker without a
        two-tower form raises `ConfigError`."""
        tower = self._tower_items()
        if tower is None:
            raise ConfigError(f"{self.name} ranker: its scores are not a dot product of user and item "
                              "vectors; there is no two-tower form to retrieve with")
        users, cold = self.user_index(user_ids)
        d = tower.shape[1]
        out = np.zeros((len(users), d + 1), dtype=np.float32)
        warm = np.flatnonzero(~cold)
        with torch.no_grad():
            for start in range(0, len(warm), batch_size):
                rows = warm[start:start + batch_size]
                u = torch.from_numpy(users[rows]).to(self.device)
                out[rows, :d] = self._user_factors(u, tower).float().cpu().numpy()
        out[cold, d] = 1.0
        return out

    def recommend(
        self,
        user_ids: Sequence[str] | np.ndarray,
        k: int,
        exclude_seen: bool = True,
        batch_size: int | None = None,
    ) -> Recommendations:
        """Top-k items for each user over the whole item universe, best first.

        Scores every item with one matrix product per batch of users and takes the
        top k on the device. `exclude_seen` drops each user's training items.
        `batch_size=None` bounds each (users x items) score block to 2**25 floats.
        """
        self._check_fitted()
        n_items = len(self.item_ids)
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ConfigError(f"k={k!r}: expected a positive integer")
        if k > n_items:
            raise ConfigError(f"k={k} exceeds the item universe of {n_items} items; expected k <= {n_items}")
        users, cold = self.user_index(user_ids)
        n = len(users)
        if batch_size is None:
            batch_size = max(1, min(4096, 2**25 // n_items))
        indices = np.full((n, k), -1, dtype=np.int64)
        scores = np.full((n, k), -np.inf, dtype=np.float32)
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            s = self._batch_scores(users[start:stop], cold[start:stop])
            if exclude_seen:
                warm_rows = np.flatnonzero(~cold[start:stop])
                sub = self._seen[users[start:stop][warm_rows]]
                rows = np.repeat(warm_rows, np.diff(sub.indptr))
                if len(rows):
                    r = torch.from_numpy(rows).to(self.device, non_blocking=True)
                    c = torch.from_numpy(sub.indices.astype(np.int64)).to(self.device, non_blocking=True)
                    s[r, c] = -torch.inf
            top_s, top_i = torch.topk(s, k, dim=1)
            top_i[torch.isneginf(top_s)] = -1
            best_s, best_i = top_s.cpu().numpy(), top_i.cpu().numpy()
            # equal scores inside the list: lower item index first (topk's order is unspecified)
            order = np.lexsort((np.where(best_i < 0, n_items, best_i), -best_s), axis=-1)
            indices[start:stop] = np.take_along_axis(best_i, order, 1)
            scores[start:stop] = np.take_along_axis(best_s, order, 1)
        item_ids = np.where(indices >= 0, self.item_ids[np.maximum(indices, 0)], "")
        if cold.any():
            logger.warning("%s: %d of %d users are cold (no training history): served popularity",
                           self.name, int(cold.sum()), n)
        return Recommendations(item_ids, scores, indices, cold)

    def summary(self) -> dict[str, Any]:
        """Sizes of the fitted vocabularies (for logs and reports)."""
        self._check_fitted()
        return {"ranker": self.name, "n_users": len(self.user_ids), "n_items": len(self.item_ids),
                "n_train": int(self.n_train)}

    # ----------------------------------------------------------------- saving
    def save(self, folder: str | Path, *, catalog_fingerprint: str | None = None,
             split: Split | None = None) -> Path:
        """Write the fitted ranker to `folder` (see the module docstring); returns `folder`.

        The folder is built in a staging folder and published whole, so `folder`
        holds the previous ranker or the new one, never a mix. `catalog_fingerprint`
        and `split` (the split whose train rows the ranker was fitted on) complete
        its `fingerprint`, which `load_ranker(folder, expect=...)` checks.
        """
        self._check_fitted()
        fingerprint = self.fingerprint
        if fingerprint is None:  # fit and loading set it with the vocabularies
            raise self._not_fitted()
        if catalog_fingerprint is not None:
            fingerprint = dataclasses.replace(fingerprint, catalog=catalog_fingerprint)
        if split is not None:
            if interactions_digest(split.train) != fingerprint.interactions:
                raise ConfigError(
                    f"{self.name}: not fitted on the train rows of this {split.report.kind} split; "
                    "pass the split whose train rows it was fitted on")
            fingerprint = dataclasses.replace(fingerprint, split=split_spec(split))
        folder = Path(folder)
        with staging_dir(folder) as st:
            ids = pl.DataFrame({
                "role": np.repeat(["item", "user"], [len(self.item_ids), len(self.user_ids)]),
                "id": np.concatenate([self.item_ids, self.user_ids]),
            })
            write_parquet_atomic(st.path / IDS_FILE, ids)
            extra = {"ids": {"file": IDS_FILE, "sha256": sha256_file(st.path / IDS_FILE)},
                     "fingerprint": fingerprint.to_dict(), "n_train": int(self.n_train),
                     "history": json_safe(self.history)}
            tensors = {
                f"{STATE_PREFIX}seen_indptr": torch.from_numpy(self._seen.indptr.astype(np.int64)),
                f"{STATE_PREFIX}seen_indices": torch.from_numpy(self._seen.indices.astype(np.int64)),
                f"{STATE_PREFIX}item_counts": torch.from_numpy(self._item_counts),
                f"{STATE_PREFIX}popularity": torch.from_numpy(self._popularity),
                **self._saved_tensors(),
            }
            save_checkpoint(st.path, tensors, kind=KIND_PREFIX + self.name,
                            model_config=self._saved_config(), extra=extra)
            st.publish()
        self.fingerprint = fingerprint
        return folder

    @abstractmethod
    def _saved_config(self) -> dict[str, Any]:
        """The JSON config `_from_config` rebuilds this ranker from."""

    @abstractmethod
    def _saved_tensors(self) -> dict[str, torch.Tensor]:
        """The model's tensors and whatever else `_scores` needs (names under `ranker.`)."""

    @classmethod
    @abstractmethod
    def _from_config(cls, config: dict[str, Any], device: str, source: Path) -> Ranker:
        """An unfitted ranker built from `_saved_config()`'s output."""

    @abstractmethod
    def _restore_model(self, doc: dict[str, Any], tensors: dict[str, torch.Tensor], folder: Path) -> None:
        """Put back what `_saved_tensors` saved."""

    @classmethod
    def from_checkpoint(cls, folder: Path, doc: dict[str, Any], tensors: dict[str, torch.Tensor],
                        device: str = "auto") -> Ranker:
        """The ranker `save` wrote to `folder`, from its model.json `doc` and its `tensors`."""
        ranker = cls._from_config(doc["model_config"], device, folder / DOC_FILE)
        item_ids, user_ids = _read_ids(folder, doc)
        try:
            indptr = tensors[f"{STATE_PREFIX}seen_indptr"].numpy()
            indices = tensors[f"{STATE_PREFIX}seen_indices"].numpy()
            seen = sp.csr_matrix((np.ones(len(indices), dtype=np.float32), indices, indptr),
                                 shape=(len(user_ids), len(item_ids)))
            counts = tensors[f"{STATE_PREFIX}item_counts"].numpy()
            popularity = tensors[f"{STATE_PREFIX}popularity"].numpy()
            if len(counts) != len(item_ids) or len(popularity) != len(item_ids):
                raise ValueError(f"{len(counts)} item counts")
        except (KeyError, ValueError) as exc:
            raise CheckpointError(
                f"{folder / WEIGHTS_FILE}: the ranker's state does not fit {IDS_FILE} ({len(item_ids)} "
                f"items, {len(user_ids)} users): {exc}; {RERUN}") from exc
        ranker._set_state(item_ids, user_ids, seen, counts)
        ranker._set_popularity(popularity)
        extra = doc["extra"]
        ranker.n_train = int(extra.get("n_train", 0))
        ranker.history = list(extra.get("history", []))
        ranker.fingerprint = TrainingFingerprint.from_dict(extra.get("fingerprint") or {}, folder / DOC_FILE)
        ranker._restore_model(doc, tensors, folder)
        return ranker


def _lookup(sorted_ids: np.ndarray, query: Sequence[str] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of `query` in the sorted array `sorted_ids` and whether each was found."""
    q = np.asarray(query).astype(str).reshape(-1)
    if len(sorted_ids) == 0 or len(q) == 0:
        return np.zeros(len(q), dtype=np.int64), np.zeros(len(q), dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_ids, q), len(sorted_ids) - 1).astype(np.int64)
    return pos, sorted_ids[pos] == q


def load_item_embeddings(path: str | Path, item_ids: Sequence[str] | np.ndarray,
                         column: str = "fused") -> np.ndarray:
    """Rows of `column` (list[f32]) in `path` (`<work>/embeddings/items.parquet`) aligned to `item_ids`.

    Items missing from the file (or null there) get a zero row, with a warning
    giving the count, so a ranker can still use the others.
    """
    path = Path(path)
    if not path.is_file():
        raise CatalogError(f"{path}: no such embeddings file; expected <work>/embeddings/items.parquet")
    if not column:
        raise ConfigError(f"{path}: empty column name; expected an embedding column such as 'fused'")
    df = pl.read_parquet(path, columns=["item_id", column])
    if column not in df.columns:
        raise CatalogError(f"{path}: no column {column!r}; expected item_id and {column}")
    df = df.filter(pl.col(column).is_not_null())
    if df.height == 0:
        raise CatalogError(f"{path}: column {column!r} is empty")
    dim = len(df[column][0])
    lookup = pl.DataFrame({"item_id": [str(i) for i in item_ids]}).with_row_index("_pos")
    joined = lookup.join(df.with_columns(pl.col("item_id").cast(pl.Utf8)), on="item_id", how="inner")
    out = np.zeros((len(item_ids), dim), dtype=np.float32)
    if joined.height:
        out[joined["_pos"].to_numpy()] = np.asarray(joined[column].to_list(), dtype=np.float32)
    missing = len(item_ids) - joined.height
    if missing:
        logger.warning("%s: %d of %d items have no %r embedding: zero rows used", path, missing,
                       len(item_ids), column)
    return out


def _read_ids(folder: Path, doc: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(item_ids, user_ids) from the folder's ids.parquet, after checking its recorded sha256."""
    path = folder / IDS_FILE
    recorded = doc["extra"].get("ids", {}).get("sha256")
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (the item and user ids of the ranker); {RERUN}")
    if sha256_file(path) != recorded:
        raise CheckpointError(
            f"{path}: sha256 differs from the one recorded in {folder / DOC_FILE} (the folder was "
            f"modified or mixed with another ranker's files); {RERUN}")
    ids = pl.read_parquet(path)
    role = ids["role"].to_numpy()
    values = ids["id"].to_numpy().astype(str)
    return values[role == "item"], values[role == "user"]


def identity_collate(batch: Any) -> Any:
    """`collate_fn` for datasets whose `__getitems__` already returns a batched dict."""
    return batch


class TrainedRanker(Ranker):
    """A ranker whose model is trained by `workbench.train.fit` (BPR, sequential).

    `config_class` is the subclass's dataclass config (validated here; its `train`
    field is the `TrainConfig`). `eval_fn(ranker) -> dict` (optional) runs after
    every epoch; its numbers land in `history` (learning curves). A subclass builds
    its model with `build_model(model_config)`, from a JSON dict that `_fit` makes
    and the saved ranker keeps, so loading needs nothing but the folder.
    """

    config_class: type

    def __init__(self, config: Any | None = None,
                 eval_fn: Callable[[Ranker], Mapping[str, float]] | None = None) -> None:
        self.config = config or self.config_class()
        super().__init__(self.config.train.device)
        self.eval_fn = eval_fn
        self.model: torch.nn.Module | None = None
        self.model_config: dict[str, Any] = {}
        self.checkpoint: Path | None = None

    @staticmethod
    @abstractmethod
    def build_model(model_config: dict[str, Any]) -> torch.nn.Module:
        """The (untrained) model described by `model_config`."""

    def _train(self, model: torch.nn.Module, task: Any, data: Any, model_config: dict[str, Any]) -> None:
        """Fit `model` and keep it, its config, its per-epoch history and its checkpoint folder."""
        from workbench.train import fit

        self.model = model  # eval_fn scores through self.model while it trains
        self.model_config = model_config
        eval_fn = self.eval_fn
        epoch_eval = None if eval_fn is None else lambda _model: eval_fn(self)
        result = fit(model, task, data, self.config.train, model_config=model_config,
                     collate_fn=identity_collate, eval_fn=epoch_eval)
        self.model = result.model.eval()
        self.history = result.history
        self.checkpoint = result.checkpoint

    def _saved_config(self) -> dict[str, Any]:
        return {"ranker": dataclasses.asdict(self.config), "model": self.model_config}

    def _saved_tensors(self) -> dict[str, torch.Tensor]:
        if self.model is None:
            raise self._not_fitted()
        return dict(self.model.state_dict())

    @classmethod
    def _from_config(cls, config: dict[str, Any], device: str, source: Path) -> Ranker:
        try:
            data = dict(config["ranker"])
            train = TrainConfig(**{**data["train"], "betas": tuple(data["train"]["betas"]), "device": device})
            return cls(cls.config_class(**{**data, "train": train}))
        except (KeyError, TypeError, ConfigError) as exc:
            raise CheckpointError(f"{source}: invalid {cls.config_class.__name__} ({exc}); {RERUN}") from exc

    def _restore_model(self, doc: dict[str, Any], tensors: dict[str, torch.Tensor], folder: Path) -> None:
        self.model_config = dict(doc["model_config"].get("model", {}))
        try:
            model = self.build_model(self.model_config)
        except (KeyError, TypeError) as exc:
            raise CheckpointError(f"{folder / DOC_FILE}: invalid model config ({exc}); {RERUN}") from exc
        weights = {k: v for k, v in tensors.items() if not k.startswith(STATE_PREFIX)}
        load_into(model, weights, folder / WEIGHTS_FILE, aliases=doc["aliases"])
        self.model = model.to(self.device).eval()
