"""The embedding atlas and figure builders: UMAP projections, plotly figures, quality tables.

Builders return figures and tables and never show them. `save_figure_html` writes
self-contained HTML (plotly.js inlined, fixed `div_id`, atomic write); scatter
figures built with thumbnails show the hovered point's image beside the cursor
(plotly's hover labels cannot hold images, so a few lines of JS do it offline).

UMAP is seeded (`random_state`, one thread) so layouts repeat run to run. Its numba
functions are compiled once and cached under `cache_dir()/numba`: importing through
`import_umap` sets `NUMBA_CACHE_DIR` and turns on caching for the umap functions
that do not cache themselves (about 30 s of compilation per process otherwise).
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import plotly.express as px
import plotly.graph_objects as go
import polars as pl
import torch

from workbench.catalog.schema import MODALITIES
from workbench.device import resolve_device
from workbench.errors import ConfigError
from workbench.files import write_text_atomic
from workbench.paths import cache_dir

PROBE_ATTRIBUTES = ("category", "colour", "pattern", "material", "style", "brand")

# --------------------------------------------------------------------------- UMAP


def import_umap():
    """`umap`, with numba's JIT results cached on disk under the project's cache."""
    os.environ.setdefault("NUMBA_CACHE_DIR", str(cache_dir() / "numba"))
    import numba
    import pynndescent.distances
    import pynndescent.graph_utils
    import pynndescent.pynndescent_
    import pynndescent.rp_trees
    import pynndescent.utils
    import umap
    import umap.layouts
    import umap.umap_
    import umap.utils
    from numba.core.caching import NullCache

    # umap (and pynndescent, for NN-descent above the exact-kNN size) compile these
    # without cache=True; enabling it before first use makes the compiled code land
    # in NUMBA_CACHE_DIR and be reused by later processes
    modules = (
        umap.umap_,
        umap.layouts,
        umap.utils,
        pynndescent.pynndescent_,
        pynndescent.utils,
        pynndescent.distances,
        pynndescent.rp_trees,
        pynndescent.graph_utils,
    )
    for module in modules:
        for value in vars(module).values():
            if isinstance(value, numba.core.registry.CPUDispatcher) and isinstance(
                value._cache, NullCache
            ):
                value.enable_caching()
    return umap


@dataclass(frozen=True)
class UMAPConfig:
    """UMAP settings. knn: "exact" (torch matrix product; also gives kNN purity),
    "nndescent" (UMAP's approximate search) or "auto" (exact up to `exact_knn_max` items)."""

    n_components: int = 2
    n_neighbors: int = 15
    min_dist: float = 0.1
    n_epochs: int | None = None
    random_state: int = 0
    knn: str = "auto"
    exact_knn_max: int = 50_000

    def __post_init__(self) -> None:
        if self.n_components not in (2, 3):
            raise ConfigError(f"UMAPConfig.n_components={self.n_components}: expected 2 or 3")
        if self.knn not in ("auto", "exact", "nndescent"):
            raise ConfigError(f"UMAPConfig.knn={self.knn!r}: expected auto, exact or nndescent")
        if self.n_neighbors < 2:
            raise ConfigError(f"UMAPConfig.n_neighbors={self.n_neighbors}: expected >= 2")


def _unit(vectors: Any, what: str = "vectors") -> np.ndarray:
    arr = np.asarray(vectors, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ConfigError(f"{what}: expected a non-empty (n, d) array, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ConfigError(f"{what}: holds NaN or inf")
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    if (norms <= 1e-12).any():
        raise ConfigError(f"{what}: row {int(np.argmax(norms[:, 0] <= 1e-12))} is a zero vector")
    return arr / norms


def knn_cosine(
    vectors: Any, k: int, batch_size: int | None = None, device: str = "auto"
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours by cosine, excluding the point itself.

    Returns indices (n, k) int64 and cosine similarities (n, k) float32, best first.
    batch_size: query rows per block (default: blocks of about 128 MB of scores).
    """
    x = _unit(vectors)
    n = x.shape[0]
    batch_size = batch_size or int(np.clip(2**25 // n, 16, 4096))
    if not 1 <= k < n:
        raise ConfigError(f"knn: k={k} needs 1 <= k < n_items={n}")
    dev = resolve_device(device)
    items = torch.from_numpy(x).to(dev)
    out_i, out_s = [], []
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            sims = items[start : start + batch_size] @ items.T
            rows = torch.arange(sims.shape[0], device=dev)
            sims[rows, rows + start] = -torch.inf  # never one's own neighbour
            s, i = torch.topk(sims, k, dim=1)
            out_i.append(i)
            out_s.append(s)
        idx = torch.cat(out_i).cpu().numpy().astype(np.int64)
        sim = torch.cat(out_s).float().cpu().numpy()
    return idx, sim


def umap_project(vectors: Any, config: UMAPConfig | None = None) -> np.ndarray:
    """UMAP of L2-normalised `vectors` to 2-D or 3-D, float32 (n, n_components)."""
    cfg = config or UMAPConfig()
    x = _unit(vectors)
    n = x.shape[0]
    if n <= cfg.n_components + 1:
        raise ConfigError(f"UMAP needs more than {cfg.n_components + 1} items, got {n}")
    n_neighbors = min(cfg.n_neighbors, n - 1)
    umap = import_umap()
    kwargs: dict[str, Any] = {}
    exact = cfg.knn == "exact" or (cfg.knn == "auto" and n <= cfg.exact_knn_max)
    if exact:
        # exact neighbours from a matrix product: faster than NN-descent at this size and
        # no pynndescent compilation; UMAP expects self first, at distance 0
        idx, sim = knn_cosine(x, n_neighbors - 1)
        knn_i = np.concatenate([np.arange(n)[:, None], idx], axis=1)
        knn_d = np.concatenate(
            [np.zeros((n, 1), np.float32), np.sqrt(np.maximum(2 - 2 * sim, 0))], axis=1
        ).astype(np.float32)
        kwargs["precomputed_knn"] = (knn_i, knn_d, None)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # precomputed_knn disables transform(); not used here
        reducer = umap.UMAP(
            n_components=cfg.n_components,
            n_neighbors=n_neighbors,
            min_dist=cfg.min_dist,
            n_epochs=cfg.n_epochs,
            metric="euclidean",  # on unit vectors: the same neighbours as cosine
            random_state=cfg.random_state,
            n_jobs=1,
            **kwargs,
        )
        coords = reducer.fit_transform(x)
    return np.asarray(coords, dtype=np.float32)


# --------------------------------------------------------------------------- thumbnails


def image_data_uri(image: np.ndarray | str | Path, size: int = 48, fmt: str = "png") -> str:
    """A small image as a `data:` URI, for hovers and galleries (works offline).

    fmt: "png" (lossless) or "jpeg" (quality 80, about a third of the bytes: used for
    the thousand hover thumbnails of an atlas).
    """
    import io

    from PIL import Image

    from workbench.media import load_image

    if fmt not in ("png", "jpeg"):
        raise ConfigError(f"image_data_uri: fmt={fmt!r}; expected png or jpeg")
    arr = load_image(image, size=size) if isinstance(image, str | Path) else image
    img = Image.fromarray(arr)
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format=fmt.upper(), **({"quality": 80} if fmt == "jpeg" else {}))
    return f"data:image/{fmt};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def catalog_thumbnails(
    catalog: Any, item_ids: Sequence[str], size: int = 40, fmt: str = "png"
) -> dict[str, str]:
    """item_id -> thumbnail data URI for the given items that have a readable image.

    `catalog` is a `workbench.catalog.Catalog`; items without an image, or whose image
    cannot be decoded, get no entry (they simply show no thumbnail).
    """
    from workbench.errors import MediaError
    from workbench.progress import progress_bar

    wanted = pl.DataFrame({"item_id": [str(i) for i in item_ids]})
    rows = (
        catalog.products.select("item_id", "image")
        .filter(pl.col("image").is_not_null())
        .collect()
        .join(wanted, on="item_id", how="semi")
    )
    out: dict[str, str] = {}
    for item_id, rel in progress_bar(rows.iter_rows(), total=rows.height, desc="thumbnails", leave=False):
        try:
            out[item_id] = image_data_uri(catalog.media_path(rel), size=size, fmt=fmt)
        except MediaError:
            continue
    return out


# --------------------------------------------------------------------------- figures


def embedding_scatter(
    coords: np.ndarray,
    labels: pl.DataFrame,
    color: str = "category",
    hover: Sequence[str] = ("title", "category"),
    thumbnails: Sequence[str | None] | None = None,
    title: str | None = None,
    point_size: int = 4,
) -> go.Figure:
    """Scatter of a 2-D or 3-D projection; one row of `labels` per point.

    `color` is any column of `labels` (category, an attribute, a weight); hover shows
    the `hover` columns. `thumbnails` (data URIs, None where missing) are kept in
    customdata and shown beside the plot by `save_figure_html`.
    """
    if coords.ndim != 2 or coords.shape[1] not in (2, 3):
        raise ConfigError(f"coords: expected (n, 2) or (n, 3), got {coords.shape}")
    if labels.height != coords.shape[0]:
        raise ConfigError(f"labels has {labels.height} rows for {coords.shape[0]} points")
    missing = [c for c in (color, *hover) if c not in labels.columns]
    if missing:
        raise ConfigError(f"labels: no column(s) {missing}; columns are {labels.columns}")
    axes = ["x", "y", "z"][: coords.shape[1]]
    frame = labels.select(list(dict.fromkeys([color, *hover]))).with_columns(
        [pl.Series(a, coords[:, i]) for i, a in enumerate(axes)]
    )
    custom = None
    if thumbnails is not None:
        if len(thumbnails) != coords.shape[0]:
            raise ConfigError(f"{len(thumbnails)} thumbnails for {coords.shape[0]} points")
        frame = frame.with_columns(pl.Series("_thumb", [t or "" for t in thumbnails], pl.Utf8))
        custom = ["_thumb"]
    if frame[color].dtype == pl.Utf8:
        frame = frame.sort(color, maintain_order=True)  # stable legend order run to run
    common = dict(
        color=color,
        hover_data={c: True for c in hover} | {a: False for a in axes},
        custom_data=custom,
        title=title,
        template="plotly_white",
    )
    if coords.shape[1] == 3:
        fig = px.scatter_3d(frame, x="x", y="y", z="z", **common)
    else:
        fig = px.scatter(frame, x="x", y="y", **common)
    fig.update_traces(marker={"size": point_size})
    fig.update_layout(legend={"itemsizing": "constant"}, meta={"thumbnails": custom is not None})
    return fig


# The hover thumbnail: a small image beside the cursor, on its left where plotly's
# hover label is not (on its right near the window's left edge) while a point with a thumbnail is hovered. `lookup` turns
# customdata[0] into a URI: the report keeps each thumbnail once and stores its
# index there (workbench.report); a standalone page stores the URI itself.
THUMBNAIL_HOVER_JS = """
function wbThumbnailHover(gd, lookup) {
  var img = document.createElement('img');
  img.id = gd.id + '-thumbnail';
  img.className = 'wb-thumbnail';
  img.alt = '';
  img.style.cssText = 'position:fixed;width:96px;height:96px;image-rendering:pixelated;' +
    'border:1px solid #999;background:#fff;display:none;z-index:10;pointer-events:none;' +
    'box-shadow:0 2px 6px rgba(0,0,0,.25)';
  document.body.appendChild(img);
  function place(x, y) {
    // Left of the cursor: plotly puts its hover label on the right.
    var gap = 18, w = 98, h = 98;
    var left = x - gap - w, top = y - h / 2;
    if (left < 0) left = x + gap;
    if (top + h > window.innerHeight) top = window.innerHeight - h;
    img.style.left = Math.max(0, left) + 'px';
    img.style.top = Math.max(0, top) + 'px';
  }
  gd.addEventListener('mousemove', function (e) {
    if (img.style.display === 'block') place(e.clientX, e.clientY);
  });
  gd.on('plotly_hover', function (ev) {
    var cd = ev.points[0].customdata;
    var src = Array.isArray(cd) ? cd[0] : cd;
    if (lookup && typeof src === 'number') src = lookup[src];
    if (!src) return;
    img.src = src;
    img.style.display = 'block';
    var e = ev.event;
    if (e && e.clientX !== undefined) {
      place(e.clientX, e.clientY);
    } else {
      var r = gd.getBoundingClientRect();
      place(r.right - 120, r.top + 8);
    }
  });
  gd.on('plotly_unhover', function () { img.style.display = 'none'; });
}
"""
_THUMB_JS = THUMBNAIL_HOVER_JS + "wbThumbnailHover(document.getElementById('{plot_id}'));\n"


def _has_thumbnails(fig: go.Figure) -> bool:
    meta = fig.layout.meta
    return isinstance(meta, dict) and bool(meta.get("thumbnails"))


def save_figure_html(fig: go.Figure, path: str | Path, div_id: str) -> Path:
    """Self-contained HTML (plotly.js inlined, fixed div id), written atomically."""
    html = fig.to_html(
        include_plotlyjs=True,
        full_html=True,
        div_id=div_id,
        post_script=_THUMB_JS if _has_thumbnails(fig) else None,
    )
    return write_text_atomic(path, html)


def save_figures_html(figures: Mapping[str, go.Figure], path: str | Path, title: str) -> Path:
    """Several figures on one self-contained page (plotly.js inlined once), keyed by div id."""
    if not figures:
        raise ConfigError("save_figures_html: no figures")
    parts = []
    for i, (div_id, fig) in enumerate(figures.items()):
        parts.append(
            fig.to_html(
                include_plotlyjs=i == 0,
                full_html=False,
                div_id=div_id,
                post_script=_THUMB_JS if _has_thumbnails(fig) else None,
            )
        )
    from html import escape

    page = (
        '<!DOCTYPE html>\n<html>\n<head><meta charset="utf-8" /><title>'
        + escape(title)
        + "</title></head>\n<body>\n"
        + "\n".join(parts)
        + "\n</body>\n</html>\n"
    )
    return write_text_atomic(path, page)


def gallery_figure(
    images: Sequence[str | None],
    captions: Sequence[str],
    title: str | None = None,
    cols: int = 5,
    size: int = 120,
) -> go.Figure:
    """A grid of thumbnails (data URIs; None draws an empty tile) with captions."""
    from plotly.subplots import make_subplots

    if len(images) != len(captions):
        raise ConfigError(f"{len(images)} images for {len(captions)} captions")
    n = max(len(images), 1)
    cols = min(cols, n)
    rows = -(-n // cols)
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=list(captions),
        horizontal_spacing=0.02,
        vertical_spacing=0.12,
    )
    for i, src in enumerate(images):
        if src:
            fig.add_trace(go.Image(source=src), row=i // cols + 1, col=i % cols + 1)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_annotations(font_size=10)
    fig.update_layout(
        title=title,
        width=cols * (size + 30),
        height=rows * (size + 60) + 60,
        margin={"l": 10, "r": 10, "t": 60, "b": 10},
        template="plotly_white",
    )
    return fig


def sweep_figure(
    rows: Sequence[Mapping[str, Any]],
    exact_qps: float,
    chosen: Mapping[str, Any] | None = None,
    k: int = 10,
    recall_target: float | None = 0.95,
) -> go.Figure:
    """Recall@k against queries/s: one line per re-order size, exact search marked."""
    key = f"recall@{k}"
    frame = pl.DataFrame([dict(r) for r in rows]).sort("reorder", "leaves_to_search")
    frame = frame.with_columns(pl.format("reorder {}", pl.col("reorder")).alias("setting"))
    fig = px.line(
        frame,
        x="qps",
        y=key,
        color="setting",
        markers=True,
        log_x=True,
        hover_data=["leaves_to_search", "reorder", "build_s"],
        template="plotly_white",
        labels={"qps": "queries / s (log)", key: key},
        title=f"ScaNN settings: {key} against throughput",
    )
    fig.add_trace(
        go.Scatter(
            x=[exact_qps],
            y=[1.0],
            mode="markers+text",
            name="exact search",
            marker={"symbol": "x", "size": 12, "color": "black"},
            text=["exact"],
            textposition="bottom center",
        )
    )
    if chosen is not None:
        fig.add_trace(
            go.Scatter(
                x=[chosen["qps"]],
                y=[chosen[key]],
                mode="markers",
                name="chosen",
                marker={"symbol": "circle-open", "size": 18, "color": "red", "line": {"width": 2}},
            )
        )
    if recall_target is not None:
        fig.add_hline(y=recall_target, line_dash="dot", annotation_text=f"target {recall_target}")
    return fig


def probe_figure(quality: pl.DataFrame) -> go.Figure:
    """Grouped bars of the `probe_<attribute>` columns of `neighbourhood_quality`."""
    probes = [c for c in quality.columns if c.startswith("probe_")]
    if not probes:
        raise ConfigError(f"quality table has no probe_ columns: {quality.columns}")
    long = quality.unpivot(
        index="space", on=probes, variable_name="attribute", value_name="accuracy"
    ).with_columns(pl.col("attribute").str.strip_prefix("probe_"))
    return px.bar(
        long,
        x="attribute",
        y="accuracy",
        color="space",
        barmode="group",
        title="Linear-probe accuracy per attribute and space",
        template="plotly_white",
        range_y=[0, 1],
    )


# --------------------------------------------------------------------------- gap and quality


def modality_gap(
    frames: pl.DataFrame | Mapping[str, pl.DataFrame], modalities: Sequence[str] = MODALITIES
) -> pl.DataFrame:
    """Distance between the centroids of each pair of modality clouds.

    `frames` is an embeddings frame (item_id + one list column per modality) or a
    mapping stage -> frame (e.g. {"before alignment": …, "after alignment": …}).
    Vectors are L2-normalised first; the gap is the Euclidean distance between the
    two clouds' mean vectors (0: same place; up to 2: opposite).
    """
    stages = {"embeddings": frames} if isinstance(frames, pl.DataFrame) else dict(frames)
    rows = []
    for stage, frame in stages.items():
        centroids = {}
        for m in modalities:
            if m not in frame.columns:
                continue
            col = frame[m].drop_nulls()
            if len(col) == 0:
                continue
            centroids[m] = (_unit(np.asarray(col.to_list(), np.float32), m).mean(0), len(col))
        for a, b in combinations([m for m in modalities if m in centroids], 2):
            gap = float(np.linalg.norm(centroids[a][0] - centroids[b][0]))
            rows.append(
                {
                    "stage": stage,
                    "pair": f"{a}-{b}",
                    "gap": round(gap, 4),
                    "n_a": centroids[a][1],
                    "n_b": centroids[b][1],
                }
            )
    if not rows:
        raise ConfigError(f"modality gap: need two of {list(modalities)} with vectors")
    return pl.DataFrame(rows)


def _probe_accuracy(x: np.ndarray, y: np.ndarray, seed: int, train_fraction: float) -> float:
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    cut = int(round(train_fraction * len(y)))
    tr, te = order[:cut], order[cut:]
    if len(te) == 0 or len(np.unique(y[tr])) < 2:
        return float("nan")
    # one BLAS thread: these problems are tiny, and on a shared machine BLAS threads
    # spinning for cores made each fit ~50x slower
    with threadpool_limits(1):
        clf = LogisticRegression(max_iter=300, random_state=seed)
        clf.fit(x[tr], y[tr])
        return float((clf.predict(x[te]) == y[te]).mean())


def neighbourhood_quality(
    spaces: Mapping[str, tuple[Sequence[str], np.ndarray]],
    labels: pl.DataFrame,
    coords: Mapping[str, np.ndarray] | None = None,
    k: int = 10,
    attributes: Sequence[str] = PROBE_ATTRIBUTES,
    max_items: int = 3000,
    train_fraction: float = 0.7,
    seed: int = 0,
) -> pl.DataFrame:
    """One comparison table, a row per space.

    spaces: name -> (item_ids, vectors). labels: item_id, category and the attributes
    (the synthetic truth). coords: name -> 2-D layout of the same items, for
    trustworthiness. Columns: space, n_items, `purity@k` (share of an item's k
    nearest neighbours in its category), `trustworthiness@k` (sklearn, on at most
    `max_items` seeded items: it is quadratic), `probe_<attribute>` (accuracy of a
    seeded logistic regression on a seeded train/test split, at most `max_items`).
    """
    from sklearn.manifold import trustworthiness
    from threadpoolctl import threadpool_limits

    if "item_id" not in labels.columns or "category" not in labels.columns:
        raise ConfigError(f"labels: expected item_id and category columns; got {labels.columns}")
    attrs = [a for a in attributes if a in labels.columns]
    table = []
    for name, (ids, vectors) in spaces.items():
        x = _unit(vectors, f"space {name!r}")
        lab = pl.DataFrame({"item_id": [str(i) for i in ids]}).join(
            labels.with_columns(pl.col("item_id").cast(pl.Utf8)),
            on="item_id",
            how="left",
            maintain_order="left",
        )
        if lab["category"].null_count():
            raise ConfigError(f"space {name!r}: {lab['category'].null_count()} items lack labels")
        cats = lab["category"].to_numpy()
        nn, _ = knn_cosine(x, min(k, len(x) - 1))
        row: dict[str, Any] = {
            "space": name,
            "n_items": len(x),
            f"purity@{k}": round(float((cats[nn] == cats[:, None]).mean()), 4),
        }
        rng = np.random.default_rng(seed)
        sample = np.sort(rng.permutation(len(x))[:max_items])
        if coords is not None and name in coords:
            c = np.asarray(coords[name])
            if c.shape[0] != len(x):
                raise ConfigError(f"coords[{name!r}]: {c.shape[0]} points for {len(x)} items")
            nk = min(k, (len(sample) - 1) // 2)  # sklearn requires k < n/2
            with threadpool_limits(1):
                tw = trustworthiness(x[sample], c[sample], n_neighbors=nk, metric="cosine")
            row[f"trustworthiness@{k}"] = round(float(tw), 4)
        for a in attrs:
            y = lab[a].cast(pl.Utf8).to_numpy()[sample]
            row[f"probe_{a}"] = round(_probe_accuracy(x[sample], y, seed, train_fraction), 4)
        table.append(row)
    return pl.DataFrame(table)


def carrier_claims(
    quality: pl.DataFrame, carriers: Mapping[str, Sequence[str]], margin: float = 0.1
) -> pl.DataFrame:
    """Is each attribute read best from the modality that carries it, by at least `margin`?

    quality: the table of :func:`neighbourhood_quality` (a row per space, `probe_<a>`
    columns). carriers: attribute -> the modalities that carry it (e.g. the synthetic
    catalog's ``attribute_modalities()``). Only single-modality spaces compete (the
    fused space carries everything). One row per attribute probed: its carriers' best
    accuracy, the best other modality's, and the claim as a boolean. A claim with a
    wide margin holds on any machine; one decided by float drift would not, which is
    why notebooks check these booleans and not the accuracies.
    """
    rows = []
    singles = {r["space"]: r for r in quality.iter_rows(named=True) if r["space"] in ("text", "image", "audio")}
    for attribute, carried_by in carriers.items():
        column = f"probe_{attribute}"
        if column not in quality.columns:
            continue
        inside = [singles[m][column] for m in carried_by if m in singles and singles[m][column] is not None]
        outside = [r[column] for m, r in singles.items() if m not in carried_by and r[column] is not None]
        if not inside or not outside:
            continue
        best_in, best_out = max(inside), max(outside)
        rows.append({
            "attribute": attribute,
            "carried_by": "+".join(carried_by),
            "carrier_accuracy": best_in,
            "best_other_accuracy": best_out,
            "read_best_by_carrier": bool(best_in >= best_out + margin),
        })
    return pl.DataFrame(rows, schema={"attribute": pl.Utf8, "carried_by": pl.Utf8,
                                      "carrier_accuracy": pl.Float64, "best_other_accuracy": pl.Float64,
                                      "read_best_by_carrier": pl.Boolean})
