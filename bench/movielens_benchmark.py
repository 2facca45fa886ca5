"""MovieLens-100k: our rankers beside Microsoft Recommenders' published table.

Protocol (Recommenders' benchmark notebook): `python_stratified_split` 75/25 per
user (our `stratified_split` gives the same rows for the same seed), top-10,
the user's training items removed, MAP (their `map`: divided by all of the
user's test items), nDCG@10, Precision@10, Recall@10. Each ranker runs with
several split+training seeds; we print mean ± standard deviation.

    .venv/bin/python bench/movielens_benchmark.py                       # pop + bpr, seeds 42 43 44
    .venv/bin/python bench/movielens_benchmark.py --models popularity bpr sequential --seeds 42

Timings on a shared 2-core CPU are noisy; the metrics are not.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from workbench.catalog import read_catalog
from workbench.catalog.loaders.movielens import import_movielens
from workbench.evaluate.splits import stratified_split
from workbench.rankers import (
    BPRConfig,
    BPRRanker,
    PopularityRanker,
    SequentialConfig,
    SequentialRanker,
)
from workbench.rankers.experiment import RECOMMENDERS_ML100K, movielens_protocol_metrics
from workbench.train import TrainConfig

DEFAULT_SRC = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ml-100k"
COLUMNS = ("map", "ndcg@10", "precision@10", "recall@10")


def make(name: str, seed: int, args: argparse.Namespace):
    if name == "popularity":
        return PopularityRanker()
    if name == "bpr":
        return BPRRanker(
            BPRConfig(
                dim=args.bpr_dim,
                l2=args.bpr_l2,
                n_negatives=args.bpr_negatives,
                train=TrainConfig(
                    epochs=args.bpr_epochs,
                    batch_size=1024,
                    lr=5e-3,
                    warmup=0.0,
                    grad_clip=None,
                    progress=False,
                    seed=seed,
                ),
            )
        )
    return SequentialRanker(
        SequentialConfig(
            max_len=args.seq_len,
            dim=64,
            layers=2,
            dropout=0.2,
            train=TrainConfig(
                epochs=args.seq_epochs, batch_size=128, lr=1e-3, progress=False, seed=seed
            ),
        )
    )


def cross_check(ranker, split, ours: dict[str, float]) -> None:
    """Score our top-10 lists with Recommenders' own python_evaluation, when it is installed."""
    try:
        from recommenders.evaluation import python_evaluation as rec_eval
    except ImportError:
        return
    from workbench.rankers.recommend import recommendations_frame

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
    print(f"  Recommenders' python_evaluation on the same lists: max |difference| {worst:.2e}")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--src", type=Path, default=DEFAULT_SRC)
    ap.add_argument("--models", nargs="+", default=["popularity", "bpr"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44])
    ap.add_argument("--bpr-dim", type=int, default=200)
    ap.add_argument("--bpr-l2", type=float, default=1e-2)
    ap.add_argument("--bpr-epochs", type=int, default=40)
    ap.add_argument("--bpr-negatives", type=int, default=1, help="negatives per positive pair")
    ap.add_argument("--seq-len", type=int, default=50)
    ap.add_argument("--seq-epochs", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None, help="also write the per-seed results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if not (args.src / "u.data").is_file():
        raise SystemExit(f"{args.src}: no u.data; pass --src /path/to/ml-100k")
    with tempfile.TemporaryDirectory() as tmp:
        import_movielens(args.src, Path(tmp) / "ml")
        cat = read_catalog(Path(tmp) / "ml")
        items = cat.products.select("item_id").collect()["item_id"].to_numpy().astype(str)
        inter = cat.interactions.collect()
    results: dict[str, list[dict[str, float]]] = {m: [] for m in args.models}
    for seed in args.seeds:
        split = stratified_split(inter, 0.75, seed=seed)
        for name in args.models:
            t0 = time.perf_counter()
            ranker = make(name, seed, args).fit(split.train, items)
            m = movielens_protocol_metrics(ranker, split.test)
            m["fit_s"] = time.perf_counter() - t0
            results[name].append(m)
            if seed == args.seeds[0]:
                cross_check(ranker, split, m)
            print(
                f"seed {seed} {name:<11} "
                + "  ".join(f"{c} {m[c]:.4f}" for c in COLUMNS)
                + f"  ({m['fit_s']:.0f} s)",
                flush=True,
            )
    print(f"\n| ranker | seeds | {' | '.join(COLUMNS)} |")
    print("|---|---|" + "---|" * len(COLUMNS))
    for name, runs in results.items():
        cells = [
            f"{np.mean([r[c] for r in runs]):.4f} ± {np.std([r[c] for r in runs], ddof=1) if len(runs) > 1 else 0:.4f}"
            for c in COLUMNS
        ]
        print(f"| ours: {name} | {len(runs)} | {' | '.join(cells)} |")
    for name, ref in RECOMMENDERS_ML100K.items():
        print(
            f"| Recommenders README: {name} | - | {' | '.join(f'{ref[c]:.6f}' if c in ref else '-' for c in COLUMNS)} |"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {"args": {k: str(v) for k, v in vars(args).items()}, "results": results},
                indent=2,
                sort_keys=True,
            )
        )


if __name__ == "__main__":
    main()
