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
so a held-out last event is never leaked by earlier funnel steps.
:func:`workbench.evaluate.oracle.oracle_scores` gives the generator's own
next-item log-probabilities (a Bayes-optimal ranker).

Queries name a leaf category plus 1-3 attributes from different modalities
("vintage red striped wooden chair"); qrels grade each product of that category
by how many named attributes it has (0..3); other categories are irrelevant.

Everything random is derived from ``(seed, stream, index)`` by a counter-based
hash (tables) or a per-item generator (media), so the catalog is byte-identical
for a given config whatever ``chunk_size`` or ``workers`` are.

The modules: ``config`` (`SyntheticConfig`), ``attributes`` (the category tree,
values, words, priors and rates), ``randomness`` (the counter-based hash),
``products``, ``behaviour`` (users, their taste and visits), ``queries`` (and
qrels), ``media`` (images and tap sounds) and ``generate`` (`generate_synthetic`,
which writes it all).
"""

from workbench.catalog.synthetic.attributes import (
    attribute_modalities,
    category_tree,
    complement_map,
    vocabulary,
)
from workbench.catalog.synthetic.config import SyntheticConfig
from workbench.catalog.synthetic.generate import generate_synthetic

__all__ = [
    "SyntheticConfig",
    "attribute_modalities",
    "category_tree",
    "complement_map",
    "generate_synthetic",
    "vocabulary",
]
