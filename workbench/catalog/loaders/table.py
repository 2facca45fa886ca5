"""Your own catalog from a table: CSV, TSV, parquet or JSON lines, or polars/pandas frames.

`import_table(src, out, ...)` (the `workbench catalog import table` command) and
`catalog_from_frames(out, products=..., ...)` turn one products table (plus,
optionally, interactions, queries and qrels tables) into a catalog folder. Each
contract column is taken from the column the mapping names or, when it names
none, from the first column whose name is a common one for it (`GUESSES`; names
compare case-insensitively with spaces and dashes read as underscores). The
columns no role took become the product's `attributes`. `TablePlan.lines()`
says which column feeds which field, and whether it was given or guessed,
before any row is read.

Files are read in chunks (pyarrow's streaming CSV and parquet readers; JSON
lines a block of lines at a time) and appended to the catalog chunk by chunk,
so memory stays bounded by the chunk, the set of ids seen and the media being
copied. The catalog is written through `CatalogWriter`: an import that fails
leaves neither a folder nor a staging folder behind.

What happens to bad input (every count lands in the `ImportReport`, with the
first rows and values named in its notes; rows are counted from 0, the first
row below the header, lines of a CSV or JSON lines file from 1):

* a mapping naming a column the file lacks, a required column (item id, title;
  user, item and time of interactions; query id and text) that cannot be found,
  an empty file, a file without rows, a file that is not UTF-8 or not the format
  its extension says: refused (`CatalogError` naming the file and the columns it
  has).
* rows without an item id: dropped. Duplicate item ids: the first row is kept
  and later ones are dropped and counted (`duplicates="error"`, the CLI's
  `--on-duplicate error`, refuses the import instead, naming the first ones).
* a price or value that is not a number ("n/a", "12,50"), negative or not
  finite: set to null and counted. A missing title becomes the last category
  level (or the item id), a missing description "", a missing category "unknown".
* image and audio paths are relative to the media root (SRC's folder, or
  `media_root`); a path that leaves the root (`..`, absolute elsewhere, a link
  out), a URL (nothing is downloaded) or a file that does not exist sets that
  product's media to null and is counted: nothing outside the root is ever read
  or copied. Photos go through `import_image` (plain RGB JPEGs copied, anything
  else re-encoded as RGB JPEG, undecodable or tiny ones left out); audio is fully
  decoded (`check_media_file`) and then copied byte for byte.
* interactions with a missing or unreadable time (ISO 8601, or epoch seconds or
  milliseconds), a time outside 1971..2100, an unknown event or an item that is
  not a product; queries without text or with a repeated id; qrels naming an
  unknown query or item, a relevance that is not an integer 0..3, or a repeated
  pair: dropped and counted. A table of which no row survives is refused.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import polars as pl

from workbench.catalog.io import CatalogWriter
from workbench.catalog.loaders import ImportReport
from workbench.catalog.loaders._images import ImagePolicy, import_image
from workbench.catalog.loaders.queries import DerivedQueryConfig, derive_queries
from workbench.catalog.schema import EVENTS, SCHEMAS, TIMESTAMP, ValidationLimits, has_control_chars
from workbench.errors import CatalogError, ConfigError, MediaError
from workbench.progress import progress_bar

FILE_FORMATS = ("csv", "tsv", "parquet", "jsonl")
DUPLICATE_POLICIES = ("first", "error")  # a repeated item/query id: keep the first row, or refuse
_EXTENSIONS = {
    ".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".parquet": "parquet", ".pq": "parquet",
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
}
TABLE_NAMES = ("products", "interactions", "queries", "qrels")
_DERIVED_FROM = ("item_id", "title", "category", "attributes")  # product columns derived queries read
_ROW_NAMES = {"products": "product", "interactions": "interaction", "queries": "query",
              "qrels": "relevance judgement"}

# role -> column names tried in order (after normalising: lower case, ' ' and '-' as '_').
GUESSES: dict[str, tuple[str, ...]] = {
    "item_id": ("item_id", "product_id", "sku", "id", "article_id", "asin", "itemid", "productid"),
    "title": ("title", "name", "product_name", "product_title", "productdisplayname", "prod_name"),
    "description": ("description", "desc", "product_description", "long_description", "details", "detail_desc"),
    "category": ("category", "categories", "category_path", "product_category", "department", "product_type"),
    "brand": ("brand", "brand_name", "manufacturer", "vendor"),
    "price": ("price", "unit_price", "sale_price", "list_price", "price_usd"),
    "image": ("image", "image_path", "img", "image_file", "photo", "picture"),
    "audio": ("audio", "audio_path", "audio_file", "sound"),
    "user_id": ("user_id", "user", "customer_id", "userid", "visitor_id"),
    "timestamp": ("timestamp", "time", "datetime", "date", "event_time", "ts", "t_dat", "created_at"),
    "event": ("event", "event_type", "action", "interaction", "type"),
    "value": ("value", "rating", "score"),
    "query_id": ("query_id", "qid", "id"),
    "text": ("text", "query", "query_text", "search_term", "q"),
    "relevance": ("relevance", "rel", "grade", "label", "score", "judgment"),
}
_QREL_ITEMS = ("item_id", "product_id", "sku", "doc_id", "docid", "id", "article_id", "asin")
_QREL_QUERIES = ("query_id", "qid")
_QUERY_USERS = ("user_id", "user")

# Event names as exports spell them -> the contract's events.
EVENT_SYNONYMS = {
    **{e: e for e in EVENTS},
    "pageview": "view", "page_view": "view", "view_item": "view", "detail": "view",
    "add_to_cart": "cart", "addtocart": "cart", "cart_add": "cart", "basket": "cart",
    "buy": "purchase", "order": "purchase", "transaction": "purchase", "checkout": "purchase",
    "rate": "rating", "review": "rating",
}
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://|^data:")
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_AUDIO_SUFFIX = {"WAV": ".wav", "FLAC": ".flac", "OGG": ".ogg", "MP3": ".mp3"}
_EXAMPLES = 5  # rows named per reason in the report's notes
_JSONL_HEADER_LINES = 1000  # the columns of a JSON lines file: the keys of its first lines


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class TableMapping:
    """Which source column feeds which catalog field; None: guess it (see `GUESSES`).

    `category` is one column (a path "a/b/c", "a > b > c", or a list of levels)
    or several columns of levels, outermost first. `attributes` lists the
    columns written into the `attributes` JSON; None takes every column no
    other role took, `()` none. `user`, `item`, `query_id` apply to every table
    that has them (interactions and queries; interactions and qrels; queries and
    qrels).
    """

    id: str | None = None
    title: str | None = None
    description: str | None = None
    category: str | tuple[str, ...] | None = None
    brand: str | None = None
    price: str | None = None
    image: str | None = None
    audio: str | None = None
    attributes: tuple[str, ...] | None = None
    user: str | None = None
    item: str | None = None
    time: str | None = None
    event: str | None = None
    value: str | None = None
    query_id: str | None = None
    query_text: str | None = None
    relevance: str | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                value = tuple(value)
                object.__setattr__(self, f.name, value)
            if f.name == "category" and isinstance(value, tuple) and len(value) == 1:
                object.__setattr__(self, f.name, value[0])
            if f.name == "attributes" and isinstance(value, str):  # one column, not its characters
                value = (value,)
                object.__setattr__(self, f.name, value)
            names = value if isinstance(value, tuple) else (value,)
            if f.name in ("category", "attributes"):
                if not isinstance(value, str | tuple | type(None)):
                    raise ConfigError(f"TableMapping.{f.name}={value!r}: expected a column name or a sequence of them")
                if f.name == "category" and value == ():
                    raise ConfigError("TableMapping.category=(): expected a column name or several, or None to guess")
            elif not isinstance(value, str | type(None)):
                raise ConfigError(f"TableMapping.{f.name}={value!r}: expected a column name or None")
            for name in names:
                if name is not None and (not isinstance(name, str) or not name.strip()):
                    raise ConfigError(f"TableMapping.{f.name}: {name!r} is not a column name; expected non-empty text")

    @staticmethod
    def from_columns_text(text: str | None) -> tuple[str, ...] | None:
        """'a,b,c' -> ('a', 'b', 'c'); '' -> () (no columns); None -> None (guess)."""
        if text is None:
            return None
        return tuple(c.strip() for c in text.split(",") if c.strip())


@dataclass(frozen=True)
class TableImportConfig:
    """How a table import behaves where the mapping does not decide."""

    duplicates: Literal["first", "error"] = "first"  # repeated item/query ids: keep the first row, or refuse
    images: ImagePolicy = field(default_factory=ImagePolicy)
    chunk_rows: int = 50_000  # rows per chunk for parquet, JSON lines and frames (CSV: by bytes)
    csv_block_bytes: int = 4 << 20  # bytes per CSV chunk; 1/16 of it when media are copied (the bar moves)
    name: str | None = None  # catalog name (default: the output folder's name)
    licence: str = ""
    progress: bool = True
    # Queries and graded qrels derived from the products' category and attributes (seeded,
    # `workbench.catalog.loaders.queries`), for a catalog that has no search log: they let
    # the series evaluate search, and the catalog says they are derived, not real queries.
    derived_queries: DerivedQueryConfig | None = None

    def __post_init__(self) -> None:
        if self.duplicates not in DUPLICATE_POLICIES:
            raise ConfigError(f"duplicates={self.duplicates!r}: expected 'first' (keep the first row) or 'error'")
        for name in ("chunk_rows", "csv_block_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}={value!r}: expected a positive integer")
        if self.csv_block_bytes < 1024:
            raise ConfigError(f"csv_block_bytes={self.csv_block_bytes}: expected at least 1024 (a CSV line must fit)")


# --------------------------------------------------------------------------- sources


def _file_format(path: Path, given: str | None) -> str:
    if given is not None:
        if given not in FILE_FORMATS:
            raise ConfigError(f"format {given!r}: expected one of {', '.join(FILE_FORMATS)}")
        return given
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    fmt = _EXTENSIONS.get(suffixes[-1] if suffixes else "")
    if fmt is None:
        raise CatalogError(f"{path}: cannot tell the format from the extension {path.suffix!r}; expected .csv, "
                           f".tsv, .parquet or .jsonl (or name it with --format {'|'.join(FILE_FORMATS)})")
    return fmt


class _Source:
    """One input table: its columns, then its rows as polars chunks (`batches`)."""

    name: str  # shown in messages: the file's path, or "products frame"
    columns: list[str]
    unit: str = "rows"
    total: int | None = None

    def batches(self, bar: Any) -> Iterator[pl.DataFrame]:
        raise NotImplementedError

    def _check_columns(self) -> None:
        seen: set[str] = set()
        for name in self.columns:
            if name in seen:
                raise CatalogError(f"{self.name}: column {name!r} appears twice in the header; expected unique "
                                   "column names")
            seen.add(name)
        if not self.columns:
            raise CatalogError(f"{self.name}: no columns; expected a header line naming the columns")


def _open_binary(path: Path) -> tuple[io.BufferedIOBase, io.BufferedIOBase]:
    """(the file, the stream to read): a .gz file is decompressed on the fly; progress reads the file."""
    raw = open(path, "rb")  # noqa: SIM115 (closed by the caller)
    return raw, (gzip.GzipFile(fileobj=raw) if path.suffix.lower() == ".gz" else raw)


def _empty_file(path: Path, what: str) -> CatalogError:
    return CatalogError(f"{path}: empty file; expected a header line naming the columns, then one row per {what}")


class _CsvSource(_Source):
    def __init__(self, path: Path, delimiter: str, what: str, block_bytes: int, tally: _Tally) -> None:
        import pyarrow as pa
        import pyarrow.csv as pacsv

        self.path, self.name, self.what, self.unit = path, str(path), what, "B"
        self.delimiter, self.block_bytes, self.tally = delimiter, block_bytes, tally
        self.total = path.stat().st_size
        if self.total == 0:
            raise _empty_file(path, what)
        raw, stream = _open_binary(path)
        with raw:
            try:
                reader = pacsv.open_csv(stream, read_options=pacsv.ReadOptions(block_size=block_bytes),
                                        parse_options=self._parse_options(count=False))
            except (pa.ArrowInvalid, OSError, EOFError) as e:
                raise self._unreadable(e) from e
            self.columns = list(reader.schema.names)
        self._check_columns()

    def _parse_options(self, *, count: bool = True) -> Any:
        import pyarrow.csv as pacsv

        def bad_line(row: Any) -> str:
            if not count:  # reading the header: the rows are counted when they are read
                return "skip"
            self.tally.drop(self.name, None, f"line with {row.actual_columns} fields instead of "
                            f"{row.expected_columns}: dropped", [row.number or 0], [row.text[:40]], unit="line")
            return "skip"

        return pacsv.ParseOptions(delimiter=self.delimiter, newlines_in_values=True, invalid_row_handler=bad_line)

    def _unreadable(self, e: Exception) -> CatalogError:
        text = " ".join(str(e).split())
        if "Empty CSV" in text:
            return _empty_file(self.path, self.what)
        if "UTF8" in text or "utf-8" in text.lower():
            return CatalogError(f"{self.path}: not UTF-8 text ({text}); expected UTF-8 (re-encode it, e.g. "
                                "`iconv -f latin1 -t utf-8`)")
        kind = "TSV" if self.delimiter == "\t" else "CSV"
        return CatalogError(f"{self.path}: not readable as {kind} ({text}); expected a header line and "
                            f"{'tab' if self.delimiter == chr(9) else 'comma'}-separated rows")

    def batches(self, bar: Any) -> Iterator[pl.DataFrame]:
        import pyarrow as pa
        import pyarrow.csv as pacsv

        raw, stream = _open_binary(self.path)
        with raw:
            try:
                reader = pacsv.open_csv(
                    stream,
                    # one thread: the line numbers of bad lines are known and the chunks come in order
                    read_options=pacsv.ReadOptions(block_size=self.block_bytes, use_threads=False),
                    parse_options=self._parse_options(),
                    # every column as text: ids keep their leading zeros, numbers are parsed per role
                    convert_options=pacsv.ConvertOptions(
                        column_types={c: pa.string() for c in self.columns},
                        strings_can_be_null=True, null_values=[""], quoted_strings_can_be_null=True),
                )
                done = 0
                for batch in reader:
                    bar.update(raw.tell() - done)
                    done = raw.tell()
                    yield pl.from_arrow(batch)  # type: ignore[misc]
            except (pa.ArrowInvalid, OSError, EOFError) as e:
                raise self._unreadable(e) from e


class _ParquetSource(_Source):
    def __init__(self, path: Path, what: str, chunk_rows: int) -> None:
        import pyarrow.parquet as pq

        self.path, self.name, self.chunk_rows = path, str(path), chunk_rows
        if path.stat().st_size == 0:
            raise _empty_file(path, what)
        try:
            self.file = pq.ParquetFile(path)
        except Exception as e:  # pyarrow raises several types for a file that is not parquet
            raise CatalogError(f"{path}: not a readable parquet file ({' '.join(str(e).split())})") from e
        self.columns = list(self.file.schema_arrow.names)
        self.total = self.file.metadata.num_rows
        self._check_columns()

    def batches(self, bar: Any) -> Iterator[pl.DataFrame]:
        for batch in self.file.iter_batches(batch_size=self.chunk_rows):
            bar.update(batch.num_rows)
            yield pl.from_arrow(batch)  # type: ignore[misc]


def _json_column(name: str, values: list[Any]) -> pl.Series:
    """One column of JSON values; a column mixing types (12.5 and "n/a") becomes text, parsed per role."""
    kinds = {type(v) for v in values if v is not None}
    if kinds <= {str} or kinds <= {bool} or kinds <= {int} or kinds <= {int, float}:
        dtype = {frozenset(): pl.Null, frozenset({str}): pl.Utf8, frozenset({bool}): pl.Boolean,
                 frozenset({int}): pl.Int64}.get(frozenset(kinds), pl.Float64)
        try:
            return pl.Series(name, values, dtype=dtype)
        except (OverflowError, pl.exceptions.PolarsError):  # an integer beyond 64 bits
            pass
    if kinds <= {list} or kinds <= {dict}:
        try:
            return pl.Series(name, values)
        except (TypeError, ValueError, pl.exceptions.PolarsError):
            pass
    return pl.Series(name, [None if v is None else v if isinstance(v, str) else json.dumps(v, sort_keys=True)
                            for v in values], dtype=pl.Utf8)


class _JsonlSource(_Source):
    def __init__(self, path: Path, what: str, chunk_rows: int, tally: _Tally) -> None:
        self.path, self.name, self.chunk_rows, self.tally, self.unit = path, str(path), chunk_rows, tally, "B"
        self.total = path.stat().st_size
        if self.total == 0:
            raise _empty_file(path, what)
        keys: dict[str, None] = {}
        raw, stream = _open_binary(path)
        with raw:
            seen = 0
            for lineno, line in enumerate(stream, start=1):
                if not line.strip():
                    continue
                if seen == 0 and line.lstrip().startswith(b"["):
                    raise CatalogError(f"{path}: a JSON array; expected JSON lines, one object per line "
                                       "(convert it with `jq -c '.[]'`)")
                obj = self._parse(line, lineno, count=False)
                if isinstance(obj, dict):
                    keys.update(dict.fromkeys(obj))
                seen += 1
                if seen >= _JSONL_HEADER_LINES:
                    break
        if seen == 0:
            raise _empty_file(path, what)
        self.columns = list(keys)
        self._check_columns()

    def _parse(self, line: bytes, lineno: int, *, count: bool = True) -> dict | None:
        try:
            obj = json.loads(line)
        except UnicodeDecodeError as e:
            raise CatalogError(f"{self.path}, line {lineno}: not UTF-8 text ({e.reason}); expected UTF-8 JSON") from e
        except ValueError:
            obj = None
        if not isinstance(obj, dict):
            if count:
                self.tally.drop(self.name, None, "line that is not a JSON object: dropped", [lineno],
                                [line[:40].decode("utf-8", "replace").strip()], unit="line")
            return None
        return obj

    def batches(self, bar: Any) -> Iterator[pl.DataFrame]:
        raw, stream = _open_binary(self.path)
        with raw:
            rows: list[dict] = []
            done = 0
            for lineno, line in enumerate(stream, start=1):
                if not line.strip():
                    continue
                obj = self._parse(line, lineno)
                if obj is not None:
                    rows.append(obj)
                if len(rows) >= self.chunk_rows:
                    yield self._frame(rows)
                    rows = []
                    bar.update(raw.tell() - done)
                    done = raw.tell()
            if rows:
                yield self._frame(rows)
            bar.update(raw.tell() - done)

    def _frame(self, rows: list[dict]) -> pl.DataFrame:
        return pl.DataFrame([_json_column(c, [r.get(c) for r in rows]) for c in self.columns])


class _FrameSource(_Source):
    def __init__(self, name: str, frame: Any, chunk_rows: int) -> None:
        self.name, self.chunk_rows = name, chunk_rows
        self.frame = _to_polars(frame, name)
        self.columns = list(self.frame.columns)
        self.total = self.frame.height
        self._check_columns()

    def batches(self, bar: Any) -> Iterator[pl.DataFrame]:
        for start in range(0, self.frame.height, self.chunk_rows):
            chunk = self.frame.slice(start, self.chunk_rows)
            bar.update(chunk.height)
            yield chunk


def _to_polars(frame: Any, name: str) -> pl.DataFrame:
    if isinstance(frame, pl.DataFrame):
        return frame
    if isinstance(frame, pl.LazyFrame):
        return frame.collect()
    module = type(frame).__module__
    if module.startswith("pandas"):
        # the index is dropped: a table's rows are its records (reset_index() first to keep it)
        try:
            return pl.from_pandas(frame, include_index=False)
        except Exception:  # pyarrow refuses an object column mixing types (12.5 and "n/a")
            return pl.from_pandas(_mixed_as_text(frame), include_index=False)
    if module.startswith("pyarrow"):
        return pl.from_arrow(frame)  # type: ignore[return-value]
    raise ConfigError(f"{name}: a {type(frame).__name__}; expected a polars or pandas DataFrame "
                      "(or a polars LazyFrame, a pyarrow Table)")


def _mixed_as_text(frame: Any) -> Any:
    """A pandas frame whose object columns mixing scalar types hold text instead (parsed per role, like a CSV)."""
    import pandas as pd

    frame = frame.copy()
    for name in frame.columns:
        if frame[name].dtype != object:
            continue
        values = [None if not isinstance(v, list | dict | tuple) and pd.isna(v) else v for v in frame[name]]
        kinds = {type(v) for v in values if v is not None}
        if len(kinds) > 1 and not kinds & {list, dict, tuple}:
            frame[name] = pd.Series([v if v is None or isinstance(v, str) else str(v) for v in values],
                                    index=frame.index, dtype=object)
    return frame


def _file_source(path: Path, what: str, fmt: str | None, cfg: TableImportConfig, tally: _Tally) -> _Source:
    path = Path(path)
    if not path.is_file():
        kind = "is a folder" if path.is_dir() else "does not exist"
        raise CatalogError(f"{path}: {kind}; expected a CSV, TSV, parquet or JSON lines file (one row per {what})")
    fmt = _file_format(path, fmt)
    if fmt in ("csv", "tsv"):
        return _CsvSource(path, "," if fmt == "csv" else "\t", what, cfg.csv_block_bytes, tally)
    if fmt == "parquet":
        return _ParquetSource(path, what, cfg.chunk_rows)
    return _JsonlSource(path, what, cfg.chunk_rows, tally)


# --------------------------------------------------------------------------- the mapping


def _norm(name: str) -> str:
    return re.sub(r"[\s-]+", "_", name.strip().lower())


@dataclass(frozen=True)
class Binding:
    """Where one catalog field comes from: columns (empty: none) and how they were chosen."""

    columns: tuple[str, ...]
    how: Literal["given", "guessed", "none"]
    note: str = ""  # what an unmapped field becomes

    @property
    def column(self) -> str | None:
        return self.columns[0] if self.columns else None

    @property
    def column_name(self) -> str:
        """`column` where the field has one: a required field, or after checking `columns`."""
        if not self.columns:
            raise CatalogError(f"no column is bound to this field ({self.note or 'unmapped'})")
        return self.columns[0]

    def describe(self) -> str:
        if not self.columns:
            return f"(no column: {self.note})" if self.note else "(no column)"
        shown = ", ".join(self.columns)
        return f"{shown} ({self.how})"


# table -> (field, TableMapping attribute, CLI flag, required, what a missing optional field becomes)
_ROLES: dict[str, tuple[tuple[str, str, str, bool, str], ...]] = {
    "products": (
        ("item_id", "id", "--id", True, ""),
        ("title", "title", "--title", True, ""),
        ("description", "description", "--description", False, "empty text"),
        ("category", "category", "--category", False, "'unknown'"),
        ("brand", "brand", "--brand", False, "null"),
        ("price", "price", "--price", False, "null"),
        ("image", "image", "--image", False, "null"),
        ("audio", "audio", "--audio", False, "null"),
    ),
    "interactions": (
        ("user_id", "user", "--user-col", True, ""),
        ("item_id", "item", "--item-col", True, ""),
        ("timestamp", "time", "--time-col", True, ""),
        ("event", "event", "--event-col", False, ""),
        ("value", "value", "--value-col", False, "null"),
    ),
    "queries": (
        ("query_id", "query_id", "--query-id-col", True, ""),
        ("text", "query_text", "--query-text-col", True, ""),
        ("user_id", "user", "--user-col", False, "null"),
        ("image", "", "", False, "null"),
        ("audio", "", "", False, "null"),
    ),
    "qrels": (
        ("query_id", "query_id", "--query-id-col", True, ""),
        ("item_id", "item", "--item-col", True, ""),
        ("relevance", "relevance", "--relevance-col", False, "1 (every pair listed is relevant)"),
    ),
}


@dataclass(frozen=True)
class TablePlan:
    """One table's mapping, resolved against its columns before any row is read."""

    table: str
    source: str
    columns: tuple[str, ...]
    bindings: dict[str, Binding]
    attributes: Binding | None = None  # products only

    def lines(self) -> list[str]:
        out = [f"{self.table} from {self.source} (columns: {', '.join(self.columns)})"]
        width = max(len(f) for f in [*self.bindings, "attributes"])
        for name, binding in self.bindings.items():
            out.append(f"  {name:<{width}} <- {binding.describe()}")
        if self.attributes is not None:
            out.append(f"  {'attributes':<{width}} <- {self.attributes.describe()}")
        return out

    def as_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {k: list(b.columns) for k, b in self.bindings.items() if b.columns}
        if self.attributes is not None and self.attributes.columns:
            doc["attributes"] = list(self.attributes.columns)
        return doc


def _guess_list(table: str, name: str, products_id: str | None) -> tuple[str, ...]:
    base: tuple[str, ...]
    if table == "qrels" and name == "item_id":
        base = _QREL_ITEMS
    elif table == "qrels" and name == "query_id":
        base = _QREL_QUERIES
    elif table == "queries" and name == "user_id":
        base = _QUERY_USERS
    elif table == "queries" and name in ("image", "audio"):
        base = GUESSES[name][:2]
    else:
        base = GUESSES[name]
    if name == "item_id" and table != "products" and products_id:
        base = (products_id, *base)  # an interactions file usually names items as the products file does
    return base


def plan_table(table: str, source: str, columns: Sequence[str], mapping: TableMapping,
               products_id: str | None = None) -> TablePlan:
    """Resolve `mapping` against a table's `columns`: given columns first, then guesses; CatalogError if one is missing."""
    columns = tuple(columns)
    listing = ", ".join(columns)
    taken: set[str] = set()
    given: dict[str, tuple[str, ...]] = {}
    for name, attr, flag, _required, _note in _ROLES[table]:
        value = getattr(mapping, attr) if attr else None
        if value is None:
            continue
        names = value if isinstance(value, tuple) else (value,)
        missing = [c for c in names if c not in columns]
        if missing and table == "queries" and name == "user_id":
            continue  # --user-col names the interactions' column; a queries table need not have it
        if missing:
            raise CatalogError(f"{source}: no column {missing[0]!r} (named for {name} by {flag}); "
                               f"the file's columns are: {listing}")
        given[name] = names
        taken.update(names)
    by_norm: dict[str, str] = {}
    for c in columns:
        by_norm.setdefault(_norm(c), c)
    bindings: dict[str, Binding] = {}
    for name, _attr, flag, required, note in _ROLES[table]:
        if name in given:
            bindings[name] = Binding(given[name], "given")
            continue
        tried = _guess_list(table, name, products_id)
        found = next((by_norm[_norm(g)] for g in tried if _norm(g) in by_norm and by_norm[_norm(g)] not in taken), None)
        if found is not None:
            taken.add(found)
            bindings[name] = Binding((found,), "guessed")
        elif required:
            raise CatalogError(f"{source}: no column for {name} (looked for {', '.join(dict.fromkeys(tried))}); "
                               f"name it with {flag} COLUMN; the file's columns are: {listing}")
        else:
            bindings[name] = Binding((), "none", note)
    attributes = None
    if table == "products":
        if mapping.attributes is None:  # every column no other field took
            rest = tuple(c for c in columns if c not in taken)
            attributes = Binding(rest, "guessed") if rest else Binding((), "none", "null")
        else:
            missing = [c for c in mapping.attributes if c not in columns]
            if missing:
                raise CatalogError(f"{source}: no column {missing[0]!r} (named for attributes by --attributes); "
                                   f"the file's columns are: {listing}")
            attributes = Binding(mapping.attributes, "given") if mapping.attributes else Binding((), "none", "null")
    if table == "interactions" and not bindings["event"].columns:
        event = "rating" if bindings["value"].columns else "view"
        bindings["event"] = Binding((), "none", f"{event!r} for every row")
    return TablePlan(table, source, columns, bindings, attributes)


# --------------------------------------------------------------------------- counting what was odd


@dataclass
class _Tally:
    """Counts by reason (into the report) plus the first rows and values of each, for its notes."""

    report: ImportReport
    examples: dict[tuple[str, str, str], list[str]] = field(default_factory=dict)
    counts: dict[tuple[str, str, str], int] = field(default_factory=dict)
    units: dict[tuple[str, str, str], str] = field(default_factory=dict)

    def _add(self, kind: str, where: str, column: str | None, reason: str, rows: Sequence[int],
             values: Sequence[Any] | None, unit: str) -> None:
        n = len(rows)
        if not n:
            return
        (self.report.drop if kind == "dropped" else self.report.repair)(reason, n)
        place = f"{where}, column {column!r}" if column else where
        key = (place, kind, reason)
        self.units[key] = unit
        self.counts[key] = self.counts.get(key, 0) + n
        shown = self.examples.setdefault(key, [])
        for i, row in enumerate(rows[: _EXAMPLES - len(shown)]):
            value = "" if values is None else f" ({_brief(values[i])})"
            shown.append(f"{unit} {row}{value}")

    def drop(self, where: str, column: str | None, reason: str, rows: Sequence[int],
             values: Sequence[Any] | None = None, *, unit: str = "row") -> None:
        self._add("dropped", where, column, reason, rows, values, unit)

    def repair(self, where: str, column: str | None, reason: str, rows: Sequence[int],
               values: Sequence[Any] | None = None) -> None:
        self._add("repaired", where, column, reason, rows, values, "row")

    def notes(self) -> list[str]:
        out = []
        for key, n in self.counts.items():
            place, _kind, reason = key
            more = ", …" if n > len(self.examples[key]) else ""
            out.append(f"{place}: {reason}: {n:,} {self.units[key]}(s): {', '.join(self.examples[key])}{more}")
        return out


def _brief(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _rows(mask: pl.Series, rows: pl.Series) -> list[int]:
    return rows.filter(mask).to_list()


# --------------------------------------------------------------------------- column conversions


def _text(col: pl.Series, where: str) -> pl.Series:
    """A column as stripped text; whole floats (1.0, ids of a pandas frame with gaps) as integers."""
    dtype = col.dtype
    if dtype == pl.Utf8:
        return col.str.strip_chars()
    if dtype.is_float():
        whole = ((col.round(0) == col) | col.is_null()).all()
        return (col.cast(pl.Int64, strict=False) if whole else col).cast(pl.Utf8)
    if dtype == pl.Null or dtype.is_numeric() or dtype in (pl.Boolean, pl.Categorical) or isinstance(dtype, pl.Enum):
        return col.cast(pl.Utf8)
    if dtype == pl.Binary:
        try:
            return col.cast(pl.Utf8).str.strip_chars()
        except pl.exceptions.PolarsError as e:
            raise CatalogError(f"{where}: bytes that are not UTF-8 text; expected text") from e
    if dtype.is_temporal():
        return col.cast(pl.Utf8)
    raise CatalogError(f"{where}: has type {dtype}; expected text or numbers")


def _blank(col: pl.Series) -> pl.Series:
    return (col.is_null() | (col == "")).fill_null(True)


def _numbers(col: pl.Series, where: str) -> tuple[pl.Series, pl.Series]:
    """(Float64 values, mask of values present in the source that are not numbers)."""
    if col.dtype.is_numeric():
        return col.cast(pl.Float64), pl.Series([False] * col.len(), dtype=pl.Boolean)
    text = _text(col, where)
    values = text.cast(pl.Float64, strict=False)
    return values, (~_blank(text) & values.is_null()).fill_null(False)


def _category(frame: pl.DataFrame, binding: Binding, where: str, tally: _Tally, rows: pl.Series) -> pl.Series:
    """The "a/b/c" path: one column of paths ('/' or ' > ' separated) or of level lists, or level columns."""
    n = frame.height
    if not binding.columns:
        return pl.Series("category", ["unknown"] * n, dtype=pl.Utf8)
    level = pl.element().cast(pl.Utf8).str.strip_chars()
    if len(binding.columns) == 1 and isinstance(frame.schema[binding.column_name], pl.List):
        levels = frame.get_column(binding.column_name).list.eval(level)
        slash = levels.list.eval(pl.element().str.contains("/", literal=True)).list.any().fill_null(False)
        tally.repair(where, binding.column, "'/' inside a category level replaced by '-'", _rows(slash, rows))
        levels = levels.list.eval(pl.element().str.replace_all("/", "-", literal=True))
    elif len(binding.columns) == 1:
        text = _text(frame.get_column(binding.column_name), where)
        arrows = (text.str.contains(">", literal=True) & ~text.str.contains("/", literal=True)).fill_null(False)
        tally.repair(where, binding.column, "category path 'a > b' written as 'a/b'", _rows(arrows, rows))
        text = pl.select(pl.when(arrows).then(text.str.replace_all(r"\s*>\s*", "/")).otherwise(text)).to_series()
        levels = text.str.split("/").list.eval(pl.element().str.strip_chars())
    else:
        parts = [_text(frame.get_column(c), where) for c in binding.columns]
        slash = pl.Series([False] * n)
        for part, name in zip(parts, binding.columns, strict=True):
            has = part.str.contains("/", literal=True).fill_null(False)
            tally.repair(where, name, "'/' inside a category level replaced by '-'", _rows(has, rows))
            slash = slash | has
        levels = pl.DataFrame([p.str.replace_all("/", "-", literal=True).alias(f"l{i}") for i, p in enumerate(parts)]
                              ).select(pl.concat_list(pl.all())).to_series()
    path = levels.list.eval(pl.element().filter(pl.element().is_not_null() & (pl.element() != ""))).list.join("/")
    missing = _blank(path)
    tally.repair(where, ",".join(binding.columns), "category missing: set to 'unknown'", _rows(missing, rows))
    return path.fill_null("").zip_with(~missing, pl.Series(["unknown"] * n)).alias("category")


def _attributes(frame: pl.DataFrame, binding: Binding | None) -> pl.Series:
    """The attributes JSON: one key per attribute column (sorted), nulls kept so every product has the same keys."""
    if binding is None or not binding.columns:
        return pl.Series("attributes", [None] * frame.height, dtype=pl.Utf8)
    cols = sorted(binding.columns)
    exprs = []
    for c in cols:
        dtype = frame.schema[c]
        # temporal and binary values have no JSON form: written as their text
        exprs.append(pl.col(c).cast(pl.Utf8) if dtype.is_temporal() or dtype == pl.Binary else pl.col(c))
    return frame.select(pl.struct(exprs).struct.json_encode().alias("attributes")).to_series()


def _timestamps(col: pl.Series, where: str) -> pl.Series:
    """Datetime(us, UTC); null where missing or not a time. Text: ISO 8601 or epoch digits; naive times are UTC."""
    dtype = col.dtype
    if isinstance(dtype, pl.Datetime):
        out = col.dt.replace_time_zone("UTC") if dtype.time_zone is None else col.dt.convert_time_zone("UTC")
        return out.dt.cast_time_unit("us")
    if dtype == pl.Date:
        return col.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    if dtype.is_numeric():
        return _epoch(col.cast(pl.Float64))
    text = _text(col, where)
    digits = text.str.contains(r"^-?\d+(\.\d+)?$").fill_null(False)
    epoch = _epoch(text.cast(pl.Float64, strict=False))
    iso = pl.Series([_iso(v) for v in text.to_list()], dtype=TIMESTAMP)
    return epoch.zip_with(digits, iso)


def _epoch(values: pl.Series) -> pl.Series:
    """Epoch seconds, milliseconds or microseconds (told apart by magnitude) as Datetime(us, UTC)."""
    size = values.abs()
    micros = pl.select(
        pl.when(size < 1e11).then(values * 1e6).when(size < 1e14).then(values * 1e3).otherwise(values)
    ).to_series()
    finite = micros.is_finite().fill_null(False) & (micros.abs() < 9e18).fill_null(False)
    micros = micros.zip_with(finite, pl.Series([None] * values.len(), dtype=pl.Float64))
    return pl.from_epoch(micros.round(0).cast(pl.Int64), time_unit="us").dt.replace_time_zone("UTC")


def _iso(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        return None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _media_name(key: str) -> str:
    """A file name for an id: the id itself when it is a plain name, else a readable part and a hash."""
    if _SAFE_NAME.fullmatch(key) and not key.endswith("."):
        return key
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("._")[:60] or "id"
    return f"{readable}-{hashlib.sha256(key.encode('utf-8')).hexdigest()[:12]}"


# --------------------------------------------------------------------------- the import


@dataclass
class _Media:
    """Brings image and audio files from inside the media root into the catalog, once per source file."""

    root: Path | None
    media_dir: Path
    report: ImportReport
    tally: _Tally
    policy: ImagePolicy
    copied: dict[tuple[str, Path], str | None] = field(default_factory=dict)

    def resolve(self, value: str) -> tuple[Path | None, str | None]:
        """(the file, None) or (None, why it cannot be used)."""
        assert self.root is not None
        if _URL.match(value):
            return None, "is a URL (nothing is downloaded)"
        if has_control_chars(value):
            return None, "holds a control character"
        candidate = Path(value)
        candidate = candidate if candidate.is_absolute() else self.root / candidate
        try:
            path = candidate.resolve()
        except (OSError, RuntimeError):  # a symbolic-link loop
            return None, "cannot be resolved"
        if not path.is_relative_to(self.root):
            return None, "leaves the media root"
        if not path.is_file():
            return None, "does not exist"
        return path, None

    def column(self, kind: str, keys: list[str], values: list[str | None], rows: list[int], where: str,
               column: str, folder: str) -> list[str | None]:
        out: list[str | None] = []
        failed: dict[str, tuple[list[int], list[str]]] = {}
        for key, value, row in zip(keys, values, rows, strict=True):
            value = value.strip() if isinstance(value, str) else value
            if not value:
                out.append(None)
                continue
            path, why = self.resolve(value)
            if path is None:
                bad = failed.setdefault(why or "", ([], []))
                bad[0].append(row)
                bad[1].append(value)
                out.append(None)
                continue
            rel = self.copied.get((kind, path), "")
            if rel == "":
                rel = self._bring(kind, path, key, folder)
                self.copied[(kind, path)] = rel
            out.append(rel)
        for why, (bad_rows, bad_values) in failed.items():
            note = " (nothing copied)" if why == "leaves the media root" else ""
            self.tally.repair(where, column, f"{kind} path {why}: {kind} set to null{note}", bad_rows, bad_values)
        return out

    def _bring(self, kind: str, path: Path, key: str, folder: str) -> str | None:
        target = self.media_dir / folder
        target.mkdir(parents=True, exist_ok=True)
        name = _media_name(key)
        if kind == "image":
            dest = target / f"{name}.jpg"
            return f"media/{folder}/{dest.name}" if import_image(path, dest, self.report, self.policy) else None
        from workbench.media import check_media_file

        try:
            check_media_file(path, "audio")
            import soundfile as sf

            fmt = sf.info(str(path)).format
        except (MediaError, RuntimeError, OSError):
            self.report.repair("audio file not decodable: audio set to null (text kept)")
            return None
        dest = target / f"{name}{_AUDIO_SUFFIX.get(fmt, path.suffix.lower() or '.audio')}"
        shutil.copyfile(path, dest)
        return f"media/{folder}/{dest.name}"


class _Importer:
    """Reads each table chunk by chunk, cleans it and appends it to the catalog writer."""

    def __init__(self, writer: CatalogWriter, cfg: TableImportConfig, report: ImportReport, tally: _Tally,
                 media_root: Path | None) -> None:
        self.w, self.cfg, self.report, self.tally = writer, cfg, report, tally
        self.media = _Media(media_root, writer.media_dir, report, tally, cfg.images)
        self.items: dict[str, int] = {}  # item id -> its row in the products source
        self.queries: dict[str, int] = {}
        self.kept_products: list[pl.DataFrame] = []  # what derived queries are built from
        self.pairs: set[tuple[str, str]] = set()
        self.counts = dict.fromkeys(TABLE_NAMES, 0) | {"with_image": 0, "with_audio": 0}
        self._series: dict[str, pl.Series] = {}

    def _known(self, what: str) -> pl.Series:
        """The ids of the products (or queries) imported, as one Series (built once: tables come in order)."""
        if what not in self._series:
            self._series[what] = pl.Series(list(getattr(self, what)), dtype=pl.Utf8).implode()
        return self._series[what]

    def run(self, table: str, source: _Source, plan: TablePlan) -> None:
        step = getattr(self, f"_{table}")
        total = 0
        bar = progress_bar(total=source.total, desc=f"import {table}", unit=source.unit,
                           unit_scale=source.unit == "B", enabled=self.cfg.progress)
        with bar:
            for chunk in source.batches(bar):
                rows = pl.Series("row", range(total, total + chunk.height), dtype=pl.Int64)
                total += chunk.height
                clean = step(chunk, plan, source.name, rows)
                if clean.height:
                    self.w.append_table(table, clean)
                    self.counts[table] += clean.height
                    if table == "products" and self.cfg.derived_queries is not None:
                        self.kept_products.append(clean.select(_DERIVED_FROM))
        if total == 0:
            below = " below the header" if isinstance(source, _CsvSource) else ""
            raise CatalogError(f"{source.name}: no rows{below}; expected at least one {_ROW_NAMES[table]}")
        if self.counts[table] == 0:
            dropped = "; ".join(f"{reason}: {n:,}" for (place, kind, reason), n in self.tally.counts.items()
                                if kind == "dropped" and place.startswith(source.name))
            raise CatalogError(f"{source.name}: none of its {total:,} row(s) could be used ({dropped}); expected "
                               f"at least one usable {table} row")

    def _ids(self, col: pl.Series, where: str, rows: pl.Series, seen: dict[str, int], what: str,
             column: str) -> pl.Series:
        """Mask of rows to keep: an id present, and seen for the first time (or refused, see `duplicates`)."""
        ids = col.to_list()
        keep = []
        dups: list[tuple[str, int, int]] = []
        for key, row in zip(ids, rows.to_list(), strict=True):
            if key is None or key == "":
                keep.append(False)
            elif key in seen:
                keep.append(False)
                dups.append((key, seen[key], row))
            else:
                seen[key] = row
                keep.append(True)
        if dups and self.cfg.duplicates == "error":
            shown = ", ".join(f"{k!r} (rows {a} and {b})" for k, a, b in dups[:3])
            more = f" and {len(dups) - 3} more" if len(dups) > 3 else ""
            raise CatalogError(f"{where}, column {column!r}: duplicate {what} {shown}{more}; expected each "
                               f"{what} once (or keep the first row of each with --on-duplicate first)")
        missing = _blank(col)
        self.tally.drop(where, column, f"{what} missing: row dropped", _rows(missing, rows))
        self.tally.drop(where, column, f"duplicate {what}: first row kept, later ones dropped",
                        [b for _k, _a, b in dups], [k for k, _a, _b in dups])
        return pl.Series(keep, dtype=pl.Boolean)

    def _products(self, raw: pl.DataFrame, plan: TablePlan, where: str, rows: pl.Series) -> pl.DataFrame:
        b = plan.bindings
        ids = _text(raw.get_column(b["item_id"].column_name), where)
        keep = self._ids(ids, where, rows, self.items, "item_id", b["item_id"].column_name)
        raw, ids, rows = raw.filter(keep), ids.filter(keep), rows.filter(keep)
        n = raw.height
        category = _category(raw, b["category"], where, self.tally, rows)

        def text(name: str) -> pl.Series:
            col = b[name].column
            return _text(raw.get_column(col), where) if col else pl.Series([None] * n, dtype=pl.Utf8)

        title = text("title")
        no_title = _blank(title)
        last_level = category.str.split("/").list.last()
        fallback = last_level.zip_with(category != "unknown", ids)
        self.tally.repair(where, b["title"].column, "title missing: set to the last category level (or the item id)",
                          _rows(no_title, rows))
        description = text("description")
        if b["description"].columns:
            self.tally.repair(where, b["description"].column, "description missing: set to ''",
                              _rows(description.is_null(), rows))
        brand = text("brand")
        price = pl.Series([None] * n, dtype=pl.Float64)
        if b["price"].columns:
            price, not_number = _numbers(raw.get_column(b["price"].column_name), where)
            values = raw.get_column(b["price"].column_name).filter(not_number).to_list()
            self.tally.repair(where, b["price"].column, "price not a number: set to null", _rows(not_number, rows), values)
            bad = ((price < 0) | ~price.is_finite()).fill_null(False)
            self.tally.repair(where, b["price"].column, "price negative or not finite: set to null",
                              _rows(bad, rows), price.filter(bad).to_list())
            price = price.zip_with(~bad, pl.Series([None] * n, dtype=pl.Float64))
        out = pl.DataFrame({
            "item_id": ids,
            "title": title.fill_null("").zip_with(~no_title, fallback),
            "description": description.fill_null(""),
            "category": category,
            "brand": brand.zip_with(~_blank(brand), pl.Series([None] * n, dtype=pl.Utf8)),
            "price": price,
            "attributes": _attributes(raw, plan.attributes),
        })
        for kind in ("image", "audio"):
            folder = "images" if kind == "image" else "audio"
            out = out.with_columns(self._media_column(kind, raw, b[kind], ids, rows, where, folder))
            self.counts[f"with_{kind}"] += int(out.get_column(kind).is_not_null().sum())
        return out.select(list(SCHEMAS["products"]))

    def _media_column(self, kind: str, raw: pl.DataFrame, binding: Binding, ids: pl.Series, rows: pl.Series,
                      where: str, folder: str) -> pl.Series:
        if not binding.columns:
            return pl.Series(kind, [None] * raw.height, dtype=pl.Utf8)
        values = _text(raw.get_column(binding.column_name), where).to_list()
        column = self.media.column(kind, ids.to_list(), values, rows.to_list(), where, binding.column_name, folder)
        return pl.Series(kind, column, dtype=pl.Utf8)

    def _interactions(self, raw: pl.DataFrame, plan: TablePlan, where: str, rows: pl.Series) -> pl.DataFrame:
        b = plan.bindings
        users = _text(raw.get_column(b["user_id"].column_name), where)
        items = _text(raw.get_column(b["item_id"].column_name), where)
        times = _timestamps(raw.get_column(b["timestamp"].column_name), where)
        source_time = raw.get_column(b["timestamp"].column_name)
        if b["event"].columns:
            names = _text(raw.get_column(b["event"].column_name), where).str.to_lowercase().str.replace_all(r"[\s-]+", "_")
            events = names.replace_strict(EVENT_SYNONYMS, default=None, return_dtype=pl.Utf8)
            renamed = (events.is_not_null() & (events != names)).fill_null(False)
            for name in sorted(set(names.filter(renamed).to_list())):
                mask = (names == name).fill_null(False) & renamed
                self.tally.repair(where, b["event"].column, f"event {name!r} read as {EVENT_SYNONYMS[name]!r}",
                                  _rows(mask, rows))
        else:
            default = "rating" if b["value"].columns else "view"
            names = events = pl.Series([default] * raw.height, dtype=pl.Utf8)
        limits = ValidationLimits()
        checks = [
            (_blank(users), b["user_id"].column, "user_id missing", None),
            (_blank(items), b["item_id"].column, "item_id missing", None),
            (~items.is_in(self._known("items")).fill_null(False), b["item_id"].column,
             "item_id not among the products", items),
            (_blank(_text(source_time, where)), b["timestamp"].column, "timestamp missing", None),
        ]
        dropped = pl.Series([False] * raw.height)
        for mask, column, reason, shown in checks:
            mask = mask.fill_null(False) & ~dropped
            self.tally.drop(where, column, f"{reason}: row dropped", _rows(mask, rows),
                            None if shown is None else shown.filter(mask).to_list())
            dropped = dropped | mask
        unreadable = times.is_null() & ~dropped
        self.tally.drop(where, b["timestamp"].column,
                        "timestamp not ISO 8601 or epoch seconds/milliseconds: row dropped",
                        _rows(unreadable, rows), source_time.filter(unreadable).to_list())
        dropped = dropped | unreadable
        outside = ((times < limits.min_timestamp) | (times >= limits.max_timestamp)).fill_null(False) & ~dropped
        self.tally.drop(where, b["timestamp"].column,
                        f"timestamp before {limits.min_timestamp.year} or from {limits.max_timestamp.year} on: "
                        "row dropped", _rows(outside, rows), source_time.filter(outside).to_list())
        dropped = dropped | outside
        unknown = events.is_null() & ~dropped
        self.tally.drop(where, b["event"].column, f"event not one of {', '.join(EVENTS)}: row dropped",
                        _rows(unknown, rows), names.filter(unknown).to_list())
        dropped = dropped | unknown
        value = pl.Series([None] * raw.height, dtype=pl.Float64)
        if b["value"].columns:
            value, not_number = _numbers(raw.get_column(b["value"].column_name), where)
            bad = (not_number | ~value.is_finite().fill_null(True)) & ~dropped
            self.tally.repair(where, b["value"].column, "value not a finite number: set to null", _rows(bad, rows),
                              raw.get_column(b["value"].column_name).filter(bad).to_list())
            value = value.zip_with(~bad, pl.Series([None] * raw.height, dtype=pl.Float64))
        return pl.DataFrame({"user_id": users, "item_id": items, "timestamp": times, "event": events,
                             "value": value}).filter(~dropped)

    def _queries(self, raw: pl.DataFrame, plan: TablePlan, where: str, rows: pl.Series) -> pl.DataFrame:
        b = plan.bindings
        text = _text(raw.get_column(b["text"].column_name), where)
        no_text = _blank(text)
        self.tally.drop(where, b["text"].column, "query text missing: row dropped", _rows(no_text, rows))
        raw, text, rows = raw.filter(~no_text), text.filter(~no_text), rows.filter(~no_text)
        ids = _text(raw.get_column(b["query_id"].column_name), where)
        keep = self._ids(ids, where, rows, self.queries, "query_id", b["query_id"].column_name)
        raw, ids, text, rows = raw.filter(keep), ids.filter(keep), text.filter(keep), rows.filter(keep)
        user = b["user_id"].column
        users = _text(raw.get_column(user), where) if user else pl.Series([None] * raw.height, dtype=pl.Utf8)
        out = pl.DataFrame({"query_id": ids, "text": text,
                            "user_id": users.zip_with(~_blank(users), pl.Series([None] * raw.height, dtype=pl.Utf8))})
        for kind in ("image", "audio"):
            keys = [f"query-{k}" for k in ids.to_list()]
            out = out.with_columns(self._media_column(kind, raw, b[kind], pl.Series(keys, dtype=pl.Utf8), rows,
                                                      where, "queries"))
        return out.select(list(SCHEMAS["queries"]))

    def _qrels(self, raw: pl.DataFrame, plan: TablePlan, where: str, rows: pl.Series) -> pl.DataFrame:
        b = plan.bindings
        qids = _text(raw.get_column(b["query_id"].column_name), where)
        items = _text(raw.get_column(b["item_id"].column_name), where)
        if b["relevance"].columns:
            source = raw.get_column(b["relevance"].column_name)
            rel, _ = _numbers(source, where)
        else:
            source = rel = pl.Series([1.0] * raw.height, dtype=pl.Float64)
        dropped = pl.Series([False] * raw.height)
        checks = [
            (~qids.is_in(self._known("queries")).fill_null(False), b["query_id"].column,
             "query_id not among the queries", qids),
            (~items.is_in(self._known("items")).fill_null(False), b["item_id"].column,
             "item_id not among the products", items),
            (~((rel.round(0) == rel) & (rel >= 0) & (rel <= 3)).fill_null(False), b["relevance"].column,
             "relevance not an integer 0..3", source),
        ]
        for mask, column, reason, shown in checks:
            mask = mask & ~dropped
            self.tally.drop(where, column, f"{reason}: row dropped", _rows(mask, rows), shown.filter(mask).to_list())
            dropped = dropped | mask
        keep = []
        dups, dup_pairs = [], []
        for q, i, gone, row in zip(qids.to_list(), items.to_list(), dropped.to_list(), rows.to_list(), strict=True):
            if gone:
                keep.append(False)
            elif (q, i) in self.pairs:
                keep.append(False)
                dups.append(row)
                dup_pairs.append(f"{q}/{i}")
            else:
                self.pairs.add((q, i))
                keep.append(True)
        self.tally.drop(where, b["item_id"].column, "duplicate (query_id, item_id) pair: first row kept", dups, dup_pairs)
        mask = pl.Series(keep, dtype=pl.Boolean)
        return pl.DataFrame({"query_id": qids, "item_id": items,
                             "relevance": rel.fill_null(0).cast(pl.Int8, strict=False)}).filter(mask)


def _write_derived_queries(w: CatalogWriter, importer: _Importer, config: DerivedQueryConfig,
                           report: ImportReport) -> None:
    """Queries and qrels from the imported products' attributes, into the catalog being written."""
    products = pl.concat(importer.kept_products) if importer.kept_products else None
    try:
        if products is None:
            raise CatalogError("no products")
        queries, qrels, info = derive_queries(products, config)
    except (CatalogError, ConfigError) as exc:  # e.g. no product type with enough products
        report.notes.append(f"no derived queries: {exc}")
        return
    w.write_table("queries", queries)
    w.write_table("qrels", qrels)
    w.meta["derived_queries"] = info
    importer.counts["queries"] += queries.height
    importer.counts["qrels"] += qrels.height
    report.notes.append("queries are derived from attributes, not real user queries: " + info["rule"])


def _run_import(
    out: Path,
    sources: dict[str, _Source],
    mapping: TableMapping,
    media_root: Path | None,
    report: ImportReport,
    tally: _Tally,
    cfg: TableImportConfig,
    overwrite: bool,
    source_text: str,
    log: Callable[[str], None] | None,
) -> ImportReport:
    if "qrels" in sources and "queries" not in sources:
        raise ConfigError("qrels given without queries: qrels grade the items of queries, so pass the queries "
                          "table too (--queries FILE)")
    plans: dict[str, TablePlan] = {}
    products_id = None
    for table in TABLE_NAMES:  # every mapping is resolved before a row is read or a photo copied
        if table in sources:
            plans[table] = plan_table(table, sources[table].name, sources[table].columns, mapping, products_id)
            if table == "products":
                products_id = plans[table].bindings["item_id"].column
    needs_media = any(p.bindings[k].columns for p in plans.values() for k in ("image", "audio") if k in p.bindings)
    products = sources["products"]
    if isinstance(products, _CsvSource) and any(plans["products"].bindings[k].columns for k in ("image", "audio")):
        products.block_bytes = max(1024, cfg.csv_block_bytes // 16)  # smaller chunks: the bar moves while media copy
    if needs_media and media_root is not None and not media_root.is_dir():
        raise CatalogError(f"media root {media_root}: not a folder; expected the folder the image and audio paths "
                           "are relative to (--media-root)")
    for plan in plans.values():
        for line in plan.lines():
            report.notes.append(line)
            if log is not None:
                log(line)
    if cfg.derived_queries is not None and "queries" in sources:
        raise ConfigError("derived queries and a queries table both given: derive queries only for a catalog "
                          "without its own (drop --derived-queries or --queries)")
    with CatalogWriter(out, name=cfg.name, source=source_text, licence=cfg.licence, overwrite=overwrite,
                       extra={"table_import": {t: p.as_json() for t, p in plans.items()}}) as w:
        importer = _Importer(w, cfg, report, tally, media_root.resolve() if media_root is not None else None)
        for table in TABLE_NAMES:
            if table in sources:
                importer.run(table, sources[table], plans[table])
        if cfg.derived_queries is not None:
            _write_derived_queries(w, importer, cfg.derived_queries, report)
    report.notes.extend(tally.notes())
    report.counts = importer.counts
    return report


def import_table(
    src: str | Path,
    out: str | Path,
    *,
    mapping: TableMapping | None = None,
    interactions: str | Path | None = None,
    queries: str | Path | None = None,
    qrels: str | Path | None = None,
    media_root: str | Path | None = None,
    file_format: str | None = None,
    overwrite: bool = False,
    config: TableImportConfig | None = None,
    log: Callable[[str], None] | None = None,
) -> ImportReport:
    """Import a products table `src` (CSV, TSV, parquet, JSON lines; optionally .gz) into a catalog at `out`.

    `file_format` overrides the extension of `src` (the other files are read by
    their own extension). Media paths are relative to `media_root` (default:
    the folder of `src`). `log` receives the resolved mapping, one line each,
    before anything is read.
    """
    cfg = config or TableImportConfig()
    mapping = mapping or TableMapping()
    src, out = Path(src), Path(out)
    report = ImportReport(format="table", source=str(src), out=str(out))
    tally = _Tally(report)
    root = Path(media_root) if media_root is not None else src.parent
    sources: dict[str, _Source] = {"products": _file_source(src, "product", file_format, cfg, tally)}
    for table, path, what in (("interactions", interactions, "interaction"), ("queries", queries, "query"),
                              ("qrels", qrels, "relevance judgement")):
        if path is not None:
            sources[table] = _file_source(Path(path), what, None, cfg, tally)
    return _run_import(out, sources, mapping, root, report, tally, cfg, overwrite,
                       f"table import of {src.name}", log)


def catalog_from_frames(
    out: str | Path,
    *,
    products: Any,
    interactions: Any = None,
    queries: Any = None,
    qrels: Any = None,
    mapping: TableMapping | None = None,
    media_root: str | Path | None = None,
    overwrite: bool = False,
    config: TableImportConfig | None = None,
    log: Callable[[str], None] | None = None,
) -> ImportReport:
    """The same import from polars or pandas frames (or polars LazyFrames, pyarrow Tables).

    Media paths are relative to `media_root` (default: the working directory).
    """
    cfg = config or TableImportConfig()
    out = Path(out)
    report = ImportReport(format="frames", source="frames", out=str(out))
    tally = _Tally(report)
    sources: dict[str, _Source] = {}
    for table, frame in (("products", products), ("interactions", interactions), ("queries", queries),
                         ("qrels", qrels)):
        if frame is not None:
            sources[table] = _FrameSource(f"{table} frame", frame, cfg.chunk_rows)
    root = Path(media_root) if media_root is not None else Path.cwd()
    return _run_import(out, sources, mapping or TableMapping(), root, report, tally, cfg, overwrite,
                       "polars/pandas frames", log)


__all__ = [
    "GUESSES",
    "Binding",
    "TableImportConfig",
    "TableMapping",
    "TablePlan",
    "catalog_from_frames",
    "import_table",
    "plan_table",
]
