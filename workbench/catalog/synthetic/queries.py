"""Search queries and their graded relevance judgements (qrels), with each query's ground truth."""

from __future__ import annotations

import json

import numpy as np
import polars as pl

from workbench.catalog.synthetic.attributes import (
    BRANDS,
    CATEGORY_SYNONYMS,
    COLOURS,
    LEAF_NAMES,
    LEAVES,
    MATERIAL_ADJ,
    MATERIALS,
    PATTERN_WORDS,
    PATTERNS,
    STYLES,
)
from workbench.catalog.synthetic.behaviour import _draw_users, _Sampler, _user_ids
from workbench.catalog.synthetic.config import SyntheticConfig
from workbench.catalog.synthetic.products import _id_width, _pick
from workbench.catalog.synthetic.randomness import _S_QREL0, _S_QUERY, _choice, _uniform


def _queries(cfg: SyntheticConfig, items: dict[str, np.ndarray], sampler: _Sampler,
             item_id_arr: np.ndarray) -> tuple[pl.DataFrame, pl.DataFrame, list[pl.DataFrame]]:
    """queries, truth/queries and qrels chunks."""
    nq, seed = cfg.n_queries, cfg.seed
    qidx = np.arange(nq, dtype=np.int64)
    u = _uniform(seed, _S_QUERY, qidx[:, None], np.arange(16)[None, :])
    personal = (u[:, 0] < 0.3) & (cfg.n_users > 0)
    user = np.minimum((u[:, 1] * max(cfg.n_users, 1)).astype(np.int64), max(cfg.n_users - 1, 0))
    # target item: from the user's taste for personal queries, else by popularity
    target = np.empty(nq, dtype=np.int64)
    pw = np.exp(items["popularity"] - items["popularity"].max())
    pcdf = np.cumsum(pw) / pw.sum()
    target[:] = np.minimum(np.searchsorted(pcdf, u[:, 2], side="right"), cfg.n_items - 1)
    if personal.any():
        pu = np.nonzero(personal)[0]
        users = _draw_users(cfg, user[pu])
        cat_logw, flat = sampler.prepare(users["taste"])
        target[pu] = sampler.draw(cat_logw, flat, np.arange(pu.size), None, u[pu, 3], u[pu, 4], u[pu, 5])
    k = _choice(u[:, 6], np.array([0.35, 0.4, 0.25])) + 1
    order = np.argsort(u[:, 7:10], axis=1)  # random order of modalities image/audio/text
    leaf_order = np.argsort(items["leaf"], kind="stable")
    leaf_bounds = np.searchsorted(items["leaf"][leaf_order], np.arange(len(LEAVES) + 1))
    uid_strs = _user_ids(np.arange(cfg.n_users), cfg.n_users) if cfg.n_users else []
    qrows, trows, qrels = [], [], []
    w = _id_width(nq, 5)
    for q in range(nq):
        t = int(target[q])
        leaf = int(items["leaf"][t])
        named: dict[str, int] = {}
        for m in order[q, : k[q]]:
            if m == 0:
                attr = "colour" if u[q, 10] < 0.6 else "pattern"
            elif m == 1:
                attr = "material"
            else:
                attr = "style" if u[q, 11] < 0.7 else "brand"
            named[attr] = int(items[attr][t])
        words = []
        if "style" in named:
            words.append(STYLES[named["style"]])
        if "colour" in named and u[q, 12] >= 0.25:
            words.append(COLOURS[named["colour"]])
        if "pattern" in named:
            words.append(PATTERN_WORDS[PATTERNS[named["pattern"]]][0])
        if "material" in named:
            words.append(MATERIAL_ADJ[MATERIALS[named["material"]]])
        cat_word = LEAF_NAMES[leaf] if u[q, 13] < 0.8 else _pick(CATEGORY_SYNONYMS[LEAF_NAMES[leaf]], u[q, 14])
        words.append(cat_word)
        if "colour" in named and u[q, 12] < 0.25:
            words += ["in", COLOURS[named["colour"]]]
        text = " ".join(words)
        if "brand" in named:
            text = f"{BRANDS[named['brand']]} {text}" if u[q, 15] < 0.5 else f"{text} by {BRANDS[named['brand']]}"
        qid = f"q{q:0{w}d}"
        qrows.append((qid, text, uid_strs[int(user[q])] if personal[q] else None))
        trows.append((qid, LEAVES[leaf], json.dumps({a: _value_name(a, v) for a, v in named.items()}, sort_keys=True),
                      len(named), str(item_id_arr[t])))
        members = leaf_order[leaf_bounds[leaf] : leaf_bounds[leaf + 1]]
        grade = np.zeros(members.size, dtype=np.int8)
        for attr, v in named.items():
            grade += (items[attr][members] == v).astype(np.int8)
        pos = members[grade > 0]
        zeros = members[grade == 0]
        if zeros.size:  # a few graded non-matches of the right category (hard negatives)
            zu = _uniform(seed, _S_QREL0, q, zeros)
            zeros = np.sort(zeros[np.argsort(zu, kind="stable")[:3]])
        sel = np.concatenate([pos, zeros])
        g = np.concatenate([grade[grade > 0], np.zeros(zeros.size, dtype=np.int8)])
        o = np.lexsort((sel, -g.astype(np.int64)))
        qrels.append(pl.DataFrame({"query_id": [qid] * sel.size, "item_id": item_id_arr[sel[o]], "relevance": g[o]},
                                  schema={"query_id": pl.Utf8, "item_id": pl.Utf8, "relevance": pl.Int8}))
    queries = pl.DataFrame(qrows, schema={"query_id": pl.Utf8, "text": pl.Utf8, "user_id": pl.Utf8}, orient="row")
    queries = queries.with_columns(pl.lit(None, pl.Utf8).alias("image"), pl.lit(None, pl.Utf8).alias("audio"))
    truth = pl.DataFrame(trows, schema={"query_id": pl.Utf8, "category": pl.Utf8, "named": pl.Utf8,
                                        "n_named": pl.Int8, "target_item_id": pl.Utf8}, orient="row")
    return queries, truth, qrels


def _value_name(attr: str, v: int) -> str:
    return {"colour": COLOURS, "pattern": PATTERNS, "material": MATERIALS, "style": STYLES, "brand": BRANDS}[attr][v]
