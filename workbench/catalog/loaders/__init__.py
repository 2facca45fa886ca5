"""Loaders that convert public catalog formats into the workbench catalog contract.

Each loader reads only local files (nothing is downloaded) and returns an
`ImportReport` saying what was dropped or repaired and why.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from workbench.errors import ConfigError

# format name -> "module:function"; each function is (src, out, *, overwrite=False) -> ImportReport
FORMATS: dict[str, str] = {
    "movielens": "workbench.catalog.loaders.movielens:import_movielens",
    "fashion-products": "workbench.catalog.loaders.fashion:import_fashion_products",
    "hm": "workbench.catalog.loaders.hm:import_hm",
    "amazon-reviews-2023": "workbench.catalog.loaders.amazon:import_amazon_reviews",
    "esci": "workbench.catalog.loaders.esci:import_esci",
    # your own CSV/TSV/parquet/JSON lines; `workbench catalog import table` adds its mapping flags
    "table": "workbench.catalog.loaders.table:import_table",
}


@dataclass
class ImportReport:
    """What an import read, wrote, dropped and repaired (counts by reason)."""

    format: str
    source: str
    out: str
    counts: dict[str, int] = field(default_factory=dict)  # rows written per table
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> rows dropped
    repaired: dict[str, int] = field(default_factory=dict)  # reason -> rows repaired
    notes: list[str] = field(default_factory=list)

    def drop(self, reason: str, n: int = 1) -> None:
        if n:
            self.dropped[reason] = self.dropped.get(reason, 0) + int(n)

    def repair(self, reason: str, n: int = 1) -> None:
        if n:
            self.repaired[reason] = self.repaired.get(reason, 0) + int(n)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)


def import_catalog(
    fmt: str, src: str | Path, out: str | Path, *, overwrite: bool = False, derived_queries: int | None = None
) -> ImportReport:
    """Convert `src` in format `fmt` into a catalog folder at `out`.

    `derived_queries` sets how many queries the derived-query rule builds (formats
    without real queries that derive them: fashion-products); None keeps the default.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"unknown catalog format {fmt!r}: expected one of {', '.join(sorted(FORMATS))}")
    module_name, func_name = FORMATS[fmt].split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    if derived_queries is None:
        return func(Path(src), Path(out), overwrite=overwrite)
    if fmt != "fashion-products":
        raise ConfigError(f"derived_queries: format {fmt!r} does not derive queries (only fashion-products does)")
    from dataclasses import replace

    from workbench.catalog.loaders.fashion import FashionImportConfig

    base = FashionImportConfig()
    config = replace(base, queries=replace(base.queries, n_queries=derived_queries))
    return func(Path(src), Path(out), overwrite=overwrite, config=config)
