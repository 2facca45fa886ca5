"""Amazon Reviews 2023 (McAuley lab) to the workbench catalog contract.

Layout (as published, one category at a time): item metadata `meta_<Category>.jsonl`
and reviews `<Category>.jsonl` (plain or `.gz`), and optionally product photos
saved locally as `images/<parent_asin>.<jpg|jpeg|png|webp>` (the published
metadata only holds image URLs; nothing is downloaded).

Metadata fields used: parent_asin, title, main_category, categories (list),
description (list of paragraphs), features (list), store, price,
average_rating, rating_number, details (object). Review fields used: user_id,
parent_asin, rating, timestamp (Unix milliseconds).

Mapping: item_id = parent_asin; title = title; description = the description
paragraphs joined (the features when there is no description); category = the
categories path (main_category when empty; '/' inside a level becomes '-');
brand = store; price = price when it is a number ("$12.99" is parsed, "None"
becomes null); attributes = main_category, average_rating, rating_number and
details as JSON. Reviews become interactions with event="rating" and value = the
1..5 stars.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from workbench.catalog import CatalogWriter
from workbench.catalog.loaders import ImportReport
from workbench.catalog.loaders._images import ImagePolicy, import_images
from workbench.errors import CatalogError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
_PRICE = re.compile(r"^\s*\$?\s*([0-9][0-9,]*(?:\.[0-9]+)?)\s*$")


@dataclass
class AmazonImportConfig:
    images: ImagePolicy = field(default_factory=lambda: ImagePolicy(max_side=1024))
    progress: bool = True


def _open_text(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")


def iter_jsonl(path: Path, report: ImportReport, what: str) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each JSON object line; bad lines are counted and skipped."""
    with _open_text(path) as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("latin-1")
                report.repair(f"{what} line not UTF-8: decoded as latin-1")
            try:
                obj = json.loads(text)
            except json.JSONDecodeError:
                report.drop(f"{what} line is not valid JSON")
                continue
            if not isinstance(obj, dict):
                report.drop(f"{what} line is not a JSON object")
                continue
            yield lineno, obj


def find_files(src: Path) -> tuple[list[Path], list[Path]]:
    """(metadata files, review files) in `src`."""
    files = sorted(p for p in src.iterdir() if p.is_file() and (p.name.endswith(".jsonl") or p.name.endswith(".jsonl.gz")))
    meta = [p for p in files if p.name.startswith("meta_")]
    reviews = [p for p in files if not p.name.startswith("meta_")]
    return meta, reviews


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return " ".join(_text(v) for v in value if v is not None).strip()
    return str(value).strip()


def _price(value: object, report: ImportReport) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if value >= 0 else None
    s = str(value).strip()
    if s in ("", "None", "null", "—"):
        return None
    m = _PRICE.match(s)
    if m:
        report.repair("price written as text: parsed to a number")
        return float(m.group(1).replace(",", ""))
    report.repair("price not a number (e.g. a range): set to null")
    return None


def _category(obj: dict, report: ImportReport) -> str:
    levels = [str(c).strip() for c in (obj.get("categories") or []) if c is not None and str(c).strip()]
    if not levels:
        main = _text(obj.get("main_category"))
        levels = [main] if main else ["unknown"]
        report.repair("categories empty: category from main_category (or 'unknown')")
    if any("/" in lv for lv in levels):
        report.repair("'/' inside a category level replaced by '-'")
        levels = [lv.replace("/", "-") for lv in levels]
    return "/".join(levels)


def read_metadata(paths: list[Path], report: ImportReport) -> pl.DataFrame:
    rows: dict[str, dict] = {}
    for path in paths:
        for _lineno, obj in iter_jsonl(path, report, "metadata"):
            item = _text(obj.get("parent_asin"))
            if not item:
                report.drop("metadata without parent_asin")
                continue
            if item in rows:
                report.drop("duplicate parent_asin in metadata (first kept)")
                continue
            title = _text(obj.get("title"))
            description = _text(obj.get("description"))
            if not description:
                description = _text(obj.get("features"))
                if description:
                    report.repair("description empty: features used instead")
            if not title:
                if not description:
                    report.drop("metadata without title or description")
                    continue
                title = description[:80]
                report.repair("title empty: first 80 characters of the description used")
            details = obj.get("details") if isinstance(obj.get("details"), dict) else {}
            rows[item] = {
                "item_id": item,
                "title": title,
                "description": description,
                "category": _category(obj, report),
                "brand": _text(obj.get("store")) or None,
                "price": _price(obj.get("price"), report),
                "attributes": json.dumps(
                    {
                        "main_category": obj.get("main_category"),
                        "average_rating": obj.get("average_rating"),
                        "rating_number": obj.get("rating_number"),
                        "details": details,
                    },
                    sort_keys=True,
                    ensure_ascii=False,
                ),
            }
    return pl.DataFrame(list(rows.values()), schema={
        "item_id": pl.Utf8, "title": pl.Utf8, "description": pl.Utf8, "category": pl.Utf8,
        "brand": pl.Utf8, "price": pl.Float64, "attributes": pl.Utf8,
    })


def read_reviews(paths: list[Path], items: set[str], report: ImportReport) -> pl.DataFrame:
    users, item_ids, stamps, values = [], [], [], []
    for path in paths:
        for _lineno, obj in iter_jsonl(path, report, "review"):
            user = _text(obj.get("user_id"))
            item = _text(obj.get("parent_asin")) or _text(obj.get("asin"))
            rating, ts = obj.get("rating"), obj.get("timestamp")
            if not user:
                report.drop("review without user_id")
                continue
            if item not in items:
                report.drop("review of an item missing from the metadata")
                continue
            if not isinstance(rating, (int, float)) or isinstance(rating, bool) or not 1 <= rating <= 5:
                report.drop("review rating not a number in 1..5")
                continue
            if not isinstance(ts, (int, float)) or isinstance(ts, bool) or ts <= 0:
                report.drop("review timestamp not Unix milliseconds")
                continue
            if not obj.get("parent_asin"):
                report.repair("review without parent_asin: asin used")
            users.append(user)
            item_ids.append(item)
            stamps.append(datetime.fromtimestamp(ts / 1000.0, tz=UTC))
            values.append(float(rating))
    df = pl.DataFrame({
        "user_id": pl.Series(users, dtype=pl.Utf8),
        "item_id": pl.Series(item_ids, dtype=pl.Utf8),
        "timestamp": pl.Series(stamps, dtype=pl.Datetime("us", "UTC")),
        "event": pl.Series(["rating"] * len(users), dtype=pl.Utf8),
        "value": pl.Series(values, dtype=pl.Float64),
    })
    dup = ~df.select(pl.struct(pl.all()).is_first_distinct()).to_series()
    report.drop("duplicate review (same user, item, time and rating)", int(dup.sum()))
    return df.filter(~dup).with_row_index("_row").sort("timestamp", "_row").drop("_row")


def _local_image(images: Path, item: str) -> Path | None:
    for suffix in IMAGE_SUFFIXES:
        path = images / f"{item}{suffix}"
        if path.is_file():
            return path
    return None


def import_amazon_reviews(
    src: Path, out: Path, *, overwrite: bool = False, config: AmazonImportConfig | None = None
) -> ImportReport:
    """Convert an Amazon Reviews 2023 category folder `src` into a catalog at `out` (atomically)."""
    cfg = config or AmazonImportConfig()
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise CatalogError(f"{src}: not a folder; expected meta_<Category>.jsonl and <Category>.jsonl")
    meta_paths, review_paths = find_files(src)
    if not meta_paths:
        raise CatalogError(f"{src}: no meta_*.jsonl(.gz) item metadata file; it is required")
    report = ImportReport(format="amazon-reviews-2023", source=str(src), out=str(out))
    products = read_metadata(meta_paths, report)
    if products.height == 0:
        raise CatalogError(f"{', '.join(p.name for p in meta_paths)}: no usable item metadata lines")
    interactions = None
    if review_paths:
        interactions = read_reviews(review_paths, set(products["item_id"].to_list()), report)
    else:
        report.notes.append("no review file: the catalog has no interactions")
    images_dir = src / "images"
    with CatalogWriter(
        out, name=f"amazon-reviews-2023-{meta_paths[0].name.split('.')[0].removeprefix('meta_')}",
        source=f"Amazon Reviews 2023 (McAuley lab), converted from {src.name}",
        licence="Amazon Reviews 2023: research use", overwrite=overwrite,
    ) as w:
        image_col = import_images(
            products["item_id"].to_list(),
            lambda item: _local_image(images_dir, item) if images_dir.is_dir() else None,
            w.media_dir, report, cfg.images,
            missing_reason="no local image file: image set to null (text kept)",
            desc="Amazon images", progress=cfg.progress,
        )
        missing = sum(p is None for p in image_col)
        products = products.with_columns(pl.Series("image", image_col, dtype=pl.Utf8))
        w.write_table("products", products)
        if interactions is not None:
            w.write_table("interactions", interactions)
    report.counts = {
        "products": products.height,
        "with_image": products.height - missing,
        "interactions": 0 if interactions is None else interactions.height,
        "users": 0 if interactions is None else interactions["user_id"].n_unique(),
    }
    return report
