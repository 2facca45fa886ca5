"""Products: their attributes, ids, titles and descriptions, media paths, and their ground truth."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

import numpy as np
import polars as pl

from workbench.catalog.synthetic.attributes import (
    BRAND_TIER,
    BRANDS,
    CATEGORY_SYNONYMS,
    COLOUR_PRIOR,
    COLOUR_SYNONYMS,
    COLOURS,
    COMPLEMENT_IDX,
    LEAF_BASE_PRICE,
    LEAF_NAMES,
    LEAF_PRIOR,
    LEAF_TOP,
    LEAVES,
    MATERIAL_ADJ,
    MATERIAL_NOUNS,
    MATERIAL_PRICE,
    MATERIAL_PRIOR,
    MATERIALS,
    MISLEAD_RATE,
    PATTERN_PRIOR,
    PATTERN_WORDS,
    PATTERNS,
    STYLE_SYNONYMS,
    STYLES,
    TEXT_MENTION_RATE,
    TOPS,
    TYPO_RATE,
)
from workbench.catalog.synthetic.config import SyntheticConfig
from workbench.catalog.synthetic.randomness import _S_ITEM, _S_TEXT, _choice, _normal, _uniform


def _id_width(n: int, minimum: int) -> int:
    return max(minimum, len(str(max(n - 1, 0))))


def _item_ids(idx: np.ndarray, n_items: int) -> list[str]:
    w = _id_width(n_items, 6)
    return [f"p{i:0{w}d}" for i in idx.tolist()]


def _draw_items(cfg: SyntheticConfig) -> dict[str, np.ndarray]:
    """Every product's attributes (vectorised; element i depends only on (seed, i))."""
    n, seed = cfg.n_items, cfg.seed
    idx = np.arange(n, dtype=np.int64)

    def u(slot: int) -> np.ndarray:
        return _uniform(seed, _S_ITEM, idx, slot)

    leaf = _choice(u(0), LEAF_PRIOR)
    colour = _choice(u(1), COLOUR_PRIOR)
    pattern = _choice(u(2), PATTERN_PRIOR)
    material = _choice(u(3), MATERIAL_PRIOR[LEAF_TOP[leaf]])
    style = _choice(u(4), np.ones(len(STYLES)))
    brand = _choice(u(5), np.ones(len(BRANDS)))
    noise = _normal(seed, _S_ITEM, idx, 10)
    price = np.round(LEAF_BASE_PRICE[leaf] * MATERIAL_PRICE[material] * BRAND_TIER[brand] * np.exp(0.25 * noise), 2)
    popularity = 1.0 * _normal(seed, _S_ITEM, idx, 11) + 0.4 * (BRAND_TIER[brand] - BRAND_TIER.mean())
    return {
        "leaf": leaf,
        "colour": colour,
        "pattern": pattern,
        "material": material,
        "style": style,
        "brand": brand,
        "price": np.maximum(price, 0.5),
        "popularity": popularity,
        "has_image": u(6) >= cfg.missing_image_rate,
        "has_audio": u(7) >= cfg.missing_audio_rate,
        "text_colour": u(8) < TEXT_MENTION_RATE["colour"],
        "text_pattern": u(9) < TEXT_MENTION_RATE["pattern"],
        "text_material": u(12) < TEXT_MENTION_RATE["material"],
        "mislead": u(13) < MISLEAD_RATE,
    }


def _reserved_words() -> set[str]:
    words: set[str] = set()
    for group in (COLOUR_SYNONYMS, PATTERN_WORDS, MATERIAL_NOUNS):
        for syns in group.values():
            for s in syns:
                words.update(s.lower().split())
    words.update(MATERIAL_ADJ.values())
    return words


_RESERVED = _reserved_words()


def _typo(word: str, u1: float, u2: float) -> str:
    """A plausible typo (swap, drop or double a letter) that never creates a reserved word."""
    if len(word) < 5 or not word.isalpha():
        return word
    i = 1 + int(u2 * (len(word) - 2))
    op = int(u1 * 3)
    if op == 0:
        out = word[:i] + word[i + 1] + word[i] + word[i + 2 :] if i + 1 < len(word) else word
    elif op == 1:
        out = word[:i] + word[i + 1 :]
    else:
        out = word[:i] + word[i] + word[i:]
    return word if out.lower() in _RESERVED else out


_TITLE_TEMPLATES = (
    "{brand} {adj} {cat}",
    "{adj} {cat} by {brand}",
    "{brand} {cat}, {style} edition",
    "The {adj} {cat} from {brand}",
    "{adj} {cat} | {brand}",
)
_INTRO = (
    "A {style} {cat} for everyday use.",
    "This {style} {cat} from {brand} fits right in.",
    "Designed by {brand}, this {cat} brings a {style} touch to any room.",
    "{brand} presents a {style} take on the {cat}.",
    "Meet the {style} {cat}: simple, useful, well made.",
    "Our best-selling {style} {cat}, now from {brand}.",
)
_COLOUR_SENT = ("Finished in {w}.", "Available in a {w} tone.", "Its {w} finish stands out.", "Comes in {w}.")
_PATTERN_SENT = ("Features a {w} design.", "Decorated with a {w} motif.", "The surface is {w}.")
_MATERIAL_SENT = ("Made of {w}.", "Crafted from {w}.", "Built from sturdy {w}.", "Solid {w} construction.")
_FILLER = (
    "Easy to clean.", "Ships in recycled packaging.", "A thoughtful gift.", "Backed by a two-year warranty.",
    "Loved by our customers.", "Compact and practical.", "Built to last.", "Assembly takes minutes.",
    "Fits small spaces.", "Part of our new collection.",
)
_MISLEAD = ("Pairs well with {style} interiors.", "Looks great next to a {cat}.", "Inspired by {style} design.")
_N_TEXT_U = 40  # uniforms consumed per product's text


def _pick(seq: Sequence[str], u: float) -> str:
    return seq[min(int(u * len(seq)), len(seq) - 1)]


def _product_text(a: dict[str, int | bool], u: np.ndarray) -> tuple[str, str]:
    """Title and description of one product from its attributes and 40 uniforms."""
    leaf = int(a["leaf"])
    cat = _pick(CATEGORY_SYNONYMS[LEAF_NAMES[leaf]], u[0]) if u[1] < 0.5 else LEAF_NAMES[leaf]
    style_word = _pick(STYLE_SYNONYMS[STYLES[int(a["style"])]], u[2])
    brand = BRANDS[int(a["brand"])]
    mentioned: list[tuple[str, str]] = []
    if a["text_colour"]:
        mentioned.append(("colour", _pick(COLOUR_SYNONYMS[COLOURS[int(a["colour"])]], u[3])))
    if a["text_pattern"]:
        mentioned.append(("pattern", _pick(PATTERN_WORDS[PATTERNS[int(a["pattern"])]], u[4])))
    if a["text_material"]:
        m = MATERIALS[int(a["material"])]
        mentioned.append(("material", MATERIAL_ADJ[m] if u[5] < 0.5 else _pick(MATERIAL_NOUNS[m], u[6])))
    m_name = MATERIALS[int(a["material"])]
    template = _pick(_TITLE_TEMPLATES, u[10])
    in_title: set[int] = set()
    if "{adj}" in template:
        for j, (kind, w) in enumerate(mentioned):
            # a material goes in the title only as an adjective ("wooden chair", not "oak chair")
            if u[7 + j] < 0.5 and (kind != "material" or w == MATERIAL_ADJ[m_name]):
                in_title.add(j)
    adj = " ".join([style_word] + [w for j, (_, w) in enumerate(mentioned) if j in in_title])
    title = template.format(brand=brand, adj=adj, cat=cat, style=style_word)
    title = title[0].upper() + title[1:]

    intro_style = _pick(STYLE_SYNONYMS[STYLES[int(a["style"])]], u[12])
    sents = [_pick(_INTRO, u[11]).format(style=intro_style, cat=cat, brand=brand)]
    for j, (kind, w) in enumerate(mentioned):
        if j in in_title:
            continue
        if kind == "colour":
            sents.append(_pick(_COLOUR_SENT, u[13 + j]).format(w=w))
        elif kind == "pattern":
            sents.append(_pick(_PATTERN_SENT, u[13 + j]).format(w=w))
        else:
            noun = w if w in MATERIAL_NOUNS[m_name] else _pick(MATERIAL_NOUNS[m_name], u[16])
            sents.append(_pick(_MATERIAL_SENT, u[13 + j]).format(w=noun))
    n_fill = 1 + int(u[17] * 3)
    first = int(u[18] * len(_FILLER))
    for j in range(n_fill):  # distinct fillers (3 is coprime with their count)
        sents.append(_FILLER[(first + 3 * j) % len(_FILLER)])
    if a["mislead"]:
        wrong_style = STYLES[(int(a["style"]) + 1 + int(u[22] * (len(STYLES) - 1))) % len(STYLES)]
        near = LEAF_NAMES[int(COMPLEMENT_IDX[leaf])]
        sents.insert(1 + int(u[23] * (len(sents) - 1)), _pick(_MISLEAD, u[24]).format(style=wrong_style, cat=near))
    # order of the non-intro sentences varies
    rest = sents[1:]
    if rest and u[25] < 0.5:
        rest = rest[1:] + rest[:1]
    description = _ARTICLE.sub(r"\1n \2", " ".join([sents[0], *rest]))
    # typos: a few words in the description, never creating a reserved word
    if u[26] < 0.5:
        words = description.split(" ")
        for j in range(3):
            if u[27 + j] < TYPO_RATE * 10:
                k = int(u[30 + j] * len(words))
                core = words[k].rstrip(".,:|")
                tail = words[k][len(core):]
                words[k] = _typo(core, u[33 + j], u[36 + j]) + tail
        description = " ".join(words)
    return title, description


_ARTICLE = re.compile(r"\b([Aa]) ([aeiouAEIOU])")
_ATTR_JSON = [json.dumps({"style": s}, sort_keys=True) for s in STYLES]


def _media_paths(kind: str, idx: np.ndarray, n_items: int, present: np.ndarray) -> list[str | None]:
    ext = "png" if kind == "images" else "wav"
    width = _id_width(n_items, 6)
    shard = n_items > 10_000  # 1000 files per folder keeps directories small
    out: list[str | None] = []
    for i, p in zip(idx.tolist(), present.tolist(), strict=True):
        if not p:
            out.append(None)
        elif shard:
            out.append(f"media/{kind}/{i // 1000:05d}/p{i:0{width}d}.{ext}")
        else:
            out.append(f"media/{kind}/p{i:0{width}d}.{ext}")
    return out


def _products_chunk(cfg: SyntheticConfig, part: dict[str, np.ndarray], lo: int, hi: int) -> pl.DataFrame:
    """Rows lo..hi of the products table; `part` holds the item arrays sliced to lo:hi."""
    idx = np.arange(lo, hi, dtype=np.int64)
    u = _uniform(cfg.seed, _S_TEXT, idx[:, None], np.arange(_N_TEXT_U)[None, :])
    keys = ("leaf", "colour", "pattern", "material", "style", "brand", "text_colour", "text_pattern", "text_material", "mislead")
    cols = {k: part[k].tolist() for k in keys}
    titles, descs = [], []
    for j in range(hi - lo):
        t, d = _product_text({k: cols[k][j] for k in keys}, u[j])
        titles.append(t)
        descs.append(d)
    media = cfg.with_media
    return pl.DataFrame(
        {
            "item_id": _item_ids(idx, cfg.n_items),
            "title": titles,
            "description": descs,
            "category": np.array(LEAVES)[part["leaf"]].tolist(),
            "brand": np.array(BRANDS)[part["brand"]].tolist(),
            "price": part["price"],
            "attributes": np.array(_ATTR_JSON)[part["style"]].tolist(),
            "image": _media_paths("images", idx, cfg.n_items, part["has_image"] & media),
            "audio": _media_paths("audio", idx, cfg.n_items, part["has_audio"] & media),
        },
        schema={
            "item_id": pl.Utf8, "title": pl.Utf8, "description": pl.Utf8, "category": pl.Utf8,
            "brand": pl.Utf8, "price": pl.Float64, "attributes": pl.Utf8, "image": pl.Utf8, "audio": pl.Utf8,
        },
    )


_TEXT_KEYS = ("leaf", "colour", "pattern", "material", "style", "brand", "text_colour", "text_pattern",
              "text_material", "mislead", "price", "has_image", "has_audio")


def _part(items: dict[str, np.ndarray], lo: int, cfg: SyntheticConfig) -> tuple[dict[str, np.ndarray], int, int]:
    hi = min(lo + cfg.chunk_size, cfg.n_items)
    return {k: items[k][lo:hi] for k in _TEXT_KEYS}, lo, hi


def _truth_items(cfg: SyntheticConfig, items: dict[str, np.ndarray]) -> pl.DataFrame:
    n = cfg.n_items
    media = cfg.with_media
    has_image = items["has_image"] & media
    has_audio = items["has_audio"] & media
    df = pl.DataFrame(
        {
            "item_id": _item_ids(np.arange(n), n),
            "category": pl.Series(np.array(LEAVES)[items["leaf"]]),
            "top_category": pl.Series(np.array(TOPS)[LEAF_TOP[items["leaf"]]]),
            "colour": pl.Series(np.array(COLOURS)[items["colour"]]),
            "pattern": pl.Series(np.array(PATTERNS)[items["pattern"]]),
            "material": pl.Series(np.array(MATERIALS)[items["material"]]),
            "style": pl.Series(np.array(STYLES)[items["style"]]),
            "brand": pl.Series(np.array(BRANDS)[items["brand"]]),
            "price": items["price"],
            "popularity": items["popularity"],  # log-weight of the item in every draw
            "has_image": has_image,
            "has_audio": has_audio,
            "text_colour": items["text_colour"],
            "text_pattern": items["text_pattern"],
            "text_material": items["text_material"],
            "text_misleading": items["mislead"],
        }
    )

    def shows(pairs: list[tuple[str, pl.Expr | bool]]) -> pl.Expr:
        return pl.concat_list([pl.when(cond).then(pl.lit(name)).otherwise(pl.lit(None, pl.Utf8)) for name, cond in pairs]).list.drop_nulls()

    return df.with_columns(
        shows([("category", True), ("brand", True), ("style", True), ("colour", pl.col("text_colour")),
               ("pattern", pl.col("text_pattern")), ("material", pl.col("text_material"))]).alias("text_shows"),
        shows([("category", pl.col("has_image")), ("colour", pl.col("has_image")),
               ("pattern", pl.col("has_image"))]).alias("image_shows"),
        shows([("material", pl.col("has_audio"))]).alias("audio_shows"),
    )
