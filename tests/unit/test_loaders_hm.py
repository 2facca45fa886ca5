"""H&M loader on fixtures written from the competition's published columns."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from workbench.catalog import read_catalog, validate_catalog
from workbench.catalog.loaders import import_catalog
from workbench.catalog.loaders.hm import HMImportConfig, import_hm
from workbench.errors import CatalogError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "hm"


def _photo(seed: int, size=(40, 60)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


@pytest.fixture
def hm_csv(tmp_path: Path) -> Path:
    src = tmp_path / "hm"
    shutil.copytree(FIXTURES, src)
    nested = src / "images" / "010"
    nested.mkdir(parents=True)
    _photo(0).save(nested / "0108775015.jpg", format="JPEG")  # nested layout of the original download
    _photo(1).convert("CMYK").save(nested / "0108775044.jpg", format="JPEG")
    _photo(2, size=(300, 200)).save(src / "images" / "0176209023.jpg", format="JPEG")  # flat layout, too big
    return src


def _run(src: Path, out: Path) -> tuple:
    from workbench.catalog.loaders._images import ImagePolicy

    report = import_hm(src, out, config=HMImportConfig(images=ImagePolicy(max_side=128), progress=False))
    return report, read_catalog(out)


def test_hm_csv_import_counts_every_repair(hm_csv: Path, tmp_path: Path) -> None:
    report, cat = _run(hm_csv, tmp_path / "cat")
    assert report.dropped == {
        "duplicate article row (same id, same fields)": 1,
        "duplicate article_id with different fields (first row kept)": 1,
        "transaction of an article missing from articles": 1,
        "transaction t_dat not a YYYY-MM-DD date": 1,
        "transaction without customer_id": 1,
    }
    assert report.repaired["detail_desc missing: description set to ''"] == 1
    assert report.repaired["'/' inside product_type_name replaced by '-' (it separates category levels)"] == 1
    assert report.repaired["'/' inside index_group_name replaced by '-' (it separates category levels)"] == 1
    assert report.repaired["image mode CMYK re-encoded as RGB JPEG"] == 1
    assert report.repaired["image larger than 128 px downscaled"] == 1
    assert report.repaired["image file missing: image set to null (text kept)"] == 3
    assert report.repaired["transaction price missing or negative: value set to null"] == 1
    # CSV ids kept their zeros: nothing needed padding
    assert not any("leading zero" in k for k in report.repaired)
    assert any(n.startswith("1 transaction rows repeat an earlier row") for n in report.notes)
    assert any(n.startswith("2 images found in the nested") for n in report.notes)
    assert any("1 buyers are missing from customers.csv" in n for n in report.notes)
    assert any("2 customers have no purchases" in n for n in report.notes)
    assert report.counts == {"products": 6, "with_image": 3, "interactions": 5, "users": 3}
    assert validate_catalog(cat, check_media=True, on_error="collect", progress=False) == []


def test_hm_rows_are_mapped_as_documented(hm_csv: Path, tmp_path: Path) -> None:
    _, cat = _run(hm_csv, tmp_path / "cat")
    p = {r["item_id"]: r for r in cat.products.collect().iter_rows(named=True)}
    assert "0108775015" in p and p["0108775015"]["title"] == "Strap top"
    assert p["0108775044"]["title"] == "Strap top"  # the first of the conflicting rows
    assert p["0108775015"]["description"] == "Jersey top with narrow shoulder straps."
    assert p["0111565001"]["description"] == ""
    assert p["0176209023"]["category"] == "Baby-Children/Garment Lower body/Leggings-Tights"
    assert p["0108775015"]["image"] == "media/images/0108775015.jpg"
    with Image.open(cat.media_path(p["0176209023"]["image"])) as im:
        assert max(im.size) == 128
    it = cat.interactions.collect()
    assert set(it["event"]) == {"purchase"}
    assert it["timestamp"].to_list() == sorted(it["timestamp"].to_list())
    first = it.row(0, named=True)
    assert first["timestamp"] == datetime(2020, 8, 15, tzinfo=UTC)
    assert first["item_id"] == "0110065001" and first["value"] == pytest.approx(0.0305)
    assert it.filter(pl.col("user_id") == "c5")["value"].to_list() == [None]


def test_hm_parquet_with_numeric_ids_restores_leading_zeros(hm_csv: Path, tmp_path: Path) -> None:
    src = tmp_path / "hm_parquet"
    (src / "images").mkdir(parents=True)
    arts = pl.read_csv(hm_csv / "articles.csv", infer_schema=False)
    arts.with_columns(pl.col("article_id").cast(pl.Int64)).write_parquet(src / "articles_sample.parquet")
    tx = pl.read_csv(hm_csv / "transactions_train.csv", infer_schema=False)
    tx = tx.filter(pl.col("t_dat") != "not-a-date").with_columns(
        pl.col("article_id").cast(pl.Int64), pl.col("price").cast(pl.Float64)
    )
    tx.write_parquet(src / "transactions_sample.parquet")
    pl.read_csv(hm_csv / "customers.csv", infer_schema=False).write_parquet(src / "customers_sample.parquet")
    shutil.copy(hm_csv / "images" / "0176209023.jpg", src / "images" / "0176209023.jpg")
    report = import_catalog("hm", src, tmp_path / "cat")
    assert report.repaired["article_id lost its leading zero (stored as a number): padded to 10 digits"] == 8  # source rows, duplicates included
    assert report.repaired["transaction article_id lost its leading zero: padded to 10 digits"] == 7
    cat = read_catalog(tmp_path / "cat")
    ids = cat.products.select("item_id").collect()["item_id"].to_list()
    assert "0108775015" in ids and all(len(i) == 10 for i in ids)
    assert cat.interactions.select(pl.len()).collect().item() == 5


def test_hm_errors_name_the_file(tmp_path: Path) -> None:
    src = tmp_path / "empty"
    src.mkdir()
    with pytest.raises(CatalogError, match="no articles"):
        import_hm(src, tmp_path / "out")
    pl.DataFrame({"article_id": ["1"], "prod_name": ["x"]}).write_csv(src / "articles.csv")
    with pytest.raises(CatalogError, match=r"articles.csv: missing column\(s\)"):
        import_hm(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()
