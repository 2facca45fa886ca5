"""HTML blocks of the report page: nested metrics as tables, intervals, the search selection, validation."""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from typing import Any

__all__ = ["interval_table", "render_value", "selection_html", "validation_html"]


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
