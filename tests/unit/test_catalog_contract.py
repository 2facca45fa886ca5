"""The catalog contract: round trip, atomic writes, checksums and every bad input of issue 2."""

from __future__ import annotations

import datetime as dt
import json
import os
import wave
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import soundfile as sf
from PIL import Image

from workbench.catalog import CatalogWriter, read_catalog, validate_catalog, write_catalog
from workbench.errors import CatalogError, MediaError


def products(n: int = 3, **overrides) -> pl.DataFrame:
    data = {
        "item_id": [f"i{k}" for k in range(n)],
        "title": [f"title {k}" for k in range(n)],
        "description": [f"description {k}" for k in range(n)],
        "category": ["home/chairs"] * n,
        "brand": ["acme"] * n,
        "price": [float(k) for k in range(n)],
        "attributes": [json.dumps({"colour": "red"})] * n,
        "image": [None] * n,
        "audio": [None] * n,
    }
    data.update(overrides)
    return pl.DataFrame(data, schema_overrides={"image": pl.Utf8, "audio": pl.Utf8})


def interactions(items=("i0", "i1")) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user_id": ["u1"] * len(items),
            "item_id": list(items),
            "timestamp": [dt.datetime(2024, 1, 1, tzinfo=dt.UTC) + dt.timedelta(hours=h) for h in range(len(items))],
            "event": ["view"] * len(items),
            "value": [None] * len(items),
        },
        schema_overrides={"value": pl.Float64},
    )


def queries() -> pl.DataFrame:
    return pl.DataFrame({"query_id": ["q1"], "text": ["red chair"]})


def qrels(relevance=(3,)) -> pl.DataFrame:
    return pl.DataFrame({"query_id": ["q1"] * len(relevance), "item_id": [f"i{k}" for k in range(len(relevance))], "relevance": list(relevance)})


def write_media_catalog(tmp_path: Path) -> Path:
    media = tmp_path / "media_src"
    (media / "images").mkdir(parents=True)
    (media / "audio").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(media / "images" / "i0.png")
    sf.write(media / "audio" / "i0.wav", np.zeros(1600, np.float32), 16000, subtype="PCM_16")
    prods = products(image=["media/images/i0.png", None, None], audio=["media/audio/i0.wav", None, None])
    return write_catalog(tmp_path / "cat", products=prods, media_from=media)


def test_round_trip_keeps_rows_dtypes_and_manifest(tmp_path):
    out = write_catalog(tmp_path / "cat", products=products(), interactions=interactions(),
                        queries=queries(), qrels=qrels(), name="demo", source="unit test", licence="CC0")
    cat = read_catalog(out)
    assert cat.products.collect().get_column("item_id").to_list() == ["i0", "i1", "i2"]
    assert cat.interactions.collect_schema()["timestamp"] == pl.Datetime("us", "UTC")
    assert cat.qrels.collect().get_column("relevance").dtype == pl.Int8
    assert cat.manifest["counts"] == {"products": 3, "interactions": 2, "queries": 1, "qrels": 1}
    assert set(cat.manifest["sha256"]) == {"products.parquet", "interactions.parquet", "queries.parquet", "qrels.parquet"}
    assert validate_catalog(cat) == []


def test_same_input_gives_byte_identical_tables(tmp_path):
    a = write_catalog(tmp_path / "a", products=products(), interactions=interactions(), name="x")
    b = write_catalog(tmp_path / "b", products=products(), interactions=interactions(), name="x")
    assert (a / "manifest.json").read_bytes() == (b / "manifest.json").read_bytes()


def test_failed_write_leaves_existing_catalog_untouched_and_no_staging(tmp_path):
    out = write_catalog(tmp_path / "cat", products=products())
    before = (out / "products.parquet").read_bytes()
    with pytest.raises(CatalogError, match="interactions"):
        write_catalog(out, products=products(), interactions=interactions(items=("nope",)), overwrite=True)
    assert (out / "products.parquet").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cat"]


def test_existing_catalog_needs_overwrite(tmp_path):
    write_catalog(tmp_path / "cat", products=products())
    with pytest.raises(CatalogError, match="already exists"):
        write_catalog(tmp_path / "cat", products=products())


def test_streamed_chunks_are_checked_for_duplicates_across_chunks(tmp_path):
    with pytest.raises(CatalogError, match="duplicate item_id across chunks"):
        with CatalogWriter(tmp_path / "cat") as w:
            w.append_table("products", products(2))
            w.append_table("products", products(1))
    assert not (tmp_path / "cat").exists()


def test_struct_attributes_become_json_and_naive_timestamps_utc(tmp_path):
    prods = products().with_columns(attributes=pl.struct(colour=pl.lit("red"), size=pl.lit(3)))
    naive = interactions().with_columns(pl.col("timestamp").dt.replace_time_zone(None))
    cat = read_catalog(write_catalog(tmp_path / "cat", products=prods, interactions=naive))
    assert json.loads(cat.products.collect()["attributes"][0]) == {"colour": "red", "size": 3}
    assert cat.interactions.collect()["timestamp"][0] == dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


# ---- bad input: each gives CatalogError naming the table/column/row/file ----

def test_missing_products_table(tmp_path):
    (tmp_path / "cat").mkdir()
    with pytest.raises(CatalogError, match="missing required table products.parquet"):
        read_catalog(tmp_path / "cat")


def test_missing_catalog_folder(tmp_path):
    with pytest.raises(CatalogError, match="does not exist"):
        read_catalog(tmp_path / "nowhere")


def test_missing_column(tmp_path):
    with pytest.raises(CatalogError, match=r"table 'products'.*missing required column\(s\) \['title'\]"):
        write_catalog(tmp_path / "cat", products=products().drop("title"))


def test_wrong_dtype(tmp_path):
    with pytest.raises(CatalogError, match=r"column 'price': has dtype String, expected Float64"):
        write_catalog(tmp_path / "cat", products=products(price=["1", "2", "3"]))


def test_wrong_dtype_in_a_file_on_disk(tmp_path):
    out = write_catalog(tmp_path / "cat", products=products())
    products().with_columns(pl.col("title").cast(pl.Categorical)).drop("brand").write_parquet(out / "products.parquet")
    with pytest.raises(CatalogError, match=r"products.parquet, column 'title': has dtype Categorical"):
        read_catalog(out, verify_checksums=False)


def test_duplicate_item_id(tmp_path):
    with pytest.raises(CatalogError, match=r"column 'item_id', rows 0, 1: duplicate item_id"):
        write_catalog(tmp_path / "cat", products=products(item_id=["x", "x", "y"]))


def test_empty_item_id(tmp_path):
    with pytest.raises(CatalogError, match=r"column 'item_id', rows 1: empty identifier"):
        write_catalog(tmp_path / "cat", products=products(item_id=["a", " ", "c"]))


def test_interactions_naming_unknown_items(tmp_path):
    with pytest.raises(CatalogError, match=r"interactions, column 'item_id', rows 1: item_id not in products.*'ghost'"):
        write_catalog(tmp_path / "cat", products=products(), interactions=interactions(items=("i0", "ghost")))


def test_unknown_event(tmp_path):
    bad = interactions().with_columns(event=pl.lit("like"))
    with pytest.raises(CatalogError, match="unknown event"):
        write_catalog(tmp_path / "cat", products=products(), interactions=bad)


def test_relevance_outside_range(tmp_path):
    with pytest.raises(CatalogError, match=r"qrels.*column 'relevance', rows 1: relevance outside 0..3"):
        write_catalog(tmp_path / "cat", products=products(), queries=queries(), qrels=qrels((2, 4)))


def test_qrels_for_unknown_query(tmp_path):
    bad = qrels().with_columns(query_id=pl.lit("q9"))
    with pytest.raises(CatalogError, match="query_id not in queries"):
        write_catalog(tmp_path / "cat", products=products(), queries=queries(), qrels=bad)


def test_non_utf8_text(tmp_path):
    latin1 = products().with_columns(pl.Series("title", [b"ok", "caf\xe9".encode("latin-1"), b"ok"], dtype=pl.Binary))
    with pytest.raises(CatalogError, match=r"column 'title', rows 1: text is not valid UTF-8"):
        write_catalog(tmp_path / "cat", products=latin1)


def test_empty_catalog(tmp_path):
    with pytest.raises(CatalogError, match="products table is empty"):
        write_catalog(tmp_path / "cat", products=products(0))


@pytest.mark.parametrize("path", ["../outside.png", "/etc/passwd", "media/../../x.png"])
def test_media_path_escaping_is_refused_at_write(tmp_path, path):
    with pytest.raises(CatalogError, match="media path must be relative and stay inside"):
        write_catalog(tmp_path / "cat", products=products(image=[path, None, None]))


def test_symlink_out_of_catalog_is_refused(tmp_path):
    out = write_media_catalog(tmp_path)
    secret = tmp_path / "secret.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(secret)
    os.symlink(secret, out / "media" / "images" / "link.png")
    cat = read_catalog(out)
    with pytest.raises(MediaError, match="outside the catalog folder"):
        cat.media_path("media/images/link.png")


def test_missing_media_file(tmp_path):
    out = write_media_catalog(tmp_path)
    (out / "media" / "images" / "i0.png").unlink()
    with pytest.raises(MediaError, match=r"products 'i0' image 'media/images/i0.png': file .* does not exist"):
        validate_catalog(out, progress=False)


def test_corrupt_png_is_reported_with_its_item_or_collected(tmp_path):
    out = write_media_catalog(tmp_path)
    (out / "media" / "images" / "i0.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(MediaError, match="media/images/i0.png.*not a decodable image"):
        validate_catalog(out, progress=False)
    problems = validate_catalog(out, on_error="collect", progress=False)
    assert [(p.table, p.column, p.file) for p in problems] == [("products", "image", "media/images/i0.png")]


def test_truncated_wav(tmp_path):
    out = write_media_catalog(tmp_path)
    path = out / "media" / "audio" / "i0.wav"
    path.write_bytes(path.read_bytes()[:30])
    with pytest.raises(MediaError, match="media/audio/i0.wav"):
        validate_catalog(out, progress=False)


def test_header_only_wav_has_no_samples(tmp_path):
    out = write_media_catalog(tmp_path)
    path = out / "media" / "audio" / "i0.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
    with pytest.raises(MediaError, match="no samples"):
        validate_catalog(out, progress=False)


def test_non_wav_audio(tmp_path):
    out = write_media_catalog(tmp_path)
    (out / "media" / "audio" / "i0.wav").write_text("this is text, not sound")
    with pytest.raises(MediaError, match="not decodable audio"):
        validate_catalog(out, progress=False)


def test_manifest_checksum_mismatch(tmp_path):
    out = write_catalog(tmp_path / "cat", products=products())
    products(4).write_parquet(out / "products.parquet")
    with pytest.raises(CatalogError, match=r"products.parquet: sha256 .* does not match manifest.json"):
        read_catalog(out)
    assert read_catalog(out, verify_checksums=False).products.collect().height == 4


def test_table_added_after_manifest_is_refused(tmp_path):
    out = write_catalog(tmp_path / "cat", products=products())
    interactions().write_parquet(out / "interactions.parquet")
    with pytest.raises(CatalogError, match="interactions.parquet: present but not recorded"):
        read_catalog(out)


def test_unreadable_parquet(tmp_path):
    out = write_catalog(tmp_path / "cat", products=products())
    (out / "products.parquet").write_bytes(b"not parquet")
    with pytest.raises(CatalogError, match="products.parquet: not a readable parquet file"):
        read_catalog(out, verify_checksums=False)
