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
# # 05 · Rankers: from popularity to a sequence model that knows what the products are
#
# What you will learn: how to split interactions without leaking the future, how five
# rankers compare under **full ranking** (every item scored, the user's training items
# removed; no sampled-negative shortcuts), how their hyperparameters are **chosen on a
# validation split carved from the training rows** (optuna, a small seeded budget; the test
# rows only report), how sure we can be of the differences (bootstrap intervals), what a
# perfect ranker would score (the synthetic catalog's ground truth), how rankers serve
# **products nobody has interacted with yet** (cold start), and how they fare on
# MovieLens-100k against Microsoft Recommenders' published table.
#
# * **popularity**: everyone gets the most-interacted items;
# * **BPR**: matrix factorisation, score = user factors · item factors + item bias; here the
#   item factors are a learned map of the item's content features (`fused="content"`);
# * **EASE**: closed-form item-item ridge regression with a zero diagonal (one L2 weight);
# * **item-kNN**: cosine similarity of items over users, k neighbours each;
# * **sequential**: a next-item model over the user's last items, where an item is *what it
#   is* (category, brand, attributes, price and the fused multimodal embedding of notebook
#   03), not a learned ID: SASRec-style causal self-attention over the last items, the
#   pooled content of the window (the taste) and a popularity bias; FPMC's first-order
#   transition (Rendle et al. 2010, `transition_rank`, with `layers` 0 or more) is in its
#   search space.

# %% tags=["parameters"]
import os

from workbench.paths import default_catalog_dir, default_report_dir, default_work_dir

PROFILE = os.environ.get("WORKBENCH_PROFILE", "ci")
# <home>/data/... and <home>/reports/<catalog>/ as `workbench run` uses them (home: $WORKBENCH_HOME
# or the checkout; workbench.paths); point CATALOG_DIR at your own catalog to run on it
CATALOG_DIR = str(default_catalog_dir(PROFILE))
WORK_DIR = str(default_work_dir(CATALOG_DIR))
REPORT_DIR = str(default_report_dir(CATALOG_DIR))
MOVIELENS_DIR = "../../shared/data/ml-100k"  # point at your own ml-100k folder (u.data, u.item, u.user)
SEED = 0
K = 10
N_BOOT = 1000
# optuna trials per ranker on the validation split (popularity has nothing to tune); on ci the
# sequence model runs its registry defaults once on validation (each fit is the notebook's costliest step)
TUNE_BUDGET = {"ci": {"bpr": 3, "sequential": 1, "ease": 4, "itemknn": 4},
               "full": {"bpr": 20, "sequential": 12, "ease": 30, "itemknn": 30}}[PROFILE]
# parameters held out of the search: BPR's item factors are a map of the content features on this
# catalog (fused="content"); the ci profile also fixes the costly ones to stay within two minutes
TUNE_FIXED = {"ci": {"bpr": {"fused": "content", "dim": 64, "epochs": 20, "batch_size": 256, "lr": 1e-2},
                     "sequential": {"epochs": 40}},
              "full": {"bpr": {"fused": "content", "batch_size": 256}}}[PROFILE]
MIN_ORACLE_SHARE = 0.4  # checked claim: the sequence ranker's nDCG@10 over the oracle's
COLD_FRACTION = 0.1  # share of items whose every interaction is held out (cold start)
ML_SEEDS = {"ci": [42], "full": [42, 43, 44]}[PROFILE]
ML_BUDGET = {"ci": {"popularity": 1, "ease": 3}, "full": {"popularity": 1, "ease": 25, "itemknn": 25, "bpr": 8}}[PROFILE]
ML_FIXED = {"ci": {}, "full": {"bpr": {"dim": 256, "epochs": 60, "n_negatives": 4}}}[PROFILE]
TORCH_THREADS = {"ci": 1, "full": os.cpu_count() or 1}[PROFILE]  # tiny models on shared cores: 1
# items, users, queries of the synthetic catalog generated when CATALOG_DIR has none (notebook 01's sizes)
SYNTHETIC_SIZES = {"ci": (1000, 300, 1000), "full": (20000, 5000, 2000)}[PROFILE]

# %%
# ruff: noqa: E402, B007, B018
import json
from pathlib import Path

import numpy as np
import polars as pl
import torch

from workbench.catalog import read_catalog, read_truth, write_json_atomic
from workbench.catalog.profiling import has_rows
from workbench.catalog.splits import cold_items_split, leave_last_out
from workbench.evaluate.rankers import (
    epoch_evaluator,
    evaluate_ranker,
    oracle_metrics,
    ordered_apart,
)
from workbench.experiments import rankers as ex
from workbench.notebook import begin_stage, stop_here
from workbench.rankers import item_content, save_rankers
from workbench.rankers.features import load_content_embeddings
from workbench.report import data_fingerprint

torch.set_num_threads(TORCH_THREADS)
report_dir = begin_stage(REPORT_DIR, WORK_DIR, "05_rankers").report_dir

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

    n_items, n_users, n_queries = SYNTHETIC_SIZES
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
# ## What the products are: content features
# A catalog of this size leaves most products with a handful of clicks (items and
# training rows are counted above): too few to learn each one from its ID. So the sequence model never learns item
# IDs; it learns from what an item *is*: one-hot category path (leaf and branch), brand
# and attribute values, log price, and the fused multimodal embedding of notebook 03
# (which carries what only the image or the audio shows). `item_content` builds that
# matrix from `products.parquet` and `<work>/embeddings/items.parquet`; without the
# embeddings file the catalog's own columns are used alone, and the notebook says so.

# %%
emb_path = Path(WORK_DIR) / "embeddings" / "items.parquet"
embeddings = load_content_embeddings(emb_path, item_ids, columns=("fused",)) if emb_path.exists() else None
content = item_content(cat.products, item_ids, embeddings)
print(f"content features: {content.shape[1]} per item;", "fused embeddings " +
      ("used" if embeddings else "absent: catalog columns only"))

# %% [markdown]
# ## Hyperparameters, chosen on validation
# `tune_ranker` carves a validation split out of the *training* rows (each user's last
# training interaction), runs a seeded optuna search (`TUNE_BUDGET` trials; the first
# trial is the ranker's defaults) and keeps the parameters with the best validation
# nDCG@10. The test rows take no part in any choice. The table shows what was chosen.

# %%
tuned = ex.tune_rankers(TUNE_BUDGET, split.train, item_ids, seed=SEED, item_embeddings=content,
                        fixed=TUNE_FIXED)
ex.tuned_table(tuned)

# %% [markdown]
# ## Train the rankers with the chosen parameters
# The trained rankers (BPR, sequential) go through the workbench's one training loop
# (`workbench.train.fit`: device auto, bf16 on GPU, checkpoints, resume); after every
# epoch they are scored on the test split, which only draws the learning curves below.

# %%
curve = epoch_evaluator(split.test, k=K)
rankers = ex.fit_with_popularity(tuned, split.train, item_ids, item_embeddings=content, seed=SEED, eval_fn=curve)

# %% [markdown]
# ## Save the rankers for notebook 07
# Each ranker goes to `<WORK_DIR>/rankers/<name>` (weights, seen items, ids and config;
# `workbench.rankers.load_ranker` reads it back) with a fingerprint of what it was
# trained on: this catalog, the leave-last-out split, the training interactions and the
# item universe. Notebook 07 re-ranks with the saved sequential ranker and refuses one
# trained on other data.

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
# The same probabilities without the previous item (`order=False`: taste and popularity
# alone) are the **order-blind oracle**, the ceiling of rankers that ignore order (BPR,
# EASE, item-kNN). Other catalogs have no ground truth, hence no oracle rows.

# %%
per_user = {name: evaluate_ranker(r, split.test, k=K, per_query=True) for name, r in rankers.items()}
if cat.has_truth:
    truth = read_truth(CATALOG_DIR)
    per_user["oracle"] = oracle_metrics(truth, split.train, split.test, item_ids, k=K, per_query=True)
    # the same ground truth without the previous item: the most a ranker that ignores order can score
    per_user["order-blind oracle"] = oracle_metrics(truth, split.train, split.test, item_ids, k=K,
                                                    per_query=True, order=False)

# %% [markdown]
# ## Metrics with 95 % bootstrap intervals (resampling users)

# %%
ex.metrics_table(per_user, k=K, n_resamples=N_BOOT, seed=SEED)

# %%
# NBVAL_CHECK_OUTPUT
# Deterministic rows (no training): popularity and the oracle.
for name in [n for n in ("popularity", "oracle", "order-blind oracle") if n in per_user]:
    print(name, {m: round(float(np.nanmean(per_user[name][f"{m}@{K}"])), 4) for m in ("ndcg", "recall")})

# %%
ndcg = {name: pq[f"ndcg@{K}"] for name, pq in per_user.items()}
print("sequential > BPR > popularity, every interval apart:",
      ordered_apart(ndcg, ["sequential", "bpr", "popularity"], n_resamples=N_BOOT, seed=SEED))
if "oracle" in ndcg:
    ratio = float(np.nanmean(ndcg["sequential"]) / np.nanmean(ndcg["oracle"]))
    print(f"sequential reaches {ratio:.2f} of the oracle's nDCG@10 (the goal is 0.6)")

# %% [markdown]
# What holds with a wide margin on any machine (the ratio above moves in the second
# decimal between CPUs; the goals it misses are said above, not hidden):

# %%
# NBVAL_CHECK_OUTPUT
print("sequential's interval lies above BPR's and popularity's:",
      all(ordered_apart(ndcg, ["sequential", other], n_resamples=N_BOOT, seed=SEED) for other in ("bpr", "popularity")))
if "oracle" in ndcg:
    print(f"sequential reaches at least {MIN_ORACLE_SHARE} of the oracle's nDCG@10:", ratio >= MIN_ORACLE_SHARE)

# %% [markdown]
# ## Learning curves

# %%
fig = ex.learning_curve_figure({n: r.history for n, r in rankers.items() if r.history},
                               metric=f"test_ndcg@{K}")
fig.write_html(report_dir / "learning_curves.html", include_plotlyjs="cdn", div_id="rankers-learning-curves")
fig.show()

# %% [markdown]
# ## Reading the table
# The generator builds in a sequential habit (the next product is from the *complement*
# of the previous one's category with probability 0.40-0.65) on top of stable tastes
# (categories, colours, materials, styles) and a popularity bias, so the expected order
# is **sequential > BPR > popularity**, below the oracle. The table above has the
# measured numbers (test users; the settings were chosen on the validation split), the
# cell below prints the order they give, and the cells above the share of the oracle the
# sequence model reaches. What to look for:
#
# * **A ranker that ignores order has a low ceiling here.** The habit decides about half
#   of the next items, and only the oracle and the sequence model see the previous item;
#   BPR, EASE and item-kNN live under the ceiling of true tastes and popularity alone.
# * **BPR learns little beyond popularity from item IDs**: with a handful of clicks per
#   product an ID factor has little to learn from, and with few optimiser steps from a
#   small init mostly the item biases move. Content factors (`fused="content"`) lift it
#   above popularity; whether the two intervals overlap is in the table. Its own ceiling is
#   the order-blind oracle's row: with a few hundred test users, even that ceiling's
#   interval lies only just above popularity's, so a BPR interval apart from popularity's
#   would take most of the ceiling.
# * **The sequence model** has a per-item popularity bias, the pooled content of the
#   window (the taste) and attention over the last items. Most of its top-10
#   lies in the complement category of the last item, which is right; it ranks *within*
#   that category worse than the oracle (it estimates each product's popularity from a few
#   clicks, colour and material only from the fused embedding), and where the held-out
#   item is outside it, it misses. Its share of the oracle moves by about ±0.03 with the
#   training seed alone, and more with which 300 users are held out: the settings that win
#   on the validation split (0.62 of its oracle) reach 0.49-0.56 on the test split (seeds
#   0-2), where FPMC, which validation ranks lower, reaches 0.57-0.62. A plug-in model with
#   the generator's exact form, the true attributes and fitted tastes reaches about 0.8.
#
# The held-out items already seen by their user (counted above) are removed from every
# list (the oracle's too), which caps recall for all. With a few hundred test users the
# intervals are wide; read differences whose intervals overlap as "not shown".

# %%
order = sorted(rankers, key=lambda n: -float(np.nanmean(per_user[n][f"ndcg@{K}"])))
print("order by nDCG@10:", " > ".join(order))

# %% [markdown]
# ## New products: cold start
# A new product has no interactions at all. `cold_items_split` holds out **every**
# interaction of a seeded share of the products (`COLD_FRACTION`), so no ranker sees them
# in training; each ranker is refitted on the rest with the parameters chosen above and
# asked for its real top-10 list. `recall@10` is the share of a user's held-out cold
# products that made that list; `recall@10 among cold` ranks the cold products alone
# (is their order sensible? random is about 10 / the number of cold products). Rankers
# that only know IDs have no evidence for a product they never saw: popularity ranks it
# last, EASE and item-kNN give it a zero score and BPR its random initial factors, so
# they recommend one only by accident. The sequence model and the content BPR score a new
# product from its content, as they score every product. One detail decides whether that
# works: products nobody interacted with are left out of the negatives in training
# (`unseen_negatives`, by default off for rankers that read content). Otherwise, since each product's fused embedding
# is nearly unique, training learns to push down exactly the products that never appear,
# and a new product is buried by what it looks like (its share of the top-10 slots falls
# far below its share of the catalog; the table below has both). The claims below compare the content rankers' share of
# new products in their lists with the new products' share of the catalog, and with the
# ID-only rankers.

# %%
# NBVAL_CHECK_OUTPUT
cold = cold_items_split(cat.interactions, fraction=COLD_FRACTION, seed=SEED)
print(f"cold items {cold.report.cold_test_items} (every one of their {cold.report.n_test} interactions "
      f"held out), training rows {cold.report.n_train}, cold users {cold.report.cold_test_users}")

# %%
cold_rankers = ex.fit_with_popularity(tuned, cold.train, item_ids, item_embeddings=content, seed=SEED)
cold_table = ex.cold_start_table(cold_rankers, cold, k=K)
print(f"new products: {cold.report.cold_test_items / len(item_ids):.1%} of the catalog")
cold_table

# %%
# NBVAL_CHECK_OUTPUT
recall = dict(zip(cold_table["ranker"], cold_table[f"recall@{K}"], strict=True))
share = dict(zip(cold_table["ranker"], cold_table[f"cold share of top-{K}"], strict=True))
uses_content = dict(zip(cold_table["ranker"], cold_table["uses content"], strict=True))
content_rankers = [n for n in recall if uses_content[n]]
id_only = [n for n in recall if not uses_content[n]]
catalog_share = cold.report.cold_test_items / len(item_ids)
print(f"rankers that read content: {', '.join(content_rankers)}; ID-only: {', '.join(id_only)}")
print(f"each content ranker gives new products at least half their catalog share of its top-{K} slots:",
      bool(content_rankers) and all(share[n] >= catalog_share / 2 for n in content_rankers))
print(f"the ID-only rankers' recall@{K} of new products is at most a fifth of the weakest content ranker's:",
      bool(content_rankers) and all(recall[n] <= min(recall[c] for c in content_rankers) / 5 for n in id_only))

# %% [markdown]
# ## MovieLens-100k against Microsoft Recommenders
# Their protocol: a stratified random 75/25 split per user (seeds 42, 43, 44; our
# `stratified_split` reproduces theirs row for row), top-10 lists with the user's
# training items removed, MAP (divided by all of a user's test items), nDCG@10,
# Precision@10 and Recall@10. Every ranker's hyperparameters are tuned on a stratified
# validation split of that seed's *training* rows. This section runs when `MOVIELENS_DIR`
# holds the GroupLens files; the `ci` profile runs one seed and EASE only, the `full`
# profile and `bench/movielens_benchmark.py` the whole table. A sequence model on a
# *random* split is a protocol mismatch (the held-out items are not "next"), so it is
# not run here.
#
# `bench/movielens_benchmark.py` runs the three seeds (its docstring holds the table it
# measured, and our lists re-scored with Recommenders' own `python_evaluation`); the
# table below sets what ran here beside Recommenders' published rows.

# %%
ml_rows = []
if Path(MOVIELENS_DIR, "u.data").exists():
    from workbench.catalog.loaders.movielens import import_movielens

    ml_dir = Path(WORK_DIR) / "movielens-catalog"
    import_movielens(Path(MOVIELENS_DIR), ml_dir, overwrite=True)
    ml = read_catalog(ml_dir)
    ml_items = ml.products.select("item_id").collect()["item_id"].to_numpy().astype(str)
    ml_rows = ex.movielens_runs(ml.interactions.collect(), ml_items, ML_BUDGET, seeds=ML_SEEDS, fixed=ML_FIXED, k=K)
    display_table = ex.movielens_table(ml_rows, k=K)
else:
    display_table = pl.DataFrame({"note": [f"{MOVIELENS_DIR} not found: set MOVIELENS_DIR to your ml-100k folder"]})
display_table

# %% [markdown]
# ## Save the headline numbers
# `metrics.json` keys: `catalog.<ranker>.{ndcg@10, recall@10, mrr@10}` (means over
# test users of this notebook's catalog) for popularity, bpr, sequential and, on the
# synthetic catalog, the oracle; `order_blind_oracle` the same for the oracle without the
# previous item; `baselines.<ranker>` the same for EASE and item-kNN;
# `cold_start.<ranker>.recall@10` (held-out new products in the real top-10 lists);
# `movielens.<ranker>` (means over `ML_SEEDS`, Recommenders' conventions) when the
# MovieLens section ran.

# %%
metrics = {"catalog": ex.mean_metrics(per_user, ("popularity", "bpr", "sequential", "oracle"), k=K),
           "baselines": ex.mean_metrics(per_user, ("ease", "itemknn"), k=K),
           "cold_start": {r["ranker"]: {f"recall@{K}": round(r[f"recall@{K}"], 4)} for r in cold_table.to_dicts()}}
if "order-blind oracle" in per_user:
    metrics["order_blind_oracle"] = ex.mean_metrics(per_user, ("order-blind oracle",), k=K)["order-blind oracle"]
if ml_rows:
    metrics["movielens"] = ex.movielens_means(ml_rows)
write_json_atomic(report_dir / "metrics.json", metrics)
print(json.dumps(metrics["catalog"], sort_keys=True))
