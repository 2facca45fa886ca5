"""Helpers for the notebook series that only make sense inside a notebook.

`stop_here(reason)` ends a notebook early and cleanly when the catalog cannot
support the rest of it (a ranker notebook on a catalog without interactions):
it prints the reason once and every later cell of the kernel becomes a no-op,
so papermill, nbval and "Run all" all finish without an error and without
faking results. Outside IPython (the py:percent twin run as a script) it exits
the process with status 0.
"""

from __future__ import annotations

import sys
from pathlib import Path

_SKIPPED = "pass  # skipped: stop_here() was called earlier; restart the kernel to run this notebook again\n"


def _skip_cell(lines: list[str]) -> list[str]:
    return [_SKIPPED]


def stop_here(reason: str, report_dir: str | Path | None = None) -> None:
    """Print `reason` and skip every later cell of this notebook (exit 0 outside IPython).

    Make it the last statement of its cell: the rest of the current cell still runs
    (IPython offers no clean way to abort a cell without reporting an error).

    With `report_dir`, `<report_dir>/metrics.json` becomes `{"skipped": reason}`, so the
    report says why this stage has no numbers instead of silently leaving it out.
    """
    print(f"stopping here: {reason}\n(the remaining cells are skipped; restart the kernel to run them again)")
    if report_dir is not None:
        from workbench.catalog import write_json_atomic

        Path(report_dir).mkdir(parents=True, exist_ok=True)
        write_json_atomic(Path(report_dir) / "metrics.json", {"skipped": reason})
    try:
        from IPython import get_ipython
    except ImportError:  # plain Python without IPython installed
        get_ipython = None
    shell = get_ipython() if get_ipython is not None else None
    if shell is None:
        sys.exit(0)
    if _skip_cell not in shell.input_transformers_post:
        shell.input_transformers_post.append(_skip_cell)


def skipped_stage(report_dir: str | Path) -> str | None:
    """Why an earlier notebook stopped (its `metrics.json` is `{"skipped": reason}`), else None.

    Later notebooks check it so that they stop too, rather than pick up artefacts an
    earlier run left in the work folder.
    """
    import json

    path = Path(report_dir) / "metrics.json"
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return metrics.get("skipped") if isinstance(metrics, dict) else None
