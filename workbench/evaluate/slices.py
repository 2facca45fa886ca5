"""Where each system helps: metrics per query slice, per item slice, and the worst queries.

* Query slices: which attributes a query names and how many. A synthetic catalog's
  ground truth says so exactly (`truth/queries.parquet`, column `named`); elsewhere a
  query names an attribute when one of that attribute's values (from the products'
  `attributes` and `brand`) occurs in its text as whole words.
* Item slices: the relevant items of each query grouped by a property of the item
  (top category, missing image, missing audio); the slice's recall@k is the share of
  its relevant items that a system put in the top k.
* The worst queries of a system, with what it returned and what it missed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl
import scipy.sparse as sp

from workbench.errors import EvaluationError

MIN_VALUE_CHARS = 3  # shorter attribute values ("xl", "m") match too much text by accident


def _json_object(text: str | None) -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def attribute_vocabulary(products: pl.DataFrame) -> dict[str, set[str]]:
    """attribute -> its lower-cased values in the products (`attributes` JSON and `brand`)."""
    vocab: dict[str, set[str]] = {}
    for raw in products.get_column("attributes").to_list() if "attributes" in products.columns else []:
        for key, value in _json_object(raw).items():
            if isinstance(value, str | int | float) and not isinstance(value, bool):
                text = str(value).strip().lower()
                if len(text) >= MIN_VALUE_CHARS:
                    vocab.setdefault(str(key), set()).add(text)
    if "brand" in products.columns:
        brands = {b.strip().lower() for b in products["brand"].drop_nulls().to_list() if len(b.strip()) >= MIN_VALUE_CHARS}
        if brands:
            vocab["brand"] = brands
    return vocab


def named_attributes(
    queries: pl.DataFrame, products: pl.DataFrame | None = None, truth_queries: pl.DataFrame | None = None
) -> pl.DataFrame:
    """query_id, named (sorted list of attribute names), n_named, one row per query of `queries`."""
    if truth_queries is not None and "named" in truth_queries.columns:
        named = {qid: sorted(_json_object(n)) for qid, n in zip(truth_queries["query_id"], truth_queries["named"], strict=True)}
        rows = [named.get(qid, []) for qid in queries["query_id"]]
    else:
        if products is None:
            raise EvaluationError("named_attributes: products are needed when there is no ground truth")
        patterns = {
            a: re.compile(r"\b(?:" + "|".join(re.escape(v) for v in sorted(vals, key=len, reverse=True)) + r")\b")
            for a, vals in attribute_vocabulary(products).items()
        }
        rows = [sorted(a for a, p in patterns.items() if p.search(str(text).lower())) for text in queries["text"]]
    return pl.DataFrame({"query_id": queries["query_id"], "named": rows, "n_named": [len(r) for r in rows]},
                        schema={"query_id": pl.Utf8, "named": pl.List(pl.Utf8), "n_named": pl.Int64})


def query_slice_table(
    per_query: Mapping[str, Mapping[str, np.ndarray]], slices: pl.DataFrame, metric: str = "ndcg@10"
) -> pl.DataFrame:
    """Mean `metric` per system on each query slice: "names <attribute>" and "<n> attribute(s)".

    per_query: system -> metric -> per-query values, in the row order of `slices`.
    """
    n = slices.height
    labels: dict[str, np.ndarray] = {}
    named = slices["named"].to_list()
    for attribute in sorted({a for row in named for a in row}):
        labels[f"names {attribute}"] = np.array([attribute in row for row in named])
    for count in sorted(set(slices["n_named"].to_list())):
        labels[f"{count} attribute{'s' if count != 1 else ''} named"] = slices["n_named"].to_numpy() == count
    rows = []
    for label, mask in labels.items():
        row = {"slice": label, "n_queries": int(mask.sum())}
        for system, metrics in per_query.items():
            values = np.asarray(metrics[metric], dtype=np.float64)
            if len(values) != n:
                raise EvaluationError(f"{system}: {len(values)} per-query values for {n} queries")
            chosen = values[mask]
            row[system] = float(np.nanmean(chosen)) if np.isfinite(chosen).any() else None
        rows.append(row)
    return pl.DataFrame(rows)


def item_slice_table(
    rankings: Mapping[str, np.ndarray], relevance: sp.csr_matrix, item_slices: Mapping[str, np.ndarray], k: int = 10
) -> pl.DataFrame:
    """Recall@k of each item slice's relevant items, per system.

    rankings: system -> (n_queries, >=k) item indices (-1 pads); item_slices: slice
    label -> (n_items,) bool. A slice's recall is pooled over queries: relevant items of
    the slice found in the top k / relevant items of the slice.
    """
    rel = sp.csr_matrix(relevance)
    rel.eliminate_zeros()
    q_idx = np.repeat(np.arange(rel.shape[0]), np.diff(rel.indptr))
    i_idx = rel.indices
    n_items = np.int64(rel.shape[1])
    relevant_keys = q_idx.astype(np.int64) * n_items + i_idx
    found_keys = {}
    for system, ranked in rankings.items():
        top = np.asarray(ranked)[:, :k]
        r, c = np.nonzero(top >= 0)
        found_keys[system] = r.astype(np.int64) * n_items + top[r, c]  # (query, item) of each listed item
    rows = []
    for label, in_slice in item_slices.items():
        mask = np.asarray(in_slice, dtype=bool)[i_idx]
        row = {"slice": label, "relevant": int(mask.sum())}
        for system, keys in found_keys.items():
            # an empty slice has no recall (None), not 0
            row[system] = float(np.isin(relevant_keys[mask], keys).mean()) if mask.any() else None
        rows.append(row)
    return pl.DataFrame(rows)


def product_slices(products: pl.DataFrame) -> dict[str, np.ndarray]:
    """Item slices of a products frame (catalog order): top category, missing image, missing audio."""
    top = products["category"].str.split("/").list.first().fill_null("").to_numpy()
    slices = {f"category {c}": top == c for c in sorted(set(top.tolist())) if c}
    for col in ("image", "audio"):
        if col in products.columns:
            missing = products[col].is_null().to_numpy()
            if missing.any() and not missing.all():
                slices[f"no {col}"] = missing
                slices[f"with {col}"] = ~missing
    return slices


def worst_queries(
    values: np.ndarray,
    ranked: np.ndarray,
    relevance: sp.csr_matrix,
    query_texts: Sequence[str],
    item_titles: Sequence[str],
    n: int = 10,
    shown: int = 5,
) -> pl.DataFrame:
    """The `n` queries with the lowest per-query `values`: what was returned, what was missed."""
    values = np.asarray(values, dtype=np.float64)
    order = [i for i in np.lexsort((np.arange(len(values)), np.nan_to_num(values, nan=np.inf))) if np.isfinite(values[i])]
    rel = sp.csr_matrix(relevance)
    rows = []
    for q in order[:n]:
        grades = dict(zip(rel.indices[rel.indptr[q]:rel.indptr[q + 1]].tolist(),
                          rel.data[rel.indptr[q]:rel.indptr[q + 1]].tolist(), strict=True))
        top = [int(i) for i in ranked[q][:shown] if i >= 0]
        missed = sorted((i for i in grades if grades[i] > 0 and i not in set(ranked[q].tolist())),
                        key=lambda i: (-grades[i], i))[:3]
        rows.append({
            "query": query_texts[q],
            "value": float(values[q]),
            "returned": [f"{item_titles[i]} ({int(grades.get(i, 0))})" for i in top],
            "missed": [f"{item_titles[i]} ({int(grades[i])})" for i in missed],
        })
    return pl.DataFrame(rows, schema={"query": pl.Utf8, "value": pl.Float64, "returned": pl.List(pl.Utf8),
                                      "missed": pl.List(pl.Utf8)})
