"""UMAP of fused item vectors: wall time and peak memory of `workbench.viz.umap_project`.

Vectors: the synthetic catalog's fused embeddings repeated with small noise up to
`--n` (when `data/work/synthetic-*/embeddings/items.parquet` exists), else a
clustered mixture of `--d`-dimensional vectors. The first fit in a fresh checkout
also compiles UMAP's numba code (cached afterwards in .cache/numba), so the script
fits a small warm-up set first and reports the compile time separately. The peer
measured in the same run is the same UMAP with its own NN-descent neighbours
(`knn="nndescent"`) against the exact torch kNN (`knn="exact"`) used up to 50k items.

    python bench/bench_umap.py               # 100k vectors
    python bench/bench_umap.py --n 20000     # smaller on a busy machine
"""

from __future__ import annotations

import argparse
import resource
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workbench.viz import UMAPConfig, umap_project  # noqa: E402


class PeakRSS:
    """Samples VmRSS every 50 ms in a thread: the peak of a block, not of the process."""

    def __enter__(self):
        self.peak = self.start = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self):
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self._rss())

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0


def vectors(n: int, d: int, seed: int) -> tuple[np.ndarray, str]:
    rng = np.random.default_rng(seed)
    root = Path(__file__).resolve().parents[1]
    found = sorted((root / "data" / "work").glob("synthetic-*/embeddings/items.parquet"))
    if found:
        from workbench.index import read_item_embeddings

        emb = read_item_embeddings(found[-1], "fused").vectors
        x = emb[rng.integers(0, len(emb), n)]
        x = x + 0.05 * rng.standard_normal(x.shape).astype(np.float32)
        return x.astype(np.float32), f"fused embeddings of {found[-1].parent.parent.name} (+noise)"
    centres = rng.standard_normal((200, d)).astype(np.float32)
    x = centres[rng.integers(0, 200, n)] + 0.5 * rng.standard_normal((n, d)).astype(np.float32)
    return x, "mixture of 200 Gaussians"


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--d", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-nndescent", action="store_true")
    args = p.parse_args()

    t = time.perf_counter()
    warm, _ = vectors(500, args.d, args.seed + 1)
    umap_project(warm, UMAPConfig(n_epochs=10, knn="exact"))
    print(f"warm-up (imports + numba compile or cache load): {time.perf_counter() - t:.1f}s")

    x, source = vectors(args.n, args.d, args.seed)
    print(f"{args.n:,} x {x.shape[1]} vectors: {source}; input {x.nbytes / 2**20:.0f} MB")
    results = {}
    modes = ["exact"] + ([] if args.skip_nndescent else ["nndescent"])
    for mode in modes:
        with PeakRSS() as mem:
            t = time.perf_counter()
            coords = umap_project(x, UMAPConfig(knn=mode, exact_knn_max=10**9))
            seconds = time.perf_counter() - t
        results[mode] = seconds
        print(
            f"UMAP knn={mode:9s}: {seconds:7.1f}s, peak RSS +{(mem.peak - mem.start) / 2**20:,.0f} MB "
            f"over the input (process max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10:,.0f} MB), "
            f"layout {coords.shape}"
        )
    if len(results) == 2:
        print(
            f"ratio exact-kNN / NN-descent time (same run): {results['exact'] / results['nndescent']:.2f}"
        )


if __name__ == "__main__":
    main()
