"""MovieLens-100k (`u.data`, `u.item`, `u.user`) to the workbench catalog contract.

Products are movies: `item_id` is the MovieLens id as text, `title` the title as
GroupLens writes it ("Toy Story (1995)"), `description` names the genres and the
release year, `category` is "movies/<first genre>" (genres in `u.item` column
order), and `attributes` holds all genres, the year, release date and IMDb URL.
Ratings become interactions with `event="rating"` and `value` = the 1..5 stars,
in `u.data` row order (so seeded splits match other tools reading the same file).

The contract has no users table: `u.user` is read only to report users that have
no ratings (they cannot appear in a catalog made of interactions).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl

from workbench.catalog import write_catalog
from workbench.catalog.loaders import ImportReport
from workbench.errors import CatalogError

GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
_ITEM_FIELDS = 5 + len(GENRES)


def _require(src: Path, name: str) -> Path:
    path = src / name
    if not path.is_file():
        raise CatalogError(f"{path}: missing; a MovieLens-100k folder holds u.data, u.item and u.user")
    return path


def _read_items(path: Path, report: ImportReport) -> pl.DataFrame:
    rows = []
    text = path.read_bytes().decode("latin-1")  # GroupLens ships u.item in latin-1
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) != _ITEM_FIELDS:
            raise CatalogError(
                f"{path}, line {lineno}: {len(fields)} '|'-separated fields, expected {_ITEM_FIELDS} "
                "(id|title|release date|video date|url|19 genre flags)"
            )
        movie_id, title, release, _video, url = fields[:5]
        flags = fields[5:]
        if not movie_id.strip().isdigit() or any(f not in ("0", "1") for f in flags):
            raise CatalogError(f"{path}, line {lineno}: expected an integer id and 0/1 genre flags")
        genres = [g for g, f in zip(GENRES, flags, strict=True) if f == "1"]
        date = None
        if release.strip():
            try:
                date = datetime.strptime(release.strip(), "%d-%b-%Y").date()
            except ValueError as exc:
                raise CatalogError(f"{path}, line {lineno}: release date {release!r} is not DD-Mon-YYYY") from exc
        else:
            report.repair("movie without release date (year left null)")
        if not genres:
            report.repair("movie without genre flags (category movies/unknown)")
            genres = ["unknown"]
        title = title.strip() or f"MovieLens item {movie_id}"
        year = date.year if date else None
        description = f"{title}. Genres: {', '.join(genres)}." + (f" Released in {year}." if year else "")
        rows.append({
            "item_id": movie_id.strip(),
            "title": title,
            "description": description,
            "category": f"movies/{genres[0]}",
            "brand": None,
            "price": None,
            "attributes": json.dumps(
                {"genres": genres, "year": year, "release_date": date.isoformat() if date else None,
                 "imdb_url": url.strip() or None},
                sort_keys=True,
            ),
            "image": None,
            "audio": None,
        })
    if not rows:
        raise CatalogError(f"{path}: no movies; expected one '|'-separated line per movie")
    df = pl.DataFrame(rows, schema={
        "item_id": pl.Utf8, "title": pl.Utf8, "description": pl.Utf8, "category": pl.Utf8,
        "brand": pl.Utf8, "price": pl.Float64, "attributes": pl.Utf8, "image": pl.Utf8, "audio": pl.Utf8,
    })
    dup = df.filter(pl.col("item_id").is_duplicated())
    if dup.height:
        raise CatalogError(f"{path}: movie id {dup['item_id'][0]!r} appears more than once; expected unique ids")
    return df


def _read_ratings(path: Path) -> pl.DataFrame:
    try:
        raw = np.loadtxt(path, dtype=np.int64, delimiter="\t", ndmin=2)
    except ValueError as exc:
        raise CatalogError(f"{path}: expected tab-separated integer rows user\\titem\\trating\\tunix time ({exc})") from exc
    if raw.shape[1] != 4:
        raise CatalogError(f"{path}: {raw.shape[1]} columns, expected 4 (user, item, rating, unix time)")
    if raw.shape[0] == 0:
        raise CatalogError(f"{path}: no ratings")
    bad = np.flatnonzero((raw[:, 2] < 1) | (raw[:, 2] > 5))
    if bad.size:
        raise CatalogError(f"{path}, line {bad[0] + 1}: rating {raw[bad[0], 2]}, expected 1..5")
    return pl.DataFrame({
        "user_id": raw[:, 0].astype(str),
        "item_id": raw[:, 1].astype(str),
        "timestamp": pl.from_epoch(pl.Series(raw[:, 3]), time_unit="s")
        .cast(pl.Datetime("us")).dt.replace_time_zone("UTC"),
        "event": np.full(raw.shape[0], "rating"),
        "value": raw[:, 2].astype(np.float64),
    })


def _read_user_ids(path: Path) -> set[str]:
    ids = set()
    for lineno, line in enumerate(path.read_bytes().decode("latin-1").splitlines(), start=1):
        if not line.strip():
            continue
        user = line.split("|")[0].strip()
        if not user.isdigit():
            raise CatalogError(f"{path}, line {lineno}: user id {user!r}, expected an integer")
        ids.add(user)
    return ids


def import_movielens(src: Path, out: Path, *, overwrite: bool = False) -> ImportReport:
    """Convert a MovieLens-100k folder `src` into a catalog at `out` (atomically)."""
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise CatalogError(f"{src}: not a folder; expected the unpacked ml-100k folder")
    report = ImportReport(format="movielens", source=str(src), out=str(out))
    products = _read_items(_require(src, "u.item"), report)
    ratings = _read_ratings(_require(src, "u.data"))
    known = ratings["item_id"].is_in(products["item_id"].implode())
    if not known.all():
        report.drop("rating of a movie missing from u.item", int((~known).sum()))
        ratings = ratings.filter(known)
    dup = int(ratings.select(pl.struct("user_id", "item_id").is_duplicated().sum()).item())
    if dup:
        report.notes.append(f"{dup} ratings repeat a (user, movie) pair; all kept")
    users_path = src / "u.user"
    if users_path.is_file():
        no_ratings = _read_user_ids(users_path) - set(ratings["user_id"].unique().to_list())
        if no_ratings:
            report.drop("u.user row without ratings (the catalog has no users table)", len(no_ratings))
            report.notes.append("u.user ids without ratings: " + ", ".join(sorted(no_ratings, key=int)[:10]))
    else:
        report.notes.append("u.user missing: demographics are not part of the catalog anyway")
    unrated = products.filter(~pl.col("item_id").is_in(ratings["item_id"].implode())).height
    if unrated:
        report.notes.append(f"{unrated} movies have no ratings (kept in products)")
    write_catalog(
        out, products=products, interactions=ratings, name="movielens-100k",
        source=f"MovieLens 100k (GroupLens), converted from {src.name}",
        licence="GroupLens research licence: research use only, no redistribution",
        overwrite=overwrite,
    )
    report.counts = {
        "products": products.height,
        "interactions": ratings.height,
        "users": ratings["user_id"].n_unique(),
    }
    return report
