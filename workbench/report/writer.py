"""``write_report``: the run folder's metrics.json, timings.json, environment.json and index.html."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from workbench.errors import EvaluationError
from workbench.files import write_text_atomic
from workbench.paths import SERIES
from workbench.report.deterministic_json import to_jsonable, write_json
from workbench.report.html_blocks import render_value, selection_html, validation_html
from workbench.report.page_figures import (
    _drop_title,
    _figure_block,
    _pack,
    _plain_title,
    _plotlyjs_packed,
    _rename_div,
    _script_json,
    _share_thumbnails,
    _spec_from_figure,
    _spec_from_fragment,
    figure_title,
    thin_scatter,
)
from workbench.report.provenance import data_fingerprint
from workbench.report.stage_outputs import collect_stage_outputs
from workbench.report.summary import summary_html, summary_lines
from workbench.reproducibility import environment, split_timings

__all__ = ["write_report"]

SECTION_TITLES = {
    "01_catalog": "Catalog profile (01)",
    "02_encoders": "Encoders (02)",
    "03_fusion": "Search system and fusion ablation (03)",
    "04_embedding_space": "Embedding atlas (04)",
    "05_rankers": "Ranker comparison (05)",
    "06_scann_index": "ANN sweep (06)",
}

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



def _scrolling_tables(content: str) -> str:
    """Each table in its own horizontally scrolling box, so wide tables never run off the page."""
    content = re.sub(r"<table\b", '<div class="table-scroll"><table', content)
    return content.replace("</table>", "</table></div>")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


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
            built = _spec_from_figure(fig)
            parts.append(figure(div_id, _plain_title(built["layout"]) or fig_title, built))
        section("Figures", "\n".join(parts))
    section(
        "Results (every number, as in metrics.json)", render_value(to_jsonable(results, digits))
    )
    for stem in SERIES[:-1]:
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

