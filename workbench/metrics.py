"""Ranking metrics, vectorised over all queries at once (numpy + scipy.sparse only).

Inputs
------
``ranked``: ``np.ndarray`` of int, shape ``(n_queries, K)``: item indices, best
first; ``-1`` pads lists shorter than ``K`` (padding must be trailing).
``relevance``: ``scipy.sparse.csr_matrix`` ``(n_queries, n_items)`` of graded
relevance (``0..3`` for search queries, ``1`` for interactions). An item is
*relevant* when its grade is ``>= min_relevance`` (default 1, as trec_eval's
``relevance_level``); grades below are ignored entirely.

Definitions (rank ``r`` counts from 1; ``hits@k`` = relevant items in the top k;
``R`` = number of relevant items of the query):

* ``precision@k = hits@k / k`` (always ``k``, also when the list is shorter;
  trec_eval ``P_k`` and Recommenders ``precision_at_k`` agree).
* ``recall@k = hits@k / R`` (trec_eval ``recall_k``, Recommenders ``recall_at_k``).
* ``hit_rate@k = 1 if hits@k > 0`` (trec_eval ``success_k``).
* ``mrr@k = 1 / (rank of the first relevant item)`` if it is within the top k,
  else 0 (trec_eval ``recip_rank`` on the list truncated to k).
* ``map@k = sum_{r <= k, item r relevant} precision@r / D`` where the
  denominator ``D`` depends on ``convention``:

  - ``"trec"`` (default): ``D = R``, all relevant items (trec_eval ``map_cut_k``,
    Recommenders ``map``);
  - ``"recommenders"``: ``D = min(R, k)`` (Recommenders >= 1.2 ``map_at_k``,
    Spark MLlib), so a perfect top-k list scores 1 even when ``R > k``.

* ``ndcg@k = DCG@k / IDCG@k`` with ``DCG@k = sum_{r <= k} gain(rel_r) / log2(r + 1)``
  and ``IDCG@k`` the DCG of the ideal ordering of *all* the query's relevant
  items, truncated at k (trec_eval ``ndcg_cut_k``, Recommenders ``ndcg_at_k``:
  both cut the ideal list at k). The gain is ``gain=``:

  - ``"linear"``: ``gain = grade`` (trec_eval default; Recommenders ``score_type="raw"``);
  - ``"binary"``: ``gain = 1`` for every relevant item (Recommenders default);
  - ``"exponential"``: ``gain = 2**grade - 1`` (Recommenders ``score_type="exp"``, Burges et al.).

  ``gain=None`` takes the convention's default: linear for ``"trec"``,
  binary for ``"recommenders"``. The log base does not matter (it cancels in
  the ratio), so Recommenders' ``discfun_type="loge"`` gives the same values.

Which queries count: per-query values are ``NaN`` for queries without any
relevant item (every metric is undefined there) and the means are taken over
the other queries. A query with relevant items but an empty list (all ``-1``)
counts with 0 everywhere. Peers differ here: trec_eval, and Recommenders for
every measure but ``ndcg_at_k``, only average over queries that appear in the
run, so they silently drop queries for which a system returned nothing; we do
not, because a system that returns nothing should be penalised (Recommenders'
``ndcg_at_k`` outer-joins the whole truth table and agrees with us). trec_eval
reports 0 for queries whose judgments are all non-relevant; we report NaN and
leave them out of the mean.

Verified in ``tests/unit/test_metrics.py`` with hypothesis-generated runs:
equal to pytrec_eval (``ndcg_cut``, ``P``, ``recall``, ``map_cut``,
``success``, ``recip_rank``) to 1e-9 per query with ``convention="trec"``, and
to Recommenders 1.2.1 ``python_evaluation`` (``precision_at_k``,
``recall_at_k``, ``map_at_k``, ``map``, ``ndcg_at_k`` with ``score_type``
binary/raw/exp) with ``convention="recommenders"``.

Bad input raises :class:`~workbench.errors.EvaluationError`: ``k <= 0``,
an item index outside ``[-1, n_items)``, padding before a real item, the same
item twice in one list, shapes that do not match, negative or NaN grades, and
NaN scores in :func:`top_k_from_scores`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal, overload

import numpy as np
import scipy.sparse as sp

from workbench.errors import EvaluationError

METRICS = ("ndcg", "recall", "precision", "map", "mrr", "hit_rate")
CONVENTIONS = ("trec", "recommenders")
GAINS = ("linear", "binary", "exponential")

__all__ = [
    "CONVENTIONS",
    "GAINS",
    "METRICS",
    "coverage",
    "intra_list_diversity",
    "ranking_metrics",
    "relevance_matrix",
    "top_k_from_scores",
]


def _check_ks(ks: int | Iterable[int]) -> tuple[int, ...]:
    ks = (ks,) if isinstance(ks, int | np.integer) else tuple(ks)
    if not ks:
        raise EvaluationError("ks is empty: expected at least one cut-off k >= 1")
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k <= 0:
            raise EvaluationError(f"cut-off k={k!r}: expected a positive integer")
    return tuple(int(k) for k in ks)


def _check_ranked(ranked: np.ndarray, n_items: int | None) -> np.ndarray:
    ranked = np.asarray(ranked)
    if ranked.ndim != 2:
        raise EvaluationError(
            f"ranked has shape {ranked.shape}: expected a 2-d array (n_queries, K) of item indices"
        )
    if ranked.size and not np.issubdtype(ranked.dtype, np.integer):
        raise EvaluationError(f"ranked has dtype {ranked.dtype}: expected integer item indices")
    ranked = ranked.astype(np.int64, copy=False)
    if ranked.size == 0:
        return ranked
    low = ranked.min()
    if low < -1:
        row = int(np.argwhere(ranked < -1)[0, 0])
        raise EvaluationError(
            f"ranked row {row} holds index {low}: expected item indices >= 0, or -1 as padding"
        )
    if n_items is not None and ranked.max() >= n_items:
        row = int(np.argwhere(ranked >= n_items)[0, 0])
        raise EvaluationError(
            f"ranked row {row} holds item index {int(ranked.max())}: expected < n_items={n_items}"
        )
    valid = ranked >= 0
    gap = valid[:, 1:] & ~valid[:, :-1]
    if gap.any():
        row = int(np.argwhere(gap)[0, 0])
        raise EvaluationError(
            f"ranked row {row}: padding (-1) before a real item; expected -1 only at the end of a list"
        )
    # Duplicates: sort each row, equal neighbours that are not padding.
    srt = np.sort(ranked, axis=1)
    dup = (srt[:, 1:] == srt[:, :-1]) & (srt[:, 1:] >= 0)
    if dup.any():
        row, col = (int(v) for v in np.argwhere(dup)[0])
        raise EvaluationError(
            f"ranked row {row} lists item {int(srt[row, col + 1])} more than once: "
            "expected each item at most once per list"
        )
    return ranked


def _check_relevance(relevance: sp.spmatrix, n_queries: int, min_relevance: float) -> sp.csr_matrix:
    if not sp.issparse(relevance):
        raise EvaluationError(
            f"relevance is {type(relevance).__name__}: expected a scipy.sparse csr matrix (n_queries, n_items)"
        )
    rel = sp.csr_matrix(relevance, dtype=np.float64, copy=True)
    if rel.shape[0] != n_queries:
        raise EvaluationError(
            f"relevance has {rel.shape[0]} rows but ranked has {n_queries}: expected one row per query, "
            "in the same order (drop qrels of queries that are not evaluated)"
        )
    if np.isnan(rel.data).any():
        raise EvaluationError("relevance holds NaN grades: expected finite grades >= 0")
    if (rel.data < 0).any():
        raise EvaluationError(
            f"relevance holds negative grade {rel.data.min()}: expected grades >= 0"
        )
    rel.sum_duplicates()  # also sorts indices within rows
    rel.data[rel.data < min_relevance] = 0.0
    rel.eliminate_zeros()
    return rel


def _lookup(rel: sp.csr_matrix, ranked: np.ndarray) -> np.ndarray:
    """Grades of the ranked items, (n_queries, K), 0 for padding or unjudged items.

    One searchsorted over flat keys row * n_items + item: the csr entries are
    already sorted by (row, item), so no per-query loop is needed.
    """
    n_items = rel.shape[1]
    rows = np.repeat(np.arange(rel.shape[0], dtype=np.int64), np.diff(rel.indptr))
    keys = rows * n_items + rel.indices.astype(np.int64)
    if keys.size == 0:
        return np.zeros(ranked.shape, dtype=np.float64)
    q = np.arange(ranked.shape[0], dtype=np.int64)[:, None] * n_items + ranked
    pos = np.searchsorted(keys, q)
    np.minimum(pos, keys.size - 1, out=pos)
    found = (keys[pos] == q) & (ranked >= 0)
    return np.where(found, rel.data[pos], 0.0)


def _ideal(rel: sp.csr_matrix, kmax: int) -> np.ndarray:
    """Each query's grades sorted descending, first kmax, zero padded: (n_queries, kmax)."""
    n_q = rel.shape[0]
    counts = np.diff(rel.indptr)
    rows = np.repeat(np.arange(n_q, dtype=np.int64), counts)
    order = np.lexsort((-rel.data, rows))  # by row, then grade descending
    rank_in_row = np.arange(rel.data.size, dtype=np.int64) - rel.indptr[rows]
    keep = rank_in_row < kmax
    out = np.zeros((n_q, kmax), dtype=np.float64)
    out[rows[keep], rank_in_row[keep]] = rel.data[order][keep]
    return out


def _gain(grades: np.ndarray, gain: str) -> np.ndarray:
    if gain == "linear":
        return grades
    if gain == "binary":
        return (grades > 0).astype(np.float64)
    return np.where(grades > 0, np.exp2(grades) - 1.0, 0.0)


@overload
def ranking_metrics(
    ranked: np.ndarray,
    relevance: sp.spmatrix,
    ks: int | Sequence[int] = (10,),
    per_query: Literal[False] = False,
    *,
    convention: str = "trec",
    gain: str | None = None,
    min_relevance: float = 1,
    metrics: Sequence[str] = METRICS,
) -> dict[str, float]: ...


@overload
def ranking_metrics(
    ranked: np.ndarray,
    relevance: sp.spmatrix,
    ks: int | Sequence[int] = (10,),
    per_query: Literal[True] = ...,
    *,
    convention: str = "trec",
    gain: str | None = None,
    min_relevance: float = 1,
    metrics: Sequence[str] = METRICS,
) -> dict[str, np.ndarray]: ...


@overload
def ranking_metrics(
    ranked: np.ndarray,
    relevance: sp.spmatrix,
    ks: int | Sequence[int] = (10,),
    per_query: bool = False,
    *,
    convention: str = "trec",
    gain: str | None = None,
    min_relevance: float = 1,
    metrics: Sequence[str] = METRICS,
) -> dict[str, float] | dict[str, np.ndarray]: ...


def ranking_metrics(
    ranked: np.ndarray,
    relevance: sp.spmatrix,
    ks: int | Sequence[int] = (10,),
    per_query: bool = False,
    *,
    convention: str = "trec",
    gain: str | None = None,
    min_relevance: float = 1,
    metrics: Sequence[str] = METRICS,
) -> dict[str, float] | dict[str, np.ndarray]:
    """nDCG, recall, precision, MAP, MRR and hit rate at each cut-off in ``ks``.

    Returns ``{"ndcg@10": mean, ...}`` (Python floats), or with ``per_query=True``
    ``{"ndcg@10": array (n_queries,), ...}`` with NaN for queries without a
    relevant item. See the module docstring for the exact definitions and the
    ``convention`` / ``gain`` options.
    """
    ks = _check_ks(ks)
    if convention not in CONVENTIONS:
        raise EvaluationError(
            f"convention={convention!r}: expected one of {', '.join(CONVENTIONS)}"
        )
    gain = gain or ("linear" if convention == "trec" else "binary")
    if gain not in GAINS:
        raise EvaluationError(f"gain={gain!r}: expected one of {', '.join(GAINS)}")
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise EvaluationError(
            f"unknown metrics {unknown}: expected names from {', '.join(METRICS)}"
        )
    ranked = _check_ranked(ranked, relevance.shape[1] if sp.issparse(relevance) else None)
    rel = _check_relevance(relevance, ranked.shape[0], min_relevance)
    n_q = ranked.shape[0]
    kmax = max(ks)

    # Work on exactly kmax columns: truncate longer lists, pad shorter ones.
    if ranked.shape[1] >= kmax:
        top = ranked[:, :kmax]
    else:
        top = np.full((n_q, kmax), -1, dtype=np.int64)
        top[:, : ranked.shape[1]] = ranked
    grades = _lookup(rel, top)
    hits = grades > 0
    n_rel = np.diff(rel.indptr).astype(np.float64)
    defined = n_rel > 0
    safe_rel = np.where(defined, n_rel, 1.0)

    ranks = np.arange(1, kmax + 1, dtype=np.float64)
    cum_hits = np.cumsum(hits, axis=1, dtype=np.float64)
    discount = 1.0 / np.log2(ranks + 1.0)
    dcg = np.cumsum(_gain(grades, gain) * discount, axis=1)
    idcg = np.cumsum(_gain(_ideal(rel, kmax), gain) * discount, axis=1)
    prec_at_hits = np.cumsum(np.where(hits, cum_hits / ranks, 0.0), axis=1)
    any_hit = hits.any(axis=1)
    first = np.where(any_hit, hits.argmax(axis=1), kmax)  # 0-based rank of first hit

    out: dict[str, np.ndarray] = {}
    for k in ks:
        c = k - 1
        values = {
            "ndcg": dcg[:, c] / np.where(idcg[:, c] > 0, idcg[:, c], 1.0),
            "recall": cum_hits[:, c] / safe_rel,
            "precision": cum_hits[:, c] / k,
            "map": prec_at_hits[:, c]
            / (safe_rel if convention == "trec" else np.minimum(safe_rel, k)),
            "mrr": np.where(first < k, 1.0 / (first + 1.0), 0.0),
            "hit_rate": (cum_hits[:, c] > 0).astype(np.float64),
        }
        for name in metrics:
            out[f"{name}@{k}"] = np.where(defined, values[name], np.nan)

    if per_query:
        return out
    if not defined.any():
        raise EvaluationError(
            f"none of the {n_q} queries has a relevant item (grade >= {min_relevance}): "
            "metrics are undefined; check that qrels and runs use the same query order"
        )
    return {name: float(np.mean(v[defined])) for name, v in out.items()}


def coverage(ranked: np.ndarray, n_items: int, k: int | None = None) -> float:
    """Catalogue coverage: fraction of the ``n_items`` that appear in at least one (top-k) list."""
    if n_items <= 0:
        raise EvaluationError(f"n_items={n_items}: expected a positive catalogue size")
    if k is not None:
        _check_ks(k)
    ranked = _check_ranked(ranked, n_items)
    items = (ranked if k is None else ranked[:, :k]).ravel()
    items = items[items >= 0]
    return float(np.count_nonzero(np.bincount(items, minlength=n_items)) / n_items)


def intra_list_diversity(
    ranked: np.ndarray,
    item_vectors: np.ndarray,
    k: int | None = None,
    per_query: bool = False,
    chunk: int = 4096,
) -> float | np.ndarray:
    """Mean pairwise cosine *distance* (1 - cos) between the items of each list.

    Uses ``sum_{i != j} v_i . v_j = |sum v|^2 - sum |v|^2`` for unit vectors,
    so each list costs O(K d) instead of O(K^2 d). Lists with fewer than two
    items are NaN per query and left out of the mean. Processed in chunks of
    queries to bound memory (chunks, not a loop per query).
    """
    vectors = np.asarray(item_vectors, dtype=np.float64)
    if vectors.ndim != 2:
        raise EvaluationError(f"item_vectors has shape {vectors.shape}: expected (n_items, d)")
    if not np.isfinite(vectors).all():
        raise EvaluationError(
            "item_vectors holds NaN or infinite values: expected finite embeddings"
        )
    if k is not None:
        _check_ks(k)
    ranked = _check_ranked(ranked, vectors.shape[0])
    if k is not None:
        ranked = ranked[:, :k]
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.where(norms > 0, norms, 1.0)
    out = np.full(ranked.shape[0], np.nan)
    for start in range(0, ranked.shape[0], chunk):
        block = ranked[start : start + chunk]
        valid = block >= 0
        vec = unit[np.where(valid, block, 0)] * valid[..., None]
        m = valid.sum(axis=1).astype(np.float64)
        total = vec.sum(axis=1)
        self_sim = (vec * vec).sum(axis=(1, 2))
        pair_sim = (total * total).sum(axis=1) - self_sim
        with np.errstate(invalid="ignore", divide="ignore"):
            ild = 1.0 - pair_sim / (m * (m - 1.0))
        out[start : start + chunk] = np.where(m >= 2, ild, np.nan)
    if per_query:
        return out
    if np.isnan(out).all():
        raise EvaluationError("no list holds two or more items: intra-list diversity is undefined")
    return float(np.nanmean(out))


def top_k_from_scores(scores: np.ndarray, k: int, exclude: sp.spmatrix | None = None) -> np.ndarray:
    """Indices of the k highest scores per row, best first, ties broken by lower index.

    ``exclude`` (csr, same shape) marks items that must not be ranked (e.g. a
    user's training history); ``-inf`` scores are never ranked either, so rows
    with fewer than k rankable items are padded with -1. NaN scores raise.
    """
    (k,) = _check_ks(k)
    scores = np.array(scores, dtype=np.float64, copy=True)
    if scores.ndim != 2:
        raise EvaluationError(f"scores has shape {scores.shape}: expected (n_queries, n_items)")
    if np.isnan(scores).any():
        row, col = (int(v) for v in np.argwhere(np.isnan(scores))[0])
        raise EvaluationError(
            f"scores row {row}, item {col} is NaN: expected finite scores (use -inf to exclude an item)"
        )
    if exclude is not None:
        ex = sp.csr_matrix(exclude)
        if ex.shape != scores.shape:
            raise EvaluationError(f"exclude has shape {ex.shape}: expected {scores.shape}")
        r = np.repeat(np.arange(ex.shape[0]), np.diff(ex.indptr))
        scores[r, ex.indices] = -np.inf
    n_q, n_items = scores.shape
    kk = min(k, n_items)
    if kk < n_items:
        cand = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
        # argpartition picks an arbitrary member of a tie at the boundary: widen
        # to every item scoring >= the k-th score so the lower index wins.
        kth = np.take_along_axis(scores, cand, axis=1).min(axis=1, keepdims=True)
        if (np.sum(scores >= kth, axis=1) > kk).any():
            cand = np.broadcast_to(np.arange(n_items), scores.shape)
    else:
        cand = np.broadcast_to(np.arange(n_items), scores.shape)
    cs = np.take_along_axis(scores, cand, axis=1)
    order = np.lexsort((cand, -cs), axis=1)[:, :kk]
    top = np.take_along_axis(cand, order, axis=1)
    top_scores = np.take_along_axis(cs, order, axis=1)
    top = np.where(np.isneginf(top_scores), -1, top)
    if kk < k:
        top = np.hstack([top, np.full((n_q, k - kk), -1, dtype=top.dtype)])
    return top.astype(np.int64)


def relevance_matrix(
    qrels,
    query_ids: Sequence[str],
    item_ids: Sequence[str],
    *,
    query_col: str = "query_id",
    item_col: str = "item_id",
    relevance_col: str | None = "relevance",
    unknown_queries: str = "ignore",
    unknown_items: str = "raise",
) -> sp.csr_matrix:
    """Build the (n_queries, n_items) csr relevance matrix from a qrels polars frame.

    Rows follow ``query_ids``, columns ``item_ids``. Qrels of queries not in
    ``query_ids`` are ignored by default (e.g. the training split); set
    ``unknown_queries="raise"`` to make them an error. Qrels naming an item not
    in ``item_ids`` raise by default (the qrels belong to another catalog).
    ``relevance_col=None`` gives binary relevance (interactions). Repeated
    (query, item) pairs keep the highest grade.
    """
    import polars as pl

    for name, value in (("unknown_queries", unknown_queries), ("unknown_items", unknown_items)):
        if value not in ("ignore", "raise"):
            raise EvaluationError(f"{name}={value!r}: expected 'ignore' or 'raise'")
    df = qrels.lazy().collect() if isinstance(qrels, pl.LazyFrame) else qrels
    for col in (query_col, item_col) + ((relevance_col,) if relevance_col else ()):
        if col not in df.columns:
            raise EvaluationError(f"qrels has no column {col!r}: found {df.columns}")
    q_map = pl.DataFrame(
        {query_col: list(query_ids), "_row": np.arange(len(query_ids))},
        schema={query_col: pl.Utf8, "_row": pl.Int64},
    )
    i_map = pl.DataFrame(
        {item_col: list(item_ids), "_col": np.arange(len(item_ids))},
        schema={item_col: pl.Utf8, "_col": pl.Int64},
    )
    grade = pl.col(relevance_col).cast(pl.Float64) if relevance_col else pl.lit(1.0)
    joined = (
        df.select(
            pl.col(query_col).cast(pl.Utf8), pl.col(item_col).cast(pl.Utf8), grade.alias("_g")
        )
        .join(q_map, on=query_col, how="left")
        .join(i_map, on=item_col, how="left")
    )
    missing_q = joined.filter(pl.col("_row").is_null())
    if unknown_queries == "raise" and missing_q.height:
        raise EvaluationError(
            f"qrels name {missing_q[query_col].n_unique()} unknown queries, e.g. "
            f"{missing_q[query_col][0]!r}: expected query ids from the evaluated set"
        )
    joined = joined.filter(pl.col("_row").is_not_null())
    missing_i = joined.filter(pl.col("_col").is_null())
    if missing_i.height:
        if unknown_items == "raise":
            raise EvaluationError(
                f"qrels name {missing_i[item_col].n_unique()} items not in the catalog, e.g. "
                f"{missing_i[item_col][0]!r} (query {missing_i[query_col][0]!r})"
            )
        joined = joined.filter(pl.col("_col").is_not_null())
    if joined["_g"].is_null().any() or joined["_g"].is_nan().any():
        raise EvaluationError(f"qrels column {relevance_col!r} holds null or NaN grades")
    agg = joined.group_by(["_row", "_col"]).agg(pl.col("_g").max())
    mat = sp.csr_matrix(
        (agg["_g"].to_numpy(), (agg["_row"].to_numpy(), agg["_col"].to_numpy())),
        shape=(len(query_ids), len(item_ids)),
    )
    mat.sort_indices()
    return mat
