"""The query lab in a real JupyterLab, driven by headless Debian chromium (Playwright).

The test writes a tiny catalog and work folder (random towers, embeddings, an exact
index) into a temporary folder, starts `jupyter lab` there on a free port with a random
token, opens a small generated notebook that builds the lab on them, runs every cell,
types a query into the lab's text box, clicks search and checks that product cards
render in the order, with the titles and scores, that the same lab gives when searched in
the test's own process. Nothing is written into the repository; the server (and its kernel) is stopped
at the end. Skipped with a reason when chromium, playwright or JupyterLab is missing.
The screenshot is left at `<tmp>/lab.png` (and copied to `$WORKBENCH_LAB_SCREENSHOT`
when that is set).
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import write_notebook

pytestmark = [pytest.mark.browser, pytest.mark.timeout(150)]

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
QUERY = "a red thing"
LAB_CONFIG = {"k": 6, "candidates": None, "thumbnail": 64}  # the notebook's lab and the expected search's


def _skip_reason() -> str | None:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} not found (apt-get install chromium; `make test` tries to)"
    for module in ("playwright.sync_api", "jupyterlab", "ipywidgets"):
        try:
            if importlib.util.find_spec(module) is None:
                return f"{module} is not installed"
        except ImportError as exc:
            return f"{module} is not importable: {exc}"
    return None


SKIP = _skip_reason()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _work_folder(root: Path) -> tuple[Path, Path]:
    """A tiny catalog (media on most products, queries with qrels) and what notebooks 02-06 would write."""
    import torch

    from tests.unit.encoder_fixtures import make_tiny_catalog, tiny_config
    from workbench.encoders import MultimodalEncoder, embed_catalog, load_encoder, save_encoder
    from workbench.index import IndexConfig, build_index, read_item_embeddings

    cat = make_tiny_catalog(root)
    work = root / "work"
    torch.manual_seed(0)
    save_encoder(MultimodalEncoder(tiny_config()).eval(), work / "encoders")
    enc = load_encoder(work / "encoders", device="cpu")
    embed_catalog(cat, enc, work / "embeddings", batch_size=4, cache_dir=work / "cache", progress=False)
    emb = read_item_embeddings(work / "embeddings")
    build_index(emb.item_ids, emb.vectors, IndexConfig(kind="exact"), items=emb.info).save(work / "index")
    return cat, work


def _notebook(path: Path, cat: Path, work: Path) -> None:
    write_notebook(path, [
        "from workbench.query_lab import LabConfig, QueryLab, build_widget\n"
        f"lab = QueryLab.from_work_dir({str(cat)!r}, {str(work)!r}, LabConfig(**{LAB_CONFIG!r}))",
        "widget = build_widget(lab)\ndisplay(widget)",
    ])


def _expected_result(cat: Path, work: Path):
    """The lab's answer to QUERY computed here, with the widget's default weights (every slider 1.0)."""
    from workbench.query_lab import LabConfig, QueryLab

    lab = QueryLab.from_work_dir(cat, work, LabConfig(**LAB_CONFIG))
    return lab.search(QUERY, weights=lab.default_weights())


@pytest.fixture(scope="module")
def lab_server(tmp_path_factory):
    """(base URL, token, folder) of a JupyterLab server serving a temporary folder."""
    if SKIP:
        pytest.skip(SKIP)
    root = tmp_path_factory.mktemp("query-lab-browser")
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    for var, sub in (("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_RUNTIME_DIR", "runtime"),
                     ("IPYTHONDIR", "ipython")):
        env[var] = str(root / sub)  # nothing read from or written to the user's own Jupyter folders
    argv = [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
            f"--ServerApp.token={token}", f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True",
            f"--LabApp.workspaces_dir={root / 'workspaces'}", f"--LabApp.user_settings_dir={root / 'settings'}",
            "--LabApp.news_url=None"]
    # no "get notified about Jupyter news?" toast (and no attempt to fetch news: the test runs offline)
    notification = root / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True)
    notification.write_text('{"fetchNews": "false"}')
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        argv.append("--allow-root")
    log = open(root / "server.log", "wb")  # closed in the finally below
    proc = subprocess.Popen(argv, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # the catalog and towers are built while the server starts
        cat, work = _work_folder(root / "data")
        _notebook(root / "lab.ipynb", cat, work)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 45
        while True:
            if proc.poll() is not None:
                pytest.fail(f"jupyter lab exited with {proc.returncode}: {(root / 'server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"jupyter lab did not answer in 45 s: {(root / 'server.log').read_text()[-2000:]}")
            time.sleep(0.3)
        yield base, token, root, _expected_result(cat, work)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # the server and the kernels it started
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        except ProcessLookupError:
            pass
        log.close()


def test_lab_renders_cards_in_jupyterlab(lab_server):
    from playwright.sync_api import sync_playwright

    base, token, root, expected = lab_server
    shot = root / "lab.png"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(40_000)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{base}/lab/tree/lab.ipynb?token={token}", wait_until="domcontentloaded")
            page.wait_for_function("() => window.jupyterapp && document.querySelector('.jp-Notebook')")
            # the kernel is up once the toolbar says idle; then run every cell through JupyterLab's own command
            page.wait_for_selector(".jp-Notebook .jp-Cell", state="attached")
            page.wait_for_function(
                "() => window.jupyterapp.shell.currentWidget?.sessionContext?.session?.kernel?.status === 'idle'")
            page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
            box = page.get_by_placeholder("e.g. red striped wooden chair")
            box.wait_for(state="visible", timeout=60_000)  # the lab's text box: the widget rendered
            box.fill(QUERY)
            page.locator(".jupyter-widgets button", has_text="search").first.click()
            page.wait_for_selector(".wb-card", state="visible")
            assert len(expected.cards) == 6
            cards = page.evaluate(
                "() => [...document.querySelectorAll('.wb-card')].map(c => ({item: c.dataset.item,"
                " title: c.querySelector('.wb-title').textContent, score: c.querySelector('.wb-score').textContent,"
                " bars: [...c.querySelectorAll('.wb-bar')].map(b => b.dataset.modality)}))")
            # the kernel's search is the one computed here: the same items, in order, titles and scores
            assert [c["item"] for c in cards] == [c.item_id for c in expected.cards]
            assert [c["title"] for c in cards] == [f"{c.rank}. {c.title}" for c in expected.cards]
            assert [c["score"] for c in cards] == [f"score {c.score:.3f}" for c in expected.cards]
            # one contribution bar per modality the item has
            assert [c["bars"] for c in cards] == [[m for m in expected.modalities if m in c.contributions]
                                                  for c in expected.cards]
            assert any(c["bars"] for c in cards)  # contribution bars drawn
            assert page.locator(".wb-card .wb-title").first.is_visible()
            message = page.locator(".wb-lab-message").first.inner_text()
            assert message == expected.summary() and message.startswith("6 results for 'a red thing'"), message
            page.locator(".wb-card").first.scroll_into_view_if_needed()
            page.screenshot(path=str(shot), full_page=False)
            assert shot.stat().st_size > 10_000
            assert not errors, errors[:3]
        finally:
            browser.close()
    if out := os.environ.get("WORKBENCH_LAB_SCREENSHOT"):
        shutil.copyfile(shot, out)
