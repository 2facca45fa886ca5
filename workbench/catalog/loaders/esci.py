"""Amazon Shopping Queries (ESCI) to the workbench catalog contract.

Layout (as published): `shopping_queries_dataset_products.parquet` (product_id,
product_title, product_description, product_bullet_point, product_brand,
product_color, product_locale) and `shopping_queries_dataset_examples.parquet`
(example_id, query, query_id, product_id, product_locale, esci_label,
small_version, large_version, split).

Products, queries and qrels come out; there are no images and no interactions.
Relevance: E (exact) = 3, S (substitute) = 2, C (complement) = 1, I (irrelevant) = 0.

The same ASIN appears in several locales with different text, so one locale is
imported at a time (default "us"; item_id = product_id). `locale=None` imports
all and makes item_id = "<locale>:<product_id>" to keep ids unique. The
`version` option keeps the "small" (reduced, the task-1 set) or "large" version
only; `split` keeps "train" or "test" only.

Text: descriptions carry HTML; tags are removed and entities unescaped (counted).
description = description + bullet points; attributes = color and locale.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from workbench.catalog import CatalogWriter
from workbench.catalog.loaders import ImportReport
from workbench.errors import CatalogError, ConfigError

PRODUCTS_FILE = "shopping_queries_dataset_products.parquet"
EXAMPLES_FILE = "shopping_queries_dataset_examples.parquet"
GRADES = {"E": 3, "S": 2, "C": 1, "I": 0}
PRODUCT_COLUMNS = ("product_id", "product_title", "product_locale")
EXAMPLE_COLUMNS = ("query", "query_id", "product_id", "product_locale", "esci_label")
_TAG = re.compile(r"<[^>]+>")


@dataclass
class ESCIImportConfig:
    locale: str | None = "us"  # "us", "es", "jp" or None for all (ids then carry the locale)
    version: str | None = None  # "small", "large" or None (every example)
    split: str | None = None  # "train", "test" or None


def _read(path: Path, required: tuple[str, ...]) -> pl.DataFrame:
    if not path.is_file():
        raise CatalogError(f"{path}: missing; an ESCI folder holds {PRODUCTS_FILE} and {EXAMPLES_FILE}")
    try:
        df = pl.read_parquet(path)
    except Exception as exc:  # polars raises several types for unreadable files
        raise CatalogError(f"{path}: not a readable parquet file ({exc})") from exc
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise CatalogError(f"{path}: missing column(s) {missing}; expected the published ESCI columns")
    return df


def _clean_html(values: list[str | None], report: ImportReport, column: str) -> list[str]:
    out = []
    for v in values:
        if v is None:
            out.append("")
            continue
        cleaned = v
        if _TAG.search(v) or "&" in v:
            cleaned = html.unescape(_TAG.sub(" ", v))
            if cleaned != v:
                report.repair(f"{column}: HTML tags or entities removed")
        out.append(" ".join(cleaned.split()))
    return out


def _item_ids(df: pl.DataFrame, multi_locale: bool) -> pl.Expr:
    pid = pl.col("product_id").cast(pl.Utf8).str.strip_chars()
    return (pl.col("product_locale") + pl.lit(":") + pid) if multi_locale else pid


def import_esci(src: Path, out: Path, *, overwrite: bool = False, config: ESCIImportConfig | None = None) -> ImportReport:
    """Convert an ESCI folder `src` into a catalog (products, queries, qrels) at `out`."""
    cfg = config or ESCIImportConfig()
    if cfg.version not in (None, "small", "large"):
        raise ConfigError(f"ESCI version={cfg.version!r}: expected 'small', 'large' or None")
    if cfg.split not in (None, "train", "test"):
        raise ConfigError(f"ESCI split={cfg.split!r}: expected 'train', 'test' or None")
    src, out = Path(src), Path(out)
    report = ImportReport(format="esci", source=str(src), out=str(out))
    products_raw = _read(src / PRODUCTS_FILE, PRODUCT_COLUMNS)
    examples = _read(src / EXAMPLES_FILE, EXAMPLE_COLUMNS)
    multi = cfg.locale is None
    if not multi:
        report.drop(f"product of another locale than {cfg.locale!r}", int((products_raw["product_locale"] != cfg.locale).sum()))
        report.drop(f"example of another locale than {cfg.locale!r}", int((examples["product_locale"] != cfg.locale).sum()))
        products_raw = products_raw.filter(pl.col("product_locale") == cfg.locale)
        examples = examples.filter(pl.col("product_locale") == cfg.locale)
    if cfg.version is not None:
        col = f"{cfg.version}_version"
        if col not in examples.columns:
            raise CatalogError(f"{src / EXAMPLES_FILE}: no column {col!r} to select version={cfg.version!r}")
        report.drop(f"example not in the {cfg.version} version", int((examples[col] != 1).sum()))
        examples = examples.filter(pl.col(col) == 1)
    if cfg.split is not None:
        if "split" not in examples.columns:
            raise CatalogError(f"{src / EXAMPLES_FILE}: no column 'split' to select split={cfg.split!r}")
        report.drop(f"example not in the {cfg.split} split", int((examples["split"] != cfg.split).sum()))
        examples = examples.filter(pl.col("split") == cfg.split)

    # products
    products_raw = products_raw.with_columns(_item_ids(products_raw, multi).alias("item_id"))
    bad_id = products_raw["item_id"].is_null() | (products_raw["item_id"] == "")
    report.drop("product without product_id", int(bad_id.sum()))
    products_raw = products_raw.filter(~bad_id)
    dup = ~products_raw["item_id"].is_first_distinct()
    report.drop("duplicate product (same id and locale; first kept)", int(dup.sum()))
    products_raw = products_raw.filter(~dup)
    title = products_raw["product_title"].cast(pl.Utf8).str.strip_chars()
    no_title = title.is_null() | (title == "")
    report.drop("product without title", int(no_title.sum()))
    products_raw = products_raw.filter(~no_title)

    def get(c: str) -> list[str | None]:  # optional columns read as text, nulls when absent
        return products_raw[c].cast(pl.Utf8).to_list() if c in products_raw.columns else [None] * products_raw.height

    desc = _clean_html(get("product_description"), report, "product_description")
    bullets = _clean_html(get("product_bullet_point"), report, "product_bullet_point")
    titles = _clean_html(get("product_title"), report, "product_title")
    colors, locales = get("product_color"), get("product_locale")
    products = pl.DataFrame({
        "item_id": products_raw["item_id"],
        "title": titles,
        "description": [" ".join(p for p in (d, b) if p) for d, b in zip(desc, bullets, strict=True)],
        "category": ["esci/" + (loc or "unknown") for loc in locales],
        "brand": [b.strip() if b and b.strip() else None for b in get("product_brand")],
        "price": pl.Series([None] * products_raw.height, dtype=pl.Float64),
        "attributes": [json.dumps({"color": c, "locale": loc}, ensure_ascii=False, sort_keys=True) for c, loc in zip(colors, locales, strict=True)],
    })

    # qrels and queries
    ex = examples.with_columns(
        _item_ids(examples, multi).alias("item_id"),
        pl.col("query_id").cast(pl.Utf8).str.strip_chars().alias("query_id"),
        pl.col("esci_label").cast(pl.Utf8).str.strip_chars().str.to_uppercase().alias("esci_label"),
    )
    checks = [
        ("example label not one of E, S, C, I", ~ex["esci_label"].is_in(list(GRADES)).fill_null(False)),
        ("example without query text", ex["query"].is_null() | (ex["query"].cast(pl.Utf8).str.strip_chars() == "")),
        ("example of a product missing from the products file", ~ex["item_id"].is_in(products["item_id"].implode()).fill_null(False)),
    ]
    keep = pl.Series([True] * ex.height)
    for reason, bad in checks:
        bad = bad.fill_null(True) & keep
        report.drop(reason, int(bad.sum()))
        keep = keep & ~bad
    ex = ex.filter(keep)
    pair_dup = ~ex.select(pl.struct("query_id", "item_id").is_first_distinct()).to_series()
    report.drop("duplicate (query, product) example (first kept)", int(pair_dup.sum()))
    ex = ex.filter(~pair_dup)
    texts = ex.group_by("query_id", maintain_order=True).agg(pl.col("query").cast(pl.Utf8).str.strip_chars().unique(maintain_order=True))
    conflicting = texts.filter(pl.col("query").list.len() > 1).height
    if conflicting:
        report.notes.append(f"{conflicting} query_ids carry more than one text: the first is kept")
    queries = texts.select(
        "query_id",
        pl.col("query").list.first().alias("text"),
        pl.lit(None, dtype=pl.Utf8).alias("user_id"),
        pl.lit(None, dtype=pl.Utf8).alias("image"),
        pl.lit(None, dtype=pl.Utf8).alias("audio"),
    )
    qrels = ex.select(
        "query_id", "item_id",
        pl.col("esci_label").replace_strict(GRADES, return_dtype=pl.Int8).alias("relevance"),
    )
    if "split" in ex.columns:
        per_split = ex.group_by("split").agg(pl.col("query_id").n_unique()).sort("split")
        report.notes.append(
            "queries per published split: " + ", ".join(f"{s}={n}" for s, n in per_split.iter_rows())
        )
    report.notes.append("ESCI has no images and no interactions: the catalog is text-only search")
    with CatalogWriter(
        out, name="esci" + (f"-{cfg.locale}" if cfg.locale else ""),
        source=f"Amazon Shopping Queries Dataset (ESCI), converted from {src.name}",
        licence="Apache-2.0 (Shopping Queries Dataset)", overwrite=overwrite,
    ) as w:
        w.write_table("products", products)
        if queries.height:
            w.write_table("queries", queries)
            w.write_table("qrels", qrels)
    report.counts = {"products": products.height, "queries": queries.height, "qrels": qrels.height}
    return report
