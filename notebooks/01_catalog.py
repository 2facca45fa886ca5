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
# # 01 · The catalog
#
# What you will learn: what a product catalog looks like in the workbench (products
# with text, images and audio; users' interactions; search queries with graded
# relevance), how it is validated, and how to profile it before training anything:
# counts, missing modalities, category and attribute mix, activity over time, the
# long tail of users, and the products themselves, seen and heard.
#
# By default the notebook generates the **synthetic catalog**: deterministic by seed,
# with a known ground truth (attributes are split across modalities on purpose, so
# that fused retrieval must beat every single modality). Point `CATALOG_DIR` at your
# own catalog folder and set `GENERATE_SYNTHETIC = False` to profile it instead.

# %% tags=["parameters"]
import os

from workbench.paths import default_catalog_dir, default_report_dir, default_work_dir

PROFILE = os.environ.get("WORKBENCH_PROFILE", "ci")
# <home>/data/... and <home>/reports/<catalog>/ as `workbench run` uses them (home: $WORKBENCH_HOME
# or the checkout; workbench.paths); point CATALOG_DIR at your own catalog to run on it
CATALOG_DIR = str(default_catalog_dir(PROFILE))
WORK_DIR = str(default_work_dir(CATALOG_DIR))
REPORT_DIR = str(default_report_dir(CATALOG_DIR))
GENERATE_SYNTHETIC = True  # False: profile the catalog already at CATALOG_DIR
SEED = 0
N_ITEMS = {"ci": 1000, "full": 20000}[PROFILE]
N_USERS = {"ci": 300, "full": 5000}[PROFILE]
N_QUERIES = {"ci": 1000, "full": 2000}[PROFILE]  # on ci, 1000: the fusions learn from the training
# queries (about 600 of them); with 300 (176 for training) the fused search was clearly weaker

# %%
import json

import polars as pl
from IPython.display import HTML, Audio, display

from workbench.catalog import profiling as prof
from workbench.catalog import read_catalog, validate_catalog, write_json_atomic
from workbench.notebook import begin_stage

report_dir = begin_stage(REPORT_DIR, WORK_DIR, "01_catalog", table_rows=12).report_dir

# %% [markdown]
# ## Generate (or open) the catalog
# Generation writes into a staging folder and renames it into place, so an
# interrupted run never leaves a half-written catalog. The same seed gives
# byte-identical tables and media.

# %%
if GENERATE_SYNTHETIC:
    from workbench.catalog.synthetic import SyntheticConfig, generate_synthetic

    config = SyntheticConfig(n_items=N_ITEMS, n_users=N_USERS, n_queries=N_QUERIES, seed=SEED)
    generate_synthetic(CATALOG_DIR, config, overwrite=True, progress=False)
cat = read_catalog(CATALOG_DIR)  # checks every table against the sha256 in manifest.json
print(cat.name)

# %% [markdown]
# ## Validate
# Every table is checked against the contract (columns, dtypes, unique non-empty ids,
# known items in interactions and qrels, relevance in 0..3, media paths inside the
# folder) and every image and audio file is decoded. Problems would be listed here,
# each naming its table, column, row or file.

# %%
# NBVAL_CHECK_OUTPUT
problems = validate_catalog(cat, check_media=True, on_error="collect", progress=False)
print(f"{len(problems)} problem(s)")
for p in problems[:20]:
    print(" -", p)

# %% [markdown]
# ## Counts and modality coverage

# %%
# NBVAL_CHECK_OUTPUT
counts = prof.table_counts(cat)
coverage = prof.modality_coverage(cat)
print(counts)
print(coverage)

# %% [markdown]
# ## Categories and attributes
# Categories are `/`-separated paths; the bar chart shows the top level. Attributes
# come from the products' `attributes` JSON.

# %%
# NBVAL_CHECK_OUTPUT
top_level = prof.category_counts(cat, level=1)
leaves = prof.category_counts(cat, level=99)
print(f"{top_level.height} top-level categories, {leaves.height} leaf categories")
print(top_level)

# %%
prof.bar_figure(leaves, x="category", y="products", title="Products per leaf category").show()

# %%
attributes = prof.attribute_counts(cat)
if attributes.height:
    prof.bar_figure(attributes, x="value", y="products", color="attribute", title="Attribute values").show()
else:
    print("this catalog has no product attributes")

# %% [markdown]
# ## Interactions: volume over time and the long tail of users

# %%
if cat.interactions is not None:
    prof.timeline_figure(prof.interactions_per_day(cat)).show()
    prof.activity_figure(prof.user_activity(cat)).show()
else:
    print("this catalog has no interactions")

# %% [markdown]
# ## The ten most popular items

# %%
# NBVAL_CHECK_OUTPUT
popular = prof.most_popular(cat, k=10)
print(popular.select("item_id", "interactions", "category"))

# %% [markdown]
# ## See the products
# A gallery of product images with their titles (text and image are different views
# of the same product: in the synthetic catalog, colour and pattern are visible only
# in the image).

# %%
sample_ids = cat.products.select("item_id").head(12).collect().get_column("item_id").to_list()
display(HTML(prof.image_gallery_html(cat, sample_ids)))

# %% [markdown]
# ## Hear the products
# In the synthetic catalog the material (wood, metal, glass, …) is audible only in the
# audio: a tap whose partials and decay depend on the material.

# %%
with_audio = (
    cat.products.filter(pl.col("audio").is_not_null()).select("item_id", "title").head(3).collect()
)
for item_id, title in with_audio.iter_rows():
    wave, rate = prof.audio_clip(cat, item_id)
    print(f"{item_id}: {title}")
    display(Audio(prof.wav_bytes(wave, rate), rate=rate))
if note := prof.absent_modalities_note(cat):
    print(note)

# %% [markdown]
# ## Metrics
# `reports/01_catalog/metrics.json`: `counts` (rows per table), `modality_coverage`
# (share of products with each modality), `categories` (top-level and leaf counts),
# `users` (distinct users in interactions), `problems` (validation problems found).

# %%
# NBVAL_CHECK_OUTPUT
users = 0 if cat.interactions is None else cat.interactions.select(pl.col("user_id").n_unique()).collect().item()
metrics = {
    "counts": dict(counts.iter_rows()),
    "modality_coverage": {m: s for m, _, s in coverage.iter_rows()},
    "categories": {"top_level": top_level.height, "leaf": leaves.height},
    "users": users,
    "problems": len(problems),
}
write_json_atomic(report_dir / "metrics.json", metrics)
print(json.dumps(metrics, indent=1, sort_keys=True))
