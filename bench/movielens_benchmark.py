"""MovieLens-100k: our rankers, each tuned on validation, beside Microsoft Recommenders' table.

Protocol (Recommenders' benchmark notebook): `python_stratified_split` 75/25 per
user (our `stratified_split` gives the same rows for the same seed), top-10,
the user's training items removed, MAP (their `map`: divided by all of the
user's test items), nDCG@10, Precision@10, Recall@10. For each split seed every
ranker's hyperparameters are chosen by `tune_ranker` (optuna, seeded) on a
stratified validation split of that seed's *training* rows, then it is refitted
on all of them and scored on the test rows (`experiment.movielens_runs`). We
print mean ± standard deviation over seeds, and re-score the first seed's lists
with Recommenders' own `python_evaluation` when it is installed.

    .venv/bin/python bench/movielens_benchmark.py                           # popularity, EASE, item-kNN
    .venv/bin/python bench/movielens_benchmark.py --models ease:40 bpr:8 --seeds 42

`NAME:TRIALS` sets a ranker's search budget (default 25 trials; popularity has none).
BPR's costly settings are fixed (`--bpr-fixed`), the rest searched. Timings on a
shared 2-core CPU are noisy; the metrics are not.

Measured (`--models popularity ease:25 itemknn:25`, seeds 42 43 44, 2026-12-01, 315 s):

    ranker       MAP              nDCG@10          Precision@10     Recall@10
    popularity   0.0542 ± 0.0014  0.2495 ± 0.0018  0.2251 ± 0.0012  0.1109 ± 0.0014
    EASE         0.1480 ± 0.0013  0.4789 ± 0.0046  0.4171 ± 0.0042  0.2210 ± 0.0019
    item-kNN     0.1270 ± 0.0009  0.4302 ± 0.0057  0.3739 ± 0.0063  0.1985 ± 0.0021
    Recommenders README: BPR (Cornac) nDCG@10 0.441997, BiVAE (Cornac) 0.475077

EASE's chosen settings per seed: l2 445 / 112 / 312, EDLAE dropout 0.38 / 0.78 / 0.79.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

from workbench.catalog import read_catalog
from workbench.catalog.loaders.movielens import import_movielens
from workbench.catalog.splits import stratified_split
from workbench.experiments.rankers import movielens_runs, movielens_table
from workbench.rankers import make_ranker

DEFAULT_SRC = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ml-100k"
COLUMNS = ("map", "ndcg@10", "precision@10", "recall@10")


def cross_check(name: str, ranker, split, ours: dict[str, float]) -> None:
    """Score our top-10 lists with Recommenders' own python_evaluation, when it is installed."""
    try:
        from recommenders.evaluation import python_evaluation as rec_eval
    except ImportError:
        return
    from workbench.experiments.recommend import recommendations_frame

    users = np.sort(split.test["user_id"].unique().to_numpy().astype(str))
    recs = recommendations_frame(users, ranker.recommend(users, 10)).to_pandas()
    recs["prediction"] = -recs["rank"].astype(float)  # their top-k re-sorts by prediction
    recs = recs.drop(columns=["score", "rank"])
    test = split.test.select("user_id", "item_id", "value").to_pandas()
    kw = {"col_user": "user_id", "col_item": "item_id", "col_rating": "value",
          "col_prediction": "prediction", "k": 10}
    theirs = {"map": rec_eval.map(test, recs, **kw), "ndcg@10": rec_eval.ndcg_at_k(test, recs, **kw),
              "precision@10": rec_eval.precision_at_k(test, recs, **kw),
              "recall@10": rec_eval.recall_at_k(test, recs, **kw)}
    worst = max(abs(theirs[c] - ours[c]) for c in COLUMNS)
    print(f"{name}: Recommenders' python_evaluation on the same lists: max |difference| {worst:.2e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", type=Path, default=DEFAULT_SRC)
    ap.add_argument("--models", nargs="+", default=["popularity", "ease", "itemknn"],
                    help="NAME or NAME:TRIALS (a ranker of workbench.rankers.MODELS)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44])
    ap.add_argument("--bpr-fixed", default='{"dim": 256, "epochs": 60, "n_negatives": 4}',
                    help="BPR parameters kept out of the search (JSON)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None, help="also write the per-seed results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if not (args.src / "u.data").is_file():
        raise SystemExit(f"{args.src}: no u.data; pass --src /path/to/ml-100k")
    budgets = {}
    for spec in args.models:
        name, _, trials = spec.partition(":")
        budgets[name] = int(trials) if trials else (1 if name == "popularity" else 25)
    with tempfile.TemporaryDirectory() as tmp:
        import_movielens(args.src, Path(tmp) / "ml")
        cat = read_catalog(Path(tmp) / "ml")
        items = cat.products.select("item_id").collect()["item_id"].to_numpy().astype(str)
        inter = cat.interactions.collect()
    t0 = time.perf_counter()
    rows = movielens_runs(inter, items, budgets, seeds=args.seeds, fixed={"bpr": json.loads(args.bpr_fixed)},
                          log=lambda line: print(line, flush=True))
    print(f"({time.perf_counter() - t0:.0f} s)")
    first = args.seeds[0]
    split = stratified_split(inter, 0.75, seed=first)
    for row in rows:
        if row["seed"] == first:
            ranker = make_ranker(row["ranker"], seed=first, **row["params"]).fit(split.train, items)
            cross_check(row["ranker"], ranker, split, {c: float(row[c]) for c in COLUMNS})
    with pl.Config(tbl_rows=-1, tbl_width_chars=200, fmt_str_lengths=40, tbl_hide_dataframe_shape=True):
        print(movielens_table(rows))
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": rows},
                                        indent=2, sort_keys=True, default=str))


if __name__ == "__main__":
    main()
