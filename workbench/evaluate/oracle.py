"""The synthetic catalog's oracle: the generator's own next-item probabilities, a Bayes-optimal ranker.

It reads the ground truth (``truth/items.parquet``, ``truth/users.parquet``) that
:mod:`workbench.catalog.synthetic` writes, and scores what a perfect ranker would.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl

from workbench.catalog.synthetic.attributes import (
    COLOURS,
    COMPLEMENT_IDX,
    LEAVES,
    MATERIALS,
    STYLES,
    TASTE_OFFSETS,
)
from workbench.errors import EvaluationError

__all__ = ["oracle_scores"]


def oracle_scores(truth: Mapping[str, pl.DataFrame], user_ids: Sequence[str],
                  last_item_ids: Sequence[str | None]) -> np.ndarray:
    """The generator's own log P(next item | user taste, previous item): a Bayes-optimal ranker.

    Returns (len(user_ids), n_items) float64 in the row order of ``truth["items"]``.
    ``last_item_ids[i] = None`` means no previous item (the user's first visit).
    """
    items, users = truth["items"], truth["users"]
    if len(user_ids) != len(last_item_ids):
        raise EvaluationError(f"oracle_scores: {len(user_ids)} user_ids but {len(last_item_ids)} last_item_ids")
    leaf = items.get_column("category").replace_strict(list(LEAVES), list(range(len(LEAVES))), return_dtype=pl.Int64).to_numpy()
    o = TASTE_OFFSETS
    cols = {
        "colour": (COLOURS, o["colour"]), "material": (MATERIALS, o["material"]), "style": (STYLES, o["style"]),
    }
    feat = [leaf]
    for name, (vals, off) in cols.items():
        feat.append(items.get_column(name).replace_strict(list(vals), list(range(len(vals))), return_dtype=pl.Int64).to_numpy() + off)
    pop = items.get_column("popularity").to_numpy().astype(np.float64)
    row_of_user = {u: i for i, u in enumerate(users.get_column("user_id").to_list())}
    row_of_item = {it: i for i, it in enumerate(items.get_column("item_id").to_list())}
    missing = [u for u in user_ids if u not in row_of_user]
    if missing:
        raise EvaluationError(f"oracle_scores: user_id {missing[0]!r} is not in truth/users.parquet")
    urows = np.array([row_of_user[u] for u in user_ids], dtype=np.int64)
    taste = np.stack(list(users.get_column("taste").to_numpy()))[urows].astype(np.float32).astype(np.float64)
    p = users.get_column("p_complement").to_numpy().astype(np.float32).astype(np.float64)[urows]
    s = pop[None, :] + sum(taste[:, f] for f in feat)  # (U, N)
    lse_all = _logsumexp(s, axis=1)
    out = s - lse_all[:, None]
    leaf_present = np.bincount(leaf, minlength=len(LEAVES)) > 0
    for i, last in enumerate(last_item_ids):
        if last is None:
            continue
        if last not in row_of_item:
            raise EvaluationError(f"oracle_scores: last item {last!r} is not in truth/items.parquet")
        comp = int(COMPLEMENT_IDX[leaf[row_of_item[last]]])
        if not leaf_present[comp]:
            continue
        in_comp = leaf == comp
        lse_c = _logsumexp(s[i, in_comp], axis=0)
        glob = np.log1p(-p[i]) + out[i]
        within = np.where(in_comp, math.log(p[i]) + s[i] - lse_c, -np.inf)
        out[i] = np.logaddexp(glob, within)
    return out


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    m = np.max(x, axis=axis, keepdims=True)
    return (np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m).squeeze(axis)
