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
# # 04 · The embedding space
#
# What you will learn: what the item embeddings of notebooks 02–03 look like. We
# project each modality's space and the fused space to 2-D with UMAP and colour the
# map by category or any attribute (hover a point for its title and category; the
# saved `reports/04_embedding_space/atlas.html` also shows its thumbnail), measure the **modality gap** (how far apart
# the text, image and audio clouds sit), and compare the spaces' **neighbourhood
# quality** in one table: do an item's nearest neighbours share its category, does
# the 2-D map keep the real neighbours (trustworthiness), and which attributes can a
# linear probe read from each space? On the synthetic catalog, colour and pattern
# live only in the image, material only in the audio and brand and style only in the
# text, so only the fused space should know them all.

# %% tags=["parameters"]
import os

from workbench.paths import default_catalog_dir, default_report_dir, default_work_dir

PROFILE = os.environ.get("WORKBENCH_PROFILE", "ci")
# <home>/data/... and <home>/reports/<catalog>/ as `workbench run` uses them (home: $WORKBENCH_HOME
# or the checkout; workbench.paths); point CATALOG_DIR at your own catalog to run on it
CATALOG_DIR = str(default_catalog_dir(PROFILE))
WORK_DIR = str(default_work_dir(CATALOG_DIR))
REPORT_DIR = str(default_report_dir(CATALOG_DIR))
SEED = 0
MAX_POINTS = {"ci": 1000, "full": 20000}[PROFILE]  # items per UMAP map
N_EPOCHS = {"ci": 200, "full": None}[PROFILE]  # None: UMAP's default for the size
K = 10  # neighbours for purity and trustworthiness
CLAIM_MARGIN = 0.1  # a modality "reads an attribute best" only when ahead by this much
THUMB_SIZE = 32  # pixels of the hover thumbnails in the saved atlas.html
THREE_D = False  # also build a 3-D map of the fused space

# %%
import json

import numpy as np
import polars as pl

from workbench import viz
from workbench.catalog import read_catalog, write_json_atomic
from workbench.catalog.profiling import item_labels, label_attributes
from workbench.index import read_item_embeddings
from workbench.notebook import begin_stage
from workbench.progress import progress_bar

stage = begin_stage(REPORT_DIR, WORK_DIR, "04_embedding_space", needs="embeddings",
                    table_rows=12, table_cols=12, table_width=160)
report_dir, emb_path = stage.report_dir, stage.emb_path

# %% [markdown]
# ## The spaces
# `items.parquet` holds one vector per item and modality (null where the item has no
# such media) and the fused vector. Each map uses a seeded sample of at most
# `MAX_POINTS` items, the same items in every space where they are present.

# %%
# NBVAL_CHECK_OUTPUT
cat = read_catalog(CATALOG_DIR)
products = cat.products.select("item_id", "title", "category", "image").collect()
columns = pl.read_parquet_schema(emb_path)
space_names = [c for c in ("text", "image", "audio", "fused") if c in columns]
rng = np.random.default_rng(SEED)
all_ids = products["item_id"].to_numpy()
sample = set(all_ids[np.sort(rng.permutation(len(all_ids))[:MAX_POINTS])].tolist())
spaces = {}
for name in space_names:
    e = read_item_embeddings(emb_path, name)
    keep = np.array([i in sample for i in e.item_ids])
    spaces[name] = (e.item_ids[keep], e.vectors[keep])
    print(f"{name:6s} {keep.sum():5d} items mapped of {len(e.item_ids):6d} with a vector, d={e.vectors.shape[1]}")

# %% [markdown]
# Labels for colouring and probing come from the synthetic ground truth when the
# catalog has one (`truth/items.parquet`); for other catalogs, from the products table.

# %%
labels = item_labels(cat)
attributes = label_attributes(labels)  # category and the attributes worth probing
print(sorted(labels.columns))

# %% [markdown]
# ## UMAP maps
# Seeded, single-threaded UMAP (identical layouts run to run). The first run in a
# fresh checkout compiles UMAP's numba code first; the compiled code is cached in
# `.cache/numba`.

# %%
coords = {}
for name in progress_bar(space_names, desc="UMAP"):
    ids, vectors = spaces[name]
    coords[name] = viz.umap_project(vectors, viz.UMAPConfig(n_epochs=N_EPOCHS, random_state=SEED))

# %%
thumbs = viz.catalog_thumbnails(cat, sorted(sample), size=THUMB_SIZE, fmt="jpeg")


def atlas(name, color="category", with_thumbnails=True):
    # thumbnails only in the saved page: notebook hovers cannot show images
    ids = spaces[name][0]
    frame = pl.DataFrame({"item_id": ids}).join(labels, on="item_id", how="left", maintain_order="left")
    return viz.embedding_scatter(coords[name], frame, color=color, hover=("title", "category"),
                                 thumbnails=[thumbs.get(i) for i in ids] if with_thumbnails else None,
                                 title=f"{name} space, coloured by {color}")


main = "fused" if "fused" in spaces else space_names[0]
maps = {f"atlas-{name}": atlas(name, "top_category") for name in space_names}
atlas(main, "top_category", with_thumbnails=False).show()

# %% [markdown]
# Colour the same map by an attribute that only one modality carries: in the fused
# space, items of one colour should gather within each category; in the text space
# (where colour is rarely written) they should not.

# %%
synthetic = cat.has_truth
by_attribute = ((main, "colour"), (main, "material"), ("text", "colour")) if synthetic else [(main, a) for a in attributes[1:3]]
for name, attr in by_attribute:
    if name in spaces and attr in labels.columns:
        maps[f"atlas-{name}-{attr}"] = atlas(name, attr)
        atlas(name, attr, with_thumbnails=False).show()
viz.save_figures_html(maps, report_dir / "atlas.html", title="Embedding atlas")

# %%
if THREE_D and "fused" in spaces:
    c3 = viz.umap_project(spaces["fused"][1], viz.UMAPConfig(n_components=3, n_epochs=N_EPOCHS, random_state=SEED))
    frame = pl.DataFrame({"item_id": spaces["fused"][0]}).join(labels, on="item_id", how="left", maintain_order="left")
    fig3 = viz.embedding_scatter(c3, frame, color="top_category", title="fused space, 3-D")
    viz.save_figure_html(fig3, report_dir / "atlas_3d.html", div_id="atlas-fused-3d")
    fig3.show()

# %% [markdown]
# ## The modality gap
# Contrastive training pulls matching text, image and audio vectors together, but the
# clouds of different modalities often stay apart (the "modality gap"): here, the
# distance between the centroids of two modality clouds (unit vectors; 0 = same
# place). When notebook 02 also exported embeddings from before alignment
# (`<work>/embeddings/items_before_alignment.parquet`), both are shown.

# %%
stages = {"after alignment": pl.read_parquet(emb_path)}
before_path = emb_path.with_name("items_before_alignment.parquet")
if before_path.exists():
    stages = {"before alignment": pl.read_parquet(before_path), **stages}
if len([s for s in space_names if s != "fused"]) >= 2:
    gap = viz.modality_gap(stages)
    print(gap.with_columns(pl.col("gap").round(3)))
else:  # a gap needs two modalities
    gap = pl.DataFrame()
    print("one modality only: no modality gap to measure")

# %% [markdown]
# ## Neighbourhood quality, space by space
# `purity@10`: share of an item's 10 nearest neighbours (cosine) in its leaf category.
# `trustworthiness@10`: whether the 2-D map's neighbours are real neighbours (1 = all).
# `probe_<attribute>`: accuracy of a logistic regression reading the attribute from the
# vectors (seeded 70/30 split). Chance is about 1/24 for category, 1/10 for colour.

# %%
quality = viz.neighbourhood_quality(spaces, labels, coords=coords, k=K, attributes=attributes, seed=SEED)
print(quality.with_columns(pl.col(pl.Float64).round(3)))

# %% [markdown]
# The accuracies are trained floats (they move in the second decimal between CPUs);
# what must hold anywhere is the split the ground truth built in: each attribute is
# read best, by a wide margin (`CLAIM_MARGIN`), from the modality that carries it.

# %%
# NBVAL_CHECK_OUTPUT
print("spaces:", ", ".join(f"{r['space']} ({r['n_items']} items)" for r in quality.iter_rows(named=True)))
if synthetic:
    from workbench.catalog.synthetic import attribute_modalities

    claims = viz.carrier_claims(quality, attribute_modalities(), margin=CLAIM_MARGIN)
    print(claims.select("attribute", "carried_by", "read_best_by_carrier"))

# %%
probe_fig = viz.probe_figure(quality)
viz.save_figure_html(probe_fig, report_dir / "probes.html", div_id="probes")
probe_fig.show()

# %% [markdown]
# ## Metrics
# `reports/04_embedding_space/metrics.json`: per space the number of mapped items,
# purity@10, trustworthiness@10 and the probe accuracies; the modality gaps.

# %%
metrics = {
    "spaces": {r["space"]: {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items() if k != "space"}
               for r in quality.iter_rows(named=True)},
    "modality_gap": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}
                     for r in gap.iter_rows(named=True)],
    "k": K,
    "max_points": MAX_POINTS,
}
write_json_atomic(report_dir / "metrics.json", metrics)
print(json.dumps(metrics, sort_keys=True)[:300], "...")
