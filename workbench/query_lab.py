"""The query lab: type a query, pick or upload an image or a sound, weigh the modalities, look.

A headless core and a thin widget on top of it (notebook 08):

- `QueryLab` holds what earlier stages wrote (the catalog, `<work>/embeddings/items.parquet`,
  the encoder of `<work>/encoders`, the index of `<work>/index`) and turns a query into a
  `LabResult`: ranked `Card`s with per-modality contributions and relevance marks.
  `QueryLab.from_work_dir(catalog_dir, work_dir)` loads it all.
- `build_widget(lab)` returns a `LabWidget` (ipywidgets, imported only then) whose
  search button, sliders and "more like this" buttons call the core and draw its cards.

**The score, and what the bars mean.** The query's parts (its words, image and sound,
each encoded by its tower into the shared space) are averaged into one unit vector
`q`; "more like this" uses the item's fused vector instead. An item's score is a
weighted mean of cosines over the per-modality vectors it has::

    score(item) = sum_m  w~_m * cos(q, v_m(item)),   w~_m = w_m / sum_{m' the item has} w_m'

where `w_m` are the slider weights. A card's bar for modality `m` is the term
`w~_m * cos(q, v_m)`: the bars add up to the score exactly, a modality the item
lacks has no bar (its weight goes to the modalities the item has rather than
counting as a zero), and an item that has none of the weighted modalities is left
out. Cosines can be negative, so can a bar.

**Candidates.** With an index (`<work>/index`, notebook 06) and `LabConfig.candidates`
set, the index proposes that many items by the fused vector (its own score) and the
lab re-scores them as above; `LabResult.exhaustive` says whether that covered every
item. Without an index, or with `candidates=None`, every item is scored.

**Relevance.** When the query's text equals a catalog query's text (whitespace and
case aside), or a catalog query was picked by id, each card is marked with that
query's graded relevance from the qrels (several catalog queries with the same text:
the highest grade any of them gives). `Card.relevance` is `None` for an item the
qrels do not list, `LabResult.judged` whether the query has qrels at all.

**Bad input** raises a `workbench.errors.QueryError` subclass with a one-line
message, which the widget shows in place of results: `EmptyQueryError` (no words,
no image, no sound), `QueryMediaError` (an upload that is empty or not an image /
not audio, a sound of 0 s), `ZeroWeightsError` (every weight 0); a weight that is
negative, not finite or names a modality the lab lacks is a plain `QueryError`.
"""

from __future__ import annotations

import base64
import html
import math
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from workbench.catalog import Catalog, read_catalog
from workbench.catalog.schema import MODALITIES
from workbench.errors import (
    CatalogError,
    ConfigError,
    EmptyQueryError,
    MediaError,
    QueryError,
    QueryMediaError,
    ZeroWeightsError,
)
from workbench.index import embedding_fingerprint, load_index

MEDIA = ("image", "audio")  # the query parts that come as files
# Colours of the contribution bars, one per modality (negative terms are drawn grey).
COLOURS = {"text": "#4c78a8", "image": "#f58518", "audio": "#54a24b"}
AUDIO_MIME = {".wav": "audio/wav", ".flac": "audio/flac", ".ogg": "audio/ogg", ".mp3": "audio/mpeg",
              ".m4a": "audio/mp4", ".opus": "audio/ogg"}
_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,5}$")


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class LabConfig:
    """Settings of a query lab.

    k: cards shown per query. candidates: items the index proposes and the lab re-scores
    (None: score every item; ignored without an index). thumbnail: card image side in
    pixels. choices: catalog queries and products offered in each dropdown (the first
    by id; typing a catalog query's text finds its qrels whatever this is).
    max_audio_bytes: a product's clip larger than this is re-encoded (its first
    `audio_preview_s` seconds, 16 kHz WAV) before it is embedded in a card.
    device: where the towers encode queries ("cpu": one query at a time gains nothing
    from a GPU and spares a CUDA start).
    """

    k: int = 12
    candidates: int | None = 200
    thumbnail: int = 96
    choices: int = 500
    max_audio_bytes: int = 1_000_000
    audio_preview_s: float = 10.0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if not isinstance(self.k, int) or self.k < 1:
            raise ConfigError(f"LabConfig.k={self.k!r}: expected a positive integer")
        if self.candidates is not None and (not isinstance(self.candidates, int) or self.candidates < self.k):
            raise ConfigError(f"LabConfig.candidates={self.candidates!r}: expected None or an integer >= k={self.k}")
        if not isinstance(self.thumbnail, int) or not 16 <= self.thumbnail <= 512:
            raise ConfigError(f"LabConfig.thumbnail={self.thumbnail!r}: expected pixels in 16..512")
        if not isinstance(self.choices, int) or self.choices < 0:
            raise ConfigError(f"LabConfig.choices={self.choices!r}: expected 0 or more")
        if self.max_audio_bytes < 0 or not self.audio_preview_s > 0:
            raise ConfigError(
                f"LabConfig.max_audio_bytes={self.max_audio_bytes}, audio_preview_s={self.audio_preview_s}: "
                "expected bytes >= 0 and seconds > 0"
            )


@dataclass(frozen=True)
class Upload:
    """An uploaded file: its name (for messages) and its bytes."""

    name: str
    content: bytes

    @classmethod
    def from_widget(cls, value: Any) -> Upload | None:
        """The first file of an `ipywidgets.FileUpload` value (8.x: a tuple of dicts; 7.x: a dict)."""
        if not value:
            return None
        if isinstance(value, Mapping):  # ipywidgets 7: {name: {"metadata": ..., "content": ...}}
            name, entry = next(iter(value.items()))
            return cls(str(name), bytes(entry["content"]))
        entry = value[0]
        return cls(str(entry.get("name") or "upload"), bytes(entry["content"]))


MediaQuery = str | Path | Upload  # a file (e.g. a product's own image) or an upload


@dataclass(frozen=True)
class Card:
    """One result. `contributions` has a term for each modality the item has (they add up
    to `score`); `relevance` is the qrels grade, None where the qrels do not list the item."""

    rank: int
    item_id: str
    title: str
    score: float
    contributions: dict[str, float]
    relevance: int | None = None
    image: str | None = None  # catalog-relative media paths
    audio: str | None = None
    fusion_weights: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class LabResult:
    """What a search returned, and what it was."""

    label: str  # the query, in words
    cards: tuple[Card, ...]
    weights: dict[str, float]  # as given, one per lab modality
    modalities: tuple[str, ...]  # the lab's item modalities
    query_ids: tuple[str, ...] = ()  # the catalog queries whose qrels mark the cards
    judged: bool = False  # whether those queries have qrels
    n_relevant: int = 0  # items their qrels grade 1 or more
    n_candidates: int = 0  # items scored
    exhaustive: bool = True  # every item was scored (no index candidates)
    seed_item: str | None = None  # "more like this" of this item

    @property
    def n_marked_relevant(self) -> int:
        """Cards with a grade of 1 or more."""
        return sum(1 for c in self.cards if (c.relevance or 0) > 0)

    def summary(self) -> str:
        """One line for the widget: what was searched, how, and the relevance marks."""
        parts = [f"{len(self.cards)} results for {self.label}"]
        if self.judged:
            src = self.query_ids[0] if len(self.query_ids) == 1 else f"{len(self.query_ids)} catalog queries"
            parts.append(f"relevance from {src}: {self.n_marked_relevant} of {len(self.cards)} shown are relevant "
                         f"({self.n_relevant} in the qrels)")
        elif self.query_ids:
            parts.append(f"catalog query {self.query_ids[0]} has no qrels")
        parts.append("every item scored" if self.exhaustive
                     else f"{self.n_candidates} candidates from the index, re-scored")
        return " · ".join(parts)

    def to_frame(self) -> pl.DataFrame:
        """rank, item_id, title, score, one contribution_<m> per lab modality (null where the
        item lacks it), relevance."""
        rows = {
            "rank": [c.rank for c in self.cards],
            "item_id": [c.item_id for c in self.cards],
            "title": [c.title for c in self.cards],
            "score": [c.score for c in self.cards],
        }
        for m in self.modalities:
            rows[f"contribution_{m}"] = [c.contributions.get(m) for c in self.cards]
        rows["relevance"] = [c.relevance for c in self.cards]
        schema = {"rank": pl.Int32, "item_id": pl.Utf8, "title": pl.Utf8, "score": pl.Float64,
                  **{f"contribution_{m}": pl.Float64 for m in self.modalities}, "relevance": pl.Int8}
        return pl.DataFrame(rows, schema=schema)


def _norm_text(text: str) -> str:
    return " ".join(text.split()).casefold()


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def _to_numpy(vectors: Any) -> np.ndarray:
    """Encoder output (a torch tensor or an array) as float32 numpy."""
    if hasattr(vectors, "detach"):
        vectors = vectors.detach().float().cpu().numpy()
    return np.asarray(vectors, dtype=np.float32)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


# --------------------------------------------------------------------------- the core


class QueryLab:
    """Queries in, ranked cards with per-modality contributions and relevance marks out.

    `embeddings` is the frame of `<work>/embeddings/items.parquet` (item_id, a list[f32]
    column per modality, fused, weight_<m>); `encoder` encodes queries (`load_encoder`;
    None: only "more like this"); `index` (`load_index`) proposes candidates.
    """

    def __init__(
        self,
        catalog: Catalog,
        embeddings: pl.DataFrame,
        encoder: Any | None = None,
        index: Any | None = None,
        config: LabConfig | None = None,
    ) -> None:
        self.catalog = catalog
        self.encoder = encoder
        self.index = index
        self.config = config or LabConfig()
        if "item_id" not in embeddings.columns or "fused" not in embeddings.columns:
            raise CatalogError(f"item embeddings: expected columns item_id and fused; found {embeddings.columns}")
        frame = embeddings.filter(pl.col("fused").is_not_null())
        if frame.height == 0:
            raise CatalogError("item embeddings: no item has a fused vector; re-run notebooks 02 and 03")
        self.item_ids: list[str] = frame["item_id"].cast(pl.Utf8).to_list()
        self._row = {item: i for i, item in enumerate(self.item_ids)}
        raw = self._matrix(frame, "fused", normalise=False)[0]
        # what `load_index(expected_vectors=)` compares: the vectors as the file holds them
        self.fingerprint = embedding_fingerprint(raw)
        self.fused = self._matrix(frame, "fused")[0]
        self.d = self.fused.shape[1]
        # per-modality item vectors (zero rows where missing) and which items have them;
        # a modality no item has vectors for is not one of the lab's
        self.vectors: dict[str, np.ndarray] = {}
        self.masks: dict[str, np.ndarray] = {}
        for m in MODALITIES:
            if m in frame.columns and frame[m].null_count() < frame.height:
                self.vectors[m], self.masks[m] = self._matrix(frame, m)
                if self.vectors[m].shape[1] != self.d:
                    raise CatalogError(f"item embeddings: {m} vectors have {self.vectors[m].shape[1]} dimensions, "
                                       f"fused ones {self.d}; expected one shared space (re-run notebooks 02 and 03)")
        self.modalities: tuple[str, ...] = tuple(self.vectors)
        weights = [f"weight_{m}" for m in self.modalities if f"weight_{m}" in frame.columns]
        self._fusion_weights = frame.select(weights).to_numpy() if weights else None
        self._fusion_names = [w.removeprefix("weight_") for w in weights]
        towers = tuple(getattr(encoder, "modalities", ())) if encoder is not None else ()
        # a query can come as words or media only where the encoder has the tower and the
        # items have vectors of that modality to compare with (the shared space is the towers')
        self.query_modalities: tuple[str, ...] = tuple(m for m in self.modalities if m in towers)
        products = catalog.products.select("item_id", "title", "image", "audio").collect()
        self._products = {r[0]: r for r in products.iter_rows()}
        self._queries, self._qrels, self._by_text = self._read_queries(catalog)
        self._thumbs: dict[str, str | None] = {}
        self._sounds: dict[str, str | None] = {}

    # ---- loading

    @classmethod
    def from_work_dir(
        cls, catalog_dir: str | Path, work_dir: str | Path, config: LabConfig | None = None
    ) -> QueryLab:
        """The lab over what notebooks 02, 03 and 06 wrote in `work_dir` (encoders optional,
        index optional: without it every item is scored)."""
        config = config or LabConfig()
        work = Path(work_dir)
        path = work / "embeddings" / "items.parquet"
        if not path.is_file():
            raise CatalogError(f"{path}: item embeddings not found; run notebooks 02 and 03 first")
        embeddings = pl.read_parquet(path)
        encoder = None
        if (work / "encoders").is_dir():
            from workbench.encoders import load_encoder

            # queries are encoded by the towers alone, so a fusion is not needed here
            encoder = load_encoder(work / "encoders", device=config.device, with_fusion=False)
        lab = cls(read_catalog(catalog_dir), embeddings, encoder, None, config)
        if (work / "index").is_dir():
            lab.index = load_index(work / "index", expected_vectors=lab.fingerprint)
        return lab

    @staticmethod
    def _matrix(frame: pl.DataFrame, column: str, normalise: bool = True) -> tuple[np.ndarray, np.ndarray]:
        s = frame[column]
        ok = s.is_not_null().to_numpy()
        present = s.drop_nulls()
        lengths = present.list.len().to_numpy()
        d = int(lengths.max())
        if int(lengths.min()) != d:
            raise CatalogError(f"item embeddings: column {column!r} holds vectors of different lengths")
        out = np.zeros((frame.height, d), dtype=np.float32)
        values: np.ndarray = present.list.to_array(d).to_numpy().astype(np.float32, copy=False)
        if normalise:  # cosines, whatever the writer stored
            norms = np.linalg.norm(values, axis=1, keepdims=True)
            values = values / np.where(norms > 0, norms, 1.0)
        out[ok] = values
        return out, ok

    @staticmethod
    def _read_queries(cat: Catalog):
        empty = pl.DataFrame(schema={"query_id": pl.Utf8, "text": pl.Utf8})
        queries = cat.queries.select("query_id", "text").collect().sort("query_id") if cat.queries is not None else empty
        qrels: dict[str, dict[str, int]] = {}
        if cat.qrels is not None:
            for qid, item, grade in cat.qrels.select("query_id", "item_id", "relevance").collect().iter_rows():
                qrels.setdefault(qid, {})[item] = int(grade)
        by_text: dict[str, list[str]] = {}
        for qid, text in queries.iter_rows():
            by_text.setdefault(_norm_text(text), []).append(qid)
        return queries, qrels, by_text

    # ---- what the lab offers

    def default_weights(self) -> dict[str, float]:
        """Equal weights, one per lab modality."""
        return {m: 1.0 for m in self.modalities}

    def query_choices(self) -> list[tuple[str, str]]:
        """(label, query_id) of the first `config.choices` catalog queries by id."""
        rows = self._queries.head(self.config.choices).iter_rows()
        return [(f"{qid} · {text[:60]}", qid) for qid, text in rows]

    def query_text(self, query_id: str) -> str:
        hit = self._queries.filter(pl.col("query_id") == query_id)
        if hit.height == 0:
            raise QueryError(f"catalog query {query_id!r}: not in the catalog's queries")
        return hit.item(0, "text")

    def media_choices(self, modality: str) -> list[tuple[str, str]]:
        """(label, item_id) of the first `config.choices` products (by id) with `modality` media
        that the encoder can read as a query."""
        if modality not in self.query_modalities or modality not in MEDIA:
            return []
        col = 2 if modality == "image" else 3  # product rows: item_id, title, image, audio
        ids = sorted(i for i, row in self._products.items() if row[col] is not None and i in self._row)
        return [(f"{i} · {self._products[i][1][:40]}", i) for i in ids[: self.config.choices]]

    def describe(self) -> dict[str, Any]:
        """Counts and settings, for a notebook to print (no trained numbers)."""
        return {
            "items": len(self.item_ids),
            "modalities": list(self.modalities),
            "query_modalities": list(self.query_modalities),
            "catalog_queries": self._queries.height,
            "queries_with_qrels": sum(1 for q in self._queries["query_id"] if q in self._qrels),
            "index": getattr(self.index, "kind", None),
            "candidates": self.config.candidates if self.index is not None else None,
            "k": self.config.k,
        }

    # ---- queries

    def _check_weights(self, weights: Mapping[str, float] | None) -> dict[str, float]:
        if weights is None:
            return self.default_weights()
        out = {m: 0.0 for m in self.modalities}  # a modality left out weighs nothing
        for m, w in weights.items():
            if m not in self.modalities:
                raise QueryError(f"weight for {m!r}: this lab has no {m} vectors "
                                 f"(modalities: {', '.join(self.modalities)})")
            if not isinstance(w, int | float) or not math.isfinite(w) or w < 0:
                raise QueryError(f"weight for {m}={w!r}: expected a finite number, 0 or more")
            out[m] = float(w)
        if not any(out.values()):
            raise ZeroWeightsError("every modality weight is 0: move at least one slider above 0")
        return out

    def _media_file(self, modality: str, media: MediaQuery, tmp: Path) -> tuple[Path, str]:
        """(a file to decode, its name for messages); an upload is written to `tmp` first."""
        what = "image" if modality == "image" else "sound"
        if isinstance(media, Upload):
            if not media.content:
                raise QueryMediaError(f"the uploaded {what} {media.name!r} is empty (0 bytes)")
            suffix = m.group(0) if (m := _SUFFIX.search(media.name)) else ""
            path = tmp / f"upload-{modality}{suffix}"
            path.write_bytes(media.content)
            return path, f"the uploaded {what} {media.name!r}"
        return Path(media), f"the {what} {Path(media).name!r}"

    def _encode_media(self, modality: str, media: MediaQuery) -> np.ndarray:
        from workbench.media import audio_duration

        if modality not in self.query_modalities:
            raise QueryError(f"this lab cannot search by {modality}: the encoder has no {modality} tower "
                             f"or no item has {modality} vectors")
        encoder = self.encoder
        if encoder is None:  # the query modalities are the encoder's towers
            raise QueryError("no encoder in <work>/encoders (run notebook 02): only 'more like this' works")
        with tempfile.TemporaryDirectory(prefix="workbench-query-") as tmp:
            path, named = self._media_file(modality, media, Path(tmp))
            try:
                if modality == "image":
                    vec = encoder.encode_images([path])
                else:
                    # the tower pads a short clip with silence: an empty one would pass unnoticed
                    if audio_duration(path) <= 0:
                        raise QueryMediaError(f"{named} lasts 0 s: expected a clip with some sound")
                    vec = encoder.encode_audio([path])
            except QueryMediaError:
                raise
            except MediaError as exc:
                kind = "an image (PNG, JPEG, WebP...)" if modality == "image" else "audio (WAV, FLAC or OGG)"
                detail = str(exc).split(": ", 1)[-1]
                raise QueryMediaError(_one_line(f"{named} cannot be read: expected {kind} ({detail})")) from exc
        return _to_numpy(vec)[0]

    def query_vector(
        self, text: str = "", image: MediaQuery | None = None, audio: MediaQuery | None = None
    ) -> np.ndarray:
        """The unit query vector: the mean of the encoded parts given (words, image, sound)."""
        text = text if isinstance(text, str) else ""
        if not text.strip() and image is None and audio is None:
            raise EmptyQueryError("nothing to search for: type some words, or pick or upload an image or a sound")
        if self.encoder is None:
            raise QueryError("no encoder in <work>/encoders (run notebook 02): only 'more like this' works")
        parts = []
        if text.strip():
            if "text" not in self.query_modalities:
                raise QueryError("this lab cannot search by words: the encoder has no text tower")
            parts.append(_to_numpy(self.encoder.encode_text([text.strip()]))[0])
        for modality, media in (("image", image), ("audio", audio)):
            if media is not None:
                parts.append(self._encode_media(modality, media))
        q = np.mean([_unit(p.astype(np.float32)) for p in parts], axis=0)
        if not np.linalg.norm(q) > 1e-6:
            raise QueryError("the query's parts cancel out (their mean vector is zero): search with one of them")
        return _unit(q).astype(np.float32)

    def search(
        self,
        text: str = "",
        image: MediaQuery | None = None,
        audio: MediaQuery | None = None,
        weights: Mapping[str, float] | None = None,
        query_id: str | None = None,
    ) -> LabResult:
        """Search by words and/or an image and/or a sound. `query_id` (a catalog query picked
        from a list) marks relevance from its qrels; otherwise the text is matched against
        the catalog's query texts."""
        w = self._check_weights(weights)  # before encoding: a bad slider is the cheaper news
        q = self.query_vector(text, image, audio)
        if query_id is not None:
            self.query_text(query_id)  # refuses an unknown id
            qids = (query_id,)
        else:
            qids = tuple(self._by_text.get(_norm_text(text), ())) if text.strip() else ()
        bits = [repr(text.strip())] if text.strip() else []
        for name, media in (("image", image), ("sound", audio)):
            if media is not None:
                bits.append(f"{name} {media.name if isinstance(media, Upload) else Path(media).name!r}")
        return self.rank(q, w, " + ".join(bits), query_ids=qids)

    def more_like_this(self, item_id: str, weights: Mapping[str, float] | None = None) -> LabResult:
        """Items like `item_id`: its fused vector is the query; the item itself is left out."""
        w = self._check_weights(weights)
        if item_id not in self._row:
            raise QueryError(f"item {item_id!r}: not among the lab's {len(self.item_ids)} items with vectors")
        title = self._products.get(item_id, (item_id, item_id))[1]
        return self.rank(self.fused[self._row[item_id]], w, f"more like {item_id} ({title})",
                         exclude=(item_id,), seed_item=item_id)

    # ---- ranking

    def _candidates(self, q: np.ndarray, extra: int) -> tuple[np.ndarray, bool]:
        n = len(self.item_ids)
        c = self.config.candidates
        if self.index is None or c is None or c + extra >= n:
            return np.arange(n), True
        ids, _ = self.index.search(q[None, :], min(c + extra, self.index.n_items))
        rows = [self._row[i] for i in ids[0] if i in self._row]  # "" pads a short ScaNN list
        return np.asarray(rows, dtype=np.int64), False

    def rank(
        self,
        q: np.ndarray,
        weights: Mapping[str, float],
        label: str,
        query_ids: Sequence[str] = (),
        exclude: Sequence[str] = (),
        seed_item: str | None = None,
    ) -> LabResult:
        """Score candidates for the unit vector `q` (see the module docstring) and build the cards."""
        w = self._check_weights(weights)
        rows, exhaustive = self._candidates(q, len(exclude))
        rows = np.sort(rows)
        if exclude:
            drop = {self._row[i] for i in exclude if i in self._row}
            rows = np.asarray([r for r in rows if r not in drop], dtype=np.int64)
        mods = self.modalities
        cos = np.stack([self.vectors[m][rows] @ q for m in mods], axis=1)  # (c, M)
        has = np.stack([self.masks[m][rows] for m in mods], axis=1)
        wm = has * np.asarray([w[m] for m in mods], dtype=np.float64)
        total = wm.sum(axis=1)
        keep = total > 0  # an item with none of the weighted modalities cannot be scored
        rows, cos, has, wm, total = rows[keep], cos[keep], has[keep], wm[keep], total[keep]
        contrib = wm / total[:, None] * cos
        score = contrib.sum(axis=1)
        ids = np.asarray(self.item_ids, dtype=object)[rows]
        # best first; rows are in file order (sorted above), so a stable sort breaks ties by
        # the items' order in the embeddings file, never by the order candidates came in
        order = np.argsort(-np.round(score, 6), kind="stable")[: self.config.k]
        grades, judged, n_relevant = self._grades(query_ids)
        cards = []
        for rank, j in enumerate(order, 1):
            item = str(ids[j])
            _, title, image, audio = self._products.get(item, (item, item, None, None))
            cards.append(Card(
                rank=rank, item_id=item, title=title, score=float(score[j]),
                contributions={m: float(contrib[j, k]) for k, m in enumerate(mods) if has[j, k]},
                relevance=grades.get(item) if judged else None,
                image=image if "image" in self.modalities else None,
                audio=audio if "audio" in self.modalities else None,
                fusion_weights=self._fusion_of(int(rows[j])),
            ))
        return LabResult(label=label, cards=tuple(cards), weights=w,
                         modalities=mods, query_ids=tuple(query_ids), judged=judged, n_relevant=n_relevant,
                         n_candidates=int(len(rows)), exhaustive=exhaustive, seed_item=seed_item)

    def _grades(self, query_ids: Sequence[str]) -> tuple[dict[str, int], bool, int]:
        grades: dict[str, int] = {}
        judged = False
        for qid in query_ids:
            if qid in self._qrels:
                judged = True
                for item, g in self._qrels[qid].items():
                    grades[item] = max(g, grades.get(item, 0))
        return grades, judged, sum(1 for g in grades.values() if g > 0)

    def _fusion_of(self, row: int) -> dict[str, float]:
        if self._fusion_weights is None:
            return {}
        vals = self._fusion_weights[row]
        return {m: float(v) for m, v in zip(self._fusion_names, vals, strict=True) if v is not None and v == v}

    # ---- rendering (HTML with media inlined as data URIs: works offline)

    def thumbnail(self, item_id: str) -> str | None:
        """A product's image as a JPEG data URI (cached; None without a readable image)."""
        if item_id not in self._thumbs:
            from workbench.viz import image_data_uri

            rel = self._products.get(item_id, (None, None, None, None))[2]
            uri = None
            if rel is not None:
                try:
                    uri = image_data_uri(self.catalog.media_path(rel), size=self.config.thumbnail, fmt="jpeg")
                except MediaError:
                    uri = None
            self._thumbs[item_id] = uri
        return self._thumbs[item_id]

    def sound(self, item_id: str) -> str | None:
        """A product's audio as a data URI for an HTML player (cached; None without audio)."""
        if item_id not in self._sounds:
            rel = self._products.get(item_id, (None, None, None, None))[3]
            self._sounds[item_id] = self._sound_uri(rel) if rel is not None else None
        return self._sounds[item_id]

    def _sound_uri(self, rel: str) -> str | None:
        try:
            path = self.catalog.media_path(rel)
            mime = AUDIO_MIME.get(path.suffix.lower())
            if mime is not None and path.stat().st_size <= self.config.max_audio_bytes:
                data = path.read_bytes()
            else:  # too long to inline, or a format browsers may not play: a short WAV instead
                from workbench.catalog.profiling import wav_bytes
                from workbench.media import AUDIO_SAMPLE_RATE, load_audio

                wave = load_audio(path, AUDIO_SAMPLE_RATE)[: int(self.config.audio_preview_s * AUDIO_SAMPLE_RATE)]
                data, mime = wav_bytes(wave, AUDIO_SAMPLE_RATE), "audio/wav"
        except (MediaError, OSError):
            return None
        return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")

    def card_html(self, card: Card, judged: bool = False, audio: bool = True) -> str:
        """One card: thumbnail, title, score, audio player, contribution bars, relevance mark."""
        size = self.config.thumbnail
        thumb = self.thumbnail(card.item_id) if card.image is not None else None
        img = (f'<img class="wb-thumb" src="{thumb}" width="{size}" height="{size}" alt="">' if thumb else
               f'<div class="wb-thumb wb-noimage" style="width:{size}px;height:{size}px;background:#eee;'
               f'color:#888;font-size:11px;line-height:{size}px;text-align:center">no image</div>')
        player = ""
        if audio and card.audio is not None and (uri := self.sound(card.item_id)):
            player = (f'<audio class="wb-audio" controls preload="none" src="{uri}" '
                      'style="width:100%;height:28px"></audio>')
        scale = max(1e-9, max(abs(v) for v in card.contributions.values())) if card.contributions else 1.0
        bars = []
        for m in self.modalities:
            if m not in card.contributions:
                continue  # the item has no vector of this modality: no bar
            v = card.contributions[m]
            width = 100.0 * abs(v) / scale
            colour = COLOURS[m] if v >= 0 else "#999"
            bars.append(
                f'<div class="wb-bar" data-modality="{m}" title="{m}: w·cos = {v:+.3f}" '
                'style="display:flex;align-items:center;gap:4px;font-size:10px">'
                f'<span style="width:34px">{m}</span>'
                f'<span style="flex:1;background:#f2f2f2;height:8px"><span style="display:block;height:8px;'
                f'width:{width:.1f}%;background:{colour}"></span></span>'
                f'<span style="width:38px;text-align:right">{v:+.3f}</span></div>'
            )
        mark = ""
        if judged:
            if card.relevance is None:
                mark = '<span class="wb-rel" data-relevance="" style="color:#888">not in qrels</span>'
            else:
                colour = "#2e7d32" if card.relevance > 0 else "#c62828"
                sign = "✓" if card.relevance > 0 else "✗"
                mark = (f'<span class="wb-rel" data-relevance="{card.relevance}" style="color:{colour}">'
                        f'{sign} relevance {card.relevance}</span>')
        fusion = " · ".join(f"{m} {v:.2f}" for m, v in card.fusion_weights.items())
        tip = html.escape(f"{card.item_id}: {card.title}" + (f" (fusion weights: {fusion})" if fusion else ""))
        return (
            f'<div class="wb-card" data-item="{html.escape(card.item_id)}" title="{tip}" '
            f'style="width:{max(size, 150) + 16}px;padding:6px;border:1px solid #ddd;border-radius:6px;'
            'font-family:sans-serif;font-size:12px;background:#fff">'
            f'<div style="text-align:center">{img}</div>'
            f'<div class="wb-title" style="font-weight:600;white-space:nowrap;overflow:hidden;'
            f'text-overflow:ellipsis">{card.rank}. {html.escape(card.title)}</div>'
            f'<div><span class="wb-score">score {card.score:.3f}</span> {mark}</div>'
            f'{player}<div class="wb-bars">{"".join(bars)}</div></div>'
        )

    def gallery_html(self, result: LabResult, audio: bool = True) -> str:
        """Every card of `result` in a wrapping row, with its summary line above (static HTML)."""
        cards = "".join(self.card_html(c, result.judged, audio) for c in result.cards)
        return (f'<div class="wb-lab-static"><div class="wb-lab-message">{html.escape(result.summary())}</div>'
                f'<div style="display:flex;flex-wrap:wrap;gap:8px">{cards}</div></div>')


# --------------------------------------------------------------------------- the widget


class LabWidget:
    """The ipywidgets front of a `QueryLab` (built by `build_widget`); display it, or its `box`.

    Every control is an attribute, so a test (or a notebook) can drive it without a browser:
    `text`, `query_picker`, `search` (a Button: `.click()`), `pickers[m]`, `uploads[m]`,
    `clears[m]`, `sliders[m]` (a slider per modality; those the lab lacks are hidden),
    `message` (one line: a summary, or what was wrong), `gallery` (a Box of card widgets,
    each a VBox of the card's HTML and its "more like this" button, in `cards`), and
    `result` (the last `LabResult`, None after an error).
    """

    def __init__(self, lab: QueryLab, text: str = "") -> None:
        import ipywidgets as w

        self.lab = lab
        self.result: LabResult | None = None
        self.cards: list[Any] = []
        self._last: Callable[[], LabResult] | None = None
        self._muted = False  # set while the widget changes its own controls
        row = w.Layout(display="flex", flex_flow="row wrap", align_items="center")
        self.header = w.HTML(self._header())
        # "" stands for "none picked": ipywidgets shows no label at all for a None value
        self.query_picker = w.Dropdown(options=[("(type your own query)", ""), *lab.query_choices()],
                                       value="", description="catalog query", layout=w.Layout(width="520px"),
                                       style={"description_width": "100px"})
        if not lab.query_choices():
            self.query_picker.layout.display = "none"
        self.text = w.Text(value=text, placeholder="e.g. red striped wooden chair", description="words",
                           layout=w.Layout(width="520px"), style={"description_width": "100px"})
        self.search = w.Button(description="search", button_style="primary", icon="search")
        self.pickers: dict[str, Any] = {}
        self.uploads: dict[str, Any] = {}
        self.clears: dict[str, Any] = {}
        self.previews: dict[str, Any] = {}
        media_rows = []
        for m in MEDIA:
            accept = "image/*" if m == "image" else "audio/*,.wav,.flac,.ogg"
            self.pickers[m] = w.Dropdown(options=[(f"(no {m})", ""), *lab.media_choices(m)], value="",
                                         description=f"{m} of", layout=w.Layout(width="360px"),
                                         style={"description_width": "100px"})
            self.uploads[m] = w.FileUpload(accept=accept, multiple=False, description="upload",
                                           layout=w.Layout(width="110px"))
            self.clears[m] = w.Button(description="clear", layout=w.Layout(width="60px"))
            self.previews[m] = w.HTML()
            box = w.HBox([self.pickers[m], self.uploads[m], self.clears[m], self.previews[m]], layout=row)
            if m not in lab.query_modalities:
                box.layout.display = "none"  # the encoder cannot read this modality (or no item has it)
            media_rows.append(box)
        self.sliders: dict[str, Any] = {}
        for m in MODALITIES:
            self.sliders[m] = w.FloatSlider(value=1.0, min=0.0, max=1.0, step=0.05, description=m,
                                            continuous_update=False, readout_format=".2f",
                                            layout=w.Layout(width="260px"), style={"description_width": "45px"})
            if m not in lab.modalities:
                self.sliders[m].layout.display = "none"  # no item has this modality
                self.sliders[m].disabled = True
        self.message = w.HTML(self._message("type some words, or pick a catalog query, an image or a sound"))
        self.gallery = w.Box(layout=w.Layout(display="flex", flex_flow="row wrap"))
        self.box = w.VBox([
            self.header, self.query_picker, w.HBox([self.text, self.search], layout=row), *media_rows,
            w.HBox([w.Label("weights", layout=w.Layout(width="100px")), *self.sliders.values()], layout=row),
            self.message, self.gallery,
        ])
        self.search.on_click(lambda _: self.run_search())
        self.query_picker.observe(self._on_pick_query, names="value")
        self.text.observe(self._on_text, names="value")
        for m in MEDIA:
            self.pickers[m].observe(lambda ch, m=m: self._on_pick_media(m, ch), names="value")
            self.uploads[m].observe(lambda ch, m=m: self._on_upload(m, ch), names="value")
            self.clears[m].on_click(lambda _, m=m: self._clear_media(m))
        for s in self.sliders.values():
            s.observe(self._on_weight, names="value")

    # ---- display

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.box._repr_mimebundle_(**kwargs)

    def _header(self) -> str:
        lab = self.lab
        name = html.escape(str(lab.catalog.manifest.get("name", lab.catalog.root.name)))
        how = ", ".join(lab.query_modalities) or "nothing (no encoder)"
        return (f'<b>Query lab</b> · {name} · {len(lab.item_ids):,} items · item modalities: '
                f'{", ".join(lab.modalities)} · query by: {how}')

    @staticmethod
    def _message(text: str, error: bool = False) -> str:
        colour = "#c62828" if error else "#555"
        kind = "error" if error else "info"
        return (f'<div class="wb-lab-message" data-kind="{kind}" style="color:{colour}">'
                f'{"⚠ " if error else ""}{html.escape(_one_line(text))}</div>')

    # ---- state -> query

    def weights(self) -> dict[str, float]:
        """The visible sliders' values."""
        return {m: float(self.sliders[m].value) for m in self.lab.modalities}

    def _media(self, m: str) -> MediaQuery | None:
        upload = Upload.from_widget(self.uploads[m].value)
        if upload is not None:
            return upload
        item = self.pickers[m].value
        if not item:
            return None
        return self.lab.catalog.media_path(self.lab._products[item][2 if m == "image" else 3])

    def run_search(self) -> LabResult | None:
        """Search with the widget's state (what the search button does)."""
        text = self.text.value
        picked = self.query_picker.value
        qid = picked if picked and _norm_text(self.lab.query_text(picked)) == _norm_text(text) else None
        media = {m: self._media(m) for m in MEDIA if m in self.lab.query_modalities}
        return self._run(lambda: self.lab.search(text, media.get("image"), media.get("audio"),
                                                 self.weights(), query_id=qid))

    def more_like_this(self, item_id: str) -> LabResult | None:
        return self._run(lambda: self.lab.more_like_this(item_id, self.weights()))

    def _run(self, query: Callable[[], LabResult]) -> LabResult | None:
        self._last = query
        self.search.disabled = True
        try:
            result = query()
        except QueryError as exc:
            self._show_error(str(exc))
            return None
        except MediaError as exc:  # a product's own file that fails to decode
            self._show_error(str(exc))
            return None
        finally:
            self.search.disabled = False
        self._show(result)
        return result

    def _show_error(self, text: str) -> None:
        self.result = None
        self.cards = []
        self.gallery.children = ()
        self.message.value = self._message(text, error=True)

    def _show(self, result: LabResult) -> None:
        import ipywidgets as w

        self.result = result
        cards = []
        for card in result.cards:
            more = w.Button(description="more like this", icon="clone", layout=w.Layout(width="auto"))
            more.on_click(lambda _, item=card.item_id: self.more_like_this(item))
            view = w.VBox([w.HTML(self.lab.card_html(card, result.judged)), more], layout=w.Layout(margin="4px"))
            view.item_id, view.more = card.item_id, more
            cards.append(view)
        self.cards = cards
        self.gallery.children = tuple(cards)
        self.message.value = self._message(result.summary())

    # ---- events

    def _on_pick_query(self, change: dict) -> None:
        if not change["new"] or self._muted:
            return
        with self._quietly():
            self.text.value = self.lab.query_text(change["new"])
        self.run_search()

    def _on_text(self, change: dict) -> None:
        """Words edited away from the picked catalog query: the picker no longer says what is searched."""
        picked = self.query_picker.value
        if picked and not self._muted and _norm_text(change["new"]) != _norm_text(self.lab.query_text(picked)):
            with self._quietly():
                self.query_picker.value = ""

    @contextmanager
    def _quietly(self) -> Iterator[None]:
        """The widget changes its own controls: their observers must not react."""
        self._muted = True
        try:
            yield
        finally:
            self._muted = False

    def _on_pick_media(self, m: str, change: dict) -> None:
        if self._muted:
            return
        if change["new"]:
            with self._quietly():
                self.uploads[m].value = ()  # the product's own file replaces an upload
        self._preview(m)

    def _on_upload(self, m: str, change: dict) -> None:
        if self._muted:
            return
        if change["new"]:
            with self._quietly():
                self.pickers[m].value = ""  # an upload replaces the product's own file
        self._preview(m)

    def _clear_media(self, m: str) -> None:
        with self._quietly():
            self.uploads[m].value = ()
            self.pickers[m].value = ""
        self._preview(m)

    def _preview(self, m: str) -> None:
        """A small view of the chosen image or sound (or its name, for an upload not yet decoded)."""
        media = self._media(m)
        if media is None:
            self.previews[m].value = ""
        elif isinstance(media, Upload):
            self.previews[m].value = f"<i>{html.escape(media.name)}</i> ({len(media.content):,} bytes)"
        else:
            item = self.pickers[m].value
            if m == "image" and (uri := self.lab.thumbnail(item)):
                self.previews[m].value = f'<img src="{uri}" width="40" height="40" alt="">'
            elif m == "audio" and (uri := self.lab.sound(item)):
                self.previews[m].value = f'<audio controls preload="none" src="{uri}" style="height:28px"></audio>'
            else:
                self.previews[m].value = html.escape(item)

    def _on_weight(self, change: dict) -> None:
        if self._last is not None:  # moving a slider re-runs the last query with the new weights
            self._run(self._last)


def build_widget(lab: QueryLab, text: str = "") -> LabWidget:
    """The lab's widget, its text box holding `text`."""
    return LabWidget(lab, text)
