"""Run the notebook series 01..07 in order with papermill: what `workbench run` and `make demo` do.

Each notebook is executed from ``notebooks/`` (its working directory) with
its ``parameters`` cell overridden by ``PROFILE``, ``CATALOG_DIR``,
``WORK_DIR`` and ``REPORT_DIR=reports/<run>`` (absolute paths), so every
stage of one run reads and writes the same folders and the final report
(``reports/<run>/index.html``, written by notebook 07) finds the earlier
notebooks' outputs under ``reports/<run>/<stem>/``. Executed copies, with
their outputs and any traceback, are written to ``reports/<run>/notebooks/``.
Wall times per notebook go to ``reports/<run>/series.json`` (never into
``metrics.json``, which must stay byte-identical between runs), with each
notebook's status: ``ok``, ``stopped`` (it ended early through
``workbench.notebook.stop_here``; ``stopped`` maps it to the reason) or
``failed``.

A catalog named by the caller is used as it is: notebooks declaring a
``GENERATE_SYNTHETIC`` parameter (01) get ``False``; only the default
synthetic catalog is (re)generated.

The default run name is the catalog folder's name (``synthetic-ci`` for the
default synthetic catalog), not a timestamp: ``metrics.json`` records it, and
two runs of ``make demo`` must give the same bytes.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

from tqdm.auto import tqdm

from workbench.errors import ConfigError, WorkbenchError
from workbench.notebook import skipped_stage
from workbench.paths import PROFILES, default_catalog_dir, default_work_dir, project_root

SERIES = (
    "01_catalog",
    "02_encoders",
    "03_fusion",
    "04_embedding_space",
    "05_rankers",
    "06_scann_index",
    "07_evaluation_report",
)
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@contextmanager
def _env(**values: str):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _resolve_notebooks(notebooks: Sequence[str | Path] | None, folder: Path) -> list[Path]:
    """Notebook files in run order: the default series, or the names/paths given."""
    names = list(notebooks) if notebooks is not None else list(SERIES)
    if not names:
        raise ConfigError("notebooks is empty: expected at least one notebook to run")
    out = []
    for name in names:
        path = Path(name)
        if path.suffix != ".ipynb":
            path = path.with_suffix(".ipynb")
        if not path.is_absolute() and not path.exists():
            path = folder / path.name
        if not path.is_file():
            hint = (
                f" (build it with `jupytext --to ipynb {path.with_suffix('.py').name}`)"
                if path.with_suffix(".py").is_file()
                else ""
            )
            raise ConfigError(f"notebook {path}: not found{hint}; expected one of {list(SERIES)}")
        out.append(path)
    return out


def _failure(stem: str, out_path: Path, exc: Exception) -> WorkbenchError:
    cell = getattr(exc, "cell_index", None)
    count = getattr(exc, "exec_count", None)
    source = (getattr(exc, "source", "") or "").strip().splitlines()
    ename = getattr(exc, "ename", type(exc).__name__)
    evalue = getattr(exc, "evalue", str(exc))
    where = (
        "while starting"
        if cell is None
        else f"in cell {cell}" + (f" (execution count {count})" if count is not None else "")
    )
    snippet = "\n".join("    " + line for line in source[:8])
    if len(source) > 8:
        snippet += "\n    ..."
    return WorkbenchError(
        f"notebook {stem} failed {where}: {ename}: {evalue}\n"
        + (f"  cell source:\n{snippet}\n" if snippet else "")
        + f"  executed copy with the full traceback: {out_path}"
    )


def run_series(
    profile: str = "ci",
    catalog: str | Path | None = None,
    run_name: str | None = None,
    notebooks: Sequence[str | Path] | None = None,
    reports_root: str | Path = "reports",
    *,
    work_dir: str | Path | None = None,
    notebooks_dir: str | Path | None = None,
    kernel_name: str = "python3",
    progress: bool = True,
) -> Path:
    """Execute the notebooks in order; return ``reports/<run>/index.html`` (or the run folder).

    ``catalog=None`` uses the default synthetic catalog
    (``workbench.paths.default_catalog_dir(profile)``), which notebook 01
    generates when it is missing. ``reports_root`` and the other relative paths
    are taken relative to the project root. A failing notebook raises
    :class:`WorkbenchError` naming the notebook, the cell and its source; the
    notebooks after it are not run.
    """
    import papermill as pm

    if profile not in PROFILES:
        raise ConfigError(f"profile={profile!r}: expected one of {', '.join(PROFILES)}")
    root = project_root()
    nb_dir = Path(notebooks_dir) if notebooks_dir is not None else root / "notebooks"
    catalog_dir = Path(catalog) if catalog is not None else default_catalog_dir(profile)
    catalog_dir = (catalog_dir if catalog_dir.is_absolute() else Path.cwd() / catalog_dir).resolve()
    if catalog is not None and not catalog_dir.is_dir():
        raise ConfigError(f"catalog {catalog_dir}: not a folder; expected a catalog folder")
    work = Path(work_dir).resolve() if work_dir is not None else default_work_dir(catalog_dir)
    run_name = run_name or catalog_dir.name
    if not _RUN_NAME.match(run_name):
        raise ConfigError(
            f"run name {run_name!r}: expected letters, digits, '.', '_' or '-' (it names a folder)"
        )
    reports = Path(reports_root)
    reports = reports if reports.is_absolute() else root / reports
    run_dir = reports / run_name
    executed = run_dir / "notebooks"
    executed.mkdir(parents=True, exist_ok=True)
    paths = _resolve_notebooks(notebooks, nb_dir)
    params = {
        "PROFILE": profile,
        "CATALOG_DIR": str(catalog_dir),
        "WORK_DIR": str(work),
        "REPORT_DIR": str(run_dir),
    }
    from workbench.report import write_json

    walls: dict[str, float] = {}
    status: dict[str, str] = {}
    stopped: dict[str, str] = {}
    bar = tqdm(paths, desc=f"workbench run {run_name}", unit="notebook", disable=not progress)
    try:
        with _env(WORKBENCH_PROFILE=profile):
            for path in bar:
                stem = path.stem
                bar.set_postfix_str(stem)
                out_path = executed / path.name
                nb_params = dict(params)
                # Notebook 01 generates the synthetic catalog into CATALOG_DIR unless told
                # not to: a catalog the user names must never be overwritten.
                if "GENERATE_SYNTHETIC" in pm.inspect_notebook(str(path)):
                    nb_params["GENERATE_SYNTHETIC"] = catalog is None
                start = time.perf_counter()
                status[stem] = "failed"
                try:
                    pm.execute_notebook(
                        str(path),
                        str(out_path),
                        parameters=nb_params,
                        kernel_name=kernel_name,
                        cwd=str(path.parent),
                        progress_bar={"desc": stem, "leave": False} if progress else False,
                        log_output=False,
                    )
                except Exception as exc:  # a failing cell, a dead kernel, bad notebook JSON...
                    raise _failure(stem, out_path, exc) from exc
                finally:
                    walls[stem] = time.perf_counter() - start
                # A notebook the catalog cannot support ends early through stop_here(),
                # which records why; the series goes on and says so.
                reason = skipped_stage(run_dir / stem)
                status[stem] = "ok" if reason is None else "stopped"
                if reason is not None:
                    stopped[stem] = reason
    finally:
        # Wall times (also of a failed run) beside the report, never in metrics.json.
        write_json(
            run_dir / "series.json",
            {
                "profile": profile,
                "notebooks": walls,
                "status": status,
                "stopped": stopped,
                "total_s": sum(walls.values()),
            },
            digits=2,
        )
    index = run_dir / "index.html"
    return index if index.is_file() else run_dir
