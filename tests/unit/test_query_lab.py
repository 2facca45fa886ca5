"""The query lab (workbench.query_lab): the headless core and its widget, driven without a browser.

Two tiny work folders, built as notebooks 02 and 06 would (random towers, an exact index):
the encoder fixtures' catalog (text, image and audio, some media missing, queries with qrels)
and a text-only catalog without queries.
"""

from __future__ import annotations

import datetime as dt
import io
import json

import numpy as np
import polars as pl
import pytest
import soundfile as sf
import torch
from encoder_fixtures import make_tiny_catalog, tiny_config
from PIL import Image

from workbench.catalog import read_catalog, write_catalog
from workbench.encoders import MultimodalEncoder, embed_catalog, load_encoder, save_encoder
from workbench.errors import (
    ConfigError,
    EmptyQueryError,
    QueryError,
    QueryMediaError,
    WorkbenchError,
    ZeroWeightsError,
)
from workbench.index import IndexConfig, build_index, read_item_embeddings
from workbench.query_lab import LabConfig, QueryLab, Upload, build_widget

pytestmark = pytest.mark.usefixtures("one_thread")


def _work(catalog, work, config):
    torch.manual_seed(0)
    save_encoder(MultimodalEncoder(config).eval(), work / "encoders")
    enc = load_encoder(work / "encoders", device="cpu")
    embed_catalog(catalog, enc, work / "embeddings", batch_size=4, cache_dir=work / "cache", progress=False)
    emb = read_item_embeddings(work / "embeddings")
    build_index(emb.item_ids, emb.vectors, IndexConfig(kind="exact"), items=emb.info).save(work / "index")
    return work


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """(catalog dir, work dir): 8 products, p1/p5 without image, p2/p6 without audio, 6 queries with qrels."""
    root = tmp_path_factory.mktemp("lab")
    cat = make_tiny_catalog(root)
    return cat, _work(cat, root / "work", tiny_config())


@pytest.fixture(scope="module")
def lab(full):
    return QueryLab.from_work_dir(*full, LabConfig(k=5, candidates=6, thumbnail=32))


@pytest.fixture(scope="module")
def text_only(tmp_path_factory):
    root = tmp_path_factory.mktemp("lab-text")
    products = pl.DataFrame({
        "item_id": [f"t{i}" for i in range(6)],
        "title": [f"plain thing {i}" for i in range(6)],
        "description": [f"a {c} thing" for c in ("red", "green", "blue", "red", "green", "blue")],
        "category": ["home/misc"] * 6,
    })
    cat = write_catalog(root / "cat", products=products, name="text-only")
    work = _work(cat, root / "work", tiny_config(modalities=("text",)))
    return QueryLab.from_work_dir(cat, work, LabConfig(k=4))


def _png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((20, 20, 3), 200, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _wav(seconds: float) -> bytes:
    buf = io.BytesIO()
    t = np.arange(int(8000 * seconds)) / 8000
    sf.write(buf, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 8000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _upload(name: str, content: bytes) -> tuple[dict, ...]:
    """What ipywidgets 8's FileUpload holds after a browser upload."""
    return ({"name": name, "type": "", "size": len(content), "content": memoryview(content),
             "last_modified": dt.datetime(2024, 1, 1, tzinfo=dt.UTC)},)


# ------------------------------------------------------------------ the headless core


def test_lab_knows_what_the_catalog_and_encoder_have(lab):
    assert lab.modalities == ("text", "image", "audio")
    assert lab.query_modalities == ("text", "image", "audio")
    info = lab.describe()
    assert info == {"items": 8, "modalities": ["text", "image", "audio"], "query_modalities": ["text", "image", "audio"],
                    "catalog_queries": 6, "queries_with_qrels": 6, "index": "exact", "candidates": 6, "k": 5}
    assert [i for _, i in lab.media_choices("image")] == ["p0", "p2", "p3", "p4", "p6", "p7"]  # p1, p5: no image
    assert [i for _, i in lab.media_choices("audio")] == ["p0", "p1", "p3", "p4", "p5", "p7"]
    assert [q for _, q in lab.query_choices()] == [f"q{j}" for j in range(6)]


def test_contributions_are_weighted_cosines_over_the_modalities_an_item_has(lab, full):
    weights = {"text": 1.0, "image": 0.5, "audio": 0.25}
    result = lab.search("a red thing", weights=weights)
    assert len(result.cards) == 5 and [c.rank for c in result.cards] == [1, 2, 3, 4, 5]
    assert not result.exhaustive and result.n_candidates == 6  # the index proposed 6 of 8
    frame = pl.read_parquet(full[1] / "embeddings" / "items.parquet")
    q = lab.query_vector("a red thing")
    for card in result.cards:
        row = frame.filter(pl.col("item_id") == card.item_id).row(0, named=True)
        present = [m for m in ("text", "image", "audio") if row[m] is not None]
        assert list(card.contributions) == present  # no bar for a modality the item lacks
        total = sum(weights[m] for m in present)
        for m in present:
            v = np.asarray(row[m], dtype=np.float64)
            expected = weights[m] / total * float(q @ (v / np.linalg.norm(v)))
            assert card.contributions[m] == pytest.approx(expected, abs=1e-5)
        assert sum(card.contributions.values()) == pytest.approx(card.score, abs=1e-9)
    assert [c.score for c in result.cards] == sorted((c.score for c in result.cards), reverse=True)
    # titles come from the catalog; the frame has one contribution column per lab modality
    titles = dict(read_catalog(full[0]).products.select("item_id", "title").collect().iter_rows())
    assert all(c.title == titles[c.item_id] for c in result.cards)
    table = result.to_frame()
    assert table.columns == ["rank", "item_id", "title", "score", "contribution_text", "contribution_image",
                             "contribution_audio", "relevance"]


def test_every_item_is_scored_without_an_index_and_weights_move_the_ranking(full):
    lab = QueryLab.from_work_dir(*full, LabConfig(k=8, candidates=None))
    image_only = lab.search("a red thing", weights={"image": 1.0})
    assert image_only.exhaustive and image_only.n_candidates == 6  # p1, p5 have no image: left out
    assert {c.item_id for c in image_only.cards}.isdisjoint({"p1", "p5"})
    assert all(list(c.contributions) == ["text", "image", "audio"][: len(c.contributions)] for c in image_only.cards)
    assert all(c.contributions.get("text") == 0.0 for c in image_only.cards)  # weight 0: a term of 0
    text_only = lab.search("a red thing", weights={"text": 1.0})
    assert len(text_only.cards) == 8


def test_relevance_marks_from_the_qrels_when_the_text_is_a_catalog_query(lab, full):
    qrels = read_catalog(full[0]).qrels.collect()
    grades = {i: g for q, i, g in qrels.iter_rows() if q == "q0"}
    result = lab.search("  BRAND0   thing 0 ")  # the text of q0, whitespace and case aside
    assert result.query_ids == ("q0",) and result.judged and result.n_relevant == 2
    for card in result.cards:
        assert card.relevance == grades.get(card.item_id)
    assert result.n_marked_relevant == sum(1 for c in result.cards if c.item_id in grades)
    picked = lab.search(lab.query_text("q3"), query_id="q3")
    assert picked.query_ids == ("q3",) and picked.judged
    free = lab.search("something nobody asked")
    assert free.query_ids == () and not free.judged and all(c.relevance is None for c in free.cards)
    html = lab.card_html(result.cards[0], judged=True)
    assert 'class="wb-rel"' in html and 'class="wb-rel"' not in lab.card_html(free.cards[0], judged=False)


def test_more_like_this_searches_with_the_items_vector_and_leaves_it_out(lab):
    result = lab.more_like_this("p3")
    assert result.seed_item == "p3" and "p3" not in [c.item_id for c in result.cards]
    assert len(result.cards) == 5 and not result.judged
    with pytest.raises(QueryError, match="'nope': not among the lab's 8 items"):
        lab.more_like_this("nope")


def test_media_queries_from_a_products_file_and_from_uploads(lab, full):
    cat = read_catalog(full[0])
    by_file = lab.search(image=cat.media_path("media/img0.png"))
    assert len(by_file.cards) == 5 and "image 'img0.png'" in by_file.label
    by_upload = lab.search("a thing", image=Upload("photo.png", _png()), audio=Upload("beep.wav", _wav(0.5)))
    assert len(by_upload.cards) == 5
    assert "'a thing' + image 'photo.png' + sound 'beep.wav'" in by_upload.label


def test_bad_input_gets_a_one_line_error(lab):
    cases = [
        (EmptyQueryError, r"^nothing to search for: type some words, or pick or upload an image or a sound$",
         dict(text="   ")),
        (QueryMediaError, r"^the uploaded image 'notes.txt' cannot be read: expected an image",
         dict(image=Upload("notes.txt", b"just some words, not pixels\n"))),
        (QueryMediaError, r"^the uploaded sound 'silence.wav' lasts 0 s: expected a clip with some sound$",
         dict(audio=Upload("silence.wav", _wav(0)))),
        (QueryMediaError, r"^the uploaded image 'empty.png' is empty \(0 bytes\)$", dict(image=Upload("empty.png", b""))),
        (QueryMediaError, r"^the uploaded sound 'notes.txt' cannot be read: expected audio",
         dict(audio=Upload("notes.txt", b"not a sound"))),
        (ZeroWeightsError, r"^every modality weight is 0: move at least one slider above 0$",
         dict(text="chair", weights={"text": 0, "image": 0, "audio": 0})),
        (QueryError, r"^weight for text=-1: expected a finite number, 0 or more$", dict(text="chair", weights={"text": -1})),
        (QueryError, r"^weight for 'smell': this lab has no smell vectors", dict(text="chair", weights={"smell": 1})),
        (QueryError, r"^catalog query 'q99': not in the catalog's queries$", dict(text="chair", query_id="q99")),
    ]
    for error, message, kwargs in cases:
        with pytest.raises(error, match=message) as info:
            lab.search(**kwargs)
        assert isinstance(info.value, WorkbenchError) and "\n" not in str(info.value)
    with pytest.raises(ZeroWeightsError):
        lab.more_like_this("p0", weights={"text": 0.0})


def test_lab_config_validates_itself():
    with pytest.raises(ConfigError, match="LabConfig.k=0"):
        LabConfig(k=0)
    with pytest.raises(ConfigError, match="LabConfig.candidates=3: expected None or an integer >= k=12"):
        LabConfig(candidates=3)
    with pytest.raises(ConfigError, match="LabConfig.thumbnail=4"):
        LabConfig(thumbnail=4)


def test_a_text_only_catalog_without_queries(text_only):
    assert text_only.modalities == ("text",) and text_only.query_modalities == ("text",)
    assert text_only.media_choices("image") == [] and text_only.query_choices() == []
    result = text_only.search("a red thing")
    assert len(result.cards) == 4 and not result.judged
    assert all(list(c.contributions) == ["text"] for c in result.cards)
    assert all(c.contributions["text"] == pytest.approx(c.score) for c in result.cards)
    with pytest.raises(QueryError, match="cannot search by image"):
        text_only.search(image=Upload("photo.png", _png()))
    html = text_only.gallery_html(result)
    assert html.count('class="wb-card"') == 4 and 'data-modality="image"' not in html
    assert "no image" in html and "<audio" not in html


# ------------------------------------------------------------------ the widget, driven headlessly


def _cards(widget) -> list[str]:
    return [card.children[0].value for card in widget.gallery.children]


def test_widget_search_shows_cards_with_bars_audio_and_relevance(lab):
    w = build_widget(lab)
    assert all(w.sliders[m].layout.display != "none" for m in ("text", "image", "audio"))
    w.text.value = "brand1 thing 1"  # the text of q1
    w.search.click()
    assert w.result is not None and len(w.cards) == 5
    cards = _cards(w)
    assert len(cards) == 5 and all('class="wb-card"' in c for c in cards)
    for card, html in zip(w.result.cards, cards, strict=True):
        assert card.title in html and f'data-item="{card.item_id}"' in html
        assert ('data-modality="image"' in html) == (card.item_id not in ("p1", "p5"))
        assert ('data-modality="audio"' in html) == (card.item_id not in ("p2", "p6"))
        assert ("<audio" in html) == (card.item_id not in ("p2", "p6"))  # a player where there is audio
        assert ('src="data:image/jpeg;base64,' in html) == (card.item_id not in ("p1", "p5"))
        assert 'class="wb-rel"' in html  # q1 has qrels: every card is marked
    assert "relevance from q1" in w.message.value and 'data-kind="info"' in w.message.value
    # picking a catalog query fills the text box and searches
    w.query_picker.value = "q4"
    assert w.text.value == lab.query_text("q4") and w.result.query_ids == ("q4",)
    w.text.value = "something else"  # edited away from q4: the picker lets go of it
    assert w.query_picker.value == ""


def test_widget_more_like_this_and_sliders_rerun_the_last_query(lab):
    w = build_widget(lab, text="a blue thing")
    w.search.click()
    first = w.cards[0].item_id
    w.cards[0].more.click()
    assert w.result.seed_item == first and first not in [c.item_id for c in w.result.cards]
    assert f"more like {first}" in w.message.value
    w.sliders["text"].value = 0.0
    w.sliders["audio"].value = 0.0  # image only now: the same seed, re-ranked
    assert w.result.seed_item == first and w.result.weights == {"text": 0.0, "image": 1.0, "audio": 0.0}
    assert {c.item_id for c in w.result.cards}.isdisjoint({"p1", "p5"})


def test_widget_media_pickers_and_uploads(lab):
    w = build_widget(lab)
    w.pickers["image"].value = "p3"
    assert "<img" in w.previews["image"].value
    w.search.click()
    assert w.result is not None and "image 'img3.png'" in w.result.label
    w.uploads["image"].value = _upload("photo.png", _png())
    assert w.pickers["image"].value == ""  # the upload replaces the product's own image
    w.search.click()
    assert "image 'photo.png'" in w.result.label
    w.clears["image"].click()
    assert w.uploads["image"].value == () and w.previews["image"].value == ""


def test_widget_shows_each_bad_input_as_one_line(lab):
    w = build_widget(lab)

    def error_after(setup) -> str:
        w.text.value, w.uploads["image"].value, w.uploads["audio"].value = "", (), ()
        for s in w.sliders.values():
            s.value = 1.0
        w.text.value = "chair"
        w.search.click()
        assert w.result is not None and len(w.gallery.children) == 5
        setup()
        w.search.click()
        assert w.result is None and w.gallery.children == ()  # no stale cards beside an error
        assert 'data-kind="error"' in w.message.value and "\n" not in w.message.value
        return w.message.value

    def empty():
        w.text.value = " "

    def text_file_as_image():
        w.text.value = ""
        w.uploads["image"].value = _upload("notes.txt", b"words, not pixels")

    def silent_wav():
        w.uploads["audio"].value = _upload("silence.wav", _wav(0))

    def zero_weights():
        for s in w.sliders.values():
            s.value = 0.0

    assert "nothing to search for" in error_after(empty)
    assert "the uploaded image &#x27;notes.txt&#x27; cannot be read" in error_after(text_file_as_image)
    assert "lasts 0 s" in error_after(silent_wav)
    assert "every modality weight is 0" in error_after(zero_weights)


def test_widget_hides_what_the_catalog_lacks(text_only):
    w = build_widget(text_only, text="a red thing")
    assert w.sliders["text"].layout.display != "none"
    assert w.sliders["image"].layout.display == "none" and w.sliders["audio"].layout.display == "none"
    assert w.query_picker.layout.display == "none"  # no catalog queries
    media_rows = [row for row in w.box.children if w.pickers["image"] in getattr(row, "children", ())
                  or w.pickers["audio"] in getattr(row, "children", ())]
    assert len(media_rows) == 2 and all(r.layout.display == "none" for r in media_rows)
    assert w.weights() == {"text": 1.0}
    w.search.click()
    assert len(w.cards) == 4 and not any('class="wb-rel"' in c for c in _cards(w))
    assert not any('data-modality="image"' in c or "<audio" in c for c in _cards(w))
    json.dumps(w.result.to_frame().to_dicts())  # plain values, ready for a table
