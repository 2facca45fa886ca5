"""H&M Personalized Fashion Recommendations to the workbench catalog contract.

Layout: `articles`, `customers`, `transactions` (the competition's names are
`articles.csv`, `customers.csv`, `transactions_train.csv`; samples often ship
`*_sample.parquet`; CSV or parquet is accepted), and images either flat
`images/<article_id>.jpg` or nested `images/<first 3 digits>/<article_id>.jpg`.

Article ids are 10-digit strings with a leading zero ("0108775015"). CSVs are
read as text so the zero survives; files that stored the id as a number lost
it, so ids are left-padded back to 10 digits and counted.

Mapping: title = prod_name; description = detail_desc ("" when missing, counted);
category = index_group_name/product_group_name/product_type_name ('/' inside a
level becomes '-'); attributes = the descriptive article columns as JSON;
image = media/images/<article_id>.jpg. Transactions become interactions with
event="purchase", value = price, timestamp = t_dat at 00:00 UTC. H&M writes one
row per unit bought, so identical transaction rows are kept (and counted in the
notes). The contract has no users table: customers are read only to report
customers without purchases and purchases by unknown customers.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from workbench.catalog import CatalogWriter
from workbench.catalog.loaders import ImportReport
from workbench.catalog.loaders._images import ImagePolicy, import_images, probe_size, size_note
from workbench.errors import CatalogError

ID_DIGITS = 10
ATTRIBUTE_COLUMNS = (
    "product_type_name", "product_group_name", "graphical_appearance_name", "colour_group_name",
    "perceived_colour_value_name", "perceived_colour_master_name", "department_name", "index_name",
    "index_group_name", "section_name", "garment_group_name",
)
CATEGORY_COLUMNS = ("index_group_name", "product_group_name", "product_type_name")
REQUIRED = {
    "articles": ("article_id", "prod_name", "product_type_name", "product_group_name", "index_group_name", "detail_desc"),
    "transactions": ("t_dat", "customer_id", "article_id", "price"),
    "customers": ("customer_id",),
}
# file stems tried in order for each table
STEMS = {
    "articles": ("articles", "articles_sample"),
    "customers": ("customers", "customers_sample"),
    "transactions": ("transactions_train", "transactions", "transactions_sample"),
}


@dataclass
class HMImportConfig:
    # H&M photos are ~1166x1750; towers read 224 px, so a 1024 px cap keeps catalogs light
    images: ImagePolicy = field(default_factory=lambda: ImagePolicy(max_side=1024))
    progress: bool = True


def find_table(src: Path, table: str) -> Path | None:
    for stem in STEMS[table]:
        for ext in (".parquet", ".csv"):
            path = src / f"{stem}{ext}"
            if path.is_file():
                return path
    return None


def _read(path: Path, table: str) -> pl.LazyFrame:
    if path.suffix == ".csv":
        # every column as text: article ids keep their leading zero
        lf = pl.scan_csv(path, infer_schema=False, encoding="utf8-lossy")
    else:
        lf = pl.scan_parquet(path)
    try:
        names = lf.collect_schema().names()
    except Exception as exc:  # unreadable file
        raise CatalogError(f"{path}: not a readable {path.suffix[1:]} file ({exc})") from exc
    missing = [c for c in REQUIRED[table] if c not in names]
    if missing:
        raise CatalogError(f"{path}: missing column(s) {missing}; expected the H&M {table} columns")
    return lf


def _count_padded(ids: pl.Series) -> int:
    """Ids that needed a zero put back (shorter than 10 digits in the source)."""
    return int((ids.str.len_chars() < ID_DIGITS).sum())


def _level(values: pl.Series, name: str, report: ImportReport) -> pl.Series:
    values = values.cast(pl.Utf8).str.strip_chars()
    missing = (values.is_null() | (values == "")).fill_null(True)
    report.repair(f"{name} missing: category level 'unknown'", int(missing.sum()))
    slash = values.str.contains("/", literal=True).fill_null(False)
    report.repair(f"'/' inside {name} replaced by '-' (it separates category levels)", int(slash.sum()))
    return values.str.replace_all("/", "-", literal=True).zip_with(~missing, pl.Series(["unknown"] * len(values))).alias(name)


def read_articles(path: Path, report: ImportReport) -> pl.DataFrame:
    lf = _read(path, "articles")
    raw = lf.collect()
    ids = raw["article_id"].cast(pl.Utf8).str.strip_chars()
    bad = ids.is_null() | ~ids.str.contains(r"^\d{1,10}$").fill_null(False)
    if bad.any():
        report.drop("article_id not a number of at most 10 digits", int(bad.sum()))
        raw, ids = raw.filter(~bad), ids.filter(~bad)
    short = _count_padded(ids)
    if short:
        report.repair("article_id lost its leading zero (stored as a number): padded to 10 digits", short)
    raw = raw.with_columns(ids.str.zfill(ID_DIGITS).alias("article_id"))
    dup_all = ~raw.select(pl.struct(pl.all()).is_first_distinct()).to_series()
    dup_id = ~raw["article_id"].is_first_distinct()
    report.drop("duplicate article row (same id, same fields)", int(dup_all.sum()))
    report.drop("duplicate article_id with different fields (first row kept)", int((dup_id & ~dup_all).sum()))
    raw = raw.filter(~dup_id)
    for col in ATTRIBUTE_COLUMNS:
        if col not in raw.columns:
            raw = raw.with_columns(pl.lit(None, dtype=pl.Utf8).alias(col))
    levels = [_level(raw[c], c, report) for c in CATEGORY_COLUMNS]
    desc = raw["detail_desc"].cast(pl.Utf8)
    report.repair("detail_desc missing: description set to ''", int(desc.is_null().sum()))
    name = raw["prod_name"].cast(pl.Utf8).str.strip_chars()
    no_name = name.is_null() | (name == "")
    report.repair("prod_name missing: title set to the product type", int(no_name.sum()))
    attrs = [
        json.dumps({c: r[c] for c in ATTRIBUTE_COLUMNS}, sort_keys=True)
        for r in raw.select(pl.col(c).cast(pl.Utf8) for c in ATTRIBUTE_COLUMNS).iter_rows(named=True)
    ]
    category = pl.DataFrame(levels).select(pl.concat_str(list(CATEGORY_COLUMNS), separator="/")).to_series()
    return pl.DataFrame({
        "item_id": raw["article_id"],
        "title": name.zip_with(~no_name, levels[2]),
        "description": desc.fill_null(""),
        "category": category,
        "brand": pl.Series([None] * raw.height, dtype=pl.Utf8),
        "price": pl.Series([None] * raw.height, dtype=pl.Float64),
        "attributes": pl.Series(attrs, dtype=pl.Utf8),
    })


def read_transactions(path: Path, items: pl.Series, report: ImportReport) -> pl.DataFrame:
    lf = _read(path, "transactions")
    raw = lf.select("t_dat", "customer_id", "article_id", "price").collect()
    n0 = raw.height
    ids = raw["article_id"].cast(pl.Utf8).str.strip_chars()
    short = _count_padded(ids.filter(ids.str.contains(r"^\d+$").fill_null(False)))
    if short:
        report.repair("transaction article_id lost its leading zero: padded to 10 digits", short)
    df = pl.DataFrame({
        "user_id": raw["customer_id"].cast(pl.Utf8).str.strip_chars(),
        "item_id": ids.str.zfill(ID_DIGITS),
        "timestamp": raw["t_dat"].cast(pl.Utf8).str.strip_chars().str.to_datetime("%Y-%m-%d", strict=False, time_unit="us")
        .dt.replace_time_zone("UTC"),
        "event": pl.Series(["purchase"] * n0, dtype=pl.Utf8),
        "value": raw["price"].cast(pl.Float64, strict=False),
    })
    checks = [
        ("transaction without customer_id", df["user_id"].is_null() | (df["user_id"] == "")),
        ("transaction t_dat not a YYYY-MM-DD date", df["timestamp"].is_null()),
        ("transaction of an article missing from articles", ~df["item_id"].is_in(items.implode()).fill_null(False)),
    ]
    keep = pl.Series([True] * n0)
    for reason, bad in checks:
        bad = bad.fill_null(True) & keep
        report.drop(reason, int(bad.sum()))
        keep = keep & ~bad
    df = df.filter(keep)
    bad_price = df["value"].is_null() | df["value"].is_nan() | (df["value"] < 0)
    report.repair("transaction price missing or negative: value set to null", int(bad_price.fill_null(True).sum()))
    df = df.with_columns(pl.when(bad_price).then(None).otherwise(pl.col("value")).alias("value"))
    repeats = int((~df.select(pl.struct(pl.all()).is_first_distinct()).to_series()).sum())
    if repeats:
        report.notes.append(
            f"{repeats} transaction rows repeat an earlier row (same day, customer, article, price): "
            "kept, H&M writes one row per unit bought"
        )
    return df.with_row_index("_row").sort("timestamp", "_row").drop("_row")


def _image_for(images: Path, item: str) -> Path | None:
    for candidate in (images / f"{item}.jpg", images / item[:3] / f"{item}.jpg"):
        if candidate.is_file():
            return candidate
    return None


def import_hm(src: Path, out: Path, *, overwrite: bool = False, config: HMImportConfig | None = None) -> ImportReport:
    """Convert an H&M folder `src` into a catalog at `out` (atomically)."""
    cfg = config or HMImportConfig()
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise CatalogError(f"{src}: not a folder; expected the H&M articles/customers/transactions files")
    report = ImportReport(format="hm", source=str(src), out=str(out))
    articles_path = find_table(src, "articles")
    if articles_path is None:
        raise CatalogError(f"{src}: no articles.csv/.parquet (or articles_sample.parquet); it is required")
    products = read_articles(articles_path, report)
    if products.height == 0:
        raise CatalogError(f"{articles_path}: no usable article rows")

    interactions = None
    tx_path = find_table(src, "transactions")
    if tx_path is None:
        report.notes.append("no transactions file: the catalog has no interactions")
    else:
        interactions = read_transactions(tx_path, products["item_id"], report)
    cust_path = find_table(src, "customers")
    if cust_path is not None and interactions is not None:
        customers = _read(cust_path, "customers").select(pl.col("customer_id").cast(pl.Utf8)).collect()["customer_id"]
        buyers = interactions["user_id"].unique()
        idle = int((~customers.is_in(buyers.implode())).sum())
        unknown = int((~buyers.is_in(customers.implode())).sum())
        if idle:
            report.notes.append(f"{idle} customers have no purchases (the catalog has no users table)")
        if unknown:
            report.notes.append(f"{unknown} buyers are missing from {cust_path.name} (their purchases are kept)")

    images_dir = src / "images"
    with CatalogWriter(
        out, name="hm", source=f"H&M Personalized Fashion Recommendations, converted from {src.name}",
        licence="H&M competition terms: non-commercial", overwrite=overwrite,
    ) as w:
        sizes: Counter = Counter()
        layouts: Counter = Counter()

        def tally(photo: Path) -> None:
            layouts["nested" if photo.parent != images_dir else "flat"] += 1
            size = probe_size(photo)
            if size is not None:
                sizes[size] += 1

        image_col = import_images(
            products["item_id"].to_list(), lambda item: _image_for(images_dir, item),
            w.media_dir, report, cfg.images,
            missing_reason="image file missing: image set to null (text kept)",
            on_found=tally, desc="H&M images", progress=cfg.progress,
        )
        no_image = sum(p is None for p in image_col)
        nested = layouts["nested"]
        products = products.with_columns(pl.Series("image", image_col, dtype=pl.Utf8))
        w.write_table("products", products)
        if interactions is not None:
            w.write_table("interactions", interactions)
    if nested:
        report.notes.append(f"{nested} images found in the nested images/<first 3 digits>/ layout")
    report.notes.append(size_note(dict(sizes)))
    report.counts = {
        "products": products.height,
        "with_image": products.height - no_image,
        "interactions": 0 if interactions is None else interactions.height,
        "users": 0 if interactions is None else interactions["user_id"].n_unique(),
    }
    return report
