"""The `workbench` command line: exit codes, one-line errors, JSON output."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import polars as pl
import pytest
from PIL import Image

from workbench.catalog import write_catalog
from workbench.cli import main


@pytest.fixture
def catalog(tmp_path):
    media = tmp_path / "src" / "images"
    media.mkdir(parents=True)
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(media / "a.png")
    products = pl.DataFrame(
        {
            "item_id": ["a", "b"],
            "title": ["red chair", "blue lamp"],
            "description": ["a chair", "a lamp"],
            "category": ["home/chairs", "home/lamps"],
            "image": ["media/images/a.png", None],
        }
    )
    return write_catalog(tmp_path / "cat", products=products, media_from=tmp_path / "src")


def test_info_json(catalog, capsys):
    assert main(["catalog", "info", str(catalog), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["counts"] == {"products": 2}
    assert info["modality_coverage"] == {"text": 1.0, "image": 0.5, "audio": 0.0}
    assert info["categories"] == 2


def test_validate_ok_and_problem_exit_codes(catalog, capsys):
    assert main(["catalog", "validate", str(catalog), "--quiet"]) == 0
    (catalog / "media" / "images" / "a.png").write_bytes(b"broken")
    assert main(["catalog", "validate", str(catalog), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "media/images/a.png" in err and "'a'" in err and "1 problem(s) found" in err


def test_errors_are_one_line_without_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "workbench", "catalog", "info", str(tmp_path / "missing")],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: catalog folder {tmp_path / 'missing'} does not exist or is not a folder"]
    assert "Traceback" not in proc.stderr


def test_validate_in_a_real_process_prints_one_line_per_problem_and_warning(catalog):
    (catalog / "media" / "images" / "a.png").write_bytes(b"broken")
    proc = subprocess.run(
        [sys.executable, "-m", "workbench", "catalog", "validate", str(catalog)],
        capture_output=True, text=True,
    )
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert len(lines) == 2 and lines[0].startswith("problem: media/images/a.png, column 'image'")
    assert lines[1] == f"{catalog}: 1 problem(s) found"


def test_exit_codes_are_in_the_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for code in ("0  success", "1  `catalog validate` found problems", "2  bad input", "3  internal error"):
        assert code in out


def test_debug_shows_the_traceback(tmp_path):
    from workbench.errors import CatalogError

    with pytest.raises(CatalogError):
        main(["--debug", "catalog", "info", str(tmp_path / "missing")])


def test_unknown_import_format_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["catalog", "import", "nope", "src", "--out", "x"])
    assert exc.value.code == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err
