# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · Encoders: text, image and audio towers aligned in one space
#
# What you will learn: how three towers (a frozen MiniLM text encoder with a
# trained projection head, a frozen ImageNet EfficientNet-Lite0 with a trained
# head for images, a log-mel CNN for audio)
# are trained so that the text, image and sound of the same product land close
# together (a symmetric InfoNCE loss between every pair of modalities a product
# has, plus query texts aligned with their relevant products); how good each
# modality alone is at finding products for a text query; and which product
# attributes each tower captures. On the synthetic catalog the attributes are
# split across modalities (colour and pattern only in the image, material only
# in the sound, brand and style only in the text), so no single tower can do it
# all: that is what notebook 03's fusion fixes.
#
# The frozen backbones' outputs (text and image) are computed once per catalog
# and cached under `<work>/cache` together with the decoded images and clips, so
# an epoch only trains the two heads and the small audio CNN. A small ResNet
# trained from scratch is the alternative image tower; the notebook trains it
# too and compares the two.
#
# On any other catalog the same cells run: a modality that no product has (no
# audio in a photo catalogue) is named once and left out, labels for captions
# and probes come from the products' own category and attributes, and the image
# tower comparison runs on the catalog's own photos.

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
EPOCHS = {"ci": 12, "full": 30}[PROFILE]
BATCH_SIZE = {"ci": 128, "full": 256}[PROFILE]
LR = {"ci": 5e-3, "full": 1e-3}[PROFILE]
# Weight of each query <-> single-modality term beside the query <-> mean-of-towers term (1.0):
# below 1 each tower is asked less to explain the whole query alone and more to add its part.
QUERY_WEIGHT = 0.3
N_GALLERY = 3  # query products shown with their 8 nearest neighbours
CLAIM_MARGIN = 0.1  # a tower "reads an attribute best" only when ahead by this much
# "pretrained": frozen ImageNet EfficientNet-Lite0 + a trained head; "scratch": a small ResNet
# trained here. The towers kept for later notebooks use IMAGE_BACKBONE.
IMAGE_BACKBONE = "pretrained"
COMPARE_IMAGE_BACKBONES = True  # also train the other image backbone and compare image retrieval
# items, users, queries of the synthetic catalog generated when CATALOG_DIR has none (notebook 01's sizes)
SYNTHETIC_SIZES = {"ci": (1000, 300, 1000), "full": (20000, 5000, 2000)}[PROFILE]
GALLERY_THUMB = 48  # pixels of the nearest-neighbour tiles

# %%
import json
from pathlib import Path

import numpy as np
import polars as pl
import torch

from workbench import viz
from workbench.catalog import read_catalog, write_json_atomic
from workbench.catalog.profiling import (
    absent_modalities_note,
    has_rows,
    item_labels,
    label_attributes,
)
from workbench.encoders import EncoderConfig, embed_catalog, load_encoder
from workbench.encoders.alignment import AlignmentConfig
from workbench.encoders.analysis import ablation, loss_curves_figure, rank_items
from workbench.encoders.recipes import TowerTraining, train_towers
from workbench.metrics import relevance_matrix
from workbench.notebook import begin_stage, stop_here
from workbench.train import TrainConfig

torch.manual_seed(SEED)
report_dir = begin_stage(REPORT_DIR, WORK_DIR, "02_encoders", table_rows=20).report_dir
if not (Path(CATALOG_DIR) / "manifest.json").exists():  # notebook 01 normally wrote it
    from workbench.catalog.synthetic import SyntheticConfig, generate_synthetic

    n_items, n_users, n_queries = SYNTHETIC_SIZES
    generate_synthetic(CATALOG_DIR, SyntheticConfig(n_items=n_items, n_users=n_users, n_queries=n_queries, seed=SEED), progress=False)
cat = read_catalog(CATALOG_DIR)
modalities = cat.modalities
labels = item_labels(cat)  # the synthetic ground truth when there is one, else category + attributes
synthetic = cat.has_truth
if note := absent_modalities_note(cat):
    print(note)
if len(modalities) < 2 and not has_rows(cat, "qrels"):
    stop_here(f"only {modalities[0]} and no queries with qrels: there is nothing to align the towers on", report_dir)

# %% [markdown]
# ## Train the towers
# `EncoderConfig.for_profile` picks the sizes: on `ci` a shared space of
# d=128, EfficientNet-Lite0 on 128 px images (224 px on `full`, its native size)
# and a 3-layer CNN on 32 mel bands; on `full` d=256. The from-scratch image
# tower is a 3-stage ResNet of width 8 on 32 px images on `ci`, ResNet-18 (3x3
# stem, no max-pool) on 64 px on `full`. Training uses the project's one loop
# (`workbench.train.fit`: cosine schedule with warm-up, gradient clipping, bf16
# on GPU only, a checkpoint per epoch under `<work>/encoders/checkpoints`). Test
# queries (20%, the split every notebook uses) are never trained on.

# %%
def tower_training(backbone):
    return TowerTraining(
        encoder=EncoderConfig.for_profile(PROFILE, image_backbone=backbone, modalities=modalities),
        train=TrainConfig(epochs=EPOCHS, batch_size=BATCH_SIZE, lr=LR, seed=SEED),
        alignment=AlignmentConfig(modalities=modalities, query_weight=QUERY_WEIGHT),
    )


config = tower_training(IMAGE_BACKBONE)
run = train_towers(cat, WORK_DIR, config, progress=False)
emb, masks = run.embeddings, run.tensors.masks()
print("modalities:", ", ".join(modalities), "| image tower:", config.encoder.image.label if "image" in modalities else "none")

# %% tags=["NBVAL_CHECK_OUTPUT"]
# NBVAL_CHECK_OUTPUT
print("items:", run.tensors.n_items, "| with image:", int(masks["image"].sum()), "| with audio:", int(masks["audio"].sum()))
print("training (query, product) pairs:", len(run.train_pairs), "| test queries:", len(set(run.test_pairs[:, 0].tolist())))
print("epochs trained:", len(run.history), "| d =", config.encoder.d)

# %% [markdown]
# ## Loss curves
# The total loss and each term: product pairs (`text-image`, `text-audio`,
# `image-audio`) and query texts against each modality of their relevant
# products (`query-text`, …). A missing image or clip removes that product from
# the terms that need it; it is never filled with zeros.

# %%
loss_curves_figure(run.history).show()
print(pl.DataFrame([{k: round(v, 3) for k, v in h.items() if k == "loss" or k.startswith("loss/") or k == "temperature"} for h in run.history]))

# %% [markdown]
# ## Which modality finds the products?
# (Only on catalogs with search queries and graded qrels.)
# Each test query is encoded by the text tower and compared (cosine) with every
# product's text, image or audio embedding; Recall@10 and nDCG@10 use the
# graded qrels (`workbench.metrics`). Products without that modality
# cannot be found by it.

# %%
test_q = sorted(set(run.test_pairs[:, 0].tolist()))
single = {m: emb[m] for m in modalities}
if test_q:
    relevance = relevance_matrix(cat.qrels.collect(), [run.tensors.query_ids[q] for q in test_q], run.tensors.item_ids)
    table, per_query = ablation(emb["query"][test_q], single, masks, relevance, fusions={})
    per_modality = table.filter(pl.col("system").is_in(list(modalities)))
    print(per_modality.with_columns(pl.col("^(ndcg|recall).*$").round(3)))
else:
    per_modality = pl.DataFrame(schema={"system": pl.Utf8, "ndcg@10": pl.Float64, "recall@10": pl.Float64})
    print("no test queries with qrels in this catalog: retrieval quality cannot be measured here")

# %% [markdown]
# ## Pretrained or from-scratch image tower?
# The same towers trained again with the other image backbone (same split, seed
# and epochs), then image-only and text-only retrieval on the same test queries.
# The other run is saved to `<work>/encoders-<backbone>` and is not used by later
# notebooks.

# %%
backbones = {}
if COMPARE_IMAGE_BACKBONES and "image" in modalities and test_q:
    other = "pretrained" if IMAGE_BACKBONE == "scratch" else "scratch"
    other_config = tower_training(other)
    other_run = train_towers(cat, WORK_DIR, other_config, progress=False, encoder_dir=Path(WORK_DIR) / f"encoders-{other}")
    rows = []
    for backbone, r, c in ((IMAGE_BACKBONE, run, config), (other, other_run, other_config)):
        t, _ = ablation(r.embeddings["query"][test_q], {"image": r.embeddings["image"]}, r.tensors.masks(), relevance, fusions={})
        backbones[backbone] = {"tower": c.encoder.image.label, "image_size": c.encoder.image.image_size,
                               "ndcg@10": t["ndcg@10"][0], "recall@10": t["recall@10"][0]}
        rows.append({"image backbone": backbone, **backbones[backbone]})
    print(pl.DataFrame(rows).with_columns(pl.col("^(ndcg|recall).*$").round(3)))
else:
    print("skipped:", "no image in this catalog" if "image" not in modalities else "no test queries" if not test_q else "COMPARE_IMAGE_BACKBONES is False")

# %% [markdown]
# ## Nearest neighbours in image space
# A product's image (first tile) and the 8 products whose image embeddings are
# closest. On the synthetic catalog captions give the true colour, pattern and
# category: neighbours share what the image shows (colour, pattern, shape), not
# what only text or sound says; elsewhere, the leaf category and the title.

# %%
if "image" in modalities:
    if synthetic:
        caption = {r["item_id"]: f"{r['colour']} {r['pattern']}<br>{r['leaf_category']}" for r in labels.iter_rows(named=True)}
    else:
        caption = {r["item_id"]: f"{r['leaf_category']}<br>{r['title'][:24]}" for r in labels.iter_rows(named=True)}
    with_image = np.flatnonzero(masks["image"].numpy())
    queries_img = np.random.default_rng(SEED).choice(with_image, min(N_GALLERY, len(with_image)), replace=False)
    nn = rank_items(emb["image"][queries_img], emb["image"], masks["image"], k=9)  # includes itself first
    paths = cat.products.select("image").collect().get_column("image").to_list()
    tiles = [int(i) for row in nn for i in row]
    images = [viz.image_data_uri(cat.media_path(paths[i]), size=GALLERY_THUMB) for i in tiles]
    captions = [("query: " if j % 9 == 0 else "") + caption[run.tensors.item_ids[i]] for j, i in enumerate(tiles)]
    viz.gallery_figure(images, captions, title="Query image + 8 nearest neighbours (image tower)", cols=9, size=70).show()

# %% [markdown]
# ## What does each tower capture?
# A linear probe (seeded logistic regression, 70/30 split of products) predicts
# each attribute from each tower's embeddings: on the synthetic catalog its hidden
# ground truth (by construction the image tower should know colour and pattern,
# the audio tower material, and the text tower brand and style; category is
# shared by text and image); elsewhere the catalog's category and attributes.

# %%
spaces = {m: ([run.tensors.item_ids[i] for i in np.flatnonzero(masks[m].numpy())], emb[m][masks[m]].numpy()) for m in modalities}
quality = viz.neighbourhood_quality(spaces, labels, attributes=label_attributes(labels), seed=SEED)
probes = quality.select("space", pl.col("^probe_.*$").round(2))
print(probes)
viz.probe_figure(quality).show()

# %% tags=["NBVAL_CHECK_OUTPUT"]
# NBVAL_CHECK_OUTPUT
# The split of attributes across towers, as the ground truth intends: each attribute is
# read best by the tower that carries it, ahead by CLAIM_MARGIN (booleans with a wide
# margin hold on any machine; the accuracies above move in the second decimal).
if synthetic and set(modalities) == {"text", "image", "audio"}:
    from workbench.catalog.synthetic import attribute_modalities

    claims = viz.carrier_claims(quality, attribute_modalities(), margin=CLAIM_MARGIN)
    print(claims.select("attribute", "carried_by", "read_best_by_carrier"))

# %% [markdown]
# ## Embedding files
# Every product's per-modality embeddings go to `<work>/embeddings/items.parquet`
# (null where a product lacks a modality); until notebook 03 trains a fusion,
# `fused` is the plain mean of the present modalities. The towers themselves are
# in `<work>/encoders` (`workbench.encoders.load_encoder`).

# %%
encoder = load_encoder(Path(WORK_DIR) / "encoders", with_fusion=False)  # notebook 03 trains the fusion; here: the plain mean
out = embed_catalog(cat, encoder, Path(WORK_DIR) / "embeddings", tensors=run.tensors, progress=False)
print(pl.read_parquet(out / "items.parquet").select("item_id", pl.col("^weight_.*$")).head(3))

# %%
metrics = {
    "ndcg@10": {r["system"]: round(r["ndcg@10"], 4) for r in per_modality.iter_rows(named=True)},
    "recall@10": {r["system"]: round(r["recall@10"], 4) for r in per_modality.iter_rows(named=True)},
    "probe": {r["space"]: {k.removeprefix("probe_"): round(v, 4) for k, v in r.items() if k.startswith("probe_")} for r in probes.iter_rows(named=True)},
    "modalities": list(modalities),
    "image_backbone": config.encoder.image.label if "image" in modalities else None,
    "image_backbones": {b: {k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()} for b, r in backbones.items()},
    "final_loss": round(run.history[-1]["loss"], 4),
    "epochs": len(run.history),
    "n_test_queries": len(test_q),
}
write_json_atomic(report_dir / "metrics.json", metrics)
print(json.dumps(metrics["ndcg@10"], sort_keys=True))
