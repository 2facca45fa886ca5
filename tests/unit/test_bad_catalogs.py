"""No bad catalog gets through: every damage below gives one line per problem, never a traceback.

Each case damages a small valid catalog written by `write_catalog` in tmp_path
(tables are rewritten by hand, manifest kept consistent, so only the intended
damage remains) and runs the CLI in-process: `catalog validate` exits 1 for
problems in the contents and 2 for a catalog that cannot be opened safely;
`catalog info` exits 2 for every damaged catalog; nothing ever exits 3.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import struct
import subprocess
import sys
import textwrap
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import soundfile as sf
from PIL import Image

from workbench.catalog import (
    CatalogWriter,
    ValidationLimits,
    media_digest,
    read_catalog,
    sha256_file,
    validate_catalog,
    write_catalog,
)
from workbench.cli import main
from workbench.errors import CatalogError, MediaError
from workbench.media import MAX_AUDIO_SECONDS, MAX_IMAGE_PIXELS, load_audio, load_image

# --------------------------------------------------------------------------- the valid catalog


def _products() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "item_id": ["i0", "i1", "i2"],
            "title": ["red chair", "blue lamp", "green mug"],
            "description": ["a chair", "a lamp", "a mug"],
            "category": ["home/chairs", "home/lamps", "kitchen/mugs"],
            "price": [10.0, 20.0, None],
            "image": ["media/images/i0.png", "media/images/i1.png", None],
            "audio": ["media/audio/i0.wav", None, None],
        }
    )


def _interactions() -> pl.DataFrame:
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    return pl.DataFrame(
        {
            "user_id": ["u1", "u1", "u2"],
            "item_id": ["i0", "i1", "i2"],
            "timestamp": [start + dt.timedelta(hours=h) for h in range(3)],
            "event": ["view", "purchase", "rating"],
            "value": [None, 20.0, 4.0],
        }
    )


def _queries() -> pl.DataFrame:
    return pl.DataFrame({"query_id": ["q1", "q2"], "text": ["red chair", "lamp"]})


def _qrels() -> pl.DataFrame:
    return pl.DataFrame({"query_id": ["q1", "q2"], "item_id": ["i0", "i1"], "relevance": [3, 2]})


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    media = tmp_path / "src"
    (media / "images").mkdir(parents=True)
    (media / "audio").mkdir()
    for name, shade in (("i0", 200), ("i1", 50)):
        Image.fromarray(np.full((8, 8, 3), shade, np.uint8)).save(media / "images" / f"{name}.png")
    sf.write(media / "audio" / "i0.wav", np.zeros(1600, np.float32), 16000, subtype="PCM_16")
    return write_catalog(tmp_path / "cat", products=_products(), interactions=_interactions(), queries=_queries(),
                         qrels=_qrels(), media_from=media, name="valid")


def _manifest(cat: Path) -> dict:
    return json.loads((cat / "manifest.json").read_text())


def _write_manifest(cat: Path, manifest: dict) -> None:
    (cat / "manifest.json").write_text(json.dumps(manifest))


def _replace_table(cat: Path, table: str, df: pl.DataFrame) -> None:
    """Write a table by hand (bypassing the writer's checks) and keep the manifest consistent with it."""
    path = cat / f"{table}.parquet"
    df.write_parquet(path)
    manifest = _manifest(cat)
    manifest["sha256"][f"{table}.parquet"] = sha256_file(path)
    manifest["counts"][table] = df.height
    if table == "products":
        manifest["media"] = {c: int(df.get_column(c).is_not_null().sum()) for c in ("image", "audio")}
    _write_manifest(cat, manifest)


def _tiny_png_claiming(width: int, height: int) -> bytes:
    """A ~70-byte 1-bit PNG whose IHDR declares width x height (CRC fixed): a bomb that costs nothing to make."""
    import io

    buf = io.BytesIO()
    Image.new("1", (1, 1)).save(buf, format="PNG")
    png = bytearray(buf.getvalue())
    png[16:24] = struct.pack(">II", width, height)  # IHDR data starts after signature, length and type
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))
    return bytes(png)


def _wav_claiming_frames(frames: int) -> bytes:
    """An 8-bit mono WAV of 1600 samples whose data chunk claims `frames` bytes (= frames)."""
    import io

    buf = io.BytesIO()
    sf.write(buf, np.zeros(1600, np.float32), 16000, subtype="PCM_U8", format="WAV")
    wav = bytearray(buf.getvalue())
    pos = wav.find(b"data")
    wav[pos + 4 : pos + 8] = struct.pack("<I", frames)
    return bytes(wav)


# --------------------------------------------------------------------------- the damages


@dataclass(frozen=True)
class Case:
    id: str
    damage: Callable[[Path], None]
    code: int  # exit code of `catalog validate`
    expect: tuple[str, ...]  # each appears in validate's stderr
    info_code: int = 2


CASES: list[Case] = []


def case(code: int, *expect: str, info_code: int = 2) -> Callable:
    def register(fn: Callable[[Path], None]) -> Callable[[Path], None]:
        CASES.append(Case(fn.__name__, fn, code, expect, info_code))
        return fn

    return register


@case(1, "qrels.parquet", "'relevance'", "relevance outside 0..3 (e.g. [7]), expected an integer 0..3")
def qrels_relevance_7(cat: Path) -> None:
    _replace_table(cat, "qrels", _qrels().with_columns(relevance=pl.Series([3, 7])))


@case(1, "products.parquet", "'item_id'", "rows 0, 1: duplicate item_id, expected each product once")
def duplicate_item_id(cat: Path) -> None:
    _replace_table(cat, "products", _products().with_columns(item_id=pl.Series(["i0", "i0", "i2"])))


@case(1, "media/images/i0.png", "refused as a decompression bomb", "expected at most 50,000,000 pixels")
def png_20000x20000(cat: Path) -> None:
    (cat / "media/images/i0.png").write_bytes(_tiny_png_claiming(20000, 20000))


@case(1, "media/images/i0.png", "header declares 8000x8000 = 64,000,000 pixels, expected at most 50,000,000")
def png_8000x8000(cat: Path) -> None:  # under PIL's own limit: only ours stops it
    (cat / "media/images/i0.png").write_bytes(_tiny_png_claiming(8000, 8000))


@case(1, "'image'", "rows 0", "NUL byte or control character, expected a printable relative path")
def nul_in_media_path(cat: Path) -> None:
    _replace_table(cat, "products", _products().with_columns(image=pl.Series(["media/images/i0\x00.png", None, None])))


@case(1, "'image'", "rows 1", "NUL byte or control character")
def newline_in_media_path(cat: Path) -> None:
    _replace_table(cat, "products", _products().with_columns(image=pl.Series([None, "media/images/i1\n.png", None])))


@case(1, "media/images/i0.png", "cannot be resolved", "expected a file, not a symbolic-link loop")
def symlink_loop(cat: Path) -> None:
    (cat / "media/images/i0.png").unlink()
    os.symlink("i0.png", cat / "media/images/i0.png")


@case(1, "media/images/i0.png", "is a folder, expected a media file")
def media_path_is_a_folder(cat: Path) -> None:
    (cat / "media/images/i0.png").unlink()
    (cat / "media/images/i0.png").mkdir()


@case(1, "media/audio/i0.wav", "is not a regular file (a device, pipe or socket)")
def media_path_is_a_pipe(cat: Path) -> None:
    (cat / "media/audio/i0.wav").unlink()
    os.mkfifo(cat / "media/audio/i0.wav")


@case(1, "media/images/i0.png", "outside the catalog folder")
def media_symlink_to_dev_zero(cat: Path) -> None:
    (cat / "media/images/i0.png").unlink()
    os.symlink("/dev/zero", cat / "media/images/i0.png")


@case(2, "interactions.parquet: is a folder, expected a parquet file")
def table_replaced_by_a_folder(cat: Path) -> None:
    (cat / "interactions.parquet").unlink()
    (cat / "interactions.parquet").mkdir()
    (cat / "interactions.parquet" / "part-0.parquet").write_bytes(b"PAR1")


@case(2, "products.parquet: is a folder, expected a parquet file")
def products_replaced_by_a_folder(cat: Path) -> None:
    (cat / "products.parquet").unlink()
    (cat / "products.parquet").mkdir()


@case(2, "manifest.json: is a folder, expected the catalog's JSON manifest file")
def manifest_is_a_folder(cat: Path) -> None:
    (cat / "manifest.json").unlink()
    (cat / "manifest.json").mkdir()


@case(2, "manifest.json: not UTF-8 text (byte 0", "expected a JSON object")
def manifest_not_utf8(cat: Path) -> None:
    (cat / "manifest.json").write_bytes(b"\xff\xfe{}")


@case(2, "manifest.json: not valid JSON", "expected a JSON object")
def manifest_not_json(cat: Path) -> None:
    (cat / "manifest.json").write_text('{"name": "x",')


@case(2, "manifest.json: holds an array, expected a JSON object")
def manifest_not_an_object(cat: Path) -> None:
    (cat / "manifest.json").write_text("[1, 2]")


@case(2, "manifest.json: not valid JSON", "maximum recursion")
def manifest_nested_too_deep(cat: Path) -> None:
    (cat / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)


@case(2, "'sha256' is an array, expected an object mapping relative file paths to sha256 hex digests")
def manifest_sha256_is_a_list(cat: Path) -> None:
    manifest = _manifest(cat)
    manifest["sha256"] = sorted(manifest["sha256"])
    _write_manifest(cat, manifest)


@case(2, "sha256 key '/dev/zero' is an absolute path; expected a path relative to the catalog folder")
def manifest_sha256_names_dev_zero(cat: Path) -> None:
    manifest = _manifest(cat)
    manifest["sha256"]["/dev/zero"] = "0" * 64
    _write_manifest(cat, manifest)


@case(2, "is an absolute path; expected a path relative to the catalog folder")
def manifest_absolute_path(cat: Path) -> None:
    manifest = _manifest(cat)
    digest = manifest["sha256"].pop("products.parquet")
    manifest["sha256"][str((cat / "products.parquet").resolve())] = digest
    _write_manifest(cat, manifest)


@case(2, "sha256 key '../outside.bin' contains '..'")
def manifest_dotdot_path(cat: Path) -> None:
    (cat.parent / "outside.bin").write_bytes(b"x")
    manifest = _manifest(cat)
    manifest["sha256"]["../outside.bin"] = "0" * 64
    _write_manifest(cat, manifest)


@case(2, "sha256 key 'link.bin' resolves to", "outside the catalog folder")
def manifest_symlink_outside(cat: Path) -> None:
    os.symlink("/dev/zero", cat / "link.bin")
    manifest = _manifest(cat)
    manifest["sha256"]["link.bin"] = "0" * 64
    _write_manifest(cat, manifest)


@case(2, "sha256 key 'media/pipe' is not a regular file")
def manifest_names_a_pipe(cat: Path) -> None:
    os.mkfifo(cat / "media/pipe")
    manifest = _manifest(cat)
    manifest["sha256"]["media/pipe"] = "0" * 64
    _write_manifest(cat, manifest)


@case(2, "sha256 key 'media' is a folder")
def manifest_names_a_folder(cat: Path) -> None:
    manifest = _manifest(cat)
    manifest["sha256"]["media"] = "0" * 64
    _write_manifest(cat, manifest)


@case(2, "sha256['products.parquet'] is [1, 2], expected 64 lowercase hex digits")
def manifest_digest_not_hex(cat: Path) -> None:
    manifest = _manifest(cat)
    manifest["sha256"]["products.parquet"] = [1, 2]
    _write_manifest(cat, manifest)


@case(1, "products.parquet: sha256", "does not match manifest.json", "changed after the catalog was written")
def table_changed_after_write(cat: Path) -> None:
    _products().with_columns(title=pl.Series(["x", "y", "z"])).write_parquet(cat / "products.parquet")


@case(1, "counts.products is 99 but products.parquet holds 3 rows", "expected the counts the catalog was written with")
def manifest_counts_edited(cat: Path) -> None:
    manifest = _manifest(cat)
    manifest["counts"]["products"] = 99
    _write_manifest(cat, manifest)


@case(1, "counts.interactions is 3 but there is no interactions.parquet")
def table_removed_with_its_checksum(cat: Path) -> None:
    (cat / "interactions.parquet").unlink()
    manifest = _manifest(cat)
    del manifest["sha256"]["interactions.parquet"]
    _write_manifest(cat, manifest)


@case(1, "media.image is 5 but products.parquet names 2 image files")
def manifest_media_counts_edited(cat: Path) -> None:
    manifest = _manifest(cat)
    manifest["media"]["image"] = 5
    _write_manifest(cat, manifest)


@case(2, "'counts' is an array, expected an object of counts")
def manifest_counts_not_an_object(cat: Path) -> None:
    manifest = _manifest(cat)
    manifest["counts"] = [3]
    _write_manifest(cat, manifest)


@case(2, "counts.products is -1, expected a non-negative integer")
def manifest_counts_negative(cat: Path) -> None:
    manifest = _manifest(cat)
    manifest["counts"]["products"] = -1
    _write_manifest(cat, manifest)


def _named(name: object) -> Callable[[Path], None]:
    def damage(cat: Path) -> None:
        manifest = _manifest(cat)
        manifest["name"] = name
        _write_manifest(cat, manifest)

    return damage


for _id, _name, _why in (
    ("name_dotdot_evil", "../../evil", "holds a path separator"),
    ("name_with_backslash", "a\\b", "holds a path separator"),
    ("name_with_nul", "a\x00b", "holds a NUL byte or control character"),
    ("name_hidden", ".hidden", "starts with '.'"),
    ("name_empty", "", "is empty or not text"),
    ("name_too_long", "x" * 201, "has 201 characters"),
    ("name_not_text", 7, "is empty or not text"),
):
    CASES.append(Case(_id, _named(_name), 2, ("manifest.json: name ", _why, "expected a plain name: 1-200 characters")))


@case(1, "'title'", "rows 1", "empty or whitespace-only text, expected some text")
def empty_title(cat: Path) -> None:
    _replace_table(cat, "products", _products().with_columns(title=pl.Series(["red chair", "  \t", "mug"])))


@case(1, "'category'", "rows 0", "empty or whitespace-only text")
def empty_category(cat: Path) -> None:
    _replace_table(cat, "products", _products().with_columns(category=pl.Series(["", "home/lamps", "kitchen"])))


@case(0, "warning:", "'description'", "rows 2", "empty or whitespace-only text", info_code=0)
def empty_description(cat: Path) -> None:  # real catalogs have these: a warning only
    _replace_table(cat, "products", _products().with_columns(description=pl.Series(["a chair", "a lamp", ""])))


@case(1, "queries.parquet", "'text'", "rows 1", "empty or whitespace-only text")
def empty_query_text(cat: Path) -> None:
    _replace_table(cat, "queries", _queries().with_columns(text=pl.Series(["red chair", " "])))


@case(1, "media/audio/i0.wav", "truncated: the WAV header declares 3,200 bytes of samples", "expected a complete file")
def wav_truncated_halfway(cat: Path) -> None:
    path = cat / "media/audio/i0.wav"
    data = path.read_bytes()
    path.write_bytes(data[: 44 + 1600])


@case(1, "media/audio/i0.wav", "declares 2,147,483,648 bytes of samples (2,147,483,648 frames")
def wav_claiming_2_31_frames(cat: Path) -> None:
    (cat / "media/audio/i0.wav").write_bytes(_wav_claiming_frames(2**31))


@case(1, "'price'", "rows 0, 1", "price must be a finite non-negative number or null")
def infinite_prices(cat: Path) -> None:
    _replace_table(cat, "products", _products().with_columns(price=pl.Series([float("inf"), float("-inf"), None])))


@case(1, "interactions.parquet", "'value'", "rows 0, 1, 2", "value is NaN or infinite, expected a finite number or null")
def infinite_and_nan_values(cat: Path) -> None:
    _replace_table(cat, "interactions", _interactions().with_columns(
        value=pl.Series([float("inf"), float("-inf"), float("nan")])))


@case(1, "'timestamp'", "rows 0, 1", "implausible timestamp (e.g. 0001-01-01", "9999-12-31",
      "expected 1971-01-01 <= timestamp < 2100-01-01 UTC")
def timestamps_in_years_1_and_9999(cat: Path) -> None:
    stamps = [dt.datetime(1, 1, 1, tzinfo=dt.UTC), dt.datetime(9999, 12, 31, tzinfo=dt.UTC),
              dt.datetime(2024, 1, 1, tzinfo=dt.UTC)]
    _replace_table(cat, "interactions", _interactions().with_columns(
        timestamp=pl.Series(stamps, dtype=pl.Datetime("us", "UTC"))))


@case(1, "'timestamp'", "rows 2", "implausible timestamp (e.g. 1970-01-01T00:00:00+00:00)")
def timestamp_epoch_zero(cat: Path) -> None:
    stamps = [dt.datetime(2024, 1, 1, tzinfo=dt.UTC)] * 2 + [dt.datetime(1970, 1, 1, tzinfo=dt.UTC)]
    _replace_table(cat, "interactions", _interactions().with_columns(
        timestamp=pl.Series(stamps, dtype=pl.Datetime("us", "UTC"))))


@case(1, "media/: 1 file(s) added since the catalog was written: 'media/images/extra.png'")
def media_file_added(cat: Path) -> None:
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(cat / "media/images/extra.png")


@case(1, "media/: 1 file(s) changed since the catalog was written: 'media/images/i1.png'")
def media_file_swapped(cat: Path) -> None:  # still a valid image: only the digest notices
    Image.fromarray(np.full((8, 8, 3), 99, np.uint8)).save(cat / "media/images/i1.png")


@case(1, "media/: media files changed since the catalog was written", "media.sha256 cannot say which")
def media_file_swapped_and_listing_removed(cat: Path) -> None:
    Image.fromarray(np.full((8, 8, 3), 99, np.uint8)).save(cat / "media/images/i1.png")
    (cat / "media.sha256").unlink()


@case(1, "'media/images/i1.png'", "file", "does not exist")
def media_file_removed(cat: Path) -> None:
    (cat / "media/images/i1.png").unlink()


# --------------------------------------------------------------------------- running the CLI


def _run(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _assert_one_line_each(err: str, code: int) -> None:
    assert "Traceback" not in err and "internal error" not in err
    lines = err.splitlines()
    if code == 2:
        assert len(lines) == 1 and lines[0].startswith("error: "), err
    elif code == 1:
        assert all(line.startswith(("problem: ", "warning: ")) for line in lines[:-1]), err
        assert "problem(s) found" in lines[-1]
    else:
        assert all(line.startswith("warning: ") for line in lines), err


@pytest.mark.timeout(20)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_validate_names_the_problem(case: Case, catalog: Path, capsys: pytest.CaptureFixture) -> None:
    case.damage(catalog)
    code, _out, err = _run(capsys, "catalog", "validate", str(catalog), "--quiet")
    assert code == case.code, err
    _assert_one_line_each(err, code)
    for needle in case.expect:
        assert needle in err, f"{needle!r} not in {err!r}"


@pytest.mark.timeout(20)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_info_refuses_a_damaged_catalog(case: Case, catalog: Path, capsys: pytest.CaptureFixture) -> None:
    case.damage(catalog)
    code, out, err = _run(capsys, "catalog", "info", str(catalog))
    assert code == case.info_code, err
    assert "Traceback" not in err and "internal error" not in err
    if code == 2:
        assert len(err.splitlines()) == 1 and err.startswith("error: ") and not out
    else:
        assert "catalog valid" in out


@pytest.mark.timeout(20)
@pytest.mark.parametrize("case", [c for c in CASES if c.code == 2], ids=[c.id for c in CASES if c.code == 2])
def test_read_catalog_raises_one_line(case: Case, catalog: Path) -> None:
    case.damage(catalog)
    with pytest.raises(CatalogError) as exc:
        read_catalog(catalog)
    assert "\n" not in str(exc.value)
    assert case.expect[0] in str(exc.value)


def test_the_valid_catalog_has_no_problems(catalog: Path, capsys: pytest.CaptureFixture) -> None:
    assert validate_catalog(catalog, progress=False, include_warnings=True) == []
    code, out, err = _run(capsys, "catalog", "validate", str(catalog), "--quiet")
    assert (code, err) == (0, "") and out.strip() == f"{catalog}: valid"
    code, out, err = _run(capsys, "catalog", "info", str(catalog))
    assert code == 0 and "catalog valid" in out


def test_the_synthetic_catalog_validates(tmp_path: Path) -> None:
    from workbench.catalog.synthetic import SyntheticConfig, generate_synthetic

    config = SyntheticConfig(n_items=60, n_users=20, n_queries=10, seed=5, image_size=16, workers=0)
    out = generate_synthetic(tmp_path / "syn", config, progress=False)
    assert validate_catalog(out, progress=False, on_error="collect") == []
    assert _manifest(out)["media_sha256"] == media_digest(out)


def test_an_unexpected_crash_is_one_line_with_exit_3(catalog: Path, capsys, monkeypatch) -> None:
    import workbench.catalog

    def broken(*args, **kwargs):
        raise ZeroDivisionError("boom\nsecond line")

    monkeypatch.setattr(workbench.catalog, "validate_catalog", broken)
    code, _out, err = _run(capsys, "catalog", "validate", str(catalog))
    assert code == 3
    assert err.splitlines() == ["internal error: ZeroDivisionError: boom second line (a bug; run with --debug for "
                                "the traceback)"]
    with pytest.raises(ZeroDivisionError):
        main(["--debug", "catalog", "validate", str(catalog)])


# --------------------------------------------------------------------------- warnings, limits, media API


def test_warnings_never_raise_and_are_returned_only_when_asked(catalog: Path) -> None:
    empty_description(catalog)
    assert validate_catalog(catalog, progress=False) == []
    (warning,) = validate_catalog(catalog, progress=False, on_error="collect", include_warnings=True)
    assert (warning.severity, warning.column, warning.rows) == ("warning", "description", (2,))


def test_writer_refuses_what_validate_refuses(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="column 'title', rows 0: empty or whitespace-only text"):
        write_catalog(tmp_path / "a", products=_products().with_columns(title=pl.Series(["", "b", "c"])))
    with pytest.raises(CatalogError, match="implausible timestamp"):
        write_catalog(tmp_path / "b", products=_products(), interactions=_interactions().with_columns(
            timestamp=pl.Series([dt.datetime(1970, 1, 1, tzinfo=dt.UTC)] * 3, dtype=pl.Datetime("us", "UTC"))))
    with pytest.raises(CatalogError, match="catalog name '../../evil' holds a path separator"):
        write_catalog(tmp_path / "c", products=_products(), name="../../evil")
    # An empty description is accepted (and shown as a warning by validate).
    write_catalog(tmp_path / "d", products=_products().with_columns(description=pl.lit("")))
    assert not list(tmp_path.glob(".*"))


def test_limits_are_configurable(catalog: Path) -> None:
    strict = ValidationLimits(max_image_pixels=10, max_audio_seconds=0.05,
                              min_timestamp=dt.datetime(2024, 1, 1, 1, tzinfo=dt.UTC))
    problems = validate_catalog(catalog, progress=False, on_error="collect", limits=strict)
    text = "\n".join(map(str, problems))
    assert "header declares 8x8 = 64 pixels, expected at most 10" in text
    assert "lasts 0.1 s by its header, expected at most 0 s" in text
    assert "'timestamp', rows 0: implausible timestamp" in text
    with pytest.raises(MediaError, match="media/images/i0.png"):
        validate_catalog(catalog, progress=False, limits=ValidationLimits(max_image_pixels=10))


def test_media_defaults_agree_with_validation_limits() -> None:
    limits = ValidationLimits()
    assert (limits.max_image_pixels, limits.max_audio_seconds) == (MAX_IMAGE_PIXELS, MAX_AUDIO_SECONDS)


@pytest.mark.timeout(20)
def test_loaders_refuse_folders_pipes_and_nul_before_opening(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    for bad, why in ((tmp_path, "is a folder"), (tmp_path / "pipe", "not a regular file"),
                     (str(tmp_path / "a\x00b"), "NUL"), (tmp_path / "none.png", "file not found")):
        with pytest.raises(MediaError, match=why):
            load_image(bad)
        with pytest.raises(MediaError, match=why):
            load_audio(bad)


def test_a_decompression_bomb_warning_is_a_media_error(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    path.write_bytes(_tiny_png_claiming(10000, 10000))  # between PIL's warning and error limits
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(MediaError, match="big.png: refused as a decompression bomb"):
            load_image(path, max_pixels=None)


def test_long_audio_is_refused_from_its_header(tmp_path: Path) -> None:
    path = tmp_path / "long.wav"
    sf.write(path, np.zeros(8000 * 3, np.float32), 8000, subtype="PCM_U8")
    with pytest.raises(MediaError, match=r"long.wav: lasts 3.0 s by its header, expected at most 2 s"):
        load_audio(path, max_seconds=2)
    assert load_audio(path).shape == (16000 * 3,)


def test_media_digest_is_recorded_and_follows_the_files(catalog: Path) -> None:
    digest = media_digest(catalog)
    assert _manifest(catalog)["media_sha256"] == digest == sha256_file(catalog / "media.sha256")
    (catalog / "media/images/i1.png").write_bytes(b"changed")
    assert media_digest(catalog) != digest


def test_catalogs_written_before_media_digests_still_validate(catalog: Path) -> None:
    manifest = _manifest(catalog)
    del manifest["media_sha256"]
    _write_manifest(catalog, manifest)
    (catalog / "media.sha256").unlink()
    assert validate_catalog(catalog, progress=False) == []


# --------------------------------------------------------------------------- interrupted writers

WRITER = textwrap.dedent("""
    import os, sys, time
    import polars as pl
    from workbench import files
    from workbench.catalog import write_catalog, CatalogWriter

    out, mode = sys.argv[1], sys.argv[2]
    products = pl.DataFrame({"item_id": ["n"], "title": ["new"], "description": ["d"], "category": ["c"]})
    if mode == "hang":  # killed with -9 while writing
        with CatalogWriter(out, overwrite=True) as w:
            w.write_table("products", products)
            print("ready", flush=True)
            time.sleep(120)
    else:  # a file system without RENAME_EXCHANGE, killed between the two renames of the fallback
        files._exchange = lambda a, b: False
        real_replace = os.replace

        def replace(src, dst):
            if os.path.basename(os.fspath(src)).startswith(".cat.staging-"):
                os._exit(137)
            real_replace(src, dst)

        os.replace = replace
        write_catalog(out, products=products, overwrite=True)
""")


def _titles(cat: Path) -> list[str]:
    return read_catalog(cat).products.collect().get_column("title").to_list()


@pytest.mark.timeout(60)
def test_kill_9_of_a_writer_leaves_staging_that_the_next_write_removes(catalog: Path, capsys) -> None:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(catalog), "hang"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
    finally:
        proc.kill()
        proc.wait()
    assert list(catalog.parent.glob(".cat.staging-*")), "the killed writer left its staging folder"
    code, _out, err = _run(capsys, "catalog", "validate", str(catalog), "--quiet")
    assert (code, err) == (0, "")  # the old catalog is untouched
    write_catalog(catalog, products=_products(), overwrite=True)
    assert not list(catalog.parent.glob(".cat.*"))


@pytest.mark.timeout(60)
def test_a_crash_between_the_two_renames_is_named_and_repaired(catalog: Path, capsys) -> None:
    proc = subprocess.run([sys.executable, "-c", WRITER, str(catalog), "crash"], capture_output=True, text=True)
    assert proc.returncode == 137, proc.stderr
    assert not catalog.exists()
    (backup,) = catalog.parent.glob(".cat.old-*")
    code, _out, err = _run(capsys, "catalog", "validate", str(catalog), "--quiet")
    assert code == 2
    assert err.splitlines() == [
        f"error: catalog folder {catalog} does not exist: a write was interrupted while replacing it and the previous "
        f"catalog waits at {backup}; the next write to {catalog} restores it (or rename it back by hand)"
    ]
    with pytest.raises(CatalogError, match="already exists .restored from an interrupted write"):
        with CatalogWriter(catalog) as w:
            w.write_table("products", _products())
    assert _titles(catalog) == ["red chair", "blue lamp", "green mug"]
    assert not list(catalog.parent.glob(".cat.*"))
    assert validate_catalog(catalog, progress=False) == []


def test_staging_property_is_the_locked_staging_folder(tmp_path: Path) -> None:
    with CatalogWriter(tmp_path / "cat") as w:
        assert w.staging.name.startswith(".cat.staging-") and w.staging.is_dir()
        assert w.media_dir == w.staging / "media" and w.truth_dir == w.staging / "truth"
        w.write_table("products", _products().with_columns(image=pl.lit(None, pl.Utf8), audio=pl.lit(None, pl.Utf8)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cat"]
    assert not (tmp_path / "cat" / ".writer.lock").exists()
    shutil.rmtree(tmp_path / "cat")
