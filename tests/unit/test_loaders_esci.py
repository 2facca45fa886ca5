"""ESCI loader on parquet fixtures built from the published Shopping Queries columns."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from workbench.catalog import read_catalog, validate_catalog
from workbench.catalog.loaders import import_catalog
from workbench.catalog.loaders.esci import (
    EXAMPLES_FILE,
    PRODUCTS_FILE,
    ESCIImportConfig,
    import_esci,
)
from workbench.errors import CatalogError, ConfigError

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "esci" / "esci.json"


@pytest.fixture
def esci_src(tmp_path: Path) -> Path:
    data = json.loads(FIXTURE.read_text())
    src = tmp_path / "esci"
    src.mkdir()
    pl.DataFrame(data["products"]).write_parquet(src / PRODUCTS_FILE)
    pl.DataFrame(data["examples"]).with_columns(
        pl.col("example_id", "query_id").cast(pl.Int64), pl.col("small_version", "large_version").cast(pl.Int64)
    ).write_parquet(src / EXAMPLES_FILE)
    return src


def test_esci_us_import_grades_and_counts(esci_src: Path, tmp_path: Path) -> None:
    report = import_catalog("esci", esci_src, tmp_path / "cat")
    assert report.dropped == {
        "product of another locale than 'us'": 1,
        "example of another locale than 'us'": 1,
        "duplicate product (same id and locale; first kept)": 1,
        "product without title": 1,
        "example label not one of E, S, C, I": 1,
        "example of a product missing from the products file": 1,
        "duplicate (query, product) example (first kept)": 1,
    }
    assert report.repaired == {"product_description: HTML tags or entities removed": 1}
    assert report.counts == {"products": 3, "queries": 3, "qrels": 6}
    cat = read_catalog(tmp_path / "cat")
    assert validate_catalog(cat, check_media=False, on_error="collect", progress=False) == []
    qrels = {(q, i): r for q, i, r in cat.qrels.collect().iter_rows()}
    assert qrels == {
        ("0", "B075SCHMPY"): 3, ("0", "B08L3B9B9P"): 2, ("0", "B082K7V2GZ"): 1,
        ("1", "B082K7V2GZ"): 3, ("1", "B075SCHMPY"): 0, ("3", "B08L3B9B9P"): 3,
    }
    q = dict(cat.queries.select("query_id", "text").collect().iter_rows())
    assert q == {"0": "revent 80 cfm", "1": "tire valve tool", "3": "wheel barrow tire"}
    p = {r["item_id"]: r for r in cat.products.collect().iter_rows(named=True)}
    assert p["B075SCHMPY"]["description"] == "Made of heavy-duty rubber & steel. Flat free Easy to mount"
    assert p["B075SCHMPY"]["brand"] == "RamPro" and p["B075SCHMPY"]["category"] == "esci/us"
    assert json.loads(p["B08L3B9B9P"]["attributes"]) == {"color": None, "locale": "us"}
    assert cat.interactions is None and cat.products.select(pl.col("image").is_null().all()).collect().item()
    assert any(n == "queries per published split: test=1, train=2" for n in report.notes)


def test_esci_all_locales_small_version_and_split(esci_src: Path, tmp_path: Path) -> None:
    report = import_esci(esci_src, tmp_path / "all", config=ESCIImportConfig(locale=None, version="small"))
    cat = read_catalog(tmp_path / "all")
    ids = set(cat.products.select("item_id").collect()["item_id"])
    assert {"us:B075SCHMPY", "es:B075SCHMPY"} <= ids  # the same ASIN in two locales stays two products
    assert report.dropped["example not in the small version"] == 2
    assert report.counts["queries"] == 2
    import_esci(esci_src, tmp_path / "test", config=ESCIImportConfig(split="test"))
    assert read_catalog(tmp_path / "test").queries.collect()["query_id"].to_list() == ["1"]


def test_esci_errors(esci_src: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="version"):
        import_esci(esci_src, tmp_path / "x", config=ESCIImportConfig(version="medium"))
    (esci_src / EXAMPLES_FILE).unlink()
    with pytest.raises(CatalogError, match=f"{EXAMPLES_FILE}: missing"):
        import_esci(esci_src, tmp_path / "x")
    pl.DataFrame({"query": ["a"]}).write_parquet(esci_src / EXAMPLES_FILE)
    with pytest.raises(CatalogError, match=r"missing column\(s\) \['query_id'"):
        import_esci(esci_src, tmp_path / "x")
    assert not (tmp_path / "x").exists()
