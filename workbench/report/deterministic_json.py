"""Deterministic JSON: the same numbers give the same bytes (sorted keys, rounded floats, NaN as null)."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np

from workbench.errors import EvaluationError
from workbench.files import write_text_atomic

__all__ = ["to_jsonable", "write_json"]


def _round(x: float, digits: int) -> float | None:
    if math.isnan(x) or math.isinf(x):
        return None
    r = round(x, digits)
    return 0.0 if r == 0 else r  # no "-0.0": it differs in bytes between runs


def to_jsonable(obj: Any, digits: int = 6) -> Any:
    """Plain JSON values: numpy scalars/arrays, dataclasses, paths, dates; floats rounded."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj), digits)
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v, digits) for k, v in obj.items()}
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return _round(float(obj), digits)
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist(), digits)
    if isinstance(obj, list | tuple | set | frozenset):
        items = sorted(obj, key=str) if isinstance(obj, set | frozenset) else obj
        return [to_jsonable(v, digits) for v in items]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, datetime | date):
        return obj.isoformat()
    if obj is None or isinstance(obj, str):
        return obj
    raise EvaluationError(
        f"cannot write {type(obj).__name__} to JSON: expected numbers, text, lists, dicts"
    )


def write_json(path: str | Path, obj: Any, digits: int = 6) -> Path:
    """Deterministic JSON: sorted keys, rounded floats, 2-space indent, final newline."""
    text = json.dumps(to_jsonable(obj, digits), sort_keys=True, indent=2, allow_nan=False)
    return write_text_atomic(path, text + "\n")
