"""What synthetic products are made of: the category tree, attribute values, the words for them, priors.

Also the generator's fixed rates (mentions in text, misleading descriptions,
typos, the complement habit, events) and the layout of a user's taste vector.
Index order matters: media (:mod:`workbench.catalog.synthetic.media`) and the
ground truth use these tuples' positions.
"""

from __future__ import annotations

import numpy as np

__all__ = ["attribute_modalities", "category_tree", "complement_map", "vocabulary"]

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
PATTERNS: tuple[str, ...] = ("plain", "stripes", "dots", "checks")
MATERIALS: tuple[str, ...] = ("wood", "metal", "glass", "plastic", "fabric", "ceramic")
COLOURS: tuple[str, ...] = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")
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
