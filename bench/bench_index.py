"""ScaNN vs exact search vs faiss HNSW at equal recall@10: queries/s, build time, memory.

Data: a mixture of Gaussians (clustered, not uniform noise; uneven cluster sizes
and spreads) of `--n` vectors of dimension `--d`, L2-normalised, with queries drawn
fresh from the same mixture; then, when present, the synthetic catalog's fused
embeddings (`data/work/synthetic-*/embeddings/items.parquet`, or `--embeddings`),
queried by noisy copies of item vectors.

For each method the benchmark sweeps its speed knobs and keeps the fastest setting
with recall@10 >= `--target` against exact search (ScaNN: leaves searched and
re-order size; HNSW: efSearch), then prints queries/s, build seconds and memory
(resident-set growth during the build and the serialised size), and the ratios
ScaNN/exact and ScaNN/HNSW measured in the same run. All three use every core the
process may use. On a shared machine the absolute numbers are noisy.

    python bench/bench_index.py                 # 1M x 256 (the issue's setting)
    python bench/bench_index.py --n 100000      # smaller first on a busy machine
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# A speed benchmark: every core and each library's fastest kernels. `import workbench` would
# otherwise pin one thread and AVX2 kernels for reproducible metrics (workbench.reproducibility),
# and faiss's OpenMP pool would run single-threaded beside ScaNN's own.
os.environ.setdefault("WORKBENCH_PIN", "0")

from workbench.index import (  # noqa: E402
    IndexConfig,
    build_index,
    choose_setting,
    config_for_setting,
    recall_at_k,
    scann_kernels,
    search_grid,
    sweep,
)


def rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def mixture(
    n: int, d: int, n_queries: int, centres: int, seed: int, intrinsic: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """Clustered data like real embeddings: Zipf-ish cluster sizes; within a cluster,
    points vary mostly along a cluster-specific `intrinsic`-dimensional subspace
    (scale per cluster) plus a little isotropic noise. Generated in chunks."""
    rng = np.random.default_rng(seed)
    mu = rng.standard_normal((centres, d)).astype(np.float32)
    basis = rng.standard_normal((centres, intrinsic, d)).astype(np.float32) / np.sqrt(intrinsic)
    scale = rng.uniform(0.3, 0.8, centres).astype(np.float32)
    weights = 1.0 / np.arange(1, centres + 1) ** 0.7
    weights /= weights.sum()

    def draw(m: int) -> np.ndarray:
        out = np.empty((m, d), np.float32)
        for start in range(0, m, 50_000):
            stop = min(start + 50_000, m)
            c = rng.choice(centres, stop - start, p=weights)
            z = rng.standard_normal((stop - start, intrinsic), dtype=np.float32)
            x = mu[c] + scale[c, None] * np.einsum("ni,nid->nd", z, basis[c])
            x += 0.15 * rng.standard_normal((stop - start, d), dtype=np.float32)
            out[start:stop] = x / np.linalg.norm(x, axis=1, keepdims=True)
        return out

    return draw(n), draw(n_queries)


def dir_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def bench_exact(ids, x, q, k, repeats):
    gc.collect()
    before = rss_bytes()
    start = time.perf_counter()
    index = build_index(ids, x, IndexConfig(kind="exact"))
    build_s = time.perf_counter() - start
    grown = rss_bytes() - before
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        top, _ = index.search_indices(q, k)
        best = min(best, time.perf_counter() - t)
    return top, {
        "method": "exact (torch matmul+topk)",
        "setting": f"device={index.device.type}",
        "recall@10": 1.0,
        "qps": len(q) / best,
        "build_s": build_s,
        "rss_growth_mb": grown / 2**20,
        "size_mb": x.nbytes / 2**20,
    }


def bench_scann(ids, x, q, k, exact, target, repeats, num_leaves=None, dims_per_block=(2,),
                anisotropic_threshold=(0.2,)):
    base = IndexConfig.for_size(len(x), kind="scann")
    leaf_counts = sorted(set(num_leaves or [base.num_leaves]))
    rows = []
    for nl in leaf_counts:
        # the fine query-time grid of workbench.index.search_grid for this partition count
        leaves, reorder = search_grid(nl, k)
        rows += sweep(ids, x, q, k=k, config=replace(base, num_leaves=nl), exact=exact, repeats=repeats,
                      leaves_to_search=leaves, reorder=reorder, dims_per_block=dims_per_block,
                      anisotropic_threshold=anisotropic_threshold, progress=False)
    chosen = choose_setting(rows, target, k=k)
    gc.collect()
    before = rss_bytes()
    start = time.perf_counter()
    index = build_index(ids, x, config_for_setting(base, chosen))
    build_s = time.perf_counter() - start
    grown = rss_bytes() - before
    with tempfile.TemporaryDirectory() as tmp:
        size = dir_bytes(index.save(Path(tmp) / "ix") / "scann")
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        top, _ = index.search_indices(q, k)
        best = min(best, time.perf_counter() - t)
    return rows, {
        "method": "ScaNN (tree + AH + reorder)",
        "setting": f"leaves={chosen['num_leaves']} search={chosen['leaves_to_search']} "
        f"reorder={chosen['reorder']} block={chosen.get('dims_per_block', base.dims_per_block)} "
        f"kernels={scann_kernels()}",
        "recall@10": recall_at_k(top, exact, k),
        "qps": len(q) / best,
        "build_s": build_s,
        "rss_growth_mb": grown / 2**20,
        "size_mb": size / 2**20,
        "meets_target": chosen["meets_target"],
    }


def bench_hnsw(x, q, k, exact, target, repeats, m, ef_construction):
    import faiss

    gc.collect()
    before = rss_bytes()
    start = time.perf_counter()
    index = faiss.IndexHNSWFlat(x.shape[1], m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = ef_construction
    index.add(x)
    build_s = time.perf_counter() - start
    grown = rss_bytes() - before
    size = faiss.serialize_index(index).nbytes
    rows, best_row = [], None
    for ef in (10, 12, 16, 24, 32, 48, 64, 96, 128, 256, 512, 1024):
        index.hnsw.efSearch = max(ef, k)
        best = np.inf
        for _ in range(repeats):
            t = time.perf_counter()
            _, top = index.search(q, k)
            best = min(best, time.perf_counter() - t)
        row = {"efSearch": ef, "recall@10": recall_at_k(top, exact, k), "qps": len(q) / best}
        rows.append(row)
        print(f"  hnsw efSearch={ef:5d} recall@10={row['recall@10']:.4f} qps={row['qps']:,.0f}")
        if row["recall@10"] >= target:
            best_row = row  # larger efSearch only gets slower
            break
    best_row = best_row or max(rows, key=lambda r: r["recall@10"])
    return {
        "method": f"faiss HNSWFlat (M={m}, efC={ef_construction})",
        "setting": f"efSearch={best_row['efSearch']}",
        "recall@10": best_row["recall@10"],
        "qps": best_row["qps"],
        "build_s": build_s,
        "rss_growth_mb": grown / 2**20,
        "size_mb": size / 2**20,
        "meets_target": best_row["recall@10"] >= target,
    }


def run(name, ids, x, q, args) -> dict:
    print(
        f"\n=== {name}: {x.shape[0]:,} x {x.shape[1]}, {len(q):,} queries, "
        f"target recall@{args.k} >= {args.target}"
    )
    exact_top, exact = bench_exact(ids, x, q, args.k, args.repeats)
    print(f"  exact: {exact['qps']:,.0f} qps")
    rows, scann = bench_scann(ids, x, q, args.k, exact_top, args.target, args.repeats, args.num_leaves,
                              args.dims_per_block, args.anisotropic_threshold)
    # the fastest few settings meeting the target, and the closest misses (the grid is large)
    key = f"recall@{args.k}"
    meeting = sorted((r for r in rows if r[key] >= args.target), key=lambda r: -r["qps"])[:8]
    missing = sorted((r for r in rows if r[key] < args.target), key=lambda r: -r[key])[:3]
    print(f"  scann: {len(rows)} settings swept; fastest meeting the target, then the closest misses:")
    for r in meeting + missing:
        print(
            f"  scann leaves={r['num_leaves']:5d} search={r['leaves_to_search']:4d} reorder={r['reorder']:4d} "
            f"block={r.get('dims_per_block', 2)} recall@10={r[key]:.4f} qps={r['qps']:,.0f}"
        )
    results = [exact, scann]
    if not args.skip_hnsw:
        results.append(
            bench_hnsw(
                x,
                q,
                args.k,
                exact_top,
                args.target,
                args.repeats,
                args.hnsw_m,
                args.hnsw_ef_construction,
            )
        )
    print(
        f"\n  {'method':42s} {'setting':34s} {'recall@10':>9s} {'qps':>10s} {'build_s':>8s} "
        f"{'rss+MB':>7s} {'size MB':>8s}"
    )
    for r in results:
        print(
            f"  {r['method']:42s} {r['setting']:34s} {r['recall@10']:9.4f} {r['qps']:10,.0f} "
            f"{r['build_s']:8.1f} {r['rss_growth_mb']:7.0f} {r['size_mb']:8.0f}"
        )
    ratios = {"scann_over_exact_qps": scann["qps"] / exact["qps"]}
    if len(results) == 3:
        ratios["scann_over_hnsw_qps"] = scann["qps"] / results[2]["qps"]
        ratios["scann_over_hnsw_build"] = scann["build_s"] / results[2]["build_s"]
    print("  ratios (same run):", {k: round(v, 2) for k, v in ratios.items()})
    return {
        "name": name,
        "n": int(x.shape[0]),
        "d": int(x.shape[1]),
        "queries": len(q),
        "results": results,
        "ratios": ratios,
        "scann_sweep": rows,
    }


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--d", type=int, default=256)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--centres", type=int, default=1000)
    p.add_argument("--intrinsic", type=int, default=16, help="within-cluster dimensionality")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--target", type=float, default=0.95)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--hnsw-m", type=int, default=32)
    p.add_argument("--hnsw-ef-construction", type=int, default=100)
    p.add_argument("--skip-hnsw", action="store_true")
    p.add_argument("--num-leaves", type=int, nargs="+", default=None,
                   help="ScaNN partition counts to sweep (default: IndexConfig.for_size's)")
    p.add_argument("--dims-per-block", type=int, nargs="+", default=[2, 4],
                   help="asymmetric-hashing dimensions per code block to sweep")
    p.add_argument("--anisotropic-threshold", type=float, nargs="+", default=[0.2],
                   help="anisotropic quantisation thresholds to sweep")
    p.add_argument(
        "--embeddings",
        type=Path,
        default=None,
        help="items.parquet of catalog embeddings (default: data/work/synthetic-*/...)",
    )
    p.add_argument("--skip-synthetic-mixture", action="store_true")
    p.add_argument("--json", type=Path, default=None, help="write all numbers here")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    print(f"cpu cores available: {len(os.sched_getaffinity(0))}")

    reports = []
    if not args.skip_synthetic_mixture:
        t = time.perf_counter()
        x, q = mixture(args.n, args.d, args.queries, args.centres, args.seed, args.intrinsic)
        print(f"generated mixture in {time.perf_counter() - t:.1f}s")
        ids = np.char.add("v", np.arange(len(x)).astype(str))
        reports.append(run("mixture of Gaussians", ids, x, q, args))
        del x, q, ids
        gc.collect()

    root = Path(__file__).resolve().parents[1]
    candidates = (
        [args.embeddings]
        if args.embeddings
        else sorted((root / "data" / "work").glob("synthetic-*/embeddings/items.parquet"))
    )
    for path in candidates:
        if path is None or not path.exists():
            continue
        from workbench.index import read_item_embeddings

        emb = read_item_embeddings(path, "fused")
        if len(emb.item_ids) < 200:
            continue
        rng = np.random.default_rng(args.seed)
        pick = rng.choice(len(emb.item_ids), min(args.queries, len(emb.item_ids)), replace=False)
        q = emb.vectors[pick] / np.linalg.norm(emb.vectors[pick], axis=1, keepdims=True)
        q = (q + 0.05 * rng.standard_normal(q.shape)).astype(np.float32)
        reports.append(
            run(f"catalog embeddings {path.parent.parent.name}", emb.item_ids, emb.vectors, q, args)
        )
    if args.json:
        args.json.write_text(json.dumps(reports, indent=2, default=float))


if __name__ == "__main__":
    main()
