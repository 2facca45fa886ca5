"""The catalog contract: table schemas and row-level validation.

Every check names the table, the column, the first offending rows and what was
expected, and raises (or collects) `CatalogError`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import polars as pl

from workbench.errors import CatalogError

SCHEMA_VERSION = 1
TABLES = ("products", "interactions", "queries", "qrels")
MODALITIES = ("text", "image", "audio")  # what a product can carry, in canonical order
EVENTS = ("view", "click", "cart", "purchase", "rating")
TIMESTAMP = pl.Datetime("us", "UTC")

# column -> (dtype, nullable)
SCHEMAS: dict[str, dict[str, tuple[pl.DataType, bool]]] = {
    "products": {
        "item_id": (pl.Utf8(), False),
        "title": (pl.Utf8(), False),
        "description": (pl.Utf8(), False),
        "category": (pl.Utf8(), False),
        "brand": (pl.Utf8(), True),
        "price": (pl.Float64(), True),
        "attributes": (pl.Utf8(), True),
        "image": (pl.Utf8(), True),
        "audio": (pl.Utf8(), True),
    },
    "interactions": {
        "user_id": (pl.Utf8(), False),
        "item_id": (pl.Utf8(), False),
        "timestamp": (TIMESTAMP, False),
        "event": (pl.Utf8(), False),
        "value": (pl.Float64(), True),
    },
    "queries": {
        "query_id": (pl.Utf8(), False),
        "text": (pl.Utf8(), False),
        "user_id": (pl.Utf8(), True),
        "image": (pl.Utf8(), True),
        "audio": (pl.Utf8(), True),
    },
    "qrels": {
        "query_id": (pl.Utf8(), False),
        "item_id": (pl.Utf8(), False),
        "relevance": (pl.Int8(), False),
    },
}
# Optional columns a producer may leave out; they are added as nulls.
OPTIONAL_COLUMNS = {
    "products": ("brand", "price", "attributes", "image", "audio"),
    "interactions": ("value",),
    "queries": ("user_id", "image", "audio"),
    "qrels": (),
}
MEDIA_COLUMNS = {"products": ("image", "audio"), "queries": ("image", "audio")}


Severity = Literal["error", "warning"]
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def one_line(text: str) -> str:
    """`text` on one line: control characters (newlines of wrapped library errors) become spaces."""
    return " ".join(_CONTROL.sub(" ", text).split())


def has_control_chars(text: str) -> bool:
    """True when `text` holds a NUL, newline or other control character (never valid in a name or path)."""
    return _CONTROL.search(text) is not None


MAX_NAME_LENGTH = 200
_NAME_RULE = f"expected a plain name: 1-{MAX_NAME_LENGTH} characters, no '/', '\\' or control characters, not starting with '.'"


def catalog_name_problem(name: object) -> str | None:
    """Why `name` cannot name a catalog (it becomes folder and file names downstream), or None."""
    if not isinstance(name, str) or not name.strip():
        return f"is empty or not text; {_NAME_RULE}"
    if len(name) > MAX_NAME_LENGTH:
        return f"has {len(name)} characters; {_NAME_RULE}"
    if has_control_chars(name):
        return f"holds a NUL byte or control character; {_NAME_RULE}"
    if "/" in name or "\\" in name:
        return f"holds a path separator; {_NAME_RULE}"
    if name.startswith("."):
        return f"starts with '.'; {_NAME_RULE}"
    return None


@dataclass(frozen=True)
class ValidationLimits:
    """Bounds beyond which a value is taken for a corrupt or hostile input rather than data.

    The media bounds equal `workbench.media.MAX_IMAGE_PIXELS` / `MAX_AUDIO_SECONDS`
    (media.py sits below the catalog package and cannot import this class).
    """

    min_timestamp: datetime = datetime(1971, 1, 1, tzinfo=UTC)  # epoch 0 is a missing value, not a date
    max_timestamp: datetime = datetime(2100, 1, 1, tzinfo=UTC)  # exclusive
    max_image_pixels: int = 50_000_000  # a 20000x20000 header is a decompression bomb
    max_audio_seconds: float = 600.0


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a catalog: where, and what was expected.

    Errors make a catalog invalid; warnings (e.g. an empty description, which
    real catalogs have) are reported but accepted.
    """

    table: str
    message: str
    column: str | None = None
    rows: tuple[int, ...] = ()
    file: str | None = None
    severity: Severity = "error"

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def __str__(self) -> str:
        where = self.file or self.table
        if self.column:
            where += f", column {self.column!r}"
        if self.rows:
            shown = ", ".join(str(r) for r in self.rows[:5])
            more = f" (and {len(self.rows) - 5} more)" if len(self.rows) > 5 else ""
            where += f", rows {shown}{more}"
        return one_line(f"{where}: {self.message}")


def _rows(mask: pl.Series) -> tuple[int, ...]:
    return tuple(int(i) for i in mask.arg_true().head(20).to_list())


def conform_exprs(table: str, schema: pl.Schema, *, source: str | None = None) -> list[pl.Expr]:
    """Expressions that bring a table with `schema` to the contract's columns and dtypes.

    Safe casts only: integers to Int8 for `relevance` (range-checked by
    `validate_table`), numbers to Float64 for `price`/`value`, struct `attributes`
    to JSON strings, bytes to UTF-8 text, naive or other-unit datetimes to UTC
    microseconds; missing optional columns become nulls. Anything else raises.
    """
    if table not in SCHEMAS:
        raise CatalogError(f"unknown table {table!r}: expected one of {', '.join(TABLES)}")
    where = source or f"table {table!r}"
    expected = SCHEMAS[table]
    unknown = [c for c in schema.names() if c not in expected]
    if unknown:
        raise CatalogError(f"{where}: unexpected column(s) {unknown}; expected only {list(expected)}")
    missing = [c for c in expected if c not in schema and c not in OPTIONAL_COLUMNS[table]]
    if missing:
        raise CatalogError(f"{where}: missing required column(s) {missing}; expected {list(expected)}")
    exprs = []
    for name, (dtype, _nullable) in expected.items():
        col = pl.col(name)
        actual = schema.get(name)
        if actual is None:
            exprs.append(pl.lit(None, dtype=dtype).alias(name))
        elif actual == dtype:
            exprs.append(col)
        elif actual == pl.Null or (dtype == pl.Utf8() and actual == pl.Binary):
            exprs.append(col.cast(dtype))
        elif name == "attributes" and isinstance(actual, pl.Struct):
            exprs.append(col.struct.json_encode())
        elif dtype == pl.Int8() and actual.is_integer():
            exprs.append(col)  # range-checked by validate_table before the cast
        elif dtype == pl.Float64() and actual.is_numeric():
            exprs.append(col.cast(pl.Float64))
        elif isinstance(dtype, pl.Datetime) and isinstance(actual, pl.Datetime):
            if actual.time_zone is None:
                col = col.dt.replace_time_zone("UTC")
            exprs.append(col.dt.convert_time_zone("UTC").dt.cast_time_unit("us"))
        else:
            raise CatalogError(f"{where}, column {name!r}: has dtype {actual}, expected {dtype}")
    return exprs


def conform(table: str, df: pl.DataFrame, *, source: str | None = None) -> pl.DataFrame:
    """`df` with the contract's columns and dtypes (see `conform_exprs`)."""
    where = source or f"table {table!r}"
    for name in df.columns:
        if df.schema[name] == pl.Binary and SCHEMAS.get(table, {}).get(name, (None,))[0] == pl.Utf8():
            df = df.with_columns(_decode_utf8(df.get_column(name), where))
    return df.select(conform_exprs(table, df.schema, source=source))


def validate_table(
    table: str, df: pl.DataFrame, *, source: str | None = None, limits: ValidationLimits | None = None
) -> pl.DataFrame:
    """Conform `df` and check every row-level rule of the contract; return the clean frame.

    Raises `CatalogError` listing every error (warnings do not stop a write).
    """
    df = conform(table, df, source=source)
    errors = [p for p in table_problems(table, df, source=source, limits=limits) if p.is_error]
    if errors:
        raise CatalogError("; ".join(str(p) for p in errors))
    if table == "qrels":
        df = df.with_columns(pl.col("relevance").cast(pl.Int8))
    return df


def table_problems(
    table: str, df: pl.DataFrame, *, source: str | None = None, limits: ValidationLimits | None = None
) -> list[Problem]:
    """Every row-level problem (errors and warnings) of a frame already conformed to `table`'s schema."""
    where = source or f"table {table!r}"
    limits = limits or ValidationLimits()
    problems = _null_problems(table, df, where) + _identifier_problems(df, where)
    if table == "products":
        problems += _product_problems(df, where)
    elif table == "queries":
        problems += _query_problems(df, where)
    elif table == "interactions":
        problems += _interaction_problems(df, where, limits)
    elif table == "qrels":
        problems += _qrel_problems(df, where)
    for col in MEDIA_COLUMNS.get(table, ()):
        problems += _media_path_problems(df.get_column(col), where)
    return problems


def _null_problems(table: str, df: pl.DataFrame, where: str) -> list[Problem]:
    problems = []
    for name, (_dtype, nullable) in SCHEMAS[table].items():
        if not nullable:
            nulls = df.get_column(name).is_null()
            if nulls.any():
                problems.append(Problem(where, "null values, expected a value in every row", name, _rows(nulls)))
    return problems


def _blank(col: pl.Series) -> pl.Series:
    """Empty or whitespace-only strings (nulls are reported separately)."""
    return (col.str.strip_chars().str.len_chars() == 0).fill_null(False)


def _identifier_problems(df: pl.DataFrame, where: str) -> list[Problem]:
    problems = []
    for name in ("item_id", "user_id", "query_id"):
        if name in df.columns:
            empty = _blank(df.get_column(name))
            if empty.any():
                problems.append(Problem(where, "empty identifier, expected a non-empty string", name, _rows(empty)))
    return problems


def _text_problems(df: pl.DataFrame, where: str, columns: tuple[str, ...], severity: Severity) -> list[Problem]:
    problems = []
    for name in columns:
        blank = _blank(df.get_column(name))
        if blank.any():
            problems.append(Problem(where, "empty or whitespace-only text, expected some text", name, _rows(blank),
                                    severity=severity))
    return problems


def _not_finite(col: pl.Series) -> pl.Series:
    """NaN, +inf and -inf (nulls are allowed where the column is nullable)."""
    return (~col.is_finite()).fill_null(False)


def _product_problems(df: pl.DataFrame, where: str) -> list[Problem]:
    problems = _text_problems(df, where, ("title", "category"), "error")
    # Real catalogs have products without descriptions (H&M, fashion): accepted, but shown.
    problems += _text_problems(df, where, ("description",), "warning")
    dup = df.get_column("item_id").is_duplicated()
    if dup.any():
        problems.append(Problem(where, "duplicate item_id, expected each product once", "item_id", _rows(dup)))
    price = df.get_column("price")
    bad_price = (price < 0).fill_null(False) | _not_finite(price)
    if bad_price.any():
        problems.append(Problem(where, "price must be a finite non-negative number or null", "price", _rows(bad_price)))
    attrs = df.get_column("attributes")
    bad_json = pl.Series([v is not None and not _is_json_object(v) for v in attrs.to_list()], dtype=pl.Boolean)
    if bad_json.any():
        problems.append(Problem(where, "attributes must be a JSON object string or null", "attributes", _rows(bad_json)))
    return problems


def _query_problems(df: pl.DataFrame, where: str) -> list[Problem]:
    problems = _text_problems(df, where, ("text",), "error")
    dup = df.get_column("query_id").is_duplicated()
    if dup.any():
        problems.append(Problem(where, "duplicate query_id, expected each query once", "query_id", _rows(dup)))
    return problems


def _interaction_problems(df: pl.DataFrame, where: str, limits: ValidationLimits) -> list[Problem]:
    problems = []
    bad = ~df.get_column("event").is_in(list(EVENTS)).fill_null(False)
    if bad.any():
        problems.append(Problem(where, f"unknown event, expected one of {', '.join(EVENTS)}", "event", _rows(bad)))
    value = _not_finite(df.get_column("value"))
    if value.any():
        problems.append(Problem(where, "value is NaN or infinite, expected a finite number or null", "value", _rows(value)))
    ts = df.get_column("timestamp")
    lo, hi = limits.min_timestamp, limits.max_timestamp
    implausible = ((ts < lo) | (ts >= hi)).fill_null(False)
    if implausible.any():
        first = ts.filter(implausible).head(3).to_list()
        shown = ", ".join(t.isoformat() for t in first)
        problems.append(Problem(
            where, f"implausible timestamp (e.g. {shown}), expected {lo.date()} <= timestamp < {hi.date()} UTC",
            "timestamp", _rows(implausible),
        ))
    return problems


def _qrel_problems(df: pl.DataFrame, where: str) -> list[Problem]:
    problems = []
    rel = df.get_column("relevance")
    bad = ((rel < 0) | (rel > 3)).fill_null(False)
    if bad.any():
        shown = sorted(set(rel.filter(bad).head(3).to_list()))
        problems.append(Problem(where, f"relevance outside 0..3 (e.g. {shown}), expected an integer 0..3",
                                "relevance", _rows(bad)))
    dup = df.select(pl.struct("query_id", "item_id").is_duplicated()).to_series()
    if dup.any():
        problems.append(Problem(where, "duplicate (query_id, item_id) pair", "item_id", _rows(dup)))
    return problems


def _media_path_problems(paths: pl.Series, where: str) -> list[Problem]:
    values = paths.to_list()
    control = pl.Series([p is not None and has_control_chars(p) for p in values], dtype=pl.Boolean)
    unsafe = pl.Series([p is not None and not _is_safe_relative(p) for p in values], dtype=pl.Boolean) & ~control
    problems = []
    if control.any():
        problems.append(Problem(where, "media path holds a NUL byte or control character, expected a printable "
                                "relative path", paths.name, _rows(control)))
    if unsafe.any():
        problems.append(Problem(where, "media path must be relative and stay inside the catalog folder",
                                paths.name, _rows(unsafe)))
    return problems


def _decode_utf8(col: pl.Series, where: str) -> pl.Series:
    """Bytes columns are accepted only when every value is valid UTF-8."""
    values, bad = [], []
    for i, v in enumerate(col.to_list()):
        try:
            values.append(None if v is None else v.decode("utf-8"))
        except UnicodeDecodeError:
            bad.append(i)
    if bad:
        raise CatalogError(str(Problem(where, "text is not valid UTF-8 (re-encode the source, e.g. from latin-1)", col.name, tuple(bad))))
    return pl.Series(col.name, values, dtype=pl.Utf8)


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def is_safe_media_path(path: str) -> bool:
    """A relative path without '..' or control characters (whether the file exists is checked elsewhere)."""
    return not has_control_chars(path) and _is_safe_relative(path)


def _is_safe_relative(path: str) -> bool:
    if not path or path.startswith(("/", "\\")) or (len(path) > 1 and path[1] == ":"):
        return False
    parts = path.replace("\\", "/").split("/")
    return ".." not in parts


def check_references(
    products: pl.LazyFrame,
    interactions: pl.LazyFrame | None,
    queries: pl.LazyFrame | None,
    qrels: pl.LazyFrame | None,
) -> list[Problem]:
    """Cross-table rules: interactions and qrels name known items, qrels name known queries."""
    items = products.select("item_id")
    problems = []
    for name, lf in (("interactions", interactions), ("qrels", qrels)):
        if lf is None:
            continue
        unknown = _unknown_keys(lf, items, "item_id")
        if unknown:
            problems.append(Problem(name, f"item_id not in products: {unknown[0]} row(s), e.g. {unknown[1]}; expected known items", "item_id", unknown[2]))
    if qrels is not None:
        if queries is None:
            problems.append(Problem("qrels", "qrels given without a queries table"))
        else:
            unknown = _unknown_keys(qrels, queries.select("query_id"), "query_id")
            if unknown:
                problems.append(Problem("qrels", f"query_id not in queries: {unknown[0]} row(s), e.g. {unknown[1]}", "query_id", unknown[2]))
    return problems


def _unknown_keys(lf: pl.LazyFrame, known: pl.LazyFrame, key: str) -> tuple[int, list[str], tuple[int, ...]] | None:
    bad = (
        lf.select(key).with_row_index("row")
        .join(known.unique(), on=key, how="anti")
        .sort("row")
        .collect()
    )
    if bad.height == 0:
        return None
    return bad.height, bad.get_column(key).head(3).to_list(), tuple(bad.get_column("row").head(20).to_list())
