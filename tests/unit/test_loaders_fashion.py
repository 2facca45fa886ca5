"""Fashion Product Images loader on a fixture written from the published layout."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from tests.conftest import shared_data
from workbench.catalog import read_catalog, validate_catalog
from workbench.catalog.loaders import import_catalog
from workbench.catalog.loaders.fashion import FashionImportConfig, import_fashion_products
from workbench.catalog.loaders.queries import DerivedQueryConfig
from workbench.errors import CatalogError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _photo(seed: int, size=(60, 80)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


@pytest.fixture
def fashion_src(tmp_path: Path) -> Path:
    src = tmp_path / "fashion"
    (src / "images").mkdir(parents=True)
    shutil.copy(FIXTURES / "fashion_styles.csv", src / "styles.csv")
    plain = ["15970", "39386", "21379", "30805", "9204", "18653", "47957", "22222", "33333"]
    for i, item in enumerate(plain):
        _photo(i).save(src / "images" / f"{item}.jpg", format="JPEG")
    _photo(20).convert("CMYK").save(src / "images" / "59263.jpg", format="JPEG")
    _photo(21).convert("L").save(src / "images" / "30039.jpg", format="JPEG")
    _photo(22).convert("RGBA").save(src / "images" / "53759.jpg", format="PNG")  # PNG named .jpg
    _photo(23, size=(50, 400)).save(src / "images" / "1855.jpg", format="JPEG")  # odd size, kept
    (src / "images" / "29114.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")  # not decodable
    _photo(24, size=(8, 8)).save(src / "images" / "11111.jpg", format="JPEG")  # too small
    # 26960 has no image file at all
    return src


def _import(src: Path, out: Path, **kw) -> tuple:
    cfg = FashionImportConfig(progress=False, queries=DerivedQueryConfig(n_queries=5, seed=1, min_type_size=1,
                                                                       attribute_keys=("baseColour", "gender", "usage", "season")), **kw)
    report = import_fashion_products(src, out, config=cfg)
    return report, read_catalog(out)


def test_fashion_import_counts_every_repair(fashion_src: Path, tmp_path: Path) -> None:
    report, cat = _import(fashion_src, tmp_path / "cat")
    assert report.repaired["product name contained commas: extra fields joined back into the name"] == 2
    assert report.repaired["styles.csv line not UTF-8: decoded as latin-1"] == 1
    assert report.dropped["duplicate row (same id, same fields)"] == 1
    assert report.dropped["duplicate id with different fields (first row kept)"] == 1
    assert report.dropped["line with fewer than 10 fields"] == 1
    assert report.dropped["id is not a number"] == 1
    assert report.repaired["usage 'NA' means unknown: set to null"] == 1
    assert report.repaired["baseColour 'NA' means unknown: set to null"] == 1
    assert report.repaired["image file missing: image set to null (text kept)"] == 1
    assert report.repaired["image file not decodable: image set to null (text kept)"] == 1
    assert report.repaired["image smaller than 16 px: image set to null (text kept)"] == 1
    assert report.repaired["image mode CMYK re-encoded as RGB JPEG"] == 1
    assert report.repaired["image mode L re-encoded as RGB JPEG"] == 1
    assert report.repaired["image mode RGBA re-encoded as RGB JPEG"] == 1
    assert report.repaired["empty productDisplayName: title built from colour, gender and type"] == 1
    assert report.repaired["'/' inside articleType replaced by '-' (it separates category levels)"] == 1
    assert report.counts["products"] == 16
    assert report.counts["with_image"] == 13
    assert json.loads(report.to_json())["format"] == "fashion-products"
    assert validate_catalog(cat, check_media=True, on_error="collect", progress=False) == []


def test_fashion_rows_are_mapped_as_documented(fashion_src: Path, tmp_path: Path) -> None:
    _, cat = _import(fashion_src, tmp_path / "cat")
    p = cat.products.collect()
    rows = {r["item_id"]: r for r in p.iter_rows(named=True)}
    assert rows["9204"]["title"] == "Puma Men Future Cat Remix SF Black Casual Shoes, Size 8, Black"
    assert rows["18653"]["title"] == "Fila Women Cush Flex, Black Flip Flops"
    assert rows["33333"]["title"] == "Café Women White Top"
    assert rows["15970"]["category"] == "Apparel/Topwear/Shirts"
    assert rows["22222"]["category"] == "Apparel/Topwear/Rain-Wind Jackets"
    assert rows["39386"]["attributes"] and json.loads(rows["39386"]["attributes"])["baseColour"] == "Blue"
    attrs = json.loads(rows["47957"]["attributes"])
    assert attrs == {"baseColour": None, "gender": "Women", "season": "Summer", "usage": None, "year": 2012}
    assert rows["11111"]["title"] == "Red Women Tops"
    assert rows["26960"]["image"] is None and rows["26960"]["title"] == "Jealous 21 Women Purple Shirt"
    assert rows["29114"]["image"] is None
    assert rows["59263"]["image"] == "media/images/59263.jpg"
    # re-encoded files are RGB JPEGs; odd sizes are kept as they are
    with Image.open(cat.media_path(rows["59263"]["image"])) as im:
        assert (im.mode, im.format) == ("RGB", "JPEG")
    with Image.open(cat.media_path(rows["1855"]["image"])) as im:
        assert im.size == (50, 400)
    assert p["item_id"].is_unique().all()


def test_fashion_derived_queries_are_written_and_documented(fashion_src: Path, tmp_path: Path) -> None:
    _, cat = _import(fashion_src, tmp_path / "cat")
    q = cat.queries.collect()
    qrels = cat.qrels.collect()
    assert q.height == 5
    assert qrels["relevance"].max() == 3 and qrels["relevance"].min() >= 1
    info = cat.manifest["derived_queries"]
    assert "not written by users" in info["rule"]
    assert info["attribute_keys"] == ["baseColour", "gender", "usage", "season"]


def test_fashion_without_queries_and_via_registry(fashion_src: Path, tmp_path: Path) -> None:
    _, cat = _import(fashion_src, tmp_path / "plain", derive_queries=False)
    assert cat.queries is None and cat.qrels is None
    # the registry default derives queries; this fixture has no type with 5 products, so the
    # import still succeeds, without queries, and says why
    report = import_catalog("fashion-products", fashion_src, tmp_path / "reg")
    assert report.counts["queries"] == 0
    assert any(n.startswith("no derived queries: derived queries: no product type has >= 5") for n in report.notes)


def test_fashion_refuses_missing_styles_and_keeps_existing_out(fashion_src: Path, tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="styles.csv"):
        import_fashion_products(tmp_path / "nowhere", tmp_path / "x")
    out = tmp_path / "cat"
    _import(fashion_src, out)
    before = (out / "manifest.json").read_text()
    with pytest.raises(CatalogError, match="already exists"):
        import_fashion_products(fashion_src, out)
    assert (out / "manifest.json").read_text() == before


def test_fashion_bad_header_names_the_file(tmp_path: Path) -> None:
    src = tmp_path / "bad"
    src.mkdir()
    (src / "styles.csv").write_text("id,name\n1,x\n")
    with pytest.raises(CatalogError, match=r"styles.csv, line 1: header lacks"):
        import_fashion_products(src, tmp_path / "out")


def test_fashion_quoted_reexport_is_read_as_csv(tmp_path: Path) -> None:
    src = tmp_path / "quoted"
    src.mkdir()
    (src / "styles.csv").write_text(
        "id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,productDisplayName\n"
        '1,Men,Apparel,Topwear,Shirts,Blue,Fall,2011,Casual,"Shirt, blue, slim"\n'
    )
    report = import_fashion_products(src, tmp_path / "out", config=FashionImportConfig(derive_queries=False, progress=False))
    assert report.repaired["quoted line parsed as CSV"] == 1
    assert read_catalog(tmp_path / "out").products.collect()["title"].to_list() == ["Shirt, blue, slim"]


def test_fashion_limit_keeps_first_products(fashion_src: Path, tmp_path: Path) -> None:
    report, cat = _import(fashion_src, tmp_path / "cat", limit=4, derive_queries=False)
    assert cat.products.select(pl.len()).collect().item() == 4
    assert report.counts["products"] == 4


def test_derived_query_count_only_for_formats_that_derive_queries(fashion_src: Path, tmp_path: Path) -> None:
    from workbench.errors import ConfigError

    with pytest.raises(ConfigError, match="only fashion-products"):
        import_catalog("hm", fashion_src, tmp_path / "hm", derived_queries=10)
    assert not (tmp_path / "hm").exists()


def test_fashion_default_query_count_follows_the_catalog_size(fashion_src: Path, tmp_path: Path) -> None:
    assert FashionImportConfig().queries.n_queries is None  # min(1000, queryable products)
    # every type queryable (min_type_size=1): the default asks for one query per product, 16
    cfg = FashionImportConfig(progress=False, queries=DerivedQueryConfig(
        n_queries=None, seed=0, min_type_size=1, attribute_keys=("baseColour", "gender", "usage", "season")))
    report = import_fashion_products(fashion_src, tmp_path / "cat", config=cfg)
    info = read_catalog(tmp_path / "cat").manifest["derived_queries"]
    assert info["n_requested"] == report.counts["products"] == 16
    assert info["n_rule"] == "default: min(1000, 16 products of a queryable type)"
    assert 0 < report.counts["queries"] <= 16


@pytest.mark.realdata
def test_real_3000_products_give_enough_test_queries(tmp_path: Path) -> None:
    """The first 3,000 real products: the default derives 1,000 queries, 203 of them test."""
    real = shared_data("fashion-products", "styles.csv")
    from workbench.catalog.splits import split_queries

    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(real / "styles.csv", src / "styles.csv")  # no images/: the count needs no photos
    report = import_fashion_products(src, tmp_path / "cat", config=FashionImportConfig(limit=3000, progress=False))
    cat = read_catalog(tmp_path / "cat")
    queries = cat.queries.collect()
    assert report.counts["products"] == 3000 and queries.height == 1000
    test = split_queries(queries["query_id"].to_list(), test_fraction=0.2, seed=0).test
    assert len(test) == 203 >= 150
    info = cat.manifest["derived_queries"]
    assert info["n_requested"] == 1000 and info["n_rule"].startswith("default: min(1000, ")
    # every test query has a fully relevant product (its anchor)
    best = cat.qrels.collect().filter(pl.col("query_id").is_in(test)).group_by("query_id").agg(
        pl.col("relevance").max())
    assert best.height == 203 and best["relevance"].min() == 3
