"""Choosing a search system honestly: every candidate scored on validation queries, all reported on test.

A *search system* scores every item for a query (`scores(rows) -> (len(rows), n_items)`,
``-inf`` for items it cannot retrieve). The candidates:

* each single modality: the query's text vector against that modality's item vectors;
* late fusion: a weighted sum of per-modality cosine similarities over the modalities
  an item has (weights from a grid on the simplex that includes 0 for every modality,
  the grid point chosen on validation);
* each learned fusion (item vectors fused by notebook 03's models);
* BM25 over each product's title and description (`workbench.lexical`);
* hybrids of BM25 and the best dense candidate: reciprocal rank fusion, and a convex
  combination of per-query normalised scores (weight chosen on validation).

`select_system` picks the candidate with the best validation score (ties: the earlier,
simpler candidate), falls back to a documented default when the validation split is
too small to choose from, and only then scores every candidate on test, with
bootstrap intervals and paired tests of the chosen system against the best single
modality and BM25. No test query influences a choice (a test perturbs the test qrels
and checks the choice does not move).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np
import polars as pl
import scipy.sparse as sp

from workbench.errors import ConfigError, EvaluationError
from workbench.evaluate.bootstrap import PairedResult, bootstrap_ci, paired_comparison
from workbench.metrics import ranking_metrics, top_k_from_scores

KINDS = ("single", "late", "learned", "lexical", "hybrid")
MIN_VALIDATION_QUERIES = 10
_BATCH = 256  # queries scored at once: bounds a score block to 256 x n_items floats


class SearchSystem(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> str: ...

    def scores(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), n_items) float scores of the query rows; -inf where an item cannot be retrieved."""
        ...


System = TypeVar("System", bound=SearchSystem)  # a tuned or chosen system keeps its own type


def _check_rows(rows: np.ndarray, n: int, name: str) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.int64)
    if rows.ndim != 1 or (rows.size and (rows.min() < 0 or rows.max() >= n)):
        raise EvaluationError(f"{name}: query rows must be indices 0..{n - 1}")
    return rows


@dataclass(frozen=True)
class DenseSystem:
    """Cosine of L2-normalised query vectors against one set of item vectors."""

    name: str
    queries: np.ndarray  # (n_queries, d)
    items: np.ndarray  # (n_items, d)
    retrievable: np.ndarray  # (n_items,) bool: items that have this representation
    kind: str = "single"

    def scores(self, rows: np.ndarray) -> np.ndarray:
        rows = _check_rows(rows, len(self.queries), self.name)
        s = (self.queries[rows] @ self.items.T).astype(np.float64)
        s[:, ~self.retrievable] = -np.inf
        return s


@dataclass(frozen=True)
class LateFusionSystem:
    """A weighted sum of per-modality similarities, over the modalities each item has.

    score(q, i) = sum_m w_m * cos(q, e_m(i)) / sum_m w_m [i has m]: an item missing a
    modality is scored by the others, not penalised for the gap; one with none of the
    weighted modalities cannot be retrieved.
    """

    name: str
    queries: np.ndarray
    items: Mapping[str, np.ndarray]
    masks: Mapping[str, np.ndarray]
    weights: Mapping[str, float]
    kind: str = "late"

    def __post_init__(self) -> None:
        unknown = [m for m in self.weights if m not in self.items]
        if unknown or any(w < 0 for w in self.weights.values()) or not any(self.weights.values()):
            raise ConfigError(f"{self.name}: weights {dict(self.weights)}: expected non-negative weights, "
                              f"not all 0, for modalities among {sorted(self.items)}")

    def scores(self, rows: np.ndarray) -> np.ndarray:
        rows = _check_rows(rows, len(self.queries), self.name)
        q = self.queries[rows]
        total = np.zeros((len(rows), len(next(iter(self.items.values())))))
        norm = np.zeros(total.shape[1])
        for m, w in self.weights.items():
            if w == 0:
                continue
            mask = np.asarray(self.masks[m], dtype=bool)
            sim = (q @ self.items[m].T).astype(np.float64)
            total += w * np.where(mask, sim, 0.0)
            norm += w * mask
        with np.errstate(invalid="ignore", divide="ignore"):
            out = total / norm
        out[:, norm == 0] = -np.inf
        return out


@dataclass(frozen=True)
class LexicalSystem:
    """BM25 over product texts (`workbench.lexical.BM25Index`), queries given as texts."""

    name: str
    index: Any  # workbench.lexical.BM25Index, items in the same order as every other system
    texts: Sequence[str]
    kind: str = "lexical"

    def scores(self, rows: np.ndarray) -> np.ndarray:
        rows = _check_rows(rows, len(self.texts), self.name)
        s = np.asarray(self.index.score_matrix([self.texts[r] for r in rows]), dtype=np.float64)
        return np.where(s > 0, s, -np.inf)  # no word in common: not a lexical match


@dataclass(frozen=True)
class ConvexHybrid:
    """`(1 - weight) * dense + weight * lexical` on per-query normalised scores (`workbench.hybrid`)."""

    name: str
    dense: SearchSystem
    lexical: SearchSystem
    weight: float
    kind: str = "hybrid"

    def scores(self, rows: np.ndarray) -> np.ndarray:
        from workbench.hybrid import convex_combination

        return convex_combination(self.dense.scores(rows), self.lexical.scores(rows), self.weight)


@dataclass(frozen=True)
class RRFHybrid:
    """Reciprocal rank fusion of two systems' top-`depth` lists (items in neither: -inf)."""

    name: str
    systems: tuple[SearchSystem, SearchSystem]
    depth: int = 100
    c: int = 60
    kind: str = "hybrid"

    def scores(self, rows: np.ndarray) -> np.ndarray:
        from workbench.hybrid import reciprocal_rank_fusion

        first = self.systems[0].scores(rows)
        depth = min(self.depth, first.shape[1])
        rankings = [top_k_from_scores(first, depth)] + [top_k_from_scores(s.scores(rows), depth)
                                                        for s in self.systems[1:]]
        idx, fused = reciprocal_rank_fusion(rankings, depth, c=self.c)
        out = np.full(first.shape, -np.inf)
        r, c = np.nonzero(idx >= 0)
        out[r, idx[r, c]] = fused[r, c]
        return out


def rank(system: SearchSystem, rows: np.ndarray, k: int) -> np.ndarray:
    """Top-k item indices per query row (-1 pads), scored in batches of queries."""
    rows = np.asarray(rows, dtype=np.int64)
    parts = [top_k_from_scores(system.scores(rows[i:i + _BATCH]), k) for i in range(0, len(rows), _BATCH)]
    return np.concatenate(parts) if parts else np.zeros((0, k), dtype=np.int64)


def per_query_metrics(
    system: SearchSystem, rows: np.ndarray, relevance: sp.csr_matrix, ks: Sequence[int] = (10,)
) -> dict[str, np.ndarray]:
    """ranking_metrics(per_query=True) of `system` on the query rows (relevance rows in the same order)."""
    if relevance.shape[0] != len(rows):
        raise EvaluationError(f"{system.name}: {len(rows)} query rows but {relevance.shape[0]} relevance rows")
    return ranking_metrics(rank(system, rows, max(ks)), relevance, ks=tuple(ks), per_query=True)


def simplex_grid(modalities: Sequence[str], step: float = 0.25) -> list[dict[str, float]]:
    """Every weighting of `modalities` in multiples of `step` summing to 1 (zeros included)."""
    n = round(1 / step)
    if n < 1 or abs(n * step - 1) > 1e-9:
        raise ConfigError(f"step={step!r}: expected 1/step to be a whole number (e.g. 0.25, 0.1)")
    grid = []
    for combo in itertools.product(range(n + 1), repeat=len(modalities)):
        if sum(combo) == n:
            grid.append({m: round(c / n, 6) for m, c in zip(modalities, combo, strict=True)})
    return grid


def _mean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def best_on_validation(
    candidates: Sequence[System], rows: np.ndarray, relevance: sp.csr_matrix, metric: str = "ndcg@10"
) -> tuple[System, pl.DataFrame]:
    """The candidate with the highest validation `metric` (ties: the earliest) and the table of all."""
    if not candidates:
        raise ConfigError("best_on_validation: no candidates")
    k = int(metric.split("@")[1])
    values = [_mean(per_query_metrics(c, rows, relevance, (k,))[metric]) for c in candidates]
    table = pl.DataFrame({"system": [c.name for c in candidates], "kind": [c.kind for c in candidates],
                          metric: values})
    best = max(range(len(candidates)), key=lambda i: (values[i] if np.isfinite(values[i]) else -1.0, -i))
    return candidates[best], table


@dataclass
class Selection:
    """What was chosen on validation, and how every candidate did on test."""

    chosen: str
    reason: str
    fallback: bool  # the validation split was too small: the documented default was taken
    validation: pl.DataFrame  # system, kind, <metric> on the validation queries
    test: pl.DataFrame  # system, kind, metrics on the test queries with 95% intervals
    test_per_query: dict[str, dict[str, np.ndarray]] = field(repr=False)
    comparisons: dict[str, PairedResult] = field(default_factory=dict)
    metric: str = "ndcg@10"

    def summary(self) -> str:
        lines = [f"chosen on validation: {self.chosen} ({self.reason})"]
        lines += [f"{name}: {cmp.summary()}" for name, cmp in self.comparisons.items()]
        return "\n".join(lines)

    def to_dict(self, digits: int = 4) -> dict[str, Any]:
        """JSON-ready: the choice, both tables and the paired tests (no per-query arrays)."""
        def rows(df: pl.DataFrame) -> dict[str, dict[str, Any]]:
            return {r["system"]: {k: (round(v, digits) if isinstance(v, float) else v)
                                  for k, v in r.items() if k != "system"} for r in df.iter_rows(named=True)}

        return {
            "chosen": self.chosen, "reason": self.reason, "fallback": self.fallback, "metric": self.metric,
            "validation": rows(self.validation), "test": rows(self.test),
            "comparisons": {name: {k: (round(v, digits) if isinstance(v, float) else v)
                                   for k, v in c.as_dict().items()} for name, c in self.comparisons.items()},
        }


def select_system(
    candidates: Sequence[SearchSystem],
    validation: tuple[np.ndarray, sp.csr_matrix],
    test: tuple[np.ndarray, sp.csr_matrix],
    *,
    default: str,
    metric: str = "ndcg@10",
    ks: Sequence[int] = (10,),
    min_validation_queries: int = MIN_VALIDATION_QUERIES,
    n_resamples: int = 2000,
    seed: int = 0,
) -> Selection:
    """Choose among `candidates` on `validation` (rows, relevance), then report each on `test`.

    With fewer than `min_validation_queries` validation queries that have a relevant item,
    the choice would be noise: `default` (a candidate's name) is taken instead, and the
    reason says so. Test numbers are computed only after the choice is made.
    """
    names = [c.name for c in candidates]
    if len(set(names)) != len(names):
        raise ConfigError(f"select_system: candidate names repeat: {names}")
    if default not in names:
        raise ConfigError(f"select_system: default {default!r} is not a candidate ({', '.join(names)})")
    v_rows, v_rel = validation
    judged = int((np.diff(v_rel.indptr) > 0).sum())
    best, v_table = best_on_validation(candidates, v_rows, v_rel, metric)
    if judged < min_validation_queries:
        chosen, fallback = default, True
        reason = (f"only {judged} validation queries with a relevant item (fewer than {min_validation_queries}): "
                  f"too few to choose from, so the documented default {default!r} is used")
    else:
        chosen, fallback = best.name, False
        value = v_table.filter(pl.col("system") == best.name)[metric][0]
        reason = f"highest {metric} on {judged} validation queries ({value:.4f})"
    # Only now: the test set.
    t_rows, t_rel = test
    per_query = {c.name: per_query_metrics(c, t_rows, t_rel, ks) for c in candidates}
    rows = []
    for c in candidates:
        cis = bootstrap_ci({m: v for m, v in per_query[c.name].items()}, n_resamples=n_resamples, seed=seed)
        row: dict[str, Any] = {"system": c.name, "kind": c.kind}
        for m, iv in sorted(cis.items()):
            row[m] = iv.mean
            if m == metric:
                row[f"{m}_low"], row[f"{m}_high"], row["n"] = iv.low, iv.high, iv.n
        rows.append(row)
    t_table = pl.DataFrame(rows)
    comparisons = _comparisons(candidates, chosen, per_query, t_table, metric, n_resamples, seed)
    return Selection(chosen, reason, fallback, v_table, t_table, per_query, comparisons, metric)


def _comparisons(
    candidates: Sequence[SearchSystem], chosen: str, per_query: Mapping[str, Mapping[str, np.ndarray]],
    table: pl.DataFrame, metric: str, n_resamples: int, seed: int,
) -> dict[str, PairedResult]:
    """Paired tests on test of the chosen system against the best single modality, BM25 and the best other."""
    by_kind: dict[str, list[str]] = {}
    for c in candidates:
        by_kind.setdefault(c.kind, []).append(c.name)
    test_value = dict(zip(table["system"], table[metric], strict=True))

    def best_of(names: Sequence[str]) -> str | None:
        names = [n for n in names if n != chosen and np.isfinite(test_value.get(n, np.nan))]
        return max(names, key=lambda n: test_value[n]) if names else None

    against = {
        "vs best single modality": best_of(by_kind.get("single", [])),
        "vs BM25": best_of(by_kind.get("lexical", [])),
        "vs best other system": best_of([c.name for c in candidates]),
    }
    out = {}
    for label, other in against.items():
        if other is None:
            continue
        out[label] = paired_comparison(per_query[other][metric], per_query[chosen][metric], metric=metric,
                                       name_a=other, name_b=chosen, n_resamples=n_resamples, seed=seed)
    return out


def tuned(
    make: Callable[[Any], System], grid: Sequence[Any], validation: tuple[np.ndarray, sp.csr_matrix],
    metric: str = "ndcg@10",
) -> tuple[System, pl.DataFrame]:
    """The system `make(g)` for the grid point `g` that scores best on validation (ties: the first)."""
    if not grid:
        raise ConfigError("tuned: the grid is empty")
    return best_on_validation([make(g) for g in grid], *validation, metric=metric)


@dataclass(frozen=True)
class CandidateSettings:
    """How the tuned candidates are searched for (on validation)."""

    late_fusion_step: float = 0.25  # grid step of the late-fusion weights (0 included for each modality)
    hybrid_weights: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # lexical share
    rrf_depth: int = 100
    rrf_c: int = 60

    def __post_init__(self) -> None:
        simplex_grid(["a"], self.late_fusion_step)  # validates the step
        if not self.hybrid_weights or any(not 0 <= w <= 1 for w in self.hybrid_weights):
            raise ConfigError(f"hybrid_weights={self.hybrid_weights}: expected weights in [0, 1]")
        if self.rrf_depth < 1 or self.rrf_c < 0:
            raise ConfigError(f"rrf_depth={self.rrf_depth}, rrf_c={self.rrf_c}: expected >= 1 and >= 0")


def build_candidates(
    queries: np.ndarray,
    items: Mapping[str, np.ndarray],
    masks: Mapping[str, np.ndarray],
    validation: tuple[np.ndarray, sp.csr_matrix],
    *,
    learned: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    lexical: LexicalSystem | None = None,
    settings: CandidateSettings | None = None,
    metric: str = "ndcg@10",
) -> tuple[list[SearchSystem], dict[str, dict[str, Any]]]:
    """The candidate systems, their tuned settings chosen on `validation` (never on test).

    queries: (n_queries, d) text-query vectors; items/masks: per-modality item vectors
    and presence; learned: fusion name -> (fused item vectors, retrievable). Returns the
    candidates in order of simplicity (ties on validation go to the earlier one), named
    stably (`late fusion`, `bm25`, `hybrid RRF`, `hybrid convex`: the names do not
    depend on what tuning picked), and per tuned family what was chosen and the
    validation score of every grid point.
    """
    settings = settings or CandidateSettings()
    candidates: list[SearchSystem] = [
        DenseSystem(m, queries, items[m], np.asarray(masks[m], dtype=bool)) for m in items
    ]
    tuning: dict[str, dict[str, Any]] = {}
    if len(items) > 1:
        grid = [w for w in simplex_grid(list(items), settings.late_fusion_step)
                if sum(v > 0 for v in w.values()) > 1]
        if grid:
            best, table = tuned(lambda w: LateFusionSystem("late fusion", queries, items, masks, w), grid,
                                validation, metric)
            tuning["late fusion"] = {"weights": dict(best.weights),
                                     "grid": _grid_rows(table, [dict(w) for w in grid], metric)}
            candidates.append(best)
    for name, (vectors, retrievable) in (learned or {}).items():
        candidates.append(DenseSystem(name, queries, vectors, np.asarray(retrievable, dtype=bool), kind="learned"))
    if lexical is not None:
        dense_best, _ = best_on_validation(candidates, *validation, metric=metric)
        candidates.append(lexical)
        candidates.append(RRFHybrid("hybrid RRF", (dense_best, lexical), settings.rrf_depth, settings.rrf_c))
        tuning["hybrid RRF"] = {"dense": dense_best.name, "depth": settings.rrf_depth, "c": settings.rrf_c}
        convex, table = tuned(lambda w: ConvexHybrid("hybrid convex", dense_best, lexical, w),
                              settings.hybrid_weights, validation, metric)
        tuning["hybrid convex"] = {"dense": dense_best.name, "weight": convex.weight,
                                   "grid": _grid_rows(table, [{"weight": w} for w in settings.hybrid_weights], metric)}
        candidates.append(convex)
    return candidates, tuning


def _grid_rows(table: pl.DataFrame, points: Sequence[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    return [{**p, metric: v} for p, v in zip(points, table[metric].to_list(), strict=True)]


# --------------------------------------------------------------------------- stage 1 of a two-stage system


@dataclass(frozen=True)
class LexicalRetriever:
    """BM25 as a stage-1 retriever (`retrieve` passes it the query texts)."""

    index: Any  # workbench.lexical.BM25Index
    uses_text = True

    @property
    def item_ids(self) -> np.ndarray:
        return np.asarray(self.index.item_ids)

    def search_indices(self, vectors: np.ndarray, k: int,
                       texts: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        if texts is None:
            raise EvaluationError("BM25 retrieves by query text: no texts given")
        return self.index.search_indices(list(texts), k)


@dataclass(frozen=True)
class HybridRetriever:
    """Stage 1 of a hybrid system: the dense index's candidates and BM25's, fused.

    `method` "rrf" (reciprocal rank fusion of the two top-`depth` lists) or "convex"
    (`(1 - weight) * dense + weight * BM25` on per-query normalised scores of the items
    either list returned). The BM25 index must hold the dense index's items in its order.
    """

    dense: Any  # a VectorIndex
    lexical: Any  # workbench.lexical.BM25Index
    method: str = "rrf"
    weight: float = 0.5
    depth: int = 100
    c: int = 60
    uses_text = True

    def __post_init__(self) -> None:
        if self.method not in ("rrf", "convex"):
            raise ConfigError(f"HybridRetriever.method={self.method!r}: expected 'rrf' or 'convex'")
        if list(np.asarray(self.dense.item_ids)) != list(np.asarray(self.lexical.item_ids)):
            raise ConfigError("HybridRetriever: the BM25 index and the dense index hold different items "
                              "(or another order); build BM25 over the dense index's item_ids")

    @property
    def item_ids(self) -> np.ndarray:
        return np.asarray(self.dense.item_ids)

    def search_indices(self, vectors: np.ndarray, k: int,
                       texts: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        from workbench.hybrid import convex_combination, reciprocal_rank_fusion

        if texts is None:
            raise EvaluationError("a hybrid retriever needs the query texts for BM25")
        depth = min(max(k, self.depth), len(self.item_ids))
        d_idx, d_scores = self.dense.search_indices(vectors, depth)
        l_idx, l_scores = self.lexical.search_indices(list(texts), depth)
        if self.method == "rrf":
            return reciprocal_rank_fusion([np.asarray(d_idx), np.asarray(l_idx)], k, c=self.c)
        n, n_items = len(d_idx), len(self.item_ids)
        dense_full, lexical_full = np.full((n, n_items), -np.inf), np.full((n, n_items), -np.inf)
        for full, idx, sc in ((dense_full, d_idx, d_scores), (lexical_full, l_idx, l_scores)):
            r, c = np.nonzero(np.asarray(idx) >= 0)
            full[r, np.asarray(idx)[r, c]] = np.asarray(sc, dtype=np.float64)[r, c]
        lexical_full[lexical_full <= 0] = -np.inf  # no word in common: not a lexical match
        combined = convex_combination(dense_full, lexical_full, self.weight)
        top = top_k_from_scores(combined, k)
        scores = np.take_along_axis(combined, np.maximum(top, 0), axis=1)
        return top, np.where(top >= 0, scores, -np.inf).astype(np.float32)


def stage_one(index: Any, lexical: Any | None, spec: Mapping[str, Any] | None) -> Any:
    """The stage-1 retriever of the system notebook 03 chose (`<work>/search.json`).

    A hybrid wraps the dense index with BM25 as tuned on validation; anything else
    is the dense index itself (a BM25-only choice is served by its hybrid with the
    index only when BM25 is available; otherwise the index).
    """
    spec = spec or {}
    if lexical is None:
        return index
    if spec.get("kind") == "lexical":
        return LexicalRetriever(lexical)
    if spec.get("kind") != "hybrid":
        return index
    tuning = spec.get("tuning", {}).get(spec.get("chosen"), {})
    if spec.get("chosen") == "hybrid convex":
        return HybridRetriever(index, lexical, "convex", weight=float(tuning.get("weight", 0.5)))
    return HybridRetriever(index, lexical, "rrf", depth=int(tuning.get("depth", 100)), c=int(tuning.get("c", 60)))
