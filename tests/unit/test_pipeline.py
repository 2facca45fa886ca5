"""The series runner on two tiny notebooks: parameters injected, copies kept, failures named."""

from __future__ import annotations

import json

import pytest

from tests.conftest import write_notebook as _notebook
from workbench.errors import ConfigError, WorkbenchError
from workbench.pipeline import run_series


@pytest.fixture()
def series(tmp_path, small_catalog):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _notebook(
        nbs / "01_first.ipynb",
        [
            "import json, os, pathlib\n"
            "out = pathlib.Path(REPORT_DIR) / '01_first'\n"
            "out.mkdir(parents=True, exist_ok=True)\n"
            "(out / 'metrics.json').write_text(json.dumps({'profile': PROFILE, 'work': WORK_DIR,"
            " 'catalog': CATALOG_DIR, 'cwd': os.getcwd(), 'env': os.environ['WORKBENCH_PROFILE'],"
            " 'generate': GENERATE_SYNTHETIC}))"
        ],
        extra_parameters="\nGENERATE_SYNTHETIC = True",
    )
    _notebook(
        nbs / "02_second.ipynb",
        ["import pathlib\n(pathlib.Path(REPORT_DIR) / 'index.html').write_text('<html></html>')"],
    )
    _notebook(nbs / "03_broken.ipynb", ["x = 1", "y = 2\nraise ValueError('bad input in cell')"])
    return nbs, small_catalog, tmp_path / "reports"


def test_runs_in_order_with_parameters(series, tmp_path):
    nbs, catalog, reports = series
    out = run_series(
        "full",
        catalog=catalog,
        run_name="r1",
        notebooks=["01_first", "02_second.ipynb"],
        reports_root=reports,
        work_dir=tmp_path / "work",
        notebooks_dir=nbs,
        progress=False,
    )
    assert out == reports / "r1" / "index.html"
    got = json.loads((reports / "r1" / "01_first" / "metrics.json").read_text())
    assert got == {
        "profile": "full",
        "work": str(tmp_path / "work"),
        "catalog": str(catalog.resolve()),
        "cwd": str(nbs),
        "env": "full",
        "generate": False,  # a catalog the caller names is never regenerated
    }
    assert (reports / "r1" / "notebooks" / "01_first.ipynb").is_file()
    assert (reports / "r1" / "notebooks" / "02_second.ipynb").is_file()
    timing = json.loads((reports / "r1" / "series.json").read_text())
    assert set(timing["notebooks"]) == {"01_first", "02_second"}


def test_failure_names_notebook_and_cell(series):
    nbs, catalog, reports = series
    with pytest.raises(WorkbenchError) as err:
        run_series(
            catalog=catalog,
            run_name="r2",
            notebooks=["01_first", "03_broken", "02_second"],
            reports_root=reports,
            notebooks_dir=nbs,
            progress=False,
        )
    msg = str(err.value)
    assert "notebook 03_broken failed in cell" in msg
    assert "ValueError: bad input in cell" in msg
    assert "raise ValueError" in msg  # the cell's source
    assert str(reports / "r2" / "notebooks" / "03_broken.ipynb") in msg
    assert not (reports / "r2" / "notebooks" / "02_second.ipynb").exists()  # stopped there
    timing = json.loads((reports / "r2" / "series.json").read_text())
    assert timing["status"] == {"01_first": "ok", "03_broken": "failed"}


def test_bad_arguments(series):
    nbs, catalog, reports = series
    with pytest.raises(ConfigError, match="profile"):
        run_series("gpu", notebooks_dir=nbs)
    with pytest.raises(ConfigError, match="not found"):
        run_series(
            catalog=catalog, notebooks=["09_nothing"], notebooks_dir=nbs, reports_root=reports
        )
    with pytest.raises(ConfigError, match="run name"):
        run_series(catalog=catalog, run_name="../escape", notebooks_dir=nbs, reports_root=reports)
    with pytest.raises(ConfigError, match="not a folder"):
        run_series(catalog=catalog / "missing", notebooks_dir=nbs, reports_root=reports)


def test_two_runs_at_once_from_the_same_notebooks_folder(series, tmp_path):
    """Kernels talk over Unix sockets; two runs started from one folder must not share them."""
    import subprocess
    import sys

    nbs, catalog, reports = series
    script = (
        "import sys; from workbench.pipeline import run_series; "
        f"run_series(catalog={str(catalog)!r}, run_name=sys.argv[1], notebooks=['01_first', '02_second'], "
        f"reports_root={str(reports)!r}, notebooks_dir={str(nbs)!r}, progress=False)"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, name], stderr=subprocess.PIPE, text=True)
             for name in ("p1", "p2")]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    for name in ("p1", "p2"):
        assert json.loads((reports / name / "series.json").read_text())["status"] == {"01_first": "ok", "02_second": "ok"}
    assert not list(nbs.glob("*ipc*"))  # no socket files left in the notebooks' folder


def test_overrides_reach_the_notebooks_that_declare_them_and_the_run_record(series, tmp_path):
    nbs, catalog, reports = series
    _notebook(nbs / "04_epochs.ipynb", [
        "import json, pathlib\nout = pathlib.Path(REPORT_DIR) / '04_epochs'\nout.mkdir(parents=True)\n"
        "(out / 'metrics.json').write_text(json.dumps({'epochs': EPOCHS, 'budget': BUDGET}))"],
        extra_parameters="\nEPOCHS = 12\nBUDGET = {'bpr': 3}")
    run_series(catalog=catalog, run_name="o", notebooks=["01_first", "04_epochs"], reports_root=reports,
               notebooks_dir=nbs, progress=False, overrides={"EPOCHS": 2, "BUDGET": {"bpr": 1}})
    got = json.loads((reports / "o" / "04_epochs" / "metrics.json").read_text())
    assert got == {"epochs": 2, "budget": {"bpr": 1}}  # 01_first does not declare them: untouched
    record = json.loads((reports / "o" / "run.json").read_text())
    assert record["overrides"] == {"EPOCHS": 2, "BUDGET": {"bpr": 1}}


@pytest.mark.parametrize(("overrides", "message"), [
    ({"EPOHCS": 2}, r"parameter EPOHCS: no notebook of this run declares it; expected one of \["),
    ({"CATALOG_DIR": "x"}, r"parameter CATALOG_DIR: set by `workbench run` itself"),
])
def test_bad_overrides_are_refused_before_anything_runs(series, overrides, message):
    nbs, catalog, reports = series
    with pytest.raises(ConfigError, match=message):
        run_series(catalog=catalog, run_name="bad", notebooks=["01_first"], reports_root=reports,
                   notebooks_dir=nbs, progress=False, overrides=overrides)
    assert not (reports / "bad").exists()


def test_cli_parameters_parse_as_json_or_text():
    from workbench.cli import _parameters

    assert _parameters(["EPOCHS=2", "LR=1e-3", "FLAG=true", "NAME=abc", "BUDGET={\"bpr\": 1}"]) == {
        "EPOCHS": 2, "LR": 1e-3, "FLAG": True, "NAME": "abc", "BUDGET": {"bpr": 1}}
    with pytest.raises(ConfigError, match=r"-p 'EPOCHS': expected NAME=VALUE"):
        _parameters(["EPOCHS"])
