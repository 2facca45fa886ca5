"""Helpers for the notebook series that only make sense inside a notebook.

`stop_here(reason)` ends a notebook early and cleanly when the catalog cannot
support the rest of it (a ranker notebook on a catalog without interactions):
it prints the reason once and every later cell of the kernel becomes a no-op,
so papermill, nbval and "Run all" all finish without an error and without
faking results. Outside IPython (the py:percent twin run as a script) it exits
the process with status 0.

`stage_folder(REPORT_DIR, stem)` is every notebook's report folder: the same
layout whether the notebook runs under `workbench run`, nbval or by hand.

`begin_stage(REPORT_DIR, WORK_DIR, stem, needs=...)` is every notebook's set-up: table
display, that folder, and the stop when an earlier stage wrote nothing for this one.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from workbench.errors import ConfigError

# Set by `workbench run` for its kernels: the run folder they write for.
RUN_DIR_VARIABLE = "WORKBENCH_RUN_DIR"
RUN_RECORD = "run.json"

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


def stage_folder(report_dir: str | Path, stem: str) -> Path:
    """`<report_dir>/<stem>`, created: where notebook `stem` writes its metrics and figures.

    `report_dir` is a run folder (`reports/<run>`, `workbench.paths.default_report_dir`).
    When a notebook run by hand (JupyterLab, nbval) rewrites a stage of a folder that
    `workbench run` recorded, the folder no longer holds what its `run.json` vouches
    for: the record is removed, saying so, rather than left to fail `workbench reproduce`
    later with "edited after the run".
    """
    run_dir = Path(report_dir)
    record = run_dir / RUN_RECORD
    if record.is_file() and os.environ.get(RUN_DIR_VARIABLE) != str(run_dir.resolve()):
        record.unlink()
        print(f"{record}: removed; notebook {stem} rewrites this run's files outside `workbench run`, "
              "so the folder is no longer a recorded run (re-run `workbench run` to record one)")
    folder = run_dir / stem
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# What a stage reads from the work folder: the earlier stage that writes it, what to say when
# that stage stopped, and the file checked with what to say when it is missing (None: no file)
_NEEDS: dict[str, tuple[str, str, tuple[str, str] | None]] = {
    "embeddings": ("02_encoders", "notebook 02 wrote no item embeddings ({why})",
                   ("embeddings/items.parquet", "{path}: no item embeddings; run notebooks 02 and 03 first")),
    "towers": ("02_encoders", "notebook 02 trained no towers ({why})",
               ("encoders/model.safetensors", "{folder}: no trained towers; run notebook 02_encoders first")),
    "index": ("06_scann_index",
              "no index to evaluate: notebook 06 stopped ({why}); notebook 05 has the ranker metrics", None),
}


@dataclass(frozen=True)
class Stage:
    """Where a notebook writes (`report_dir`) and reads (`emb_path`), and why it stopped (None: it runs)."""

    report_dir: Path
    emb_path: Path
    stopped: str | None


def begin_stage(report_dir: str | Path, work_dir: str | Path, stem: str, *, needs: str | None = None,
                table_rows: int | None = None, table_cols: int | None = None,
                table_width: int | None = None, hide_table_shape: bool = False) -> Stage:
    """Every notebook's set-up: polars' table display, its report folder, and the stop when an input is missing.

    `needs` names what the stage reads from an earlier one ("embeddings", "towers", "index"):
    when that stage stopped (`skipped_stage`) or its file is absent, `stop_here` is called
    with the reason, so make this the last statement of its cell.
    """
    import polars as pl

    if table_rows is not None:
        pl.Config.set_tbl_rows(table_rows)
    if table_cols is not None:
        pl.Config.set_tbl_cols(table_cols)
    if table_width is not None:
        pl.Config.set_tbl_width_chars(table_width)
    if hide_table_shape:
        pl.Config.set_tbl_hide_dataframe_shape(True)
    if needs is not None and needs not in _NEEDS:
        raise ConfigError(f"begin_stage: needs={needs!r}: expected one of {sorted(_NEEDS)} or None")
    folder = stage_folder(report_dir, stem)
    emb_path = Path(work_dir) / "embeddings" / "items.parquet"
    if needs is None:
        return Stage(folder, emb_path, None)
    earlier, stopped_message, needed_file = _NEEDS[needs]
    reason = None
    if why := skipped_stage(Path(report_dir) / earlier):
        reason = stopped_message.format(why=why)
    elif needed_file is not None and not (path := Path(work_dir) / needed_file[0]).is_file():
        reason = needed_file[1].format(path=path, folder=path.parent)
    if reason is not None:
        stop_here(reason, folder)
    return Stage(folder, emb_path, reason)
