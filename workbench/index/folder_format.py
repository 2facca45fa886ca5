"""The saved index folder: its file names and the schema of its `index.json`."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.errors import IndexFileError

FORMAT_NAME = "workbench-vector-index"
FORMAT_VERSION = 1
META_FILE = "index.json"
ITEMS_FILE = "items.parquet"
SCANN_DIR = "scann"
VECTORS_FILE = "vectors.npy"
SCANN_ASSETS = f"{SCANN_DIR}/scann_assets.pbtxt"


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
