"""`workbench catalog import table` and `catalog_from_frames`: mapping, guessing, bad input, streaming."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from PIL import Image

from workbench.catalog import read_catalog, validate_catalog
from workbench.catalog.loaders import import_catalog
from workbench.catalog.loaders.table import (
    TableImportConfig,
    TableMapping,
    catalog_from_frames,
    import_table,
    plan_table,
)
from workbench.cli import main
from workbench.errors import CatalogError, ConfigError

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "table"
QUIET = TableImportConfig(progress=False)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _photo(path: Path, seed: int = 0, size: int = 32) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def _products(cat_dir: Path) -> pl.DataFrame:
    return read_catalog(cat_dir).products.collect()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --------------------------------------------------------------------------- the README recipe


def test_readme_recipe_end_to_end(tmp_path: Path, monkeypatch, capsys) -> None:
    """products.csv + photos/ -> import -> validate: the copy-paste recipe of the README."""
    shutil.copytree(FIXTURE, tmp_path / "shop")
    monkeypatch.chdir(tmp_path / "shop")
    rc = main(["catalog", "import", "table", "products.csv", "--out", "data/catalogs/mine", "--media-root",
               "photos/", "--quiet"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    report = json.loads(out)  # stdout holds only the report; the mapping went to stderr first
    assert report["counts"] == {"products": 3, "with_image": 3, "with_audio": 0, "interactions": 0,
                                "queries": 0, "qrels": 0}
    assert report["repaired"]["price not a number: set to null"] == 1
    assert report["repaired"]["image format PNG re-encoded as RGB JPEG"] == 3
    assert "  item_id     <- sku (guessed)" in err.splitlines()
    assert "  attributes  <- colour, material (guessed)" in err.splitlines()
    assert main(["catalog", "validate", "data/catalogs/mine", "--quiet"]) == 0
    products = _products(Path("data/catalogs/mine"))
    assert products["item_id"].to_list() == ["CH-001", "LA-002", "SO-003"]
    assert products["price"].to_list() == [49.9, 19.5, None]
    assert products["category"][0] == "home/furniture/chairs"
    assert json.loads(products["attributes"][0]) == {"colour": "red", "material": "wood"}
    for rel in products["image"].to_list():
        with Image.open(Path("data/catalogs/mine") / rel) as img:  # every tower reads the same kind of file
            assert (img.format, img.mode) == ("JPEG", "RGB")


def test_table_is_a_registered_format(tmp_path: Path) -> None:
    shutil.copytree(FIXTURE, tmp_path / "shop")
    report = import_catalog("table", tmp_path / "shop" / "products.csv", tmp_path / "cat")
    assert report.format == "table"
    # Without --media-root the paths are relative to the CSV's folder, where the photos are not.
    assert report.repaired["image path does not exist: image set to null"] == 3


# --------------------------------------------------------------------------- mapping and guessing


def test_guesses_compare_names_loosely_and_given_columns_win() -> None:
    columns = ["Product ID", "Product-Name", "DESC", "Department", "Brand", "Unit Price", "img", "colour", "sku"]
    plan = plan_table("products", "p.csv", columns, TableMapping())
    assert plan.lines() == [
        "products from p.csv (columns: Product ID, Product-Name, DESC, Department, Brand, Unit Price, img, "
        "colour, sku)",
        "  item_id     <- Product ID (guessed)",
        "  title       <- Product-Name (guessed)",
        "  description <- DESC (guessed)",
        "  category    <- Department (guessed)",
        "  brand       <- Brand (guessed)",
        "  price       <- Unit Price (guessed)",
        "  image       <- img (guessed)",
        "  audio       <- (no column: null)",
        "  attributes  <- colour, sku (guessed)",
    ]
    given = plan_table("products", "p.csv", columns, TableMapping(id="sku", attributes=()))
    assert given.bindings["item_id"].describe() == "sku (given)"
    # 'Product ID' is no longer the id, and no other field takes it
    assert given.bindings["title"].describe() == "Product-Name (guessed)"
    assert given.attributes is not None and given.attributes.describe() == "(no column: null)"


def test_interactions_guess_the_products_id_column_and_the_event_default() -> None:
    plan = plan_table("interactions", "e.csv", ["visitor_id", "SKU", "t_dat", "rating"], TableMapping(),
                      products_id="SKU")
    assert [line.split("<- ")[1] for line in plan.lines()[1:]] == [
        "visitor_id (guessed)", "SKU (guessed)", "t_dat (guessed)", "(no column: 'rating' for every row)",
        "rating (guessed)",
    ]


def test_a_mapping_naming_a_missing_column_lists_the_files_columns(tmp_path: Path) -> None:
    src = _write(tmp_path / "products.csv", "sku,name,cost\nA,Chair,1\n")
    with pytest.raises(CatalogError) as info:
        import_table(src, tmp_path / "cat", mapping=TableMapping(price="prize"), config=QUIET)
    assert str(info.value) == (f"{src}: no column 'prize' (named for price by --price); "
                               "the file's columns are: sku, name, cost")
    assert not (tmp_path / "cat").exists()


def test_a_required_column_that_cannot_be_guessed_says_which_flag_names_it(tmp_path: Path) -> None:
    src = _write(tmp_path / "products.csv", "code,label\nA,Chair\n")
    with pytest.raises(CatalogError) as info:
        import_table(src, tmp_path / "cat", config=QUIET)
    assert str(info.value) == (
        f"{src}: no column for item_id (looked for item_id, product_id, sku, id, article_id, asin, itemid, "
        "productid); name it with --id COLUMN; the file's columns are: code, label")
    report = import_table(src, tmp_path / "cat", mapping=TableMapping(id="code", title="label"), config=QUIET)
    assert report.counts["products"] == 1


def test_cli_column_flags(tmp_path: Path, capsys) -> None:
    src = _write(tmp_path / "items.tsv", "code\tlabel\tlevel1\tlevel2\tsize\tnote\nA\tChair\thome\tchairs\tS\tx\n")
    rc = main(["catalog", "import", "table", str(src), "--out", str(tmp_path / "cat"), "--id", "code",
               "--title", "label", "--category", "level1,level2", "--attributes", "size", "--quiet"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "  category    <- level1, level2 (given)" in err.splitlines()
    row = _products(tmp_path / "cat").row(0, named=True)
    assert (row["category"], json.loads(row["attributes"])) == ("home/chairs", {"size": "S"})
    assert json.loads(out)["counts"]["products"] == 1


def _shop_rows(n: int = 60) -> str:
    colours, materials, types = ("red", "blue", "green"), ("wood", "steel"), ("chairs", "lamps", "sofas")
    lines = ["sku,name,category,colour,material"]
    for i in range(n):
        kind = types[i % 3]
        lines.append(f"S{i:03d},Item {i},home/{kind},{colours[(i // 3) % 3]},{materials[(i // 9) % 2]}")
    return "\n".join(lines) + "\n"


def test_derived_queries_make_a_catalog_without_a_search_log_evaluable(tmp_path: Path, capsys) -> None:
    src = _write(tmp_path / "shop.csv", _shop_rows())
    rc = main(["catalog", "import", "table", str(src), "--out", str(tmp_path / "cat"), "--derived-queries", "12",
               "--quiet"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    report = json.loads(out)
    assert report["counts"]["queries"] == 12 and report["counts"]["qrels"] > 12
    assert any(n.startswith("queries are derived from attributes, not real user queries") for n in report["notes"])
    cat = read_catalog(tmp_path / "cat")
    assert validate_catalog(cat, on_error="collect") == []
    queries, qrels = cat.queries.collect(), cat.qrels.collect()
    assert queries.height == 12 and set(qrels["query_id"]) == set(queries["query_id"])
    assert cat.manifest["derived_queries"]["n_queries"] == 12  # the catalog says they are derived
    # every judged product really has the type the query names (its category leaf)
    leaf = dict(zip(*_products(tmp_path / "cat").select("item_id", pl.col("category").str.split("/").list.last())
                     .to_dict(as_series=False).values(), strict=True))
    for q in queries.iter_rows(named=True):
        judged = qrels.filter(pl.col("query_id") == q["query_id"])["item_id"]
        assert all(leaf[i].rstrip("s") in q["text"] for i in judged), q


def test_derived_queries_beside_a_queries_table_or_a_bad_count_are_refused(tmp_path: Path, capsys) -> None:
    src = _write(tmp_path / "shop.csv", _shop_rows())
    qs = _write(tmp_path / "q.csv", "query_id,text\nq1,red chair\n")
    assert main(["catalog", "import", "table", str(src), "--out", str(tmp_path / "a"), "--derived-queries", "5",
                 "--queries", str(qs), "--quiet"]) == 2
    assert "derived queries and a queries table both given" in capsys.readouterr().err
    assert main(["catalog", "import", "table", str(src), "--out", str(tmp_path / "b"), "--derived-queries", "0",
                 "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == "error: --derived-queries 0: expected a count >= 1"
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_cli_refuses_table_flags_for_other_formats(tmp_path: Path, capsys) -> None:
    assert main(["catalog", "import", "hm", str(tmp_path), "--out", str(tmp_path / "c"), "--price", "p"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: --price applies only to `workbench catalog import table`, not to hm")


# --------------------------------------------------------------------------- bad rows


def test_duplicate_ids_keep_the_first_row_and_are_named(tmp_path: Path) -> None:
    src = _write(tmp_path / "p.csv", "sku,name\nA,first A\nB,first B\nA,second A\nA,third A\nB,second B\n")
    report = import_table(src, tmp_path / "cat", config=QUIET)
    assert report.dropped == {"duplicate item_id: first row kept, later ones dropped": 3}
    assert f"{src}, column 'sku': duplicate item_id: first row kept, later ones dropped: 3 row(s): " \
           "row 2 ('A'), row 3 ('A'), row 4 ('B')" in report.notes
    assert _products(tmp_path / "cat")["title"].to_list() == ["first A", "first B"]


def test_duplicate_ids_refused_on_request(tmp_path: Path) -> None:
    src = _write(tmp_path / "p.csv", "sku,name\nA,first A\nB,first B\nA,second A\nB,second B\n")
    with pytest.raises(CatalogError) as info:
        import_table(src, tmp_path / "cat", config=TableImportConfig(duplicates="error", progress=False))
    assert str(info.value) == (
        f"{src}, column 'sku': duplicate item_id 'A' (rows 0 and 2), 'B' (rows 1 and 3); expected each item_id "
        "once (or keep the first row of each with --on-duplicate first)")
    assert _leftovers(tmp_path) == ["p.csv"]


def test_mixed_type_price_is_repaired_to_null_and_counted(tmp_path: Path) -> None:
    src = _write(tmp_path / "p.csv", "sku,name,price\nA,a,12.5\nB,b,n/a\nC,c,12,50\nD,d,\nE,e,-3\nF,f,1e2\n")
    # 'C,c,12,50' has a field too many: dropped and named by its line
    report = import_table(src, tmp_path / "cat", config=QUIET)
    assert report.repaired == {"price not a number: set to null": 1,
                               "price negative or not finite: set to null": 1}
    assert report.dropped == {"line with 4 fields instead of 3: dropped": 1}
    assert f"{src}, column 'price': price not a number: set to null: 1 row(s): row 1 ('n/a')" in report.notes
    assert f"{src}: line with 4 fields instead of 3: dropped: 1 line(s): line 4 ('C,c,12,50')" in report.notes
    assert _products(tmp_path / "cat")["price"].to_list() == [12.5, None, None, None, 100.0]


def test_mixed_types_in_json_lines_are_read_as_text_then_parsed(tmp_path: Path) -> None:
    lines = [{"id": 1, "title": "a", "price": 12.5}, {"id": 2, "title": "b", "price": "n/a"},
             {"id": "003", "title": "c", "price": 7}]
    src = _write(tmp_path / "p.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n{broken\n")
    report = import_table(src, tmp_path / "cat", config=QUIET)
    assert report.repaired == {"price not a number: set to null": 1}
    assert report.dropped == {"line that is not a JSON object: dropped": 1}
    products = _products(tmp_path / "cat")
    assert products["item_id"].to_list() == ["1", "2", "003"]
    assert products["price"].to_list() == [12.5, None, 7.0]


def test_missing_text_fields_are_filled_and_counted(tmp_path: Path) -> None:
    src = _write(tmp_path / "p.csv", "sku,name,description,category\n"
                                     "A,,,home > chairs\nB,,d,\n,x,y,z\nC,c, d ,/home//lights/\n")
    report = import_table(src, tmp_path / "cat", config=QUIET)
    products = _products(tmp_path / "cat")
    assert products["title"].to_list() == ["chairs", "B", "c"]
    assert products["category"].to_list() == ["home/chairs", "unknown", "home/lights"]
    assert products["description"].to_list() == ["", "d", "d"]
    assert report.repaired == {
        "category path 'a > b' written as 'a/b'": 1, "category missing: set to 'unknown'": 1,
        "title missing: set to the last category level (or the item id)": 2, "description missing: set to ''": 1,
    }
    assert report.dropped == {"item_id missing: row dropped": 1}


def test_category_from_a_list_column_and_attributes_from_frames(tmp_path: Path) -> None:
    products = pl.DataFrame({"item_id": ["a", "b"], "title": ["A", "B"],
                             "category": [["home", "chairs/stools"], ["garden"]],
                             "colour": ["red", None], "size": [1, 2]})
    report = catalog_from_frames(tmp_path / "cat", products=products, config=QUIET)
    got = _products(tmp_path / "cat")
    assert got["category"].to_list() == ["home/chairs-stools", "garden"]
    assert [json.loads(a) for a in got["attributes"]] == [{"colour": "red", "size": 1}, {"colour": None, "size": 2}]
    assert report.repaired == {"'/' inside a category level replaced by '-'": 1}


def test_empty_and_header_only_files_are_refused(tmp_path: Path) -> None:
    empty = _write(tmp_path / "empty.csv", "")
    with pytest.raises(CatalogError) as info:
        import_table(empty, tmp_path / "cat", config=QUIET)
    assert str(info.value) == (f"{empty}: empty file; expected a header line naming the columns, "
                               "then one row per product")
    header = _write(tmp_path / "header.csv", "sku,name\n")
    with pytest.raises(CatalogError) as info:
        import_table(header, tmp_path / "cat", config=QUIET)
    assert str(info.value) == f"{header}: no rows below the header; expected at least one product"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.csv", "header.csv"]


def test_files_that_are_not_what_they_claim(tmp_path: Path) -> None:
    array = _write(tmp_path / "p.json", '[{"id": 1, "title": "a"}]')
    with pytest.raises(CatalogError, match=r"a JSON array; expected JSON lines, one object per line"):
        import_table(array, tmp_path / "cat", config=QUIET)
    unknown = _write(tmp_path / "p.xlsx", "x")
    with pytest.raises(CatalogError) as info:
        import_table(unknown, tmp_path / "cat", config=QUIET)
    assert str(info.value) == (f"{unknown}: cannot tell the format from the extension '.xlsx'; expected .csv, "
                               ".tsv, .parquet or .jsonl (or name it with --format csv|tsv|parquet|jsonl)")
    latin = tmp_path / "latin.csv"
    latin.write_bytes("sku,name\nA,caf\u00e9\n".encode("latin-1"))
    with pytest.raises(CatalogError, match=r"latin\.csv: not UTF-8 text .*expected UTF-8"):
        import_table(latin, tmp_path / "cat", config=QUIET)
    not_parquet = _write(tmp_path / "p.parquet", "sku,name\n")
    with pytest.raises(CatalogError, match=r"p\.parquet: not a readable parquet file"):
        import_table(not_parquet, tmp_path / "cat", config=QUIET)
    assert not (tmp_path / "cat").exists()


def test_format_flag_overrides_the_extension_and_parquet_keeps_types(tmp_path: Path) -> None:
    src = _write(tmp_path / "export.txt", "sku\tname\nA\tChair\n")
    report = import_table(src, tmp_path / "a", file_format="tsv", config=QUIET)
    assert report.counts["products"] == 1
    pl.DataFrame({"sku": [7, 8], "name": ["x", "y"], "price": [1.0, None]}).write_parquet(tmp_path / "p.parquet")
    import_table(tmp_path / "p.parquet", tmp_path / "b", config=QUIET)
    assert _products(tmp_path / "b")["item_id"].to_list() == ["7", "8"]


# --------------------------------------------------------------------------- media


def test_media_paths_outside_the_root_or_missing_are_nulled_and_never_copied(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    _photo(root / "ok.jpg")
    secret = _photo(tmp_path / "secret.png", seed=1)
    os.symlink(secret, root / "link.png")
    src = _write(tmp_path / "p.csv", "sku,name,image\n"
                 "A,a,ok.jpg\nB,b,../secret.png\nC,c,/elsewhere/x.png\nD,d,link.png\nE,e,gone.jpg\n"
                 "F,f,https://example.com/f.jpg\nG,g,\n")
    report = import_table(src, tmp_path / "cat", media_root=root, config=QUIET)
    assert report.repaired == {
        "image path leaves the media root: image set to null (nothing copied)": 3,
        "image path does not exist: image set to null": 1,
        "image path is a URL (nothing is downloaded): image set to null": 1,
    }
    assert (f"{src}, column 'image': image path leaves the media root: image set to null (nothing copied): "
            "3 row(s): row 1 ('../secret.png'), row 2 ('/elsewhere/x.png'), row 3 ('link.png')") in report.notes
    images = _products(tmp_path / "cat")["image"].to_list()
    assert images == ["media/images/A.jpg", None, None, None, None, None, None]
    assert sorted(p.name for p in (tmp_path / "cat" / "media").rglob("*") if p.is_file()) == ["A.jpg"]
    validate_catalog(tmp_path / "cat", progress=False)


def test_photos_and_audio_are_brought_in_once_per_file(tmp_path: Path) -> None:
    _photo(tmp_path / "shared.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "tiny.png")
    sf.write(tmp_path / "clip.wav", np.zeros(800, dtype=np.float32), 8000)
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    src = _write(tmp_path / "p.csv", "sku,name,image,audio\nA/1,a,shared.png,clip.wav\nB,b,shared.png,broken.wav\n"
                                     "C,c,tiny.png,\n")
    report = import_table(src, tmp_path / "cat", config=QUIET)
    products = _products(tmp_path / "cat")
    assert products["image"].to_list() == ["media/images/A_1-" + products["image"][0][-16:-4] + ".jpg"] * 2 + [None]
    assert products["audio"].to_list() == [products["audio"][0], None, None]
    assert products["audio"][0].startswith("media/audio/A_1-") and products["audio"][0].endswith(".wav")
    assert report.counts["with_image"] == 2 and report.counts["with_audio"] == 1
    assert report.repaired["image smaller than 16 px: image set to null (text kept)"] == 1
    assert report.repaired["audio file not decodable: audio set to null (text kept)"] == 1
    assert (tmp_path / "cat" / products["audio"][0]).read_bytes() == (tmp_path / "clip.wav").read_bytes()
    validate_catalog(tmp_path / "cat", progress=False)


# --------------------------------------------------------------------------- the other tables


def test_interactions_queries_and_qrels(tmp_path: Path) -> None:
    products = _write(tmp_path / "p.csv", "sku,name\nA,a\nB,b\nC,c\n")
    events = _write(tmp_path / "events.csv", "customer,item,when,action,stars\n"
                    "u1,A,2024-01-01T10:00:00Z,view,\n"
                    "u1,B,1704103200,Add To Cart,\n"
                    "u2,C,1704103200000,purchase,4\n"
                    "u2,X,2024-01-02,view,\n"
                    "u3,A,yesterday,view,\n"
                    "u3,A,1960-01-01,view,\n"
                    "u3,B,2024-01-03 08:00:00+02:00,hover,\n"
                    "u3,C,2024-01-03,rating,n/a\n")
    queries = _write(tmp_path / "q.jsonl", '{"qid": "q1", "query": "red chair", "user_id": "u1"}\n'
                                           '{"qid": "q2", "query": "lamp"}\n{"qid": "q2", "query": "again"}\n'
                                           '{"qid": "q3", "query": " "}\n')
    qrels = _write(tmp_path / "qrels.csv", "qid,item\nq1,A\nq1,B\nq2,C\nq9,A\nq1,A\n")  # --item-col: here too
    mapping = TableMapping(user="customer", item="item", time="when", event="action", value="stars")
    report = import_table(products, tmp_path / "cat", interactions=events, queries=queries, qrels=qrels,
                          mapping=mapping, config=QUIET)
    cat = read_catalog(tmp_path / "cat")
    inter = cat.interactions.collect()
    assert inter["event"].to_list() == ["view", "cart", "purchase", "rating"]
    assert [t.isoformat() for t in inter["timestamp"]] == [
        "2024-01-01T10:00:00+00:00", "2024-01-01T10:00:00+00:00", "2024-01-01T10:00:00+00:00",
        "2024-01-03T00:00:00+00:00"]
    assert inter["value"].to_list() == [None, None, 4.0, None]
    assert report.dropped == {
        "item_id not among the products: row dropped": 1,
        "timestamp not ISO 8601 or epoch seconds/milliseconds: row dropped": 1,
        "timestamp before 1971 or from 2100 on: row dropped": 1,
        "event not one of view, click, cart, purchase, rating: row dropped": 1,
        "duplicate query_id: first row kept, later ones dropped": 1,
        "query text missing: row dropped": 1,
        "query_id not among the queries: row dropped": 1,
        "duplicate (query_id, item_id) pair: first row kept": 1,
    }
    assert report.repaired == {"event 'add_to_cart' read as 'cart'": 1,
                               "value not a finite number: set to null": 1}
    assert cat.queries.collect().select("query_id", "text", "user_id").rows() == [
        ("q1", "red chair", "u1"), ("q2", "lamp", None)]
    assert cat.qrels.collect().rows() == [("q1", "A", 1), ("q1", "B", 1), ("q2", "C", 1)]
    assert report.counts == {"products": 3, "interactions": 4, "queries": 2, "qrels": 3,
                             "with_image": 0, "with_audio": 0}
    validate_catalog(cat, progress=False)


def test_qrels_need_queries(tmp_path: Path) -> None:
    products = _write(tmp_path / "p.csv", "sku,name\nA,a\n")
    qrels = _write(tmp_path / "qrels.csv", "qid,sku,relevance\nq1,A,3\n")
    with pytest.raises(ConfigError) as info:
        import_table(products, tmp_path / "cat", qrels=qrels, config=QUIET)
    assert str(info.value) == ("qrels given without queries: qrels grade the items of queries, so pass the "
                               "queries table too (--queries FILE)")


def test_a_failing_import_leaves_no_folder_and_no_staging(tmp_path: Path) -> None:
    """Products and photos are written to staging before the interactions fail: nothing remains."""
    _photo(tmp_path / "a.png")
    products = _write(tmp_path / "p.csv", "sku,name,image\nA,a,a.png\nB,b,a.png\n")
    events = _write(tmp_path / "e.csv", "user,sku,timestamp\nu1,A,not a time\nu2,B,\n")
    with pytest.raises(CatalogError) as info:
        import_table(products, tmp_path / "cat", interactions=events, config=QUIET)
    assert str(info.value) == (
        f"{events}: none of its 2 row(s) could be used (timestamp missing: row dropped: 1; timestamp not ISO "
        "8601 or epoch seconds/milliseconds: row dropped: 1); expected at least one usable interactions row")
    assert _leftovers(tmp_path) == ["a.png", "e.csv", "p.csv"]
    # An existing catalog is left as it was.
    import_table(products, tmp_path / "cat", config=QUIET)
    before = (tmp_path / "cat" / "manifest.json").read_bytes()
    with pytest.raises(CatalogError):
        import_table(products, tmp_path / "cat", interactions=events, overwrite=True, config=QUIET)
    assert (tmp_path / "cat" / "manifest.json").read_bytes() == before
    assert _leftovers(tmp_path) == ["a.png", "cat", "e.csv", "p.csv"]


# --------------------------------------------------------------------------- frames


def test_catalog_from_pandas_and_polars_frames_agree(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    rows = {"product_id": [1.0, 2.0, None], "name": ["a", "b", "c"], "price": [1.5, None, 3.0],
            "department": ["home", "garden", "home"], "colour": ["red", "green", None]}
    r1 = catalog_from_frames(tmp_path / "pd", products=pd.DataFrame(rows), config=QUIET)
    r2 = catalog_from_frames(tmp_path / "pl", products=pl.DataFrame(rows).lazy(), config=QUIET)
    assert _products(tmp_path / "pd").equals(_products(tmp_path / "pl"))
    assert _products(tmp_path / "pd")["item_id"].to_list() == ["1", "2"]  # whole floats read as integers
    assert r1.dropped == r2.dropped == {"item_id missing: row dropped": 1}
    with pytest.raises(ConfigError, match=r"products frame: a dict; expected a polars or pandas DataFrame"):
        catalog_from_frames(tmp_path / "x", products=rows, config=QUIET)
    # a pandas object column mixing types (pyarrow alone refuses it) is parsed per role, like a CSV's
    mixed = pd.DataFrame({"sku": ["a", "b", "c"], "name": ["A", "B", "C"], "price": [12.5, "n/a", "7"]})
    report = catalog_from_frames(tmp_path / "mixed", products=mixed, config=QUIET)
    assert _products(tmp_path / "mixed")["price"].to_list() == [12.5, None, 7.0]
    assert "products frame, column 'price': price not a number: set to null: 1 row(s): row 1 ('n/a')" in report.notes
    with pytest.raises(CatalogError) as info:
        catalog_from_frames(tmp_path / "empty", products=pl.DataFrame({"sku": [], "name": []}), config=QUIET)
    assert str(info.value) == "products frame: no rows; expected at least one product"
    with pytest.raises(CatalogError) as info:
        import_table(tmp_path / "nope.csv", tmp_path / "x", config=QUIET)
    assert str(info.value) == (f"{tmp_path / 'nope.csv'}: does not exist; expected a CSV, TSV, parquet or JSON "
                               "lines file (one row per product)")


def test_config_and_mapping_validate_themselves() -> None:
    with pytest.raises(ConfigError, match=r"duplicates='last': expected 'first'"):
        TableImportConfig(duplicates="last")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"chunk_rows=0: expected a positive integer"):
        TableImportConfig(chunk_rows=0)
    with pytest.raises(ConfigError, match=r"TableMapping.price: '' is not a column name"):
        TableMapping(price="")
    assert TableMapping(category=["a"]).category == "a"
    assert TableMapping(attributes=["a", "b"]).attributes == ("a", "b")
    assert TableMapping(attributes="colour").attributes == ("colour",)


# --------------------------------------------------------------------------- size


def test_a_100k_row_csv_streams_in_chunks_with_a_progress_bar(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("WORKBENCH_PROGRESS", "1")
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    src = tmp_path / "big.csv"
    with src.open("w", encoding="utf-8") as f:
        f.write("sku,name,description,category,price,colour\n")
        for i in range(100_000):
            price = "n/a" if i % 1000 == 7 else f"{i % 500}.5"
            f.write(f"S{i:06d},Product {i},About product {i},home/c{i % 20},{price},c{i % 7}\n")
        f.write("S000003,again,,,,\n")
    start = time.perf_counter()
    report = import_table(src, tmp_path / "cat", config=TableImportConfig(csv_block_bytes=1 << 20))
    elapsed = time.perf_counter() - start
    assert elapsed < 60, f"100k rows took {elapsed:.1f} s"
    assert report.counts["products"] == 100_000
    assert report.repaired == {"price not a number: set to null": 100}
    assert report.dropped == {"duplicate item_id: first row kept, later ones dropped": 1}
    # read and written chunk by chunk (one row group per chunk), never as one frame
    assert pq.ParquetFile(tmp_path / "cat" / "products.parquet").num_row_groups >= 5
    assert "import products: 100%" in capsys.readouterr().err
    validate_catalog(tmp_path / "cat", check_media=False, progress=False)


def test_cli_on_duplicate_error_exits_2_with_one_line(tmp_path: Path, capsys) -> None:
    src = _write(tmp_path / "p.csv", "sku,name\nA,a\nA,b\n")
    rc = main(["catalog", "import", "table", str(src), "--out", str(tmp_path / "cat"), "--on-duplicate", "error",
               "--quiet"])
    err = capsys.readouterr().err.splitlines()
    assert rc == 2
    assert err[-1] == (f"error: {src}, column 'sku': duplicate item_id 'A' (rows 0 and 1); expected each item_id "
                       "once (or keep the first row of each with --on-duplicate first)")
    assert _leftovers(tmp_path) == ["p.csv"]
