"""The run report: ``reports/<run>/index.html`` (self-contained) and ``metrics.json``.

``write_report`` writes, atomically, into the run folder:

* ``metrics.json``: every number of the run (the two-stage results passed in,
  plus each earlier notebook's ``<stem>/metrics.json`` found in ``source_dir``),
  the run config and the data fingerprint (the catalog manifest's table
  checksums and counts). Keys sorted, floats rounded to ``digits`` significant
  decimals, NaN written as null, so two runs with the same seed on the same
  CPU give byte-identical files.
* ``timings.json``: latencies and wall times, which vary run to run and so are
  kept out of ``metrics.json``.
* ``environment.json``: CPU model and ISA flags, the pinned kernel and thread
  settings, threads, device and package versions
  (:func:`workbench.reproducibility.environment`);
* ``per_query.parquet`` (when ``per_query`` is given): every query's metrics per
  task and stage, for paired tests between runs (``workbench compare``).
* ``index.html``: one file that works offline: plotly.js inlined once, every
  figure inlined (figures built here, and the figures the earlier notebooks
  saved as HTML under ``<source_dir>/<stem>/*.html``, re-embedded without
  their own copy of plotly.js), no external URLs, no web fonts (system font
  stack only). When the run validated its catalog (``<source_dir>/validation.json``,
  written by ``workbench run``), the page opens with that outcome, and says
  plainly when problems were overridden with ``--allow-problems``. Then the
  summary (:mod:`workbench.report_summary`): the chosen search system against
  the best single modality and BM25, rankers against popularity, whether
  re-ranking helps, the index's recall and speed, what the catalog lacked.

What keeps the page small (a ci run: 13.5 MB before, about 3 MB now):

* plotly.js (4.8 MB) is stored gzip-compressed and base64-encoded (2 MB); the
  page decompresses it with the browser's own ``DecompressionStream('gzip')``
  and then draws the figures. Figures are JSON specs
  (``<script type="application/json" class="wb-figure">``), gzip-packed the
  same way when large;
* the atlas's hover thumbnails were repeated in every atlas figure (7 copies
  of about 1 MB): the page keeps each distinct thumbnail once (packed) and the
  figures hold its index;
* scatter figures with more than ``MAX_SCATTER_POINTS`` points keep a sample
  of that many (the same items in every map, so their thumbnails stay one
  set), and the figure says so.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import gzip
import hashlib
import html
import json
import math
import re
import zlib
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np

from workbench.errors import EvaluationError
from workbench.files import write_text_atomic
from workbench.report_summary import summary_html, summary_lines
from workbench.reproducibility import environment, split_timings

NOTEBOOK_STEMS = (
    "01_catalog",
    "02_encoders",
    "03_fusion",
    "04_embedding_space",
    "05_rankers",
    "06_scann_index",
    "07_evaluation_report",
)
SECTION_TITLES = {
    "01_catalog": "Catalog profile (01)",
    "02_encoders": "Encoders (02)",
    "03_fusion": "Search system and fusion ablation (03)",
    "04_embedding_space": "Embedding atlas (04)",
    "05_rankers": "Ranker comparison (05)",
    "06_scann_index": "ANN sweep (06)",
}
# A full-profile atlas (7 maps of 20k items with thumbnails) is ~200 MB; the report keeps a
# sample of its points. Refuse absurd files.
_MAX_FIGURE_BYTES = 400_000_000
MAX_SCATTER_POINTS = 4_000  # per figure in the report; larger scatters keep a sample of this size
PACK_ABOVE = 16_000  # a figure spec longer than this (characters of JSON) is stored gzip-packed
# Titles for the figures notebooks save, when the figure has no title of its own.
FIGURE_FILE_TITLES = {
    "atlas.html": "Embedding atlas",
    "probes.html": "Linear probes: what each space encodes",
    "sweep.html": "ANN sweep: recall against speed",
    "learning_curves.html": "Ranker learning curves",
    "ablation.html": "Fusion ablation",
}

__all__ = [
    "MAX_SCATTER_POINTS",
    "NOTEBOOK_STEMS",
    "collect_stage_outputs",
    "data_fingerprint",
    "environment",
    "extract_plotly_figures",
    "figure_title",
    "report_figure_specs",
    "report_thumbnails",
    "figures_from_results",
    "modality_figure",
    "render_value",
    "split_timings",
    "interval_table",
    "summary_html",
    "summary_lines",
    "thin_scatter",
    "to_jsonable",
    "write_json",
    "write_report",
]


# --------------------------------------------------------------------------- JSON


def _round(x: float, digits: int) -> float | None:
    if math.isnan(x) or math.isinf(x):
        return None
    r = round(x, digits)
    return 0.0 if r == 0 else r  # no "-0.0": it differs in bytes between runs


def to_jsonable(obj: Any, digits: int = 6) -> Any:
    """Plain JSON values: numpy scalars/arrays, dataclasses, paths, dates; floats rounded."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj), digits)
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v, digits) for k, v in obj.items()}
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return _round(float(obj), digits)
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist(), digits)
    if isinstance(obj, list | tuple | set | frozenset):
        items = sorted(obj, key=str) if isinstance(obj, set | frozenset) else obj
        return [to_jsonable(v, digits) for v in items]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, datetime | date):
        return obj.isoformat()
    if obj is None or isinstance(obj, str):
        return obj
    raise EvaluationError(
        f"cannot write {type(obj).__name__} to JSON: expected numbers, text, lists, dicts"
    )


def write_json(path: str | Path, obj: Any, digits: int = 6) -> Path:
    """Deterministic JSON: sorted keys, rounded floats, 2-space indent, final newline."""
    text = json.dumps(to_jsonable(obj, digits), sort_keys=True, indent=2, allow_nan=False)
    return write_text_atomic(path, text + "\n")


# --------------------------------------------------------------------------- provenance


def data_fingerprint(catalog_dir: str | Path | None) -> dict[str, Any]:
    """The catalog's identity: name, schema version, counts and each table's sha256 (from its manifest).

    Volatile manifest fields (creation time) are left out so that the same data
    gives the same fingerprint.
    """
    if catalog_dir is None:
        return {}
    path = Path(catalog_dir) / "manifest.json"
    if not path.is_file():
        raise EvaluationError(f"{path}: catalog manifest not found; expected a catalog folder")
    manifest = json.loads(path.read_text())
    keep = {}
    for key in (
        "name",
        "schema_version",
        "source",
        "licence",
        "counts",
        "tables",
        "sha256",
        "seed",
    ):
        if key in manifest:
            keep[key] = manifest[key]
    tables = manifest.get("tables")
    if isinstance(tables, Mapping):
        keep["tables"] = {
            name: {k: v for k, v in info.items() if k in ("sha256", "rows", "bytes")}
            if isinstance(info, Mapping)
            else info
            for name, info in tables.items()
        }
    digest = hashlib.sha256(json.dumps(to_jsonable(keep), sort_keys=True).encode()).hexdigest()
    keep["fingerprint"] = digest
    return keep


# --------------------------------------------------------------------------- earlier notebooks


def extract_plotly_figures(page: str) -> list[tuple[str, str]]:
    """``(div_id, fragment)`` of each plotly figure in an HTML page, without plotly.js itself.

    A fragment is the figure's ``<div class="plotly-graph-div">`` and the
    ``<script>`` calling ``Plotly.newPlot``: what ``fig.to_html(full_html=False,
    include_plotlyjs=False)`` gives. A plain string scan, not a regex, so multi-MB
    atlas pages stay fast.
    """
    out = []
    marker = 'class="plotly-graph-div"'
    pos = 0
    while (hit := page.find(marker, pos)) >= 0:
        start = page.rfind("<div", 0, hit)
        head = page[start:hit]
        m = re.search(r'id="([^"]+)"', head)
        s_open = page.find("<script", hit)
        s_close = page.find("</script>", s_open)
        if start < 0 or m is None or s_open < 0 or s_close < 0:
            break
        end = s_close + len("</script>")
        fragment = page[start:end]
        if "Plotly.newPlot" in fragment:
            out.append((m.group(1), fragment))
        pos = end
    return out


def collect_stage_outputs(
    source_dir: str | Path | None, stems: Sequence[str] = NOTEBOOK_STEMS[:-1]
) -> dict[str, dict[str, Any]]:
    """Each earlier notebook's metrics.json and saved HTML figures, when present."""
    found: dict[str, dict[str, Any]] = {}
    if source_dir is None:
        return found
    root = Path(source_dir)
    for stem in stems:
        folder = root / stem
        if not folder.is_dir():
            continue
        entry: dict[str, Any] = {"metrics": None, "figures": []}
        mpath = folder / "metrics.json"
        if mpath.is_file():
            try:
                entry["metrics"] = json.loads(mpath.read_text())
            except json.JSONDecodeError as exc:
                raise EvaluationError(
                    f"{mpath}: not valid JSON ({exc}); re-run notebook {stem}"
                ) from exc
        for fig_path in sorted(folder.glob("*.html")):
            if fig_path.stat().st_size > _MAX_FIGURE_BYTES:
                continue
            for div_id, fragment in extract_plotly_figures(fig_path.read_text(encoding="utf-8")):
                entry["figures"].append({"file": fig_path.name, "div_id": div_id, "html": fragment})
        found[stem] = entry
    return found


# --------------------------------------------------------------------------- HTML


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       margin: 0 auto; max-width: 1200px; padding: 1.5rem; color: #1d2433; line-height: 1.45; }
h1 { margin-bottom: 0.2rem; } h2 { border-bottom: 2px solid #dde3ee; padding-bottom: 0.2rem; margin-top: 2.2rem; }
h3 { margin-top: 1.4rem; }
table { border-collapse: collapse; margin: 0.6rem 0 1rem; font-size: 0.9rem; }
th, td { border: 1px solid #dde3ee; padding: 0.25rem 0.55rem; text-align: right; vertical-align: top; }
th:first-child, td:first-child { text-align: left; }
th { background: #f2f5fa; }
.muted { color: #66708a; font-size: 0.9rem; }
.summary { background: #f2f7f2; border-left: 4px solid #3c9a5f; padding: 0.5rem 0.8rem; }
.warning { background: #fdf3e7; border-left: 4px solid #d9822b; padding: 0.5rem 0.8rem; }
nav a { margin-right: 0.8rem; }
pre { background: #f6f8fa; padding: 0.6rem; overflow-x: auto; font-size: 0.8rem; }
.figure { margin: 0.8rem 0 1.4rem; }
.table-scroll { overflow-x: auto; max-width: 100%; margin: 0.6rem 0 1rem; }
.table-scroll > table { margin: 0; }
dl.summary-list { background: #f2f7f2; border-left: 4px solid #3c9a5f; padding: 0.5rem 0.9rem; margin: 0.6rem 0; }
dl.summary-list dt { font-weight: 600; margin-top: 0.45rem; }
dl.summary-list dd { margin: 0.1rem 0 0 1rem; }
"""


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1e5 else f"{v:.4g}"
    if v is None:
        return "–"
    return html.escape(str(v))


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, str | int | float | bool)


def render_value(obj: Any, depth: int = 0) -> str:
    """A readable HTML rendering of nested metrics: tables where the shape allows."""
    if _is_scalar(obj):
        return f"<p>{_fmt(obj)}</p>"
    if isinstance(obj, list):
        if obj and all(
            isinstance(r, Mapping) and all(_is_scalar(v) for v in r.values()) for r in obj
        ):
            cols = list(dict.fromkeys(k for r in obj for k in r))
            head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
            body = "".join(
                "<tr>" + "".join(f"<td>{_fmt(r.get(c))}</td>" for c in cols) + "</tr>" for r in obj
            )
            return f"<table><tr>{head}</tr>{body}</table>"
        if all(_is_scalar(v) for v in obj):
            return f"<p>{', '.join(_fmt(v) for v in obj)}</p>"
        return f"<pre>{html.escape(json.dumps(obj, indent=1, sort_keys=True)[:20000])}</pre>"
    if isinstance(obj, Mapping):
        scalars = {k: v for k, v in obj.items() if _is_scalar(v)}
        tables = {
            k: v
            for k, v in obj.items()
            if isinstance(v, Mapping) and v and all(_is_scalar(x) for x in v.values())
        }
        rest = {k: v for k, v in obj.items() if k not in scalars and k not in tables}
        parts = []
        if scalars:
            rows = "".join(
                f"<tr><td>{html.escape(str(k))}</td><td>{_fmt(v)}</td></tr>"
                for k, v in sorted(scalars.items())
            )
            parts.append(f"<table>{rows}</table>")
        if tables:
            cols = sorted({c for v in tables.values() for c in v})
            head = "<th></th>" + "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
            body = "".join(
                f"<tr><td>{html.escape(str(k))}</td>"
                + "".join(f"<td>{_fmt(v.get(c))}</td>" for c in cols)
                + "</tr>"
                for k, v in sorted(tables.items())
            )
            parts.append(f"<table><tr>{head}</tr>{body}</table>")
        for k, v in sorted(rest.items()):
            level = min(4 + depth, 6)
            parts.append(f"<h{level}>{html.escape(str(k))}</h{level}>{render_value(v, depth + 1)}")
        return "\n".join(parts)
    return f"<pre>{html.escape(str(obj))}</pre>"


def interval_table(
    intervals: Mapping[str, Mapping[str, Mapping[str, float]]], digits: int = 4
) -> str:
    """Stages as columns, metrics as rows, cells "mean [low, high]"."""
    stages = list(intervals)
    metrics = sorted({m for s in stages for m in intervals[s]})
    head = "<th>metric</th>" + "".join(f"<th>{html.escape(s)}</th>" for s in stages)
    rows = []
    for m in metrics:
        cells = []
        for s in stages:
            ci = intervals[s].get(m)
            cells.append(
                "<td>–</td>"
                if ci is None
                else f"<td>{ci['mean']:.{digits}f} <span class='muted'>[{ci['low']:.{digits}f}, "
                f"{ci['high']:.{digits}f}]</span></td>"
            )
        rows.append(f"<tr><td>{html.escape(m)}</td>{''.join(cells)}</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _rename_div(fragment: str, old: str, new: str) -> str:
    """Give a pulled-in figure a unique id (plotly quotes it both ways; post scripts add suffixes)."""
    if old == new:
        return fragment
    # One pass, so the new id (which starts with the old one) is not renamed again.
    pattern = r"""(["'])""" + re.escape(old) + r"""(?=["'-])"""
    return re.sub(pattern, lambda m: m.group(1) + new, fragment)


def _scrolling_tables(content: str) -> str:
    """Each table in its own horizontally scrolling box, so wide tables never run off the page."""
    content = re.sub(r"<table\b", '<div class="table-scroll"><table', content)
    return content.replace("</table>", "</table></div>")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def _plotlyjs() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


@functools.lru_cache(maxsize=2)
def _plotlyjs_packed(source: str | None = None) -> str:
    """plotly.js gzip-compressed and base64-encoded (about 2 MB instead of 4.8)."""
    return _pack(source if source is not None else _plotlyjs())


# --------------------------------------------------------------------------- figures in the page


def _pack(text: str) -> str:
    """gzip (no timestamp, so the same text gives the same bytes) then base64."""
    return base64.b64encode(gzip.compress(text.encode("utf-8"), compresslevel=9, mtime=0)).decode("ascii")


def _unpack(text: str) -> str:
    return gzip.decompress(base64.b64decode(text)).decode("utf-8")


def _script_json(obj: Any) -> str:
    """Compact JSON safe inside ``<script>``: ``<``, ``>`` and ``&`` only ever occur in strings."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _plain_title(layout: Mapping[str, Any]) -> str | None:
    title = layout.get("title") if isinstance(layout, Mapping) else None
    text = title.get("text") if isinstance(title, Mapping) else title
    if not isinstance(text, str):
        return None
    text = re.sub(r"<br\s*/?>", " ", text, flags=re.I)
    text = html.unescape(re.sub(r"<[^>]+>", "", text))
    return " ".join(text.split()) or None


def _drop_title(layout: dict[str, Any]) -> None:
    title = layout.get("title")
    if isinstance(title, dict):
        title.pop("text", None)
    elif isinstance(title, str):
        layout.pop("title")
    margin = layout.setdefault("margin", {})
    if isinstance(margin, dict):
        margin.setdefault("t", 40)


def figure_title(layout: Mapping[str, Any] | None, file: str | None = None) -> str:
    """A figure's title in words: its own plotly title, else the notebook file's, else the file stem humanised."""
    if (own := _plain_title(layout or {})) is not None:
        return own
    if file is None:
        return "Figure"
    if file in FIGURE_FILE_TITLES:
        return FIGURE_FILE_TITLES[file]
    stem = Path(file).stem.replace("_", " ").replace("-", " ").strip()
    return (stem[:1].upper() + stem[1:]) if stem else file


_DECODER = json.JSONDecoder()


def _decode_at(text: str, pos: int) -> tuple[Any, int]:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return _DECODER.raw_decode(text, pos)


def _skip(text: str, pos: int, char: str) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    if not text.startswith(char, pos):
        raise ValueError(f"expected {char!r} at {pos}")
    return pos + 1


def _spec_from_fragment(fragment: str) -> dict[str, Any] | None:
    """``{"data", "layout", "config", "thumbnails"}`` of a ``fig.to_html`` fragment; None when it is not one.

    The only post-script understood is the atlas's hover thumbnail
    (:data:`workbench.viz.THUMBNAIL_HOVER_JS`, old or new): the report draws
    that itself. A figure with any other script is kept as it is.
    """
    call = fragment.find("Plotly.newPlot(")
    if call < 0:
        return None
    try:
        _, pos = _decode_at(fragment, call + len("Plotly.newPlot("))
        data, pos = _decode_at(fragment, _skip(fragment, pos, ","))
        layout, pos = _decode_at(fragment, _skip(fragment, pos, ","))
        config: Any = {}
        rest = fragment[pos:].lstrip()
        if rest.startswith(","):
            config, pos = _decode_at(fragment, _skip(fragment, pos, ","))
    except ValueError:
        return None
    if not isinstance(data, list) or not isinstance(layout, dict) or not isinstance(config, dict):
        return None
    tail = fragment[pos:]
    post = ""
    if (then := tail.find(".then(function(){")) >= 0:
        post = tail[then + len(".then(function(){"): tail.rfind("})")]
    thumbs = "plotly_hover" in post and "-thumbnail" in post
    if post.strip() and not thumbs:
        return None
    meta = layout.get("meta")
    thumbs = thumbs or (isinstance(meta, Mapping) and bool(meta.get("thumbnails")))
    return {"data": data, "layout": layout, "config": config, "thumbnails": thumbs}


def _spec_from_figure(fig: Any) -> dict[str, Any]:
    import plotly.io as pio

    doc = json.loads(pio.to_json(fig, validate=False))
    meta = (doc.get("layout") or {}).get("meta")
    return {
        "data": doc.get("data", []),
        "layout": doc.get("layout", {}),
        "config": {"displaylogo": False, "responsive": True},
        "thumbnails": isinstance(meta, Mapping) and bool(meta.get("thumbnails")),
    }


_BDATA_DTYPES = {"u1c": "u1"}  # plotly's Uint8ClampedArray


def _array(value: Any) -> np.ndarray | None:
    """A plotly data array (list, or ``{"dtype", "bdata", "shape"}``) as numpy; None when it is not one."""
    if isinstance(value, list):
        return None  # kept as lists: they may mix types
    if isinstance(value, Mapping) and "bdata" in value and "dtype" in value:
        arr = np.frombuffer(base64.b64decode(value["bdata"]),
                            dtype=np.dtype(_BDATA_DTYPES.get(value["dtype"], value["dtype"])))
        shape = value.get("shape")
        if shape:
            dims = [int(d) for d in str(shape).split(",")] if not isinstance(shape, list) else shape
            arr = arr.reshape(dims)
        return arr
    return None


def _length(value: Any) -> int | None:
    if isinstance(value, list):
        return len(value)
    arr = _array(value)
    return None if arr is None else int(arr.shape[0])


def _take(value: Any, idx: np.ndarray) -> Any:
    if isinstance(value, list):
        return [value[i] for i in idx]
    arr = _array(value)
    if arr is None:
        return value
    out = np.ascontiguousarray(arr[idx])
    doc = {"dtype": value["dtype"], "bdata": base64.b64encode(out.tobytes()).decode("ascii")}
    if out.ndim > 1:
        doc["shape"] = ",".join(str(d) for d in out.shape)
    return doc


_POINT_KEYS = ("x", "y", "z", "customdata", "text", "hovertext", "ids", "selectedpoints")
_MARKER_KEYS = ("color", "size", "symbol", "opacity")


def _point_key(trace: Mapping[str, Any], i: int) -> str:
    """What identifies point i across figures: its thumbnail or hover data (the same item in every map)."""
    rows = trace.get("customdata")
    if isinstance(rows, list) and i < len(rows):
        row = rows[i]
        if isinstance(row, list) and row and isinstance(row[0], str) and row[0].startswith("data:image/"):
            return row[0]
        return json.dumps(row, sort_keys=True, default=str)
    return f"{trace.get('name')}\x00{i}"


def thin_scatter(data: list[dict[str, Any]], limit: int = MAX_SCATTER_POINTS) -> tuple[int, int]:
    """Keep ``limit`` points of a scatter figure that has more; returns (shown, total).

    The points kept are those whose identity (:func:`_point_key`) hashes lowest,
    so maps of the same items keep the same sample, and the thumbnails stay one
    set for all of them.
    """
    traces = [t for t in data if isinstance(t, dict) and str(t.get("type", "scatter")).startswith("scatter")]
    sizes = [_length(t.get("x")) or _length(t.get("y")) or 0 for t in traces]
    total = sum(sizes)
    if total <= limit:
        return total, total
    hashes = [np.array([zlib.crc32(_point_key(t, i).encode()) for i in range(n)], dtype=np.int64)
              for t, n in zip(traces, sizes, strict=True)]
    # Ties at the cut (equal keys) may keep a few more than limit.
    cut = np.sort(np.concatenate(hashes))[limit - 1]
    shown = 0
    for trace, n, h in zip(traces, sizes, hashes, strict=True):
        idx = np.flatnonzero(h <= cut)
        shown += idx.size
        for key in _POINT_KEYS:
            if key != "selectedpoints" and _length(trace.get(key)) == n:
                trace[key] = _take(trace[key], idx)
        marker = trace.get("marker")
        if isinstance(marker, dict):
            for key in _MARKER_KEYS:
                if _length(marker.get(key)) == n:
                    marker[key] = _take(marker[key], idx)
        trace.pop("selectedpoints", None)
    return shown, total


def _share_thumbnails(data: list[dict[str, Any]], table: dict[str, int]) -> int:
    """Replace each ``customdata[0]`` image URI by its index in ``table`` (one copy per distinct image)."""
    n = 0
    for trace in data:
        rows = trace.get("customdata") if isinstance(trace, dict) else None
        if not isinstance(rows, list):
            continue
        for row in rows:
            if isinstance(row, list) and row and isinstance(row[0], str) and row[0].startswith("data:image/"):
                row[0] = table.setdefault(row[0], len(table))
                n += 1
    return n


def _defer_fragment(fragment: str) -> str:
    """A figure kept as its own HTML: its script waits until the page has unpacked plotly.js."""
    s_open = fragment.find("<script")
    body_start = fragment.find(">", s_open) + 1
    s_close = fragment.rfind("</script>")
    if s_open < 0 or s_close < body_start:
        return fragment
    return (fragment[:s_open] + "<script>window.wbDeferred.push(function () {"
            + fragment[body_start:s_close] + "\n});</script>" + fragment[s_close + len("</script>"):])


def _figure_block(div_id: str, title: str, spec: dict[str, Any] | None, fragment: str | None,
                  note: str = "", source: str | None = None, level: int = 3) -> str:
    hint = f' title="saved by the notebook as {html.escape(source)}"' if source else ""
    head = f"<h{level}{hint}>{html.escape(title)}</h{level}>"
    note_html = f"<p class='muted'>{html.escape(note)}</p>" if note else ""
    if spec is None:
        return f'<div class="figure">{head}{note_html}{_defer_fragment(fragment or "")}</div>'
    text = _script_json(spec)
    if len(text) > PACK_ABOVE:
        payload, kind = _pack(text), "application/gzip-base64"
    else:
        payload, kind = text, "application/json"
    return (
        f'<div class="figure">{head}{note_html}<div id="{html.escape(div_id)}" class="plotly-graph-div"></div>'
        f'<script type="{kind}" class="wb-figure" data-div="{html.escape(div_id)}">{payload}</script></div>'
    )


def report_figure_specs(page: str) -> list[tuple[str, dict[str, Any]]]:
    """``(div_id, spec)`` of every figure the report draws (unpacked): for tests and tools."""
    out = []
    for m in re.finditer(
        r'<script type="(application/json|application/gzip-base64)" class="wb-figure" '
        r'data-div="([^"]+)">(.*?)</script>', page, flags=re.S
    ):
        kind, div_id, payload = m.groups()
        out.append((html.unescape(div_id), json.loads(payload if kind == "application/json" else _unpack(payload))))
    return out


def report_thumbnails(page: str) -> list[str]:
    """The page's table of distinct hover thumbnails (data URIs), unpacked."""
    m = re.search(r'<script type="application/gzip-base64" id="wb-thumbnails">(.*?)</script>', page, flags=re.S)
    return json.loads(_unpack(m.group(1))) if m else []


_LOADER_JS = """
(function () {
  function say(msg) {
    var p = document.createElement('p');
    p.className = 'warning';
    p.textContent = msg;
    document.body.insertBefore(p, document.body.firstChild);
  }
  if (typeof DecompressionStream === 'undefined') {
    say('This browser cannot unpack the figures (it lacks DecompressionStream: Chrome and Edge 80+, ' +
        'Firefox 113+, Safari 16.4+ have it). The summary and every table are complete.');
    return;
  }
  function unpack(el) {
    var bin = atob(el.textContent.trim());
    var bytes = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream('gzip'));
    return new Response(stream).text();
  }
  function read(el) {
    return el.type === 'application/json' ? Promise.resolve(el.textContent) : unpack(el);
  }
  async function main() {
    var lib = document.createElement('script');
    lib.textContent = await unpack(document.getElementById('wb-plotlyjs'));
    document.head.appendChild(lib);
    var table = document.getElementById('wb-thumbnails');
    var thumbs = table ? JSON.parse(await read(table)) : [];
    var specs = document.querySelectorAll('script.wb-figure');
    for (var i = 0; i < specs.length; i++) {
      var spec = JSON.parse(await read(specs[i]));
      var gd = document.getElementById(specs[i].dataset.div);
      await Plotly.newPlot(gd, spec.data, spec.layout, spec.config);
      if (spec.thumbnails) wbThumbnailHover(gd, thumbs);
    }
    window.wbDeferred.forEach(function (f) { f(); });
    document.body.dataset.figures = 'drawn';
  }
  main().catch(function (err) {
    say('The figures could not be drawn: ' + err);
    throw err;
  });
})();
"""


def write_report(
    report_dir: str | Path,
    *,
    results: Mapping[str, Any],
    config: Mapping[str, Any] | None = None,
    sections: Sequence[tuple[str, str]] = (),
    figures: Mapping[str, Any] | None = None,
    catalog_dir: str | Path | None = None,
    source_dir: str | Path | None = None,
    timings: Mapping[str, Any] | None = None,
    run_name: str | None = None,
    title: str = "Multimodal retrieval: evaluation report",
    digits: int = 6,
    per_query: Any | None = None,
) -> Path:
    """Write metrics.json, timings.json, environment.json and index.html into ``report_dir``.

    ``results``: the run's numbers (e.g. ``{"queries": TwoStageResult.to_dict(), ...}``).
    ``sections``: extra ``(heading, html)`` blocks shown before the figures
    (e.g. :func:`interval_table` output). ``figures``: ``{title: plotly Figure}``.
    ``source_dir``: where the earlier notebooks wrote ``<stem>/metrics.json``
    and their HTML figures (defaults to ``report_dir``'s parent's layout: the
    same folder when the series runs with ``REPORT_DIR=reports/<run>``).
    ``per_query``: a polars frame (``task``, ``query_id``, one column per
    stage and metric) written as ``per_query.parquet``.
    Returns the path of index.html.
    """
    out = Path(report_dir)
    out.mkdir(parents=True, exist_ok=True)
    run_name = run_name or out.name
    stages = collect_stage_outputs(source_dir if source_dir is not None else out)
    # The summary reads the notebooks' own numbers, timings (queries/s) included.
    summary = summary_lines({stem: entry["metrics"] for stem, entry in stages.items()}, results)
    # Timings the earlier notebooks put in their metrics (queries/s, seconds) vary
    # run to run: they move to timings.json so metrics.json stays byte-identical.
    notebook_timings = {}
    for stem, entry in stages.items():
        if entry["metrics"] is not None:
            entry["metrics"], moved = split_timings(entry["metrics"])
            if moved:
                notebook_timings[stem] = moved
    fingerprint = data_fingerprint(catalog_dir)
    env = environment()
    metrics_doc = {
        "run": run_name,
        "config": dict(config or {}),
        "data": fingerprint,
        "results": dict(results),
        "notebooks": {stem: entry["metrics"] for stem, entry in sorted(stages.items())},
    }
    write_json(out / "metrics.json", metrics_doc, digits)
    all_timings = dict(timings or {})
    if notebook_timings:
        all_timings["notebooks"] = notebook_timings
    write_json(out / "timings.json", all_timings, digits)
    write_json(out / "environment.json", env, digits)
    if per_query is not None:
        from workbench.files import write_parquet_atomic

        write_parquet_atomic(out / "per_query.parquet", per_query)
    validation = _read_validation(Path(source_dir) if source_dir is not None else out)

    used_ids: set[str] = set()

    def unique_id(base: str) -> str:
        cand, n = base, 1
        while cand in used_ids:
            n += 1
            cand = f"{base}-{n}"
        used_ids.add(cand)
        return cand

    body: list[str] = []
    nav: list[str] = []

    thumbnails: dict[str, int] = {}  # each distinct hover thumbnail once, by its index

    def section(heading: str, content: str) -> None:
        anchor = unique_id(_slug(heading))
        nav.append(f'<a href="#{anchor}">{html.escape(heading)}</a>')
        body.append(
            f'<section id="{anchor}"><h2>{html.escape(heading)}</h2>\n{_scrolling_tables(content)}\n</section>'
        )

    def figure(div_id: str, title: str, spec: dict[str, Any] | None, fragment: str | None = None,
               source: str | None = None, level: int = 3) -> str:
        note = ""
        if spec is not None:
            _drop_title(spec["layout"])  # the heading above says it, in the page's own type
            shown, total = thin_scatter(spec["data"])
            if shown < total:
                where = f"; {source} holds every point" if source else ""
                note = (f"Showing {shown:,} of {total:,} points (a fixed sample: the same items in "
                        f"every map){where}.")
            if spec.get("thumbnails"):
                _share_thumbnails(spec["data"], thumbnails)
        return _figure_block(div_id, title, spec, fragment, note, source, level)

    if validation is not None:
        section("Catalog validation", validation_html(validation))
    section("Summary", summary_html(summary))
    for heading, content in sections:
        section(heading, content)
    if figures:
        parts = []
        for fig_title, fig in figures.items():
            div_id = unique_id("fig-" + _slug(fig_title))
            spec = _spec_from_figure(fig)
            parts.append(figure(div_id, _plain_title(spec["layout"]) or fig_title, spec))
        section("Figures", "\n".join(parts))
    section(
        "Results (every number, as in metrics.json)", render_value(to_jsonable(results, digits))
    )
    for stem in NOTEBOOK_STEMS[:-1]:
        if stem not in stages:
            continue
        entry = stages[stem]
        parts = []
        metrics = entry["metrics"]
        if isinstance(metrics, Mapping) and isinstance(metrics.get("selection"), Mapping):
            parts.append(selection_html(metrics["selection"]))
        if metrics is not None:
            parts.append(render_value(metrics))
        by_file: dict[str, list[dict[str, Any]]] = {}
        for fig in entry["figures"]:
            by_file.setdefault(fig["file"], []).append(fig)
        for file, figs in by_file.items():
            if len(figs) > 1:
                parts.append(f"<h3 title='saved by the notebook as {html.escape(file)}'>"
                             f"{html.escape(figure_title(None, file))}</h3>")
            for i, fig in enumerate(figs, 1):
                new_id = unique_id(fig["div_id"])
                spec = _spec_from_fragment(fig["html"])
                layout = spec["layout"] if spec is not None else {}
                heading = figure_title(layout, file)
                if len(figs) > 1 and _plain_title(layout) is None:
                    heading = f"{heading} ({i} of {len(figs)})"
                fragment = None if spec is not None else _rename_div(fig["html"], fig["div_id"], new_id)
                parts.append(figure(new_id, heading, spec, fragment, file, 4 if len(figs) > 1 else 3))
        section(
            SECTION_TITLES.get(stem, stem), "\n".join(parts) or "<p class='muted'>no output</p>"
        )
    section("Run configuration", render_value(to_jsonable(config or {}, digits)))
    section(
        "Data fingerprint", render_value(fingerprint) if fingerprint else "<p>no catalog given</p>"
    )
    section("Environment", render_value(env))
    if all_timings:
        section(
            "Timings on this machine (not in metrics.json)",
            "<p class='muted'>These vary run to run and machine to machine.</p>"
            + render_value(to_jsonable(all_timings, 3)),
        )

    from workbench.viz import THUMBNAIL_HOVER_JS  # plotly express: imported only to write a page

    thumbs_html = (
        f'<script type="application/gzip-base64" id="wb-thumbnails">{_pack(_script_json(list(thumbnails)))}</script>\n'
        if thumbnails
        else ""
    )
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}: {html.escape(run_name)}</title>
<style>{_CSS}</style>
<script>window.PlotlyConfig = {{MathJaxConfig: 'local'}}; window.wbDeferred = [];</script>
<script>{THUMBNAIL_HOVER_JS}</script>
</head>
<body>
<h1>{html.escape(title)}</h1>
<p class="muted">run <b>{html.escape(run_name)}</b>; data fingerprint
{html.escape(str(fingerprint.get("fingerprint", "–"))[:16])}; device {html.escape(_device(env))}</p>
<nav>{" ".join(nav)}</nav>
{"".join(body)}
<script type="application/gzip-base64" id="wb-plotlyjs">{_plotlyjs_packed()}</script>
{thumbs_html}<script>{_LOADER_JS}</script>
</body>
</html>
"""
    return write_text_atomic(out / "index.html", page)


def selection_html(selection: Mapping[str, Any]) -> str:
    """Which search system notebook 03 chose on validation and why, and how each candidate did on test."""
    chosen = str(selection.get("chosen"))
    test = selection.get("test") or {}
    kind = (test.get(chosen) or {}).get("kind")
    metric = str(selection.get("metric", "ndcg@10"))
    lead = f"<b>{html.escape(chosen)}</b> was chosen on the validation queries: {html.escape(str(selection.get('reason')))}."
    if kind == "single":
        lead += f" One modality alone, {html.escape(chosen)}, is best on this catalog: no fusion helped."
    parts = [f"<p class='summary'>{lead}</p>"]
    for label, cmp in sorted((selection.get("comparisons") or {}).items()):
        diff, low, high, p = (cmp.get(k) for k in ("diff", "low", "high", "p_value"))
        if None in (diff, low, high, p):
            continue
        verdict = ("better" if low > 0 and p < 0.05 else "worse" if high < 0 and p < 0.05 else "no clear difference")
        parts.append(f"<p>{html.escape(label)} ({html.escape(str(cmp.get('name_a')))}): {diff:+.4f} "
                     f"(95% CI {low:+.4f} to {high:+.4f}, p={p:.3f}): {verdict}</p>")
    head = f"<tr><th>system</th><th>kind</th><th>{html.escape(metric)} (test, 95% CI)</th><th>recall@10</th><th>n</th></tr>"
    body = []
    for name, row in test.items():
        mark = " ◀ chosen" if name == chosen else ""
        body.append(
            f"<tr><td>{html.escape(name)}{mark}</td><td>{html.escape(str(row.get('kind')))}</td>"
            f"<td>{_fmt(row.get(metric))} <span class='muted'>[{_fmt(row.get(metric + '_low'))}, "
            f"{_fmt(row.get(metric + '_high'))}]</span></td><td>{_fmt(row.get('recall@10'))}</td>"
            f"<td>{_fmt(row.get('n'))}</td></tr>"
        )
    parts.append(f"<table>{head}{''.join(body)}</table>")
    return "\n".join(parts)


def _device(env: Mapping[str, Any]) -> str:
    if env.get("cuda"):
        return f"cuda ({env.get('cuda_device', 'GPU')})"
    return f"cpu ({env.get('cpu_model', 'unknown')}, {env.get('torch_threads', '?')} threads)"


def _read_validation(folder: Path) -> dict[str, Any] | None:
    path = folder / "validation.json"  # written by `workbench run` into the run folder
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise EvaluationError(f"{path}: not valid JSON ({exc}); re-run `workbench run`") from exc
    return doc if isinstance(doc, dict) else None


def validation_html(validation: Mapping[str, Any]) -> str:
    """What validating the catalog found, and whether problems were overridden."""
    problems = list(validation.get("problems") or [])
    warnings = list(validation.get("warnings") or [])
    parts = []
    if problems and validation.get("allowed"):
        parts.append(
            f"<p class='warning'><b>This run was made with --allow-problems:</b> the catalog has "
            f"{len(problems)} problem(s), listed below; its numbers describe a catalog that breaks "
            "the contract.</p>"
        )
    elif not problems:
        parts.append("<p class='summary'>The catalog passed validation (every table and media file).</p>")
    for label, items in (("problems", problems), ("warnings", warnings)):
        if items:
            shown = "".join(f"<li>{html.escape(str(x))}</li>" for x in items[:50])
            more = f"<li>… and {len(items) - 50} more</li>" if len(items) > 50 else ""
            parts.append(f"<h4>{len(items)} {label}</h4><ul>{shown}{more}</ul>")
    return "\n".join(parts)


def figures_from_results(
    results: Mapping[str, Any], latency: Mapping[str, Any] | None = None
) -> dict:
    """Standard figures of a two-stage run: metrics with intervals per stage, latency per stage."""
    import plotly.graph_objects as go

    figs: dict[str, Any] = {}
    for task, res in sorted(results.items()):
        if not isinstance(res, Mapping) or "intervals" not in res:
            continue
        fig = go.Figure()
        for stage in ("retrieval", "reranked"):
            cis = res["intervals"].get(stage, {})
            names = [m for m in sorted(cis) if "@" in m]
            if not names:
                continue
            mean = [cis[m]["mean"] for m in names]
            fig.add_bar(
                name=stage,
                x=names,
                y=mean,
                error_y=dict(
                    type="data",
                    symmetric=False,
                    array=[cis[m]["high"] - cis[m]["mean"] for m in names],
                    arrayminus=[cis[m]["mean"] - cis[m]["low"] for m in names],
                ),
            )
        fig.update_layout(
            barmode="group",
            title=f"{task}: retrieval only vs re-ranked (95% bootstrap intervals)",
            yaxis_title="mean over queries",
            height=420,
        )
        figs[f"{task}: metrics per stage"] = fig
    for task, lat in sorted((latency or {}).items()):
        fig = go.Figure()
        stages = [s for s in ("encode", "retrieve", "rerank", "total") if s in lat]
        for p in ("p50_ms", "p95_ms", "p99_ms"):
            fig.add_bar(name=p.removesuffix("_ms"), x=stages, y=[lat[s][p] for s in stages])
        fig.update_layout(
            barmode="group", title=f"{task}: latency per query (ms, this machine)", height=380
        )
        figs[f"{task}: latency"] = fig
    return figs


def modality_figure(
    summary: Mapping[str, Any], title: str = "Which modality wins each query"
) -> Any:
    """Bar chart: queries won by each single modality, and mean nDCG per modality."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("queries won", "mean nDCG"))
    wins = summary.get("wins", {})
    fig.add_bar(x=list(wins), y=list(wins.values()), name="wins", row=1, col=1)
    nd = summary.get("mean_ndcg", {})
    fig.add_bar(x=list(nd), y=list(nd.values()), name="mean nDCG", row=1, col=2)
    fig.update_layout(title=title, showlegend=False, height=380)
    return fig
