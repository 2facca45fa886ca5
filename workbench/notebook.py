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

_SKIPPED = "pass  # skipped: workbench.notebook.stop_here() was called earlier in this notebook\n"


def _skip_cell(lines: list[str]) -> list[str]:
    return [_SKIPPED]


def stop_here(reason: str) -> None:
    """Print `reason` and skip every later cell of this notebook (exit 0 outside IPython)."""
    print(f"stopping here: {reason}")
    try:
        from IPython import get_ipython
    except ImportError:  # plain Python without IPython installed
        get_ipython = None
    shell = get_ipython() if get_ipython is not None else None
    if shell is None:
        sys.exit(0)
    if _skip_cell not in shell.input_transformers_post:
        shell.input_transformers_post.append(_skip_cell)
