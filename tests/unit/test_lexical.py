"""BM25 retrieval (workbench.lexical): hand-computed scores, ties, empty queries and products, bad input."""

from __future__ import annotations

import logging
import math

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from workbench.errors import ConfigError
from workbench.evaluate.system import retrieve
from workbench.lexical import METHODS, BM25Config, BM25Index

DOCS = ["Red cotton shirt", "Blue shirts for men", "", "the and of", "red red dress"]
IDS = ["a", "b", "c", "d", "e"]


def _lucene(tf: float, df: int, n: int, dl: float, avgdl: float, k1: float = 1.5, b: float = 0.75) -> float:
    idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
    return idf * tf / (k1 * (1 - b + b * dl / avgdl) + tf)


@pytest.fixture(scope="module")
def small() -> BM25Index:
    return BM25Index.build(IDS, DOCS)


def test_scores_equal_the_lucene_formula_by_hand(small: BM25Index) -> None:
    # terms after stop words and stemming: a=[red, cotton, shirt], b=[blue, shirt, men],
    # c=[], d=[], e=[red, red, dress]; N=5, mean length 9/5
    n, avg = 5, 9 / 5
    idx, scores = small.search_indices(["red shirt"], k=5)
    exp_a = _lucene(1, 2, n, 3, avg) + _lucene(1, 2, n, 3, avg)  # red df=2 (a, e), shirt df=2 (a, b)
    exp_e = _lucene(2, 2, n, 3, avg)
    exp_b = _lucene(1, 2, n, 3, avg)
    assert idx.tolist() == [[0, 4, 1, -1, -1]]  # 2 * 0.1986 > 0.2637 > 0.1986
    np.testing.assert_allclose(scores[0, :3], [exp_a, exp_e, exp_b], rtol=1e-6)
    assert scores.dtype == np.float32 and idx.dtype == np.int64
    assert np.isneginf(scores[0, 3:]).all()
    assert small.tokenize(["Red Shirts, for the MEN!"]) == [["red", "shirt", "men"]]


@pytest.mark.parametrize("method", METHODS)
def test_every_method_matches_bm25s_on_the_items_it_retrieves(method: str) -> None:
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(30)]
    docs = [" ".join(rng.choice(words, size=rng.integers(1, 12))) for _ in range(200)]
    index = BM25Index.build([f"p{i}" for i in range(200)], docs, BM25Config(method=method, stemmer=None))
    queries = [" ".join(rng.choice(words, size=3)) for _ in range(20)]
    full = index.score_matrix(queries)
    for q, row in zip(queries, full, strict=True):
        tokens = index.tokenize([q])[0]
        expected = index.bm25.get_scores(tokens)  # bm25s scores every document
        has_word = np.array([any(t in d.split() for t in q.split()) for d in docs])
        np.testing.assert_allclose(row[has_word], expected[has_word], rtol=1e-5)
        assert np.isneginf(row[~has_word]).all()  # no word in common: never retrieved


def test_ties_go_to_the_lower_index_also_at_the_cut() -> None:
    docs = ["blue mug"] * 6 + ["blue mug mug"]
    index = BM25Index.build([f"p{i}" for i in range(7)], docs, BM25Config(stemmer=None))
    idx, scores = index.search_indices(["blue", "mug"], k=3)
    assert idx[0].tolist() == [0, 1, 2]  # seven equal scores: the three lowest indices
    assert scores[0, 0] == scores[0, 1] == scores[0, 2]
    assert idx[1].tolist() == [6, 0, 1]  # tf=2 wins, then the tie in index order
    # the same lists whatever the batch size (queries scored one at a time or together)
    one = BM25Index.build([f"p{i}" for i in range(7)], docs, BM25Config(stemmer=None, batch_size=1))
    i1, s1 = one.search_indices(["blue", "mug"], k=3)
    assert np.array_equal(i1, idx) and np.array_equal(s1, scores)


def test_empty_and_stopword_queries_return_empty_rows_and_are_counted(small: BM25Index, caplog) -> None:
    result = small.query(["", "the of and", "zebra", "red", "   "], k=2)
    assert result.idx.tolist() == [[-1, -1], [-1, -1], [-1, -1], [4, 0], [-1, -1]]  # e says red twice
    assert result.empty_queries.tolist() == [0, 1, 4]
    assert result.unmatched_queries.tolist() == [2]
    assert result.n_empty_queries == 3 and result.n_unmatched_queries == 1
    assert np.isneginf(result.scores[[0, 1, 2, 4]]).all()
    with caplog.at_level(logging.WARNING, logger="workbench.lexical"):
        idx, _ = small.search_indices(["", "zebra", "dress"], k=2)
    assert idx[:2].tolist() == [[-1, -1], [-1, -1]] and idx[2].tolist() == [4, -1]
    assert "1 of 3 queries empty or stop words only" in caplog.text
    assert "1 with no word any product has" in caplog.text


def test_empty_products_are_indexed_counted_and_never_retrieved(small: BM25Index, caplog) -> None:
    assert small.n_items == 5 and small.n_empty_documents == 2
    assert small.empty_documents.tolist() == [2, 3]
    full = small.score_matrix(["red", "shirt", "the", ""])
    assert np.isneginf(full[:, [2, 3]]).all()
    with caplog.at_level(logging.WARNING, logger="workbench.lexical"):
        BM25Index.build(["x", "y", "z"], ["lamp", None, "of the"])
    assert "2 of 3 products have no indexable word" in caplog.text and "['y', 'z']" in caplog.text
    # a catalog whose every text is empty still builds; nothing is ever retrieved
    blank = BM25Index.build(["x", "y"], ["", None])
    assert blank.n_terms == 0
    r = blank.query(["lamp", ""], k=3)
    assert (r.idx == -1).all() and r.unmatched_queries.tolist() == [0] and r.empty_queries.tolist() == [1]


def test_k_may_exceed_the_catalog_and_search_returns_ids(small: BM25Index) -> None:
    ids, scores = small.search(["shirt"], k=7)
    assert ids.tolist() == [["a", "b", "", "", "", "", ""]]
    assert scores[0, 0] == scores[0, 1] and np.isneginf(scores[0, 2:]).all()  # equal lengths: a tie


def test_bad_input_names_what_was_wrong(small: BM25Index) -> None:
    for k in (0, -1, 2.5, True, "3", None):
        with pytest.raises(ConfigError, match=r"k=.*expected a positive integer"):
            small.search_indices(["red"], k=k)
    with pytest.raises(ConfigError, match="empty; a BM25 index needs at least one product"):
        BM25Index.build([], [])
    with pytest.raises(ConfigError, match="2 item ids but 1 texts"):
        BM25Index.build(["a", "b"], ["x"])
    with pytest.raises(ConfigError, match=r"repeated ids \['a'\]"):
        BM25Index.build(["a", "a"], ["x", "y"])
    with pytest.raises(ConfigError, match=r"item_ids: 1 id\(s\) not a non-empty str"):
        BM25Index.build(["a", ""], ["x", "y"])
    with pytest.raises(ConfigError, match=r"texts\[1\] is 3 \(int\); expected a str"):
        BM25Index.build(["a", "b"], ["x", 3])
    with pytest.raises(ConfigError, match="wrap a single text in a list"):
        small.search_indices("red shirt", k=2)
    with pytest.raises(ConfigError, match=r"queries\[0\] is None"):
        small.search_indices([None], k=2)
    with pytest.raises(ConfigError, match="exceeds max_cells=4"):
        small.score_matrix(["red"], max_cells=4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k1": -1.0}, r"k1=-1.0: expected a finite number >= 0"),
        ({"k1": float("nan")}, r"k1=nan"),
        ({"b": 1.5}, r"b=1.5: expected a number in \[0, 1\]"),
        ({"delta": float("inf")}, r"delta=inf"),
        ({"method": "okapi"}, r"method='okapi': expected one of lucene, robertson, atire, bm25l, bm25\+"),
        ({"stopwords": "klingon"}, r"stopwords='klingon': expected None or one of english"),
        ({"stemmer": "klingon"}, r"stemmer='klingon': expected None or one of arabic"),
        ({"batch_size": 0}, r"batch_size=0: expected an integer >= 1"),
    ],
)
def test_config_validates_itself(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        BM25Config(**kwargs)


def test_stemming_and_stopwords_can_be_turned_off() -> None:
    docs = ["running shoes", "the shoe rack"]
    stem = BM25Index.build(["a", "b"], docs)
    assert stem.search_indices(["shoe"], 2)[0].tolist() == [[0, 1]]  # shoes -> shoe; a tie
    plain = BM25Index.build(["a", "b"], docs, BM25Config(stemmer=None, stopwords=None))
    assert plain.search_indices(["shoe"], 2)[0].tolist() == [[1, -1]]  # "shoes" is another word
    assert plain.search_indices(["the"], 2)[0].tolist() == [[1, -1]]  # "the" is a word now
    assert stem.query(["the"], 2).n_empty_queries == 1


def test_a_zero_weight_match_is_still_a_match() -> None:
    # ATIRE's idf is log(N / df) = 0 for a term in every product: a match worth 0, not "no match"
    index = BM25Index.build(["a", "b", "c"], ["lamp desk", "lamp", "lamp chair"], BM25Config(method="atire"))
    idx, scores = index.search_indices(["lamp"], k=3)
    assert idx.tolist() == [[0, 1, 2]] and scores.tolist() == [[0.0, 0.0, 0.0]]
    assert index.search_indices(["lamp lamp chair"], k=3)[0][0, 0] == 2  # chair decides


def test_repeated_query_words_count_twice(small: BM25Index) -> None:
    once = small.score_matrix(["shirt"])
    twice = small.score_matrix(["shirt shirt"])
    np.testing.assert_allclose(twice[np.isfinite(twice)], 2 * once[np.isfinite(once)], rtol=1e-6)


def test_score_matrix_agrees_with_search(small: BM25Index) -> None:
    queries = ["red shirt", "blue men", "dress", "nothing here"]
    full = small.score_matrix(queries)
    assert full.shape == (4, 5) and full.dtype == np.float32
    idx, scores = small.search_indices(queries, k=5)
    for row in range(4):
        listed = idx[row][idx[row] >= 0]
        np.testing.assert_array_equal(full[row, listed], scores[row, : listed.size])
        assert listed.size == np.isfinite(full[row]).sum()


def test_from_products_reads_the_text_tower_text() -> None:
    from workbench.encoders.data import product_texts

    products = pl.DataFrame({
        "item_id": ["p1", "p2", "p3"],
        "title": ["Oak chair", "Steel lamp", "Mug"],
        "brand": ["Kestrel", None, "Juniper"],
        "description": ["Sturdy.", None, "Glazed ceramic."],
    })
    index = BM25Index.from_products(products.lazy())
    assert index.item_ids.tolist() == ["p1", "p2", "p3"]
    assert index.tokenize(product_texts(products)) == [["oak", "chair", "kestrel", "sturdi"],
                                                       ["steel", "lamp"],
                                                       ["mug", "junip", "glaze", "ceram"]]
    assert index.search(["kestrel"], 1)[0].tolist() == [["p1"]]  # the brand is searchable
    with pytest.raises(ConfigError, match="no item_id column"):
        BM25Index.from_products(products.drop("item_id"))


def test_bm25_serves_as_stage_one_of_the_two_stage_evaluation(small: BM25Index) -> None:
    texts = np.array(["red shirt", "dress"])
    exclude = sp.csr_matrix(([1.0], ([0], [0])), shape=(2, 5))  # query 0 has seen item a
    idx, scores = retrieve(small, texts, 3, exclude)
    assert idx.tolist() == [[4, 1, -1], [4, -1, -1]]
    assert np.isneginf(scores[0, 2]) and np.isneginf(scores[1, 1:]).all()


def test_lists_are_byte_identical_under_any_hash_seed(tmp_path) -> None:
    # bm25s keeps its vocabulary in dicts and sets: string hashing must not reach the numbers
    import os
    import subprocess
    import sys

    script = tmp_path / "run.py"
    script.write_text(
        "import hashlib, numpy as np\n"
        "from workbench.lexical import BM25Index, BM25Config\n"
        "rng = np.random.default_rng(0)\n"
        "words = [f'w{i}' for i in range(200)] + ['shirts', 'shirt', 'running']\n"
        "docs = [' '.join(rng.choice(words, size=rng.integers(0, 15))) for _ in range(500)]\n"
        "qs = [' '.join(rng.choice(words, size=3)) for _ in range(100)]\n"
        "h = hashlib.sha256()\n"
        "for m in ('lucene', 'bm25+'):\n"
        "    index = BM25Index.build([f'p{i}' for i in range(500)], docs, BM25Config(method=m))\n"
        "    i, s = index.search_indices(qs, 20)\n"
        "    h.update(i.tobytes()); h.update(s.tobytes())\n"
        "print(h.hexdigest())\n"
    )
    digests = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, check=True)
        digests.add(out.stdout.strip())
    assert len(digests) == 1  # one digest (64 hex characters) for both seeds
    assert all(len(d) == 64 for d in digests)
