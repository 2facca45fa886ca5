"""Choosing a search system on validation, reporting it on test, and slicing the results."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from workbench.errors import ConfigError
from workbench.evaluate.search import (
    CandidateSettings,
    DenseSystem,
    LateFusionSystem,
    LexicalSystem,
    build_candidates,
    rank,
    select_system,
    simplex_grid,
)
from workbench.evaluate.slices import (
    item_slice_table,
    named_attributes,
    product_slices,
    query_slice_table,
    worst_queries,
)


def _unit(x):
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_dense_and_late_fusion_scores_by_hand():
    q = _unit([[1, 0], [0, 1]])
    text = _unit([[1, 0], [0, 1], [1, 1]])
    image = _unit([[0, 1], [0, 1], [1, 0]])
    has_image = np.array([True, False, True])
    dense = DenseSystem("image", q, image, has_image)
    assert np.isneginf(dense.scores(np.array([0]))[0, 1])  # no image: cannot be retrieved by image
    late = LateFusionSystem("late", q, {"text": text, "image": image},
                            {"text": np.ones(3, bool), "image": has_image}, {"text": 0.5, "image": 0.5})
    s = late.scores(np.array([0]))[0]
    # item 0: (1 + 0) / 2; item 1 has no image: its text alone (0), not half of it; item 2: (0.707 + 1) / 2
    assert s == pytest.approx([0.5, 0.0, (2 ** -0.5 + 1) / 2], abs=1e-6)
    with pytest.raises(ConfigError, match="not all 0"):
        LateFusionSystem("bad", q, {"text": text}, {"text": np.ones(3, bool)}, {"text": 0.0})


def test_simplex_grid_includes_zero_for_every_modality():
    grid = simplex_grid(["text", "image", "audio"], 0.25)
    assert len(grid) == 15 and all(abs(sum(w.values()) - 1) < 1e-9 for w in grid)
    assert {"text": 1.0, "image": 0.0, "audio": 0.0} in grid and {"text": 0.0, "image": 0.5, "audio": 0.5} in grid
    with pytest.raises(ConfigError, match="step"):
        simplex_grid(["a"], 0.3)


def _world(seed=0, n_items=40, n_queries=60, d=8):
    """Queries that text finds half the time and image finds always; relevance = one target each."""
    rng = np.random.default_rng(seed)
    image = _unit(rng.standard_normal((n_items, d)))
    targets = rng.integers(0, n_items, n_queries)
    queries = _unit(image[targets] + 0.05 * rng.standard_normal((n_queries, d)))
    text = _unit(np.where(rng.random((n_items, 1)) < 0.5, image, rng.standard_normal((n_items, d))))
    relevance = sp.csr_matrix((np.full(n_queries, 3.0), (np.arange(n_queries), targets)), shape=(n_queries, n_items))
    masks = {"text": np.ones(n_items, bool), "image": np.ones(n_items, bool)}
    return queries, {"text": text, "image": image}, masks, relevance


def _rows(relevance, rows):
    return rows, relevance[rows]


def test_selection_is_made_on_validation_and_test_qrels_cannot_move_it():
    queries, items, masks, relevance = _world()
    val, test = np.arange(0, 30), np.arange(30, 60)
    candidates, tuning = build_candidates(queries, items, masks, _rows(relevance, val))
    names = [c.name for c in candidates]
    assert names == ["text", "image", "late fusion"]
    assert len(tuning["late fusion"]["grid"]) == 3  # text/image grid points with both weights > 0 at step 0.25
    assert tuning["late fusion"]["weights"] in [g for g in ({"text": t, "image": 1 - t} for t in (0.25, 0.5, 0.75))]
    sel = select_system(candidates, _rows(relevance, val), _rows(relevance, test), default="text",
                        n_resamples=200)
    assert sel.chosen in ("image", names[2]) and not sel.fallback
    assert "validation queries" in sel.reason
    assert {"vs best single modality", "vs best other system"} <= set(sel.comparisons)
    assert {"ndcg@10", "ndcg@10_low", "ndcg@10_high", "recall@10", "n"} <= set(sel.test.columns)
    # Scramble the test qrels: the choice (made on validation) does not move.
    rng = np.random.default_rng(1)
    scrambled = sp.csr_matrix((np.full(60, 3.0), (np.arange(60), rng.integers(0, 40, 60))), shape=relevance.shape)
    again = select_system(candidates, _rows(relevance, val), _rows(scrambled, test), default="text", n_resamples=200)
    assert again.chosen == sel.chosen
    assert not again.test.equals(sel.test)  # the test numbers did change
    assert sel.to_dict()["chosen"] == sel.chosen


def test_a_validation_split_too_small_falls_back_to_the_default():
    queries, items, masks, relevance = _world()
    candidates, _ = build_candidates(queries, items, masks, _rows(relevance, np.arange(3)))
    sel = select_system(candidates, _rows(relevance, np.arange(3)), _rows(relevance, np.arange(30, 60)),
                        default="text", n_resamples=100)
    assert sel.fallback and sel.chosen == "text"
    assert "only 3 validation queries" in sel.reason and "default 'text'" in sel.reason
    with pytest.raises(ConfigError, match="default 'bm25' is not a candidate"):
        select_system(candidates, _rows(relevance, np.arange(3)), _rows(relevance, np.arange(3)), default="bm25")


class _WordIndex:
    """A stand-in for BM25: score = number of query words in the item's text."""

    def __init__(self, texts):
        self.texts = [set(t.split()) for t in texts]

    def score_matrix(self, queries):
        return np.array([[float(len(set(q.split()) & t)) for t in self.texts] for q in queries])


def test_lexical_and_hybrid_candidates_join_the_selection():
    queries, items, masks, relevance = _world(n_queries=40)
    targets = relevance.indices
    item_texts = [f"item{i} thing" for i in range(40)]
    query_texts = [f"item{t}" for t in targets]  # the words name the target exactly
    lexical = LexicalSystem("bm25", _WordIndex(item_texts), query_texts)
    val = np.arange(20)
    candidates, tuning = build_candidates(queries, items, masks, _rows(relevance, val), lexical=lexical,
                                          settings=CandidateSettings(hybrid_weights=(0.2, 0.8)))
    assert [c.name for c in candidates][-3:] == ["bm25", "hybrid RRF", "hybrid convex"]
    assert len(tuning["hybrid convex"]["grid"]) == 2 and tuning["hybrid convex"]["weight"] in (0.2, 0.8)
    assert tuning["hybrid RRF"]["dense"] in ("text", "image", "late fusion")
    assert np.isneginf(lexical.scores(np.array([0]))[0, 1])  # no word in common: not a match
    sel = select_system(candidates, _rows(relevance, val), _rows(relevance, np.arange(20, 40)), default="text",
                        n_resamples=100)
    assert "vs BM25" in sel.comparisons
    top = rank(lexical, np.arange(3), 1)[:, 0]
    assert top.tolist() == targets[:3].tolist()


def test_slices_name_attributes_and_pool_item_recall():
    products = pl.DataFrame({
        "item_id": ["a", "b", "c"], "category": ["home/chair", "home/lamp", "toys/ball"],
        "brand": ["acme", None, "zeta"], "attributes": ['{"colour": "red"}', '{"colour": "navy blue"}', None],
        "image": ["x.png", None, "y.png"], "audio": [None, None, None],
    })
    queries = pl.DataFrame({"query_id": ["q1", "q2", "q3"], "text": ["red acme chair", "navy blue lamp", "a ball"]})
    named = named_attributes(queries, products)
    assert named["named"].to_list() == [["brand", "colour"], ["colour"], []]
    per_query = {"s": {"ndcg@10": np.array([1.0, 0.5, 0.0])}}
    table = query_slice_table(per_query, named)
    row = {r["slice"]: r for r in table.iter_rows(named=True)}
    assert row["names colour"]["s"] == 0.75 and row["2 attributes named"]["n_queries"] == 1
    slices = product_slices(products)
    assert set(slices) == {"category home", "category toys", "no image", "with image"}  # audio: absent for all
    relevance = sp.csr_matrix(np.array([[3, 0, 0], [0, 2, 1], [0, 0, 1]], dtype=float))
    ranked = np.array([[0, 1], [2, -1], [1, 0]])
    items = item_slice_table({"s": ranked}, relevance, slices, k=2)
    got = {r["slice"]: r["s"] for r in items.iter_rows(named=True)}
    assert got["no image"] == 0.0 and got["with image"] == 2 / 3  # b missed; a and q2's c found, q3's c missed
    worst = worst_queries(np.array([1.0, 0.5, 0.0]), ranked, relevance, queries["text"].to_list(),
                          ["chair", "lamp", "ball"], n=2, shown=2)
    assert worst["query"].to_list() == ["a ball", "navy blue lamp"]
    assert worst["missed"].to_list()[0] == ["ball (1)"] and worst["returned"].to_list()[0] == ["lamp (0)", "chair (0)"]


def test_item_slices_with_empty_and_single_item_slices() -> None:
    import scipy.sparse as sp

    from workbench.evaluate.slices import item_slice_table

    rel = sp.csr_matrix(np.array([[1, 0, 1, 0], [0, 1, 0, 0]], dtype=float))
    ranked = np.array([[0, 3], [2, -1]])  # query 0 finds item 0; query 1 misses item 1
    table = item_slice_table({"sys": ranked}, rel, {"one": np.array([True, False, False, False]),
                                                    "none": np.zeros(4, bool),
                                                    "all": np.ones(4, bool)}, k=2)
    got = dict(zip(table["slice"], table["sys"], strict=True))
    assert got == {"one": 1.0, "none": None, "all": pytest.approx(1 / 3)}
