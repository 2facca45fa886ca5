"""Open reports in headless Debian chromium (Playwright, no browser download): every figure
renders (after the page unpacks its gzip-packed plotly.js), the page makes no network
request, and the atlas's hover thumbnail appears beside the cursor.

Checks a report generated here (reports/browser-check/) and every
reports/<run>/index.html that a `workbench run` / `make demo` left behind.
Skipped with a reason when /usr/bin/chromium or playwright is missing
(`make test` installs chromium when it can).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
REPORTS = ROOT / "reports"
CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _skip_reason() -> str | None:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} not found (apt-get install chromium; `make test` tries to)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        return f"playwright is not importable: {exc}"
    return None


SKIP = _skip_reason()
# reports/<run>/index.html: `workbench run`, or notebook 07 run by hand or under nbval
# (reports/synthetic-ci/); reports/index.html: a report an older layout left.
DEMO_REPORTS = sorted(
    p
    for p in [*REPORTS.glob("index.html"), *REPORTS.glob("*/index.html")]
    if p.parent.name != "browser-check"
)


@pytest.fixture(scope="module")
def browser():
    if SKIP:
        pytest.skip(SKIP)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def generated_report():
    if SKIP:
        pytest.skip(SKIP)
    import plotly.graph_objects as go

    from workbench.report import figures_from_results, modality_figure, write_report

    out = REPORTS / "browser-check"
    shutil.rmtree(out, ignore_errors=True)
    nb = out / "03_fusion"
    nb.mkdir(parents=True)
    (nb / "metrics.json").write_text('{"ablation": {"fused": {"recall@10": 0.8}}}')
    # A figure saved the way a notebook would, with its plotly.js from the CDN:
    # the report must re-embed it without that external script.
    go.Figure(go.Bar(x=["text", "fused"], y=[0.4, 0.8])).write_html(
        nb / "ablation.html", include_plotlyjs="cdn", div_id="ablation"
    )
    _atlas(out / "04_embedding_space" / "atlas.html")
    # A figure with a script of its own: kept as its HTML, run once plotly.js is unpacked.
    (out / "06_scann_index").mkdir()
    go.Figure(go.Scatter(x=[1, 2], y=[0.9, 0.99])).write_html(
        out / "06_scann_index" / "sweep.html", include_plotlyjs=True, div_id="sweep",
        post_script="document.getElementById('{plot_id}').dataset.own = 'ran';",
    )
    results = {
        "queries": {
            "intervals": {
                stage: {
                    "ndcg@10": {
                        "mean": m,
                        "low": m - 0.05,
                        "high": m + 0.05,
                        "n": 50,
                        "confidence": 0.95,
                    }
                }
                for stage, m in (("retrieval", 0.4), ("reranked", 0.5))
            }
        }
    }
    latency = {
        "queries": {
            s: {"p50_ms": 1.0, "p95_ms": 2.0, "p99_ms": 4.0, "n": 50}
            for s in ("retrieve", "rerank", "total")
        }
    }
    figures = figures_from_results(results, latency)
    figures["modalities"] = modality_figure(
        {"wins": {"text": 3, "image": 2}, "mean_ndcg": {"text": 0.3}}
    )
    return write_report(out, results=results, figures=figures, timings={"latency": latency})


def _atlas(path: Path) -> None:
    """Two maps of the same items with hover thumbnails, saved the way notebook 04 saves them."""
    import numpy as np
    import polars as pl

    from workbench.viz import embedding_scatter, image_data_uri, save_figures_html

    rng = np.random.default_rng(0)
    n = 40
    labels = pl.DataFrame({"title": [f"item {i}" for i in range(n)],
                           "category": ["home/chairs", "home/rugs"] * (n // 2)})
    thumbs = [image_data_uri(np.full((16, 16, 3), 6 * i, dtype=np.uint8), size=16) for i in range(n)]
    maps = {f"atlas-{m}": embedding_scatter(rng.normal(size=(n, 2)), labels, thumbnails=thumbs,
                                            title=f"{m} space, coloured by category")
            for m in ("text", "fused")}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figures_html(maps, path, "atlas")


def _check(browser, report: Path, screenshot: Path) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    requests: list[str] = []
    errors: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(report.resolve().as_uri(), wait_until="load")
    n_figs = page.locator(".plotly-graph-div").count()
    assert n_figs > 0, f"{report}: no plotly figure in the page"
    page.wait_for_function(
        "() => [...document.querySelectorAll('.plotly-graph-div')]"
        ".every(d => d.querySelector('.plot-container svg.main-svg'))",
        timeout=60_000,
    )
    rendered = page.evaluate(
        "() => [...document.querySelectorAll('.plotly-graph-div')]"
        ".map(d => [d.id, d.querySelectorAll('.plot-container svg').length])"
    )
    assert all(n > 0 for _, n in rendered), rendered
    assert len(rendered) == n_figs
    page.wait_for_function("() => document.body.dataset.figures === 'drawn'", timeout=30_000)
    external = [u for u in requests if not u.startswith(("file://", "data:", "about:", "blob:"))]
    assert not external, f"{report}: network requests {external[:5]}"
    assert not errors, f"{report}: JavaScript errors {errors[:3]}"
    own = page.evaluate("() => [...document.querySelectorAll('[data-own]')].map(d => d.dataset.own)")
    assert own == ["ran"] * report.read_text().count("dataset.own = 'ran'")
    page.screenshot(path=str(screenshot), full_page=False)
    assert screenshot.stat().st_size > 10_000
    page.close()


def test_generated_report_renders_offline(browser, generated_report):
    _check(browser, generated_report, generated_report.parent / "screenshot.png")
    # 3 built figures + 1 pulled from the fusion notebook + 2 atlas maps + the sweep
    assert "ablation" in generated_report.read_text()
    assert "wbDeferred.push" in generated_report.read_text()


def test_atlas_thumbnail_shows_beside_the_cursor(browser, generated_report):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(generated_report.resolve().as_uri(), wait_until="load")
    page.wait_for_function("() => document.body.dataset.figures === 'drawn'", timeout=60_000)
    page.evaluate("document.getElementById('atlas-fused').scrollIntoView()")
    # screen position of every point of the map (plotly's own axis conversions)
    points = page.evaluate(
        """() => { const gd = document.getElementById('atlas-fused'), out = [];
        const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, r = gd.getBoundingClientRect();
        gd._fullData.forEach(t => t.x.forEach((x, i) => out.push(
            [r.left + xa._offset + xa.l2p(x), r.top + ya._offset + ya.l2p(t.y[i])])));
        return out; }"""
    )
    for x, y in points:
        page.mouse.move(x, y)
        page.wait_for_timeout(100)
        box = page.evaluate(
            """() => { const img = document.getElementById('atlas-fused-thumbnail');
            const r = img.getBoundingClientRect();
            return {shown: img.style.display === 'block', left: r.left, right: r.right, top: r.top,
                    bottom: r.bottom, src: img.src.slice(0, 22)}; }"""
        )
        if box["shown"]:
            break
    else:
        raise AssertionError("hovering the atlas never showed a thumbnail")
    assert box["src"] == "data:image/png;base64,"  # looked up in the page's table of thumbnails
    assert box["right"] <= x and x - box["right"] < 60, (x, box)  # just left of the cursor
    assert box["top"] < y < box["bottom"], (y, box)
    assert not errors, errors
    page.close()


def test_demo_reports_render_offline(browser):
    if not DEMO_REPORTS:
        pytest.skip(
            "no reports/<run>/index.html yet: `workbench run` (make demo) or notebook 07 writes one"
        )
    for report in DEMO_REPORTS:
        _check(browser, report, report.parent / "screenshot.png")
