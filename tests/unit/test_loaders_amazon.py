"""Amazon Reviews 2023 loader on fixtures written from the McAuley lab's published fields."""

from __future__ import annotations

import gzip
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from workbench.catalog import read_catalog, validate_catalog
from workbench.catalog.loaders import import_catalog
from workbench.catalog.loaders.amazon import AmazonImportConfig, import_amazon_reviews
from workbench.errors import CatalogError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "amazon"


@pytest.fixture
def amazon_src(tmp_path: Path) -> Path:
    src = tmp_path / "All_Beauty"
    shutil.copytree(FIXTURES, src)
    (src / "images").mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (50, 40, 3), dtype=np.uint8)).save(src / "images" / "B01CUPMQZE.jpg")
    Image.fromarray(rng.integers(0, 255, (50, 40, 4), dtype=np.uint8), "RGBA").save(src / "images" / "B076WQZGPM.png")
    return src


def test_amazon_import_counts_every_repair(amazon_src: Path, tmp_path: Path) -> None:
    report = import_amazon_reviews(amazon_src, tmp_path / "cat", config=AmazonImportConfig(progress=False))
    assert report.dropped == {
        "duplicate parent_asin in metadata (first kept)": 1,
        "metadata line is not valid JSON": 1,
        "metadata without title or description": 1,
        "duplicate review (same user, item, time and rating)": 1,
        "review of an item missing from the metadata": 1,
        "review rating not a number in 1..5": 1,
        "review without user_id": 1,
        "review line is not valid JSON": 1,
    }
    assert report.repaired["metadata line not UTF-8: decoded as latin-1"] == 1
    assert report.repaired["price written as text: parsed to a number"] == 1
    assert report.repaired["price not a number (e.g. a range): set to null"] == 1
    assert report.repaired["description empty: features used instead"] == 1
    assert report.repaired["title empty: first 80 characters of the description used"] == 1
    assert report.repaired["categories empty: category from main_category (or 'unknown')"] == 1
    assert report.repaired["'/' inside a category level replaced by '-'"] == 1
    assert report.repaired["image mode RGBA re-encoded as RGB JPEG"] == 1
    assert report.repaired["no local image file: image set to null (text kept)"] == 4
    assert report.counts == {"products": 6, "with_image": 2, "interactions": 4, "users": 3}
    cat = read_catalog(tmp_path / "cat")
    assert validate_catalog(cat, check_media=True, on_error="collect", progress=False) == []


def test_amazon_rows_are_mapped_as_documented(amazon_src: Path, tmp_path: Path) -> None:
    import_amazon_reviews(amazon_src, tmp_path / "cat", config=AmazonImportConfig(progress=False))
    cat = read_catalog(tmp_path / "cat")
    p = {r["item_id"]: r for r in cat.products.collect().iter_rows(named=True)}
    first = p["B01CUPMQZE"]
    assert first["title"] == "Howard LC0008 Leather Conditioner, 8oz"
    assert first["category"] == "Beauty & Personal Care/Skin Care" and first["brand"] == "Acme"
    assert first["price"] == 15.99 and first["description"] == "Rejuvenates leather."
    assert json.loads(first["attributes"])["details"]["Item Form"] == "Cream"
    assert first["image"] == "media/images/B01CUPMQZE.jpg"
    assert p["B076WQZGPM"]["price"] == 12.99
    assert p["B076WQZGPM"]["category"] == "Beauty & Personal Care/Face-Body Wash"
    assert p["B076WQZGPM"]["description"] == "Charcoal cleanser Removes dirt"
    assert p["B000B658RI"]["price"] is None and p["B000B658RI"]["category"] == "All Beauty"
    assert p["B088SZDGXG"]["title"].startswith("Silk sleep mask")
    assert p["B0LATIN001"]["title"] == "Crème Brûlée Lip Balm"
    it = cat.interactions.collect()
    assert set(it["event"]) == {"rating"} and it["value"].to_list() == [4.0, 5.0, 2.0, 1.0]
    assert it["timestamp"][0] == datetime.fromtimestamp(1588615855.070, tz=UTC)


def test_amazon_gzip_and_registry(amazon_src: Path, tmp_path: Path) -> None:
    for name in ("meta_All_Beauty.jsonl", "All_Beauty.jsonl"):
        data = (amazon_src / name).read_bytes()
        (amazon_src / name).unlink()
        with gzip.open(amazon_src / f"{name}.gz", "wb") as f:
            f.write(data)
    report = import_catalog("amazon-reviews-2023", amazon_src, tmp_path / "gz")
    assert report.counts["products"] == 6 and report.counts["interactions"] == 4
    assert read_catalog(tmp_path / "gz").manifest["name"] == "amazon-reviews-2023-All_Beauty"


def test_amazon_metadata_only_and_errors(amazon_src: Path, tmp_path: Path) -> None:
    (amazon_src / "All_Beauty.jsonl").unlink()
    report = import_amazon_reviews(amazon_src, tmp_path / "meta_only", config=AmazonImportConfig(progress=False))
    assert report.counts["interactions"] == 0
    assert read_catalog(tmp_path / "meta_only").interactions is None
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CatalogError, match=r"no meta_\*.jsonl"):
        import_amazon_reviews(empty, tmp_path / "x")
    (empty / "meta_X.jsonl").write_text("{}\n")
    with pytest.raises(CatalogError, match="meta_X.jsonl: no usable item metadata"):
        import_amazon_reviews(empty, tmp_path / "x")
    assert not (tmp_path / "x").exists()
    assert pl.read_parquet(tmp_path / "meta_only" / "products.parquet").height == 6
