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
# # 03 · Fusion: one product vector from text, image and audio
#
# What you will learn: three ways to fuse the towers of notebook 02 into one
# product vector (a weighted mean with learned modality weights, concatenation
# followed by an MLP, and gated attention that weighs each modality per
# product), how each modality and each pair does on held-out text queries
# compared with the fused systems (an ablation table with a bootstrap
# interval), which modality the fusions lean on, and how a single result is
# explained ("matched mostly on image"). On the synthetic catalog each query
# names attributes that live in different modalities, so the fused vector
# should beat the best single modality by a clear margin.
#
# The towers are frozen here (read from `<work>/encoders`); each fusion is
# trained on the training queries only, aligning each query's text embedding
# with the fused vector of its relevant products. Only the modalities the
# catalog has take part (text and image on a photo catalogue); a catalog without
# search queries has nothing to train a fusion on, and the notebook stops there.

# %% tags=["parameters"]
import os

PROFILE = os.environ.get("WORKBENCH_PROFILE", "ci")
CATALOG_DIR = "../data/catalogs/synthetic-" + PROFILE
WORK_DIR = "../data/work/synthetic-" + PROFILE
REPORT_DIR = "../reports"
SEED = 0
FUSION_EPOCHS = {"ci": 12, "full": 30}[PROFILE]
HIDDEN = {"ci": 128, "full": 512}[PROFILE]
N_BOOTSTRAP = {"ci": 2000, "full": 10000}[PROFILE]
N_EXPLAINED = 3

# %%
from pathlib import Path

import plotly.express as px
import polars as pl
import torch

from workbench.catalog import read_catalog, write_json_atomic
from workbench.catalog.profiling import absent_modalities_note
from workbench.encoders import (
    STRATEGIES,
    FusionConfig,
    embed_catalog,
    encode_items,
    load_encoder,
    prepare_catalog,
    query_item_pairs,
    save_fusion,
)
from workbench.encoders.analysis import ablation, explain, rank_items, subset_vectors
from workbench.encoders.recipes import FusionTraining, train_fusion
from workbench.evaluate.bootstrap import bootstrap_ci, paired_comparison
from workbench.evaluate.metrics import relevance_matrix
from workbench.notebook import skipped_stage, stop_here
from workbench.train import TrainConfig

torch.manual_seed(SEED)
pl.Config.set_tbl_rows(20)
report_dir = Path(REPORT_DIR) / "03_fusion"
report_dir.mkdir(parents=True, exist_ok=True)
work = Path(WORK_DIR)
cat = read_catalog(CATALOG_DIR)
if why := skipped_stage(Path(REPORT_DIR) / "02_encoders"):
    stop_here(f"notebook 02 trained no towers ({why})", report_dir)
elif not (work / "encoders" / "model.safetensors").exists():
    stop_here(f"{work / 'encoders'}: no trained towers; run notebook 02_encoders first", report_dir)
elif len(cat.modalities) < 2:
    stop_here(f"only {cat.modalities[0]} in this catalog: there is nothing to fuse; "
              "`items.parquet` keeps notebook 02's vectors", report_dir)

# %% [markdown]
# ## Tower outputs for every product and query
# The towers of notebook 02 embed each product's text, image and audio once
# (cached media and text features make this quick) and every query's text.

# %%
encoder = load_encoder(work / "encoders", with_fusion=False)  # the towers; this notebook trains the fusion
modalities = encoder.modalities  # notebook 02 trained a tower for each modality the catalog has
if note := absent_modalities_note(cat):
    print(note)
towers = encoder.model.towers
tensors = prepare_catalog(cat, encoder.config, towers["text"], cache_dir=work / "cache", progress=False,
                          image_tower=towers["image"] if "image" in towers else None)
emb = encode_items(encoder.model, tensors)
masks = {m: tensors.masks()[m] for m in modalities}
items = {m: emb[m] for m in modalities}
train_pairs = query_item_pairs(cat, tensors.item_ids, tensors.query_ids, "train")
test_pairs = query_item_pairs(cat, tensors.item_ids, tensors.query_ids, "test")
train_q, test_q = sorted(set(train_pairs[:, 0].tolist())), sorted(set(test_pairs[:, 0].tolist()))

# %% tags=["NBVAL_CHECK_OUTPUT"]
# NBVAL_CHECK_OUTPUT
print("training queries:", len(train_q), "| test queries:", len(test_q), "| shared:", len(set(train_q) & set(test_q)))
if not train_q or not test_q:
    stop_here("a fusion is trained on training queries and compared on test queries; this catalog has "
              f"{len(train_q)} and {len(test_q)}. `items.parquet` keeps notebook 02's plain-mean fused vectors", report_dir)

# %%
qrels = cat.qrels.collect()
rel_test = relevance_matrix(qrels, [tensors.query_ids[q] for q in test_q], tensors.item_ids)
rel_train = relevance_matrix(qrels, [tensors.query_ids[q] for q in train_q], tensors.item_ids)

# %% [markdown]
# ## Train the three fusions
# Each is trained with the same alignment task as the towers (symmetric
# InfoNCE, learnable temperature), between training query texts and the fused
# vectors of their relevant products, with modality dropout so that every
# subset of modalities is seen in training.

# %%
fusions, histories = {}, {}
for strategy in STRATEGIES:
    cfg = FusionTraining(
        fusion=FusionConfig(strategy=strategy, d=encoder.d, modalities=modalities, hidden=HIDDEN, modality_dropout=0.2),
        train=TrainConfig(epochs=FUSION_EPOCHS, batch_size=256, lr=3e-3, seed=SEED),
    )
    fusions[strategy], histories[strategy] = train_fusion(emb, masks, train_pairs, cfg, progress=False)
curves = pl.DataFrame([{"strategy": s, "epoch": h["epoch"], "loss": h["loss"]} for s, hist in histories.items() for h in hist])
px.line(curves, x="epoch", y="loss", color="strategy", markers=True, title="Fusion training loss", template="plotly_white").show()

# %% [markdown]
# ## Which fusion to keep?
# The strategy used for the pairs in the ablation and for the exported
# embeddings is chosen on the **training** queries, so the test queries stay
# untouched for the comparison below.

# %%
train_table, _ = ablation(emb["query"][train_q], items, masks, rel_train, fusions)
best = max(STRATEGIES, key=lambda s: train_table.filter(pl.col("system") == f"fused/{s}")["ndcg@10"][0])
print("chosen on training queries:", best)

# %% [markdown]
# ## Ablation on the test queries
# Single modalities, every pair (fused by the chosen strategy with the third
# modality left out) and all three modalities under each fusion.

# %%
table, per_query = ablation(emb["query"][test_q], items, masks, rel_test, fusions, pair_fusion=best)
print(table.with_columns(pl.col("^(ndcg|recall).*$").round(3)))
px.bar(table, x="system", y="ndcg@10", title="nDCG@10 on the test queries", template="plotly_white").show()

# %% [markdown]
# ## Does fusion beat the best single modality?
# Paired comparison over the same test queries (randomisation test for the
# p-value, paired bootstrap for the interval of the difference in nDCG@10).

# %%
best_single = max(modalities, key=lambda m: table.filter(pl.col("system") == m)["ndcg@10"][0])
fused_name = f"fused/{best}"
cmp = paired_comparison(per_query[best_single]["ndcg@10"], per_query[fused_name]["ndcg@10"], metric="ndcg@10",
                        name_a=best_single, name_b=fused_name, n_resamples=N_BOOTSTRAP, seed=SEED)
intervals = bootstrap_ci({name: per_query[name]["ndcg@10"] for name in (best_single, fused_name)}, n_resamples=N_BOOTSTRAP, seed=SEED)
print(cmp.summary())
for name, iv in intervals.items():
    print(f"{name}: nDCG@10 {iv.mean:.3f} [{iv.low:.3f}, {iv.high:.3f}]")

# %% tags=["NBVAL_CHECK_OUTPUT"]
# NBVAL_CHECK_OUTPUT
# Claims with a wide margin hold on any machine; which single modality is best (and
# by how much fused wins) is a trained float, shown above and checked in metrics.json.
print("fused beats the best single modality on nDCG@10:", cmp.diff > 0)
print("95% interval of the gain excludes 0:", cmp.low > 0)

# %% [markdown]
# ## Learned modality weights
# The weighted mean has one weight per modality (softmax-normalised over the
# modalities a product has); gated attention computes them per product. Bars
# show the weights for a product with all three modalities (weighted mean) and
# the average per-product weight (gated attention, concat+MLP explanation).

# %%
rows = [{"fusion": "weighted_mean", "modality": m, "weight": w} for m, w in fusions["weighted_mean"].global_weights().items()]
for s in ("gated_attention", "concat_mlp"):
    with torch.inference_mode():
        w = fusions[s](items, masks).weights
    present = torch.stack([masks[m] for m in modalities], 1).float()
    mean_w = (w * present).sum(0) / present.sum(0)
    rows += [{"fusion": s, "modality": m, "weight": float(mean_w[j])} for j, m in enumerate(modalities)]
weights = pl.DataFrame(rows)
print(weights.with_columns(pl.col("weight").round(3)).pivot(on="modality", index="fusion", values="weight"))
px.bar(weights, x="fusion", y="weight", color="modality", barmode="group", title="Modality weights", template="plotly_white").show()

# %% [markdown]
# ## A few explained results
# For some test queries: the top 5 products of the chosen fusion and the
# modality each product's fused vector leans on.

# %%
fused_vec, ok = subset_vectors(items, masks, modalities, fusions[best])
with torch.inference_mode():
    item_weights = fusions[best](items, masks).weights
why = explain(item_weights, modalities)
qtext = [tensors.query_texts[q] for q in test_q]
top = rank_items(emb["query"][test_q[:N_EXPLAINED]], fused_vec, ok, k=5)
relevant = rel_test[:N_EXPLAINED].toarray()
for j in range(N_EXPLAINED):
    print(f"query: {qtext[j]!r}")
    for i in top[j]:
        print(f"   {tensors.item_ids[i]}  relevance={int(relevant[j, i])}  {tensors.texts[i][:60]!r:64s} {why[i]}")

# %% [markdown]
# ## Save the chosen fusion and the embedding files
# `<work>/fusion` holds the chosen fusion (`load_encoder(<work>/encoders)` picks
# it up for cross-modal queries) and `<work>/embeddings/items.parquet` now has
# `fused` from it, plus each product's `weight_<modality>`.

# %%
save_fusion(fusions[best], work / "fusion", extra={"chosen_on": "training queries ndcg@10"},
            encoder_folder=work / "encoders")
out = embed_catalog(cat, load_encoder(work / "encoders"), work / "embeddings", tensors=tensors, progress=False)
print(pl.read_parquet(out / "items.parquet").columns)

# %%
metrics = {
    "ndcg@10": {r["system"]: round(r["ndcg@10"], 4) for r in table.iter_rows(named=True)},
    "recall@10": {r["system"]: round(r["recall@10"], 4) for r in table.iter_rows(named=True)},
    "chosen_fusion": best,
    "best_single": best_single,
    "fused_minus_best_single": {k: round(v, 4) if isinstance(v, float) else v for k, v in cmp.as_dict().items()},
    "n_test_queries": len(test_q),
    "modalities": list(modalities),
}
write_json_atomic(report_dir / "metrics.json", metrics)
print(sorted(metrics["ndcg@10"]))
