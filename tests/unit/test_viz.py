"""Embedding atlas: kNN, UMAP determinism, figures, HTML export, modality gap, quality table."""

from __future__ import annotations

import base64
import math

import numpy as np
import plotly.graph_objects as go
import polars as pl
import pytest
from PIL import Image

from workbench.errors import ConfigError
from workbench.viz import (
    UMAPConfig,
    embedding_scatter,
    gallery_figure,
    image_data_uri,
    knn_cosine,
    modality_gap,
    neighbourhood_quality,
    save_figure_html,
    save_figures_html,
    sweep_figure,
    umap_project,
)


def clusters(n_per: int = 60, k: int = 4, d: int = 16, seed: int = 0, spread: float = 0.3):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, d)) * 3
    labels = np.repeat(np.arange(k), n_per)
    x = centres[labels] + spread * rng.standard_normal((len(labels), d))
    return x.astype(np.float32), labels


def test_knn_cosine_matches_brute_force_and_excludes_self():
    x, _ = clusters()
    idx, sim = knn_cosine(x, 5, batch_size=37)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    s = xn @ xn.T
    np.fill_diagonal(s, -np.inf)
    np.testing.assert_array_equal(idx, np.argsort(-s, axis=1, kind="stable")[:, :5])
    assert not (idx == np.arange(len(x))[:, None]).any()
    np.testing.assert_allclose(sim, np.take_along_axis(s, idx, 1), atol=1e-5)
    with pytest.raises(ConfigError, match="k=240"):
        knn_cosine(x, 240)


def test_umap_is_seeded_and_keeps_clusters_apart():
    x, labels = clusters()
    cfg = UMAPConfig(n_neighbors=10, n_epochs=60, random_state=3)
    a = umap_project(x, cfg)
    b = umap_project(x, cfg)
    assert a.shape == (240, 2) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)  # same seed, one thread: identical layout
    nn, _ = knn_cosine(np.c_[a, np.ones(len(a))], 5)  # 2-D neighbours (cosine on lifted points)
    assert (labels[nn] == labels[:, None]).mean() > 0.9
    c3 = umap_project(x, UMAPConfig(n_components=3, n_neighbors=10, n_epochs=30))
    assert c3.shape == (240, 3)
    with pytest.raises(ConfigError, match="n_components"):
        UMAPConfig(n_components=4)
    with pytest.raises(ConfigError, match="zero vector"):
        umap_project(np.zeros((10, 4)))


def test_scatter_colours_hover_and_thumbnails(tmp_path):
    coords = np.array([[0, 0], [1, 1], [2, 0]], dtype=np.float32)
    labels = pl.DataFrame(
        {
            "title": ["red chair", "oak table", "blue rug"],
            "category": ["furniture/chair", "furniture/table", "home/rug"],
            "price": [10.0, 20.0, 5.0],
        }
    )
    thumbs = ["data:image/png;base64,AAA", None, "data:image/png;base64,BBB"]
    fig = embedding_scatter(coords, labels, thumbnails=thumbs)
    assert [t.name for t in fig.data] == ["furniture/chair", "furniture/table", "home/rug"]
    assert "title" in fig.data[0].hovertemplate and "category" in fig.data[0].hovertemplate
    assert fig.data[0].customdata[0][0] == "data:image/png;base64,AAA"
    assert fig.data[1].customdata[0][0] == ""
    by_price = embedding_scatter(coords, labels, color="price")
    assert len(by_price.data) == 1  # continuous colour: one trace
    fig3 = embedding_scatter(np.c_[coords, coords[:, :1]], labels)
    assert all(isinstance(t, go.Scatter3d) for t in fig3.data)
    with pytest.raises(ConfigError, match="material"):
        embedding_scatter(coords, labels, color="material")
    with pytest.raises(ConfigError, match="2 rows for 3 points"):
        embedding_scatter(coords, labels.head(2))

    out = save_figure_html(fig, tmp_path / "atlas.html", div_id="atlas-fused")
    html = out.read_text()
    assert 'id="atlas-fused"' in html
    # the hover thumbnail (an <img id="atlas-fused-thumbnail">) follows the cursor
    assert "wbThumbnailHover(document.getElementById('atlas-fused'))" in html
    assert "e.clientX" in html and "top:12px" not in html
    assert "<script src=" not in html and len(html) > 1_000_000  # plotly.js inlined: offline
    again = save_figure_html(fig, tmp_path / "again.html", div_id="atlas-fused").read_text()
    assert again == html  # fixed div id: byte-identical reruns
    plain = save_figure_html(by_price, tmp_path / "plain.html", div_id="p").read_text()
    assert "wbThumbnailHover" not in plain
    page = save_figures_html({"m-a": fig, "m-b": by_price}, tmp_path / "page.html", "maps")
    text = page.read_text()
    assert 'id="m-a"' in text and 'id="m-b"' in text
    assert "getElementById('m-a'))" in text and "getElementById('m-b'))" not in text
    assert "<title>maps</title>" in text
    assert text.count("Plotly=") == html.count("Plotly=")  # plotly.js once
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "again.html",
        "atlas.html",
        "page.html",
        "plain.html",
    ]


def test_image_data_uri_and_gallery(tmp_path):
    Image.fromarray(np.full((80, 80, 3), 200, np.uint8)).save(tmp_path / "a.png")
    uri = image_data_uri(tmp_path / "a.png", size=24)
    assert uri.startswith("data:image/png;base64,")
    decoded = Image.open(__import__("io").BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert decoded.size == (24, 24)
    jpg = image_data_uri(np.zeros((10, 10, 3), np.uint8), size=24, fmt="jpeg")
    assert jpg.startswith("data:image/jpeg;base64,")
    with pytest.raises(ConfigError, match="fmt"):
        image_data_uri(np.zeros((10, 10, 3), np.uint8), fmt="gif")
    fig = gallery_figure([uri, None, uri], ["1. a", "2. missing", "3. a"], cols=2)
    assert len(fig.data) == 2 and [a.text for a in fig.layout.annotations] == [
        "1. a",
        "2. missing",
        "3. a",
    ]
    with pytest.raises(ConfigError):
        gallery_figure([uri], [])


def test_sweep_figure_marks_exact_and_chosen():
    rows = [
        {"leaves_to_search": lt, "reorder": ro, "recall@10": r, "qps": q, "build_s": 1.0}
        for lt, ro, r, q in [
            (1, 10, 0.6, 900),
            (4, 10, 0.8, 500),
            (1, 50, 0.9, 700),
            (4, 50, 0.97, 400),
        ]
    ]
    fig = sweep_figure(rows, exact_qps=50.0, chosen=rows[3])
    names = [t.name for t in fig.data]
    assert names == ["reorder 10", "reorder 50", "exact search", "chosen"]
    assert tuple(fig.data[2].x) == (50.0,) and tuple(fig.data[3].y) == (0.97,)


def test_modality_gap_hand_checked():
    e = np.eye(3, dtype=np.float32)
    after = pl.DataFrame(
        {
            "item_id": ["a", "b"],
            "text": [e[0].tolist(), e[0].tolist()],
            "image": [e[0].tolist(), None],
            "audio": [None, None],
        },
        schema_overrides={"audio": pl.List(pl.Float32)},
    )
    before = pl.DataFrame(
        {
            "item_id": ["a", "b"],
            "text": [e[0].tolist(), e[0].tolist()],
            "image": [(2 * e[1]).tolist(), e[1].tolist()],
        }
    )
    gap = modality_gap({"before alignment": before, "after alignment": after})
    assert gap.select("stage", "pair").rows() == [
        ("before alignment", "text-image"),
        ("after alignment", "text-image"),
    ]
    assert gap["gap"].to_list() == [pytest.approx(math.sqrt(2), abs=1e-4), 0.0]
    assert gap["n_b"].to_list() == [2, 1]  # nulls (missing modality) are left out
    with pytest.raises(ConfigError, match="need two"):
        modality_gap(after.select("item_id", "text"))


def test_neighbourhood_quality_table():
    x, lab = clusters(n_per=50, k=4, d=16)
    rng = np.random.default_rng(0)
    ids = [f"i{i}" for i in range(len(x))]
    labels = pl.DataFrame(
        {
            "item_id": ids,
            "category": [f"c{v}" for v in lab],
            "colour": [f"k{v % 2}" for v in lab],  # a function of the cluster: learnable
            "style": rng.choice(["a", "b", "c"], len(x)).tolist(),  # noise: chance level
        }
    )
    noise = rng.standard_normal(x.shape).astype(np.float32)
    good_2d = x[:, :2] + 0.0  # coords that keep some of the structure
    table = neighbourhood_quality(
        {"clustered": (ids, x), "noise": (ids, noise)},
        labels,
        coords={"clustered": good_2d, "noise": rng.standard_normal((len(x), 2))},
        k=5,
        attributes=("category", "colour", "style", "material"),
    )
    assert table.columns == [
        "space",
        "n_items",
        "purity@5",
        "trustworthiness@5",
        "probe_category",
        "probe_colour",
        "probe_style",
    ]
    good, bad = table.row(0, named=True), table.row(1, named=True)
    assert good["purity@5"] == 1.0 and bad["purity@5"] < 0.5
    assert good["probe_category"] == 1.0 and good["probe_colour"] == 1.0
    assert good["probe_style"] < 0.6  # random labels are not predictable
    assert 0.0 <= bad["trustworthiness@5"] < good["trustworthiness@5"] <= 1.0
    again = neighbourhood_quality({"clustered": (ids, x)}, labels, k=5)
    assert (
        again.row(0, named=True)["probe_colour"] == 1.0 and "trustworthiness@5" not in again.columns
    )
    with pytest.raises(ConfigError, match="lack labels"):
        neighbourhood_quality({"x": (["zzz"] + ids[1:], x)}, labels, k=5)
