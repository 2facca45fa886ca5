# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 08 · A query lab
#
# What you will learn: what the trained towers and the index do with *your* query. Type
# some words, pick a product's image or sound (or upload your own), weigh the modalities
# with the sliders and look at the results as product cards: thumbnail, title, score, a
# player where the product has audio, and a bar per modality saying how much that
# modality's item vector contributed to the score. Where the catalog has relevance
# judgements for the query (type a catalog query's text, or pick one from the list) each
# card says whether it is relevant. "more like this" on any card searches with that
# product's own vector.
#
# The lab reads what the earlier notebooks wrote: the towers (`<work>/encoders`, notebook
# 02), the item vectors per modality and fused (`<work>/embeddings/items.parquet`, 02/03)
# and the index (`<work>/index`, 06). It works on any catalog: a modality no product has
# gets no slider and no picker, a catalog without qrels shows no relevance marks.
# The computing lives in `workbench.query_lab` (tested without a browser); this notebook
# builds the lab, shows it, and drives it once headlessly to check that it works.

# %% tags=["parameters"]
import os

from workbench.paths import default_catalog_dir, default_report_dir, default_work_dir

PROFILE = os.environ.get("WORKBENCH_PROFILE", "ci")
# <home>/data/... and <home>/reports/<catalog>/ as `workbench run` uses them (home: $WORKBENCH_HOME
# or the checkout; workbench.paths); point CATALOG_DIR at your own catalog to run on it
CATALOG_DIR = str(default_catalog_dir(PROFILE))
WORK_DIR = str(default_work_dir(CATALOG_DIR))
REPORT_DIR = str(default_report_dir(CATALOG_DIR))
K = 12  # cards per query
CANDIDATES = {"ci": 200, "full": 1000}[PROFILE]  # proposed by the index, re-scored by the lab; None: score every item
THUMBNAIL = 96  # card image side, pixels
CHOICES = 500  # catalog queries and products offered in each dropdown
N_CHECK_QUERIES = 50  # catalog queries of the wiring check below
EXAMPLE_QUERY = "red striped wooden chair"  # the teaching example on the synthetic catalog

# %%
import json

import polars as pl
from IPython.display import HTML, display

from workbench.catalog import write_json_atomic
from workbench.notebook import begin_stage
from workbench.query_lab import LabConfig, QueryLab, build_widget

report_dir = begin_stage(REPORT_DIR, WORK_DIR, "08_query_lab", needs="embeddings").report_dir

# %% [markdown]
# ## What the lab can do with this catalog
# Item modalities are those with vectors in the embeddings file; a query can come as
# words, an image or a sound where the encoder also has that tower. Without a saved
# index every item is scored; with one, the index proposes `CANDIDATES` items by the
# fused vector and the lab re-scores them.

# %%
# NBVAL_CHECK_OUTPUT
lab = QueryLab.from_work_dir(CATALOG_DIR, WORK_DIR, LabConfig(k=K, candidates=CANDIDATES, thumbnail=THUMBNAIL,
                                                              choices=CHOICES))
cat = lab.catalog
info = lab.describe()
for key, value in info.items():
    print(f"{key}: {value}")

# %% [markdown]
# ## The lab
# **The score.** The query's parts (words, image, sound), each encoded by its tower into
# the shared space, are averaged into one unit vector `q` ("more like this" uses the
# product's fused vector). A product's score is the weighted mean of the cosines between
# `q` and the product's own vector of each modality it has, with the sliders as weights:
# `score = Σ_m w̃_m · cos(q, v_m)`, where `w̃_m = w_m / Σ w` over the modalities the
# product has. The bar of modality `m` is its term `w̃_m · cos(q, v_m)`, so the bars add
# up to the score; a modality the product lacks has no bar, and its weight goes to the
# others rather than counting as zero. That choice is visible in the cards: words match
# a product's text and image vectors better than its sound, so a product without audio
# loses no low audio term and can rank above one that has all three. Slide audio to 0
# and the two are compared on the same footing.
#
# Moving a slider re-runs the last query. Relevance marks: ✓ a grade of 1–3 in the
# catalog's qrels, ✗ grade 0, "not in qrels" for a product the judgements do not list.

# %%
first_query = lab.query_choices()[0][1] if lab.query_choices() else None
if cat.has_truth:  # the synthetic vocabulary: colour, pattern, material, category
    example, example_is = EXAMPLE_QUERY, "the synthetic example"
elif first_query is not None:
    example, example_is = lab.query_text(first_query), f"the text of catalog query {first_query}"
else:
    example, example_is = cat.products.select("title").head(1).collect().item(), "a product's title"
widget = build_widget(lab, text=example)
display(widget)

# %% [markdown]
# ## Driving it without a browser
# The widget's controls are attributes: setting the text and clicking search (as a
# test does) runs the same code as the button in the browser. Only counts and claims
# that hold on any machine are checked; the scores themselves are trained floats.

# %%
# NBVAL_CHECK_OUTPUT
widget.text.value = example
widget.search.click()
shown = widget.result
print(f"query ({example_is}): {len(shown.cards)} cards, {len(widget.gallery.children)} drawn")
print("every card has a title and a 'more like this' button:",
      all(c.title for c in shown.cards) and all(v.more.description == "more like this" for v in widget.cards))
products = cat.products.select("item_id", "image", "audio").collect()
media = [m for m in ("image", "audio") if m in lab.modalities]
has = {m: set(products.filter(pl.col(m).is_not_null())["item_id"]) for m in media}
print("bars only for modalities a product has:",
      all((m in c.contributions) == (c.item_id in has[m]) for c in shown.cards for m in media))
print("bars add up to the score:",
      all(abs(sum(c.contributions.values()) - c.score) < 1e-6 for c in shown.cards))
print("scores best first:", [c.score for c in shown.cards] == sorted((c.score for c in shown.cards), reverse=True))
print("sliders shown:", [m for m, s in widget.sliders.items() if s.layout.display != "none"])

# %% [markdown]
# The same cards as static HTML, for reading this notebook without a kernel (players
# are left out here to keep the file small; the lab above has them).

# %%
display(HTML(lab.gallery_html(shown, audio=False)))

# %% [markdown]
# ## Relevance marks and "more like this"
# A catalog query's own text brings its qrels along. As a check of the wiring (not an
# evaluation: notebook 07 evaluates on the test split the towers never saw), the share
# of relevant cards over the first `N_CHECK_QUERIES` catalog queries must be well above
# what `K` random products would hold.

# %%
# NBVAL_CHECK_OUTPUT
metrics = {**info, "example_cards": len(shown.cards)}
judged = [q for _, q in lab.query_choices()[:N_CHECK_QUERIES]]
results = [lab.search(lab.query_text(q), query_id=q) for q in judged]
results = [r for r in results if r.judged]
if results:
    picked = results[0]
    print(f"{picked.query_ids[0]}: {len(picked.cards)} cards marked; its qrels grade {picked.n_relevant} products relevant")
    precision = sum(r.n_marked_relevant for r in results) / (K * len(results))
    chance = sum(r.n_relevant for r in results) / (len(results) * len(lab.item_ids))
    print(f"{len(results)} judged catalog queries; share of relevant cards above 3x chance:", precision > 3 * chance)
    metrics.update({"check_queries": len(results), f"precision@{K}": round(precision, 4),
                    f"chance@{K}": round(chance, 4)})
else:
    print("no catalog queries with qrels: no relevance marks to check")
seed = shown.cards[0].item_id
similar = lab.more_like_this(seed)
print(f"more like this: {len(similar.cards)} cards, the product itself left out:",
      seed not in [c.item_id for c in similar.cards])
metrics["more_like_this_cards"] = len(similar.cards)

# %% [markdown]
# ## Metrics
# `reports/08_query_lab/metrics.json`: what the lab could use (`items`, `modalities`,
# `query_modalities`, `catalog_queries`, `queries_with_qrels`, `index`, `candidates`,
# `k`), the cards of the example query and of "more like this", and the wiring check
# (`check_queries`, the share of relevant cards `precision@K` and what chance would give).

# %%
write_json_atomic(report_dir / "metrics.json", metrics)
print(json.dumps(metrics, sort_keys=True))
