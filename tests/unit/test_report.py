"""Report: deterministic metrics.json, a self-contained offline HTML page, earlier notebooks pulled in."""

from __future__ import annotations

import json
import re

import numpy as np
import plotly.graph_objects as go
import pytest

from workbench.errors import EvaluationError
from workbench.report import (
    data_fingerprint,
    extract_plotly_figures,
    figures_from_results,
    interval_table,
    to_jsonable,
    write_json,
    write_report,
)

EXTERNAL = re.compile(
    r"""(?:src|href)\s*=\s*["']?(?:https?:)?//|@import|url\(\s*["']?(?:https?:)?//""", re.I
)


def test_json_is_sorted_rounded_and_plain(tmp_path):
    obj = {
        "b": np.float32(0.1234567891),
        "a": {"z": np.int64(3), "y": [np.nan, -0.0000001, np.inf]},
        "c": np.array([1.5, 2.0]),
        "d": True,
    }
    path = write_json(tmp_path / "m.json", obj, digits=4)
    text = path.read_text()
    assert text.index('"a"') < text.index('"b"') < text.index('"c"')
    assert json.loads(text) == {
        "a": {"y": [None, 0.0, None], "z": 3},
        "b": 0.1235,
        "c": [1.5, 2.0],
        "d": True,
    }
    assert "-0.0" not in text and text.endswith("}\n")
    with pytest.raises(EvaluationError, match="cannot write object"):
        to_jsonable({"x": object()})


def _catalog(tmp_path):
    cat = tmp_path / "catalog"
    cat.mkdir()
    manifest = {
        "name": "tiny",
        "schema_version": 1,
        "created": "2026-01-01T00:00:00",
        "counts": {"products": 3},
        "tables": {"products": {"sha256": "ab" * 32, "rows": 3, "written_at": "now"}},
    }
    (cat / "manifest.json").write_text(json.dumps(manifest))
    return cat


def _earlier_notebooks(root):
    fusion = root / "03_fusion"
    fusion.mkdir(parents=True)
    (fusion / "metrics.json").write_text(
        json.dumps({"ablation": {"text": {"recall@10": 0.41}, "fused": {"recall@10": 0.7731}}})
    )
    fig = go.Figure(go.Bar(x=["text", "fused"], y=[0.41, 0.77]))
    # A CDN-linked page: the report must keep the figure and drop the external script.
    fig.write_html(fusion / "ablation.html", include_plotlyjs="cdn", div_id="ablation")
    sweep = root / "06_scann_index"
    sweep.mkdir()
    go.Figure(go.Scatter(x=[1, 2], y=[0.9, 0.99])).write_html(
        sweep / "sweep.html",
        include_plotlyjs=True,
        div_id="ablation",  # same id on purpose
    )


RESULTS = {
    "queries": {
        "intervals": {
            "retrieval": {
                "ndcg@10": {"mean": 0.5, "low": 0.4, "high": 0.6, "n": 9, "confidence": 0.95}
            },
            "reranked": {
                "ndcg@10": {"mean": 0.6, "low": 0.5, "high": 0.7, "n": 9, "confidence": 0.95}
            },
        },
        "metrics": {"reranked": {"ndcg@10": 0.6000001234}},
    }
}


def test_report_is_self_contained_and_pulls_earlier_notebooks(tmp_path):
    run = tmp_path / "reports" / "run1"
    _earlier_notebooks(run)
    latency = {
        "queries": {
            s: {"p50_ms": 1.0, "p95_ms": 2.0, "p99_ms": 3.0, "n": 5}
            for s in ("retrieve", "rerank", "total")
        }
    }
    index = write_report(
        run,
        results=RESULTS,
        config={"profile": "ci", "seed": 0},
        sections=[("Headline", interval_table(RESULTS["queries"]["intervals"]))],
        figures=figures_from_results(RESULTS, latency),
        catalog_dir=_catalog(tmp_path),
        timings={"latency": latency},
    )
    page = index.read_text()
    assert page.count("plotly.js v") == 1  # the library once, inline
    # plotly.js itself holds link strings (logo, map tiles) it never fetches for
    # these charts: scan the page without the library; the browser test watches
    # the real network traffic.
    lib_start = page.index("<script>/**")
    lib_end = page.index("</script>", lib_start)
    rest = page[:lib_start] + page[lib_end:]
    assert not EXTERNAL.search(rest), EXTERNAL.search(rest).group(0)
    assert "<script src" not in page and "<link" not in page
    figs = extract_plotly_figures(page)
    ids = [i for i, _ in figs]
    assert len(ids) == 4 and len(set(ids)) == 4  # 2 built here + 2 pulled (duplicate id renamed)
    assert "0.7731" in page and "Search system and fusion ablation (03)" in page and "ANN sweep (06)" in page
    assert "0.6000 <span class='muted'>[0.5000, 0.7000]</span>" in page
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["notebooks"]["03_fusion"]["ablation"]["fused"]["recall@10"] == 0.7731
    assert metrics["results"]["queries"]["metrics"]["reranked"]["ndcg@10"] == 0.6
    assert metrics["data"]["tables"]["products"] == {"sha256": "ab" * 32, "rows": 3}
    assert "created" not in metrics["data"]
    assert "latency" not in (run / "metrics.json").read_text()
    assert (
        json.loads((run / "timings.json").read_text())["latency"]["queries"]["total"]["p99_ms"]
        == 3.0
    )
    assert "packages" in json.loads((run / "environment.json").read_text())


def test_same_inputs_give_byte_identical_metrics(tmp_path):
    cat = _catalog(tmp_path)
    outs = []
    for name in ("a", "b"):
        run = tmp_path / name
        _earlier_notebooks(run)
        rng = np.random.default_rng(0)
        res = {"queries": {"x": rng.uniform(size=3), "y": float(rng.uniform())}}
        write_report(
            run,
            results=res,
            config={"seed": 0},
            catalog_dir=cat,
            run_name="demo",
            timings={"wall_s": float(rng.uniform())},
        )
        outs.append((run / "metrics.json").read_bytes())
    assert outs[0] == outs[1]


def test_fingerprint_changes_with_the_data_and_missing_manifest(tmp_path):
    cat = _catalog(tmp_path)
    before = data_fingerprint(cat)["fingerprint"]
    m = json.loads((cat / "manifest.json").read_text())
    m["tables"]["products"]["sha256"] = "cd" * 32
    (cat / "manifest.json").write_text(json.dumps(m))
    assert data_fingerprint(cat)["fingerprint"] != before
    with pytest.raises(EvaluationError, match="manifest not found"):
        data_fingerprint(tmp_path / "nowhere")


def test_bad_metrics_json_of_a_notebook_is_named(tmp_path):
    (tmp_path / "05_rankers").mkdir()
    (tmp_path / "05_rankers" / "metrics.json").write_text("{not json")
    with pytest.raises(EvaluationError, match="05_rankers"):
        write_report(tmp_path, results={})


def test_pulled_figure_ids_renamed_in_one_pass():
    from workbench.report import _rename_div

    frag = (
        '<div id="a" class="plotly-graph-div"></div><script>Plotly.newPlot("a");'
        "var gd=document.getElementById('a');img.id='a-thumbnail';x='ab'</script>"
    )
    out = _rename_div(frag, "a", "a-2")
    assert out == (
        '<div id="a-2" class="plotly-graph-div"></div><script>Plotly.newPlot("a-2");'
        "var gd=document.getElementById('a-2');img.id='a-2-thumbnail';x='ab'</script>"
    )


def test_timings_of_earlier_notebooks_move_to_timings_json(tmp_path):
    from workbench.report import split_timings

    metrics = {
        "exact_qps": 123.4,
        "k": 10,
        "sweep": [{"qps": 5.0, "recall@10": 0.9}, {"build_s": 0.1, "recall@10": 0.95}],
        "train": {"samples_per_s": 9.0, "final_loss": 0.3},
        "timing_keys": ["chosen"],
        "chosen": {"num_leaves": 20},
    }
    kept, moved = split_timings(metrics)
    assert kept == {
        "k": 10,
        "sweep": [{"recall@10": 0.9}, {"recall@10": 0.95}],
        "train": {"final_loss": 0.3},
    }
    assert moved["exact_qps"] == 123.4 and moved["sweep"] == [{"qps": 5.0}, {"build_s": 0.1}]
    assert moved["chosen"] == {"num_leaves": 20}  # named by timing_keys
    nb = tmp_path / "06_scann_index"
    nb.mkdir()
    (nb / "metrics.json").write_text(json.dumps(metrics))
    write_report(tmp_path, results={})
    assert "qps" not in (tmp_path / "metrics.json").read_text()
    timings = json.loads((tmp_path / "timings.json").read_text())
    assert timings["notebooks"]["06_scann_index"]["exact_qps"] == 123.4


def test_validation_outcome_opens_the_report_and_per_query_results_are_written(tmp_path):
    import polars as pl

    run = tmp_path / "run"
    run.mkdir()
    (run / "validation.json").write_text(json.dumps({
        "catalog": "c", "allowed": True, "warnings": ["products, column 'description', rows 2: empty"],
        "problems": ["qrels.parquet, column 'relevance', rows 1: relevance outside 0..3"]}))
    per_query = pl.DataFrame({"task": ["queries"], "query_id": ["q1"], "reranked_ndcg@10": [0.5]})
    index = write_report(run, results=RESULTS, per_query=per_query)
    page = index.read_text()
    first_section = page[page.index("<section"):page.index("</section>")]
    assert "Catalog validation" in first_section
    assert "This run was made with --allow-problems" in first_section
    assert "relevance outside 0..3" in first_section and "1 warnings" in first_section
    assert pl.read_parquet(run / "per_query.parquet").equals(per_query)
    env = json.loads((run / "environment.json").read_text())
    assert {"cpu_model", "isa_flags", "pinned", "torch_threads", "packages"} <= set(env)
    (run / "validation.json").write_text(json.dumps({"problems": [], "warnings": [], "allowed": False}))
    assert "The catalog passed validation" in write_report(run, results=RESULTS).read_text()


def test_the_search_selection_is_stated_first_in_its_section(tmp_path):
    from workbench.report import selection_html

    selection = {
        "chosen": "text", "reason": "highest ndcg@10 on 40 validation queries (0.6100)", "metric": "ndcg@10",
        "test": {"text": {"kind": "single", "ndcg@10": 0.6, "ndcg@10_low": 0.5, "ndcg@10_high": 0.7,
                          "recall@10": 0.4, "n": 40},
                 "bm25": {"kind": "lexical", "ndcg@10": 0.5, "ndcg@10_low": 0.4, "ndcg@10_high": 0.6,
                          "recall@10": 0.3, "n": 40}},
        "comparisons": {"vs BM25": {"name_a": "bm25", "diff": 0.1, "low": 0.02, "high": 0.18, "p_value": 0.01}},
    }
    page = selection_html(selection)
    assert "<b>text</b> was chosen on the validation queries" in page
    assert "One modality alone, text, is best on this catalog: no fusion helped." in page
    assert "vs BM25 (bm25): +0.1000 (95% CI +0.0200 to +0.1800, p=0.010): better" in page
    assert "text ◀ chosen" in page and page.index("text ◀ chosen") < page.index("bm25</td>")
