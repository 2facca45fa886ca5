"""`load_index`: a saved index folder read back after checking every file against
`index.json` (`VectorIndex.save` writes it)."""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from workbench.errors import IndexFileError
from workbench.files import sha256_file
from workbench.index.base import VectorIndex
from workbench.index.config import IndexConfig
from workbench.index.exact_backend import ExactIndex
from workbench.index.folder_format import (
    _META_SCHEMA,
    ITEMS_FILE,
    META_FILE,
    SCANN_DIR,
    VECTORS_FILE,
    _check_consistency,
    _is_relative_inside,
    _validate,
)
from workbench.index.native_stderr import _native_stderr_to_log
from workbench.index.scann_backend import ScannIndex
from workbench.index.scann_simd import _scann
from workbench.index.vectors import _as_matrix, embedding_fingerprint


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
