"""Reports that verify themselves: run.json, `reproduce`, `compare`, on a two-notebook series.

The tiny series writes a deterministic metrics.json and per-query results; the
environment variable TINY_DRIFT shifts one metric, standing in for float drift
(small) or a real change (large).
"""

from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import small_catalog_tables, write_notebook
from workbench.cli import main
from workbench.errors import CatalogError, ReportError
from workbench.pipeline import run_series
from workbench.reproduce import compare_runs, read_run_record, reproduce, verify_report

STAGE = """
import json, os, pathlib
drift = float(os.environ.get("TINY_DRIFT", "0"))
out = pathlib.Path(REPORT_DIR)
(out / "01_stage").mkdir(parents=True, exist_ok=True)
(out / "01_stage" / "metrics.json").write_text(json.dumps({"ndcg@10": 0.5 + drift, "n_queries": 4}))
"""
REPORT = """
import json, os, pathlib
import polars as pl
drift = float(os.environ.get("TINY_DRIFT", "0"))
extra = os.environ.get("TINY_EXTRA_METRIC")
out = pathlib.Path(REPORT_DIR)
results = {"queries": {"ndcg@10": 0.6 + drift, "recall@10": 0.4}}
if extra:
    results["queries"][extra] = 0.1
stage = json.loads((out / "01_stage" / "metrics.json").read_text())
doc = {"run": out.name, "results": results, "notebooks": {"01_stage": stage}}
(out / "metrics.json").write_text(json.dumps(doc, sort_keys=True))
(out / "07_evaluation_report").mkdir(exist_ok=True)
pl.DataFrame({"task": ["queries"] * 4, "query_id": ["a", "b", "c", "d"],
              "reranked_ndcg@10": [0.5 + drift, 0.6 + drift, 0.7 + drift, 0.6 + drift]}
             ).write_parquet(out / "07_evaluation_report" / "per_query.parquet")
"""


@pytest.fixture()
def tiny(tmp_path, small_catalog):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    write_notebook(nbs / "01_stage.ipynb", [STAGE])
    write_notebook(nbs / "07_report.ipynb", [REPORT])
    return nbs, small_catalog, tmp_path / "reports"


def _run(tiny, name, monkeypatch, drift="0", catalog=None, extra=None):
    nbs, cat, reports = tiny
    monkeypatch.setenv("TINY_DRIFT", drift)
    if extra:
        monkeypatch.setenv("TINY_EXTRA_METRIC", extra)
    else:
        monkeypatch.delenv("TINY_EXTRA_METRIC", raising=False)
    run_series(catalog=catalog or cat, run_name=name, notebooks=["01_stage", "07_report"],
               reports_root=reports, work_dir=reports.parent / f"work-{name}", notebooks_dir=nbs,
               progress=False)
    return reports / name


def test_a_run_records_itself_and_verifies(tiny, monkeypatch):
    run = _run(tiny, "r", monkeypatch)
    record = verify_report(run)
    assert record["notebooks"] == ["01_stage", "07_report"]
    assert record["status"] == {"01_stage": "ok", "07_report": "ok"}
    assert record["catalog"]["path"] == str(tiny[1].resolve())
    assert len(record["catalog"]["media_sha256"]) == 64
    assert {"metrics.json", "series.json", "validation.json", "01_stage/metrics.json",
            "07_evaluation_report/per_query.parquet"} <= set(record["files"])
    assert "run.json" not in record["files"]


@pytest.mark.parametrize("damage, message", [
    (lambda run: (run / "metrics.json").write_text("{}"), "metrics.json: edited after the run"),
    (lambda run: (run / "extra.txt").write_text("x"), "extra.txt: not written by the run"),
    (lambda run: (run / "01_stage" / "metrics.json").unlink(), "01_stage/metrics.json: listed in run.json but missing"),
    (lambda run: (run / "run.json").unlink(), "run.json: missing"),
    (lambda run: (run / "run.json").write_text("[1]"), "run.json: holds a JSON list; expected the run record"),
])
def test_a_changed_report_is_refused_naming_the_file(tiny, monkeypatch, damage, message):
    run = _run(tiny, "r", monkeypatch)
    damage(run)
    with pytest.raises(ReportError, match=message.replace("(", r"\(").replace(")", r"\)")):
        verify_report(run)


def test_run_record_fields_are_checked(tiny, monkeypatch):
    run = _run(tiny, "r", monkeypatch)
    doc = json.loads((run / "run.json").read_text())
    for field, value in (("files", ["metrics.json"]), ("profile", 3), ("catalog", "x")):
        bad = {**doc, field: value}
        (run / "run.json").write_text(json.dumps(bad))
        with pytest.raises(ReportError, match=f"field '{field}'"):
            read_run_record(run)
    (run / "run.json").write_text(json.dumps({**doc, "files": {"/etc/passwd": "0" * 64}}))
    with pytest.raises(ReportError, match="expected paths inside the report folder"):
        read_run_record(run)


def test_reproduce_compares_every_metric(tiny, monkeypatch):
    run = _run(tiny, "r", monkeypatch)
    same = reproduce(run, progress=False)
    assert same.ok and same.comparison.counts() == {"identical": len(same.comparison.rows)}
    monkeypatch.setenv("TINY_DRIFT", "0.01")  # float drift on another machine: within 0.05
    drifted = reproduce(run, progress=False)
    assert drifted.ok and drifted.comparison.counts()["within"] == 2  # the two ndcg@10
    monkeypatch.setenv("TINY_DRIFT", "0.2")  # a real change
    changed = reproduce(run, progress=False)
    assert not changed.ok
    row = next(r for r in changed.comparison.outside() if r.key == "results.queries.ndcg@10")
    assert (row.a, round(row.b, 6), row.tolerance) == (0.6, 0.8, 0.05)
    assert "results.queries.ndcg@10: report 0.6 vs re-run 0.8" in row.describe("report", "re-run")
    assert verify_report(run)  # the re-runs wrote nothing into the report


def test_reproduce_cli_exit_codes(tiny, monkeypatch, capsys, tmp_path):
    run = _run(tiny, "r", monkeypatch)
    assert main(["reproduce", str(run), "--quiet"]) == 0
    assert "reproduced: every metric identical or within its tolerance" in capsys.readouterr().out
    monkeypatch.setenv("TINY_DRIFT", "0.2")
    assert main(["reproduce", str(run), "--quiet", "--keep", str(tmp_path / "kept")]) == 1
    captured = capsys.readouterr()
    assert "NOT reproduced" in captured.out
    assert "outside: results.queries.ndcg@10: report 0.6 vs re-run 0.8" in captured.err
    assert (tmp_path / "kept" / "reports" / "r" / "metrics.json").is_file()
    (run / "notes.txt").write_text("added")
    assert main(["reproduce", str(run)]) == 2
    assert "notes.txt: not written by the run" in capsys.readouterr().err


def test_reproduce_refuses_another_catalog(tiny, monkeypatch, tmp_path):
    from workbench.catalog import write_catalog

    run = _run(tiny, "r", monkeypatch)
    tables = small_catalog_tables(5)  # one product more: other data
    other = write_catalog(tmp_path / "other", name="small", **tables)
    with pytest.raises(ReportError, match="not the ones the report was made from"):
        reproduce(run, catalog=other, progress=False)
    # The catalog itself changed after the run: its table no longer matches the manifest.
    shutil.copy(other / "products.parquet", tiny[1] / "products.parquet")
    with pytest.raises(CatalogError, match="products.parquet"):
        reproduce(run, progress=False)


def test_reproduce_refuses_changed_media(tiny, monkeypatch):
    run = _run(tiny, "r", monkeypatch)
    (tiny[1] / "media").mkdir(exist_ok=True)
    (tiny[1] / "media" / "new.png").write_bytes(b"not recorded")
    with pytest.raises(CatalogError, match="new.png"):
        reproduce(run, progress=False)


def test_compare_two_runs(tiny, monkeypatch, capsys):
    a = _run(tiny, "a", monkeypatch)
    b = _run(tiny, "b", monkeypatch, drift="0.2")
    result = compare_runs(a, b)
    assert not result.ok
    outside = {r.key for r in result.comparison.outside()}
    assert outside == {"results.queries.ndcg@10", "notebooks.01_stage.ndcg@10", "run"}
    (paired,) = result.paired
    assert paired["task"] == "queries" and paired["metric"] == "reranked_ndcg@10"
    assert paired["n"] == 4 and paired["diff"] == pytest.approx(0.2)
    assert main(["compare", str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert "paired randomisation tests" in out and "reranked_ndcg@10" in out


def test_compare_refuses_other_catalogs_and_other_metric_sets(tiny, monkeypatch, tmp_path, capsys):
    from workbench.catalog import write_catalog

    a = _run(tiny, "a", monkeypatch)
    other = write_catalog(tmp_path / "other", name="small", **small_catalog_tables(5))
    b = _run(tiny, "b", monkeypatch, catalog=other)
    with pytest.raises(ReportError, match="made from different catalogs"):
        compare_runs(a, b)
    c = _run(tiny, "c", monkeypatch, extra="mrr@10")
    with pytest.raises(ReportError, match=r"lacks 1 metric\(s\) of c, e.g. \['results.queries.mrr@10'\]"):
        compare_runs(a, c)
    assert main(["compare", str(a), str(b)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def _catalog_with_relevance_7(folder):
    """A catalog whose qrels hold relevance 7, written behind the writer's back (it would refuse it)."""
    import polars as pl

    from workbench.catalog import write_catalog
    from workbench.files import sha256_file

    bad = write_catalog(folder, name="bad", **small_catalog_tables())
    qrels = pl.read_parquet(bad / "qrels.parquet").with_columns(pl.lit(7, dtype=pl.Int8).alias("relevance"))
    qrels.write_parquet(bad / "qrels.parquet")
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["sha256"]["qrels.parquet"] = sha256_file(bad / "qrels.parquet")
    (bad / "manifest.json").write_text(json.dumps(manifest))
    return bad


def test_workbench_run_refuses_an_invalid_catalog_listing_its_problems(tmp_path, capsys):
    bad = _catalog_with_relevance_7(tmp_path / "bad")
    assert main(["run", "--catalog", str(bad), "--run", "refused-test"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"error: catalog {bad.resolve()}: 1 problem(s); refusing to train and report on it")
    assert "--allow-problems" in err[0]
    assert err[1].startswith("problem: ") and "relevance" in err[1] and "0..3" in err[1]
    assert "Traceback" not in "\n".join(err)


def test_a_refused_catalog_leaves_the_previous_report(tiny, monkeypatch, tmp_path):
    from workbench.errors import CatalogProblemsError

    nbs, _, reports = tiny
    run = _run(tiny, "r", monkeypatch)
    before = (run / "run.json").read_bytes()
    bad = _catalog_with_relevance_7(tmp_path / "bad")
    with pytest.raises(CatalogProblemsError) as err:
        run_series(catalog=bad, run_name="r", notebooks=["01_stage"], reports_root=reports,
                   notebooks_dir=nbs, progress=False)
    assert "1 problem(s); refusing" in str(err.value) and "--allow-problems" in str(err.value)
    assert any("relevance" in p for p in err.value.problems)
    assert (run / "run.json").read_bytes() == before  # the earlier report is untouched
    # Overridden, the run goes ahead and its record and validation say so.
    run_series(catalog=bad, run_name="r", notebooks=["01_stage"], reports_root=reports,
               notebooks_dir=nbs, progress=False, allow_problems=True)
    record = read_run_record(run)
    assert record["allow_problems"] is True and any("relevance" in p for p in record["catalog_problems"])
    validation = json.loads((run / "validation.json").read_text())
    assert validation["allowed"] is True and validation["problems"]
