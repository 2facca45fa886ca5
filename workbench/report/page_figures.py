"""Figures inside the report page, kept small.

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
import functools
import gzip
import html
import json
import re
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "MAX_SCATTER_POINTS",
    "PACK_ABOVE",
    "figure_title",
    "report_figure_specs",
    "report_thumbnails",
    "thin_scatter",
]

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


def _rename_div(fragment: str, old: str, new: str) -> str:
    """Give a pulled-in figure a unique id (plotly quotes it both ways; post scripts add suffixes)."""
    if old == new:
        return fragment
    # One pass, so the new id (which starts with the old one) is not renamed again.
    pattern = r"""(["'])""" + re.escape(old) + r"""(?=["'-])"""
    return re.sub(pattern, lambda m: m.group(1) + new, fragment)


def _plotlyjs() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


@functools.lru_cache(maxsize=2)
def _plotlyjs_packed(source: str | None = None) -> str:
    """plotly.js gzip-compressed and base64-encoded (about 2 MB instead of 4.8)."""
    return _pack(source if source is not None else _plotlyjs())



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

