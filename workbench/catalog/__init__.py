"""The catalog contract: schemas, validation, atomic reading and writing."""

from workbench.catalog.io import (
    Catalog,
    CatalogWriter,
    media_digest,
    read_catalog,
    read_truth,
    resolve_media,
    sha256_file,  # re-exported from workbench.files (notebooks import it from here)
    validate_catalog,
    write_catalog,
    write_json_atomic,  # re-exported from workbench.files
)
from workbench.catalog.schema import (
    EVENTS,
    SCHEMAS,
    TABLES,
    Problem,
    ValidationLimits,
    validate_table,
)

__all__ = [
    "EVENTS",
    "SCHEMAS",
    "TABLES",
    "Catalog",
    "CatalogWriter",
    "Problem",
    "ValidationLimits",
    "media_digest",
    "read_catalog",
    "read_truth",
    "resolve_media",
    "sha256_file",
    "validate_catalog",
    "validate_table",
    "write_catalog",
    "write_json_atomic",
]
