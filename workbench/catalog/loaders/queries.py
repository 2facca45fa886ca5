"""Derived graded queries for catalogs that have attributes but no real queries.

The rule (one place, seeded, documented in `RULE`):

1. Candidate attributes are the product type (by default the last level of
   `category`) plus a few attribute keys from the `attributes` JSON (for
   fashion-products: baseColour, gender, usage, season).
2. A query is drawn by picking a product type uniformly among types with at
   least `min_type_size` products, then an anchor product of that type, then
   `k` (2 or 3) of the anchor's other attribute values. The anchor guarantees at
   least one fully relevant product.
3. The text is written from a few fixed templates in natural word order
   ("navy blue men casual shirts", "black watches for women"), lower case, with
   repeated words dropped ("casual casual shoes" -> "casual shoes").
4. A candidate whose text is, word for word, a substring of any product title
   (case- and space-insensitive) or duplicates an earlier query is rejected and
   another is drawn, so no query is copied from a title.
5. Grades: a product whose type differs from the query's gets 0. A product of the
   query's type gets 1 + floor(2 * m / k), where m of the query's k other
   attributes match: with k=2, 1/2/3 for 0/1/2 matches; with k=3, 1/1/2/3 for
   0/1/2/3 matches. Every product of the query's type is graded (>= 1); products
   of other types are 0 and are not written to qrels (absent means 0).

6. How many: `DerivedQueryConfig.n_queries`, by default (None)
   `default_query_count(n)` = min(1000, n) where n is the number of products of a
   queryable type (at least `min_type_size` products): 1,000 for any catalog of
   1,000 such products or more, so a 20 % test split holds about 200 queries
   (203 on the first 3,000 fashion products), enough to tell systems apart; one
   query per product below that, because a small catalog holds few distinct
   (type, attribute values) combinations: asked for 1,000, 300 fashion products
   give only 645 distinct queries after 20,000 draws, most of them rejected as
   duplicates. An explicit count is drawn as asked (until the attempt budget
   `n_queries * max_attempts_factor` runs out; `info` says how many were made).

These are synthetic queries built from catalog metadata, not real user queries:
notebooks that use them must say so (print `RULE`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from workbench.errors import CatalogError, ConfigError

RULE = (
    "Queries are derived from catalog attributes, not written by users: each names a product type "
    "and 2-3 attribute values of an anchor product (seeded), phrased from fixed templates; no query "
    "is a word-for-word substring of any title. A product of another type has grade 0; one of the "
    "query's type has 1 + floor(2*m/k) where m of the query's k other attributes match (3 = all). "
    "By default min(1000, products of a queryable type) queries are drawn."
)

# Values that mean "unknown" in real catalogs (fashion-products writes NA).
_MISSING = {"", "na", "n/a", "none", "null", "nan", "unknown"}

# Fixed word order of attribute kinds inside a query; unknown kinds go before the type.
_ORDER = ("colour", "color", "basecolour", "gender", "season", "usage")
_TEMPLATES = (
    "{attrs} {type}",  # "navy blue men casual shirts"
    "{attrs} {type}",  # the plain form twice as likely
    "{attrs} {type} for {gender}",  # "black casual watches for women" (plain form without gender)
)

# Gentle surface forms of common fashion values (kept tiny on purpose).
_SURFACE = {"tshirts": "t-shirts", "tshirt": "t-shirt", "men": "men", "women": "women"}


DEFAULT_N_QUERIES = 1000  # the most queries drawn by default (rule 6)


def default_query_count(n_queryable_products: int, cap: int = DEFAULT_N_QUERIES) -> int:
    """Rule 6: min(cap, one query per product of a queryable type), at least 1."""
    return max(1, min(cap, int(n_queryable_products)))


@dataclass
class DerivedQueryConfig:
    # None: default_query_count(products of a queryable type), i.e. min(1000, that count)
    n_queries: int | None = None
    seed: int = 0
    # attribute keys used in queries; None: every attribute key whose values are short strings
    # with 2..64 distinct values present on at least half the products
    attribute_keys: tuple[str, ...] | None = None
    # "category_leaf" (last level of `category`) or the name of an attribute key
    type_from: str = "category_leaf"
    k_choices: tuple[int, ...] = (2, 3)  # how many non-type attributes a query names
    min_type_size: int = 5  # product types with fewer products are never queried
    max_attempts_factor: int = 20  # give up after n_queries * this many rejected candidates
    query_prefix: str = "dq"
    extra_missing: tuple[str, ...] = field(default_factory=tuple)


def _norm_words(text: str) -> str:
    return " ".join(re.findall(r"[0-9a-z]+", text.lower()))


def _clean(value: object, missing: set[str]) -> str | None:
    if value is None:
        return None
    s = str(value).strip()
    return None if s.lower() in missing else s


def _attribute_table(products: pl.DataFrame, cfg: DerivedQueryConfig) -> tuple[pl.DataFrame, list[str]]:
    """item_id, type and one Utf8 column per chosen attribute key (nulls for missing)."""
    missing = _MISSING | {m.lower() for m in cfg.extra_missing}
    if "item_id" not in products.columns:
        raise CatalogError("products: column item_id is missing (derived queries need it)")
    attrs = products.get_column("attributes") if "attributes" in products.columns else None
    parsed: list[dict] = []
    if attrs is not None:
        for i, raw in enumerate(attrs.to_list()):
            if raw is None:
                parsed.append({})
                continue
            if isinstance(raw, dict):
                parsed.append(raw)
                continue
            try:
                obj = json.loads(raw)
            except (TypeError, json.JSONDecodeError) as exc:
                raise CatalogError(
                    f"products row {i} (item_id={products['item_id'][i]!r}): column attributes is not a "
                    f"JSON object string ({exc})"
                ) from exc
            parsed.append(obj if isinstance(obj, dict) else {})
    else:
        parsed = [{} for _ in range(products.height)]

    if cfg.type_from == "category_leaf":
        if "category" not in products.columns:
            raise CatalogError("products: column category is missing (type_from='category_leaf')")
        types = [None if c is None else _clean(str(c).split("/")[-1], missing) for c in products["category"]]
    else:
        types = [_clean(p.get(cfg.type_from), missing) for p in parsed]

    if cfg.attribute_keys is None:
        keys: list[str] = []
        all_keys = sorted({k for p in parsed for k in p})
        for k in all_keys:
            if k == cfg.type_from:
                continue
            # numbers (years, prices) make poor query words: keep string values only
            cleaned = [_clean(p[k], missing) for p in parsed if isinstance(p.get(k), str)]
            present = [v for v in cleaned if v is not None]
            distinct = set(present)
            if len(present) >= 0.5 * len(parsed) and 2 <= len(distinct) <= 64 and max(map(len, distinct)) <= 30:
                keys.append(k)
    else:
        keys = [k for k in cfg.attribute_keys if k != cfg.type_from]
    if not keys:
        raise ConfigError("derived queries: no usable attribute keys (need short categorical attributes)")
    data = {"item_id": products["item_id"].cast(pl.Utf8), "type": types}
    for k in keys:
        data[k] = [_clean(p.get(k), missing) for p in parsed]
    table = pl.DataFrame(data, schema={"item_id": pl.Utf8, "type": pl.Utf8, **{k: pl.Utf8 for k in keys}})
    return table, keys


def _key_rank(key: str) -> int:
    low = key.lower()
    return _ORDER.index(low) if low in _ORDER else -1


def _surface(value: str) -> str:
    low = value.lower()
    return _SURFACE.get(low, low)


def _render(type_value: str, chosen: list[tuple[str, str]], template: str) -> str:
    ordered = sorted(chosen, key=lambda kv: _key_rank(kv[0]))
    words = [_surface(v) for _, v in ordered]
    gender = [v for k, v in ordered if k.lower() == "gender"]
    if "{gender}" in template:
        if not gender or gender[0].lower() == "unisex":  # "for unisex" reads badly
            template = "{attrs} {type}"
        else:
            words = [_surface(v) for k, v in ordered if k.lower() != "gender"]
    text = template.format(
        attrs=" ".join(words),
        type=_surface(type_value),
        gender=_surface(gender[0]) if gender else "",
    )
    # drop repeated words ("casual casual shoes") while keeping order
    seen: set[str] = set()
    out = []
    for w in text.split():
        if w in seen:
            continue
        seen.add(w)
        out.append(w)
    return " ".join(out)


def grade_products(table: pl.DataFrame, type_value: str, chosen: list[tuple[str, str]]) -> np.ndarray:
    """Grades 0..3 of every row of `table` (the `_attribute_table`) for one query."""
    k = len(chosen)
    same_type = (table["type"] == type_value).fill_null(False).to_numpy()
    matches = np.zeros(table.height, dtype=np.int64)
    for key, value in chosen:
        matches += (table[key] == value).fill_null(False).to_numpy().astype(np.int64)
    grade = 1 + (2 * matches) // k
    return np.where(same_type, grade, 0).astype(np.int8)


def derive_queries(
    products: pl.DataFrame | pl.LazyFrame, config: DerivedQueryConfig | None = None
) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    """Build (queries, qrels, info) from product attributes by the rule in this module's docstring.

    `queries` has the catalog's query columns (query_id, text, user_id, image, audio);
    `qrels` has query_id, item_id, relevance (Int8, 1..3; absent pairs are 0);
    `info` records the rule, the keys used, counts and how many candidates were rejected.
    """
    cfg = config or DerivedQueryConfig()
    if cfg.n_queries is not None and (
        not isinstance(cfg.n_queries, int) or isinstance(cfg.n_queries, bool) or cfg.n_queries < 1
    ):
        raise ConfigError(
            f"derived queries: n_queries={cfg.n_queries!r}: expected an integer >= 1, or None "
            f"for the default (min({DEFAULT_N_QUERIES}, products of a queryable type))"
        )
    if not cfg.k_choices or min(cfg.k_choices) < 1:
        raise ConfigError(f"derived queries: k_choices={cfg.k_choices}: expected positive integers")
    df = products.collect() if isinstance(products, pl.LazyFrame) else products
    table, keys = _attribute_table(df, cfg)
    titles = [_norm_words(t) for t in (df["title"].to_list() if "title" in df.columns else []) if t]
    title_blob = "\n".join(f" {t} " for t in titles)

    type_counts = table.filter(pl.col("type").is_not_null()).group_by("type").len()
    types = sorted(type_counts.filter(pl.col("len") >= cfg.min_type_size)["type"].to_list())
    if not types:
        raise CatalogError(
            f"derived queries: no product type has >= {cfg.min_type_size} products (type_from={cfg.type_from!r})"
        )
    queryable = int(type_counts.filter(pl.col("len") >= cfg.min_type_size)["len"].sum())
    n_wanted = default_query_count(queryable) if cfg.n_queries is None else cfg.n_queries
    grouped = table.with_row_index().group_by("type").agg("index")
    rows_by_type = dict(zip(grouped["type"].to_list(), grouped["index"].to_list(), strict=True))
    rng = np.random.default_rng(cfg.seed)
    seen_texts: set[str] = set()
    seen_specs: set[tuple] = set()
    queries: list[dict] = []
    qrel_parts: list[pl.DataFrame] = []
    rejected = {"copied_from_title": 0, "duplicate": 0, "too_few_attributes": 0}
    budget = n_wanted * cfg.max_attempts_factor
    item_ids = table["item_id"]
    while len(queries) < n_wanted and budget > 0:
        budget -= 1
        type_value = types[int(rng.integers(len(types)))]
        members = rows_by_type[type_value]
        anchor = table.row(int(members[int(rng.integers(len(members)))]), named=True)
        available = [(k, anchor[k]) for k in keys if anchor[k] is not None]
        k = int(cfg.k_choices[int(rng.integers(len(cfg.k_choices)))])
        if len(available) < k:
            rejected["too_few_attributes"] += 1
            continue
        pick = sorted(rng.choice(len(available), size=k, replace=False).tolist())
        chosen = [available[i] for i in pick]
        spec = (type_value, tuple(sorted(chosen)))
        if spec in seen_specs:
            rejected["duplicate"] += 1
            continue
        template = _TEMPLATES[int(rng.integers(len(_TEMPLATES)))]
        text = _render(type_value, chosen, template)
        norm = _norm_words(text)
        if norm in seen_texts:
            rejected["duplicate"] += 1
            continue
        if f" {norm} " in title_blob:
            rejected["copied_from_title"] += 1
            continue
        seen_specs.add(spec)
        seen_texts.add(norm)
        qid = f"{cfg.query_prefix}{len(queries):05d}"
        queries.append({"query_id": qid, "text": text, "user_id": None, "image": None, "audio": None})
        grades = grade_products(table, type_value, chosen)
        hit = np.flatnonzero(grades > 0)
        qrel_parts.append(
            pl.DataFrame(
                {
                    "query_id": [qid] * len(hit),
                    "item_id": item_ids.gather(hit),
                    "relevance": grades[hit],
                },
                schema={"query_id": pl.Utf8, "item_id": pl.Utf8, "relevance": pl.Int8},
            )
        )
    q_schema = {"query_id": pl.Utf8, "text": pl.Utf8, "user_id": pl.Utf8, "image": pl.Utf8, "audio": pl.Utf8}
    queries_df = pl.DataFrame(queries, schema=q_schema)
    qrels_df = (
        pl.concat(qrel_parts)
        if qrel_parts
        else pl.DataFrame(schema={"query_id": pl.Utf8, "item_id": pl.Utf8, "relevance": pl.Int8})
    )
    info = {
        "rule": RULE,
        "seed": cfg.seed,
        "type_from": cfg.type_from,
        "attribute_keys": keys,
        "n_queries": queries_df.height,
        "n_requested": n_wanted,
        "n_rule": (
            f"default: min({DEFAULT_N_QUERIES}, {queryable} products of a queryable type)"
            if cfg.n_queries is None
            else "as configured"
        ),
        "rejected": rejected,
        "grade_counts": {str(g): int(n) for g, n in qrels_df.group_by("relevance").len().sort("relevance").iter_rows()},
    }
    return queries_df, qrels_df, info
