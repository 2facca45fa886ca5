"""Report: deterministic metrics.json, a self-contained offline HTML page, earlier notebooks pulled in."""

from __future__ import annotations

import json
import re

import numpy as np
import plotly.graph_objects as go
import polars as pl
import pytest
from plotly.offline import get_plotlyjs

from tests.conftest import small_catalog_tables
from workbench.catalog import write_catalog
from workbench.errors import EvaluationError
from workbench.report import (
    data_fingerprint,
    extract_plotly_figures,
    figures_from_results,
    interval_table,
    report_figure_specs,
    report_thumbnails,
    thin_scatter,
    to_jsonable,
    write_json,
    write_report,
)
from workbench.report.page_figures import _unpack

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


def test_report_is_self_contained_and_pulls_earlier_notebooks(tmp_path, small_catalog):
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
        catalog_dir=small_catalog,
        timings={"latency": latency},
    )
    page = index.read_text()
    # The library once, inline, gzip-packed: exactly plotly's own plotly.js once unpacked.
    assert page.count('id="wb-plotlyjs"') == 1 and "<script src" not in page and "<link" not in page
    lib = re.search(r'<script type="application/gzip-base64" id="wb-plotlyjs">([^<]*)</script>', page)
    assert _unpack(lib.group(1)) == get_plotlyjs()
    # plotly.js itself holds link strings (logo, map tiles) it never fetches for
    # these charts: scan the page without the library; the browser test watches
    # the real network traffic.
    rest = page[: lib.start()] + page[lib.end():]
    assert not EXTERNAL.search(rest), EXTERNAL.search(rest).group(0)
    assert "Plotly.newPlot(" not in rest.replace("Plotly.newPlot(gd", "")  # every figure drawn by the loader
    figs = report_figure_specs(page)
    ids = [i for i, _ in figs]
    assert len(ids) == 4 and len(set(ids)) == 4  # 2 built here + 2 pulled (duplicate id renamed)
    assert all(f'<div id="{i}" class="plotly-graph-div">' in page for i in ids)
    assert "0.7731" in page and "Search system and fusion ablation (03)" in page and "ANN sweep (06)" in page
    assert "0.6000 <span class='muted'>[0.5000, 0.7000]</span>" in page
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["notebooks"]["03_fusion"]["ablation"]["fused"]["recall@10"] == 0.7731
    assert metrics["results"]["queries"]["metrics"]["reranked"]["ndcg@10"] == 0.6
    # the data fingerprint: the manifest CatalogWriter wrote, less what names the writer, not the data
    manifest = json.loads((small_catalog / "manifest.json").read_text())
    data = metrics["data"]
    assert set(data) == {"name", "schema_version", "source", "licence", "counts", "sha256", "fingerprint"}
    assert data["name"] == "small" and data["schema_version"] == 1
    assert data["counts"] == {"products": 4, "interactions": 3, "queries": 1, "qrels": 2}
    assert data["sha256"] == manifest["sha256"]
    assert set(data["sha256"]) == {f"{t}.parquet" for t in ("products", "interactions", "queries", "qrels")}
    assert data["fingerprint"] == data_fingerprint(small_catalog)["fingerprint"]
    assert "latency" not in (run / "metrics.json").read_text()
    assert (
        json.loads((run / "timings.json").read_text())["latency"]["queries"]["total"]["p99_ms"]
        == 3.0
    )
    assert "packages" in json.loads((run / "environment.json").read_text())


def test_same_inputs_give_byte_identical_metrics(tmp_path, small_catalog):
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
            catalog_dir=small_catalog,
            run_name="demo",
            timings={"wall_s": float(rng.uniform())},
        )
        outs.append((run / "metrics.json").read_bytes())
    assert outs[0] == outs[1]


def test_fingerprint_changes_with_the_data_and_missing_manifest(tmp_path, small_catalog):
    before = data_fingerprint(small_catalog)
    # the same tables written again elsewhere: the same data, the same fingerprint
    again = write_catalog(tmp_path / "again", name="small", **small_catalog_tables())
    assert data_fingerprint(again) == before
    # one title changed, every count the same: only the products checksum tells them apart
    tables = small_catalog_tables()
    tables["products"] = tables["products"].with_columns(title=pl.Series(["title 0", "title 1", "title 2", "other"]))
    edited = data_fingerprint(write_catalog(tmp_path / "edited", name="small", **tables))
    assert edited["counts"] == before["counts"]
    assert edited["sha256"]["products.parquet"] != before["sha256"]["products.parquet"]
    assert {k: v for k, v in edited["sha256"].items() if k != "products.parquet"} == \
        {k: v for k, v in before["sha256"].items() if k != "products.parquet"}
    assert edited["fingerprint"] != before["fingerprint"]
    with pytest.raises(EvaluationError, match="manifest not found"):
        data_fingerprint(tmp_path / "nowhere")


def test_bad_metrics_json_of_a_notebook_is_named(tmp_path):
    (tmp_path / "05_rankers").mkdir()
    (tmp_path / "05_rankers" / "metrics.json").write_text("{not json")
    with pytest.raises(EvaluationError, match="05_rankers"):
        write_report(tmp_path, results={})


def test_pulled_figure_ids_renamed_in_one_pass():
    from workbench.report.page_figures import _rename_div

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


# --------------------------------------------------------------------------- the summary


def _fusion_metrics(chosen="fused/mlp", chosen_kind="learned"):
    def row(kind, v, lo, hi):
        return {"kind": kind, "ndcg@10": v, "ndcg@10_low": lo, "ndcg@10_high": hi, "recall@10": v / 2, "n": 37}

    def cmp(a, diff, lo, hi, p):
        return {"name_a": a, "name_b": chosen, "metric": "ndcg@10", "diff": diff, "low": lo, "high": hi,
                "p_value": p, "confidence": 0.95, "n": 37}

    test = {"text": row("single", 0.5111, 0.4511, 0.5711), "image": row("single", 0.3222, 0.2622, 0.3822),
            "bm25": row("lexical", 0.4333, 0.3733, 0.4933)}
    if chosen not in test:
        test[chosen] = row(chosen_kind, 0.6444, 0.5844, 0.7044)
    comps = {"vs BM25": cmp("bm25", 0.2111, 0.1511, 0.2711, 0.0004)}
    if chosen == "text":
        comps["vs best single modality"] = cmp("image", 0.1889, 0.1289, 0.2489, 0.0004)
    else:
        comps["vs best single modality"] = cmp("text", 0.0133, -0.0207, 0.0473, 0.4321)
    return {"chosen": chosen, "n_test_queries": 37, "ndcg@10": {k: v["ndcg@10"] for k, v in test.items()},
            "selection": {"chosen": chosen, "metric": "ndcg@10", "fallback": False,
                          "reason": "highest ndcg@10 on 33 validation queries (0.7777)",
                          "test": test, "comparisons": comps,
                          "validation": {k: {"kind": v["kind"], "ndcg@10": v["ndcg@10"]} for k, v in test.items()}}}


RANKERS = {
    "catalog": {"popularity": {"ndcg@10": 0.0211}, "sequential": {"ndcg@10": 0.1477},
                "bpr": {"ndcg@10": 0.0312}, "oracle": {"ndcg@10": 0.2954}},
    "baselines": {"ease": {"ndcg@10": 0.0413}},
    "order_blind_oracle": {"ndcg@10": 0.0687},
}
INDEX = {"chosen": {"leaves_to_search": 7, "num_leaves": 31, "recall@10": 0.9612, "reorder": 40,
                    "meets_target": True},
         "chosen_qps": 12345.6, "exact_qps": 2469.1, "k": 10, "n_items": 4321, "n_queries": 555,
         "recall_target": 0.95}
CATALOG = {"counts": {"products": 4321, "interactions": 8765, "queries": 222, "qrels": 999},
           "modality_coverage": {"text": 1.0, "image": 0.876, "audio": 0.5}, "users": 432}


def _paired(a, b, lo, hi, p, n):
    return {"name_a": "retrieval only", "name_b": "retrieval + re-ranking", "metric": "ndcg@10",
            "mean_a": a, "mean_b": b, "diff": b - a, "low": lo, "high": hi, "p_value": p, "n": n,
            "confidence": 0.95}


TWO_STAGE = {
    "queries": {"comparison": _paired(0.6444, 0.6111, -0.0533, -0.0133, 0.0123, 37),
                "config": {"candidates": 60},
                "metrics": {"exact_retrieval": {"ann_recall": 0.9345}}},
    "next_item": {"comparison": _paired(0.1111, 0.1555, 0.0222, 0.0666, 0.0021, 432),
                  "config": {"candidates": 60}, "metrics": {}},
}


def _text(topics):
    return {topic: " ".join(lines) for topic, lines in topics}


def test_summary_reads_every_number_from_the_metrics():
    from workbench.report import summary_lines

    nb = {"01_catalog": CATALOG, "03_fusion": _fusion_metrics(), "05_rankers": RANKERS,
          "06_scann_index": INDEX}
    s = _text(summary_lines(nb, TWO_STAGE))
    assert list(s) == ["Search system", "Rankers", "Re-ranking", "Index", "Catalog"]
    search = s["Search system"]
    assert "ndcg@10 on 37 test queries, 95% intervals" in search
    assert "chosen fused/mlp 0.644 [0.584, 0.704]" in search
    assert "best single modality text 0.511 [0.451, 0.571]" in search
    assert "BM25 0.433 [0.373, 0.493]" in search
    assert "fused/mlp is not clearly different from the best single modality, text (+0.013, 95% CI -0.021 to +0.047, p=0.432)" in search
    assert "fused/mlp beats BM25 by 0.211 (95% CI +0.151 to +0.271, p<0.001)" in search
    assert "highest ndcg@10 on 33 validation queries (0.7777)" in search
    rankers = s["Rankers"]
    assert "sequential 0.148, EASE 0.041, BPR 0.031 against popularity 0.021" in rankers
    assert "sequential is the best ranker, 7.0× popularity's ndcg@10 (+0.127)" in rankers
    assert ("Oracle 0.295: the ground truth's own next-item probabilities: what a perfect ranker "
            "would score; sequential reaches 50% of it") in rankers
    assert "Ignoring the order of a user's items, even the ground truth scores 0.069" in rankers
    rerank = s["Re-ranking"]
    assert "search queries: hurts: ndcg@10 0.644 retrieval only, 0.611 re-ranked" in rerank
    assert "next item: helps: ndcg@10 0.111 retrieval only, 0.155 re-ranked (+0.044" in rerank
    assert "p=0.012, 37 queries" in rerank and "432 queries" in rerank
    index = s["Index"]
    assert "7 of 31 leaves searched, reorder 40" in index and "recall@10 0.961 on 555 queries" in index
    assert "target 0.95: met" in index and "over 4,321 items" in index
    assert "12,346 queries/s against 2,469 for exact search (5.0×)" in index
    assert "keeps 0.934 of the exact top 60 for search queries" in index
    cat = s["Catalog"]
    assert "4,321 products; 432 users with 8,765 interactions; 222 search queries with 999" in cat
    assert "text 100%, image 88%, audio 50%" in cat and "lacked: nothing" in cat


def test_summary_of_a_single_modality_choice_and_a_weak_ranker():
    from workbench.report import summary_lines

    weak = {"catalog": {"popularity": {"ndcg@10": 0.05}, "bpr": {"ndcg@10": 0.04}}}
    s = _text(summary_lines({"03_fusion": _fusion_metrics("text"), "05_rankers": weak}, {}))
    assert "chosen text 0.511 [0.451, 0.571]" in s["Search system"]
    assert "best single modality" not in s["Search system"].split("Verdict")[0]
    assert "one modality alone, text, is the best search system on this catalog: no fusion helped" in s["Search system"]
    assert "text beats the next best single modality, image, by 0.189" in s["Search system"]
    assert "no ranker beats popularity on this catalog (ndcg@10 0.050)" in s["Rankers"]
    assert "Oracle" not in s["Rankers"] and "Ignoring the order" not in s["Rankers"]  # none recorded: no line


def test_summary_of_absent_and_skipped_stages():
    from workbench.report import summary_lines

    s = _text(summary_lines({}, {}))  # nothing ran
    assert "notebook 03 (search system and fusion) did not run" in s["Search system"]
    assert "notebook 05 (rankers) did not run" in s["Rankers"]
    assert "Re-ranking: not evaluated in this run" in s["Re-ranking"]
    assert "notebook 06 (ANN index) did not run" in s["Index"]
    assert "notebook 01 (catalog profile) did not run" in s["Catalog"]

    # A catalog without interactions or audio: notebook 05 stopped, 07 ran search only.
    no_users = {"counts": {"products": 50, "interactions": 0, "queries": 20, "qrels": 80},
                "modality_coverage": {"text": 1.0, "image": 0.9, "audio": 0.0}, "users": 0}
    why = "this catalog has no interactions, so there is no ranker to train or evaluate"
    nb = {"01_catalog": no_users, "03_fusion": _fusion_metrics(), "05_rankers": {"skipped": why},
          "06_scann_index": INDEX}
    s = _text(summary_lines(nb, {"queries": TWO_STAGE["queries"]}))
    assert f"Rankers: not evaluated: notebook 05 (rankers) stopped: {why}." == s["Rankers"]
    assert "Re-ranking, next item: not evaluated (the catalog has no interactions)" in s["Re-ranking"]
    assert "search queries: hurts" in s["Re-ranking"]
    cat = s["Catalog"]
    assert "50 products; 20 search queries with 80 relevance judgements; modalities text 100%, image 90%." in cat
    assert "audio (no product has it" in cat and "interactions (no rankers and no next-item task)" in cat
    assert f"Stages skipped: 05 rankers ({why})" in cat

    # No queries: notebook 03 stopped; a stage whose metrics lack the expected keys degrades per line.
    nb = {"03_fusion": {"skipped": "a fusion is trained on training queries; this catalog has 0 and 0"},
          "05_rankers": {"catalog": {}}, "06_scann_index": {"k": 10}}
    s = _text(summary_lines(nb, {"next_item": {"comparison": {"metric": "ndcg@10"}}}))
    assert "Search: not evaluated: notebook 03 (search system and fusion) stopped: a fusion" in s["Search system"]
    assert "Rankers: notebook 05 recorded no nDCG" in s["Rankers"]
    assert "Re-ranking, next item: no paired comparison recorded" in s["Re-ranking"]
    assert "Index: notebook 06 recorded no chosen setting" in s["Index"]


def test_summary_opens_the_report_after_the_validation_notice(tmp_path):
    run = tmp_path / "run"
    for stem, metrics in (("01_catalog", CATALOG), ("03_fusion", _fusion_metrics()),
                          ("05_rankers", {"skipped": "no interactions"}), ("06_scann_index", INDEX)):
        (run / stem).mkdir(parents=True)
        (run / stem / "metrics.json").write_text(json.dumps(metrics))
    (run / "validation.json").write_text(json.dumps({"problems": [], "warnings": [], "allowed": False}))
    page = write_report(run, results=TWO_STAGE, sections=[("Headline", "<p>details</p>")]).read_text()
    sections = re.findall(r'<section id="([^"]+)"><h2>([^<]+)</h2>', page)
    assert [h for _, h in sections[:3]] == ["Catalog validation", "Summary", "Headline"]
    summary = page[page.index('<section id="summary">'):]
    summary = summary[:summary.index("</section>")]
    assert "chosen fused/mlp 0.644 [0.584, 0.704]" in summary
    assert "not evaluated: notebook 05 (rankers) stopped: no interactions" in summary
    assert "12,346 queries/s" in summary  # the summary reads the timings metrics.json leaves out
    assert "qps" not in (run / "metrics.json").read_text()


# --------------------------------------------------------------------------- page: readable and small


def _atlas_page(path, n_items, n_maps, thumbnail, seed=0):
    """An atlas.html as notebook 04 saves it: maps of the same items, each point with its thumbnail."""
    from workbench.viz import embedding_scatter, save_figures_html

    rng = np.random.default_rng(seed)
    cats = ["apparel", "electronics", "furniture", "kitchen", "sports", "toys"]
    labels = pl.DataFrame({
        "title": [f"product {i} of the catalog" for i in range(n_items)],
        "category": [f"{cats[i % 6]}/leaf{i % 4}" for i in range(n_items)],
        "top_category": [cats[i % 6] for i in range(n_items)],
    })
    thumbs = [thumbnail(i) if i % 10 else None for i in range(n_items)]  # some items have no image
    maps = {f"atlas-{m}": embedding_scatter(rng.normal(size=(n_items, 2)), labels, color="top_category",
                                            thumbnails=thumbs, title=f"space {m}, coloured by top_category")
            for m in range(n_maps)}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figures_html(maps, path, "atlas")
    return thumbs


def test_tables_scroll_in_their_own_box_and_figures_have_titles_in_words(tmp_path):
    from workbench.report import figure_title

    assert figure_title({"title": {"text": "ScaNN: recall<br>against <b>speed</b>"}}, "sweep.html") == \
        "ScaNN: recall against speed"
    assert figure_title({}, "atlas.html") == "Embedding atlas"
    assert figure_title({"title": {"text": ""}}, "learning_curves_v2.html") == "Learning curves v2"
    run = tmp_path / "run"
    (run / "05_rankers").mkdir(parents=True)
    go.Figure(go.Scatter(x=[1, 2], y=[3, 4])).write_html(run / "05_rankers" / "learning_curves.html",
                                                         include_plotlyjs=True, div_id="lc")
    wide = {"queries": {"wide": {f"column {i}": float(i) for i in range(40)}}}
    page = write_report(run, results=wide, sections=[("T", "<table><tr><td>1</td></tr></table>")]).read_text()
    body = page[page.index("<body>"):]
    assert body.count("<table") == body.count('<div class="table-scroll"><table') > 2
    assert body.count("</table></div>") == body.count("</table>")
    assert ".table-scroll { overflow-x: auto;" in page
    assert "Ranker learning curves</h3>" in page  # not "learning_curves.html"
    assert "<p class=\"muted\">learning_curves.html</p>" not in page


def test_big_scatters_keep_the_same_sample_of_items_in_every_map(tmp_path):
    n = 9_000
    run = tmp_path / "run"
    thumbs = _atlas_page(run / "04_embedding_space" / "atlas.html", n, 2,
                         lambda i: f"data:image/jpeg;base64,{i:06d}")
    saved = (run / "04_embedding_space" / "atlas.html").read_text()
    assert [i for i, _ in extract_plotly_figures(saved)] == ["atlas-0", "atlas-1"]
    page = write_report(run, results={}).read_text()
    specs = dict(report_figure_specs(page))
    table = report_thumbnails(page)
    kept = []
    for m in ("atlas-0", "atlas-1"):
        rows = [r for t in specs[m]["data"] for r in t["customdata"]]
        assert len(rows) == sum(len(t["x"]["bdata"]) * 3 // 4 // 8 for t in specs[m]["data"])
        assert abs(len(rows) - 4_000) <= 5  # MAX_SCATTER_POINTS, ties aside
        kept.append(sorted(r[1] for r in rows))
        assert all(isinstance(r[0], int) or r[0] == "" for r in rows)
    assert kept[0] == kept[1]  # the same items in both maps
    # each thumbnail once, only those of the points kept
    assert len(table) == len(set(table)) < 4_000 and set(table) <= set(t for t in thumbs if t)
    assert "Showing 4,0" in page and "of 9,000 points" in page


def test_thin_scatter_takes_binary_arrays_and_lists_alike():
    x = np.arange(10, dtype="f8")
    import base64

    data = [{"type": "scatter", "x": {"dtype": "f8", "bdata": base64.b64encode(x.tobytes()).decode()},
             "y": list(range(10)), "customdata": [[f"c{i}"] for i in range(10)],
             "marker": {"color": list(range(10)), "size": 3}}]
    shown, total = thin_scatter(data, limit=4)
    assert (shown, total) == (4, 10)
    kept = np.frombuffer(base64.b64decode(data[0]["x"]["bdata"]), dtype="f8").astype(int).tolist()
    assert kept == data[0]["y"] == data[0]["marker"]["color"] == [int(c[0][1:]) for c in data[0]["customdata"]]
    assert data[0]["marker"]["size"] == 3
    assert thin_scatter([{"type": "bar", "x": list(range(9000))}], limit=4) == (0, 0)


def test_the_report_of_a_realistic_run_is_under_5_mb(tmp_path):
    """A ci run's outputs (7 atlas maps of 1000 items with JPEG thumbnails, the probes, sweep and
    learning-curve pages each with its own plotly.js, the two-stage figures): 13.5 MB before."""
    from workbench.viz import image_data_uri

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:32, 0:32]

    def thumbnail(i):
        colour = rng.integers(40, 220, size=3)
        stripes = ((xx + yy * (i % 3)) // (2 + i % 5)) % 2
        img = colour * (0.6 + 0.4 * stripes[..., None]) + rng.normal(0, 6, size=(32, 32, 3))
        return image_data_uri(np.clip(img, 0, 255).astype(np.uint8), size=32, fmt="jpeg")

    run = tmp_path / "run"
    _atlas_page(run / "04_embedding_space" / "atlas.html", 1000, 7, thumbnail)
    assert (run / "04_embedding_space" / "atlas.html").stat().st_size > 10_000_000
    for stem, name in (("04_embedding_space", "probes"), ("06_scann_index", "sweep"),
                       ("05_rankers", "learning_curves")):
        (run / stem).mkdir(parents=True, exist_ok=True)
        fig = go.Figure(go.Scatter(x=rng.uniform(size=100), y=rng.uniform(size=100), mode="markers+text",
                                   text=[f"setting {i}" for i in range(100)]))
        fig.write_html(run / stem / f"{name}.html", include_plotlyjs=True, div_id=name)
    for stem, metrics in (("01_catalog", CATALOG), ("03_fusion", _fusion_metrics()),
                          ("05_rankers", RANKERS), ("06_scann_index", INDEX)):
        (run / stem / "metrics.json").parent.mkdir(parents=True, exist_ok=True)
        (run / stem / "metrics.json").write_text(json.dumps(metrics))
    results = {task: {**TWO_STAGE[task], "intervals": RESULTS["queries"]["intervals"]} for task in TWO_STAGE}
    latency = {t: {s: {"p50_ms": 1.0, "p95_ms": 2.0, "p99_ms": 3.0} for s in ("retrieve", "total")}
               for t in results}
    index = write_report(run, results=results, figures=figures_from_results(results, latency),
                         timings={"latency": latency})
    size = index.stat().st_size
    assert size < 5_000_000, f"{size:,} bytes"
    page = index.read_text()
    assert len(report_figure_specs(page)) == 4 + 7 + 3
    assert len(report_thumbnails(page)) == 900  # each distinct thumbnail once (1 in 10 items has none)


def test_a_figure_with_its_own_script_is_kept_and_waits_for_plotly(tmp_path):
    (tmp_path / "06_scann_index").mkdir()
    go.Figure(go.Scatter(x=[1, 2], y=[3, 4])).write_html(
        tmp_path / "06_scann_index" / "sweep.html", include_plotlyjs=True, div_id="sweep",
        post_script="window.seen = '{plot_id}';")
    page = write_report(tmp_path, results={}).read_text()
    assert report_figure_specs(page) == []
    assert "window.wbDeferred.push(function () {" in page and "window.seen = 'sweep';" in page
    assert page.index("window.wbDeferred = []") < page.index("wbDeferred.push")
