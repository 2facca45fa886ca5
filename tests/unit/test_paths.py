"""One layout for every entry point: the command line, `workbench run`, notebooks opened by
hand (JupyterLab, nbval) and the tests resolve data/ and reports/ the same way."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jupytext
import pytest

from tests.conftest import write_notebook
from workbench.errors import ConfigError
from workbench.notebook import RUN_DIR_VARIABLE, stage_folder
from workbench.paths import (
    data_dir,
    default_catalog_dir,
    default_report_dir,
    default_work_dir,
    home,
    project_root,
    reports_dir,
)
from workbench.pipeline import run_series

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def test_home_is_the_checkout_unless_workbench_home_says_otherwise(tmp_path, monkeypatch):
    monkeypatch.delenv("WORKBENCH_HOME", raising=False)
    assert home() == project_root()
    assert reports_dir() == project_root() / "reports" and data_dir() == project_root() / "data"
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path))
    assert default_catalog_dir("full") == tmp_path / "data" / "catalogs" / "synthetic-full"
    assert default_work_dir("/anywhere/my-shop") == tmp_path / "data" / "work" / "my-shop"
    assert default_report_dir("/anywhere/my-shop") == tmp_path / "reports" / "my-shop"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WORKBENCH_HOME", "runs")  # relative: to the working directory
    assert reports_dir() == tmp_path / "runs" / "reports"


def test_a_home_that_is_a_file_is_refused(tmp_path, monkeypatch):
    (tmp_path / "f").write_text("x")
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "f"))
    with pytest.raises(ConfigError, match=r"WORKBENCH_HOME=.*f'.*is not a folder"):
        home()


def _parameters(twin: Path) -> dict:
    """The notebook's `parameters` cell, executed as a kernel opened by hand would."""
    nb = jupytext.read(twin)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    namespace: dict = {}
    exec(compile(cell.source, str(twin), "exec"), namespace)  # noqa: S102 (our own notebook)
    return namespace


@pytest.mark.parametrize("twin", sorted(NOTEBOOKS.glob("0*.py")), ids=lambda p: p.stem)
def test_a_notebook_opened_by_hand_writes_where_workbench_run_does(twin, tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path))
    monkeypatch.setenv("WORKBENCH_PROFILE", "ci")
    monkeypatch.chdir(tmp_path)  # JupyterLab's working directory does not matter
    got = _parameters(twin)
    catalog = tmp_path / "data" / "catalogs" / "synthetic-ci"
    assert Path(got["CATALOG_DIR"]) == catalog
    assert Path(got["WORK_DIR"]) == default_work_dir(catalog) == tmp_path / "data" / "work" / "synthetic-ci"
    # `workbench run` on the default catalog writes reports/<catalog folder name>/<notebook>/
    assert Path(got["REPORT_DIR"]) == tmp_path / "reports" / "synthetic-ci"


def test_workbench_run_defaults_to_the_home_folder(tmp_path, monkeypatch, small_catalog):
    home_dir = tmp_path / "home"
    monkeypatch.setenv("WORKBENCH_HOME", str(home_dir))
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    write_notebook(nbs / "01_only.ipynb", [
        "import json, pathlib\nout = pathlib.Path(REPORT_DIR) / '01_only'\nout.mkdir(parents=True)\n"
        "(out / 'metrics.json').write_text(json.dumps({'work': WORK_DIR}))"])
    run_series("ci", catalog=small_catalog, notebooks=["01_only"], notebooks_dir=nbs, progress=False)
    run = home_dir / "reports" / small_catalog.name
    assert json.loads((run / "01_only" / "metrics.json").read_text()) == {"work": str(default_work_dir(small_catalog))}
    assert str(default_work_dir(small_catalog)).startswith(str(home_dir / "data" / "work"))


def test_a_run_folder_a_notebook_wrote_by_hand_is_taken_over_by_workbench_run(tmp_path, small_catalog):
    reports = tmp_path / "reports"
    stage_folder(reports / "r", "05_rankers")  # what a notebook run in JupyterLab leaves
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    write_notebook(nbs / "01_only.ipynb", ["x = 1"])
    run_series("ci", catalog=small_catalog, run_name="r", notebooks=["01_only"], reports_root=reports,
               notebooks_dir=nbs, progress=False)
    assert (reports / "r" / "run.json").is_file() and not (reports / "r" / "05_rankers").exists()


def test_rewriting_a_recorded_run_by_hand_drops_its_record(tmp_path, monkeypatch, capsys):
    run = tmp_path / "reports" / "demo"
    (run / "05_rankers").mkdir(parents=True)
    (run / "run.json").write_text("{}")
    monkeypatch.setenv(RUN_DIR_VARIABLE, str(run.resolve()))  # inside `workbench run`: kept
    assert stage_folder(run, "05_rankers") == run / "05_rankers" and (run / "run.json").is_file()
    monkeypatch.delenv(RUN_DIR_VARIABLE)
    assert stage_folder(run, "06_scann_index").is_dir()
    assert not (run / "run.json").exists()
    assert "run.json: removed; notebook 06_scann_index rewrites this run's files" in capsys.readouterr().out
    assert os.environ.get(RUN_DIR_VARIABLE) is None
