"""Two-stage system evaluation: retrieve candidates from a vector index, re-rank them, score.

The system under test is the one notebooks 06 and 05 built: a vector index
(``workbench.index.VectorIndex``: ScaNN, or ``ExactIndex`` as the exact
baseline) retrieves ``candidates`` items per query, and a ranker
(``workbench.rankers``: ``score(user_ids, item_ids_2d)``) re-scores them. Two
tasks share the code:

* **search queries** of the catalog (``queries.parquet`` + ``qrels.parquet``):
  the query vector comes from the query encoder (text, image or audio tower);
  queries that carry a ``user_id`` are re-ranked with that user's history;
  anonymous queries keep the retrieval order unless ``rerank_anonymous``
  (the ranker would only give them popularity).
* **next-item** per user (:func:`next_item_task`): the query vector is the mean
  of the fused embeddings of the user's last ``last_n`` training items, the
  relevant items are the user's test items, training items are excluded.

Re-ranking blends the two stages' scores after standardising each per query
(z-scores over the valid candidates): ``final = (1 - alpha) * z(retrieval) +
alpha * z(ranker)``; ``alpha=1`` ranks by the ranker alone. Ties keep the
retrieval order.

Reported (:class:`TwoStageResult`): each stage's recall of the relevant items
(``candidate_recall``: recall@candidates of stage 1; ``recall@k`` after stage 2),
metrics of the retrieval order and of the re-ranked order with bootstrap
intervals, the paired comparison re-ranked vs retrieval-only, the ANN loss
against exact search, and explanation weights (mean fusion weight per modality
over the final top-k items). :func:`measure_latency` times each stage on single
queries (p50/p95/p99 ms on this machine); :func:`modality_breakdown` says which
single modality wins each query. Timings never enter the metrics dicts, so
metrics stay byte-reproducible.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, cast

import numpy as np
import polars as pl
import scipy.sparse as sp

from workbench.errors import ConfigError, EvaluationError
from workbench.evaluate.bootstrap import bootstrap_ci, paired_comparison
from workbench.metrics import _lookup, ranking_metrics
from workbench.progress import progress_bar

__all__ = [
    "QueryTask",
    "Retriever",
    "Scorer",
    "SystemConfig",
    "TwoStageResult",
    "evaluate_two_stage",
    "explanation_weights",
    "measure_latency",
    "modality_breakdown",
    "next_item_task",
    "query_task",
]


class Retriever(Protocol):
    """What stage 1 needs from an index (`workbench.index.VectorIndex`)."""

    @property
    def item_ids(self) -> np.ndarray: ...

    def search_indices(self, queries: Any, k: int = 10) -> tuple[np.ndarray, np.ndarray]: ...


class TextRetriever(Protocol):
    """A stage 1 that also reads the query texts (BM25, a hybrid), marked by ``uses_text = True``."""

    @property
    def item_ids(self) -> np.ndarray: ...

    @property
    def uses_text(self) -> bool: ...

    def search_indices(self, vectors: np.ndarray, k: int,
                       texts: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]: ...


StageOne = Retriever | TextRetriever


class Scorer(Protocol):
    """What stage 2 needs from a ranker (`workbench.rankers.base.Ranker`)."""

    def score(self, user_ids: Sequence[str], item_ids: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class SystemConfig:
    """Settings of the two-stage evaluation.

    k: cut-off of the final list; ks: cut-offs reported (k is always included).
    candidates: items retrieved per query by stage 1 (re-ranked by stage 2).
    alpha: weight of the ranker's standardised score in the final score.
    rerank_anonymous: also re-rank queries without a user (popularity for them).
    n_resamples / confidence / seed: bootstrap intervals and paired test.
    convention: metric convention ("trec" or "recommenders", see metrics.py).
    """

    k: int = 10
    ks: tuple[int, ...] = (10,)
    candidates: int = 100
    alpha: float = 0.5
    rerank_anonymous: bool = False
    n_resamples: int = 1000
    confidence: float = 0.95
    seed: int = 0
    convention: str = "trec"

    def __post_init__(self) -> None:
        if self.k < 1 or self.candidates < 1:
            raise ConfigError(
                f"SystemConfig: k={self.k}, candidates={self.candidates}: expected positive integers"
            )
        if self.candidates < self.k:
            raise ConfigError(
                f"SystemConfig: candidates={self.candidates} < k={self.k}: "
                "stage 1 must retrieve at least as many items as the final list holds"
            )
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"SystemConfig.alpha={self.alpha}: expected a weight in [0, 1]")

    @property
    def cutoffs(self) -> tuple[int, ...]:
        return tuple(sorted({*self.ks, self.k}))


@dataclass
class QueryTask:
    """One evaluation task: query vectors, who asks, what is relevant, what to leave out.

    ``relevance`` and ``exclude`` are csr (n_queries, n_items) with columns in the
    order of the index's ``item_ids``; ``user_ids`` holds None for anonymous queries.
    """

    name: str
    query_ids: np.ndarray
    vectors: np.ndarray
    relevance: sp.csr_matrix
    user_ids: list[str | None]
    exclude: sp.csr_matrix | None = None
    info: dict[str, Any] = field(default_factory=dict)
    texts: list[str] | None = None  # the query texts, for retrievers that read them (BM25, hybrids)

    def __post_init__(self) -> None:
        n = len(self.query_ids)
        if self.vectors.shape[0] != n or self.relevance.shape[0] != n or len(self.user_ids) != n:
            raise EvaluationError(
                f"task {self.name!r}: {n} query ids, {self.vectors.shape[0]} vectors, "
                f"{self.relevance.shape[0]} relevance rows, {len(self.user_ids)} users: expected equal"
            )
        if self.exclude is not None and self.exclude.shape != self.relevance.shape:
            raise EvaluationError(
                f"task {self.name!r}: exclude has shape {self.exclude.shape}, "
                f"expected {self.relevance.shape}"
            )


@dataclass
class TwoStageResult:
    """Everything one task's evaluation measured (no timings: see measure_latency)."""

    task: str
    config: SystemConfig
    metrics: dict[str, dict[str, float]]  # stage -> metric -> mean
    intervals: dict[str, dict[str, dict[str, float]]]  # stage -> metric -> {mean, low, high, ...}
    comparison: dict[str, Any]  # re-ranked vs retrieval-only, paired
    explanations: dict[str, float]
    per_query: pl.DataFrame
    ranked: np.ndarray  # final (n_queries, k) indices into the index's item_ids
    candidates: np.ndarray  # stage-1 (n_queries, candidates) indices

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready numbers (no arrays): what goes into metrics.json."""
        return {
            "task": self.task,
            "config": asdict(self.config),
            "metrics": self.metrics,
            "intervals": self.intervals,
            "comparison": self.comparison,
            "explanations": self.explanations,
            "n_queries": int(self.per_query.height),
        }


# --------------------------------------------------------------------------- tasks


def _id_lookup(item_ids: np.ndarray) -> pl.DataFrame:
    return pl.DataFrame(
        {"item_id": np.asarray(item_ids).astype(str), "_col": np.arange(len(item_ids))},
        schema={"item_id": pl.Utf8, "_col": pl.Int64},
    )


def query_task(
    queries: pl.DataFrame | pl.LazyFrame,
    qrels: pl.DataFrame | pl.LazyFrame,
    vectors: np.ndarray,
    item_ids: np.ndarray,
    name: str = "queries",
) -> QueryTask:
    """Search-query task: ``vectors`` (n_queries, d) rows follow ``queries``' rows.

    Qrels of queries not in ``queries`` are ignored (e.g. the training split);
    qrels of items not in ``item_ids`` raise (they belong to another catalog).
    """
    from workbench.metrics import relevance_matrix

    q = queries.collect() if isinstance(queries, pl.LazyFrame) else queries
    query_ids = q["query_id"].cast(pl.Utf8).to_numpy().astype(str)
    rel = relevance_matrix(qrels, query_ids.tolist(), np.asarray(item_ids).astype(str).tolist())
    users = q["user_id"].to_list() if "user_id" in q.columns else [None] * q.height
    texts = q["text"].to_list() if "text" in q.columns else None
    return QueryTask(name, query_ids, np.asarray(vectors, dtype=np.float32), rel, users, texts=texts)


def next_item_task(
    train: pl.DataFrame | pl.LazyFrame,
    test: pl.DataFrame | pl.LazyFrame,
    item_ids: np.ndarray,
    item_vectors: np.ndarray,
    last_n: int = 5,
    name: str = "next_item",
    user_vectors: Callable[[np.ndarray], np.ndarray] | None = None,
) -> QueryTask:
    """Next-item task per test user: query = mean of the last ``last_n`` training items' vectors,
    or ``user_vectors(users)`` (a ranker's own user representation, two-tower style).

    Users with no training history cannot form a query vector and are left
    out (their count is in ``task.info["users_without_history"]``). Training
    items of each user are excluded from retrieval; test items are relevant.
    ``task.info["query"]`` says which query vectors the task holds.
    """
    if last_n < 1:
        raise ConfigError(f"last_n={last_n}: expected a positive integer")
    tr = train.collect() if isinstance(train, pl.LazyFrame) else train
    te = test.collect() if isinstance(test, pl.LazyFrame) else test
    lookup = _id_lookup(item_ids)

    def mapped(df: pl.DataFrame, what: str) -> pl.DataFrame:
        out = df.select(
            pl.col("user_id").cast(pl.Utf8), pl.col("item_id").cast(pl.Utf8), "timestamp"
        ).join(lookup, on="item_id", how="left")
        missing = out.filter(pl.col("_col").is_null())
        if missing.height:
            raise EvaluationError(
                f"{what} interactions: item_id {missing['item_id'][0]!r} is not in the index "
                f"({missing.height} rows); expected items of the indexed catalog"
            )
        return out

    tr, te = mapped(tr, "train"), mapped(te, "test")
    test_users = np.sort(te["user_id"].unique().to_numpy().astype(str))
    has_history = np.isin(test_users, tr["user_id"].unique().to_numpy().astype(str))
    users = test_users[has_history]
    umap = pl.DataFrame({"user_id": users, "_row": np.arange(len(users))})
    tr = tr.join(umap, on="user_id", how="inner")
    te = te.join(umap, on="user_id", how="inner")
    n_u, n_i = len(users), len(item_ids)

    # Last n training items per user (most recent first): a ranked window, no loop per user.
    recent = (
        tr.sort(["_row", "timestamp"], descending=[False, True])
        .with_columns(pl.int_range(pl.len()).over("_row").alias("_pos"))
        .filter(pl.col("_pos") < last_n)
    )
    if user_vectors is not None:
        vectors = np.asarray(user_vectors(users), dtype=np.float32)
        if vectors.shape[0] != n_u:
            raise EvaluationError(f"user_vectors gave {vectors.shape[0]} rows for {n_u} users; expected one each")
        query = "ranker user vectors"
    else:
        vec = np.asarray(item_vectors, dtype=np.float32)
        rows, cols = recent["_row"].to_numpy(), recent["_col"].to_numpy()
        sums = np.zeros((n_u, vec.shape[1]), dtype=np.float64)
        np.add.at(sums, rows, vec[cols])
        counts = np.bincount(rows, minlength=n_u)[:, None]
        vectors = (sums / np.maximum(counts, 1)).astype(np.float32)
        query = f"mean of the last {last_n} items' vectors"

    def csr(df: pl.DataFrame) -> sp.csr_matrix:
        m = sp.csr_matrix(
            (np.ones(df.height), (df["_row"].to_numpy(), df["_col"].to_numpy())), shape=(n_u, n_i)
        )
        m.sum_duplicates()
        m.data[:] = 1.0
        return m

    exclude = csr(tr)
    rel = csr(te)
    # An item seen in training and again in test is excluded, so it cannot be relevant.
    rel = (rel - rel.multiply(exclude)).tocsr()
    rel.eliminate_zeros()
    return QueryTask(
        name,
        users,
        vectors,
        rel,
        users.tolist(),
        exclude=exclude,
        info={"users_without_history": int((~has_history).sum()), "last_n": last_n, "query": query},
    )


# --------------------------------------------------------------------------- stages


def retrieve(
    index: StageOne, vectors: np.ndarray, n: int, exclude: sp.csr_matrix | None = None,
    texts: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Stage 1: top-n indices and scores, excluded items removed (lists padded with -1).

    A retriever that reads query texts (BM25, a hybrid: ``uses_text = True``) gets `texts`.
    """
    n_items = len(index.item_ids)
    n = min(n, n_items)
    extra = 0 if exclude is None else int(np.diff(exclude.indptr).max(initial=0))
    if getattr(index, "uses_text", False):
        if texts is None:
            raise EvaluationError(f"{type(index).__name__} reads query texts; the task has none")
        text_index = cast(TextRetriever, index)  # what uses_text = True promises
        idx, scores = text_index.search_indices(vectors, min(n + extra, n_items), texts=texts)
    else:
        idx, scores = index.search_indices(vectors, min(n + extra, n_items))
    idx = np.asarray(idx, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    drop = idx < 0
    if exclude is not None and extra:
        drop |= _lookup(sp.csr_matrix(exclude, dtype=np.float64), np.where(drop, -1, idx)) > 0
    # Compact each row: kept items first, in their original order.
    order = np.argsort(drop, axis=1, kind="stable")[:, :n]
    idx = np.take_along_axis(np.where(drop, -1, idx), order, axis=1)
    scores = np.take_along_axis(np.where(drop, -np.inf, scores), order, axis=1)
    return idx, scores


def _zscore(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    cnt = np.maximum(valid.sum(axis=1, keepdims=True), 1)
    xv = np.where(valid, x, 0.0)
    mean = xv.sum(axis=1, keepdims=True) / cnt
    var = (np.where(valid, x - mean, 0.0) ** 2).sum(axis=1, keepdims=True) / cnt
    std = np.sqrt(var)
    return np.where(valid, (x - mean) / np.where(std > 0, std, 1.0), 0.0)


def rerank(
    ranker: Scorer | None,
    item_ids: np.ndarray,
    cand_idx: np.ndarray,
    cand_scores: np.ndarray,
    user_ids: Sequence[str | None],
    alpha: float,
    rerank_anonymous: bool = False,
) -> np.ndarray:
    """Stage 2: candidate indices re-ordered by the blended score, (n, n_candidates)."""
    valid = cand_idx >= 0
    if ranker is None or alpha == 0.0:
        return cand_idx
    rows = np.asarray(
        [u is not None or rerank_anonymous for u in user_ids], dtype=bool
    ) & valid.any(axis=1)
    if not rows.any():
        return cand_idx
    sub = cand_idx[rows]
    # Padding gets any real item id for the ranker; its score is masked below.
    filler = np.where(sub >= 0, sub, np.max(sub, axis=1, keepdims=True))
    ids = np.asarray(item_ids)[filler]
    users = ["" if u is None else str(u) for u, r in zip(user_ids, rows, strict=True) if r]
    model = np.asarray(ranker.score(users, ids), dtype=np.float64)
    v = valid[rows]
    final = (1.0 - alpha) * _zscore(np.where(v, cand_scores[rows], 0.0), v) + alpha * _zscore(
        model, v
    )
    final = np.where(v, final, -np.inf)
    order = np.argsort(-final, axis=1, kind="stable")
    out = cand_idx.copy()
    out[rows] = np.take_along_axis(sub, order, axis=1)
    return out


def explanation_weights(ranked: np.ndarray, weights: pl.DataFrame | None) -> dict[str, float]:
    """Mean fusion weight per modality over the final lists, and each modality's lead share.

    ``weights`` has ``weight_<modality>`` columns aligned with the index's
    item_ids (``VectorIndex.items``); missing weights (an item without that
    modality) count as 0 in the mean. ``lead_<modality>`` is the share of listed
    items whose largest weight is that modality's.
    """
    if weights is None:
        return {}
    cols = sorted(c for c in weights.columns if c.startswith("weight_"))
    if not cols:
        return {}
    w = weights.select(cols).fill_null(0.0).to_numpy().astype(np.float64)
    listed = ranked[ranked >= 0]
    if listed.size == 0:
        return {}
    sel = w[listed]
    out = {f"mean_{c}": float(sel[:, j].mean()) for j, c in enumerate(cols)}
    # An item leads with a modality only when that weight is strictly the largest:
    # equal weights (mean fusion) are a tie, not a win for the first column.
    top = sel.max(axis=1, keepdims=True)
    unique = (np.abs(sel - top) <= 1e-6).sum(axis=1) == 1
    lead = np.where(unique, sel.argmax(axis=1), -1)
    for j, c in enumerate(cols):
        out[f"lead_{c.removeprefix('weight_')}"] = float(np.mean(lead == j))
    out["lead_tie"] = float(np.mean(lead < 0))
    return out


def _ann_recall(approx: np.ndarray, exact: np.ndarray) -> float:
    """Share of the exact top-n found in the approximate top-n (per row, then mean)."""
    big = int(max(approx.max(initial=0), exact.max(initial=0))) + 2
    rows = np.arange(exact.shape[0], dtype=np.int64)[:, None] * big
    valid = exact >= 0
    found = np.isin(rows + exact, (rows + approx)[approx >= 0]) & valid
    denom = np.maximum(valid.sum(axis=1), 1)
    return float(np.mean(found.sum(axis=1) / denom))


def evaluate_two_stage(
    task: QueryTask,
    index: StageOne,
    ranker: Scorer | None = None,
    config: SystemConfig | None = None,
    exact_index: StageOne | None = None,
    item_weights: pl.DataFrame | None = None,
    full_ranking: np.ndarray | None = None,
) -> TwoStageResult:
    """Run both stages on every query of ``task`` (batched) and score them.

    ``full_ranking`` (optional, (n_queries, >= candidates) item columns in the index's
    order, best first, excluded items left out): what the ranker alone lists when it
    scores every item. Reported as the ``full_ranking`` stage, and
    ``vs_full_ranking`` holds the two-stage system's share of it (candidate recall
    over full-ranking recall@candidates, final metrics over full-ranking ones).
    """
    cfg = config or SystemConfig()
    if len(index.item_ids) != task.relevance.shape[1]:
        raise EvaluationError(
            f"task {task.name!r}: relevance has {task.relevance.shape[1]} item columns but the "
            f"index holds {len(index.item_ids)} items: expected columns in the index's item order"
        )
    ks = cfg.cutoffs
    defined = np.diff(task.relevance.indptr) > 0
    if not defined.any():
        raise EvaluationError(f"task {task.name!r}: no query has a relevant item")

    cand, cand_scores = retrieve(index, task.vectors, cfg.candidates, task.exclude, task.texts)
    final = rerank(
        ranker, index.item_ids, cand, cand_scores, task.user_ids, cfg.alpha, cfg.rerank_anonymous
    )[:, : cfg.k]

    stage1 = ranking_metrics(cand[:, : cfg.k], task.relevance, ks=ks, per_query=True, convention=cfg.convention)
    stage2 = ranking_metrics(final, task.relevance, ks=ks, per_query=True, convention=cfg.convention)
    cand_recall = ranking_metrics(
        cand, task.relevance, ks=(cfg.candidates,), metrics=("recall",), per_query=True,
        convention=cfg.convention,
    )[f"recall@{cfg.candidates}"]
    per_stage: dict[str, dict[str, np.ndarray]] = {
        "retrieval": {**stage1, "candidate_recall": cand_recall},
        "reranked": stage2,
    }
    if full_ranking is not None:
        full = np.asarray(full_ranking, dtype=np.int64)
        if full.ndim != 2 or full.shape[0] != len(task.query_ids) or full.shape[1] < cfg.candidates:
            raise ConfigError(
                f"full_ranking has {full.shape[0] if full.ndim else 0} rows of "
                f"{full.shape[1] if full.ndim == 2 else 0} items; expected {len(task.query_ids)} rows "
                f"(one per query) of at least {cfg.candidates} (the candidates)")
        per_stage["full_ranking"] = {
            **ranking_metrics(full[:, : cfg.k], task.relevance, ks=ks, per_query=True, convention=cfg.convention),
            **ranking_metrics(full, task.relevance, ks=(cfg.candidates,), metrics=("recall",), per_query=True, convention=cfg.convention),
        }
    if exact_index is not None:
        ex, _ = retrieve(exact_index, task.vectors, cfg.candidates, task.exclude, task.texts)
        ex_rec = ranking_metrics(
            ex, task.relevance, ks=(cfg.candidates,), metrics=("recall",), per_query=True,
        convention=cfg.convention,
        )[f"recall@{cfg.candidates}"]
        per_stage["exact_retrieval"] = {"candidate_recall": ex_rec}

    metrics: dict[str, dict[str, float]] = {}
    intervals: dict[str, dict[str, dict[str, float]]] = {}
    for stage, values in per_stage.items():
        metrics[stage] = {m: float(np.nanmean(v)) for m, v in sorted(values.items())}
        cis = bootstrap_ci(
            values, n_resamples=cfg.n_resamples, confidence=cfg.confidence, seed=cfg.seed
        )
        intervals[stage] = {m: ci.as_dict() for m, ci in cis.items()}
    if exact_index is not None:
        metrics["exact_retrieval"]["ann_recall"] = _ann_recall(cand, ex)
    if full_ranking is not None:
        ref = metrics["full_ranking"]
        pairs = {"candidate_recall": (metrics["retrieval"]["candidate_recall"], ref[f"recall@{cfg.candidates}"]),
                 **{m: (metrics["reranked"][m], ref[m]) for m in metrics["reranked"]}}
        # a share of nothing is undefined: left out rather than written as NaN
        metrics["vs_full_ranking"] = {m: a / b for m, (a, b) in sorted(pairs.items()) if b > 0}

    head = f"ndcg@{cfg.k}"
    comp = paired_comparison(
        stage1[head],
        stage2[head],
        metric=head,
        name_a="retrieval only",
        name_b="retrieval + re-ranking",
        n_resamples=cfg.n_resamples,
        confidence=cfg.confidence,
        seed=cfg.seed,
    )
    comparison = {**comp.as_dict(), "summary": comp.summary()}

    cols: dict[str, Any] = {
        "query_id": task.query_ids.astype(str),
        "user_id": [None if u is None else str(u) for u in task.user_ids],
        "n_relevant": np.diff(task.relevance.indptr).astype(np.int64),
        "candidate_recall": cand_recall,
    }
    for m in sorted(stage2):
        cols[f"retrieval_{m}"] = stage1[m]
        cols[f"reranked_{m}"] = stage2[m]
    per_query = pl.DataFrame(cols, schema_overrides={"user_id": pl.Utf8})
    weights = item_weights if item_weights is not None else getattr(index, "items", None)
    return TwoStageResult(
        task=task.name,
        config=cfg,
        metrics=metrics,
        intervals=intervals,
        comparison=comparison,
        explanations=explanation_weights(final, weights),
        per_query=per_query,
        ranked=final,
        candidates=cand,
    )


# --------------------------------------------------------------------------- latency


def _percentiles(seconds: Sequence[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000.0
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {"p50_ms": float(p50), "p95_ms": float(p95), "p99_ms": float(p99), "n": int(ms.size)}


# threadpoolctl's controller, built once: finding the loaded BLAS/OpenMP libraries costs
# ~5 ms (measured), too much for every request; limiting through a kept controller ~20 us.
_POOLS: dict[str, Any] = {}


def serving_threads(threads: int = 1) -> Any:
    """A context manager that runs one request on `threads` threads, restored on exit.

    torch's intra-op pool (`torch.set_num_threads`) and every BLAS/OpenMP pool that
    threadpoolctl finds (MKL, OpenBLAS, libgomp) are limited for the duration. Why: a
    single query is too small to split across cores; on a busy machine every extra
    thread waits for a core and the slowest one sets the latency (the `ci` profile pins
    one thread at import, the `full` profile does not). Not re-entrant across threads:
    the settings are process-wide, so concurrent requests share one scope (a server's
    worker holds it, or runs each request inside it in turn).
    """
    import contextlib
    import sys

    import torch
    from threadpoolctl import ThreadpoolController

    if threads < 1:
        raise ConfigError(f"serving_threads(threads={threads}): expected at least 1 thread")
    # a library imported since the last scope may bring its own pool: look again then
    if _POOLS.get("modules") != len(sys.modules):
        _POOLS["controller"] = ThreadpoolController()
        _POOLS["modules"] = len(sys.modules)
    controller = _POOLS["controller"]

    @contextlib.contextmanager
    def scope() -> Any:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            with controller.limit(limits=threads):
                yield
        finally:
            torch.set_num_threads(before)

    return scope()


def measure_latency(
    task: QueryTask,
    index: StageOne,
    ranker: Scorer | None = None,
    config: SystemConfig | None = None,
    n_queries: int = 200,
    encode: Callable[[int], np.ndarray] | None = None,
    warmup: int = 5,
    progress: bool = True,
    threads: int | None = 1,
) -> dict[str, dict[str, float]]:
    """Per-query latency of each stage (p50/p95/p99 ms), one query at a time on this machine.

    A loop per query is the point here: a user's request is a single query.
    ``encode(i)`` (optional) encodes query ``i`` from its raw input, timed as
    the ``encode`` stage. ``n_queries`` requests are timed, cycling through the
    task's queries in order when it has fewer (so p95/p99 rest on enough
    samples); the ``warmup`` calls before them are not timed (models warm, caches
    filled). Each request runs inside ``serving_threads(threads)`` (``None``: the
    process's own thread settings), entered inside the timed ``total``. Timings
    vary between runs: keep them out of metrics.json.
    """
    import contextlib

    cfg = config or SystemConfig()
    n_available = len(task.query_ids)
    if n_available == 0 or n_queries < 1:
        raise EvaluationError(f"task {task.name!r}: no query to time (n_queries={n_queries})")
    stages: dict[str, list[float]] = {"retrieve": [], "rerank": [], "total": []}
    if encode is not None:
        stages["encode"] = []
    excl = task.exclude
    n_warm = min(warmup, n_queries)
    steps = range(-n_warm, n_queries)
    for step in progress_bar(steps, desc=f"latency {task.name}", enabled=progress):
        i = (step + n_warm if step < 0 else step) % n_available
        start = time.perf_counter()
        with serving_threads(threads) if threads else contextlib.nullcontext():
            t0 = time.perf_counter()
            vec = encode(i) if encode is not None else task.vectors[i : i + 1]
            vec = np.asarray(vec, dtype=np.float32).reshape(1, -1)
            t1 = time.perf_counter()
            text = None if task.texts is None else task.texts[i : i + 1]
            cand, scores = retrieve(
                index, vec, cfg.candidates, None if excl is None else excl[i], text
            )
            t2 = time.perf_counter()
            rerank(
                ranker,
                index.item_ids,
                cand,
                scores,
                task.user_ids[i : i + 1],
                cfg.alpha,
                cfg.rerank_anonymous,
            )
            t3 = time.perf_counter()
        if step < 0:
            continue
        if encode is not None:
            stages["encode"].append(t1 - t0)
        stages["retrieve"].append(t2 - t1)
        stages["rerank"].append(t3 - t2)
        stages["total"].append(t3 - start)
    return {name: _percentiles(v) for name, v in stages.items()}


# --------------------------------------------------------------------------- modalities


MODALITY_NAMES = ("text", "image", "audio")


def modality_breakdown(
    task: QueryTask,
    indexes: Mapping[str, StageOne],
    item_ids: np.ndarray,
    k: int = 10,
    convention: str = "trec",
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Which modality wins each query: nDCG@k of retrieval from each modality's own index.

    ``indexes`` maps a modality name (``text``, ``image``, ``audio``, ``fused``)
    to an index over that modality's item embeddings (items lacking the
    modality are simply not in it), and may add other systems (``bm25``, a
    hybrid) that are compared but never count as a modality; ``item_ids`` is the
    order of the task's relevance columns. The winner of a query is the single modality (not
    ``fused``) with the highest nDCG@k; ``tie`` when several share the best
    value, ``none`` when all score 0. Returns the per-query frame and a summary:
    mean nDCG@k per modality and the number of queries each wins.
    """
    if not indexes:
        raise ConfigError("modality_breakdown: no index given")
    lookup = {item: j for j, item in enumerate(np.asarray(item_ids).astype(str).tolist())}
    scores: dict[str, np.ndarray] = {}
    for name in sorted(indexes):
        index = indexes[name]
        own_ids = np.asarray(index.item_ids).astype(str)
        to_task = np.fromiter((lookup.get(i, -1) for i in own_ids.tolist()), np.int64, len(own_ids))
        if (to_task < 0).any():
            bad = own_ids[to_task < 0][0]
            raise EvaluationError(
                f"modality {name!r}: index item {bad!r} is not in the task's items"
            )
        idx, _ = retrieve(index, task.vectors, k, None, task.texts)
        mapped = np.where(idx >= 0, to_task[np.maximum(idx, 0)], -1)
        scores[name] = ranking_metrics(
            mapped,
            task.relevance,
            ks=(k,),
            per_query=True,
            metrics=("ndcg",),
            convention=convention,
        )[f"ndcg@{k}"]
    singles = [m for m in sorted(scores) if m in MODALITY_NAMES]  # bm25 and hybrids are systems, not modalities
    frame = pl.DataFrame(
        {"query_id": task.query_ids.astype(str), **{f"ndcg_{m}": scores[m] for m in sorted(scores)}}
    )
    if singles:
        mat = np.stack([scores[m] for m in singles], axis=1)
        defined = ~np.isnan(mat).any(axis=1)
        best = np.where(defined[:, None], mat, -1.0).max(axis=1)
        n_best = (mat == best[:, None]).sum(axis=1)
        winner = np.where(
            ~defined,
            np.array(None, dtype=object),
            np.where(
                best <= 0,
                "none",
                np.where(n_best > 1, "tie", np.asarray(singles)[mat.argmax(axis=1)]),
            ),
        )
        frame = frame.with_columns(pl.Series("winner", winner.tolist(), dtype=pl.Utf8))
    summary: dict[str, Any] = {
        "mean_ndcg": {m: float(np.nanmean(v)) for m, v in sorted(scores.items())},
    }
    if singles:
        counts = frame["winner"].drop_nulls().value_counts()
        summary["wins"] = {
            str(r["winner"]): int(r["count"]) for r in counts.sort("winner").iter_rows(named=True)
        }
    return frame, summary
