"""The synthetic catalog: determinism, sizes, the modality split, qrels, and the signals rankers need."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from workbench.catalog import read_catalog, read_truth, validate_catalog
from workbench.catalog.synthetic import (
    SyntheticConfig,
    attribute_modalities,
    attributes,
    behaviour,
    category_tree,
    complement_map,
    generate_synthetic,
    products,
    vocabulary,
)
from workbench.errors import ConfigError
from workbench.evaluate.oracle import oracle_scores
from workbench.evaluate.rankers import oracle_metrics

SMALL = dict(n_items=240, n_users=60, n_queries=40, seed=3, events_per_user=12)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("syn") / "cat"
    return generate_synthetic(out, SyntheticConfig(**SMALL, chunk_size=100, workers=2), progress=False)


@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> Path:
    """Tables only, large enough for the ranking-signal checks."""
    out = tmp_path_factory.mktemp("syn") / "tables"
    cfg = SyntheticConfig(n_items=1000, n_users=400, n_queries=60, seed=1, with_media=False)
    return generate_synthetic(out, cfg, progress=False)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _tokens(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def test_same_seed_is_byte_identical_whatever_the_worker_count(small, tmp_path):
    again = generate_synthetic(tmp_path / "again", SyntheticConfig(**SMALL, chunk_size=100, workers=0), progress=False)
    a, b = _files(small), _files(again)
    assert sorted(a) == sorted(b)
    assert any(k.endswith(".png") for k in a) and any(k.endswith(".wav") for k in a)
    different = [k for k in a if a[k] != b[k]]
    assert different == []


def test_content_does_not_depend_on_chunking(small, tmp_path):
    # Parquet row groups follow the chunks, so bytes differ; every value must not.
    other = generate_synthetic(tmp_path / "c7", SyntheticConfig(**SMALL, chunk_size=7, with_media=False), progress=False)
    for table in ("products", "interactions", "queries", "qrels"):
        x = pl.read_parquet(small / f"{table}.parquet").drop("image", "audio", strict=False)
        y = pl.read_parquet(other / f"{table}.parquet").drop("image", "audio", strict=False)
        assert x.equals(y), table
    assert pl.read_parquet(other / "products.parquet")["image"].null_count() == SMALL["n_items"]


def test_other_seed_differs(tmp_path):
    cfg = dict(n_items=50, n_users=5, n_queries=5, with_media=False)
    a = generate_synthetic(tmp_path / "a", SyntheticConfig(**cfg, seed=0), progress=False)
    b = generate_synthetic(tmp_path / "b", SyntheticConfig(**cfg, seed=1), progress=False)
    assert (a / "products.parquet").read_bytes() != (b / "products.parquet").read_bytes()


def test_sizes_schema_and_media_validate(small):
    cat = read_catalog(small)
    assert validate_catalog(cat, check_media=True, on_error="collect", progress=False) == []
    products = cat.products.collect()
    assert products.height == SMALL["n_items"]
    inter = cat.interactions.collect()
    assert inter.get_column("user_id").n_unique() == SMALL["n_users"]
    # one event per visit, mean events_per_user (lognormal activity, clipped at 2)
    assert 0.7 * SMALL["events_per_user"] < inter.height / SMALL["n_users"] < 1.3 * SMALL["events_per_user"]
    assert inter.group_by("user_id").len().get_column("len").min() >= 2
    assert set(inter.get_column("event").unique()) == {"view", "click", "cart", "purchase"}
    assert inter.get_column("timestamp").dtype == pl.Datetime("us", "UTC")
    assert cat.queries.collect().height == SMALL["n_queries"]
    manifest = json.loads((small / "manifest.json").read_text())
    assert manifest["counts"]["products"] == SMALL["n_items"]
    # media paths are relative and their files exist; audio is 1 s mono 16 kHz PCM_16
    import soundfile as sf
    from PIL import Image

    row = products.filter(pl.col("image").is_not_null() & pl.col("audio").is_not_null()).row(0, named=True)
    assert row["image"].startswith("media/images/") and row["audio"].startswith("media/audio/")
    assert Image.open(small / row["image"]).size == (64, 64)
    info = sf.info(str(small / row["audio"]))
    assert (info.samplerate, info.channels, info.subtype, info.frames) == (16000, 1, "PCM_16", 16000)
    media_files = {str(p.relative_to(small)) for p in (small / "media").rglob("*") if p.is_file()}
    referenced = set(products.get_column("image").drop_nulls()) | set(products.get_column("audio").drop_nulls())
    assert media_files == referenced


def test_truth_tables(small):
    truth = read_truth(small)
    assert {"items", "users", "queries", "categories"} <= set(truth)
    items = truth["items"]
    products = read_catalog(small).products.collect()
    assert items.get_column("item_id").to_list() == products.get_column("item_id").to_list()
    assert items.get_column("category").to_list() == products.get_column("category").to_list()
    assert (items.get_column("has_image") == products.get_column("image").is_not_null()).all()
    assert (items.get_column("has_audio") == products.get_column("audio").is_not_null()).all()
    users = truth["users"]
    assert users.height == SMALL["n_users"]
    assert users.get_column("taste").dtype == pl.List(pl.Float32)
    assert users.get_column("taste").list.len().unique().to_list() == [attributes.TASTE_DIM]
    attrs = json.loads((small / "truth" / "attributes.json").read_text())
    assert attrs["modalities"]["colour"] == ["image"] and attrs["modalities"]["material"] == ["audio"]


def test_category_tree():
    tree = category_tree()
    leaves = [f"{t}/{leaf}" for t, ls in tree.items() for leaf in ls]
    assert len(tree) >= 5 and len(leaves) >= 20 and len(set(leaves)) == len(leaves)
    comp = complement_map()
    assert set(comp) == set(leaves) and set(comp.values()) <= set(leaves)
    assert all(comp[c] != c for c in leaves)


def test_modality_split_text_never_names_hidden_attributes(tables):
    items = read_truth(tables)["items"]
    products = read_catalog(tables).products.collect()
    vocab = vocabulary()
    words = {a: {t for ws in vocab[a].values() for w in ws for t in _tokens(w)} for a in ("colour", "pattern", "material")}
    # the vocabularies are disjoint from each other and from every brand, style and category word
    others = {t for a in ("brand", "style", "category") for ws in vocab[a].values() for w in ws for t in _tokens(w)}
    for a, ws in words.items():
        assert not ws & others, a
        for b, vs in words.items():
            assert a == b or not ws & vs
    texts = [_tokens(t + " " + d) for t, d in zip(products["title"], products["description"], strict=True)]
    n_checked = 0
    for attr in ("colour", "pattern", "material"):
        shown = items.get_column(f"text_{attr}").to_list()
        assert 0.1 < np.mean(shown) < 0.35  # mentioned for a minority only
        for toks, s in zip(texts, shown, strict=True):
            if not s:
                assert not toks & words[attr], (attr, toks & words[attr])
                n_checked += 1
    assert n_checked > 2000
    # and when the text does name the colour, it names the right one (no typo can hide all of them)
    colour_hits = [
        bool(toks & set(map(str.lower, vocab["colour"][c])))
        for toks, c, s in zip(texts, items["colour"], items["text_colour"], strict=True) if s
    ]
    assert np.mean(colour_hits) > 0.9
    assert attribute_modalities()["colour"] == ("image",) and attribute_modalities()["brand"] == ("text",)


def test_texts_vary_and_name_brand_and_category(tables):
    products = read_catalog(tables).products.collect()
    assert products.get_column("title").n_unique() > 0.9 * products.height
    brand_in_text = [b.lower()[:4] in (t + d).lower() for b, t, d in zip(products["brand"], products["title"], products["description"], strict=True)]
    assert np.mean(brand_in_text) > 0.97


def test_missing_modality_rates():
    cfg = SyntheticConfig(n_items=20_000, missing_image_rate=0.1, missing_audio_rate=0.25)
    items = products._draw_items(cfg)
    assert abs(1 - items["has_image"].mean() - 0.1) < 0.01
    assert abs(1 - items["has_audio"].mean() - 0.25) < 0.01
    # counter-based draws: a prefix of a larger catalog is the smaller catalog
    small = products._draw_items(SyntheticConfig(n_items=500))
    assert all(np.array_equal(small[k], items[k][:500]) for k in ("leaf", "colour", "material", "has_image"))


def test_qrels_grades_follow_truth(small):
    cat = read_catalog(small)
    qrels = cat.qrels.collect()
    truth = read_truth(small)
    items = truth["items"]
    assert qrels.get_column("relevance").is_between(0, 3).all()
    assert qrels.filter(pl.col("relevance") > 0).height > 0
    checked = 0
    for q in truth["queries"].iter_rows(named=True):
        named = json.loads(q["named"])
        assert 1 <= len(named) <= 3
        # attributes come from different modalities
        mods = {attribute_modalities()[a][0] for a in named}
        assert len(mods) == len(named)
        grade = sum((items.get_column(a) == v).cast(pl.Int8) for a, v in named.items())
        expect = items.select("item_id", "category").with_columns(grade.alias("g")).filter(
            (pl.col("category") == q["category"]) & (pl.col("g") > 0))
        got = qrels.filter((pl.col("query_id") == q["query_id"]) & (pl.col("relevance") > 0))
        assert dict(zip(got["item_id"], got["relevance"], strict=True)) == dict(zip(expect["item_id"], expect["g"], strict=True))
        zeros = qrels.filter((pl.col("query_id") == q["query_id"]) & (pl.col("relevance") == 0))
        assert set(zeros["item_id"]) <= set(items.filter(pl.col("category") == q["category"])["item_id"])
        # the target item has every named attribute
        assert got.filter(pl.col("item_id") == q["target_item_id"])["relevance"].to_list() == [len(named)]
        checked += 1
    assert checked == SMALL["n_queries"]


def test_query_words_name_category_and_attributes(small):
    truth = read_truth(small)
    queries = read_catalog(small).queries.collect()
    vocab = vocabulary()
    for q, t in zip(queries.iter_rows(named=True), truth["queries"].iter_rows(named=True), strict=True):
        toks = _tokens(q["text"])
        leaf = t["category"]
        assert toks & {w for s in vocab["category"][leaf] for w in _tokens(s)}
        for attr, value in json.loads(t["named"]).items():
            assert toks & {w for s in vocab[attr][value] for w in _tokens(s)}, (q["text"], attr, value)
    assert queries.get_column("user_id").is_not_null().sum() > 0


def _leave_last(inter: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    inter = inter.sort("user_id", "timestamp").with_columns(pl.int_range(pl.len()).over("user_id").alias("k"),
                                                         pl.len().over("user_id").alias("n"))
    test = inter.filter(pl.col("k") == pl.col("n") - 1)
    prev = inter.filter(pl.col("k") == pl.col("n") - 2).select("user_id", pl.col("item_id").alias("prev"))
    return inter.filter(pl.col("k") < pl.col("n") - 1), test.join(prev, on="user_id")


def test_sequential_signal_beats_popularity(tables):
    cat = read_catalog(tables)
    train, test = _leave_last(cat.interactions.collect())
    items = read_truth(tables)["items"]
    item_ids = items.get_column("item_id").to_list()
    pos = {it: i for i, it in enumerate(item_ids)}
    leaf = items.get_column("category").to_list()
    counts = np.bincount([pos[i] for i in train["item_id"]], minlength=len(item_ids)).astype(float)
    pop_rank = np.argsort(-counts, kind="stable")[:10]
    comp = complement_map()
    hits_pop = hits_comp = 0
    for target, prev in zip(test["item_id"], test["prev"], strict=True):
        hits_pop += pos[target] in pop_rank
        want = comp[leaf[pos[prev]]]
        score = counts + 1e6 * np.array([c == want for c in leaf])
        hits_comp += pos[target] in np.argsort(-score, kind="stable")[:10]
    n = test.height
    assert hits_comp / n > 2 * hits_pop / n
    assert hits_comp / n > 0.15


def test_oracle_is_a_distribution_and_beats_heuristics(tables):
    truth = read_truth(tables)
    cat = read_catalog(tables)
    train, test = _leave_last(cat.interactions.collect())
    scores = oracle_scores(truth, test["user_id"].to_list(), test["prev"].to_list())
    assert scores.shape == (test.height, truth["items"].height)
    np.testing.assert_allclose(np.exp(scores).sum(axis=1), 1.0, rtol=1e-9)
    first = oracle_scores(truth, test["user_id"].to_list()[:3], [None] * 3)
    np.testing.assert_allclose(np.exp(first).sum(axis=1), 1.0, rtol=1e-9)
    pos = {it: i for i, it in enumerate(truth["items"]["item_id"])}
    target = np.array([pos[i] for i in test["item_id"]])
    oracle_ll = scores[np.arange(target.size), target].mean()
    counts = np.bincount([pos[i] for i in train["item_id"]], minlength=len(pos)) + 1.0
    pop_ll = np.log(counts / counts.sum())[target].mean()
    assert oracle_ll > pop_ll + 0.5


def test_order_blind_oracle_ranks_by_taste_and_popularity_alone(tables):
    """oracle_metrics(order=False) is the ceiling of rankers that ignore order: below the full oracle."""
    truth = read_truth(tables)
    train, test = _leave_last(read_catalog(tables).interactions.collect())
    test = test.drop("prev")
    item_ids = truth["items"]["item_id"].to_list()
    full = oracle_metrics(truth, train, test, item_ids, per_query=True)
    blind = oracle_metrics(truth, train, test, item_ids, per_query=True, order=False)
    # the complement habit decides about half of the next items: knowing the previous one is worth a lot
    assert np.nanmean(full["ndcg@10"]) > 1.5 * np.nanmean(blind["ndcg@10"]) > 0
    # it reads no order: reversing the training timestamps changes every user's last item, so the
    # full oracle's lists, and none of the order-blind one's
    reversed_train = train.with_columns(-pl.col("timestamp").cast(pl.Int64))
    assert oracle_metrics(truth, reversed_train, test, item_ids, order=False) == oracle_metrics(
        truth, train, test, item_ids, order=False)
    assert oracle_metrics(truth, reversed_train, test, item_ids) != oracle_metrics(truth, train, test, item_ids)

def test_sampler_matches_oracle_distribution():
    """The factorised sampler draws exactly what oracle_scores says (total variation ~ noise)."""
    cfg = SyntheticConfig(n_items=300, n_users=2, seed=5)
    items = products._draw_items(cfg)
    sampler = behaviour._Sampler(items)
    users = behaviour._draw_users(cfg, np.arange(2))
    truth = {
        "items": pl.DataFrame({
            "item_id": [f"i{k}" for k in range(cfg.n_items)],
            "category": np.array(attributes.LEAVES)[items["leaf"]], "colour": np.array(attributes.COLOURS)[items["colour"]],
            "material": np.array(attributes.MATERIALS)[items["material"]], "style": np.array(attributes.STYLES)[items["style"]],
            "popularity": items["popularity"]}),
        "users": pl.DataFrame({"user_id": ["a", "b"], "taste": users["taste"].astype(np.float32).tolist(),
                               "p_complement": users["p_complement"].astype(np.float32)}),
    }
    rng = np.random.default_rng(0)
    n = 300_000
    cat_logw, flat = sampler.prepare(users["taste"][:1])
    rows = np.zeros(n, dtype=np.int64)
    drawn = sampler.draw(cat_logw, flat, rows, None, rng.random(n), rng.random(n), rng.random(n))
    p = np.exp(oracle_scores(truth, ["a"], [None])[0])
    emp = np.bincount(drawn, minlength=cfg.n_items) / n
    assert 0.5 * np.abs(emp - p).sum() < 0.02
    # forced category (the complement draw) matches the within-category oracle term
    leaf = int(attributes.COMPLEMENT_IDX[items["leaf"][0]])
    drawn = sampler.draw(cat_logw, flat, rows, np.full(n, leaf), rng.random(n), rng.random(n), rng.random(n))
    assert (items["leaf"][drawn] == leaf).all()
    both = np.exp(oracle_scores(truth, ["a"], ["i0"])[0])
    pc = float(truth["users"]["p_complement"][0])
    within = (both - (1 - pc) * p) / pc
    emp = np.bincount(drawn, minlength=cfg.n_items) / n
    assert 0.5 * np.abs(emp - within).sum() < 0.02


def test_bad_config_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="missing_image_rate"):
        generate_synthetic(tmp_path / "x", SyntheticConfig(missing_image_rate=1.5))
    with pytest.raises(ConfigError, match="n_items"):
        generate_synthetic(tmp_path / "x", SyntheticConfig(n_items=0))
    assert not (tmp_path / "x").exists()


def test_audio_carries_material_but_not_trivially():
    """Two crude features (spectral centroid, decay) classify material well above chance, not perfectly."""
    from workbench.catalog.synthetic.attributes import MATERIALS
    from workbench.catalog.synthetic.media import item_rng, noise_bank, render_audio

    bank = noise_bank(0)

    def feat(x: np.ndarray) -> list[float]:
        spec = np.abs(np.fft.rfft(x)) ** 2
        freq = np.fft.rfftfreq(x.size, 1 / 16000)
        e = x**2
        i0 = int(np.argmax(np.abs(x)))
        decay = np.log(e[i0 + 1600 : i0 + 4800].sum() + 1e-9) - np.log(e[i0 : i0 + 1600].sum() + 1e-9)
        return [float(np.log((spec * freq).sum() / spec.sum())), float(decay)]

    feats, labels = [], []
    for m in range(len(MATERIALS)):
        for i in range(30):
            x = render_audio(item_rng(1, 102, m * 1000 + i), m, bank)
            assert x.dtype == np.float32 and x.shape == (16000,) and np.abs(x).max() <= 1.0
            feats.append(feat(x))
            labels.append(m)
    f, y = np.array(feats), np.array(labels)
    train = np.arange(y.size) % 2 == 0
    z = (f - f[train].mean(0)) / f[train].std(0)
    centroids = np.array([z[train & (y == m)].mean(0) for m in range(len(MATERIALS))])
    pred = np.argmin(((z[~train, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
    acc = float((pred == y[~train]).mean())
    assert 0.45 < acc < 0.95, acc


def test_image_colour_is_in_the_shape_not_the_whole_picture():
    from workbench.catalog.synthetic.media import COLOUR_RGB, item_rng, noise_bank, render_image

    bank = noise_bank(0)
    palette = np.array(COLOUR_RGB, dtype=float)
    centre_hits = mean_hits = 0
    n = 0
    for c in range(len(COLOUR_RGB)):
        for i in range(12):
            solid = render_image(item_rng(2, 101, c * 100 + i), [0, 1, 3, 6][i % 4], c, 0, 64, bank).astype(float)
            centre = np.median(solid[27:37, 27:37].reshape(-1, 3), axis=0)
            centre_hits += np.argmin(((palette - centre) ** 2).sum(1)) == c
            any_img = render_image(item_rng(3, 101, c * 100 + i), i % 24, c, i % 4, 64, bank).astype(float)
            mean_hits += np.argmin(((palette - any_img.reshape(-1, 3).mean(0)) ** 2).sum(1)) == c
            n += 1
    assert centre_hits / n > 0.9  # the shape is filled with the product colour
    assert mean_hits / n < 0.5  # but the picture's mean colour does not give it away


def test_regenerating_never_overwrites_a_catalog_it_did_not_write(tmp_path):
    from workbench.catalog import write_catalog
    from workbench.errors import CatalogError

    cfg = SyntheticConfig(n_items=60, n_users=5, n_queries=5, with_media=False, seed=1)
    out = generate_synthetic(tmp_path / "synthetic", cfg, progress=False)
    generate_synthetic(out, cfg, overwrite=True, progress=False)  # its own: replaced
    theirs = write_catalog(tmp_path / "mine", products=pl.DataFrame({
        "item_id": ["a"], "title": ["a chair"], "description": ["d"], "category": ["home/chair"]}), name="mine")
    with pytest.raises(CatalogError, match=r"mine: exists and is not a synthetic catalog .*refusing to overwrite it"):
        generate_synthetic(theirs, cfg, overwrite=True, progress=False)
    assert read_catalog(theirs).products.collect()["item_id"].to_list() == ["a"]
    (tmp_path / "notes").mkdir()
    with pytest.raises(CatalogError, match="notes: exists and is not a synthetic catalog"):
        generate_synthetic(tmp_path / "notes", cfg, overwrite=True, progress=False)
