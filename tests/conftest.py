"""Shared test set-up and fixtures.

`import workbench` comes first so that the deterministic kernel and thread
settings (workbench.reproducibility) are in the environment before any test
module imports torch, numpy or numba, and before tests start subprocesses or
notebook kernels, which inherit them.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import nbformat
import polars as pl
import pytest

import workbench  # noqa: F401  (pins the deterministic settings; see the docstring)

REPO = Path(__file__).resolve().parents[1]
# The real samples (FSDD, MovieLens, fashion products, H&M) live beside the repository, never in it.
SHARED_DATA = REPO.parent / "shared" / "data"


_UNGROUPED = pytest.StashKey[str]()


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under `--dist loadgroup`, fail the tests whose xdist_group mark is not honoured: each
    group's module fixture (a whole notebook series) would otherwise be built once per worker,
    at twice the cost, without a sign.

    pytest-xdist groups by appending "@group" to the node ids on the workers; pytest 9.2 stopped
    honouring that (pytest-dev/pytest-xdist#1386), hence the pin in constraints.txt."""
    if not config.getoption("loadgroup", default=False) or not hasattr(config, "workerinput"):
        return
    for item in items:
        if item.get_closest_marker("xdist_group") and "@" not in item.nodeid:
            item.stash[_UNGROUPED] = (f"--dist loadgroup did not group {item.nodeid}: pytest {pytest.__version__} "
                                      f"with this pytest-xdist ignores xdist_group; use the pytest pinned in "
                                      f"constraints.txt")


def pytest_runtest_setup(item: pytest.Item) -> None:
    # Before the fixtures are set up (this hook runs ahead of pytest's own), so nothing costly starts.
    if _UNGROUPED in item.stash:
        pytest.fail(item.stash[_UNGROUPED], pytrace=False)


def shared_data(name: str, needs: str | None = None) -> Path:
    """`../shared/data/<name>`; the test is skipped, naming what is missing, when that folder
    (or `needs`, a file or folder inside it) is absent."""
    folder = SHARED_DATA / name
    wanted = folder / needs if needs else folder
    if not wanted.exists():
        pytest.skip(f"{wanted} is absent (the real samples live in {SHARED_DATA}, beside the repository)")
    return folder


@pytest.fixture
def one_thread():
    """One torch intra-op thread for the test: tiny models on the shared 2-core machine only
    spin-wait with more (test modules opt in with `pytestmark = pytest.mark.usefixtures("one_thread")`)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_notebook(path: Path, cells: list[str], extra_parameters: str = "") -> Path:
    """A notebook with the series' `parameters` cell (PROFILE, CATALOG_DIR, WORK_DIR, REPORT_DIR)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell(
        'PROFILE = "ci"\nCATALOG_DIR = "x"\nWORK_DIR = "y"\nREPORT_DIR = "z"' + extra_parameters
    )
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# t"), params] + [nbformat.v4.new_code_cell(c) for c in cells]
    nbformat.write(nb, path)
    return path


def small_catalog_tables(n: int = 4) -> dict[str, pl.DataFrame]:
    """The four tables of a small valid catalog (no media)."""
    t0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    return {
        "products": pl.DataFrame({
            "item_id": [f"i{k}" for k in range(n)],
            "title": [f"title {k}" for k in range(n)],
            "description": [f"description {k}" for k in range(n)],
            "category": ["home/chairs"] * n,
            "attributes": [json.dumps({"colour": "red"})] * n,
        }),
        "interactions": pl.DataFrame({
            "user_id": ["u1", "u1", "u2"],
            "item_id": ["i0", "i1", "i2"],
            "timestamp": [t0, t0 + dt.timedelta(hours=1), t0],
            "event": ["view", "click", "view"],
        }),
        "queries": pl.DataFrame({"query_id": ["q1"], "text": ["red chair"]}),
        "qrels": pl.DataFrame({"query_id": ["q1", "q1"], "item_id": ["i0", "i1"], "relevance": [3, 1]}),
    }


@pytest.fixture()
def small_catalog(tmp_path: Path) -> Path:
    """A small valid catalog folder written by `write_catalog`."""
    from workbench.catalog import write_catalog

    return write_catalog(tmp_path / "catalog", name="small", **small_catalog_tables())
