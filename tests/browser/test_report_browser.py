"""Open reports in headless Debian chromium (Playwright, no browser download): every figure
renders and the page makes no network request.

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
# reports/index.html: notebook 07 run on its own (REPORT_DIR=../reports);
# reports/<run>/index.html: `workbench run`.
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
    external = [u for u in requests if not u.startswith(("file://", "data:", "about:", "blob:"))]
    assert not external, f"{report}: network requests {external[:5]}"
    assert not errors, f"{report}: JavaScript errors {errors[:3]}"
    page.screenshot(path=str(screenshot), full_page=False)
    assert screenshot.stat().st_size > 10_000
    page.close()


def test_generated_report_renders_offline(browser, generated_report):
    _check(browser, generated_report, generated_report.parent / "screenshot.png")
    # 3 built figures + 1 pulled from the fusion notebook
    assert "ablation" in generated_report.read_text()


def test_demo_reports_render_offline(browser):
    if not DEMO_REPORTS:
        pytest.skip(
            "no reports/<run>/index.html yet: `workbench run` (make demo) or notebook 07 writes one"
        )
    for report in DEMO_REPORTS:
        _check(browser, report, report.parent / "screenshot.png")
