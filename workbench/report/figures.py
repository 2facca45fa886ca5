"""The standard plotly figures of a two-stage run, for ``write_report(figures=...)``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["figures_from_results", "modality_figure"]


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
