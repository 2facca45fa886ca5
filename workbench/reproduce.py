"""Reports that verify themselves: `workbench reproduce REPORT_DIR` and `workbench compare RUN_A RUN_B`.

`workbench run` ends by writing ``reports/<run>/run.json`` (:func:`write_run_record`):
what was run (profile, notebooks, parameters), the identity of the catalog it
ran on (path, table fingerprint, media digest, validation problems allowed)
and the sha256 of every other file in the folder. So a report folder can say
whether it is still what its run wrote (:func:`verify_report`), whether the
catalog it names is still the one it was made from (:func:`verify_catalog`),
and whether running it again gives the same numbers (:func:`reproduce`):
every metric identical, within its tolerance (:mod:`workbench.evaluate.tolerance`)
or outside it. :func:`compare_runs` asks the same of two runs, plus a paired
test per metric on the per-query results both runs wrote.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench import __version__
from workbench.errors import ReportError
from workbench.evaluate.tolerance import (
    DEFAULT_TOLERANCES,
    MetricComparison,
    Tolerance,
    compare_metrics,
)
from workbench.files import read_json_object, sha256_file, write_json_atomic

RUN_RECORD = "run.json"
RUN_FORMAT = "workbench.run/1"
METRICS = "metrics.json"
PER_QUERY = "07_evaluation_report/per_query.parquet"
# Sentences that restate numbers compared elsewhere as numbers ("beats ... by 0.013 (95% CI ...)"):
# their text changes with any float drift, so they are not compared as text.
DERIVED_TEXT = ("*.summary", "*.reason")


# --------------------------------------------------------------------------- the run record


def catalog_identity(catalog_dir: str | Path) -> dict[str, Any]:
    """Where the catalog is and what it holds: table fingerprint (manifest) and media digest."""
    from workbench.catalog import media_digest
    from workbench.report import data_fingerprint

    root = Path(catalog_dir).resolve()
    return {
        "path": str(root),
        "fingerprint": data_fingerprint(root).get("fingerprint"),
        "media_sha256": media_digest(root),
    }


def _report_files(run_dir: Path) -> dict[str, str]:
    return {
        p.relative_to(run_dir).as_posix(): sha256_file(p)
        for p in sorted(run_dir.rglob("*"))
        if p.is_file() and p.relative_to(run_dir).as_posix() != RUN_RECORD
    }


def write_run_record(
    run_dir: str | Path,
    *,
    profile: str,
    catalog_dir: str | Path,
    notebooks: Sequence[str],
    status: dict[str, str],
    parameters: dict[str, Any],
    generated_catalog: bool,
    overrides: dict[str, Any] | None = None,
    notebooks_dir: str | Path,
    allow_problems: bool = False,
    catalog_problems: Sequence[str] = (),
) -> Path:
    """Write ``<run_dir>/run.json``: what was run, on which catalog, and every file's sha256."""
    run_dir = Path(run_dir)
    record = {
        "format": RUN_FORMAT,
        "run": run_dir.name,
        "workbench": __version__,
        "profile": profile,
        "notebooks": list(notebooks),
        "notebooks_dir": str(Path(notebooks_dir).resolve()),
        "status": dict(status),
        "parameters": dict(parameters),
        "overrides": dict(overrides or {}),
        "catalog": catalog_identity(catalog_dir),
        "generated_catalog": generated_catalog,
        "allow_problems": allow_problems,
        "catalog_problems": list(catalog_problems),
        "files": _report_files(run_dir),
    }
    return write_json_atomic(run_dir / RUN_RECORD, record)


# Field -> (expected JSON type, what a reader needs to know)
_RECORD_FIELDS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "format": (str, f"{RUN_FORMAT!r}"),
    "run": (str, "the run name"),
    "profile": (str, "ci or full"),
    "notebooks": (list, "the notebook stems that ran"),
    "notebooks_dir": (str, "the folder the notebooks ran from"),
    "status": (dict, "each notebook's status"),
    "parameters": (dict, "the notebook parameters"),
    "catalog": (dict, "path, fingerprint and media_sha256 of the catalog"),
    "generated_catalog": (bool, "whether the run generated its catalog"),
    "allow_problems": (bool, "whether catalog problems were overridden"),
    "files": (dict, "relative path -> sha256 of every file of the report"),
}


def read_run_record(run_dir: str | Path) -> dict[str, Any]:
    """The run record of a report folder, every field checked (``ReportError`` naming the field)."""
    run_dir = Path(run_dir)
    path = run_dir / RUN_RECORD
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir}: not a folder; expected a report folder written by `workbench run`")
    if not path.is_file():
        raise ReportError(f"{path}: missing; expected a report folder written by `workbench run` "
                          "(reports from older versions cannot be verified: re-run them)")
    record = read_json_object(path, "the run record of `workbench run`", ReportError)
    for name, (kind, what) in _RECORD_FIELDS.items():
        if not isinstance(record.get(name), kind):
            found = "missing" if name not in record else f"a {type(record[name]).__name__}"
            raise ReportError(f"{path}: field {name!r} is {found}; expected {what}")
    if record["format"] != RUN_FORMAT:
        raise ReportError(f"{path}: format {record['format']!r}, expected {RUN_FORMAT!r}")
    for key in ("path", "fingerprint"):
        if not isinstance(record["catalog"].get(key), str):
            raise ReportError(f"{path}: field 'catalog.{key}' is missing or not text")
    for rel, digest in record["files"].items():
        parts = Path(rel).parts
        if Path(rel).is_absolute() or ".." in parts or "\0" in rel or not parts:
            raise ReportError(f"{path}: 'files' names {rel!r}; expected paths inside the report folder")
        if not (isinstance(digest, str) and len(digest) == 64):
            raise ReportError(f"{path}: 'files.{rel}' is not a sha256 hex digest")
    return record


def verify_report(run_dir: str | Path) -> dict[str, Any]:
    """Check that every file of the report is the one its run wrote; return the run record.

    Refuses (``ReportError``, naming the file) a missing file, a file added
    after the run, and an edited one.
    """
    run_dir = Path(run_dir)
    record = read_run_record(run_dir)
    recorded: dict[str, str] = record["files"]
    present = {p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*") if p.is_file()} - {RUN_RECORD}
    problems = [f"{run_dir / rel}: listed in {RUN_RECORD} but missing" for rel in sorted(set(recorded) - present)]
    problems += [f"{run_dir / rel}: not written by the run (added after it)" for rel in sorted(present - set(recorded))]
    problems += [
        f"{run_dir / rel}: edited after the run (sha256 differs from {RUN_RECORD})"
        for rel in sorted(set(recorded) & present)
        if sha256_file(run_dir / rel) != recorded[rel]
    ]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ReportError(f"{problems[0]}{more}; the report no longer shows what its run measured")
    if METRICS not in recorded:
        raise ReportError(f"{run_dir}: the run wrote no {METRICS} (did it fail? status {record['status']})")
    return record


def verify_catalog(record: dict[str, Any], catalog_dir: str | Path | None = None) -> Path:
    """The catalog the run used (or `catalog_dir`, a copy), refused when it is not the same data."""
    from workbench.catalog import read_catalog

    path = Path(catalog_dir) if catalog_dir is not None else Path(record["catalog"]["path"])
    if not path.is_dir():
        raise ReportError(f"catalog {path} (recorded in {RUN_RECORD}) does not exist here; "
                          "pass --catalog DIR to point at a copy of it")
    from workbench.catalog.io import media_digest_problems
    from workbench.errors import CatalogError

    cat = read_catalog(path)  # tables against their manifest checksums: names the table that changed
    changed = media_digest_problems(cat.root, cat.manifest)  # names the media file that changed
    if changed:
        raise CatalogError(f"{changed[0]}; the report was made from the catalog as it was written")
    now = catalog_identity(path)
    if now["fingerprint"] != record["catalog"]["fingerprint"]:
        raise ReportError(
            f"catalog {path}: its tables are not the ones the report was made from (fingerprint "
            f"{str(now['fingerprint'])[:12]}…, recorded {record['catalog']['fingerprint'][:12]}…)"
        )
    recorded_media = record["catalog"].get("media_sha256")
    if recorded_media is not None and now["media_sha256"] != recorded_media:
        raise ReportError(
            f"catalog {path}: its media files changed since the report was made (media digest "
            f"{now['media_sha256'][:12]}…, recorded {recorded_media[:12]}…)"
        )
    return path


def _read_metrics(run_dir: Path) -> dict[str, Any]:
    return read_json_object(run_dir / METRICS, "the run's metrics", ReportError)


# --------------------------------------------------------------------------- reproduce


@dataclass
class Reproduction:
    """A report and its re-run, compared metric by metric."""

    record: dict[str, Any]
    comparison: MetricComparison
    rerun_dir: Path | None  # kept re-run folder (None when it was temporary)

    @property
    def ok(self) -> bool:
        return self.comparison.ok


def reproduce(
    report_dir: str | Path,
    *,
    catalog: str | Path | None = None,
    keep: str | Path | None = None,
    tolerances: Sequence[Tolerance] = DEFAULT_TOLERANCES,
    progress: bool = True,
) -> Reproduction:
    """Re-run the series a report records, on the same catalog, and compare every metric.

    The report folder and the catalog are verified first (see :func:`verify_report`,
    :func:`verify_catalog`). The re-run writes into `keep` (kept) or a temporary
    folder (removed), never into the report or the run's work folder.
    """
    from workbench.pipeline import run_series

    report_dir = Path(report_dir)
    record = verify_report(report_dir)
    failed = sorted(s for s, v in record["status"].items() if v == "failed")
    if failed:
        raise ReportError(f"{report_dir}: notebook(s) {failed} failed in that run; there is nothing to reproduce")
    catalog_dir = verify_catalog(record, catalog)
    out = Path(keep) if keep is not None else Path(tempfile.mkdtemp(prefix="workbench-reproduce-"))
    if keep is not None and out.exists() and any(out.iterdir()):
        raise ReportError(f"{out}: not empty; expected a new or empty folder for the re-run")
    try:
        run_series(
            profile=record["profile"],
            catalog=catalog_dir,
            run_name=record["run"],
            notebooks=record["notebooks"],
            notebooks_dir=record["notebooks_dir"],
            reports_root=out / "reports",
            work_dir=out / "work",
            allow_problems=record["allow_problems"],
            progress=progress,
            overrides=record.get("overrides", {}),
        )
        comparison = compare_metrics(
            _read_metrics(report_dir), _read_metrics(out / "reports" / record["run"]),
            tolerances, ignore=DERIVED_TEXT, names=("report", "re-run"),
        )
    finally:
        if keep is None:
            shutil.rmtree(out, ignore_errors=True)
    return Reproduction(record, comparison, out if keep is not None else None)


# --------------------------------------------------------------------------- compare


@dataclass
class RunComparison:
    """Two runs of the same series on the same catalog, compared."""

    comparison: MetricComparison
    paired: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.comparison.ok


def _check_same_metric_keys(run_a: Path, run_b: Path, a: dict, b: dict) -> None:
    from workbench.evaluate.tolerance import flatten

    def keys(doc: dict) -> set[str]:
        return {k for k in flatten(doc) if not k.startswith("config.")}

    only_a, only_b = sorted(keys(a) - keys(b)), sorted(keys(b) - keys(a))
    if only_a or only_b:
        parts = []
        if only_a:
            parts.append(f"{run_b} lacks {len(only_a)} metric(s) of {run_a.name}, e.g. {only_a[:3]}")
        if only_b:
            parts.append(f"{run_a} lacks {len(only_b)} metric(s) of {run_b.name}, e.g. {only_b[:3]}")
        raise ReportError("; ".join(parts) + ": expected two runs of the same series (same notebooks, "
                          "same metric settings) to compare")


def paired_tests(
    run_a: Path, run_b: Path, *, n_resamples: int = 2000, seed: int = 0
) -> tuple[list[dict[str, Any]], list[str]]:
    """A paired randomisation test per (task, metric) on the queries both runs scored."""
    import numpy as np
    import polars as pl

    from workbench.evaluate.bootstrap import paired_comparison

    pa, pb = run_a / PER_QUERY, run_b / PER_QUERY
    if not (pa.is_file() and pb.is_file()):
        return [], [f"no paired tests: {PER_QUERY} is missing from {run_a if not pa.is_file() else run_b}"]
    a, b = pl.read_parquet(pa), pl.read_parquet(pb)
    metrics = sorted(c for c in a.columns if c in b.columns and c.startswith(("retrieval_", "reranked_")))
    joined = a.join(b, on=["task", "query_id"], how="inner", suffix="_b")
    notes = []
    if joined.height < max(a.height, b.height):
        notes.append(f"paired tests use the {joined.height} (task, query) pairs both runs scored "
                     f"({a.height} in {run_a.name}, {b.height} in {run_b.name})")
    rows = []
    for task in sorted(joined["task"].unique().to_list()):
        part = joined.filter(pl.col("task") == task)
        for m in metrics:
            va = part[m].cast(pl.Float64).to_numpy()
            vb = part[f"{m}_b"].cast(pl.Float64).to_numpy()
            if np.isnan(va).all() or np.isnan(vb).all():
                continue
            r = paired_comparison(va, vb, metric=m, name_a=run_a.name, name_b=run_b.name,
                                  n_resamples=n_resamples, seed=seed)
            rows.append({"task": task, "metric": m, "a": r.mean_a, "b": r.mean_b, "diff": r.diff,
                         "low": r.low, "high": r.high, "p_value": r.p_value, "n": r.n,
                         "significant": bool(r.p_value < 0.05 and (r.low > 0 or r.high < 0))})
    return rows, notes


def compare_runs(
    run_a: str | Path, run_b: str | Path, *, tolerances: Sequence[Tolerance] = DEFAULT_TOLERANCES
) -> RunComparison:
    """Compare two report folders: each verified, same catalog, same metric set; then every metric."""
    run_a, run_b = Path(run_a), Path(run_b)
    rec_a, rec_b = verify_report(run_a), verify_report(run_b)
    if rec_a["catalog"]["fingerprint"] != rec_b["catalog"]["fingerprint"]:
        raise ReportError(
            f"{run_a} and {run_b} were made from different catalogs ({rec_a['catalog']['path']}, "
            f"fingerprint {rec_a['catalog']['fingerprint'][:12]}…, vs {rec_b['catalog']['path']}, "
            f"{rec_b['catalog']['fingerprint'][:12]}…): their metrics do not measure the same thing"
        )
    a, b = _read_metrics(run_a), _read_metrics(run_b)
    _check_same_metric_keys(run_a, run_b, a, b)
    comparison = compare_metrics(a, b, tolerances, ignore=DERIVED_TEXT, names=(run_a.name, run_b.name))
    paired, notes = paired_tests(run_a, run_b)
    return RunComparison(comparison, paired, notes)


# --------------------------------------------------------------------------- committed references


def stage_metrics(reports_dir: str | Path, stems: Sequence[str] | None = None) -> dict[str, Any]:
    """``{stem: metrics}`` of each stage folder ``<reports_dir>/<stem>/metrics.json``, timings left out.

    What the notebooks wrote when last executed (`make execute-notebooks`, or nbval
    in `make test`): the numbers a committed reference holds them to.
    """
    from workbench.reproducibility import split_timings

    root = Path(reports_dir)
    found = sorted(p.parent.name for p in root.glob("0*/metrics.json")) if stems is None else stems
    out = {}
    for stem in found:
        path = root / stem / METRICS
        if path.is_file():
            out[stem] = split_timings(_read_metrics(path.parent))[0]
    return out


def write_reference(reports_dir: str | Path, path: str | Path) -> Path:
    """Record the stages' current metrics as the reference the tests compare against."""
    from workbench.pipeline import SERIES

    metrics = stage_metrics(reports_dir)
    missing = [s for s in SERIES if s not in metrics]
    if missing:
        raise ReportError(f"{reports_dir}: no metrics.json for {missing}; execute the notebooks first "
                          "(`make execute-notebooks`)")
    return write_json_atomic(path, metrics)


def compare_with_reference(
    reports_dir: str | Path, reference: str | Path, *, skip: Sequence[str] = (),
    tolerances: Sequence[Tolerance] = DEFAULT_TOLERANCES,
) -> MetricComparison:
    """Every stage of the reference against what the notebooks wrote now (stages in `skip` left out)."""
    ref_path = Path(reference)
    expected = read_json_object(ref_path, "a reference from `make reference`", ReportError)
    expected = {stem: m for stem, m in expected.items() if stem not in skip}
    actual = stage_metrics(reports_dir, sorted(expected))
    return compare_metrics(expected, actual, tolerances, ignore=DERIVED_TEXT, names=("reference", "now"))

