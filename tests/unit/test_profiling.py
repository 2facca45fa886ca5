"""Catalog profiling tables behind notebook 01."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import polars as pl
import soundfile as sf
from PIL import Image

from workbench.catalog import profiling as prof
from workbench.catalog import read_catalog, write_catalog


def make_catalog(tmp_path):
    src = tmp_path / "src"
    (src / "images").mkdir(parents=True)
    (src / "audio").mkdir()
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(src / "images" / "a.png")
    sf.write(src / "audio" / "a.wav", np.linspace(-0.5, 0.5, 800, dtype=np.float32), 8000, subtype="PCM_16")
    products = pl.DataFrame({
        "item_id": ["a", "b", "c", "d"],
        "title": ["A <b>", "B", "C", "D"],
        "description": [""] * 4,
        "category": ["home/chairs", "home/lamps", "garden/tools", "home/chairs"],
        "attributes": [json.dumps({"colour": "red"}), json.dumps({"colour": "red"}), json.dumps({"colour": "blue"}), None],
        "image": ["media/images/a.png", None, None, None],
        "audio": ["media/audio/a.wav", None, None, None],
    })
    t0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    inter = pl.DataFrame({
        "user_id": ["u1", "u1", "u1", "u2", "u2", "u3"],
        "item_id": ["a", "b", "a", "a", "c", "b"],
        "timestamp": [t0, t0, t0 + dt.timedelta(days=1), t0, t0, t0 + dt.timedelta(days=1)],
        "event": ["view", "click", "purchase", "view", "view", "view"],
    })
    return read_catalog(write_catalog(tmp_path / "cat", products=products, interactions=inter, media_from=src))


def test_profile_tables(tmp_path):
    cat = make_catalog(tmp_path)
    assert dict(prof.table_counts(cat).iter_rows()) == {"products": 4, "interactions": 6, "queries": 0, "qrels": 0}
    assert prof.modality_coverage(cat).get_column("share").to_list() == [1.0, 0.25, 0.25]
    assert prof.category_counts(cat, 1).rows() == [("home", 3), ("garden", 1)]
    assert prof.category_counts(cat, 9).rows() == [("home/chairs", 2), ("garden/tools", 1), ("home/lamps", 1)]
    assert prof.attribute_counts(cat).rows() == [("colour", "red", 2), ("colour", "blue", 1)]
    assert prof.user_activity(cat).select("rank", "user_id", "interactions").rows() == [(1, "u1", 3), (2, "u2", 2), (3, "u3", 1)]
    popular = prof.most_popular(cat, k=2)
    assert popular.select("item_id", "interactions", "title").rows() == [("a", 3, "A <b>"), ("b", 2, "B")]
    per_day = prof.interactions_per_day(cat)
    assert per_day.get_column("interactions").sum() == 6


def test_gallery_escapes_titles_and_marks_missing_images(tmp_path):
    cat = make_catalog(tmp_path)
    page = prof.image_gallery_html(cat, ["a", "b"], size=16)
    assert page.count("data:image/png;base64,") == 1
    assert "no image" in page and "A &lt;b&gt;" in page


def test_audio_clip_is_resampled_to_16k(tmp_path):
    cat = make_catalog(tmp_path)
    wave, rate = prof.audio_clip(cat, "a")
    assert rate == 16000 and wave.shape == (1600,)
    assert prof.wav_bytes(wave, rate)[:4] == b"RIFF"


def test_labels_and_presence_of_a_catalog_without_truth(tmp_path):
    cat = make_catalog(tmp_path)
    labels = prof.item_labels(cat)
    assert labels.columns == ["item_id", "title", "category", "top_category", "leaf_category", "colour"]
    assert labels.select("item_id", "top_category", "leaf_category", "colour").rows() == [
        ("a", "home", "chairs", "red"), ("b", "home", "lamps", "red"),
        ("c", "garden", "tools", "blue"), ("d", "home", "chairs", "unknown"),  # no attributes: its own class
    ]
    assert prof.label_attributes(labels) == ["category", "colour"]
    assert prof.label_attributes(labels, max_values=2) == ["category"]  # colour has 3 values
    assert prof.has_rows(cat, "interactions") and not prof.has_rows(cat, "queries")
    assert prof.absent_modalities_note(cat) is None  # one product with each medium is enough


def test_absent_modality_is_named_once(tmp_path):
    products = pl.DataFrame({"item_id": ["a", "b"], "title": ["A", "B"], "description": ["", ""],
                             "category": ["x/y", "x/z"]})
    cat = read_catalog(write_catalog(tmp_path / "cat", products=products))
    assert cat.modalities == ("text",)
    assert prof.absent_modalities_note(cat) == (
        "no product has image or audio: left out of training, fusion, the atlas and the ablation "
        "(modalities used: text)"
    )
    assert not prof.has_rows(cat, "interactions") and not prof.has_rows(cat, "qrels")


def test_has_truth_only_with_a_truth_folder(tmp_path):
    cat = make_catalog(tmp_path)
    assert not cat.has_truth
    (cat.root / "truth").mkdir()
    assert read_catalog(cat.root).has_truth


def test_the_teaching_example_is_parsed_and_hits_are_marked_with_the_truth(tmp_path):
    from workbench.catalog import read_truth
    from workbench.catalog.profiling import ground_truth_marks, synthetic_attributes_named
    from workbench.catalog.synthetic import SyntheticConfig, generate_synthetic

    assert synthetic_attributes_named("red striped wooden chair") == {
        "category": "furniture/chair", "colour": "red", "pattern": "stripes", "material": "wood"}
    assert synthetic_attributes_named("a CHECKERED oak table") == {
        "category": "furniture/table", "pattern": "checks", "material": "wood"}
    assert synthetic_attributes_named("nothing here") == {}
    out = generate_synthetic(tmp_path / "s", SyntheticConfig(n_items=60, n_users=5, n_queries=5, with_media=False,
                                                             seed=1), progress=False)
    cat = read_catalog(out)
    truth = read_truth(out)["items"].head(3)
    first = truth.row(0, named=True)
    marks = ground_truth_marks(cat, truth["item_id"].to_list(), {"colour": first["colour"], "material": "glass"})
    assert marks["colour_ok"][0] and marks.columns == ["item_id", "colour", "colour_ok", "material", "material_ok", "matches"]
    assert marks["matches"].to_list() == [int(r["colour"] == first["colour"]) + int(r["material"] == "glass")
                                          for r in truth.iter_rows(named=True)]
