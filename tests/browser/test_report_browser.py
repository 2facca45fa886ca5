"""Open reports in headless Debian chromium (Playwright, no browser download): every figure
renders (after the page unpacks its gzip-packed plotly.js), the page makes no network
request, the sections, tables and figures hold what the run's metrics.json holds, and the
atlas's hover thumbnail appears beside the cursor.

Checks a report generated into a temporary folder and every reports/<run>/index.html that a
`workbench run` / `make demo` left behind (read only: their screenshots go to a temporary
folder too). Skipped with a reason when /usr/bin/chromium or playwright is missing
(`make test` installs chromium when it can).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import small_catalog_tables

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
DEMO_REPORTS = sorted([*REPORTS.glob("index.html"), *REPORTS.glob("*/index.html")])

# The numbers the generated report is built from; the page must show each of them.
FUSED_RECALL, TEXT_RECALL = 0.8123, 0.4123  # notebook 03's metrics.json
STAGE_NDCG = {"retrieval": 0.4, "reranked": 0.5}  # the run's own results, +-0.05 intervals
ATLAS_ITEMS = 40


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
def generated_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if SKIP:
        pytest.skip(SKIP)
    import plotly.graph_objects as go

    from workbench.catalog import write_catalog
    from workbench.report import figures_from_results, interval_table, modality_figure, write_report

    root = tmp_path_factory.mktemp("report-browser")
    catalog = write_catalog(root / "catalog", name="small", **small_catalog_tables())
    out = root / "browser-check"
    nb = out / "03_fusion"
    nb.mkdir(parents=True)
    (nb / "metrics.json").write_text(json.dumps(
        {"ablation": {"fused": {"recall@10": FUSED_RECALL}, "text": {"recall@10": TEXT_RECALL}}}))
    # A figure saved the way a notebook would, with its plotly.js from the CDN:
    # the report must re-embed it without that external script.
    go.Figure(go.Bar(x=["text", "fused"], y=[TEXT_RECALL, FUSED_RECALL])).write_html(
        nb / "ablation.html", include_plotlyjs="cdn", div_id="ablation"
    )
    _atlas(out / "04_embedding_space" / "atlas.html")
    # A figure with a script of its own: kept as its HTML, run once plotly.js is unpacked.
    (out / "06_scann_index").mkdir()
    go.Figure(go.Scatter(x=[1, 2], y=[0.9, 0.99])).write_html(
        out / "06_scann_index" / "sweep.html", include_plotlyjs=True, div_id="sweep",
        post_script="document.getElementById('{plot_id}').dataset.own = 'ran';",
    )
    intervals = {
        stage: {"ndcg@10": {"mean": m, "low": m - 0.05, "high": m + 0.05, "n": 50, "confidence": 0.95}}
        for stage, m in STAGE_NDCG.items()
    }
    results = {"queries": {"intervals": intervals}}
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
    return write_report(out, results=results, config={"profile": "ci", "seed": 0},
                        sections=[("Headline", interval_table(intervals))], figures=figures,
                        catalog_dir=catalog, timings={"latency": latency})


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


# What the page shows once drawn: its sections (heading, table rows as cell texts) and
# every figure (its id, the SVG plotly drew, and the data of each trace as plotly holds it).
_PAGE_CONTENT_JS = """() => ({
    title: document.querySelector('h1').textContent,
    header: document.querySelector('h1 + p').textContent.replace(/\\s+/g, ' ').trim(),
    sections: [...document.querySelectorAll('body > section')].map(s => ({
        heading: s.querySelector('h2').textContent,
        rows: [...s.querySelectorAll('tr')].map(tr => [...tr.cells].map(c => c.textContent.trim())),
    })),
    figures: [...document.querySelectorAll('.plotly-graph-div')].map(gd => ({
        id: gd.id,
        svg: gd.querySelectorAll('.plot-container svg.main-svg').length,
        traces: (gd._fullData || []).map(t => ({
            type: t.type, name: t.name,
            x: t.x ? Array.from(t.x) : [], y: t.y ? Array.from(t.y) : [],
        })),
    })),
})"""


def _check(browser, report: Path, screenshot: Path) -> dict:
    """Open `report` offline, wait until every figure is drawn, check no request left the page and no
    script failed; return what the page shows (_PAGE_CONTENT_JS)."""
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
    page.wait_for_function("() => document.body.dataset.figures === 'drawn'", timeout=30_000)
    content = page.evaluate(_PAGE_CONTENT_JS)
    assert len(content["figures"]) == n_figs
    assert all(f["svg"] > 0 for f in content["figures"]), [(f["id"], f["svg"]) for f in content["figures"]]
    external = [u for u in requests if not u.startswith(("file://", "data:", "about:", "blob:"))]
    assert not external, f"{report}: network requests {external[:5]}"
    assert not errors, f"{report}: JavaScript errors {errors[:3]}"
    own = page.evaluate("() => [...document.querySelectorAll('[data-own]')].map(d => d.dataset.own)")
    assert own == ["ran"] * report.read_text().count("dataset.own = 'ran'")
    page.screenshot(path=str(screenshot), full_page=False)
    assert screenshot.stat().st_size > 10_000
    page.close()
    return content


def _section(content: dict, heading: str) -> dict:
    found = [s for s in content["sections"] if s["heading"] == heading]
    assert len(found) == 1, [s["heading"] for s in content["sections"]]
    return found[0]


def test_generated_report_renders_offline(browser, generated_report, tmp_path):
    content = _check(browser, generated_report, tmp_path / "screenshot.png")
    metrics = json.loads((generated_report.parent / "metrics.json").read_text())
    assert content["title"] == "Multimodal retrieval: evaluation report"
    assert f"run browser-check; data fingerprint {metrics['data']['fingerprint'][:16]};" in content["header"]
    assert [s["heading"] for s in content["sections"]] == [
        "Summary", "Headline", "Figures", "Results (every number, as in metrics.json)",
        "Search system and fusion ablation (03)", "Embedding atlas (04)", "ANN sweep (06)",
        "Run configuration", "Data fingerprint", "Environment", "Timings on this machine (not in metrics.json)",
    ]
    # the headline table: one row per metric, "mean [low, high]" per stage, from the results
    intervals = metrics["results"]["queries"]["intervals"]
    assert _section(content, "Headline")["rows"] == [
        ["metric", "retrieval", "reranked"],
        ["ndcg@10"] + [f"{intervals[s]['ndcg@10']['mean']:.4f} [{intervals[s]['ndcg@10']['low']:.4f}, "
                       f"{intervals[s]['ndcg@10']['high']:.4f}]" for s in ("retrieval", "reranked")],
    ]
    assert _section(content, "Headline")["rows"][1] == ["ndcg@10", "0.4000 [0.3500, 0.4500]",
                                                        "0.5000 [0.4500, 0.5500]"]
    # notebook 03's numbers, as its metrics.json (pulled into the run's) holds them
    ablation = metrics["notebooks"]["03_fusion"]["ablation"]
    assert ablation == {"fused": {"recall@10": FUSED_RECALL}, "text": {"recall@10": TEXT_RECALL}}
    assert _section(content, "Search system and fusion ablation (03)")["rows"] == [
        ["", "recall@10"], ["fused", f"{FUSED_RECALL:.4f}"], ["text", f"{TEXT_RECALL:.4f}"]]
    assert ["profile", "ci"] in _section(content, "Run configuration")["rows"]
    fingerprint_rows = _section(content, "Data fingerprint")["rows"]
    assert ["fingerprint", metrics["data"]["fingerprint"]] in fingerprint_rows
    # counts and checksums share one table: a column per table (count) and per file (checksum)
    header = next(r for r in fingerprint_rows if r[:1] == [""])
    by_row = {r[0]: dict(zip(header[1:], r[1:], strict=True)) for r in fingerprint_rows if r[0] in ("counts", "sha256")}
    assert {k: by_row["counts"][k] for k in metrics["data"]["counts"]} == {
        "products": "4", "interactions": "3", "queries": "1", "qrels": "2"}
    assert {k: by_row["sha256"][k] for k in metrics["data"]["sha256"]} == metrics["data"]["sha256"]
    # every figure drawn, each with the data it was built from
    figures = {f["id"]: f for f in content["figures"]}
    assert set(figures) == {
        "fig-queries-metrics-per-stage", "fig-queries-latency", "fig-modalities",
        "ablation", "atlas-text", "atlas-fused", "sweep",
    }
    stages = figures["fig-queries-metrics-per-stage"]["traces"]
    assert [(t["name"], t["x"], t["y"]) for t in stages] == [
        (s, ["ndcg@10"], [STAGE_NDCG[s]]) for s in ("retrieval", "reranked")]
    latency = figures["fig-queries-latency"]["traces"]
    assert [(t["name"], t["y"]) for t in latency] == [("p50", [1.0] * 3), ("p95", [2.0] * 3), ("p99", [4.0] * 3)]
    assert latency[0]["x"] == ["retrieve", "rerank", "total"]
    bars = figures["ablation"]["traces"]
    assert [(t["type"], t["x"], t["y"]) for t in bars] == [("bar", ["text", "fused"], [TEXT_RECALL, FUSED_RECALL])]
    for space in ("text", "fused"):
        assert sum(len(t["x"]) for t in figures[f"atlas-{space}"]["traces"]) == ATLAS_ITEMS
    assert figures["sweep"]["traces"][0]["y"] == [0.9, 0.99]


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


def test_demo_reports_render_offline(browser, tmp_path):
    if not DEMO_REPORTS:
        pytest.skip(
            "no reports/<run>/index.html yet: `workbench run` (make demo) or notebook 07 writes one"
        )
    for n, report in enumerate(DEMO_REPORTS):
        content = _check(browser, report, tmp_path / f"screenshot-{n}.png")
        metrics = json.loads((report.parent / "metrics.json").read_text())
        headings = [s["heading"] for s in content["sections"]]
        assert headings[:1] in (["Summary"], ["Catalog validation"]) and "Data fingerprint" in headings
        if metrics.get("data"):
            assert ["fingerprint", metrics["data"]["fingerprint"]] in _section(content, "Data fingerprint")["rows"]
