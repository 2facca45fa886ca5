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
# # 05 · Rankers: popularity, matrix factorisation and an attention sequence model
#
# What you will learn: how to split interactions without leaking the future, how three
# rankers of growing ambition compare under **full ranking** (every item scored, the
# user's training items removed; no sampled-negative shortcuts), how sure we can be of
# the differences (bootstrap intervals), how training progresses epoch by epoch, what a
# perfect ranker would score on the synthetic catalog (its ground truth), and how our
# rankers fare on MovieLens-100k against Microsoft Recommenders' published table.
#
# * **popularity**: everyone gets the most-interacted items;
# * **BPR**: matrix factorisation, score = user factors · item factors + item bias,
#   trained to rank an interacted item above a random one;
# * **sequential**: SASRec-style causal self-attention over the user's last items;
#   each item enters as a learned ID embedding plus a projection of its fused
#   multimodal embedding (from notebook 03) when that file exists.

# %% tags=["parameters"]
import os

PROFILE = os.environ.get("WORKBENCH_PROFILE", "ci")
CATALOG_DIR = "../data/catalogs/synthetic-" + PROFILE
WORK_DIR = "../data/work/synthetic-" + PROFILE
REPORT_DIR = "../reports"
MOVIELENS_DIR = "../../shared/data/ml-100k"  # point at your own ml-100k folder (u.data, u.item, u.user)
SEED = 0
K = 10
N_BOOT = 1000
BPR_DIM = {"ci": 64, "full": 128}[PROFILE]
BPR_EPOCHS = {"ci": 20, "full": 60}[PROFILE]
SEQ_DIM = {"ci": 64, "full": 64}[PROFILE]
SEQ_LAYERS = {"ci": 1, "full": 2}[PROFILE]
SEQ_MAX_LEN = {"ci": 20, "full": 50}[PROFILE]
SEQ_EPOCHS = {"ci": 15, "full": 60}[PROFILE]
ML_BPR_EPOCHS = {"ci": 8, "full": 40}[PROFILE]
ML_SEEDS = {"ci": [42], "full": [42, 43, 44]}[PROFILE]
TORCH_THREADS = {"ci": 1, "full": os.cpu_count() or 1}[PROFILE]  # tiny models on shared cores: 1

# %%
# ruff: noqa: E402, B007, B018
import json
from pathlib import Path

import numpy as np
import polars as pl
import torch

from workbench.catalog import read_catalog, read_truth, write_json_atomic
from workbench.catalog.profiling import has_rows
from workbench.evaluate.bootstrap import bootstrap_ci
from workbench.evaluate.splits import leave_last_out, stratified_split
from workbench.notebook import stop_here
from workbench.rankers import (
    BPRConfig,
    BPRRanker,
    PopularityRanker,
    SequentialConfig,
    SequentialRanker,
    load_item_embeddings,
    save_rankers,
)
from workbench.rankers import experiment as ex
from workbench.report import data_fingerprint
from workbench.train import TrainConfig

torch.set_num_threads(TORCH_THREADS)
report_dir = Path(REPORT_DIR) / "05_rankers"
report_dir.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## The catalog and a leave-last-out split
# Each user's latest interaction is held out; everything before it is training data.
# The split refuses to leak (no test row in training, no user's test row earlier than
# their training rows) and counts, rather than drops, cold users and items. A
# synthetic user often revisits a product: such a held-out item is one they have seen,
# and because we remove seen items from every list, nobody can retrieve it.

# %%
if not Path(CATALOG_DIR, "manifest.json").exists():  # notebook 01 normally generated it
    from workbench.catalog.synthetic import SyntheticConfig, generate_synthetic

    n_items, n_users, n_queries = {"ci": (1000, 300, 300), "full": (20000, 5000, 2000)}[PROFILE]
    generate_synthetic(CATALOG_DIR, SyntheticConfig(n_items=n_items, n_users=n_users, n_queries=n_queries,
                                                    seed=SEED), progress=False)
cat = read_catalog(CATALOG_DIR)
if not has_rows(cat, "interactions"):
    stop_here("this catalog has no interactions, so there is no ranker to train or evaluate; "
              "notebook 07 evaluates search only", report_dir)

# %%
item_ids = cat.products.select("item_id").collect()["item_id"].to_numpy().astype(str)
split = leave_last_out(cat.interactions)

# %%
# NBVAL_CHECK_OUTPUT
rep = split.report
print(f"items {len(item_ids)}, train rows {rep.n_train}, test rows {rep.n_test}, test users {rep.n_users_test}")
print(f"cold test users {rep.cold_test_users}, cold test items {rep.cold_test_items}, "
      f"test items already seen by the user {rep.test_pairs_seen_in_train}")

# %% [markdown]
# ## Fused item embeddings, when notebook 03 has written them
# The sequence model adds a learned projection of each item's fused embedding to its ID
# embedding, so items nobody has clicked much still carry their category, colour and
# material; BPR is pulled towards the same content (`fused="regularise"`). Without the
# file both run ID-only, and the notebook says so.

# %%
emb_path = Path(WORK_DIR) / "embeddings" / "items.parquet"
fused = load_item_embeddings(emb_path, item_ids) if emb_path.exists() else None
print("fused item embeddings:", "used" if fused is not None else "absent: ID-only rankers")

# %% [markdown]
# ## Train the three rankers
# Both learned rankers train through the workbench's one training loop
# (`workbench.train.fit`: device auto, bf16 on GPU, checkpoints, resume); after every
# epoch they are scored on the test split, which gives the learning curves below.

# %%
curve = ex.epoch_evaluator(split.test, k=K)
train_cfg = dict(batch_size=256, lr=5e-3, warmup=0.0, grad_clip=None, progress=False, seed=SEED)
rankers = {
    "popularity": PopularityRanker(),
    "bpr": BPRRanker(BPRConfig(dim=BPR_DIM, l2=1e-3, fused="regularise" if fused is not None else "none",
                               train=TrainConfig(epochs=BPR_EPOCHS, **train_cfg)), eval_fn=curve),
    "sequential": SequentialRanker(SequentialConfig(
        max_len=SEQ_MAX_LEN, dim=SEQ_DIM, layers=SEQ_LAYERS, dropout=0.2,
        train=TrainConfig(epochs=SEQ_EPOCHS, batch_size=64, lr=2e-3, progress=False, seed=SEED)), eval_fn=curve),
}
for name, ranker in rankers.items():
    ranker.fit(split.train, item_ids, item_embeddings=fused)

# %% [markdown]
# ## Save the rankers for notebook 07
# Each ranker goes to `<WORK_DIR>/rankers/<name>` (weights, seen items, ids and config;
# `workbench.rankers.load_ranker` reads it back) with a fingerprint of what it was
# trained on: this catalog, the leave-last-out split, the training interactions and the
# item universe. Notebook 07 re-ranks with the saved ranker and refuses one trained on
# other data.

# %%
# NBVAL_CHECK_OUTPUT
saved = save_rankers(rankers, Path(WORK_DIR) / "rankers",
                     catalog_fingerprint=data_fingerprint(CATALOG_DIR)["fingerprint"], split=split)
for folder in saved:
    print("saved", Path(folder.parent.name, folder.name))

# %% [markdown]
# ## What a perfect ranker would score
# The generator knows each user's taste vector and the rule that picks the next item
# (often a complement of the previous one). `oracle_scores` turns that into the exact
# next-item probabilities; ranking by them, with the same exclusions, is the ceiling.
# Other catalogs have no ground truth, hence no oracle row.

# %%
per_user = {name: ex.evaluate_ranker(r, split.test, k=K, per_query=True) for name, r in rankers.items()}
if cat.has_truth:
    per_user["oracle"] = ex.oracle_metrics(read_truth(CATALOG_DIR), split.train, split.test, item_ids, k=K, per_query=True)

# %% [markdown]
# ## Metrics with 95 % bootstrap intervals (resampling users)

# %%
rows = []
for name, pq in per_user.items():
    ci = bootstrap_ci({m: pq[f"{m}@{K}"] for m in ("ndcg", "recall", "mrr")}, n_resamples=N_BOOT, seed=SEED)
    rows.append({"ranker": name, **{f"{m}@{K}": f"{iv.mean:.3f} [{iv.low:.3f}, {iv.high:.3f}]" for m, iv in ci.items()}})
table = pl.DataFrame(rows)
table

# %%
# NBVAL_CHECK_OUTPUT
# Deterministic rows (no training): popularity and the oracle.
for name in [n for n in ("popularity", "oracle") if n in per_user]:
    print(name, {m: round(float(np.nanmean(per_user[name][f"{m}@{K}"])), 4) for m in ("ndcg", "recall")})

# %% [markdown]
# ## Learning curves

# %%
fig = ex.learning_curve_figure({n: r.history for n, r in rankers.items() if n != "popularity"},
                               metric=f"test_ndcg@{K}")
fig.write_html(report_dir / "learning_curves.html", include_plotlyjs="cdn", div_id="rankers-learning-curves")
fig.show()

# %% [markdown]
# ## Reading the table
# The generator builds in a sequential habit (the next product is often a complement of
# the previous one) on top of stable tastes and a popularity bias, so the expected order
# is **sequential > BPR > popularity**, all well below the oracle. The gap to the oracle is
# large at this size: a few thousand interactions over a thousand products leave most
# items with a handful of clicks, too few to learn an item from its ID alone; the fused
# embeddings (when present) carry the content the IDs cannot learn. About a third of the
# held-out items were already seen by their user and are removed from every list
# (including the oracle's), which caps recall for all. With a few hundred test users the
# intervals are wide: read differences whose intervals overlap as "not shown". In the
# `ci` run with notebook 03's fused embeddings the order is as expected and the sequence
# ranker's interval clears popularity's (nDCG@10 about 0.047 vs 0.019), while BPR vs
# popularity and sequential vs BPR still overlap. Without the fused file (ID only) we
# measured the same order but all within noise (0.031 / 0.028 / 0.019): the IDs alone
# cannot learn a thousand items from nine thousand clicks. The `full` profile (5,000
# users, more epochs) is the run meant to separate them.

# %%
order = sorted(rankers, key=lambda n: -float(np.nanmean(per_user[n][f"ndcg@{K}"])))
print("order by nDCG@10:", " > ".join(order))

# %% [markdown]
# ## MovieLens-100k against Microsoft Recommenders
# Their protocol: a stratified random 75/25 split per user (seed 42; our
# `stratified_split` reproduces theirs row for row), top-10 lists with the user's
# training items removed, MAP (divided by all of a user's test items), nDCG@10,
# Precision@10 and Recall@10. This section runs when `MOVIELENS_DIR` holds the
# GroupLens files; set it (or pass `-p MOVIELENS_DIR /path/to/ml-100k` to papermill) to
# use your own copy. Under the `ci` profile it trains briefly with one seed; the full
# table with three seeds and tuned settings is `bench/movielens_benchmark.py`. A sequence
# model on a *random* split is a protocol mismatch (the held-out items are not "next"),
# so only popularity and BPR are run here.
#
# What `bench/movielens_benchmark.py` measured (CPU; seeds 42, 43, 44 for split and
# training; mean ± standard deviation; our lists re-scored with Recommenders' own
# `python_evaluation` give identical numbers):
#
# | ranker | seeds | MAP | nDCG@10 | Precision@10 | Recall@10 |
# |---|---|---|---|---|---|
# | ours: popularity | 3 | 0.0542 ± 0.0014 | 0.2495 ± 0.0018 | 0.2251 ± 0.0012 | 0.1109 ± 0.0014 |
# | ours: BPR (dim 200, L2 0.01, 40 epochs) | 3 | 0.1406 ± 0.0006 | 0.4671 ± 0.0006 | 0.4109 ± 0.0017 | 0.2177 ± 0.0020 |
# | ours: BPR (dim 256, L2 0.01, 60 epochs) | 2 | 0.1422 ± 0.0004 | 0.4711 ± 0.0008 | 0.4134 ± 0.0018 | 0.2186 ± 0.0030 |
# | ours: BPR (dim 256, L2 0.01, 60 epochs, 4 negatives) | 3 | 0.1447 ± 0.0005 | 0.4756 ± 0.0015 | 0.4186 ± 0.0025 | 0.2219 ± 0.0014 |
# | ours: sequential (len 50, 20 epochs) | 1 | 0.0703 | 0.2567 | 0.2249 | 0.1313 |
# | Recommenders README: BPR (Cornac) | | 0.132478 | 0.441997 | 0.388229 | 0.212522 |
# | Recommenders README: BiVAE (Cornac) | | | 0.475077 | | |
#
# Our BPR is above Cornac's BPR on every metric (by far more than its seed spread); with
# 256 factors, 60 epochs and 4 negatives per positive it reaches BiVAE on nDCG@10
# (0.4756 ± 0.0015 over seeds 42-44 vs 0.4751): a tie within our seed spread, not a
# win (two seeds were above BiVAE, one below). A configuration's seed reproduces bit
# for bit on the same machine. The sequence model barely beats popularity here, as
# expected on a random split: it predicts what comes *after* the user's latest training
# items, while the held-out quarter is scattered over the user's whole history.

# %%
ml_rows, ml_metrics = [], {}
if Path(MOVIELENS_DIR, "u.data").exists():
    from workbench.catalog.loaders.movielens import import_movielens

    ml_dir = Path(WORK_DIR) / "movielens-catalog"
    import_movielens(Path(MOVIELENS_DIR), ml_dir, overwrite=True)
    ml = read_catalog(ml_dir)
    ml_items = ml.products.select("item_id").collect()["item_id"].to_numpy().astype(str)
    for seed in ML_SEEDS:
        ml_split = stratified_split(ml.interactions, 0.75, seed=seed)
        for name, r in {"popularity": PopularityRanker(), "bpr": BPRRanker(BPRConfig(
                dim=128, l2=1e-2, train=TrainConfig(epochs=ML_BPR_EPOCHS, batch_size=1024, lr=5e-3,
                                                    warmup=0.0, grad_clip=None, progress=False, seed=seed)))}.items():
            ml_rows.append({"ranker": name, "seed": seed, **ex.movielens_protocol_metrics(
                r.fit(ml_split.train, ml_items), ml_split.test, k=K)})
    ours = pl.DataFrame(ml_rows).group_by("ranker").agg(pl.exclude("seed").mean()).sort("ranker")
    ml_metrics = {r["ranker"]: {k: round(v, 4) for k, v in r.items() if k != "ranker"} for r in ours.to_dicts()}
    theirs = pl.DataFrame([{"ranker": n, **v} for n, v in ex.RECOMMENDERS_ML100K.items()])
    display_table = pl.concat([ours.with_columns(pl.lit("ours").alias("source")),
                               theirs.with_columns(pl.lit("Recommenders README").alias("source"))], how="diagonal")
else:
    display_table = pl.DataFrame({"note": [f"{MOVIELENS_DIR} not found: set MOVIELENS_DIR to your ml-100k folder"]})
display_table

# %% [markdown]
# ## Save the headline numbers
# `metrics.json` keys: `catalog.<ranker>.{ndcg@10, recall@10, mrr@10}` (means over
# test users of this notebook's catalog) for popularity, bpr, sequential and, on the
# synthetic catalog, the oracle; `movielens.<ranker>` in Recommenders' conventions when
# the MovieLens section ran.

# %%
metrics = {"catalog": {n: {f"{m}@{K}": round(float(np.nanmean(pq[f"{m}@{K}"])), 4)
                             for m in ("ndcg", "recall", "mrr")} for n, pq in per_user.items()}}
if ml_metrics:
    metrics["movielens"] = ml_metrics
write_json_atomic(report_dir / "metrics.json", metrics)
print(json.dumps(metrics["catalog"], sort_keys=True))
