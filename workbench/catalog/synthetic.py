"""The built-in synthetic multimodal catalog, with a known ground truth.

Products live in a two-level category tree (6 top-level, 24 leaf categories,
``"furniture/chair"``). Their attributes are split across modalities on purpose,
so that a fused retriever must beat every single modality:

================  ==========  ===================================================
attribute         modality    how it is expressed
================  ==========  ===================================================
category          text+image  named in the text; the image's shape depends on it
colour, pattern   image       fill colour and stripes/dots/checks/plain
material          audio       partials and decay of a tap sound
brand, style      text        title and description (with synonyms and typos)
================  ==========  ===================================================

The text mentions colour, pattern or material for a minority of products only
(``truth/items.parquet`` says which, per product); when it does not, no word of
that attribute's vocabulary appears in the product's text at all. Some
descriptions mislead a little (a wrong style, a neighbouring category).

Users have latent tastes over category, colour, material and style (the taste
vector in ``truth/users.parquet``), a popularity bias, and a sequential habit:
with probability ``p_complement`` (about 0.5) the next product comes from the
complement of the previous product's leaf category (`complement_map`), chosen
by taste within it; otherwise it is drawn from the user's overall taste. Each
visit is one event (view, click, cart or purchase: the furthest the user got),
so a held-out last event is never leaked by earlier funnel steps. `oracle_scores`
gives the generator's own next-item log-probabilities (a Bayes-optimal ranker).

Queries name a leaf category plus 1-3 attributes from different modalities
("vintage red striped wooden chair"); qrels grade each product of that category
by how many named attributes it has (0..3); other categories are irrelevant.

Everything random is derived from ``(seed, stream, index)`` by a counter-based
hash (tables) or a per-item generator (media), so the catalog is byte-identical
for a given config whatever ``chunk_size`` or ``workers`` are.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl

from workbench.catalog.io import CatalogWriter
from workbench.catalog.synthetic_media import COLOUR_RGB, MATERIALS, PATTERNS, render_block
from workbench.errors import CatalogError, ConfigError
from workbench.progress import progress_bar

__all__ = [
    "SyntheticConfig",
    "attribute_modalities",
    "category_tree",
    "complement_map",
    "generate_synthetic",
    "oracle_scores",
    "vocabulary",
]


@dataclass
class SyntheticConfig:
    """Size and randomness of a synthetic catalog (see the module docstring)."""

    n_items: int = 1000
    n_users: int = 300
    seed: int = 0
    n_queries: int = 300
    image_size: int = 64
    with_media: bool = True
    missing_image_rate: float = 0.10
    missing_audio_rate: float = 0.10
    events_per_user: float = 30.0  # mean number of events (one per visit) per user
    chunk_size: int = 20_000  # items per streamed chunk
    workers: int | None = None  # processes for media; None = os.cpu_count()

    def validate(self) -> None:
        if not 1 <= self.n_items <= 99_999_999:
            raise ConfigError(f"SyntheticConfig.n_items={self.n_items}: expected 1..99,999,999")
        if self.n_users < 0 or self.n_queries < 0:
            raise ConfigError("SyntheticConfig.n_users and n_queries must be >= 0")
        if self.image_size < 16:
            raise ConfigError(f"SyntheticConfig.image_size={self.image_size}: expected >= 16 pixels")
        for name in ("missing_image_rate", "missing_audio_rate"):
            rate = getattr(self, name)
            if not 0.0 <= rate <= 1.0:
                raise ConfigError(f"SyntheticConfig.{name}={rate}: expected a rate in [0, 1]")
        if self.events_per_user < 2:
            raise ConfigError(f"SyntheticConfig.events_per_user={self.events_per_user}: expected >= 2")
        if self.chunk_size < 1:
            raise ConfigError(f"SyntheticConfig.chunk_size={self.chunk_size}: expected >= 1")
        if self.workers is not None and self.workers < 0:
            raise ConfigError(f"SyntheticConfig.workers={self.workers}: expected >= 0 or None")


# ---------------------------------------------------------------------------
# Vocabulary
# ---------------------------------------------------------------------------

TREE: dict[str, tuple[str, ...]] = {
    "furniture": ("chair", "table", "lamp", "shelf"),
    "kitchen": ("mug", "plate", "bowl", "kettle"),
    "apparel": ("shirt", "dress", "hat", "scarf"),
    "electronics": ("speaker", "headphones", "phone", "clock"),
    "sports": ("ball", "racket", "helmet", "bottle"),
    "toys": ("robot", "kite", "blocks", "puzzle"),
}
LEAVES: tuple[str, ...] = tuple(f"{top}/{leaf}" for top, leaves in TREE.items() for leaf in leaves)
TOPS: tuple[str, ...] = tuple(TREE)
LEAF_NAMES: tuple[str, ...] = tuple(p.split("/")[1] for p in LEAVES)
LEAF_TOP = np.array([TOPS.index(p.split("/")[0]) for p in LEAVES], dtype=np.int64)

# The sequential habit: after a product of the key category, users often look at the value.
COMPLEMENT: dict[str, str] = {
    "chair": "table", "table": "lamp", "lamp": "shelf", "shelf": "clock",
    "mug": "kettle", "kettle": "plate", "plate": "bowl", "bowl": "mug",
    "shirt": "hat", "hat": "scarf", "scarf": "dress", "dress": "shirt",
    "speaker": "phone", "phone": "headphones", "headphones": "speaker", "clock": "lamp",
    "ball": "racket", "racket": "bottle", "bottle": "helmet", "helmet": "ball",
    "robot": "blocks", "blocks": "puzzle", "puzzle": "kite", "kite": "robot",
}
COMPLEMENT_IDX = np.array([LEAF_NAMES.index(COMPLEMENT[n]) for n in LEAF_NAMES], dtype=np.int64)

CATEGORY_SYNONYMS: dict[str, tuple[str, ...]] = {
    "chair": ("chair", "seat", "armchair"), "table": ("table", "side table", "desk"),
    "lamp": ("lamp", "light", "lantern"), "shelf": ("shelf", "bookcase", "rack"),
    "mug": ("mug", "cup"), "plate": ("plate", "dish", "platter"), "bowl": ("bowl", "basin"),
    "kettle": ("kettle", "teapot"), "shirt": ("shirt", "tee", "blouse"),
    "dress": ("dress", "gown", "frock"), "hat": ("hat", "cap", "beanie"),
    "scarf": ("scarf", "shawl", "wrap"), "speaker": ("speaker", "loudspeaker", "soundbar"),
    "headphones": ("headphones", "earphones", "headset"), "phone": ("phone", "handset", "smartphone"),
    "clock": ("clock", "timepiece"), "ball": ("ball", "football"), "racket": ("racket", "racquet", "paddle"),
    "helmet": ("helmet", "headgear"), "bottle": ("bottle", "flask", "canteen"),
    "robot": ("robot", "android", "droid"), "kite": ("kite", "flyer"),
    "blocks": ("blocks", "building bricks", "stacking set"), "puzzle": ("puzzle", "jigsaw", "brainteaser"),
}
COLOURS: tuple[str, ...] = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")
assert len(COLOURS) == len(COLOUR_RGB)
COLOUR_SYNONYMS: dict[str, tuple[str, ...]] = {
    "red": ("red", "crimson", "scarlet"), "orange": ("orange", "tangerine"),
    "yellow": ("yellow", "mustard", "lemon"), "green": ("green", "olive", "emerald"),
    "blue": ("blue", "navy", "azure"), "purple": ("purple", "violet", "lilac"),
    "pink": ("pink", "magenta", "blush"), "brown": ("brown", "chocolate", "tan"),
    "black": ("black", "charcoal", "ebony"), "white": ("white", "ivory", "cream"),
}
PATTERN_WORDS: dict[str, tuple[str, ...]] = {  # adjectives; the first is the query word
    "plain": ("plain", "unpatterned"), "stripes": ("striped", "stripy", "pinstriped"),
    "dots": ("dotted", "spotted", "polka dot"), "checks": ("checked", "checkered", "plaid"),
}
MATERIAL_ADJ: dict[str, str] = {  # the query word
    "wood": "wooden", "metal": "metal", "glass": "glass", "plastic": "plastic",
    "fabric": "fabric", "ceramic": "ceramic",
}
MATERIAL_NOUNS: dict[str, tuple[str, ...]] = {
    "wood": ("wood", "timber", "oak"), "metal": ("metal", "steel", "aluminium"),
    "glass": ("glass", "crystal"), "plastic": ("plastic", "polymer", "acrylic"),
    "fabric": ("fabric", "cotton", "textile"), "ceramic": ("ceramic", "porcelain", "stoneware"),
}
STYLES: tuple[str, ...] = ("modern", "vintage", "rustic", "minimalist", "industrial", "bohemian", "classic", "scandinavian")
STYLE_SYNONYMS: dict[str, tuple[str, ...]] = {
    "modern": ("modern", "contemporary"), "vintage": ("vintage", "retro"), "rustic": ("rustic", "farmhouse"),
    "minimalist": ("minimalist", "minimal"), "industrial": ("industrial", "utilitarian"),
    "bohemian": ("bohemian", "boho"), "classic": ("classic", "traditional"),
    "scandinavian": ("scandinavian", "nordic"),
}
BRANDS: tuple[str, ...] = (
    "Aldervane", "Brightmoor", "Calloway", "Dunmore", "Everhart", "Fenwick", "Galloway", "Hartwell",
    "Halden", "Ingram", "Juniper", "Kestrel", "Larkspur", "Merriweather", "Northwind", "Ostara",
    "Pemberton", "Quillon", "Rowntree", "Sorrel", "Thistle", "Umbra", "Valemont", "Wexford",
    "Yarrow", "Zephyr", "Arbor", "Belmont", "Corvid", "Drayton", "Elmstead", "Foxglove",
    "Granby", "Hollis", "Islay", "Jasper", "Kinloch", "Linden", "Marlow", "Nettle",
)
# Brand tier: price multiplier and popularity shift (deterministic, part of the truth).
BRAND_TIER = np.array([0.75 + 0.9 * ((7 * b) % 11) / 10 for b in range(len(BRANDS))])
LEAF_BASE_PRICE = np.array(
    [80, 150, 45, 120, 12, 15, 14, 35, 25, 60, 20, 22, 90, 70, 300, 40, 25, 60, 55, 15, 70, 30, 25, 20],
    dtype=np.float64,
)
MATERIAL_PRICE = np.array([1.2, 1.3, 1.1, 0.7, 0.9, 1.0])
# P(material | top category): plausible but never zero.
MATERIAL_PRIOR = np.array(
    [  # wood metal glass plastic fabric ceramic
        [5, 3, 1, 2, 2, 1],  # furniture
        [1, 3, 3, 2, 0.5, 5],  # kitchen
        [0.5, 0.5, 0.3, 1, 8, 0.3],  # apparel
        [1, 4, 2, 5, 0.5, 0.5],  # electronics
        [1, 2, 0.5, 5, 2, 0.3],  # sports
        [4, 2, 0.5, 5, 2, 0.5],  # toys
    ],
    dtype=np.float64,
)
COLOUR_PRIOR = np.array([1.2, 0.8, 0.8, 1.0, 1.3, 0.7, 0.7, 1.0, 1.4, 1.3])
PATTERN_PRIOR = np.array([0.4, 0.2, 0.2, 0.2])
LEAF_PRIOR = np.linspace(1.4, 0.7, len(LEAVES))

TEXT_MENTION_RATE = {"colour": 0.2, "pattern": 0.2, "material": 0.2}
MISLEAD_RATE = 0.08
TYPO_RATE = 0.03
P_COMPLEMENT_RANGE = (0.40, 0.65)
EVENT_TYPES: tuple[str, ...] = ("view", "click", "cart", "purchase")
EVENT_PRIOR = np.array([0.55, 0.25, 0.12, 0.08])
START_US = 1_704_067_200_000_000  # 2024-01-01T00:00:00Z: fixed so files never depend on the clock
SPAN_US = 150 * 86_400_000_000

# taste vector layout: [leaf categories | colours | materials | styles]
TASTE_GROUPS: tuple[tuple[str, int], ...] = (
    ("category", len(LEAVES)), ("colour", len(COLOURS)), ("material", len(MATERIALS)), ("style", len(STYLES)),
)
TASTE_OFFSETS = {name: int(off) for (name, _), off in zip(TASTE_GROUPS, np.cumsum([0] + [n for _, n in TASTE_GROUPS[:-1]]), strict=True)}
TASTE_DIM = sum(n for _, n in TASTE_GROUPS)
N_CELLS = len(LEAVES) * len(COLOURS) * len(MATERIALS) * len(STYLES)
CELLS_PER_LEAF = N_CELLS // len(LEAVES)

# random streams
_S_ITEM, _S_TEXT, _S_USER, _S_STEP, _S_QUERY, _S_QREL0 = 1, 2, 3, 4, 5, 6


def category_tree() -> dict[str, tuple[str, ...]]:
    """Top-level category -> leaf names (paths are ``"top/leaf"``)."""
    return dict(TREE)


def complement_map() -> dict[str, str]:
    """Leaf category path -> the leaf path users tend to visit next (the sequential habit)."""
    return {LEAVES[i]: LEAVES[int(COMPLEMENT_IDX[i])] for i in range(len(LEAVES))}


def attribute_modalities() -> dict[str, tuple[str, ...]]:
    """Which modality(ies) reliably carry each attribute.

    The text also names colour, pattern or material for a minority of products;
    ``truth/items.parquet`` (``text_shows``) says which.
    """
    return {
        "category": ("text", "image"),
        "colour": ("image",),
        "pattern": ("image",),
        "material": ("audio",),
        "brand": ("text",),
        "style": ("text",),
    }


def vocabulary() -> dict[str, dict[str, list[str]]]:
    """Attribute -> value -> every word the text or queries may use for it."""
    return {
        "category": {p: list(CATEGORY_SYNONYMS[n]) for p, n in zip(LEAVES, LEAF_NAMES, strict=True)},
        "colour": {c: list(COLOUR_SYNONYMS[c]) for c in COLOURS},
        "pattern": {p: list(PATTERN_WORDS[p]) for p in PATTERNS},
        "material": {m: sorted({MATERIAL_ADJ[m], *MATERIAL_NOUNS[m]}) for m in MATERIALS},
        "style": {s: list(STYLE_SYNONYMS[s]) for s in STYLES},
        "brand": {b: [b] for b in BRANDS},
    }


# ---------------------------------------------------------------------------
# Counter-based randomness: value depends only on (seed, stream, keys)
# ---------------------------------------------------------------------------

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 arrays (wrapping arithmetic)."""
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def _uniform(seed: int, stream: int, *keys: np.ndarray | int) -> np.ndarray:
    """Uniform floats in [0, 1), broadcast over the integer key arrays."""
    with np.errstate(over="ignore"):
        h = _mix(np.full(1, seed, dtype=np.uint64) * _GOLD + np.uint64(stream))
        for k in keys:
            h = _mix(h ^ (np.asarray(k).astype(np.uint64) + _GOLD))
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)


def _normal(seed: int, stream: int, *keys: np.ndarray | int) -> np.ndarray:
    """Standard normals via Box-Muller from two counter-based uniforms (last key = slot)."""
    *head, slot = keys
    u1 = _uniform(seed, stream, *head, np.asarray(slot) * 2)
    u2 = _uniform(seed, stream, *head, np.asarray(slot) * 2 + 1)
    return np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2 * np.pi * u2)


def _choice(u: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Categorical draw by inverse CDF; `weights` is (k,) or (n, k) row-wise."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim == 1:
        cdf = np.cumsum(w) / w.sum()
        return np.minimum(np.searchsorted(cdf, u, side="right"), w.size - 1)
    cdf = np.cumsum(w, axis=1)
    cdf /= cdf[:, -1:]
    return np.minimum((cdf <= u[:, None]).sum(axis=1), w.shape[1] - 1)


# ---------------------------------------------------------------------------
# Products
# ---------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# Users and interactions
# ---------------------------------------------------------------------------


def _user_ids(idx: np.ndarray, n_users: int) -> list[str]:
    w = _id_width(n_users, 5)
    return [f"u{i:0{w}d}" for i in idx.tolist()]


def _draw_users(cfg: SyntheticConfig, idx: np.ndarray) -> dict[str, np.ndarray]:
    """Taste vectors (float32, as stored in the truth), habits and activity of users `idx`."""
    seed = cfg.seed
    k = idx[:, None]
    taste = np.zeros((idx.size, TASTE_DIM), dtype=np.float64)
    cat = _normal(seed, _S_USER, k, np.arange(len(LEAVES))[None, :]) * 0.7
    fav = np.argsort(_uniform(seed, _S_USER, k, 100 + np.arange(len(LEAVES))[None, :]), axis=1)[:, :3]
    np.put_along_axis(cat, fav, np.take_along_axis(cat, fav, 1) + 2.5, axis=1)
    o = TASTE_OFFSETS
    taste[:, : len(LEAVES)] = cat
    col = _normal(seed, _S_USER, k, 200 + np.arange(len(COLOURS))[None, :]) * 0.8
    col[np.arange(idx.size), (_uniform(seed, _S_USER, idx, 300) * len(COLOURS)).astype(int)] += 1.5
    taste[:, o["colour"] : o["colour"] + len(COLOURS)] = col
    taste[:, o["material"] : o["material"] + len(MATERIALS)] = _normal(seed, _S_USER, k, 400 + np.arange(len(MATERIALS))[None, :]) * 0.7
    sty = _normal(seed, _S_USER, k, 500 + np.arange(len(STYLES))[None, :]) * 0.8
    sty[np.arange(idx.size), (_uniform(seed, _S_USER, idx, 301) * len(STYLES)).astype(int)] += 1.5
    taste[:, o["style"] : o["style"] + len(STYLES)] = sty
    taste = taste.astype(np.float32).astype(np.float64)  # the generator uses exactly what the truth stores
    lo, hi = P_COMPLEMENT_RANGE
    p_comp = np.float32(lo + (hi - lo) * _uniform(seed, _S_USER, idx, 302)).astype(np.float64)
    sigma = 0.7
    act = np.exp(sigma * _normal(seed, _S_USER, idx, 303) - sigma**2 / 2)
    n_events = np.clip(np.round(cfg.events_per_user * act), 2, 10 * cfg.events_per_user).astype(np.int64)
    return {"taste": taste, "p_complement": p_comp, "n_events": n_events, "favourites": np.sort(fav, axis=1)}


class _Sampler:
    """Exact sampling of P(item) ∝ exp(taste · x_item + popularity_item), factorised.

    An item's taste score depends only on its cell (leaf, colour, material, style),
    so a draw picks a category, then a cell within it, then an item within the cell
    by popularity; per-user work is O(cells), never O(items).
    """

    def __init__(self, items: dict[str, np.ndarray]) -> None:
        self.cell = (((items["leaf"] * len(COLOURS) + items["colour"]) * len(MATERIALS) + items["material"]) * len(STYLES) + items["style"]).astype(np.int64)
        pop = items["popularity"]
        self.order = np.argsort(self.cell, kind="stable")
        sc = self.cell[self.order]
        w = np.exp(pop[self.order] - pop.max())
        self.cell_start = np.searchsorted(sc, np.arange(N_CELLS), side="left")
        self.cell_end = np.searchsorted(sc, np.arange(N_CELLS), side="right")
        z = np.zeros(N_CELLS)
        np.add.at(z, sc, w)
        # log Z_cell (+ pop.max, irrelevant up to a constant); -inf for empty cells
        self.z_rel = z / z.max()
        with np.errstate(divide="ignore"):
            self.log_z = np.log(z)
        cum = np.cumsum(w)
        before = np.where(self.cell_start > 0, cum[np.maximum(self.cell_start - 1, 0)], 0.0)
        within = (cum - before[sc]) / z[sc]
        # clamp: rounding may push a fraction a hair past 1, which would break monotonicity
        within = np.where(np.arange(sc.size) == self.cell_end[sc] - 1, 1.0, np.minimum(within, 1.0))
        self.item_cdf = sc + within  # monotone: cell index + fraction within the cell
        cells = np.arange(N_CELLS)
        rest = cells
        self.cell_style = rest % len(STYLES)
        rest = rest // len(STYLES)
        self.cell_material = rest % len(MATERIALS)
        rest = rest // len(MATERIALS)
        self.cell_colour = rest % len(COLOURS)
        self.cell_leaf = rest // len(COLOURS)
        self.leaf_nonempty = np.isfinite(self.log_z.reshape(len(LEAVES), CELLS_PER_LEAF)).any(axis=1)

    def prepare(self, taste: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per user: category log-weights (B, L) and flattened within-category cell CDFs.

        An item's weight factorises: exp(t_colour) * exp(t_material) * exp(t_style) *
        Z_cell, so the (B, leaf, colour, material, style) tensor is a broadcast product.
        """
        o = TASTE_OFFSETS
        nb = taste.shape[0]

        def e(name: str, n: int) -> np.ndarray:
            t = taste[:, o[name] : o[name] + n]
            return np.exp(t - t.max(axis=1, keepdims=True))

        ec = e("colour", len(COLOURS))[:, None, :, None, None]
        em = e("material", len(MATERIALS))[:, None, None, :, None]
        es = e("style", len(STYLES))[:, None, None, None, :]
        z = self.z_rel.reshape(1, len(LEAVES), len(COLOURS), len(MATERIALS), len(STYLES))
        w = (z * ec) * em
        w = np.multiply(w, es, out=np.empty((nb,) + z.shape[1:])).reshape(nb, len(LEAVES), CELLS_PER_LEAF)
        cdf = np.cumsum(w, axis=2, out=w)  # in place: these arrays are the bulk of the memory
        tot = cdf[:, :, -1].copy()
        with np.errstate(divide="ignore"):
            log_mass = np.log(tot)  # up to a per-user constant, which the softmax ignores
        # x / x is exactly 1.0, so every block ends at exactly 1 (trailing empty cells too)
        cdf /= np.where(tot > 0, tot, 1.0)[:, :, None]
        cat_logw = taste[:, : len(LEAVES)] + log_mass  # -inf for empty categories
        cdf += (np.arange(nb)[:, None] * len(LEAVES) + np.arange(len(LEAVES))[None, :])[:, :, None]
        return cat_logw, cdf.ravel()

    def draw_leaf(self, cat_logw: np.ndarray, rows: np.ndarray, u: np.ndarray) -> np.ndarray:
        """A category for each of `rows` by the user's overall taste."""
        lw = cat_logw - cat_logw.max(axis=1, keepdims=True)
        cdf = np.cumsum(np.exp(lw), axis=1)
        cdf /= cdf[:, -1:]
        return np.minimum((cdf[rows] <= u[:, None]).sum(axis=1), len(LEAVES) - 1)

    def draw(self, cat_logw: np.ndarray, flat: np.ndarray, rows: np.ndarray, leaf: np.ndarray | None,
             u_cat: np.ndarray, u_cell: np.ndarray, u_item: np.ndarray) -> np.ndarray:
        """Item indices for `rows` (users of the prepared batch); `leaf` forces the category."""
        if leaf is None:
            leaf = self.draw_leaf(cat_logw, rows, u_cat)
        uc = np.minimum(u_cell, 1.0 - 1e-9)
        target = rows * len(LEAVES) + leaf + uc
        g = np.searchsorted(flat, target, side="right")
        cell_in_leaf = np.clip(g - (rows * len(LEAVES) + leaf) * CELLS_PER_LEAF, 0, CELLS_PER_LEAF - 1)
        cell = leaf * CELLS_PER_LEAF + cell_in_leaf
        ui = np.minimum(u_item, 1.0 - 1e-9)
        k = np.searchsorted(self.item_cdf, cell + ui, side="right")
        k = np.clip(k, self.cell_start[cell], np.maximum(self.cell_end[cell] - 1, self.cell_start[cell]))
        return self.order[k]


def _interactions_batch(cfg: SyntheticConfig, sampler: _Sampler, items: dict[str, np.ndarray],
                        idx: np.ndarray, users: dict[str, np.ndarray], item_id_arr: np.ndarray) -> pl.DataFrame:
    seed = cfg.seed
    cat_logw, flat = sampler.prepare(users["taste"])
    n_ev = users["n_events"]
    steps = int(n_ev.max())
    u = _uniform(seed, _S_STEP, idx[:, None, None], np.arange(steps)[None, :, None], np.arange(4)[None, None, :])
    rows = np.repeat(np.arange(idx.size), steps)
    # The category of every visit first: a global draw, or the complement of the previous
    # visit's category (which is known without drawing the item), then all items at once.
    glob_leaf = sampler.draw_leaf(cat_logw, rows, u[:, :, 0].ravel()).reshape(idx.size, steps)
    comp_roll = u[:, :, 3] < users["p_complement"][:, None]
    leaf = np.empty_like(glob_leaf)
    leaf[:, 0] = glob_leaf[:, 0]
    for s in range(1, steps):
        comp = COMPLEMENT_IDX[leaf[:, s - 1]]
        use = comp_roll[:, s] & sampler.leaf_nonempty[comp]
        leaf[:, s] = np.where(use, comp, glob_leaf[:, s])
    keep = np.arange(steps)[None, :] < n_ev[:, None]
    r, c = np.nonzero(keep)
    it = sampler.draw(cat_logw, flat, r, leaf[r, c], u[r, c, 0], u[r, c, 1], u[r, c, 2])
    # timestamps: sessions of short gaps separated by long ones
    gaps_u = _uniform(seed, _S_STEP, idx[:, None], 10_000 + np.arange(steps)[None, :])
    kind_u = _uniform(seed, _S_STEP, idx[:, None], 20_000 + np.arange(steps)[None, :])
    short = -np.log1p(-gaps_u) * 180e6  # ~3 minutes
    long_ = -np.log1p(-gaps_u) * 2 * 86_400e6  # ~2 days
    gap = np.where(kind_u < 0.8, short, long_).astype(np.int64) + 1_000_000
    gap[:, 0] = (START_US + _uniform(seed, _S_USER, idx, 304) * SPAN_US).astype(np.int64)
    ts = np.cumsum(gap, axis=1)
    ev = _choice(_uniform(seed, _S_STEP, idx[:, None], 30_000 + np.arange(steps)[None, :]).ravel(), EVENT_PRIOR).reshape(idx.size, steps)
    evn = ev[r, c]
    value = np.where(evn == EVENT_TYPES.index("purchase"), items["price"][it], np.nan)
    uids = np.array(_user_ids(idx, cfg.n_users))
    return pl.DataFrame(
        {
            "user_id": uids[r],
            "item_id": item_id_arr[it],
            "timestamp": pl.Series(ts[r, c]).cast(pl.Datetime("us", "UTC")),
            "event": np.array(EVENT_TYPES)[evn],
            "value": pl.Series(value).fill_nan(None),
        }
    )


# ---------------------------------------------------------------------------
# Queries and qrels
# ---------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------


def _media_tasks(cfg: SyntheticConfig, root: Path, items: dict[str, np.ndarray], block: int) -> list[tuple]:
    tasks = []
    for lo in range(0, cfg.n_items, block):
        hi = min(lo + block, cfg.n_items)
        idx = np.arange(lo, hi)
        tasks.append((
            str(root), cfg.seed, cfg.image_size, idx.tolist(),
            items["leaf"][lo:hi].tolist(), items["colour"][lo:hi].tolist(),
            items["pattern"][lo:hi].tolist(), items["material"][lo:hi].tolist(),
            _media_paths("images", idx, cfg.n_items, items["has_image"][lo:hi]),
            _media_paths("audio", idx, cfg.n_items, items["has_audio"][lo:hi]),
        ))
    return tasks


def _generative_config(cfg: SyntheticConfig) -> dict:
    """The settings that shape the catalog (not chunking or workers, which never change it)."""
    d = asdict(cfg)
    d.pop("chunk_size")
    d.pop("workers")
    return d


SOURCE = "workbench.catalog.synthetic"


def _refuse_to_overwrite_a_foreign_folder(out: Path) -> None:
    """Regenerating replaces the folder: never do that to a catalog (or anything) this generator did not write."""
    if not out.exists():
        return
    try:
        source = json.loads((out / "manifest.json").read_text(encoding="utf-8")).get("source")
    except (OSError, ValueError, AttributeError):
        source = None
    if source != SOURCE:
        raise CatalogError(
            f"{out}: exists and is not a synthetic catalog generated by the workbench (manifest source "
            f"{source!r}); refusing to overwrite it: point CATALOG_DIR elsewhere, or set "
            "GENERATE_SYNTHETIC = False to profile it"
        )


def generate_synthetic(out: str | Path, config: SyntheticConfig | None = None, *, overwrite: bool = False,
                       progress: bool = True) -> Path:
    """Generate a synthetic catalog (tables, media, ground truth) into the folder `out`.

    The folder is written atomically by `CatalogWriter`; `truth/` holds
    ``items.parquet`` (every attribute and which modality shows it),
    ``users.parquet`` (taste vectors and habits), ``queries.parquet`` and
    ``attributes.json`` (modalities, vocabularies, complement map, taste layout).
    `overwrite` replaces only a synthetic catalog this generator wrote: any other
    folder at `out` (a user's catalog) is refused, naming it.
    """
    cfg = config or SyntheticConfig()
    cfg.validate()
    if overwrite:
        _refuse_to_overwrite_a_foreign_folder(Path(out))
    items = _draw_items(cfg)
    item_id_arr = np.array(_item_ids(np.arange(cfg.n_items), cfg.n_items))
    n_workers = (os.cpu_count() or 1) if cfg.workers is None else cfg.workers
    with CatalogWriter(out, name=f"synthetic-{cfg.n_items}-seed{cfg.seed}", source=SOURCE,
                       licence="CC0-1.0", overwrite=overwrite, extra={"synthetic": _generative_config(cfg)}) as w:
        root = w.staging
        pool = None
        pending, product_jobs = [], []
        if n_workers > 0 and (cfg.with_media or cfg.n_items > cfg.chunk_size):
            # forkserver: polars' threads in this process make plain fork unsafe
            method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
            pool = mp.get_context(method).Pool(n_workers)
            # product texts first (the main process appends them in order), then media
            product_jobs = [pool.apply_async(_products_chunk, (cfg, *_part(items, lo, cfg)))
                            for lo in range(0, cfg.n_items, cfg.chunk_size)]
        if cfg.with_media:
            w.media_dir  # noqa: B018 - creates the folder
            tasks = _media_tasks(cfg, root, items, block=500)
            if pool is not None:
                pending = [pool.apply_async(render_block, t) for t in tasks]
            else:
                for t in progress_bar(tasks, desc="media", enabled=progress):
                    render_block(*t)
        try:
            for lo in progress_bar(range(0, cfg.n_items, cfg.chunk_size), desc="products", enabled=progress):
                chunk = product_jobs.pop(0).get() if product_jobs else _products_chunk(cfg, *_part(items, lo, cfg))
                w.append_table("products", chunk)
            w.write_truth("items", _truth_items(cfg, items))
            sampler = _Sampler(items)
            if cfg.n_users:
                user_rows = []
                batch = 128  # users per batch: their (batch, 11520) CDFs stay cache- and memory-friendly
                for lo in progress_bar(range(0, cfg.n_users, batch), desc="users", enabled=progress):
                    idx = np.arange(lo, min(lo + batch, cfg.n_users), dtype=np.int64)
                    users = _draw_users(cfg, idx)
                    w.append_table("interactions", _interactions_batch(cfg, sampler, items, idx, users, item_id_arr))
                    user_rows.append(pl.DataFrame({
                        "user_id": _user_ids(idx, cfg.n_users),
                        "taste": pl.Series(users["taste"].astype(np.float32), dtype=pl.List(pl.Float32)),
                        "p_complement": users["p_complement"].astype(np.float32),
                        "n_events": users["n_events"],
                        "favourite_categories": pl.Series([[LEAVES[i] for i in row] for row in users["favourites"].tolist()],
                                                          dtype=pl.List(pl.Utf8)),
                    }))
                w.write_truth("users", pl.concat(user_rows))
            if cfg.n_queries:
                queries, qtruth, qrels = _queries(cfg, items, sampler, item_id_arr)
                w.write_table("queries", queries)
                for start in range(0, len(qrels), 50):
                    w.append_table("qrels", pl.concat(qrels[start : start + 50]))
                w.write_truth("queries", qtruth)
            w.write_truth("categories", pl.DataFrame({
                "category": list(LEAVES), "top_category": [p.split("/")[0] for p in LEAVES],
                "complement": [LEAVES[int(c)] for c in COMPLEMENT_IDX],
            }))
            _write_attributes_json(w.truth_dir / "attributes.json", cfg)
            if pending:
                done = progress_bar(total=len(pending), desc="media", enabled=progress)
                for p in pending:
                    p.get()
                    done.update()
                done.close()
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()
    return Path(out)


def _write_attributes_json(path: Path, cfg: SyntheticConfig) -> None:
    payload = {
        "modalities": {k: list(v) for k, v in attribute_modalities().items()},
        "vocabulary": vocabulary(),
        "values": {"category": list(LEAVES), "colour": list(COLOURS), "pattern": list(PATTERNS),
                   "material": list(MATERIALS), "style": list(STYLES), "brand": list(BRANDS)},
        "category_tree": {k: list(v) for k, v in TREE.items()},
        "complement": complement_map(),
        "taste_layout": [[name, TASTE_OFFSETS[name], n] for name, n in TASTE_GROUPS],
        "text_mention_rate": TEXT_MENTION_RATE,
        "config": _generative_config(cfg),
    }
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


# ---------------------------------------------------------------------------
# Oracle
# ---------------------------------------------------------------------------


def oracle_scores(truth: dict[str, pl.DataFrame], user_ids: Sequence[str],
                  last_item_ids: Sequence[str | None]) -> np.ndarray:
    """The generator's own log P(next item | user taste, previous item): a Bayes-optimal ranker.

    Returns (len(user_ids), n_items) float64 in the row order of ``truth["items"]``.
    ``last_item_ids[i] = None`` means no previous item (the user's first visit).
    """
    from workbench.errors import EvaluationError

    items, users = truth["items"], truth["users"]
    if len(user_ids) != len(last_item_ids):
        raise EvaluationError(f"oracle_scores: {len(user_ids)} user_ids but {len(last_item_ids)} last_item_ids")
    leaf = items.get_column("category").replace_strict(list(LEAVES), list(range(len(LEAVES))), return_dtype=pl.Int64).to_numpy()
    o = TASTE_OFFSETS
    cols = {
        "colour": (COLOURS, o["colour"]), "material": (MATERIALS, o["material"]), "style": (STYLES, o["style"]),
    }
    feat = [leaf]
    for name, (vals, off) in cols.items():
        feat.append(items.get_column(name).replace_strict(list(vals), list(range(len(vals))), return_dtype=pl.Int64).to_numpy() + off)
    pop = items.get_column("popularity").to_numpy().astype(np.float64)
    row_of_user = {u: i for i, u in enumerate(users.get_column("user_id").to_list())}
    row_of_item = {it: i for i, it in enumerate(items.get_column("item_id").to_list())}
    missing = [u for u in user_ids if u not in row_of_user]
    if missing:
        raise EvaluationError(f"oracle_scores: user_id {missing[0]!r} is not in truth/users.parquet")
    urows = np.array([row_of_user[u] for u in user_ids], dtype=np.int64)
    taste = np.stack(users.get_column("taste").to_numpy())[urows].astype(np.float32).astype(np.float64)
    p = users.get_column("p_complement").to_numpy().astype(np.float32).astype(np.float64)[urows]
    s = pop[None, :] + sum(taste[:, f] for f in feat)  # (U, N)
    lse_all = _logsumexp(s, axis=1)
    out = s - lse_all[:, None]
    leaf_present = np.bincount(leaf, minlength=len(LEAVES)) > 0
    for i, last in enumerate(last_item_ids):
        if last is None:
            continue
        if last not in row_of_item:
            raise EvaluationError(f"oracle_scores: last item {last!r} is not in truth/items.parquet")
        comp = int(COMPLEMENT_IDX[leaf[row_of_item[last]]])
        if not leaf_present[comp]:
            continue
        in_comp = leaf == comp
        lse_c = _logsumexp(s[i, in_comp], axis=0)
        glob = np.log1p(-p[i]) + out[i]
        within = np.where(in_comp, math.log(p[i]) + s[i] - lse_c, -np.inf)
        out[i] = np.logaddexp(glob, within)
    return out


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    m = np.max(x, axis=axis, keepdims=True)
    return (np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m).squeeze(axis)
