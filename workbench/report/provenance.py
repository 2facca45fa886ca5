"""Where a run's data came from: the catalog's fingerprint, from its manifest."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from workbench.errors import EvaluationError
from workbench.files import read_json_object
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
    manifest = read_json_object(path, "the catalog manifest", EvaluationError)
    # What CatalogWriter records of the data itself (the media have their own digest in run.json).
    keep: dict[str, Any] = {key: manifest[key] for key in ("name", "schema_version", "source", "licence", "counts", "sha256")
            if key in manifest}
    digest = hashlib.sha256(json.dumps(to_jsonable(keep), sort_keys=True).encode()).hexdigest()
    keep["fingerprint"] = digest
    return keep
