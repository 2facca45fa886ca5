"""Profiling a catalog: the tables behind notebook 01 and the figures built from them.

Statistics are polars frames (sorted, so outputs are deterministic); figure
builders return plotly figures and never show them.
"""

from __future__ import annotations

import base64
import html
import io
import json

import numpy as np
import plotly.express as px
import plotly.graph_objects as go
import polars as pl

from workbench.catalog.io import Catalog
from workbench.catalog.schema import MODALITIES
from workbench.media import image_to_png_bytes, load_image


def table_counts(cat: Catalog) -> pl.DataFrame:
    """Rows per table (0 for an absent table)."""
    rows = []
    for name in ("products", "interactions", "queries", "qrels"):
        lf = cat.table(name)
        rows.append({"table": name, "rows": 0 if lf is None else lf.select(pl.len()).collect().item()})
    return pl.DataFrame(rows)


def modality_coverage(cat: Catalog) -> pl.DataFrame:
    """Share of products that have each modality (text is always present)."""
    df = cat.products.select(
        pl.len().alias("products"),
        pl.col("image").is_not_null().sum().alias("image"),
        pl.col("audio").is_not_null().sum().alias("audio"),
    ).collect()
    n = df.item(0, "products")
    return pl.DataFrame(
        {
            "modality": ["text", "image", "audio"],
            "products_with": [n, df.item(0, "image"), df.item(0, "audio")],
            "share": [1.0, round(df.item(0, "image") / n, 4), round(df.item(0, "audio") / n, 4)],
        }
    )


def absent_modalities_note(cat: Catalog) -> str | None:
    """One line naming the modalities no product has, or None when all three are present."""
    present = cat.modalities
    absent = [m for m in MODALITIES if m not in present]
    if not absent:
        return None
    return (f"no product has {' or '.join(absent)}: left out of training, fusion, the atlas and the "
            f"ablation (modalities used: {', '.join(present)})")


def has_rows(cat: Catalog, table: str) -> bool:
    """Whether the catalog has `table` with at least one row (absent and empty count alike)."""
    lf = cat.table(table)
    return lf is not None and lf.select(pl.len()).collect().item() > 0


def label_attributes(labels: pl.DataFrame, max_values: int = 50) -> list[str]:
    """Columns of `item_labels` worth probing and colouring by: category, then every text
    attribute with 2..`max_values` distinct values (ids, titles and flags are not labels)."""
    skip = {"item_id", "title", "category", "top_category", "leaf_category"}
    out = ["category"]
    for col in labels.columns:
        if col in skip or labels[col].dtype not in (pl.Utf8, pl.Categorical):
            continue
        if 2 <= labels[col].n_unique() <= max_values:
            out.append(col)
    return out


def item_labels(cat: Catalog) -> pl.DataFrame:
    """Per-product labels for colouring maps, captions and linear probes.

    item_id, title, category, top_category, leaf_category, then one column per
    attribute: the hidden ground truth of a synthetic catalog (`truth/items.parquet`)
    when there is one, otherwise the products' own `attributes` JSON (values as text).
    """
    from workbench.catalog.io import read_truth

    base = cat.products.select("item_id", "title", "category").collect().with_columns(
        pl.col("category").str.split("/").list.first().alias("top_category"),
        pl.col("category").str.split("/").list.last().alias("leaf_category"),
    )
    truth = read_truth(cat.root).get("items") if cat.has_truth else None
    if truth is not None:
        extra = truth.drop([c for c in base.columns if c in truth.columns and c != "item_id"])
    else:
        raw = cat.products.select("attributes").collect().get_column("attributes").to_list()
        parsed = [json.loads(t) if t else None for t in raw]
        rows = [{k: None if v is None else str(v) for k, v in p.items()} if isinstance(p, dict) else {} for p in parsed]
        keys = sorted({k for r in rows for k in r} - set(base.columns))
        # A missing value is its own class ("unknown") for colouring and probing.
        extra = pl.DataFrame(
            {"item_id": base["item_id"], **{k: [r.get(k) or "unknown" for r in rows] for k in keys}},
            schema={"item_id": pl.Utf8, **{k: pl.Utf8 for k in keys}},
        )
    return base.join(extra, on="item_id", how="left", maintain_order="left")


def category_counts(cat: Catalog, level: int = 1) -> pl.DataFrame:
    """Products per category path truncated to `level` parts ("home/chairs" at level 1 is "home")."""
    return (
        cat.products.select(pl.col("category").str.split("/").list.head(level).list.join("/").alias("category"))
        .group_by("category")
        .len("products")
        .sort(["products", "category"], descending=[True, False])
        .collect()
    )


def attribute_counts(cat: Catalog) -> pl.DataFrame:
    """(attribute, value, products) over the JSON `attributes` column."""
    values = cat.products.select("attributes").collect().get_column("attributes").to_list()
    counts: dict[tuple[str, str], int] = {}
    for text in values:
        if text is None:
            continue
        for key, value in json.loads(text).items():
            counts[(key, str(value))] = counts.get((key, str(value)), 0) + 1
    if not counts:
        return pl.DataFrame(schema={"attribute": pl.Utf8, "value": pl.Utf8, "products": pl.Int64})
    return pl.DataFrame(
        [{"attribute": k, "value": v, "products": n} for (k, v), n in counts.items()]
    ).sort(["attribute", "products", "value"], descending=[False, True, False])


def interactions_per_day(cat: Catalog) -> pl.DataFrame:
    if cat.interactions is None:
        return pl.DataFrame(schema={"day": pl.Date, "event": pl.Utf8, "interactions": pl.UInt32})
    return (
        cat.interactions.group_by(pl.col("timestamp").dt.date().alias("day"), "event")
        .len("interactions")
        .sort(["day", "event"])
        .collect()
    )


def user_activity(cat: Catalog) -> pl.DataFrame:
    """Interactions per user, most active first, with the user's rank (the long tail)."""
    if cat.interactions is None:
        return pl.DataFrame(schema={"rank": pl.UInt32, "user_id": pl.Utf8, "interactions": pl.UInt32})
    return (
        cat.interactions.group_by("user_id")
        .len("interactions")
        .sort(["interactions", "user_id"], descending=[True, False])
        .with_row_index("rank", offset=1)
        .collect()
    )


def most_popular(cat: Catalog, k: int = 10) -> pl.DataFrame:
    """The `k` items with the most interactions, with title and category."""
    if cat.interactions is None:
        return pl.DataFrame(schema={"item_id": pl.Utf8, "interactions": pl.UInt32, "title": pl.Utf8, "category": pl.Utf8})
    return (
        cat.interactions.group_by("item_id")
        .len("interactions")
        .sort(["interactions", "item_id"], descending=[True, False])
        .head(k)
        .join(cat.products.select("item_id", "title", "category"), on="item_id", how="left", maintain_order="left")
        .collect()
    )


# ---- figures ----

def bar_figure(df: pl.DataFrame, x: str, y: str, title: str, color: str | None = None) -> go.Figure:
    fig = px.bar(df, x=x, y=y, color=color, title=title)
    return fig.update_layout(height=380, margin={"t": 50, "b": 40})


def activity_figure(activity: pl.DataFrame) -> go.Figure:
    fig = px.line(activity, x="rank", y="interactions", log_y=True, title="User activity (long tail)")
    return fig.update_layout(height=350, xaxis_title="user rank", yaxis_title="interactions (log)")


def timeline_figure(per_day: pl.DataFrame) -> go.Figure:
    fig = px.area(per_day, x="day", y="interactions", color="event", title="Interactions per day")
    return fig.update_layout(height=350)


# ---- media for people to look at and listen to ----

def image_gallery_html(cat: Catalog, item_ids: list[str], size: int = 96, columns: int = 6) -> str:
    """An HTML grid of product images (inline PNG) with their titles; missing images are marked."""
    rows = (
        cat.products.filter(pl.col("item_id").is_in(item_ids))
        .select("item_id", "title", "image")
        .collect()
    )
    by_id = {r["item_id"]: r for r in rows.iter_rows(named=True)}
    cells = []
    for item_id in item_ids:
        row = by_id[item_id]
        if row["image"] is None:
            img = f'<div style="width:{size}px;height:{size}px;background:#eee;line-height:{size}px">no image</div>'
        else:
            png = image_to_png_bytes(load_image(cat.media_path(row["image"]), size=size))
            img = f'<img width="{size}" height="{size}" src="data:image/png;base64,{base64.b64encode(png).decode()}"/>'
        cells.append(
            f'<figure style="margin:4px;text-align:center;width:{size + 40}px">{img}'
            f'<figcaption style="font-size:11px">{html.escape(row["title"])}</figcaption></figure>'
        )
    return f'<div style="display:grid;grid-template-columns:repeat({columns},auto)">{"".join(cells)}</div>'


def audio_clip(cat: Catalog, item_id: str) -> tuple[np.ndarray, int]:
    """(waveform, sample rate) of a product's audio clip, for IPython.display.Audio."""
    from workbench.media import AUDIO_SAMPLE_RATE, load_audio

    rel = cat.products.filter(pl.col("item_id") == item_id).select("audio").collect().item()
    if rel is None:
        raise ValueError(f"product {item_id!r} has no audio")
    return load_audio(cat.media_path(rel), AUDIO_SAMPLE_RATE), AUDIO_SAMPLE_RATE


def wav_bytes(wave: np.ndarray, rate: int) -> bytes:
    """16-bit PCM WAV bytes (deterministic, unlike re-encoding through a player)."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, wave, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def synthetic_attributes_named(text: str) -> dict[str, str]:
    """The synthetic attributes a query text names (its vocabulary, longest words first).

    e.g. "red striped wooden chair" -> {category: furniture/chair, colour: red,
    pattern: stripes, material: wood}. Only meaningful on the synthetic catalog.
    """
    import re

    from workbench.catalog.synthetic import vocabulary

    words = text.lower()
    named: dict[str, str] = {}
    for attribute, values in vocabulary().items():
        if not isinstance(values, dict):
            continue
        candidates = sorted(((w, v) for v, ws in values.items() for w in ws), key=lambda p: -len(p[0]))
        for word, value in candidates:
            if re.search(rf"\b{re.escape(word)}\b", words):
                named[attribute] = value
                break
    return named


def ground_truth_marks(cat: Catalog, item_ids: list[str], named: dict[str, str]) -> pl.DataFrame:
    """For each hit, its true value of every attribute `named` and whether it matches.

    item_id, then `<attribute>` (the truth) and `<attribute>_ok` (bool) per attribute,
    and `matches` (how many named attributes it has). Needs the synthetic ground truth.
    """
    from workbench.catalog.io import read_truth

    truth = read_truth(cat.root)["items"]
    hits = pl.DataFrame({"item_id": [str(i) for i in item_ids]}).join(truth, on="item_id", how="left",
                                                                      maintain_order="left")
    cols = [pl.col("item_id")]
    for attribute, value in named.items():
        if attribute in hits.columns:
            cols += [pl.col(attribute), (pl.col(attribute) == value).fill_null(False).alias(f"{attribute}_ok")]
    out = hits.select(cols)
    ok = [c for c in out.columns if c.endswith("_ok")]
    return out.with_columns(pl.sum_horizontal([pl.col(c).cast(pl.Int64) for c in ok]).alias("matches") if ok
                            else pl.lit(0).alias("matches"))
