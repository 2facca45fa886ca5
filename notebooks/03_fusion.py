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
# What you will learn: how to combine the towers of notebook 02 into one search
# system, and how to choose among the ways of doing it **honestly**. The
# candidates: each modality alone; late fusion (a weighted sum of each
# modality's similarity, the weights searched on a grid that includes 0 for
# every modality); three learned fusions (a weighted mean with learned modality
# weights, concatenation followed by an MLP, gated attention that weighs each
# modality per product); the classic lexical baseline BM25 over title and
# description; and hybrids of BM25 with the best dense system (reciprocal rank
# fusion, and a convex combination of scores).
#
# The queries are split three ways (`workbench.catalog.splits.split_queries`):
# the fusions train on the **training** queries, every choice (the late-fusion
# weights, the hybrid weight, which system to keep) is made on the
# **validation** queries, and the **test** queries only report, with bootstrap
# intervals and paired tests of the chosen system against the best single
# modality and BM25. When one modality alone is best, the notebook says so and
# keeps it. Then: where each system helps (slices of queries and products), the
# worst queries, the learned modality weights, and how a result is explained.
#
# The towers are frozen here (read from `<work>/encoders`). Only the modalities
# the catalog has take part; a catalog without search queries has nothing to
# train or choose a fusion on, and the notebook stops there.

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
FUSION_EPOCHS = {"ci": 12, "full": 30}[PROFILE]
HIDDEN = {"ci": 128, "full": 512}[PROFILE]
FUSION_BATCH_SIZE = 256
FUSION_LR = 3e-3
MODALITY_DROPOUT = 0.2  # chance of hiding a modality in training, so every subset is seen
N_BOOTSTRAP = {"ci": 2000, "full": 10000}[PROFILE]
N_EXPLAINED = 3  # test queries whose top results are explained
N_EXPLAINED_HITS = 5  # results shown per explained query
LATE_FUSION_STEP = 0.25  # grid step of the late-fusion weights (searched on validation)
HYBRID_WEIGHTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # BM25's share in the convex hybrid
DEFAULT_SYSTEM = "text"  # taken when the validation split is too small to choose from
N_WORST = 10  # worst test queries shown with what they returned and missed
SIGNIFICANCE = 0.05  # p-value under which a paired test counts as a difference

# %%
from pathlib import Path

import numpy as np
import plotly.express as px
import polars as pl
import torch

from workbench.catalog import read_catalog, read_truth, write_json_atomic
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
from workbench.encoders.analysis import (
    ablation,
    explain,
    index_fusion,
    modality_weights,
    rank_items,
    subset_vectors,
)
from workbench.encoders.recipes import FusionTraining, train_fusion
from workbench.evaluate import slices
from workbench.evaluate.search import (
    CandidateSettings,
    LexicalSystem,
    build_candidates,
    rank,
    select_system,
)
from workbench.lexical import BM25Config, BM25Index
from workbench.metrics import relevance_matrix
from workbench.notebook import begin_stage, stop_here
from workbench.train import TrainConfig

torch.manual_seed(SEED)
work = Path(WORK_DIR)
report_dir = begin_stage(REPORT_DIR, WORK_DIR, "03_fusion", needs="towers", table_rows=20).report_dir

# %%
cat = read_catalog(CATALOG_DIR)
if len(cat.modalities) < 2:
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
pairs = {part: query_item_pairs(cat, tensors.item_ids, tensors.query_ids, part) for part in ("train", "validation", "test")}
rows = {part: np.array(sorted(set(p[:, 0].tolist())), dtype=np.int64) for part, p in pairs.items()}

# %% tags=["NBVAL_CHECK_OUTPUT"]
# NBVAL_CHECK_OUTPUT
print(" | ".join(f"{part} queries: {len(r)}" for part, r in rows.items()),
      "| shared:", len(set(rows["train"]) & set(rows["validation"]) | set(rows["train"]) & set(rows["test"])
                       | set(rows["validation"]) & set(rows["test"])))
if not len(rows["train"]) or not len(rows["test"]):
    stop_here("a fusion is trained on training queries and compared on test queries; this catalog has "
              f"{len(rows['train'])} and {len(rows['test'])}. `items.parquet` keeps notebook 02's plain-mean fused vectors", report_dir)

# %%
qrels = cat.qrels.collect()
rel = {part: relevance_matrix(qrels, [tensors.query_ids[q] for q in r], tensors.item_ids) for part, r in rows.items()}
validation, test = (rows["validation"], rel["validation"]), (rows["test"], rel["test"])

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
        fusion=FusionConfig(strategy=strategy, d=encoder.d, modalities=modalities, hidden=HIDDEN, modality_dropout=MODALITY_DROPOUT),
        train=TrainConfig(epochs=FUSION_EPOCHS, batch_size=FUSION_BATCH_SIZE, lr=FUSION_LR, seed=SEED),
    )
    fusions[strategy], histories[strategy] = train_fusion(emb, masks, pairs["train"], cfg, progress=False)
curves = pl.DataFrame([{"strategy": s, "epoch": h["epoch"], "loss": h["loss"]} for s, hist in histories.items() for h in hist])
px.line(curves, x="epoch", y="loss", color="strategy", markers=True, title="Fusion training loss", template="plotly_white").show()

# %% [markdown]
# ## The candidates, tuned and chosen on the validation queries
# BM25 indexes the same text the text tower reads (title and description). The
# late-fusion weights and the hybrids' settings are searched on the validation
# queries; then the system with the best validation nDCG@10 is kept (ties go to
# the simpler system). The test queries have not been looked at yet.

# %%
learned = {}
for strategy, fusion in fusions.items():
    vectors, ok = subset_vectors(items, masks, modalities, fusion)
    learned[f"fused/{strategy}"] = (vectors.numpy(), ok.numpy())
bm25 = BM25Index.build(tensors.item_ids, tensors.texts, BM25Config())
lexical = LexicalSystem("bm25", bm25, tensors.query_texts)
candidates, tuning = build_candidates(
    emb["query"].numpy(), {m: items[m].numpy() for m in modalities}, {m: masks[m].numpy() for m in modalities},
    validation, learned=learned, lexical=lexical,
    settings=CandidateSettings(late_fusion_step=LATE_FUSION_STEP, hybrid_weights=HYBRID_WEIGHTS),
)
selection = select_system(candidates, validation, test, default=DEFAULT_SYSTEM, n_resamples=N_BOOTSTRAP, seed=SEED)
systems = {c.name: c for c in candidates}
print(selection.validation.with_columns(pl.col("ndcg@10").round(3)))
print({name: {k: v for k, v in t.items() if k != "grid"} for name, t in tuning.items()})
print(selection.reason)

# %% [markdown]
# ## Every candidate on the test queries
# Mean over the test queries with a 95 % bootstrap interval, and paired
# randomisation tests of the chosen system against the best single modality,
# BM25 and the best of the others.

# %%
print(selection.test.select("system", "kind", *[pl.col(c).round(3) for c in ("ndcg@10", "ndcg@10_low", "ndcg@10_high", "recall@10")], "n"))
print(selection.summary())
bars = selection.test.with_columns((pl.col("ndcg@10_high") - pl.col("ndcg@10")).alias("above"),
                                   (pl.col("ndcg@10") - pl.col("ndcg@10_low")).alias("below"))
px.bar(bars, x="system", y="ndcg@10", color="kind", error_y="above", error_y_minus="below",
       title="nDCG@10 on the test queries (95% intervals)", template="plotly_white").show()

# %% tags=["NBVAL_CHECK_OUTPUT"]
# NBVAL_CHECK_OUTPUT
# Claims with a wide margin hold on any machine; which system won (and by how much) is
# shown above and checked in metrics.json within its tolerance.
vs_single = selection.comparisons.get("vs best single modality")
print("candidates:", sorted({c.kind for c in candidates}))
print("the chosen system is not significantly worse than the best single modality on test:",
      vs_single is None or not (vs_single.p_value < SIGNIFICANCE and vs_single.high < 0))
if cat.has_truth:  # attributes split across modalities: fusing them must win clearly
    print("a system combining modalities was chosen:", systems[selection.chosen].kind in ("late", "learned", "hybrid"))
    print("it beats the best single modality with a 95% interval above 0:", vs_single is not None and vs_single.low > 0)

# %% [markdown]
# ## Pairs of modalities
# Each pair of modalities fused by the learned fusion that did best on validation,
# with the third left out: what each modality adds.

# %%
best_learned = max(learned, key=lambda n: selection.validation.filter(pl.col("system") == n)["ndcg@10"][0])
table, _ = ablation(emb["query"][rows["test"]], items, masks, rel["test"], fusions,
                    pair_fusion=best_learned.removeprefix("fused/"))
pair_table = table.filter(pl.col("system").str.contains("+", literal=True))  # none with two modalities
print(pair_table.with_columns(pl.col("^(ndcg|recall).*$").round(3)))

# %% [markdown]
# ## Where each system helps
# Test queries grouped by the attributes they name (from the ground truth on a
# synthetic catalog, else by matching the products' attribute values in the query
# text) and products grouped by top category and missing media: nDCG@10 per query
# slice, recall@10 of the relevant products per item slice.

# %%
products = cat.products.collect()
test_queries = pl.DataFrame({"query_id": [tensors.query_ids[q] for q in rows["test"]],
                             "text": [tensors.query_texts[q] for q in rows["test"]]})
truth = read_truth(CATALOG_DIR)["queries"] if cat.has_truth else None
named = slices.named_attributes(test_queries, products, truth)
query_slices = slices.query_slice_table(selection.test_per_query, named)
rankings = {name: rank(system, rows["test"], 10) for name, system in systems.items()}
item_slices = slices.item_slice_table(rankings, rel["test"], slices.product_slices(products))
print(query_slices.with_columns(pl.col(pl.Float64).round(3)))
print(item_slices.with_columns(pl.col(pl.Float64).round(3)))

# %% [markdown]
# ## The worst test queries of the chosen system
# What it returned (relevance grade in brackets) and the relevant products it missed.

# %%
worst = slices.worst_queries(selection.test_per_query[selection.chosen]["ndcg@10"], rankings[selection.chosen],
                             rel["test"], test_queries["text"].to_list(), products["title"].to_list(), n=N_WORST)
with pl.Config(fmt_str_lengths=80, tbl_width_chars=200, fmt_table_cell_list_len=5):
    print(worst.with_columns(pl.col("value").round(3)))

# %% [markdown]
# ## Learned modality weights
# The weighted mean has one weight per modality (softmax-normalised over the
# modalities a product has); gated attention computes them per product. Bars
# show the weights for a product with all three modalities (weighted mean) and
# the average per-product weight (gated attention, concat+MLP explanation).

# %%
weights = modality_weights(fusions, items, masks, modalities)
print(weights.with_columns(pl.col("weight").round(3)).pivot(on="modality", index="fusion", values="weight"))
px.bar(weights, x="fusion", y="weight", color="modality", barmode="group", title="Modality weights", template="plotly_white").show()

# %% [markdown]
# ## The item vectors the index will hold
# The index of notebook 06 holds one vector per product. A learned fusion gives
# it directly; late fusion (or one modality alone) becomes a weighted mean with
# the chosen weights over the modalities each product has; a hybrid keeps its
# dense part here and adds BM25 at query time (notebook 07). `<work>/search.json`
# records the chosen system.

# %%
chosen = systems[selection.chosen]
# BM25 alone: the index keeps the best learned fusion's vectors for cross-modal queries
dense_name, kept = index_fusion(selection.chosen, systems, tuning, fusions, best_learned, encoder.d, modalities)
search_spec = {"chosen": chosen.name, "kind": chosen.kind, "reason": selection.reason,
               "dense": dense_name,
               "tuning": {name: {k: v for k, v in t.items() if k != "grid"} for name, t in tuning.items()}}
print(search_spec)

# %% [markdown]
# ## A few explained results
# For `N_EXPLAINED` test queries: the top `N_EXPLAINED_HITS` products of the kept item vectors and the
# modality each product's fused vector leans on.

# %%
fused_vec, ok = subset_vectors(items, masks, modalities, kept)
with torch.inference_mode():
    item_weights = kept(items, masks).weights
why = explain(item_weights, modalities)
top = rank_items(emb["query"][rows["test"][:N_EXPLAINED]], fused_vec, ok, k=N_EXPLAINED_HITS)
relevant = rel["test"][:N_EXPLAINED].toarray()
for j in range(min(N_EXPLAINED, len(rows["test"]))):
    print(f"query: {tensors.query_texts[rows['test'][j]]!r}")
    for i in top[j]:
        print(f"   {tensors.item_ids[i]}  relevance={int(relevant[j, i])}  {tensors.texts[i][:60]!r:64s} {why[i]}")

# %% [markdown]
# ## Save the kept fusion and the embedding files
# `<work>/fusion` holds the kept fusion (`load_encoder(<work>/encoders)` picks it
# up for cross-modal queries), `<work>/embeddings/items.parquet` now has `fused`
# from it plus each product's `weight_<modality>`, and `<work>/search.json` says
# which system was chosen and how it was tuned.

# %%
save_fusion(kept, work / "fusion", extra={"search": search_spec}, encoder_folder=work / "encoders")
write_json_atomic(work / "search.json", search_spec)
out = embed_catalog(cat, load_encoder(work / "encoders"), work / "embeddings", tensors=tensors, progress=False)
print(pl.read_parquet(out / "items.parquet").columns)

# %% [markdown]
# ## Metrics
# `reports/03_fusion/metrics.json`: `selection` (the choice, its reason, the
# validation and test tables with intervals, the paired tests), `ndcg@10` and
# `recall@10` of every candidate on test (`bm25`, `hybrid RRF`, `hybrid convex`
# beside the dense ones), `tuned` settings, `pairs`, the query and item slices,
# and the numbers of queries.

# %%
def _rounded(df: pl.DataFrame, key: str) -> dict:
    return {r[key]: {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items() if k != key}
            for r in df.iter_rows(named=True)}


metrics = {
    "chosen": selection.chosen,
    "selection": selection.to_dict(),
    "ndcg@10": {r["system"]: round(r["ndcg@10"], 4) for r in selection.test.iter_rows(named=True)},
    "recall@10": {r["system"]: round(r["recall@10"], 4) for r in selection.test.iter_rows(named=True)},
    "tuned": search_spec["tuning"],
    "pairs": _rounded(pair_table, "system"),
    "query_slices": _rounded(query_slices, "slice"),
    "item_slices": _rounded(item_slices, "slice"),
    "n_validation_queries": len(rows["validation"]),
    "n_test_queries": len(rows["test"]),
    "modalities": list(modalities),
}
write_json_atomic(report_dir / "metrics.json", metrics)
print(sorted(metrics["ndcg@10"]))
