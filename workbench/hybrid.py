"""Hybrid retrieval: fuse the lists or the scores of a dense and a lexical retriever.

Numpy only and independent of where the inputs come from (`workbench.index`,
`workbench.lexical`, or any other retriever), so each piece is tested on
hand-computed numbers:

* `reciprocal_rank_fusion(rankings, k_out, c=60)`: fuse ranked lists of item
  indices (the `search_indices` output of any retriever; -1 pads). Each item
  scores the sum over lists of `1 / (c + rank)`, rank 1 being the top of a list;
  an item absent from a list gets nothing from it. Needs no score calibration.
* `convex_combination(dense, lexical, weight, normalise)`: fuse score matrices
  `(n_queries, n_items)` (columns the same items in the same order) as
  `(1 - weight) * norm(dense) + weight * norm(lexical)`, each normalised per
  query over the items it scored (see below). `weight` 0 is dense only, 1 is
  lexical only.
* `choose_weight(candidates, evaluate)`: the candidate with the best validation
  score (ties: the smaller candidate), with the table of every candidate's score.
* `scatter_scores(idx, scores, n_items)` turns top-k lists into a score matrix
  (-inf off the lists) and `top_k(matrix, k)` turns a fused matrix back into lists.

**What -inf means.** In a score matrix, -inf is "this retriever gave the item no
score": a lexical retriever found none of the query's words in it
(`BM25Index.score_matrix`), or a dense retriever did not return it among its
candidates (`scatter_scores`). Normalisation uses only the finite scores of the
row, and an unscored item is placed at the bottom of that input's scale:

| normalise | scored items | unscored items | all scored items equal |
| --- | --- | --- | --- |
| "minmax" | (s - min) / (max - min), in [0, 1] | 0 | scored 1, unscored 0 |
| "zscore" | (s - mean) / std | the row's lowest z-score | scored 0, unscored -1 |

A row in which an input scored nothing (an empty lexical query) contributes 0
for every item: the other input alone orders that row. An item that no input
with positive weight scored stays -inf in the output (so `top_k` pads it away),
which makes weight 0 and weight 1 rank exactly like the dense and the lexical
input. NaN and +inf are refused (`ConfigError` naming the input and the cell):
they are bugs upstream, not "no score".

Ties in fused lists go to the lower item index, as everywhere in the workbench.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from workbench.errors import ConfigError, EvaluationError

__all__ = [
    "NORMALISATIONS",
    "choose_weight",
    "convex_combination",
    "normalise_scores",
    "reciprocal_rank_fusion",
    "scatter_scores",
    "top_k",
]

NORMALISATIONS = ("minmax", "zscore")


def _check_positive_int(value: Any, name: str) -> int:
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name}={value!r}: expected a positive integer")
    return int(value)


def _as_ranking(ranking: Any, position: int) -> np.ndarray:
    arr = np.asarray(ranking)
    if arr.ndim != 2:
        raise ConfigError(
            f"rankings[{position}]: shape {arr.shape}; expected (n_queries, k) item indices"
        )
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ConfigError(
            f"rankings[{position}]: dtype {arr.dtype}; expected integer item indices (-1 pads)"
        )
    arr = arr.astype(np.int64, copy=False)
    if arr.size and arr.min() < -1:
        r, c = np.argwhere(arr < -1)[0]
        raise ConfigError(
            f"rankings[{position}][{r}, {c}] = {arr[r, c]}; expected an item index >= 0 or -1 (padding)"
        )
    return arr


def reciprocal_rank_fusion(
    rankings: Sequence[np.ndarray], k_out: int, c: float = 60.0
) -> tuple[np.ndarray, np.ndarray]:
    """Fuse ranked lists: (idx (n, k_out) int64, -1 pads; scores (n, k_out) float64, -inf pads).

    rankings: one (n_queries, k_i) array of item indices per retriever, best first,
    all with the same rows (k_i may differ). The item in column j has rank j + 1
    (a -1 pad holds its rank without an item). An item repeated within one row is
    refused. c: the RRF constant (60 in Cormack et al. 2009); >= 0.
    """
    k_out = _check_positive_int(k_out, "k_out")
    if not isinstance(c, int | float | np.integer | np.floating) or isinstance(c, bool) or not (
        math.isfinite(c) and c >= 0
    ):
        raise ConfigError(f"c={c!r}: expected a finite number >= 0")
    if isinstance(rankings, np.ndarray) and rankings.ndim == 2:
        raise ConfigError("rankings: one 2-D array; expected a sequence of (n_queries, k) arrays")
    arrays = [_as_ranking(r, i) for i, r in enumerate(rankings)]
    if not arrays:
        raise ConfigError("rankings: empty; expected at least one ranking")
    n = arrays[0].shape[0]
    if any(a.shape[0] != n for a in arrays):
        raise ConfigError(
            f"rankings have {[a.shape[0] for a in arrays]} rows; expected the same queries in each"
        )
    n_items = 1 + max((int(a.max()) for a in arrays if a.size), default=-1)
    rows, items, contrib = [], [], []
    for pos, a in enumerate(arrays):
        r, col = np.nonzero(a >= 0)
        it = a[r, col]
        key = r * max(n_items, 1) + it
        if np.unique(key).size != key.size:
            uniq, counts = np.unique(key, return_counts=True)
            dup = int(uniq[counts > 1][0])
            raise ConfigError(
                f"rankings[{pos}] row {dup // n_items} lists item {dup % n_items} more than once; "
                "expected each item at most once per list"
            )
        rows.append(r)
        items.append(it)
        contrib.append(1.0 / (c + col.astype(np.float64) + 1.0))
    r = np.concatenate(rows)
    it = np.concatenate(items)
    w = np.concatenate(contrib)
    idx = np.full((n, k_out), -1, dtype=np.int64)
    scores = np.full((n, k_out), -np.inf, dtype=np.float64)
    if r.size == 0:
        return idx, scores
    key, inverse = np.unique(r * n_items + it, return_inverse=True)
    # a fixed summation order (lists in the order given) keeps fused scores bit-stable
    total = np.zeros(key.size, dtype=np.float64)
    np.add.at(total, inverse, w)
    key_row, key_item = key // n_items, key % n_items
    order = np.lexsort((key_item, -total, key_row))
    key_row, key_item, total = key_row[order], key_item[order], total[order]
    starts = np.searchsorted(key_row, np.arange(n))
    rank = np.arange(key_row.size) - starts[key_row]
    keep = rank < k_out
    idx[key_row[keep], rank[keep]] = key_item[keep]
    scores[key_row[keep], rank[keep]] = total[keep]
    return idx, scores


def _as_scores(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise ConfigError(f"{name}: shape {arr.shape}; expected (n_queries, n_items) scores")
    bad = np.isnan(arr) | (arr == np.inf)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ConfigError(
            f"{name}[{r}, {c}] = {arr[r, c]} ({int(bad.sum())} such cell(s)); expected finite "
            "scores, or -inf for an item the retriever did not score"
        )
    return arr


def normalise_scores(scores: np.ndarray, normalise: str = "minmax") -> tuple[np.ndarray, np.ndarray]:
    """Per-row normalised scores with unscored (-inf) cells placed as the module table says.

    Returns (normalised float64, scored mask). A row with no scored cell is all 0.
    """
    if normalise not in NORMALISATIONS:
        raise ConfigError(
            f"normalise={normalise!r}: expected one of {', '.join(NORMALISATIONS)}"
        )
    x = _as_scores(scores, "scores")
    scored = np.isfinite(x)
    count = scored.sum(axis=1, keepdims=True)
    any_scored = count > 0
    if normalise == "minmax":
        lo = np.where(scored, x, np.inf).min(axis=1, keepdims=True)
        hi = np.where(scored, x, -np.inf).max(axis=1, keepdims=True)
        spread = np.where(any_scored, hi - lo, 0.0)
        z = np.where(spread > 0, (x - np.where(any_scored, lo, 0.0)) / np.where(spread > 0, spread, 1.0), 1.0)
        floor = np.zeros_like(spread)
    else:
        safe = np.where(scored, x, 0.0)
        mean = safe.sum(axis=1, keepdims=True) / np.maximum(count, 1)
        var = (np.where(scored, x - mean, 0.0) ** 2).sum(axis=1, keepdims=True) / np.maximum(count, 1)
        std = np.sqrt(var)
        z = np.where(std > 0, (x - mean) / np.where(std > 0, std, 1.0), 0.0)
        lowest = np.where(scored, z, np.inf).min(axis=1, keepdims=True)
        floor = np.where(std > 0, lowest, -1.0)
    out = np.where(scored, z, floor)
    out = np.where(any_scored, out, 0.0)  # nothing scored: no information, no order
    return out, scored


def convex_combination(
    dense_scores: np.ndarray,
    lexical_scores: np.ndarray,
    weight: float,
    normalise: str = "minmax",
) -> np.ndarray:
    """`(1 - weight) * norm(dense) + weight * norm(lexical)` per cell, (n_queries, n_items) float64.

    Both inputs are (n_queries, n_items) with the same items in the same columns;
    -inf marks an item the retriever gave no score (module docstring). An item that
    no input with positive weight scored is -inf in the output.
    """
    if (
        not isinstance(weight, int | float | np.integer | np.floating)
        or isinstance(weight, bool)
        or not 0.0 <= float(weight) <= 1.0
    ):
        raise ConfigError(
            f"weight={weight!r}: expected a number in [0, 1] (0: dense only, 1: lexical only)"
        )
    w = float(weight)
    d = _as_scores(dense_scores, "dense_scores")
    lx = _as_scores(lexical_scores, "lexical_scores")
    if d.shape != lx.shape:
        raise ConfigError(
            f"dense_scores has shape {d.shape}, lexical_scores {lx.shape}; expected the same "
            "(n_queries, n_items), columns the same items"
        )
    nd, sd = normalise_scores(d, normalise)
    nl, sl = normalise_scores(lx, normalise)
    out = (1.0 - w) * nd + w * nl
    reached = (sd if w < 1.0 else False) | (sl if w > 0.0 else False)
    return np.where(reached, out, -np.inf)


def scatter_scores(idx: np.ndarray, scores: np.ndarray, n_items: int) -> np.ndarray:
    """A (n_queries, n_items) float64 score matrix from top-k lists: the listed items get
    their scores, all others (and -1 pads) -inf. Turns any retriever's lists into an
    input of `convex_combination`."""
    n_items = _check_positive_int(n_items, "n_items")
    i = np.asarray(idx)
    s = np.asarray(scores, dtype=np.float64)
    if i.ndim != 2 or i.shape != s.shape:
        raise ConfigError(f"idx {i.shape} and scores {s.shape}: expected the same (n_queries, k) shape")
    if i.size and (i.min() < -1 or i.max() >= n_items):
        raise ConfigError(f"idx holds values in [{i.min()}, {i.max()}]; expected -1 or 0..{n_items - 1}")
    out = np.full((i.shape[0], n_items), -np.inf, dtype=np.float64)
    r, c = np.nonzero(i >= 0)
    out[r, i[r, c]] = s[r, c]
    return out


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best k columns per row of a score matrix: (idx (n, k) int64, scores (n, k) float64),
    ties to the lower column; -inf cells are never listed (pads: -1 / -inf)."""
    k = _check_positive_int(k, "k")
    x = np.asarray(scores, dtype=np.float64)
    if x.ndim != 2:
        raise ConfigError(f"scores: shape {x.shape}; expected (n_queries, n_items)")
    if np.isnan(x).any():
        raise ConfigError("scores hold NaN; expected numbers or -inf")
    n, m = x.shape
    kk = min(k, m)
    # stable sort of the negated scores: equal scores keep column order
    order = np.argsort(-x, axis=1, kind="stable")[:, :kk]
    best = np.take_along_axis(x, order, axis=1)
    idx = np.full((n, k), -1, dtype=np.int64)
    out = np.full((n, k), -np.inf, dtype=np.float64)
    listed = np.isfinite(best)
    idx[:, :kk] = np.where(listed, order, -1)
    out[:, :kk] = np.where(listed, best, -np.inf)
    return idx, out


def choose_weight(
    candidate_weights: Sequence[float], evaluate: Callable[[float], float]
) -> tuple[float, list[dict[str, float | bool]]]:
    """The candidate whose `evaluate(weight)` (a validation score, higher is better) is
    highest; ties go to the smaller candidate. Returns (best, table): one row per distinct
    candidate in increasing order, {"weight", "score", "chosen"}.

    Generic on purpose: `evaluate` decides what a weight means (the lexical weight of
    `convex_combination`, an RRF constant, ...) and which validation queries it scores;
    choose on validation queries, report on test queries.
    """
    try:
        values = [float(w) for w in candidate_weights]
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"candidate_weights={candidate_weights!r}: expected numbers") from exc
    if not values:
        raise ConfigError("candidate_weights: empty; expected at least one weight to try")
    bad = [w for w in values if not math.isfinite(w)]
    if bad:
        raise ConfigError(f"candidate_weights holds {bad}; expected finite numbers")
    table: list[dict[str, float | bool]] = []
    for w in sorted(set(values)):
        score = evaluate(w)
        try:
            s = float(score)
        except (TypeError, ValueError) as exc:
            raise EvaluationError(f"evaluate({w}) returned {score!r}; expected a number") from exc
        if math.isnan(s):
            raise EvaluationError(f"evaluate({w}) returned NaN; expected a validation score")
        table.append({"weight": w, "score": s, "chosen": False})
    best = table[0]
    for row in table[1:]:  # increasing weights: strictly better only, so ties keep the smaller
        if row["score"] > best["score"]:
            best = row
    best["chosen"] = True
    return float(best["weight"]), table
