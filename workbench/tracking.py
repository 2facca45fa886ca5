"""Experiment tracking: a report folder of `workbench run` logged to MLflow.

`log_run(report_dir, tracking_uri=None) -> run_id` logs, as one MLflow run:

* params: the run's configuration from `run.json` (profile, run name, catalog
  path, fingerprint and media digest, the notebook parameters, each notebook's
  status, the workbench version);
* metrics: every number of `metrics.json`, flattened to dotted keys
  (`workbench.evaluate.tolerance.flatten`; text, booleans and nulls are left
  out). A report without a top-level `metrics.json` (its notebook 07 stopped
  early) contributes each `<stage>/metrics.json`, keyed `<stage>.<metric>`;
* artifacts: the whole report folder under `report/`, plus `metric_names.json`
  mapping each MLflow metric name back to its key in `metrics.json`.

MLflow allows only letters, digits and `_ - . space /` in names (`:` too, but
not on Windows), so `metric_name` maps every other character deterministically:
`@` becomes `_at_` (`recall@10` -> `recall_at_10`), anything else `_`. Keys that
would collide after the mapping, or that are longer than MLflow allows, get a
short hash of the original key appended, so two metrics never share a name.

The default store is a local folder `mlruns/` in the project
(`file://<project>/mlruns`). Recent MLflow versions keep that file store in
maintenance mode and refuse it unless `MLFLOW_ALLOW_FILE_STORE=true`; `log_run`
sets that (and turns MLflow's usage telemetry off) for its own calls unless you
set them yourself. Any other tracking URI (`http://host:5000`, `sqlite:///x.db`,
a folder path) is passed on as it is, a plain path as a `file://` URI.

MLflow is an optional extra: `pip install -e ".[tracking]"` installs
mlflow-skinny. Without it `require_mlflow()` raises `ConfigError` saying so.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlparse

from workbench.errors import ConfigError, ReportError, WorkbenchError
from workbench.files import read_json_object

INSTALL_HINT = 'pip install -e ".[tracking]" (in the project folder; or: pip install mlflow-skinny)'
DEFAULT_EXPERIMENT = "workbench"
RUN_RECORD = "run.json"
METRICS = "metrics.json"
NAME_MAP = "metric_names.json"
MAX_NAME = 250  # MLflow's limit on metric and param names
MAX_PARAM_VALUE = 6000  # MLflow's limit on a param's value
_BATCH = 1000  # MLflow accepts at most 1000 metrics (and 100 params) per batch
_PARAM_BATCH = 100
# Characters MLflow accepts in names on every platform (':' is refused on Windows).
_NOT_ALLOWED = re.compile(r"[^A-Za-z0-9_\-. /]")


def require_mlflow() -> ModuleType:
    """The mlflow module, or ConfigError with how to install it (checked before a long run starts)."""
    try:
        import mlflow
    except ImportError as e:
        raise ConfigError(f"--mlflow needs MLflow, which is not installed; install it with {INSTALL_HINT}") from e
    return mlflow


def default_tracking_uri() -> str:
    """`file://<home>/mlruns`: a local store beside `reports/` (`workbench.paths.home`)."""
    from workbench.paths import home

    return (home() / "mlruns").resolve().as_uri()


def normalise_uri(uri: str | None) -> str:
    """A tracking URI as MLflow wants it: None -> the default store, a plain folder path -> file:// URI."""
    if uri is None or uri == "":
        return default_tracking_uri()
    scheme = urlparse(uri).scheme
    if scheme and len(scheme) > 1:  # 'c' of 'c:\\...' is a drive, not a scheme
        return uri
    return Path(uri).expanduser().resolve().as_uri()


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]


def metric_name(key: str) -> str:
    """`key` with only the characters MLflow accepts, and a path MLflow will not normalise to another name."""
    name = _NOT_ALLOWED.sub("_", key.replace("@", "_at_"))
    # MLflow refuses names a path normalisation would change ('a//b', '/a', 'a/./b', '..').
    if posixpath.normpath(name) != name or name.startswith(("/", "..")) or name in ("", "."):
        name = name.replace("/", "_")
        if name in ("", ".") or name.startswith(".."):
            name = "_" + name
    return name


def metric_names(keys: Iterable[str]) -> dict[str, str]:
    """key -> a unique MLflow name; keys that collide after `metric_name` (or are too long) get a hash."""
    keys = list(dict.fromkeys(keys))
    plain = {key: metric_name(key) for key in keys}
    taken: dict[str, int] = {}
    for name in plain.values():
        taken[name] = taken.get(name, 0) + 1
    out = {}
    for key, name in plain.items():
        if taken[name] > 1 or len(name) > MAX_NAME:
            name = f"{name[: MAX_NAME - 9]}_{_short_hash(key)}"
        out[key] = name
    return out


def report_metrics(report_dir: Path) -> dict[str, float]:
    """Every number of the report's metrics (see the module docstring), by dotted key."""
    from workbench.evaluate.tolerance import flatten

    top = report_dir / METRICS
    docs: list[tuple[str, Path]] = []
    if top.is_file():
        docs.append(("", top))
    else:
        docs += [(f"{p.parent.name}.", p) for p in sorted(report_dir.glob(f"*/{METRICS}"))]
    if not docs:
        raise ReportError(f"{top}: missing (and no <stage>/{METRICS} either); expected a report folder written "
                          "by `workbench run`")
    metrics: dict[str, float] = {}
    for prefix, path in docs:
        doc = read_json_object(path, "the run's metrics", ReportError)
        for key, value in flatten(doc).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                metrics[prefix + key] = float(value)
    return metrics


def run_params(record: dict[str, Any]) -> dict[str, str]:
    """The configuration of a run, from its `run.json`, as flat MLflow params (text)."""
    params: dict[str, Any] = {
        "profile": record.get("profile"),
        "run": record.get("run"),
        "workbench": record.get("workbench"),
        "generated_catalog": record.get("generated_catalog"),
        "allow_problems": record.get("allow_problems"),
        "notebooks": ",".join(record.get("notebooks") or []) or None,
    }
    catalog = record.get("catalog")
    if not isinstance(catalog, dict):
        catalog = {}
    for field in ("path", "fingerprint", "media_sha256"):
        params[f"catalog.{field}"] = catalog.get(field)
    for group in ("parameters", "status"):
        values = record.get(group)
        if isinstance(values, dict):
            params.update({f"{group}.{k}": v for k, v in sorted(values.items())})
    out = {}
    for key, value in params.items():
        if value is None:
            continue
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        out[key] = text[:MAX_PARAM_VALUE]
    return out


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@contextmanager
def _mlflow_environment(uri: str) -> Iterator[None]:
    """Allow MLflow's file store and keep its telemetry off, for our calls only (a user's setting wins)."""
    wanted = {"MLFLOW_DISABLE_TELEMETRY": "true"}
    if uri.startswith("file:"):
        wanted["MLFLOW_ALLOW_FILE_STORE"] = "true"
    added = [k for k in wanted if k not in os.environ]
    os.environ.update({k: wanted[k] for k in added})
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def log_run(report_dir: str | Path, tracking_uri: str | None = None, *,
            experiment: str = DEFAULT_EXPERIMENT) -> str:
    """Log a report folder (config, metrics, files) as one MLflow run; return its run id."""
    require_mlflow()
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    report_dir = Path(report_dir)
    if not report_dir.is_dir():
        raise ReportError(f"{report_dir}: not a folder; expected a report folder written by `workbench run`")
    record = read_json_object(report_dir / RUN_RECORD, "the run record (a report folder written by `workbench run`)",
                              ReportError)
    metrics = report_metrics(report_dir)
    names = metric_names(metrics)
    params = run_params(record)
    param_names = metric_names(params)  # the same character rules apply to param keys
    uri = normalise_uri(tracking_uri)
    run_name = str(record.get("run") or report_dir.name)
    now = int(time.time() * 1000)
    with _mlflow_environment(uri):
        try:
            client = MlflowClient(tracking_uri=uri)
            found = client.get_experiment_by_name(experiment)
            experiment_id = found.experiment_id if found is not None else client.create_experiment(experiment)
            run = client.create_run(experiment_id, run_name=run_name, tags={
                "workbench.report_dir": str(report_dir.resolve()),
                "mlflow.source.name": "workbench run",
            })
            run_id = run.info.run_id
        except MlflowException as e:
            raise WorkbenchError(f"MLflow at {uri}: {' '.join(str(e).split())}") from e
        try:
            for batch in _chunks([Param(param_names[k], v) for k, v in params.items()], _PARAM_BATCH):
                client.log_batch(run_id, params=batch)
            entries = [Metric(names[k], v, now, 0) for k, v in metrics.items()]
            for batch in _chunks(entries, _BATCH):
                client.log_batch(run_id, metrics=batch)
            client.log_batch(run_id, tags=[RunTag("workbench.metrics", str(len(entries)))])
            client.log_artifacts(run_id, str(report_dir), artifact_path="report")
            with tempfile.TemporaryDirectory() as tmp:
                mapping = Path(tmp) / NAME_MAP
                mapping.write_text(json.dumps({names[k]: k for k in metrics}, indent=2, sort_keys=True) + "\n",
                                   encoding="utf-8")
                client.log_artifact(run_id, str(mapping))
        except Exception as e:
            client.set_terminated(run_id, status="FAILED")
            if isinstance(e, MlflowException):
                raise WorkbenchError(f"MLflow at {uri}, run {run_id}: {' '.join(str(e).split())}") from e
            raise
        client.set_terminated(run_id, status="FINISHED")
    return run_id


__all__ = [
    "DEFAULT_EXPERIMENT",
    "INSTALL_HINT",
    "default_tracking_uri",
    "log_run",
    "metric_name",
    "metric_names",
    "normalise_uri",
    "report_metrics",
    "require_mlflow",
    "run_params",
]
