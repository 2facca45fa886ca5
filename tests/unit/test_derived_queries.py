"""The derived-query rule: seeded, graded 0-3 by attribute matches, never copied from a title."""

from __future__ import annotations

import json
import re

import polars as pl
import pytest

from workbench.catalog.loaders.queries import (
    RULE,
    DerivedQueryConfig,
    _attribute_table,
    derive_queries,
    grade_products,
)
from workbench.errors import CatalogError, ConfigError

COLOURS = ["Navy Blue", "Black", "White", "Red"]
GENDERS = ["Men", "Women"]
USAGES = ["Casual", "Formal"]
TYPES = ["Shirts", "Watches", "Casual Shoes"]


def _products(n_copies: int = 2, title_phrase: str | None = None) -> pl.DataFrame:
    rows = []
    i = 0
    for t in TYPES:
        for c in COLOURS:
            for g in GENDERS:
                for u in USAGES:
                    for _ in range(n_copies):
                        title = title_phrase or f"Brand{i % 7} {g} {c} {t}"
                        rows.append({
                            "item_id": f"p{i}",
                            "title": title,
                            "category": f"Apparel/Things/{t}",
                            "attributes": json.dumps({"baseColour": c, "gender": g, "usage": u, "year": 2011 + i % 3}),
                        })
                        i += 1
    return pl.DataFrame(rows)


def _norm(text: str) -> str:
    return " ".join(re.findall(r"[0-9a-z]+", text.lower()))


def test_same_seed_same_queries_other_seed_differs() -> None:
    products = _products()
    cfg = DerivedQueryConfig(n_queries=20, seed=3)
    q1, r1, _ = derive_queries(products, cfg)
    q2, r2, _ = derive_queries(products.lazy(), cfg)
    assert q1.equals(q2) and r1.equals(r2)
    q3, _, _ = derive_queries(products, DerivedQueryConfig(n_queries=20, seed=4))
    assert q3["text"].to_list() != q1["text"].to_list()
    assert q1["query_id"].to_list()[:2] == ["dq00000", "dq00001"]


def test_grades_follow_the_rule_exactly() -> None:
    products = _products(n_copies=1)
    table, keys = _attribute_table(products, DerivedQueryConfig())
    assert keys == ["baseColour", "gender", "usage"]  # numeric year is not used as a query word
    chosen = [("baseColour", "Navy Blue"), ("gender", "Men")]
    grades = grade_products(table, "Shirts", chosen)
    attrs = [json.loads(a) for a in products["attributes"]]
    for g, a, cat in zip(grades, attrs, products["category"], strict=True):
        m = (a["baseColour"] == "Navy Blue") + (a["gender"] == "Men")
        expected = 0 if not cat.endswith("/Shirts") else 1 + (2 * m) // 2
        assert g == expected
    # k=3: 0/1/2/3 matches -> 1/1/2/3
    chosen3 = [("baseColour", "Black"), ("gender", "Women"), ("usage", "Formal")]
    grades3 = grade_products(table, "Watches", chosen3)
    for g, a, cat in zip(grades3, attrs, products["category"], strict=True):
        m = (a["baseColour"] == "Black") + (a["gender"] == "Women") + (a["usage"] == "Formal")
        assert g == (0 if not cat.endswith("/Watches") else [1, 1, 2, 3][m])


def test_every_query_has_a_fully_relevant_product_and_qrels_cover_the_type() -> None:
    products = _products()
    queries, qrels, info = derive_queries(products, DerivedQueryConfig(n_queries=25, seed=0))
    assert queries.height == 25
    assert queries["text"].is_unique().all()
    per_q = qrels.group_by("query_id").agg(pl.col("relevance").max().alias("best"), pl.len().alias("n"))
    assert per_q["best"].min() == 3
    # every product of the query's type is graded >= 1 (8 colours*genders*usages*2 copies per type)
    assert set(per_q["n"].to_list()) == {len(COLOURS) * len(GENDERS) * len(USAGES) * 2}
    assert qrels.schema["relevance"] == pl.Int8
    assert info["rule"] == RULE and info["n_queries"] == 25
    assert sum(info["grade_counts"].values()) == qrels.height


def test_queries_read_naturally() -> None:
    queries, _, _ = derive_queries(_products(), DerivedQueryConfig(n_queries=30, seed=0))
    for text in queries["text"]:
        words = text.split()
        assert text == text.lower() and len(words) == len(set(words))  # no "casual casual shoes"
        assert any(t in text for t in ("shirts", "watches", "shoes"))  # ends with or names the type
    assert any(" for men" in t or " for women" in t for t in queries["text"])


def test_queries_are_never_copied_from_a_title() -> None:
    # every title is a phrase the templates could produce: candidates equal to it must be rejected
    products = _products(title_phrase="navy blue men casual shirts")
    products = products.with_columns(
        pl.when(pl.int_range(pl.len()) % 2 == 0)
        .then(pl.lit("black women formal watches for women"))
        .otherwise(pl.col("title"))
        .alias("title")
    )
    queries, _, info = derive_queries(products, DerivedQueryConfig(n_queries=60, seed=0, k_choices=(2, 3)))
    titles = {f" {_norm(t)} " for t in products["title"]}
    for text in queries["text"]:
        assert not any(f" {_norm(text)} " in t for t in titles), text
    assert info["rejected"]["copied_from_title"] > 0


def test_real_catalog_shapes_and_errors() -> None:
    bad = pl.DataFrame({"item_id": ["a"], "title": ["t"], "category": ["x/y"], "attributes": ["not json"]})
    with pytest.raises(CatalogError, match=r"item_id='a'.*attributes is not a JSON object"):
        derive_queries(bad)
    no_attrs = pl.DataFrame({"item_id": ["a", "b"], "title": ["t", "u"], "category": ["x/y", "x/y"]})
    with pytest.raises(ConfigError, match="no usable attribute keys"):
        derive_queries(no_attrs)
    with pytest.raises(ConfigError, match="n_queries"):
        derive_queries(_products(), DerivedQueryConfig(n_queries=0))
    # a type stored as an attribute instead of the category
    p = _products().with_columns(
        pl.col("attributes").map_elements(
            lambda a: json.dumps({**json.loads(a), "kind": "mug"}), return_dtype=pl.Utf8
        )
    )
    q, r, info = derive_queries(p, DerivedQueryConfig(n_queries=5, type_from="kind"))
    assert info["type_from"] == "kind" and q.height == 5
    assert all("mug" in t for t in q["text"])


def test_missing_values_are_never_query_words() -> None:
    p = _products().with_columns(
        pl.col("attributes").map_elements(
            lambda a: json.dumps({**json.loads(a), "usage": "NA"}), return_dtype=pl.Utf8
        )
    )
    q, _, _ = derive_queries(p, DerivedQueryConfig(n_queries=20, attribute_keys=("baseColour", "gender", "usage")))
    assert not any(" na " in f" {t} " for t in q["text"])


def _many_products() -> pl.DataFrame:
    """4 types x 10 colours x 2 genders x 3 usages x 5 seasons = 1,200 products, each once:
    about 1,900 distinct (type, attribute values) queries, more than the default asks for."""
    colours = [f"Colour{c}" for c in "ABCDEFGHIJ"]
    rows = []
    for t in ("Shirts", "Watches", "Jeans", "Sandals"):
        for c in colours:
            for g in GENDERS:
                for u in ("Casual", "Formal", "Sports"):
                    for s in ("Summer", "Winter", "Fall", "Spring", "Monsoon"):
                        rows.append({
                            "item_id": f"p{len(rows)}",
                            "title": f"Brand {t} {len(rows)}",
                            "category": f"Apparel/Things/{t}",
                            "attributes": json.dumps({"baseColour": c, "gender": g, "usage": u, "season": s}),
                        })
    return pl.DataFrame(rows)


def test_default_count_is_min_1000_and_one_per_queryable_product() -> None:
    from workbench.catalog.loaders.queries import DEFAULT_N_QUERIES, default_query_count

    assert DEFAULT_N_QUERIES == 1000
    assert [default_query_count(n) for n in (0, 1, 96, 999, 1000, 3000)] == [1, 1, 96, 999, 1000, 1000]
    assert DerivedQueryConfig().n_queries is None  # None: the rule decides from the catalog

    # 1,200 products: the default asks for 1,000 and gets them, ~200 of them in a 20 % test split
    from workbench.catalog.splits import split_queries

    q, qrels, info = derive_queries(_many_products())
    assert info["n_requested"] == 1000 and q.height == 1000
    assert info["n_rule"] == "default: min(1000, 1200 products of a queryable type)"
    assert q["query_id"].is_unique().all() and q["text"].is_unique().all()
    assert 170 <= len(split_queries(q["query_id"].to_list(), test_fraction=0.2, seed=0).test) <= 230
    # seeded: the same 1,000 again
    q2, r2, _ = derive_queries(_many_products())
    assert q.equals(q2) and qrels.equals(r2)


def test_default_count_scales_down_to_the_queryable_products() -> None:
    products = _products()  # 3 types x 32 products = 96, all queryable
    rare = pl.DataFrame([{  # a type with 2 products (< min_type_size 5): never queried, not counted
        "item_id": f"r{i}", "title": f"Rare mug {i}", "category": "Home/Things/Mugs",
        "attributes": json.dumps({"baseColour": "Red", "gender": "Men", "usage": "Casual", "year": 2012}),
    } for i in range(2)])
    q, _, info = derive_queries(pl.concat([products, rare]))
    assert info["n_requested"] == 96
    assert info["n_rule"] == "default: min(1000, 96 products of a queryable type)"
    assert 0 < q.height <= 96 and not any("mug" in t for t in q["text"])
    # an explicit count is drawn as asked, and said so
    q, _, info = derive_queries(products, DerivedQueryConfig(n_queries=7))
    assert q.height == 7 and info["n_requested"] == 7 and info["n_rule"] == "as configured"


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "10"])
def test_query_count_must_be_a_positive_integer_or_none(bad) -> None:
    with pytest.raises(ConfigError, match=r"n_queries=.*expected an integer >= 1, or None for the default"):
        derive_queries(_products(), DerivedQueryConfig(n_queries=bad))
