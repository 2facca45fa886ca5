"""Where a run's data came from: the catalog's fingerprint, from its manifest."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from workbench.errors import EvaluationError
from workbench.report.deterministic_json import to_jsonable

__all__ = ["data_fingerprint"]


def data_fingerprint(catalog_dir: str | Path | None) -> dict[str, Any]:
    """The catalog's identity: name, schema version, counts and each table's sha256 (from its manifest).

    Volatile manifest fields (creation time) are left out so that the same data
    gives the same fingerprint.
    """
    if catalog_dir is None:
        return {}
    path = Path(catalog_dir) / "manifest.json"
    if not path.is_file():
        raise EvaluationError(f"{path}: catalog manifest not found; expected a catalog folder")
    manifest = json.loads(path.read_text())
    keep = {}
    for key in (
        "name",
        "schema_version",
        "source",
        "licence",
        "counts",
        "tables",
        "sha256",
        "seed",
    ):
        if key in manifest:
            keep[key] = manifest[key]
    tables = manifest.get("tables")
    if isinstance(tables, Mapping):
        keep["tables"] = {
            name: {k: v for k, v in info.items() if k in ("sha256", "rows", "bytes")}
            if isinstance(info, Mapping)
            else info
            for name, info in tables.items()
        }
    digest = hashlib.sha256(json.dumps(to_jsonable(keep), sort_keys=True).encode()).hexdigest()
    keep["fingerprint"] = digest
    return keep
