"""The catalog contract: schemas, validation, atomic reading and writing."""

from workbench.catalog.io import (
    Catalog,
    CatalogWriter,
    read_catalog,
    read_truth,
    resolve_media,
    sha256_file,
    validate_catalog,
    write_catalog,
    write_json_atomic,
)
from workbench.catalog.schema import EVENTS, SCHEMAS, TABLES, Problem, validate_table

__all__ = [
    "EVENTS",
    "SCHEMAS",
    "TABLES",
    "Catalog",
    "CatalogWriter",
    "Problem",
    "read_catalog",
    "read_truth",
    "resolve_media",
    "sha256_file",
    "validate_catalog",
    "validate_table",
    "write_catalog",
    "write_json_atomic",
]
