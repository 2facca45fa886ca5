"""The whole notebook series on catalogs that are not the default synthetic one.

1. A small synthetic catalog with **no audio at all**, **no interactions** and **no
   ground truth** (copied without `truth/`, so every notebook takes the path it takes
   on a real catalog): `workbench run --catalog` must complete, leave audio out
   everywhere, stop the ranker notebook cleanly and still write the report with the
   fused-vs-single table.
2. (realdata) The first 700 products of `../shared/data/fashion-products` with
   derived queries: real photos and real titles through the same series.
3. Text-only catalogs (MovieLens-like without queries, ESCI-like with queries).
4. (realdata) `../shared/data/hm-sample`: photos for 100 of 1,000 articles, purchases,
   no queries: fusion stops (nothing to train it on), rankers and next-item evaluation run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import shared_data
from workbench.catalog import read_catalog, write_catalog
from workbench.catalog.synthetic import SyntheticConfig, generate_synthetic
from workbench.pipeline import run_series

pytestmark = pytest.mark.slow
# These tests check that every stage runs and says what it does on each kind of catalog, not
# how well it learns (the notebooks under nbval and their reference metrics hold that): the
# costly parameters are cut to a few epochs, resamples and trials (`workbench run -p`).
QUICK = {
    "EPOCHS": 4, "FUSION_EPOCHS": 3, "N_BOOTSTRAP": 200, "N_BOOT": 200, "N_RESAMPLES": 200,
    "LATENCY_QUERIES": 20, "N_EPOCHS": 50, "REPEATS": 1, "MOVIELENS_DIR": "",  # no MovieLens section
    "TUNE_BUDGET": {"bpr": 1, "sequential": 1, "ease": 2, "itemknn": 2},
    "TUNE_FIXED": {"bpr": {"fused": "content", "dim": 32, "epochs": 4}, "sequential": {"epochs": 4}},
}


def _outputs(notebook: Path) -> str:
    cells = json.loads(notebook.read_text())["cells"]
    text = []
    for cell in cells:
        for out in cell.get("outputs", []):
            text.append("".join(out.get("text", "")) + "".join(out.get("data", {}).get("text/plain", "")))
    return "\n".join(text)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("series")
    synthetic = generate_synthetic(root / "synthetic", SyntheticConfig(
        n_items=240, n_users=0, n_queries=100, missing_audio_rate=1.0, seed=3), progress=False)
    # Copied without its truth/ folder, so it behaves like a real catalog: labels come from
    # the products' category and attributes, and there is no oracle.
    src = read_catalog(synthetic)
    catalog = write_catalog(root / "text-image", products=src.products.collect(), queries=src.queries.collect(),
                            qrels=src.qrels.collect(), media_from=synthetic / "media", name="text-image")
    assert not (catalog / "truth").exists() and read_catalog(catalog).modalities == ("text", "image")
    index = run_series("ci", catalog=catalog, run_name="text-image", reports_root=root / "reports",
                       work_dir=root / "work", progress=False, overrides=QUICK)
    return root, index


@pytest.mark.xdist_group("text-image")  # one worker builds the module's `run` (make tiers: --dist loadgroup)
def test_series_completes_without_audio_or_interactions(run):
    root, index = run
    reports = root / "reports" / "text-image"
    assert index == reports / "index.html" and index.is_file()
    series = json.loads((reports / "series.json").read_text())
    assert len(series["status"]) == 7 and series["status"]["05_rankers"] == "stopped"
    assert {s for stem, s in series["status"].items() if stem != "05_rankers"} == {"ok"}
    executed = reports / "notebooks"
    # One line names the absent modality; the ranker notebook says why it stops.
    assert "no product has audio" in _outputs(executed / "02_encoders.ipynb")
    assert "stopping here: this catalog has no interactions" in _outputs(executed / "05_rankers.ipynb")
    skipped = json.loads((reports / "05_rankers" / "metrics.json").read_text())
    assert list(skipped) == ["skipped"] and "no interactions" in skipped["skipped"]  # nothing faked


@pytest.mark.xdist_group("text-image")
def test_audio_is_left_out_of_training_fusion_atlas_and_ablation(run):
    root, _ = run
    reports = root / "reports" / "text-image"
    encoders = json.loads((root / "work" / "encoders" / "model.json").read_text())
    assert encoders["model_config"]["modalities"] == ["text", "image"]
    fusion = json.loads((root / "work" / "fusion" / "model.json").read_text())
    assert fusion["model_config"]["modalities"] == ["text", "image"]
    enc = json.loads((reports / "02_encoders" / "metrics.json").read_text())
    assert enc["modalities"] == ["text", "image"] and set(enc["ndcg@10"]) == {"text", "image"}
    # Notebook 02 compared the from-scratch and the pretrained image towers on the same queries.
    assert set(enc["image_backbones"]) == {"scratch", "pretrained"}
    ablation = json.loads((reports / "03_fusion" / "metrics.json").read_text())["ndcg@10"]
    assert "text" in ablation and "image" in ablation and not any("audio" in k for k in ablation)
    assert any(k.startswith("fused/") for k in ablation)
    atlas = json.loads((reports / "04_embedding_space" / "metrics.json").read_text())
    assert set(atlas["spaces"]) == {"text", "image", "fused"}
    final = json.loads((reports / "07_evaluation_report" / "metrics.json").read_text())
    assert "queries" in final and "next_item" not in final  # search only: no interactions
    html = (reports / "index.html").read_text()
    assert "fused/" in html and "Search system and fusion ablation" in html


@pytest.mark.realdata
def test_series_on_imported_fashion_products(tmp_path):
    fashion = shared_data("fashion-products")
    from workbench.catalog.loaders.fashion import (
        QUERY_KEYS,
        FashionImportConfig,
        import_fashion_products,
    )
    from workbench.catalog.loaders.queries import DerivedQueryConfig

    catalog = tmp_path / "fashion"
    queries = DerivedQueryConfig(n_queries=300, seed=0, attribute_keys=QUERY_KEYS)  # bounds the test's time
    import_fashion_products(fashion, catalog, config=FashionImportConfig(limit=700, queries=queries, progress=False))
    index = run_series("ci", catalog=catalog, run_name="fashion", reports_root=tmp_path / "reports",
                       work_dir=tmp_path / "work", progress=False, overrides=QUICK)
    reports = tmp_path / "reports" / "fashion"
    assert index == reports / "index.html"
    assert "no product has audio" in _outputs(reports / "notebooks" / "03_fusion.ipynb")
    enc = json.loads((reports / "02_encoders" / "metrics.json").read_text())
    assert enc["image_backbone"].startswith("EfficientNet-Lite0 ImageNet-pretrained")  # "auto" on real photos
    backbones = enc["image_backbones"]
    assert backbones["pretrained"]["ndcg@10"] > backbones["scratch"]["ndcg@10"]
    fusion = json.loads((reports / "03_fusion" / "metrics.json").read_text())
    assert set(fusion["ndcg@10"]) == {"text", "image", "late fusion", "fused/weighted_mean", "fused/concat_mlp",
                                      "fused/gated_attention", "bm25", "hybrid RRF", "hybrid convex"}
    # the system was chosen on validation among them, and is never significantly worse than the best
    # single modality on test (the notebook's checked claim)
    assert fusion["chosen"] in fusion["ndcg@10"]
    assert "stopping here" in _outputs(reports / "notebooks" / "05_rankers.ipynb")


def _text_only(root: Path, name: str, n_queries: int) -> Path:
    """Synthetic products, interactions and (optionally) queries, without images, audio or truth."""
    synthetic = generate_synthetic(root / f"{name}-src", SyntheticConfig(
        n_items=150, n_users=40, n_queries=n_queries, missing_image_rate=1.0, missing_audio_rate=1.0,
        seed=5), progress=False)
    src = read_catalog(synthetic)
    tables = {t: src.table(t).collect() for t in ("interactions", "queries", "qrels") if src.table(t) is not None}
    return write_catalog(root / name, products=src.products.collect(), name=name, **tables)


@pytest.mark.parametrize(
    ("n_queries", "stopped"),
    [
        # MovieLens-like: text and interactions only. Nothing to align towers on, so 02 stops and
        # every stage that needs item vectors stops after it; the rankers still run (ID only).
        (0, {"02_encoders", "03_fusion", "04_embedding_space", "06_scann_index", "07_evaluation_report"}),
        # ESCI-like: text, queries and interactions. One modality: nothing to fuse (03 stops).
        (60, {"03_fusion"}),
    ],
)
def test_series_on_text_only_catalogs(tmp_path, n_queries, stopped):
    catalog = _text_only(tmp_path, f"text-only-{n_queries}", n_queries)
    run_series("ci", catalog=catalog, run_name="run", reports_root=tmp_path / "reports",
               work_dir=tmp_path / "work", progress=False, overrides=QUICK)
    reports = tmp_path / "reports" / "run"
    series = json.loads((reports / "series.json").read_text())
    assert len(series["status"]) == 7 and set(series["stopped"]) == stopped
    assert {stem for stem, s in series["status"].items() if s == "stopped"} == stopped
    for stem in stopped:  # the reason is also the stage's metrics.json, which the report shows
        assert json.loads((reports / stem / "metrics.json").read_text()) == {"skipped": series["stopped"][stem]}
    ranks = json.loads((reports / "05_rankers" / "metrics.json").read_text())
    assert set(ranks["catalog"]) == {"popularity", "bpr", "sequential"}  # no truth: no oracle row
    if "07_evaluation_report" not in stopped:
        final = json.loads((reports / "07_evaluation_report" / "metrics.json").read_text())
        assert {"queries", "next_item"} <= set(final)
        atlas = json.loads((reports / "04_embedding_space" / "metrics.json").read_text())
        assert set(atlas["spaces"]) == {"text", "fused"} and atlas["modality_gap"] == []


@pytest.mark.realdata
def test_series_on_imported_hm_sample(tmp_path):
    hm_sample = shared_data("hm-sample")
    from workbench.catalog.loaders.hm import HMImportConfig, import_hm

    import_hm(hm_sample, tmp_path / "hm", config=HMImportConfig(progress=False))
    run_series("ci", catalog=tmp_path / "hm", run_name="hm", reports_root=tmp_path / "reports",
               work_dir=tmp_path / "work", progress=False, overrides=QUICK)
    reports = tmp_path / "reports" / "hm"
    series = json.loads((reports / "series.json").read_text())
    assert set(series["stopped"]) == {"03_fusion"} and "training queries" in series["stopped"]["03_fusion"]
    enc = json.loads((reports / "02_encoders" / "metrics.json").read_text())
    assert enc["modalities"] == ["text", "image"] and enc["ndcg@10"] == {}  # no queries: nothing to score
    ranks = json.loads((reports / "05_rankers" / "metrics.json").read_text())["catalog"]
    assert set(ranks) == {"popularity", "bpr", "sequential"}
    final = json.loads((reports / "07_evaluation_report" / "metrics.json").read_text())
    assert "next_item" in final and "queries" not in final
