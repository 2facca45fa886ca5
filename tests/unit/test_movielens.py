"""MovieLens-100k loader on a tiny fixture in the GroupLens format (latin-1, pipes, tabs)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from workbench.catalog import read_catalog
from workbench.catalog.loaders import import_catalog
from workbench.catalog.loaders.movielens import import_movielens
from workbench.errors import CatalogError

FLAGS = ["0"] * 19


def flags(*on: int) -> str:
    f = list(FLAGS)
    for i in on:
        f[i] = "1"
    return "|".join(f)


def write_ml(root: Path, *, data: str | None = None, item: str | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "u.item").write_bytes((item if item is not None else (
        f"1|Toy Story (1995)|01-Jan-1995||http://imdb/1|{flags(3, 4, 5)}\n"
        f"2|Amélie (2001)|25-Apr-2001||http://imdb/2|{flags(5, 14)}\n"
        f"3|unknown||||{flags(0)}\n"
    )).encode("latin-1"))
    (root / "u.data").write_text(data if data is not None else (
        "10\t1\t5\t881250949\n20\t2\t3\t891717742\n10\t2\t4\t878887116\n20\t3\t1\t880000000\n"))
    (root / "u.user").write_text("0|0|D|default_user|0000\n10|24|M|technician|85711\n20|53|F|other|94043\n")
    return root


def test_import_movielens_converts_the_contract(tmp_path: Path) -> None:
    src = write_ml(tmp_path / "ml")
    report = import_movielens(src, tmp_path / "cat")
    assert report.counts == {"products": 3, "interactions": 4, "users": 2}
    assert report.dropped == {"u.user row without ratings (the catalog has no users table)": 1}
    assert report.repaired == {"movie without release date (year left null)": 1}
    cat = read_catalog(tmp_path / "cat")
    products = cat.products.collect()
    amelie = products.filter(pl.col("item_id") == "2").row(0, named=True)
    assert amelie["title"] == "Amélie (2001)"  # latin-1 decoded
    assert amelie["category"] == "movies/Comedy"
    assert "Genres: Comedy, Romance" in amelie["description"] and "2001" in amelie["description"]
    assert json.loads(amelie["attributes"])["genres"] == ["Comedy", "Romance"]
    assert json.loads(amelie["attributes"])["year"] == 2001
    assert json.loads(products.filter(pl.col("item_id") == "3")["attributes"][0])["year"] is None
    inter = cat.interactions.collect()
    assert inter["user_id"].to_list() == ["10", "20", "10", "20"]  # u.data order kept (seeded splits)
    assert inter["event"].unique().to_list() == ["rating"] and inter["value"].to_list() == [5.0, 3.0, 4.0, 1.0]
    assert str(inter["timestamp"][0]) == "1997-12-04 15:55:49+00:00"
    # through the registry too
    assert import_catalog("movielens", src, tmp_path / "cat2").counts["interactions"] == 4


@pytest.mark.parametrize(("data", "item", "match"), [
    ("10\t1\t7\t881250949\n", None, r"u.data, line 1: rating 7, expected 1..5"),
    ("10\t1\t5\n", None, "4 \\(user, item, rating, unix time\\)|expected tab-separated"),
    (None, "1|Toy Story|01-Jan-1995||url|0|1\n", r"u.item, line 1: 7 '\|'-separated fields"),
    (None, f"1|Toy Story|1995-01-01||url|{flags(1)}\n", "is not DD-Mon-YYYY"),
    (None, f"1|A|01-Jan-1995||u|{flags(1)}\n1|B|01-Jan-1995||u|{flags(1)}\n", "appears more than once"),
])
def test_import_movielens_bad_files(tmp_path: Path, data, item, match) -> None:
    src = write_ml(tmp_path / "ml", data=data, item=item)
    with pytest.raises(CatalogError, match=match):
        import_movielens(src, tmp_path / "cat")
    assert not (tmp_path / "cat").exists()  # nothing half-written


def test_import_movielens_missing_files_and_unknown_items(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="not a folder"):
        import_movielens(tmp_path / "nope", tmp_path / "cat")
    src = write_ml(tmp_path / "ml")
    (src / "u.data").unlink()
    with pytest.raises(CatalogError, match="u.data: missing"):
        import_movielens(src, tmp_path / "cat")
    src = write_ml(tmp_path / "ml2", data="10\t1\t5\t881250949\n10\t99\t4\t881250950\n")
    report = import_movielens(src, tmp_path / "cat3")
    assert report.dropped["rating of a movie missing from u.item"] == 1
    assert report.counts["interactions"] == 1
