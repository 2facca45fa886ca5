"""Reading and writing catalog folders, atomically, with checksummed tables.

A catalog is written into a staging folder beside its destination and renamed
into place only when every table validated, so a failed or interrupted write
never leaves a half-written catalog and never touches an existing one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal

import polars as pl
import pyarrow.parquet as pq

from workbench import __version__
from workbench.catalog.schema import (
    MEDIA_COLUMNS,
    SCHEMA_VERSION,
    SCHEMAS,
    TABLES,
    Problem,
    check_references,
    conform_exprs,
    validate_table,
)
from workbench.errors import CatalogError, MediaError

MANIFEST = "manifest.json"
TRUTH_DIR = "truth"
PARQUET_COMPRESSION = "zstd"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_json_atomic(path: Path, payload: object) -> None:
    """Write JSON with sorted keys via a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def resolve_media(root: Path, rel: str, *, what: str = "media file") -> Path:
    """Resolve a catalog-relative media path, refusing anything outside `root`.

    Absolute paths, `..` components and symbolic links that lead out of the
    catalog folder are refused, as is a file that does not exist.
    """
    root = Path(root).resolve()
    if not rel or Path(rel).is_absolute() or rel.startswith(("/", "\\")):
        raise MediaError(f"{what} {rel!r}: expected a path relative to the catalog folder {root}")
    if ".." in Path(rel).parts:
        raise MediaError(f"{what} {rel!r}: '..' is not allowed; media must stay inside {root}")
    path = (root / rel).resolve()
    if not path.is_relative_to(root):
        raise MediaError(f"{what} {rel!r} resolves to {path}, outside the catalog folder {root}")
    if not path.is_file():
        raise MediaError(f"{what} {rel!r}: file {path} does not exist")
    return path


@dataclass(frozen=True)
class Catalog:
    """A catalog folder opened for reading: lazy tables plus the media root."""

    root: Path
    manifest: dict
    products: pl.LazyFrame
    interactions: pl.LazyFrame | None = None
    queries: pl.LazyFrame | None = None
    qrels: pl.LazyFrame | None = None

    @property
    def name(self) -> str:
        return str(self.manifest.get("name") or self.root.name)

    @property
    def media_root(self) -> Path:
        return self.root

    def table(self, name: str) -> pl.LazyFrame | None:
        if name not in TABLES:
            raise CatalogError(f"unknown table {name!r}: expected one of {', '.join(TABLES)}")
        return getattr(self, name)

    def media_path(self, rel: str) -> Path:
        return resolve_media(self.root, rel)

    @property
    def has_truth(self) -> bool:
        """Whether this catalog carries a synthetic ground truth (`truth/`; see `read_truth`)."""
        return (self.root / TRUTH_DIR).is_dir()

    @property
    def modalities(self) -> tuple[str, ...]:
        """Modalities present for at least one product ('text' always)."""
        counts = self.products.select(
            pl.col("image").is_not_null().sum(), pl.col("audio").is_not_null().sum()
        ).collect()
        return ("text",) + tuple(m for m in ("image", "audio") if counts.get_column(m)[0] > 0)


def _table_path(root: Path, name: str) -> Path:
    return root / f"{name}.parquet"


def read_catalog(path: str | Path, *, verify_checksums: bool = True) -> Catalog:
    """Open a catalog folder: check its manifest and schemas, return lazy tables.

    Row-level rules (duplicates, ranges, references, media) are checked by
    `validate_catalog`, which reads every row; this call reads only metadata
    and, with `verify_checksums`, the bytes of each table.
    """
    root = Path(path)
    if not root.is_dir():
        raise CatalogError(f"catalog folder {root} does not exist or is not a folder")
    manifest_path = root / MANIFEST
    manifest: dict = {}
    if manifest_path.exists():
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise CatalogError(f"{manifest_path}: not valid JSON ({e})") from e
        if not isinstance(manifest, dict):
            raise CatalogError(f"{manifest_path}: expected a JSON object")
        version = manifest.get("schema_version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise CatalogError(f"{manifest_path}: schema_version {version}, expected {SCHEMA_VERSION}")
    if not _table_path(root, "products").exists():
        raise CatalogError(f"{root}: missing required table products.parquet")
    if verify_checksums and manifest:
        verify_manifest(root, manifest)
    tables: dict[str, pl.LazyFrame | None] = {}
    for name in TABLES:
        file = _table_path(root, name)
        if not file.exists():
            if name in manifest.get("sha256", {}) or f"{name}.parquet" in manifest.get("sha256", {}):
                raise CatalogError(f"{file}: listed in {MANIFEST} but missing")
            tables[name] = None
            continue
        try:
            lf = pl.scan_parquet(file)
            schema = lf.collect_schema()
        except Exception as e:  # polars raises several types for unreadable files
            raise CatalogError(f"{file}: not a readable parquet file ({e})") from e
        tables[name] = lf.select(conform_exprs(name, schema, source=str(file)))
    return Catalog(root=root, manifest=manifest, **tables)  # type: ignore[arg-type]


def verify_manifest(root: Path, manifest: dict) -> None:
    """Refuse a catalog whose files do not match the sha256 its manifest recorded."""
    recorded = manifest.get("sha256", {})
    for rel, digest in sorted(recorded.items()):
        file = root / rel
        if not file.exists():
            raise CatalogError(f"{file}: listed in {MANIFEST} but missing")
        actual = sha256_file(file)
        if actual != digest:
            raise CatalogError(
                f"{file}: sha256 {actual[:12]}… does not match {MANIFEST} ({digest[:12]}…); "
                "the table changed after the catalog was written"
            )
    for name in TABLES:
        rel = f"{name}.parquet"
        if (root / rel).exists() and rel not in recorded:
            raise CatalogError(f"{root / rel}: present but not recorded in {MANIFEST}")


def read_truth(path: str | Path) -> dict[str, pl.DataFrame]:
    """The ground truth of a synthetic catalog (`<catalog>/truth/*.parquet`); models never read it."""
    folder = Path(path) / TRUTH_DIR
    if not folder.is_dir():
        raise CatalogError(f"{folder}: no ground truth here (only synthetic catalogs carry one)")
    return {f.stem: pl.read_parquet(f) for f in sorted(folder.glob("*.parquet"))}


class CatalogWriter:
    """Write a catalog into a staging folder; publish it atomically on success.

    >>> with CatalogWriter(out, name="demo") as w:
    ...     w.write_table("products", products)
    ...     (w.media_dir / "images").mkdir()   # media under "media/…"
    """

    def __init__(
        self,
        out: str | Path,
        *,
        name: str | None = None,
        source: str = "",
        licence: str = "",
        overwrite: bool = False,
        extra: dict | None = None,
    ) -> None:
        self.out = Path(out)
        if self.out.exists() and not overwrite:
            raise CatalogError(f"{self.out} already exists; pass overwrite=True to replace it")
        self.meta = {"name": name or self.out.name, "source": source, "licence": licence, **(extra or {})}
        self.staging = self.out.parent / f".{self.out.name}.staging-{uuid.uuid4().hex[:8]}"
        self._writers: dict[str, pq.ParquetWriter] = {}
        self._rows: dict[str, int] = {}

    @property
    def media_dir(self) -> Path:
        path = self.staging / "media"
        path.mkdir(exist_ok=True)
        return path

    @property
    def truth_dir(self) -> Path:
        path = self.staging / TRUTH_DIR
        path.mkdir(exist_ok=True)
        return path

    def __enter__(self) -> CatalogWriter:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.staging.mkdir()
        return self

    def write_table(self, table: str, df: pl.DataFrame) -> None:
        """Write a whole table (validated); a table is written once or appended in chunks."""
        if table in self._writers:
            raise CatalogError(f"table {table!r} was already written to {self.staging}")
        self.append_table(table, df)

    def append_table(self, table: str, df: pl.DataFrame) -> None:
        """Append a validated chunk; chunks of one table share the contract's schema."""
        clean = validate_table(table, df, source=f"table {table!r} (rows {self._rows.get(table, 0)}+)")
        arrow = clean.to_arrow()
        writer = self._writers.get(table)
        if writer is None:
            writer = pq.ParquetWriter(
                _table_path(self.staging, table), arrow.schema, compression=PARQUET_COMPRESSION
            )
            self._writers[table] = writer
        writer.write_table(arrow)
        self._rows[table] = self._rows.get(table, 0) + clean.height

    def write_truth(self, name: str, df: pl.DataFrame) -> None:
        df.write_parquet(self.truth_dir / f"{name}.parquet", compression=PARQUET_COMPRESSION)

    def _finish(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
        if "products" not in self._rows:
            raise CatalogError(f"{self.out}: no products table was written; it is required")
        if self._rows["products"] == 0:
            raise CatalogError(f"{self.out}: the products table is empty; expected at least one product")
        staged = read_catalog(self.staging, verify_checksums=False)
        problems = _cross_table_problems(staged)
        if problems:
            raise CatalogError(f"{self.out}: " + "; ".join(str(p) for p in problems))
        checksums = {
            str(f.relative_to(self.staging)): sha256_file(f)
            for f in sorted(self.staging.glob("*.parquet")) + sorted(self.staging.glob(f"{TRUTH_DIR}/*"))
        }
        media = {
            col: staged.products.select(pl.col(col).is_not_null().sum()).collect().item()
            for col in MEDIA_COLUMNS["products"]
        }
        manifest = {
            **self.meta,
            "schema_version": SCHEMA_VERSION,
            "created_by": f"workbench {__version__}",
            "counts": {t: self._rows[t] for t in TABLES if t in self._rows},
            "media": media,
            "sha256": checksums,
        }
        write_json_atomic(self.staging / MANIFEST, manifest)
        _publish(self.staging, self.out)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None:
                self._finish()
        finally:
            for writer in self._writers.values():
                writer.close()
            if self.staging.exists():
                shutil.rmtree(self.staging, ignore_errors=True)


def _publish(staging: Path, out: Path) -> None:
    """Swap the staged folder into place; an old catalog is removed only after the swap."""
    backup = None
    if out.exists():
        backup = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(out, backup)
    try:
        os.replace(staging, out)
    except BaseException:
        if backup is not None:
            os.replace(backup, out)
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


def _cross_table_problems(cat: Catalog) -> list[Problem]:
    problems = []
    dup = (
        cat.products.group_by("item_id").len().filter(pl.col("len") > 1).sort("item_id").collect()
    )
    if dup.height:
        problems.append(Problem("products", f"duplicate item_id across chunks, e.g. {dup.get_column('item_id').head(3).to_list()}", "item_id"))
    return problems + check_references(cat.products, cat.interactions, cat.queries, cat.qrels)


def write_catalog(
    out: str | Path,
    *,
    products: pl.DataFrame,
    interactions: pl.DataFrame | None = None,
    queries: pl.DataFrame | None = None,
    qrels: pl.DataFrame | None = None,
    media_from: str | Path | None = None,
    name: str | None = None,
    source: str = "",
    licence: str = "",
    overwrite: bool = False,
) -> Path:
    """Write a whole catalog at once. `media_from` is copied to `<out>/media`."""
    with CatalogWriter(out, name=name, source=source, licence=licence, overwrite=overwrite) as w:
        for table, df in (("products", products), ("interactions", interactions), ("queries", queries), ("qrels", qrels)):
            if df is not None:
                w.write_table(table, df)
        if media_from is not None:
            shutil.copytree(media_from, w.staging / "media", dirs_exist_ok=True)
    return Path(out)


def _media_rows(cat: Catalog) -> Iterator[tuple[str, str, str, str]]:
    """(table, key, column, relative path) for every media reference."""
    for table, key in (("products", "item_id"), ("queries", "query_id")):
        lf = cat.table(table)
        if lf is None:
            continue
        for col in MEDIA_COLUMNS[table]:
            df = lf.select(key, col).filter(pl.col(col).is_not_null()).collect()
            for k, rel in df.iter_rows():
                yield table, k, col, rel


def validate_catalog(
    cat: Catalog | str | Path,
    *,
    check_media: bool = True,
    on_error: Literal["raise", "collect"] = "raise",
    progress: bool = True,
) -> list[Problem]:
    """Check every row of every table, cross-table references and (optionally) decode all media.

    With `on_error="raise"` the first table with problems raises `CatalogError`;
    with `"collect"` every problem found is returned (one per bad media file).
    """
    if not isinstance(cat, Catalog):
        cat = read_catalog(cat)
    problems: list[Problem] = []

    def fail(problem: Problem) -> None:
        if on_error == "raise":
            raise CatalogError(str(problem)) if not problem.file else MediaError(str(problem))
        problems.append(problem)

    for table in TABLES:
        lf = cat.table(table)
        if lf is None:
            continue
        source = str(cat.root / f"{table}.parquet")
        try:
            df = lf.collect()
        except Exception as e:
            fail(Problem(source, f"could not be read as the contract expects ({e})"))
            continue
        if table == "products" and df.height == 0:
            fail(Problem(source, "no products; expected at least one"))
        try:
            validate_table(table, df, source=source)
        except CatalogError as e:
            fail(Problem(source, str(e).removeprefix(source + ", ").removeprefix(source + ": ")))
    for problem in check_references(cat.products, cat.interactions, cat.queries, cat.qrels):
        fail(problem)
    if check_media:
        from tqdm.auto import tqdm

        from workbench.media import check_media_file

        rows = list(_media_rows(cat))
        for table, key, col, rel in tqdm(rows, desc="decoding media", disable=not progress, leave=False):
            what = f"{table} {key!r} {col}"
            try:
                check_media_file(resolve_media(cat.root, rel, what=what), col)
            except MediaError as e:
                message = str(e) if str(e).startswith(what) else f"{what}: {e}"
                fail(Problem(table, message, col, file=rel))
    return problems


__all__ = [
    "Catalog",
    "CatalogWriter",
    "SCHEMAS",
    "read_catalog",
    "read_truth",
    "resolve_media",
    "validate_catalog",
    "write_catalog",
]
