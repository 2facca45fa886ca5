"""Ranker throughput: batched full ranking, and training epochs/s on MovieLens-100k.

1. Full ranking: score every item for every user with one matrix product per
   block of users, mask their seen items, top-k on the device
   (`Ranker.recommend`), for 100k users x 50k items by default. The peer is the
   same computation one user at a time (a Python loop), measured on a sample of
   users; the ratio is what batching buys.
2. Training: BPR and the sequential ranker on ml-100k (stratified 75/25 split),
   epochs/s through `workbench.train.fit`.

    .venv/bin/python bench/bench_rankers.py                 # 100k x 50k, ml-100k epochs
    .venv/bin/python bench/bench_rankers.py --users 20000 --items 20000 --skip-movielens

On a shared 2-core CPU the absolute numbers are noisy (other jobs compete for
the cores); compare the ratios measured in the same run. The device is chosen
automatically (cuda when present).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

from workbench.device import resolve_device
from workbench.rankers import BPRConfig, BPRRanker, SequentialConfig, SequentialRanker
from workbench.train import TrainConfig

ML = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ml-100k"


def random_ranker(n_users: int, n_items: int, dim: int, per_user: int, seed: int = 0) -> BPRRanker:
    """A BPR ranker with random factors (0 epochs) over `per_user` random interactions per user."""
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(n_users), per_user)
    items = rng.integers(0, n_items, len(users))
    df = pl.DataFrame(
        {
            "user_id": pl.Series(users).cast(pl.Utf8),
            "item_id": pl.Series(items).cast(pl.Utf8),
            "timestamp": pl.Series(np.arange(len(users), dtype=np.int64) * 1_000_000).cast(
                pl.Datetime("us", "UTC")
            ),
        }
    )
    cfg = BPRConfig(dim=dim, train=TrainConfig(epochs=0, progress=False))
    return BPRRanker(cfg).fit(df, [str(i) for i in range(n_items)])


def full_ranking(args: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    ranker = random_ranker(args.users, args.items, args.dim, args.per_user)
    print(
        f"setup ({args.users} users x {args.items} items, dim {args.dim}): {time.perf_counter() - t0:.1f} s"
    )
    users = ranker.user_ids
    ranker.recommend(users[:1000], args.k)  # warm-up
    if ranker.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    recs = ranker.recommend(users, args.k)
    batched_s = time.perf_counter() - t0
    assert recs.indices.shape == (len(users), args.k)
    sample = users[: args.loop_users]
    t0 = time.perf_counter()
    for u in sample:  # the peer: one user at a time
        ranker.recommend([u], args.k, batch_size=1)
    loop_s = time.perf_counter() - t0
    batched = len(users) / batched_s
    loop = len(sample) / loop_s
    print(
        f"full ranking on {ranker.device.type}: batched {batched:,.0f} users/s "
        f"({batched_s:.1f} s for {len(users):,} users); per-user loop {loop:,.0f} users/s "
        f"(on {len(sample)} users); ratio {batched / loop:.1f}x"
    )


def movielens_epochs(args: argparse.Namespace) -> None:
    from workbench.catalog import read_catalog
    from workbench.catalog.loaders.movielens import import_movielens
    from workbench.catalog.splits import stratified_split

    if not (ML / "u.data").is_file():
        print(f"{ML} absent: skipping the MovieLens epochs/s")
        return
    with tempfile.TemporaryDirectory() as tmp:
        import_movielens(ML, Path(tmp) / "ml")
        cat = read_catalog(Path(tmp) / "ml")
        items = cat.products.select("item_id").collect()["item_id"].to_numpy().astype(str)
        split = stratified_split(cat.interactions.collect(), 0.75, seed=42)
    rankers = {
        "bpr (dim 128, batch 1024)": BPRRanker(
            BPRConfig(
                train=TrainConfig(
                    epochs=args.epochs,
                    batch_size=1024,
                    lr=5e-3,
                    warmup=0.0,
                    grad_clip=None,
                    progress=False,
                )
            )
        ),
        "sequential (len 50, dim 64, 2 layers, batch 128)": SequentialRanker(
            SequentialConfig(
                train=TrainConfig(epochs=args.epochs, batch_size=128, lr=1e-3, progress=False)
            )
        ),
    }
    for name, r in rankers.items():
        r.fit(split.train, items)
        walls = [h["wall_s"] for h in r.history[1:]] or [
            r.history[0]["wall_s"]
        ]  # first epoch warms up
        print(
            f"{name}: {1.0 / np.median(walls):.2f} epochs/s on {r.device.type} "
            f"({r.history[-1]['samples_per_s']:,.0f} samples/s)"
        )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--items", type=int, default=50_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--per-user", type=int, default=20, help="seen items per user (masked)")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--loop-users", type=int, default=300)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--skip-movielens", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"device {resolve_device('auto')}, torch threads {torch.get_num_threads()}")
    full_ranking(args)
    if not args.skip_movielens:
        movielens_epochs(args)


if __name__ == "__main__":
    main()
