"""Reading and writing catalog folders, atomically, with checksummed tables.

A catalog is written into a staging folder beside its destination
(`workbench.files.StagingDir`) and swapped into place only when every table
validated, so a failed or interrupted write never leaves a half-written catalog
and never touches an existing one; the next write removes what a killed writer
left behind.

Reading trusts nothing: the manifest, its checksums and counts, table files and
media paths are each checked, and every failure is one line naming the file
and what was expected.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
from collections.abc import Collection, Iterator
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
    ValidationLimits,
    catalog_name_problem,
    check_references,
    conform_exprs,
    has_control_chars,
    is_safe_media_path,
    one_line,
    table_problems,
    validate_table,
)
from workbench.errors import CatalogError, MediaError
from workbench.files import (
    StagingDir,
    interrupted_publish,
    sha256_file,
    write_bytes_atomic,
    write_json_atomic,
)

MANIFEST = "manifest.json"
TRUTH_DIR = "truth"
MEDIA_DIR = "media"
# sha256sum-format listing of every media file, so validation can name what changed
# (`cd <catalog> && sha256sum -c media.sha256` checks it too); its own sha256 is
# the manifest's `media_sha256`.
MEDIA_LISTING = "media.sha256"
PARQUET_COMPRESSION: Literal["zstd"] = "zstd"
MAX_MANIFEST_BYTES = 64 << 20  # a manifest is a few kB; anything this big is not one
_HEX64 = re.compile(r"[0-9a-f]{64}")
# What polars and pyarrow raise for a table that is not what its schema says.
_READ_ERRORS = (pl.exceptions.PolarsError, OSError, ValueError)


def _brief(value: object, limit: int = 60) -> str:
    """repr of a manifest value, shortened: a hostile manifest must not produce a megabyte message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _json_kind(value: object) -> str:
    kinds = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return kinds.get(type(value), "a number")


def _file_kind(mode: int) -> str | None:
    """Why a path is not a regular file, or None when it is one."""
    if stat.S_ISREG(mode):
        return None
    return "is a folder" if stat.S_ISDIR(mode) else "is not a regular file (a device, pipe or socket)"


def resolve_media(root: Path, rel: str, *, what: str = "media file") -> Path:
    """Resolve a catalog-relative media path, refusing anything outside `root`.

    Absolute paths, `..` components, control characters, symbolic links that
    lead out of the catalog folder or loop, and anything but an existing regular
    file (a folder, device or pipe) are refused with `MediaError`.
    """
    root = Path(root).resolve()
    if not isinstance(rel, str) or not rel:
        raise MediaError(f"{what} {rel!r}: expected a path relative to the catalog folder {root}")
    if has_control_chars(rel):  # a NUL would also crash Path.resolve
        raise MediaError(f"{what} {rel!r}: holds a NUL byte or control character, expected a printable relative path")
    if Path(rel).is_absolute() or rel.startswith(("/", "\\")):
        raise MediaError(f"{what} {rel!r}: expected a path relative to the catalog folder {root}")
    if ".." in Path(rel).parts:
        raise MediaError(f"{what} {rel!r}: '..' is not allowed; media must stay inside {root}")
    try:
        path = (root / rel).resolve()
    except (OSError, RuntimeError) as e:  # RuntimeError: a symbolic-link loop (Python < 3.13)
        raise MediaError(f"{what} {rel!r}: cannot be resolved ({e}); expected a file, not a symbolic-link loop") from e
    if not path.is_relative_to(root):
        raise MediaError(f"{what} {rel!r} resolves to {path}, outside the catalog folder {root}")
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError as e:
        raise MediaError(f"{what} {rel!r}: file {path} does not exist") from e
    except OSError as e:
        raise MediaError(f"{what} {rel!r}: file {path} cannot be opened ({e.strerror or e})") from e
    if (kind := _file_kind(mode)) is not None:
        raise MediaError(f"{what} {rel!r}: {path} {kind}, expected a media file")
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


# --------------------------------------------------------------------------- reading


def read_catalog(path: str | Path, *, verify_checksums: bool = True) -> Catalog:
    """Open a catalog folder: check its manifest and schemas, return lazy tables.

    Row-level rules (duplicates, ranges, references, media) are checked by
    `validate_catalog`, which reads every row; this call reads only metadata
    and, with `verify_checksums`, the bytes of each table (and compares the
    manifest's counts with the tables').
    """
    root = Path(path)
    _require_catalog_folder(root)
    _check_table_files(root)  # before the manifest: "products.parquet is a folder" says more than its checksum
    manifest = _read_manifest(root)
    if not _table_path(root, "products").exists():
        raise CatalogError(f"{root}: missing required table products.parquet")
    if verify_checksums and manifest:
        verify_manifest(root, manifest)
    tables = {name: _scan_table(root, name, manifest) for name in TABLES}
    return Catalog(root=root, manifest=manifest, **tables)  # type: ignore[arg-type]


def _require_catalog_folder(root: Path) -> None:
    if root.is_dir():
        return
    backup = interrupted_publish(root)
    if backup is not None:
        raise CatalogError(
            f"catalog folder {root} does not exist: a write was interrupted while replacing it and the previous "
            f"catalog waits at {backup}; the next write to {root} restores it (or rename it back by hand)"
        )
    raise CatalogError(f"catalog folder {root} does not exist or is not a folder")


def _check_table_files(root: Path) -> None:
    """Each table present is a regular file inside the catalog (not a folder, device or outside link)."""
    base = root.resolve()
    for name in TABLES:
        file = _table_path(root, name)
        if not os.path.lexists(file):
            continue
        try:
            mode = os.stat(file).st_mode
            resolved = file.resolve()
        except (OSError, RuntimeError) as e:
            raise CatalogError(f"{file}: cannot be opened ({e}); expected a parquet file") from e
        if (kind := _file_kind(mode)) is not None:
            raise CatalogError(f"{file}: {kind}, expected a parquet file")
        if not resolved.is_relative_to(base):
            raise CatalogError(f"{file}: resolves to {resolved}, outside the catalog folder; expected a file inside it")


def _scan_table(root: Path, name: str, manifest: dict) -> pl.LazyFrame | None:
    file = _table_path(root, name)
    if not file.exists():
        if f"{name}.parquet" in manifest.get("sha256", {}):
            raise CatalogError(f"{file}: listed in {MANIFEST} but missing")
        return None
    try:
        lf = pl.scan_parquet(file)
        schema = lf.collect_schema()
    except Exception as e:  # polars raises several types for unreadable files
        raise CatalogError(f"{file}: not a readable parquet file ({one_line(str(e))})") from e
    return lf.select(conform_exprs(name, schema, source=str(file)))


# --------------------------------------------------------------------------- the manifest


def _read_manifest(root: Path) -> dict:
    """The parsed manifest ({} for a catalog without one), its structure checked; CatalogError otherwise."""
    path = root / MANIFEST
    if not os.path.lexists(path):
        return {}
    try:
        st = os.stat(path)
    except OSError as e:
        raise CatalogError(f"{path}: cannot be opened ({e.strerror or e}); expected the catalog's JSON manifest") from e
    if (kind := _file_kind(st.st_mode)) is not None:
        raise CatalogError(f"{path}: {kind}, expected the catalog's JSON manifest file")
    if st.st_size > MAX_MANIFEST_BYTES:
        raise CatalogError(f"{path}: {st.st_size:,} bytes, expected a JSON manifest of at most {MAX_MANIFEST_BYTES:,}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise CatalogError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); expected a JSON object") from e
    except OSError as e:
        raise CatalogError(f"{path}: cannot be read ({e.strerror or e}); expected the catalog's JSON manifest") from e
    try:
        manifest = json.loads(text)
    except (ValueError, RecursionError) as e:  # RecursionError: absurdly nested arrays
        raise CatalogError(f"{path}: not valid JSON ({one_line(str(e))}); expected a JSON object") from e
    if not isinstance(manifest, dict):
        raise CatalogError(f"{path}: holds {_json_kind(manifest)}, expected a JSON object")
    _check_manifest_fields(root, path, manifest)
    return manifest


def _check_manifest_fields(root: Path, path: Path, manifest: dict) -> None:
    """Types and safety of every field read later: no path in it may lead out of the catalog."""
    version = manifest.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise CatalogError(f"{path}: schema_version {_brief(version)}, expected {SCHEMA_VERSION}")
    if "name" in manifest and (problem := catalog_name_problem(manifest["name"])):
        raise CatalogError(f"{path}: name {_brief(manifest['name'])} {problem}")
    recorded = manifest.get("sha256", {})
    if not isinstance(recorded, dict):
        raise CatalogError(f"{path}: 'sha256' is {_json_kind(recorded)}, expected an object mapping relative "
                           "file paths to sha256 hex digests")
    for key, digest in recorded.items():
        if problem := _manifest_key_problem(root, key):
            raise CatalogError(f"{path}: sha256 key {_brief(key)} {problem}")
        if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
            raise CatalogError(f"{path}: sha256[{_brief(key)}] is {_brief(digest)}, expected 64 lowercase hex digits")
    _check_count_map(path, manifest, "counts", TABLES)
    _check_count_map(path, manifest, "media", MEDIA_COLUMNS["products"])
    digest = manifest.get("media_sha256")
    if digest is not None and not (isinstance(digest, str) and _HEX64.fullmatch(digest)):
        raise CatalogError(f"{path}: media_sha256 is {_brief(digest)}, expected 64 lowercase hex digits")


def _manifest_key_problem(root: Path, key: object) -> str | None:
    """Why a manifest path may not be read (absolute, '..', NUL, outside, not a regular file); None if fine."""
    expected = "expected a path relative to the catalog folder"
    if not isinstance(key, str) or not key:
        return f"is not a path; {expected}"
    if has_control_chars(key):
        return f"holds a NUL byte or control character; {expected}"
    if key.startswith(("/", "\\")) or Path(key).is_absolute() or (len(key) > 1 and key[1] == ":"):
        return f"is an absolute path; {expected}"
    if ".." in key.replace("\\", "/").split("/"):
        return f"contains '..'; {expected}"
    try:
        resolved = (root / key).resolve()
        inside = resolved.is_relative_to(root.resolve())
        mode = os.stat(resolved).st_mode if resolved.exists() else None
    except (OSError, RuntimeError) as e:
        return f"cannot be resolved ({e}); {expected}"
    if not inside:
        return f"resolves to {resolved}, outside the catalog folder; {expected}"
    if mode is not None and (kind := _file_kind(mode)) is not None:
        return f"{kind}; expected a table or truth file"
    return None  # a missing file is a problem of the catalog's contents (see manifest_problems)


def _check_count_map(path: Path, manifest: dict, field: str, allowed: tuple[str, ...]) -> None:
    counts = manifest.get(field)
    if counts is None:
        return
    if not isinstance(counts, dict):
        raise CatalogError(f"{path}: {field!r} is {_json_kind(counts)}, expected an object of counts")
    for key, n in counts.items():
        if key not in allowed:
            raise CatalogError(f"{path}: {field}[{_brief(key)}] is not known, expected one of {', '.join(allowed)}")
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise CatalogError(f"{path}: {field}.{key} is {_brief(n)}, expected a non-negative integer")


def verify_manifest(root: Path, manifest: dict) -> None:
    """Refuse a catalog whose files or counts do not match what its manifest recorded (one line)."""
    problems = manifest_problems(root, manifest)
    if problems:
        raise CatalogError("; ".join(str(p) for p in problems))


def manifest_problems(root: Path, manifest: dict) -> list[Problem]:
    """Files and counts that differ from the manifest (the catalog changed after it was written).

    The manifest's structure must already have been checked (`read_catalog` does).
    """
    if not manifest:
        return []
    return _checksum_problems(root, manifest) + _count_problems(root, manifest)


def _checksum_problems(root: Path, manifest: dict) -> list[Problem]:
    recorded = manifest.get("sha256", {})
    problems = []
    for rel, digest in sorted(recorded.items()):
        file = root / rel
        if not file.exists():
            problems.append(Problem(MANIFEST, f"listed in {MANIFEST} but missing", file=str(file)))
            continue
        try:
            actual = sha256_file(file)
        except OSError as e:
            problems.append(Problem(MANIFEST, f"cannot be read ({e.strerror or e}); expected a regular file",
                                    file=str(file)))
            continue
        if actual != digest:
            problems.append(Problem(
                MANIFEST,
                f"sha256 {actual[:12]}… does not match {MANIFEST} ({digest[:12]}…); "
                "the table changed after the catalog was written",
                file=str(file),
            ))
    for name in TABLES:
        rel = f"{name}.parquet"
        if (root / rel).exists() and rel not in recorded:
            problems.append(Problem(MANIFEST, f"present but not recorded in {MANIFEST}", file=str(root / rel)))
    return problems


def _parquet_rows(file: Path) -> int | None:
    """Row count from the parquet footer (no data read); None when the footer cannot be read."""
    try:
        return pq.read_metadata(file).num_rows
    except Exception:  # an unreadable table is reported when it is opened
        return None


def _count_problems(root: Path, manifest: dict) -> list[Problem]:
    """`counts` and `media` of the manifest against the tables (cheap: footers and two columns)."""
    where = str(root / MANIFEST)
    expected = "expected the counts the catalog was written with (the manifest or a table was edited)"
    problems = []
    counts = manifest.get("counts")
    if counts is not None:
        for table in TABLES:
            file = _table_path(root, table)
            actual = _parquet_rows(file) if file.exists() else None
            claimed = counts.get(table)
            if file.exists() and actual is None:
                continue
            if claimed is None and actual is not None:
                problems.append(Problem(table, f"counts has no entry for {table}.parquet ({actual:,} rows); {expected}",
                                        file=where))
            elif claimed is not None and actual is None:
                problems.append(Problem(table, f"counts.{table} is {claimed:,} but there is no {table}.parquet; {expected}",
                                        file=where))
            elif claimed != actual:
                problems.append(Problem(table, f"counts.{table} is {claimed:,} but {table}.parquet holds {actual:,} rows; "
                                        f"{expected}", file=where))
    media = manifest.get("media")
    actual_media = _media_counts(_table_path(root, "products")) if media else None
    for col, claimed in (media or {}).items():
        if actual_media is not None and actual_media[col] != claimed:
            problems.append(Problem("products", f"media.{col} is {claimed:,} but products.parquet names "
                                    f"{actual_media[col]:,} {col} files; {expected}", file=where))
    return problems


def _media_counts(products: Path) -> dict[str, int] | None:
    """Non-null media paths per products column; None when the table cannot be read (reported elsewhere)."""
    try:
        lf = pl.scan_parquet(products)
        names = lf.collect_schema().names()
        cols = MEDIA_COLUMNS["products"]
        row = lf.select([pl.col(c).is_not_null().sum().alias(c) for c in cols if c in names]).collect()
    except Exception:
        return None
    return {c: (int(row.get_column(c)[0]) if c in row.columns else 0) for c in cols}


# --------------------------------------------------------------------------- media digest


def media_listing(root: str | Path) -> dict[str, str]:
    """sha256 of every file under `<root>/media`, by catalog-relative POSIX path.

    Symbolic links are never followed (a link to /dev/zero would never end):
    a link's digest is that of its target text. A device, pipe or socket, or a
    name with control characters, raises MediaError.
    """
    root = Path(root)
    folder = root / MEDIA_DIR
    if folder.is_symlink():
        raise MediaError(f"{folder}: is a symbolic link, expected the catalog's media folder")
    listing: dict[str, str] = {}
    if not folder.is_dir():
        return listing
    for dirpath, dirnames, filenames in os.walk(folder):  # followlinks=False: linked folders are entries
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if has_control_chars(rel):
                raise MediaError(f"media file {rel!r}: its name holds a control character, expected a printable name")
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                listing[rel] = hashlib.sha256(b"symlink " + os.fsencode(os.readlink(path))).hexdigest()
            elif stat.S_ISREG(mode):
                listing[rel] = sha256_file(path)
            elif not stat.S_ISDIR(mode):
                raise MediaError(f"media file {rel!r}: is not a regular file (a device, pipe or socket), "
                                 "expected a media file")
    return listing


def _listing_bytes(listing: dict[str, str]) -> bytes:
    """The listing as `sha256sum` writes it: '<hex>  <path>' lines, sorted by path."""
    return b"".join(f"{listing[rel]}  {rel}\n".encode("utf-8", "surrogateescape") for rel in sorted(listing))


def media_digest(root: str | Path) -> str:
    """One sha256 over the sorted (relative path, sha256 of content) pairs of every file under media/.

    The identity of a catalog's media; written to the manifest as `media_sha256`
    (equal to the sha256 of the `media.sha256` listing file).
    """
    return hashlib.sha256(_listing_bytes(media_listing(root))).hexdigest()


def _recorded_listing(root: Path, digest: str) -> dict[str, str] | None:
    """The media listing written with the catalog, if it is present and intact (its sha256 is `digest`)."""
    path = root / MEDIA_LISTING
    try:
        regular = stat.S_ISREG(os.stat(path).st_mode)  # a pipe in its place must not block the read
        data = path.read_bytes() if regular else b""
    except OSError:
        regular, data = False, b""
    if not regular:
        return None if digest != hashlib.sha256(b"").hexdigest() else {}
    if hashlib.sha256(data).hexdigest() != digest:
        return None
    listing = {}
    for line in data.decode("utf-8", "surrogateescape").splitlines():
        hexdigest, _, rel = line.partition("  ")
        listing[rel] = hexdigest
    return listing


def media_digest_problems(root: Path, manifest: dict, *, known: Collection[str] = ()) -> list[Problem]:
    """Media files added, removed or changed since the catalog was written (`known`: already reported)."""
    recorded = manifest.get("media_sha256")
    if recorded is None:  # written before media digests were recorded
        return []
    try:
        current = media_listing(root)
    except MediaError as e:
        return [Problem("media", str(e), file=f"{MEDIA_DIR}/")]
    if hashlib.sha256(_listing_bytes(current)).hexdigest() == recorded:
        return []
    old = _recorded_listing(root, recorded)
    if old is None:
        return [Problem("media", f"media files changed since the catalog was written (their digest differs from "
                        f"{MANIFEST}'s media_sha256 and {MEDIA_LISTING} cannot say which); expected the media the "
                        "catalog was written with", file=f"{MEDIA_DIR}/")]
    changes = {
        "changed": sorted(r for r in current.keys() & old.keys() if current[r] != old[r]),
        "added": sorted(current.keys() - old.keys()),
        "removed": sorted(old.keys() - current.keys()),
    }
    problems = []
    for change, names in changes.items():
        names = [n for n in names if n not in known]
        if names:
            shown = ", ".join(repr(n) for n in names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            problems.append(Problem("media", f"{len(names)} file(s) {change} since the catalog was written: {shown}; "
                                    f"expected the media recorded in {MEDIA_LISTING}", file=f"{MEDIA_DIR}/"))
    return problems


def read_truth(path: str | Path) -> dict[str, pl.DataFrame]:
    """The ground truth of a synthetic catalog (`<catalog>/truth/*.parquet`); models never read it."""
    folder = Path(path) / TRUTH_DIR
    if not folder.is_dir():
        raise CatalogError(f"{folder}: no ground truth here (only synthetic catalogs carry one)")
    return {f.stem: pl.read_parquet(f) for f in sorted(folder.glob("*.parquet"))}


# --------------------------------------------------------------------------- writing


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
        if problem := catalog_name_problem(self.meta["name"]):
            raise CatalogError(f"{self.out}: catalog name {_brief(self.meta['name'])} {problem}")
        self.overwrite = overwrite
        self._dir = StagingDir(self.out)
        self._writers: dict[str, pq.ParquetWriter] = {}
        self._rows: dict[str, int] = {}

    @property
    def staging(self) -> Path:
        """The folder being written (`.<name>.staging-<id>` beside the destination)."""
        return self._dir.path

    @property
    def media_dir(self) -> Path:
        path = self.staging / MEDIA_DIR
        path.mkdir(exist_ok=True)
        return path

    @property
    def truth_dir(self) -> Path:
        path = self.staging / TRUTH_DIR
        path.mkdir(exist_ok=True)
        return path

    def __enter__(self) -> CatalogWriter:
        # Also removes staging folders of writers that died and restores a catalog
        # that an interrupted publish left aside.
        self._dir.create()
        if self.out.exists() and not self.overwrite:
            self._dir.close()
            raise CatalogError(f"{self.out} already exists (restored from an interrupted write); "
                               "pass overwrite=True to replace it")
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
            f.relative_to(self.staging).as_posix(): sha256_file(f)
            for f in sorted(self.staging.glob("*.parquet")) + sorted(self.staging.glob(f"{TRUTH_DIR}/*"))
        }
        media = {
            col: staged.products.select(pl.col(col).is_not_null().sum()).collect().item()
            for col in MEDIA_COLUMNS["products"]
        }
        try:
            listing = media_listing(self.staging)
        except MediaError as e:
            raise CatalogError(f"{self.out}: {e}") from e
        if listing:
            write_bytes_atomic(self.staging / MEDIA_LISTING, _listing_bytes(listing))
        manifest = {
            **self.meta,
            "schema_version": SCHEMA_VERSION,
            "created_by": f"workbench {__version__}",
            "counts": {t: self._rows[t] for t in TABLES if t in self._rows},
            "media": media,
            "media_sha256": hashlib.sha256(_listing_bytes(listing)).hexdigest(),
            "sha256": checksums,
        }
        write_json_atomic(self.staging / MANIFEST, manifest)
        self._dir.publish()

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
            self._dir.close()


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
            shutil.copytree(media_from, w.staging / MEDIA_DIR, dirs_exist_ok=True)
    return Path(out)


# --------------------------------------------------------------------------- validation


def validate_catalog(
    cat: Catalog | str | Path,
    *,
    check_media: bool = True,
    on_error: Literal["raise", "collect"] = "raise",
    progress: bool = True,
    limits: ValidationLimits | None = None,
    include_warnings: bool = False,
) -> list[Problem]:
    """Check the manifest, every row of every table, cross-table references and (optionally) all media.

    With `on_error="raise"` the first error raises `CatalogError` (`MediaError`
    for a media file); with `"collect"` every problem found is returned (one per
    bad media file). Warnings (e.g. empty descriptions) never raise and are
    returned only with `include_warnings`. A folder that cannot be opened at all
    (see `read_catalog`) raises `CatalogError` in both modes.
    """
    limits = limits or ValidationLimits()
    if not isinstance(cat, Catalog):
        cat = read_catalog(cat, verify_checksums=False)  # checksum mismatches become problems below
    found: list[Problem] = []
    for problem, error in _catalog_problems(cat, check_media=check_media, progress=progress, limits=limits):
        if problem.is_error and on_error == "raise":
            raise error(str(problem))
        if problem.is_error or include_warnings:
            found.append(problem)
    return found


def _catalog_problems(
    cat: Catalog, *, check_media: bool, progress: bool, limits: ValidationLimits
) -> Iterator[tuple[Problem, type[CatalogError]]]:
    """Every problem, cheapest checks first, each with the error type it raises as."""
    for problem in manifest_problems(cat.root, cat.manifest):
        yield problem, CatalogError
    unreadable = False
    for table in TABLES:
        df = _collect_table(cat, table)
        if isinstance(df, Problem):
            unreadable = True
            yield df, CatalogError
        elif df is not None:
            source = str(_table_path(cat.root, table))
            if table == "products" and df.height == 0:
                yield Problem(source, "no products; expected at least one"), CatalogError
            for problem in table_problems(table, df, source=source, limits=limits):
                yield problem, CatalogError
    if unreadable:
        return  # references and media need every table
    for problem in check_references(cat.products, cat.interactions, cat.queries, cat.qrels):
        yield problem, CatalogError
    if check_media:
        reported: set[str] = set()
        for problem in _media_problems(cat, progress, limits):
            reported.add(problem.file or "")
            yield problem, MediaError
        for problem in media_digest_problems(cat.root, cat.manifest, known=reported):
            yield problem, MediaError


def _collect_table(cat: Catalog, table: str) -> pl.DataFrame | Problem | None:
    """A table's rows, a Problem when they cannot be read as the contract expects, None when absent."""
    lf = cat.table(table)
    if lf is None:
        return None
    try:
        return lf.collect()
    except _READ_ERRORS as e:
        return Problem(str(_table_path(cat.root, table)), f"could not be read as the contract expects ({one_line(str(e))})")


def _media_rows(cat: Catalog) -> Iterator[tuple[str, str, str, str]]:
    """(table, key, column, relative path) for every media reference the tables may hold.

    Paths the row checks refused (absolute, '..', control characters) are
    already reported there and never touched here.
    """
    for table, key in (("products", "item_id"), ("queries", "query_id")):
        lf = cat.table(table)
        if lf is None:
            continue
        for col in MEDIA_COLUMNS[table]:
            df = lf.select(key, col).filter(pl.col(col).is_not_null()).collect()
            for k, rel in df.iter_rows():
                if is_safe_media_path(rel):
                    yield table, k, col, rel


def _media_problems(cat: Catalog, progress: bool, limits: ValidationLimits) -> Iterator[Problem]:
    """Resolve and fully decode every media file (one problem per bad file)."""
    from workbench.media import check_media_file
    from workbench.progress import progress_bar

    rows = list(_media_rows(cat))
    for table, key, col, rel in progress_bar(rows, desc="decoding media", enabled=progress, leave=False):
        what = f"{table} {key!r} {col}"
        try:
            path = resolve_media(cat.root, rel, what=what)
            check_media_file(path, col, max_image_pixels=limits.max_image_pixels,
                             max_audio_seconds=limits.max_audio_seconds)
        except MediaError as e:
            # "image /abs/path: reason" -> "products 'i0' image: reason" (the problem already names the file)
            reason = str(e).removeprefix(f"{col} {cat.root.resolve() / rel}: ")
            yield Problem(table, reason if reason.startswith(what) else f"{what}: {reason}", col, file=rel)


__all__ = [
    "Catalog",
    "CatalogWriter",
    "SCHEMAS",
    "manifest_problems",
    "media_digest",
    "media_listing",
    "read_catalog",
    "read_truth",
    "resolve_media",
    "sha256_file",
    "validate_catalog",
    "verify_manifest",
    "write_catalog",
    "write_json_atomic",
]
