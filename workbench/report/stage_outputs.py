"""What the earlier notebooks left in the run folder: each ``<stem>/metrics.json`` and saved HTML figure."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from workbench.errors import EvaluationError
from workbench.paths import SERIES

__all__ = ["collect_stage_outputs", "extract_plotly_figures"]

# A full-profile atlas (7 maps of 20k items with thumbnails) is ~200 MB; the report keeps a
# sample of its points. Refuse absurd files.
_MAX_FIGURE_BYTES = 400_000_000


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
    source_dir: str | Path | None, stems: Sequence[str] = SERIES[:-1]
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
