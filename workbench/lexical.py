"""BM25 retrieval over product texts: the lexical baseline beside the vector indexes.

`BM25Index.build(item_ids, texts, BM25Config())` (or `BM25Index.from_products(df)`,
which reads the same title/brand/description text as the text tower through
`workbench.encoders.data.product_texts`) indexes one document per product with the
PyPI package `bm25s`: its tokenizer (lower case, words of two or more letters or
digits, a stop-word list, an optional Snowball stemmer from PyStemmer, all shipped
inside the packages, so nothing is downloaded) and its BM25 variants (`method`:
"lucene" (default), "robertson", "atire", "bm25l", "bm25+"), which precompute one
BM25 weight per (term, document) in a sparse matrix.

The search side has the interface of `workbench.index.VectorIndex`, taking query
*texts* instead of vectors, so `workbench.evaluate.system.retrieve` can use it as
stage 1 (pass the texts as a 1-D numpy array where it expects vectors):

* `search_indices(texts, k) -> (idx (n, k) int64, scores (n, k) float32)`, best
  first; a list shorter than k is padded with index -1 and score -inf;
* `search(texts, k) -> (ids (n, k) str, scores)` ("" pads);
* `score_matrix(texts) -> (n, n_items) float32`, for fusing by scores on small
  catalogs (`workbench.hybrid.convex_combination`);
* `query(texts, k) -> LexicalResult`, the same lists plus which queries came back empty.

Rules that the numbers depend on:

* **Only a word match retrieves.** A product is in a query's list only if its text
  holds at least one of the query's terms; every other product scores -inf (with
  "bm25l"/"bm25+", whose formula gives every document a floor, the floor is not a
  match). A list can therefore be shorter than k, and `k` may exceed the catalog.
* **Ties** (equal float32 scores) go to the lower item index (the row order of
  `item_ids`), so results are deterministic. A query term that occurs twice counts
  twice, as in bm25s and rank_bm25.
* **Empty queries never fail.** A query that is empty or holds only stop words,
  and one whose words no product has, returns an empty row (all -1 / -inf).
  `query` counts them in `LexicalResult.n_empty_queries` and
  `n_unmatched_queries` (row numbers in `empty_queries` / `unmatched_queries`);
  `search_indices` and `search` log one WARNING per call with both counts.
* **Empty products are indexed, never retrieved.** A product whose text has no
  word left (empty, null, stop words only) is an empty document: it takes part in
  the corpus statistics (document count, mean length) as bm25s defines them, no
  query matches it, and it is counted (`n_empty_documents`, `empty_documents`)
  and logged as a WARNING at build time.

Bad input raises `ConfigError` naming what was wrong: an empty catalog, item ids
that are empty or repeated, texts that are not strings, `k` that is not a
positive integer, an unknown method, stop-word list or stemmer. Save/load is not
implemented: building is fast (seconds for 100k products).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from workbench.errors import ConfigError

__all__ = [
    "METHODS",
    "STEMMER_LANGUAGES",
    "STOPWORD_LANGUAGES",
    "BM25Config",
    "BM25Index",
    "LexicalResult",
]

log = logging.getLogger(__name__)

METHODS = ("lucene", "robertson", "atire", "bm25l", "bm25+")
# bm25s ships these lists (from NLTK, Korean from stopwords-iso) inside the package.
STOPWORD_LANGUAGES = (
    "english", "english_plus", "german", "dutch", "french", "spanish", "portuguese",
    "italian", "russian", "swedish", "norwegian", "chinese", "turkish", "korean", "danish",
)
# The Snowball algorithms compiled into PyStemmer (no data files, nothing to download).
STEMMER_LANGUAGES = (
    "arabic", "armenian", "basque", "catalan", "czech", "danish", "dutch", "dutch_porter",
    "english", "esperanto", "estonian", "finnish", "french", "german", "greek", "hindi",
    "hungarian", "indonesian", "irish", "italian", "lithuanian", "nepali", "norwegian",
    "persian", "polish", "porter", "portuguese", "romanian", "russian", "serbian", "sesotho",
    "spanish", "swedish", "tamil", "turkish", "yiddish",
)
# score_matrix refuses more cells than this by default (float32: 200 MB)
DEFAULT_MAX_CELLS = 50_000_000


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class BM25Config:
    """How products are tokenised and scored.

    k1: term-frequency saturation (>= 0; 0 ignores how often a term occurs).
    b: document-length normalisation in [0, 1] (0: none, 1: full).
    delta: the floor of the "bm25l" and "bm25+" variants (ignored by the others).
    method: the BM25 variant of bm25s: "lucene" (Lucene's idf, never negative; the
    default), "robertson" (the original, idf clipped at 0), "atire", "bm25l", "bm25+".
    stopwords: a bm25s stop-word list (`STOPWORD_LANGUAGES`) or None for none.
    stemmer: a PyStemmer (Snowball) language (`STEMMER_LANGUAGES`) or None for no
    stemming; stemming lets "shirts" find "shirt".
    batch_size: queries scored per sparse product (bounds memory on large catalogs).
    progress: a progress bar while the products are tokenised.
    """

    k1: float = 1.5
    b: float = 0.75
    delta: float = 0.5
    method: str = "lucene"
    stopwords: str | None = "english"
    stemmer: str | None = "english"
    batch_size: int = 256
    progress: bool = False

    def __post_init__(self) -> None:
        for name in ("k1", "delta"):
            value = getattr(self, name)
            if not _is_real(value) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"BM25Config.{name}={value!r}: expected a finite number >= 0")
        if not _is_real(self.b) or not 0.0 <= self.b <= 1.0:
            raise ConfigError(f"BM25Config.b={self.b!r}: expected a number in [0, 1]")
        if self.method not in METHODS:
            raise ConfigError(
                f"BM25Config.method={self.method!r}: expected one of {', '.join(METHODS)}"
            )
        if self.stopwords is not None and self.stopwords not in STOPWORD_LANGUAGES:
            raise ConfigError(
                f"BM25Config.stopwords={self.stopwords!r}: expected None or one of "
                f"{', '.join(STOPWORD_LANGUAGES)}"
            )
        if self.stemmer is not None and self.stemmer not in STEMMER_LANGUAGES:
            raise ConfigError(
                f"BM25Config.stemmer={self.stemmer!r}: expected None or one of "
                f"{', '.join(STEMMER_LANGUAGES)}"
            )
        if not _is_int(self.batch_size) or self.batch_size < 1:
            raise ConfigError(f"BM25Config.batch_size={self.batch_size!r}: expected an integer >= 1")


def _is_real(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _stopword_list(language: str | None) -> list[str]:
    if language is None:
        return []
    from bm25s import stopwords as lists

    name = {"english": "EN", "english_plus": "EN_PLUS"}.get(language, language.upper())
    return list(getattr(lists, f"STOPWORDS_{name}"))


def _stemmer(language: str | None) -> Any:
    if language is None:
        return None
    try:
        import Stemmer  # PyStemmer
    except ImportError as exc:  # a dependency of the project; say what to do if it is absent
        raise ConfigError(
            f"BM25Config.stemmer={language!r} needs the PyStemmer package "
            "(pip install PyStemmer), or set stemmer=None"
        ) from exc
    return Stemmer.Stemmer(language)


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class LexicalResult:
    """One batch of BM25 lists and which queries could not match anything.

    idx (n, k) int64 / scores (n, k) float32: as `BM25Index.search_indices`.
    empty_queries: rows whose text has no word once stop words are removed.
    unmatched_queries: rows with words, none of which occurs in any product.
    Both kinds of row are all -1 / -inf.
    """

    idx: np.ndarray
    scores: np.ndarray
    empty_queries: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    unmatched_queries: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def n_empty_queries(self) -> int:
        return int(self.empty_queries.size)

    @property
    def n_unmatched_queries(self) -> int:
        return int(self.unmatched_queries.size)


# --------------------------------------------------------------------------- index


def _check_k(k: Any) -> int:
    if not _is_int(k) or k < 1:
        raise ConfigError(f"k={k!r}: expected a positive integer")
    return int(k)


def _as_texts(texts: Any, what: str, allow_null: bool) -> list[str]:
    """A list of str; None becomes "" where allowed (null product texts)."""
    if isinstance(texts, str | bytes):
        raise ConfigError(
            f"{what}: got one {type(texts).__name__}; expected a sequence of texts "
            "(wrap a single text in a list)"
        )
    if isinstance(texts, np.ndarray) and texts.ndim != 1:
        raise ConfigError(f"{what}: an array of shape {texts.shape}; expected a 1-D array of texts")
    if isinstance(texts, pl.Series):
        texts = texts.to_list()
    try:
        items = list(texts)
    except TypeError as exc:
        raise ConfigError(f"{what}: {type(texts).__name__} is not a sequence of texts") from exc
    out: list[str] = []
    for i, t in enumerate(items):
        if isinstance(t, str):
            out.append(str(t))
        elif t is None and allow_null:
            out.append("")
        else:
            raise ConfigError(f"{what}[{i}] is {t!r} ({type(t).__name__}); expected a str")
    return out


class BM25Index:
    """BM25 over one text per item; see the module docstring for the rules."""

    kind = "bm25"

    def __init__(
        self,
        item_ids: np.ndarray,
        config: BM25Config,
        tokenizer: Any,
        weights: sp.csr_matrix,
        floor: np.ndarray | None,
        empty_documents: np.ndarray,
        bm25: Any = None,
        build_s: float = 0.0,
    ) -> None:
        self.item_ids = item_ids
        self.config = config
        self.tokenizer = tokenizer  # bm25s.tokenization.Tokenizer holding the vocabulary
        # (n_terms, n_items) BM25 weight of each term in each item; the imaginary part
        # is 1 on every stored entry so a product of query terms with it counts matches
        # (see _match_rows), which keeps a zero-weight match apart from no match
        self._weights = weights
        self._floor = floor  # bm25l/bm25+: score each query term adds to every item
        self.empty_documents = empty_documents
        self.bm25 = bm25  # the bm25s.BM25 that computed the weights (None: no terms at all)
        self.build_s = build_s
        self._stopwords = frozenset(_stopword_list(config.stopwords))

    # ------------------------------------------------------------------ build

    @classmethod
    def build(
        cls, item_ids: Sequence[str] | np.ndarray, texts: Sequence[str | None], config: BM25Config | None = None
    ) -> BM25Index:
        """Index `texts[i]` as the document of `item_ids[i]` (None or "" is an empty document)."""
        import bm25s
        from bm25s.tokenization import Tokenizer

        cfg = config or BM25Config()
        if not isinstance(cfg, BM25Config):
            raise ConfigError(f"config: {type(cfg).__name__}; expected a BM25Config")
        ids = _item_id_array(item_ids)
        docs = _as_texts(texts, "texts", allow_null=True)
        if len(docs) != ids.shape[0]:
            raise ConfigError(
                f"{ids.shape[0]} item ids but {len(docs)} texts; expected one text per item"
            )
        start = time.perf_counter()
        tokenizer = Tokenizer(
            lower=True, stopwords=_stopword_list(cfg.stopwords), stemmer=_stemmer(cfg.stemmer)
        )
        # allow_empty=False: bm25s would otherwise give empty texts a shared "" term, so an
        # empty query would match every empty product
        corpus = tokenizer.tokenize(
            docs, update_vocab=True, return_as="ids", allow_empty=False,
            show_progress=_bars(cfg.progress),
        )
        vocab = tokenizer.get_vocab_dict()
        empty = np.asarray([i for i, d in enumerate(corpus) if not d], dtype=np.int64)
        n_items, n_terms = ids.shape[0], len(vocab)
        bm25 = None
        floor = None
        if n_terms:
            bm25 = bm25s.BM25(
                k1=cfg.k1, b=cfg.b, delta=cfg.delta, method=cfg.method,
                backend="numpy", csc_backend="numpy",
            )
            bm25.index((corpus, dict(vocab)), create_empty_token=False, show_progress=False)
            s = bm25.scores  # CSC of (items, terms): indptr runs over terms = CSR of (terms, items)
            weights = sp.csr_matrix(
                (np.asarray(s["data"], dtype=np.complex128) + 1j, s["indices"], s["indptr"]),
                shape=(n_terms, n_items),
            )
            if bm25.nonoccurrence_array is not None:
                floor = np.asarray(bm25.nonoccurrence_array, dtype=np.float64)
        else:
            weights = sp.csr_matrix((0, n_items), dtype=np.complex128)
        index = cls(ids, cfg, tokenizer, weights, floor, empty, bm25, time.perf_counter() - start)
        if empty.size:
            log.warning(
                "BM25 index: %d of %d products have no indexable word (empty text or stop words "
                "only; first: %s); they are indexed as empty documents and never retrieved",
                empty.size, n_items, ids[empty[:5]].tolist(),
            )
        return index

    @classmethod
    def from_products(
        cls, products: pl.DataFrame | pl.LazyFrame, config: BM25Config | None = None
    ) -> BM25Index:
        """Index a products table: item_id and the text tower's text (title, brand, description)."""
        # imported here: workbench.encoders loads torch and transformers, which a lexical
        # index does not otherwise need; the one shared function keeps both towers' text equal
        from workbench.encoders.data import product_texts

        df = products.collect() if isinstance(products, pl.LazyFrame) else products
        if "item_id" not in df.columns:
            raise ConfigError(f"products: no item_id column (columns: {df.columns})")
        return cls.build(df["item_id"].cast(pl.Utf8).to_list(), product_texts(df), config)

    # ------------------------------------------------------------------ facts

    @property
    def n_items(self) -> int:
        return int(self.item_ids.shape[0])

    @property
    def n_terms(self) -> int:
        return int(self._weights.shape[0])

    @property
    def n_empty_documents(self) -> int:
        return int(self.empty_documents.size)

    def __len__(self) -> int:
        return self.n_items

    def __repr__(self) -> str:
        return (
            f"BM25Index(n_items={self.n_items}, n_terms={self.n_terms}, "
            f"n_empty_documents={self.n_empty_documents}, config={self.config})"
        )

    def tokenize(self, texts: Sequence[str]) -> list[list[str]]:
        """The index terms of each text (lower case, stop words removed, stemmed), in text
        order; words no product has are left out. For inspection and for peers in benchmarks."""
        ids = self._term_ids(_as_texts(texts, "texts", allow_null=True))
        vocab = self.tokenizer.get_vocab_dict()
        names = np.empty(len(vocab), dtype=object)
        for term, i in vocab.items():
            names[i] = term
        return [[names[i] for i in row] for row in ids]

    # ------------------------------------------------------------------ search

    def _term_ids(self, texts: list[str]) -> list[list[int]]:
        if not self.n_terms:
            return [[] for _ in texts]
        # update_vocab=False: a query word no product has is dropped, never added
        return self.tokenizer.tokenize(
            texts, update_vocab=False, return_as="ids", allow_empty=False, show_progress=False
        )

    def _has_words(self, text: str) -> bool:
        return any(w not in self._stopwords for w in self.tokenizer.splitter(text.lower()))

    def _match_rows(self, texts: list[str]) -> tuple[list[sp.csr_matrix], np.ndarray, np.ndarray]:
        """Per batch, a csr (batch, n_items) complex matrix: real part the BM25 score, imaginary
        part the number of query-term occurrences the item holds (> 0 exactly on matches)."""
        term_ids = self._term_ids(texts)
        empty = [i for i, row in enumerate(term_ids) if not row and not self._has_words(texts[i])]
        unmatched = [i for i, row in enumerate(term_ids) if not row and self._has_words(texts[i])]
        blocks = []
        bs = self.config.batch_size
        for lo in range(0, len(term_ids), bs):
            rows = term_ids[lo : lo + bs]
            r = np.repeat(np.arange(len(rows)), [len(t) for t in rows])
            c = np.fromiter((t for row in rows for t in row), dtype=np.int64, count=r.size)
            # coo -> csr sums repeated terms: a word twice in a query counts twice
            q = sp.csr_matrix(
                (np.ones(r.size, dtype=np.float64), (r, c)), shape=(len(rows), self.n_terms)
            )
            # a sum of complex entries is zero only if its imaginary counts are: a match whose
            # BM25 weight is 0 (a term in every product under "atire") is kept, not dropped
            m = (q @ self._weights).tocsr()
            if self._floor is not None and m.nnz:
                # bm25l/bm25+: each query term adds its floor to every item (bm25s stores
                # weights minus the floor); only matched items are kept, so add it there
                per_row = q @ self._floor
                m.data += np.repeat(per_row, np.diff(m.indptr))
            blocks.append(m)
        return blocks, np.asarray(empty, dtype=np.int64), np.asarray(unmatched, dtype=np.int64)

    def query(self, texts: Sequence[str], k: int = 10) -> LexicalResult:
        """Top-k lists for `texts` and which queries could not match anything."""
        k = _check_k(k)
        queries = _as_texts(texts, "queries", allow_null=False)
        blocks, empty, unmatched = self._match_rows(queries)
        idx = np.full((len(queries), k), -1, dtype=np.int64)
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        row = 0
        for m in blocks:
            for j in range(m.shape[0]):
                lo, hi = m.indptr[j], m.indptr[j + 1]
                if hi > lo:
                    top, val = _top_k(m.indices[lo:hi], m.data[lo:hi].real, k)
                    idx[row, : top.size] = top
                    scores[row, : top.size] = val
                row += 1
        return LexicalResult(idx, scores, empty, unmatched)

    def search_indices(self, queries: Sequence[str], k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Top-k row indices (n, k) int64 into `item_ids` and scores (n, k) float32, best first.

        Items without a word of the query are not retrieved: short lists are padded
        with -1 / -inf, and an empty query gets an all-padding row (logged, see module).
        """
        result = self.query(queries, k)
        if result.n_empty_queries or result.n_unmatched_queries:
            log.warning(
                "BM25 search: %d of %d queries empty or stop words only (first rows: %s), "
                "%d with no word any product has (first rows: %s); their rows are empty",
                result.n_empty_queries, result.idx.shape[0], result.empty_queries[:5].tolist(),
                result.n_unmatched_queries, result.unmatched_queries[:5].tolist(),
            )
        return result.idx, result.scores

    def search(self, queries: Sequence[str], k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Top-k item ids (n, k) str and scores (n, k) float32, best first ("" / -inf pad)."""
        idx, scores = self.search_indices(queries, k)
        return np.where(idx >= 0, self.item_ids[np.maximum(idx, 0)], ""), scores

    def score_matrix(self, queries: Sequence[str], max_cells: int = DEFAULT_MAX_CELLS) -> np.ndarray:
        """BM25 score of every (query, item) pair, (n_queries, n_items) float32; -inf where the
        item holds none of the query's words (the same rule as search). Dense, so refused above
        `max_cells` cells: use `search_indices` on large catalogs."""
        queries = _as_texts(queries, "queries", allow_null=False)
        cells = len(queries) * self.n_items
        if cells > max_cells:
            raise ConfigError(
                f"score_matrix: {len(queries)} queries x {self.n_items} items = {cells} cells "
                f"exceeds max_cells={max_cells}; use search_indices, or fewer queries"
            )
        out = np.full((len(queries), self.n_items), -np.inf, dtype=np.float32)
        blocks, _, _ = self._match_rows(queries)
        row = 0
        for m in blocks:
            coo = m.tocoo()
            out[row + coo.row, coo.col] = coo.data.real.astype(np.float32)
            row += m.shape[0]
        return out


def _top_k(cols: np.ndarray, values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best (column, score) pairs of one row, ties to the lower column, on float32 scores
    (the ones returned: equal printed scores are then always in index order)."""
    vals = values.astype(np.float32)
    if vals.size > k:
        # keep every value tied with the k-th best, then order exactly
        kth = np.partition(vals, vals.size - k)[vals.size - k]
        keep = vals >= kth
        cols, vals = cols[keep], vals[keep]
    order = np.lexsort((cols, -vals))[:k]
    return cols[order].astype(np.int64), vals[order]


def _item_id_array(item_ids: Any) -> np.ndarray:
    if isinstance(item_ids, pl.Series):
        item_ids = item_ids.to_list()
    ids = list(item_ids)
    if not ids:
        raise ConfigError("item_ids: empty; a BM25 index needs at least one product")
    bad = [i for i, x in enumerate(ids) if not isinstance(x, str) or not x]
    if bad:
        raise ConfigError(
            f"item_ids: {len(bad)} id(s) not a non-empty str (first rows: {bad[:5]}, values "
            f"{[ids[i] for i in bad[:5]]}); expected non-empty strings"
        )
    arr = np.asarray(ids, dtype=str)
    uniq, counts = np.unique(arr, return_counts=True)
    if (counts > 1).any():
        raise ConfigError(f"item_ids: repeated ids {uniq[counts > 1][:5].tolist()}; expected unique ids")
    return arr


def _bars(enabled: bool) -> bool:
    from workbench.progress import bars_enabled

    return enabled and bars_enabled()
