"""Tuning ScaNN: recall against exact search, sweeps over its settings, the choice of one."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from workbench.errors import ConfigError
from workbench.index.base import VectorIndex
from workbench.index.build import build_index
from workbench.index.config import IndexConfig
from workbench.index.vectors import _as_matrix


def recall_at_k(approx: np.ndarray, exact: np.ndarray, k: int) -> float:
    """Mean over queries of |approx top-k ∩ exact top-k| / k (ids or indices; -1 pads)."""
    approx, exact = np.asarray(approx), np.asarray(exact)
    if approx.shape[0] != exact.shape[0]:
        raise ConfigError(f"recall: {approx.shape[0]} approximate rows vs {exact.shape[0]} exact")
    if approx.shape[0] == 0:
        raise ConfigError("recall: no queries")
    if approx.shape[1] < k or exact.shape[1] < k:
        raise ConfigError(
            f"recall@{k}: result lists hold {approx.shape[1]} / {exact.shape[1]} items"
        )
    hits = 0
    for a, e in zip(approx[:, :k], exact[:, :k], strict=True):
        truth = {x for x in e.tolist() if x != -1}
        hits += len(truth.intersection(x for x in a.tolist() if x != -1))
    return hits / (k * approx.shape[0])


def _timed_search(index: VectorIndex, queries: np.ndarray, k: int, repeats: int, **kw):
    best = math.inf
    result = None
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        result = index.search_indices(queries, k, **kw)
        best = min(best, time.perf_counter() - start)
    return result, best


def exact_baseline(
    item_ids: Sequence[str] | np.ndarray,
    vectors: Any,
    queries: Any,
    k: int = 10,
    repeats: int = 3,
    device: str = "auto",
) -> tuple[np.ndarray, float]:
    """Exact top-k row indices of `queries` and the exact search's queries/s."""
    exact = build_index(item_ids, vectors, IndexConfig(kind="exact", device=device))
    q = _as_matrix(queries, "queries")
    (idx, _), seconds = _timed_search(exact, q, k, repeats)
    return idx, q.shape[0] / seconds


def search_grid(num_leaves: int, k: int = 10) -> tuple[list[int], list[int]]:
    """A fine grid of the two query-time settings for an index of `num_leaves` partitions.

    Leaves searched: every count from 1 to 8, then steps of about 25% up to a tenth of
    the leaves (every leaf below 100 partitions, where that is still cheap); re-order
    depths from k to 20k in steps of about 25-50%. At recall@10 0.95 on clustered
    256-d vectors the fastest settings searched 0.2-1% of the leaves and re-ordered
    20-60 candidates (bench_index.py), between the old grid's points.
    """
    if num_leaves < 1:
        raise ConfigError(f"search_grid: num_leaves={num_leaves}; expected a positive integer")
    top = num_leaves if num_leaves < 100 else max(8, num_leaves // 10)
    leaves = set(range(1, min(8, top) + 1))
    value = 8.0
    while value < top:
        value *= 1.25
        leaves.add(min(top, round(value)))
    reorder = {max(k, round(k * f)) for f in (1, 1.5, 2, 2.5, 3, 4, 5, 7, 10, 15, 20)}
    return sorted(leaves), sorted(reorder)


def sweep(
    item_ids: Sequence[str] | np.ndarray,
    vectors: Any,
    queries: Any,
    k: int = 10,
    leaves_to_search: Iterable[int] = (1, 2, 4, 8, 16),
    reorder: Iterable[int] = (10, 20, 50, 100),
    num_leaves: Iterable[int] | None = None,
    config: IndexConfig | None = None,
    exact: np.ndarray | None = None,
    repeats: int = 3,
    progress: bool = True,
    dims_per_block: Iterable[int] | None = None,
    anisotropic_threshold: Iterable[float] | None = None,
) -> list[dict[str, Any]]:
    """Recall@k against exact search, queries/s and build time of each ScaNN setting.

    leaves_to_search and reorder are query-time settings, so one index is built per
    build-time combination (`num_leaves` x `dims_per_block` x `anisotropic_threshold`,
    each defaulting to `config`'s value) and searched with each pair; `build_s` is that
    index's build time. qps is the best of `repeats` timed passes over all queries (on
    the index's `num_threads`). `exact` can pass precomputed exact top-k row indices
    (from `exact_baseline`).
    """
    import itertools

    from workbench.progress import progress_bar

    arr = _as_matrix(vectors, "item vectors")
    q = _as_matrix(queries, "queries")
    base = (config or IndexConfig()).resolved(arr.shape[0])
    assert base.num_leaves is not None  # `resolved` fills every None field
    if exact is None:
        exact, _ = exact_baseline(item_ids, arr, q, k, repeats=1, device=base.device)
    # fewer than k re-ordered candidates cannot fill a top-k list: raise them to k
    leaves_list, reorder_list = sorted(set(leaves_to_search)), sorted({max(r, k) for r in reorder})
    leaf_counts = sorted(set(num_leaves)) if num_leaves is not None else [base.num_leaves]
    blocks = sorted(set(dims_per_block)) if dims_per_block is not None else [base.dims_per_block]
    thresholds = (
        sorted(set(anisotropic_threshold))
        if anisotropic_threshold is not None
        else [base.anisotropic_threshold]
    )
    builds = list(itertools.product(leaf_counts, blocks, thresholds))
    rows = []
    total = sum(len({min(v, nl) for v in leaves_list}) for nl, _, _ in builds) * len(reorder_list)
    bar = progress_bar(total=total, desc="sweep", enabled=progress)
    for nl, dpb, thr in builds:
        # build with the largest reorder so any smaller one can be asked for at query time
        cfg = replace(
            base,
            kind="scann",
            num_leaves=nl,
            reorder=max(max(reorder_list), k),
            dims_per_block=dpb,
            anisotropic_threshold=thr,
        )
        index = build_index(item_ids, arr, cfg)
        # more leaves than exist means "search them all"
        for lts in sorted({min(v, nl) for v in leaves_list}):
            for ro in reorder_list:
                (idx, _), seconds = _timed_search(
                    index, q, k, repeats, leaves_to_search=lts, reorder=ro
                )
                rows.append(
                    {
                        "num_leaves": nl,
                        "leaves_to_search": lts,
                        "reorder": ro,
                        "dims_per_block": dpb,
                        "anisotropic_threshold": thr,
                        f"recall@{k}": round(recall_at_k(idx, exact, k), 4),
                        "qps": round(q.shape[0] / seconds, 1),
                        "build_s": round(index.build_s, 3),
                    }
                )
                bar.update()
        del index  # one index in memory at a time (a 1M-item index holds ~1.2 GB)
    bar.close()
    return rows


def choose_setting(
    rows: Sequence[dict[str, Any]], recall_target: float = 0.95, k: int = 10, by: str = "qps"
) -> dict[str, Any]:
    """The fastest setting whose recall@k meets the target.

    `by="qps"` ranks settings by measured queries/s, which can flip between
    near-equal settings from one run to the next; `by="work"` ranks them by the
    work per query (share of leaves searched, then re-order size), which is
    deterministic, so a report built on the chosen index re-runs to the same
    numbers. When none meets the target, the setting with the highest recall is
    returned; either way the row gains `meets_target`.
    """
    if not rows:
        raise ConfigError("choose_setting: the sweep is empty")
    if by not in ("qps", "work"):
        raise ConfigError(f"choose_setting: by={by!r}, expected 'qps' or 'work'")
    key = f"recall@{k}"

    def speed(r: dict[str, Any]) -> tuple[float, ...]:
        if by == "qps":
            return (r["qps"],)
        # wider code blocks hash fewer codes per item: less work at equal leaves/reorder
        return (
            -r["leaves_to_search"] / r.get("num_leaves", 1),
            -r["reorder"],
            r.get("dims_per_block", 0),
        )

    meeting = [r for r in rows if r[key] >= recall_target]
    if meeting:
        best = max(meeting, key=lambda r: (*speed(r), r[key]))
    else:
        best = max(rows, key=lambda r: (r[key], *speed(r)))
    return {**best, "meets_target": bool(meeting), "recall_target": recall_target}


def sweep_claims(
    rows: Sequence[dict[str, Any]], k: int = 10, full_recall: float = 0.99, slack: float = 0.02
) -> dict[str, bool]:
    """What a sweep must show on any machine, as booleans with wide margins.

    The recalls themselves move in the third decimal between CPUs (ScaNN picks its
    SIMD code by CPU); these claims do not: the best recall per number of partitions
    searched grows (never falling by more than `slack`) from the fewest to the most
    partitions, and searching every partition finds at least `full_recall` of the
    exact top-k.
    """
    if not rows:
        raise ConfigError("sweep_claims: the sweep is empty")
    key = f"recall@{k}"
    best: dict[int, float] = {}
    for r in rows:
        best[r["leaves_to_search"]] = max(best.get(r["leaves_to_search"], 0.0), r[key])
    curve = [best[n] for n in sorted(best)]
    grows = curve[-1] > curve[0] and all(b >= a - slack for a, b in zip(curve, curve[1:], strict=False))
    everything = [r[key] for r in rows if r["leaves_to_search"] >= r.get("num_leaves", r["leaves_to_search"])]
    return {
        f"recall@{k} grows with the partitions searched": grows,
        f"searching every partition finds the exact top-{k} (recall >= {full_recall:g})":
            bool(everything) and max(everything) >= full_recall,
    }


def config_for_setting(base: IndexConfig, setting: dict[str, Any]) -> IndexConfig:
    """`base` with the num_leaves / leaves_to_search / reorder (and, when the row has
    them, dims_per_block / anisotropic_threshold) of a sweep row."""
    num_leaves = setting.get("num_leaves", base.num_leaves)
    if num_leaves is None:
        raise ConfigError(
            "config_for_setting: neither the setting nor base gives num_leaves; "
            "expected a sweep row or a base from IndexConfig.for_size"
        )
    return replace(
        base,
        kind="scann",
        num_leaves=int(num_leaves),
        leaves_to_search=int(setting["leaves_to_search"]),
        reorder=int(setting["reorder"]),
        dims_per_block=int(setting.get("dims_per_block", base.dims_per_block)),
        anisotropic_threshold=float(
            setting.get("anisotropic_threshold", base.anisotropic_threshold)
        ),
    )


def tuning_queries(vectors: np.ndarray, n_item_queries: int, rng: np.random.Generator, noise: float = 0.05,
                   text_queries: np.ndarray | None = None) -> np.ndarray:
    """Queries to tune an index on: a sample of the unit item vectors plus Gaussian noise, then `text_queries`.

    The sample ("more like this" queries) is `min(n_item_queries, n)` distinct items drawn
    from `rng`, each normalised before `noise` times a standard normal is added; the
    encoded search queries, when there are some, follow them. float32 throughout.
    """
    pick = rng.choice(len(vectors), size=min(n_item_queries, len(vectors)), replace=False)
    unit = vectors[pick] / np.linalg.norm(vectors[pick], axis=1, keepdims=True)
    queries = [unit + noise * rng.standard_normal(unit.shape).astype(np.float32)]
    if text_queries is not None:
        queries.append(text_queries)
    return np.concatenate(queries).astype(np.float32)
