"""`workbench run --mlflow` / `workbench.tracking.log_run`: config, metrics and files land in MLflow."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from workbench import tracking
from workbench.cli import main
from workbench.errors import ConfigError, ReportError
from workbench.tracking import MAX_NAME, metric_name, metric_names

RUN_RECORD = {
    "format": "workbench.run/1", "run": "demo-run", "workbench": "0.1.0", "profile": "ci",
    "notebooks": ["01_catalog", "07_evaluation_report"],
    "status": {"01_catalog": "ok", "07_evaluation_report": "ok"},
    "parameters": {"PROFILE": "ci", "CATALOG_DIR": "/data/catalogs/mine"},
    "catalog": {"path": "/data/catalogs/mine", "fingerprint": "f" * 64, "media_sha256": "a" * 64},
    "generated_catalog": False, "allow_problems": False, "catalog_problems": [], "files": {},
}
METRICS = {
    "07_evaluation_report": {"search": {"ndcg@10": 0.25, "recall@10": 0.5, "system": "hybrid"},
                             "n_queries": 200, "ok": True, "missing": None},
    "per_category": {"home/chairs": 0.1, "a:b": 2.0, "a_b": 3.0},
    "rows": [{"mrr@10": 0.3}],
}


def _report(folder: Path, metrics: dict | None = METRICS) -> Path:
    (folder / "07_evaluation_report").mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps(RUN_RECORD), encoding="utf-8")
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    (folder / "index.html").write_text("<html>report</html>", encoding="utf-8")
    (folder / "07_evaluation_report" / "figure.html").write_text("<div></div>", encoding="utf-8")
    return folder


def test_metric_names_keep_only_what_mlflow_accepts() -> None:
    assert metric_name("search.recall@10") == "search.recall_at_10"
    assert metric_name("per_category.a:b") == "per_category.a_b"  # ':' is refused on Windows
    assert metric_name("per_category.home/chairs") == "per_category.home/chairs"
    assert metric_name("caf\u00e9 +x") == "caf_ _x"
    assert metric_name("a//b") == "a__b"  # MLflow refuses names a path normalisation changes
    assert metric_name("/abs") == "_abs"
    assert metric_name("..") == "_.."
    assert metric_name("") == "_"


def test_metric_names_never_collide_and_are_deterministic() -> None:
    keys = ["per_category.a:b", "per_category.a_b", "recall@10", "x" * 300]
    names = metric_names(keys)
    assert names == metric_names(list(reversed(keys)))  # independent of order
    assert len(set(names.values())) == len(keys)
    assert names["recall@10"] == "recall_at_10"
    assert names["per_category.a:b"].startswith("per_category.a_b_") and len(names["per_category.a:b"]) == 25
    assert len(names["x" * 300]) == MAX_NAME


def test_log_run_to_a_local_file_store(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    report = _report(tmp_path / "reports" / "demo-run")
    store = tmp_path / "mlruns"
    run_id = tracking.log_run(report, tracking_uri=str(store))
    assert "MLFLOW_ALLOW_FILE_STORE" not in os.environ  # set for its own calls only
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=store.as_uri())
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "demo-run"
    assert client.get_experiment(run.info.experiment_id).name == "workbench"
    params = run.data.params
    assert params["profile"] == "ci"
    assert params["catalog.path"] == "/data/catalogs/mine"
    assert params["catalog.fingerprint"] == "f" * 64
    assert params["parameters.CATALOG_DIR"] == "/data/catalogs/mine"
    assert params["status.07_evaluation_report"] == "ok"
    assert run.data.metrics == {  # numbers only: text, booleans and nulls are left out
        "07_evaluation_report.search.ndcg_at_10": 0.25,
        "07_evaluation_report.search.recall_at_10": 0.5,
        "07_evaluation_report.n_queries": 200.0,
        "per_category.home/chairs": 0.1,
        metric_names(["per_category.a:b", "per_category.a_b"])["per_category.a:b"]: 2.0,
        metric_names(["per_category.a:b", "per_category.a_b"])["per_category.a_b"]: 3.0,
        "rows.0.mrr_at_10": 0.3,
    }
    top = {a.path for a in client.list_artifacts(run_id)}
    assert top == {"report", "metric_names.json"}
    listed = {a.path for a in client.list_artifacts(run_id, "report")}
    assert listed == {"report/07_evaluation_report", "report/index.html", "report/metrics.json", "report/run.json"}
    local = Path(client.download_artifacts(run_id, "", str(tmp_path / "back")))
    assert (local / "report" / "07_evaluation_report" / "figure.html").read_text() == "<div></div>"
    names = json.loads((local / "metric_names.json").read_text())
    assert names["rows.0.mrr_at_10"] == "rows.0.mrr@10"


def test_a_report_without_top_level_metrics_logs_each_stage(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    report = _report(tmp_path / "r", metrics=None)
    (report / "07_evaluation_report" / "metrics.json").write_text('{"skipped": "no queries"}')
    (report / "01_catalog").mkdir()
    (report / "01_catalog" / "metrics.json").write_text('{"counts": {"products": 3}}')
    run_id = tracking.log_run(report, tracking_uri=str(tmp_path / "store"))
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    metrics = MlflowClient(tracking_uri=(tmp_path / "store").as_uri()).get_run(run_id).data.metrics
    assert metrics == {"01_catalog.counts.products": 3.0}


def test_bad_report_folders_are_named(tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    with pytest.raises(ReportError, match=r"not a folder; expected a report folder written by `workbench run`"):
        tracking.log_run(tmp_path / "nope", tracking_uri=str(tmp_path / "store"))
    (tmp_path / "r").mkdir()
    with pytest.raises(ReportError) as info:
        tracking.log_run(tmp_path / "r", tracking_uri=str(tmp_path / "store"))
    assert str(info.value) == (f"{tmp_path / 'r' / 'run.json'}: missing; expected the run record "
                               "(a report folder written by `workbench run`)")


def test_default_store_is_mlruns_in_the_home_folder(tmp_path, monkeypatch) -> None:
    from workbench.paths import project_root

    monkeypatch.delenv("WORKBENCH_HOME", raising=False)
    assert tracking.normalise_uri(None) == (project_root() / "mlruns").resolve().as_uri()
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path))
    assert tracking.normalise_uri(None) == (tmp_path / "mlruns").resolve().as_uri()
    assert tracking.normalise_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert tracking.normalise_uri("sqlite:///x.db") == "sqlite:///x.db"


def test_without_mlflow_the_flag_fails_in_one_line_before_the_run(monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` raises ImportError
    import workbench.pipeline

    def never(**_kw):
        raise AssertionError("the series must not start")

    monkeypatch.setattr(workbench.pipeline, "run_series", never)
    with pytest.raises(ConfigError):
        tracking.require_mlflow()
    assert main(["run", "--mlflow"]) == 2
    err = capsys.readouterr().err
    assert err == ("error: --mlflow needs MLflow, which is not installed; install it with "
                   'pip install -e ".[tracking]" (in the project folder; or: pip install mlflow-skinny)\n')


def test_run_with_mlflow_logs_the_report_it_wrote(tmp_path: Path, monkeypatch, capsys) -> None:
    pytest.importorskip("mlflow")
    import workbench.pipeline

    report = _report(tmp_path / "reports" / "demo-run")
    (report / "series.json").write_text('{"stopped": {}}')
    monkeypatch.setattr(workbench.pipeline, "run_series", lambda **_kw: report / "index.html")
    store = tmp_path / "store"
    assert main(["run", "--mlflow", str(store)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == str(report / "index.html")
    assert out[1].startswith("mlflow run ") and out[1].endswith(f" in {store.as_uri()}")
    assert any(store.glob("*/*/artifacts/report/index.html"))
