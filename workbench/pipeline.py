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
``failed``. Last, ``reports/<run>/run.json`` records what was run and the
sha256 of every file of the folder, so ``workbench reproduce`` can verify and
re-run it (:mod:`workbench.reproduce`).

**Validation first.** The catalog is validated (every table, every media
file) before the first notebook that trains on it: a catalog with problems is
refused with the problems listed, unless ``allow_problems=True``
(``--allow-problems``), which the report then states. The outcome is written
to ``reports/<run>/validation.json`` for the report.

The kernels inherit the deterministic settings of
:mod:`workbench.reproducibility` (for the ``ci`` profile) and run without
progress bars (:mod:`workbench.progress`), so executed copies hold no frozen bars.

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
import shutil
import time
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from workbench.errors import CatalogProblemsError, ConfigError, WorkbenchError
from workbench.notebook import RUN_DIR_VARIABLE, skipped_stage
from workbench.paths import (
    PROFILES,
    SERIES,
    default_catalog_dir,
    default_run_name,
    default_work_dir,
    home,
    project_root,
)
from workbench.progress import progress_bar, quiet_environment
from workbench.reproducibility import pin_process

_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
VALIDATION_FILE = "validation.json"


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


def _ipc_kernel_manager() -> type:
    """A kernel manager whose kernels talk over Unix sockets, not TCP on localhost.

    Nothing else on the machine can reach the kernel, and ipykernel no longer warns
    about unencrypted TCP on every start.
    """
    import uuid

    from jupyter_client.manager import AsyncKernelManager
    from jupyter_core.paths import jupyter_runtime_dir
    from traitlets import CaselessStrEnum, default

    class IPCKernelManager(AsyncKernelManager):
        transport = CaselessStrEnum(["tcp", "ipc"], default_value="ipc", config=True)

        @default("ip")
        def _unique_socket_prefix(self) -> str:
            # jupyter_client's default, "kernel-ipc" in the working directory, is shared by every
            # kernel started from that folder: two runs at once would talk on each other's sockets.
            runtime = Path(jupyter_runtime_dir())
            runtime.mkdir(parents=True, exist_ok=True)
            return str(runtime / f"workbench-{uuid.uuid4().hex}-ipc")

    return IPCKernelManager


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


# Set by the runner itself (its arguments say them); never overridden by name.
RUNNER_PARAMETERS = ("PROFILE", "CATALOG_DIR", "WORK_DIR", "REPORT_DIR", "GENERATE_SYNTHETIC")


def _checked_overrides(overrides: Mapping[str, Any], declared: Mapping[str, set[str]]) -> dict[str, Any]:
    """The overrides, each declared by at least one notebook of the run and not the runner's own."""
    known = set().union(*declared.values()) - set(RUNNER_PARAMETERS)
    for name in overrides:
        if name in RUNNER_PARAMETERS:
            raise ConfigError(f"parameter {name}: set by `workbench run` itself (use --profile, --catalog or "
                              "--run); expected another notebook parameter")
        if name not in known:
            raise ConfigError(f"parameter {name}: no notebook of this run declares it; expected one of "
                              f"{sorted(known)}")
    return dict(overrides)


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


def validate_for_run(catalog_dir: Path, allow_problems: bool) -> dict:
    """Validate the catalog before anything trains on it; refuse it on problems unless allowed.

    Returns what ``<run>/validation.json`` records for the report: the problems,
    the warnings and whether problems were overridden.
    """
    from workbench.catalog import validate_catalog

    found = validate_catalog(catalog_dir, check_media=True, on_error="collect", progress=False,
                             include_warnings=True)
    errors = [str(p) for p in found if p.is_error]
    warnings = [str(p) for p in found if not p.is_error]
    if errors and not allow_problems:
        raise CatalogProblemsError(
            f"catalog {catalog_dir}: {len(errors)} problem(s); refusing to train and report on it "
            "(fix the catalog, or pass --allow-problems to run anyway; the report will say so)",
            errors,
        )
    return {"catalog": str(catalog_dir), "problems": errors, "warnings": warnings,
            "allowed": bool(errors)}


def _fresh_run_dir(run_dir: Path) -> None:
    """Empty `run_dir` for a new run: files of an earlier run would be taken for this one's."""
    if run_dir.exists():
        # A run's files, or stage folders a notebook opened by hand wrote (the same layout).
        markers = ("series.json", "run.json", "notebooks", *SERIES)
        if any(run_dir.iterdir()) and not any((run_dir / m).exists() for m in markers):
            raise ConfigError(f"{run_dir}: exists and is not a run folder; choose another run name")
        shutil.rmtree(run_dir)
    (run_dir / "notebooks").mkdir(parents=True)


def run_series(
    profile: str = "ci",
    catalog: str | Path | None = None,
    run_name: str | None = None,
    notebooks: Sequence[str | Path] | None = None,
    reports_root: str | Path | None = None,
    *,
    work_dir: str | Path | None = None,
    notebooks_dir: str | Path | None = None,
    kernel_name: str = "python3",
    progress: bool = True,
    allow_problems: bool = False,
    overrides: Mapping[str, Any] | None = None,
) -> Path:
    """Execute the notebooks in order; return ``reports/<run>/index.html`` (or the run folder).

    ``catalog=None`` uses the default synthetic catalog
    (``workbench.paths.default_catalog_dir(profile)``), which notebook 01
    generates when it is missing. ``reports_root=None`` is ``<home>/reports``
    (`workbench.paths.reports_dir`); a relative one is taken relative to the home
    folder (``$WORKBENCH_HOME`` or the project root), as are the default work folder
    and catalog. A failing notebook raises
    :class:`WorkbenchError` naming the notebook, the cell and its source; the
    notebooks after it are not run. A catalog with validation problems is
    refused before training unless ``allow_problems``.

    ``overrides`` sets other parameters (``{"EPOCHS": 2}``; `workbench run -p EPOCHS=2`)
    in every notebook whose ``parameters`` cell declares them; a name no notebook of
    the run declares, or one the runner sets itself, is refused. The run record keeps
    them, so `workbench reproduce` re-runs with the same.
    """
    import papermill as pm

    if profile not in PROFILES:
        raise ConfigError(f"profile={profile!r}: expected one of {', '.join(PROFILES)}")
    pin_process(profile)  # the kernels inherit these settings
    root = project_root()
    nb_dir = Path(notebooks_dir) if notebooks_dir is not None else root / "notebooks"
    catalog_dir = Path(catalog) if catalog is not None else default_catalog_dir(profile)
    catalog_dir = (catalog_dir if catalog_dir.is_absolute() else Path.cwd() / catalog_dir).resolve()
    if catalog is not None and not catalog_dir.is_dir():
        raise ConfigError(f"catalog {catalog_dir}: not a folder; expected a catalog folder")
    work = Path(work_dir).resolve() if work_dir is not None else default_work_dir(catalog_dir)
    run_name = run_name or default_run_name(catalog_dir)
    if not _RUN_NAME.match(run_name):
        raise ConfigError(
            f"run name {run_name!r}: expected letters, digits, '.', '_' or '-' (it names a folder)"
        )
    reports = Path(reports_root) if reports_root is not None else Path("reports")
    reports = reports if reports.is_absolute() else home() / reports
    run_dir = reports / run_name
    paths = _resolve_notebooks(notebooks, nb_dir)
    declared = {path.stem: set(pm.inspect_notebook(str(path))) for path in paths}
    overrides = _checked_overrides(overrides or {}, declared)
    generate = catalog is None
    # A named catalog is checked before the previous report is replaced; the default
    # synthetic one once notebook 01 has generated it.
    validation = None if generate else validate_for_run(catalog_dir, allow_problems)
    _fresh_run_dir(run_dir)
    executed = run_dir / "notebooks"
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
    kernel_manager = _ipc_kernel_manager()
    bar = progress_bar(paths, desc=f"workbench run {run_name}", unit="notebook", enabled=progress)
    try:
        # RUN_DIR_VARIABLE tells the notebooks they write for this run (workbench.notebook.stage_folder).
        with _env(WORKBENCH_PROFILE=profile, **{RUN_DIR_VARIABLE: str(run_dir.resolve())}, **quiet_environment()):
            for path in bar:
                stem = path.stem
                if validation is None and stem != "01_catalog":
                    validation = validate_for_run(catalog_dir, allow_problems)
                if validation is not None and not (run_dir / VALIDATION_FILE).exists():
                    write_json(run_dir / VALIDATION_FILE, validation)
                bar.set_postfix_str(stem)
                out_path = executed / path.name
                nb_params: dict[str, object] = dict(params)
                nb_params.update({k: v for k, v in overrides.items() if k in declared[stem]})
                # Notebook 01 generates the synthetic catalog into CATALOG_DIR unless told
                # not to: a catalog the user names must never be overwritten.
                if "GENERATE_SYNTHETIC" in declared[stem]:
                    nb_params["GENERATE_SYNTHETIC"] = generate
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
                        kernel_manager_class=kernel_manager,
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
        if (catalog_dir / "manifest.json").is_file():
            from workbench.reproduce import write_run_record

            write_run_record(
                run_dir, profile=profile, catalog_dir=catalog_dir, notebooks=[p.stem for p in paths],
                status=status, parameters=params, overrides=overrides, generated_catalog=generate,
                notebooks_dir=nb_dir,
                allow_problems=allow_problems,
                catalog_problems=(validation or {}).get("problems", []),
            )
    index = run_dir / "index.html"
    return index if index.is_file() else run_dir


def execute_in_place(
    notebooks_dir: str | Path | None = None, profile: str = "ci", kernel_name: str = "python3",
    first: str | None = None,
) -> list[Path]:
    """Re-execute each notebook of the series in place from its py:percent twin (`make execute-notebooks`).

    After a change to the code the notebooks call: the twin (`notebooks/NN_x.py`, the
    reviewed source) is converted to `.ipynb` and executed with its default
    parameters, in series order, so each reads what the one before it wrote. The
    kernels get the same settings as `workbench run` (deterministic kernels, no
    progress bars, so no frozen bars are committed). `first` (a stem prefix such as
    "05") starts the series there, reading what the earlier notebooks last wrote.
    Returns the notebooks executed.
    """
    import jupytext
    import papermill as pm

    pin_process(profile)
    folder = Path(notebooks_dir) if notebooks_dir is not None else project_root() / "notebooks"
    twins = sorted(folder.glob("0*.py"))
    if first:
        twins = [t for t in twins if t.stem >= first]
    if not twins:
        raise ConfigError(f"{folder}: no py:percent notebooks (0*.py{f' from {first}' if first else ''}) to execute")
    done = []
    with _env(WORKBENCH_PROFILE=profile, **quiet_environment()):
        for twin in twins:
            path = twin.with_suffix(".ipynb")
            jupytext.write(jupytext.read(twin), path)
            try:
                pm.execute_notebook(str(path), str(path), kernel_name=kernel_name, cwd=str(folder),
                                    progress_bar=False, kernel_manager_class=_ipc_kernel_manager())
            except Exception as exc:
                raise _failure(path.stem, path, exc) from exc
            done.append(path)
    return done

