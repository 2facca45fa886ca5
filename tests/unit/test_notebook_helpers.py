from __future__ import annotations

import json
import subprocess
import sys

import pytest

from workbench.errors import ConfigError


def test_stop_here_skips_every_later_cell_in_ipython():
    pytest.importorskip("IPython")
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        shell.run_cell("from workbench.notebook import stop_here\nx = 1")
        first = shell.run_cell("stop_here('no interactions')")
        assert first.success
        later = shell.run_cell("x = 2\nraise RuntimeError('must not run')")
        assert later.success and shell.user_ns["x"] == 1
    finally:
        InteractiveShell.clear_instance()


def test_stop_here_exits_zero_outside_ipython_and_records_the_reason(tmp_path):
    code = f"from workbench.notebook import stop_here\nstop_here('nothing to do', {str(tmp_path / 'r')!r})\nraise SystemExit(3)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "stopping here: nothing to do" in done.stdout
    assert json.loads((tmp_path / "r" / "metrics.json").read_text()) == {"skipped": "nothing to do"}


def _begin(tmp_path, needs):
    code = ("from workbench.notebook import begin_stage\n"
            f"s = begin_stage({str(tmp_path / 'r')!r}, {str(tmp_path / 'w')!r}, '04_x', needs={needs!r})\n"
            "print('ran on', s.report_dir.name, s.emb_path.name, s.stopped)")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_begin_stage_stops_without_embeddings_and_names_the_file(tmp_path):
    done = _begin(tmp_path, "embeddings")
    emb = tmp_path / "w" / "embeddings" / "items.parquet"
    assert done.returncode == 0 and "ran on" not in done.stdout
    assert f"stopping here: {emb}: no item embeddings; run notebooks 02 and 03 first" in done.stdout
    assert json.loads((tmp_path / "r" / "04_x" / "metrics.json").read_text())["skipped"].startswith(str(emb))


def test_begin_stage_stops_when_the_earlier_stage_stopped(tmp_path):
    (tmp_path / "r" / "02_encoders").mkdir(parents=True)
    (tmp_path / "r" / "02_encoders" / "metrics.json").write_text(json.dumps({"skipped": "no queries"}))
    done = _begin(tmp_path, "towers")
    assert "stopping here: notebook 02 trained no towers (no queries)" in done.stdout
    (tmp_path / "r" / "06_scann_index").mkdir(parents=True)
    (tmp_path / "r" / "06_scann_index" / "metrics.json").write_text(json.dumps({"skipped": "no vectors"}))
    done = _begin(tmp_path, "index")
    assert "stopping here: no index to evaluate: notebook 06 stopped (no vectors); notebook 05 has" in done.stdout


def test_begin_stage_runs_when_its_input_is_there(tmp_path):
    (tmp_path / "w" / "embeddings").mkdir(parents=True)
    (tmp_path / "w" / "embeddings" / "items.parquet").write_bytes(b"")
    done = _begin(tmp_path, "embeddings")
    assert done.stdout.strip() == "ran on 04_x items.parquet None"
    assert _begin(tmp_path, None).stdout.strip() == "ran on 04_x items.parquet None"
    assert (tmp_path / "r" / "04_x").is_dir()


def test_begin_stage_refuses_an_unknown_need(tmp_path):
    from workbench.notebook import begin_stage

    with pytest.raises(ConfigError, match="needs='vectors'"):
        begin_stage(tmp_path / "r", tmp_path / "w", "04_x", needs="vectors")
