from __future__ import annotations

import json
import subprocess
import sys

import pytest


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
