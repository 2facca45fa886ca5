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
"""

from __future__ import annotations

import dataclasses
import hashlib
import html
import json
import math
import re
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
_MAX_FIGURE_BYTES = 25_000_000  # an atlas with thumbnails is a few MB; refuse absurd files

__all__ = [
    "NOTEBOOK_STEMS",
    "collect_stage_outputs",
    "data_fingerprint",
    "environment",
    "extract_plotly_figures",
    "figures_from_results",
    "modality_figure",
    "render_value",
    "split_timings",
    "interval_table",
    "summary_html",
    "summary_lines",
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


def _figure_html(fig: Any, div_id: str) -> str:
    return fig.to_html(
        full_html=False,
        include_plotlyjs=False,
        div_id=div_id,
        config={"displaylogo": False, "responsive": True},
    )


def _rename_div(fragment: str, old: str, new: str) -> str:
    """Give a pulled-in figure a unique id (plotly quotes it both ways; post scripts add suffixes)."""
    if old == new:
        return fragment
    # One pass, so the new id (which starts with the old one) is not renamed again.
    pattern = r"""(["'])""" + re.escape(old) + r"""(?=["'-])"""
    return re.sub(pattern, lambda m: m.group(1) + new, fragment)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def _plotlyjs() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


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

    def section(heading: str, content: str) -> None:
        anchor = unique_id(_slug(heading))
        nav.append(f'<a href="#{anchor}">{html.escape(heading)}</a>')
        body.append(
            f'<section id="{anchor}"><h2>{html.escape(heading)}</h2>\n{content}\n</section>'
        )

    if validation is not None:
        section("Catalog validation", validation_html(validation))
    section("Summary", summary_html(summary))
    for heading, content in sections:
        section(heading, content)
    if figures:
        parts = []
        for fig_title, fig in figures.items():
            div_id = unique_id("fig-" + _slug(fig_title))
            parts.append(
                f'<div class="figure"><h3>{html.escape(fig_title)}</h3>{_figure_html(fig, div_id)}</div>'
            )
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
        for fig in entry["figures"]:
            new_id = unique_id(fig["div_id"])
            fragment = _rename_div(fig["html"], fig["div_id"], new_id)
            parts.append(
                f'<div class="figure"><p class="muted">{html.escape(fig["file"])}</p>{fragment}</div>'
            )
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

    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}: {html.escape(run_name)}</title>
<style>{_CSS}</style>
<script>window.PlotlyConfig = {{MathJaxConfig: 'local'}};</script>
<script>{_plotlyjs()}</script>
</head>
<body>
<h1>{html.escape(title)}</h1>
<p class="muted">run <b>{html.escape(run_name)}</b>; data fingerprint
{html.escape(str(fingerprint.get("fingerprint", "–"))[:16])}; device {html.escape(_device(env))}</p>
<nav>{" ".join(nav)}</nav>
{"".join(body)}
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
