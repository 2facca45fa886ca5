"""BM25 (workbench.lexical, on bm25s) vs rank_bm25: build seconds, queries/s, top-10 agreement.

Data: the synthetic catalog's products (`--items`, default 100,000; titles and
descriptions, no media) and its search queries, generated in a temporary folder;
documents are `workbench.encoders.data.product_texts`, as the index reads them.

Both libraries get the same tokens (the workbench tokenizer: lower case, English
stop words, Snowball stemmer), so they differ only in how they score and search.
For each `--methods` entry the peer is the rank_bm25 class with the closest
formula: "bm25+" -> BM25Plus (the same formula: the top-10 lists should agree up
to float ties); "robertson" -> BM25Okapi (the same formula but for terms in more
than half the products, whose negative idf bm25s clips to 0 and rank_bm25 raises to
a floor); "lucene"/"atire" -> BM25Okapi (another idf: most lists agree, not all);
"bm25l" -> BM25L (rank_bm25's multiplies each term by its frequency once more, so
lists differ). Build seconds include tokenising for both; bm25s precomputes every
(term, product) weight at build time, rank_bm25 only counts terms, so the build
favours rank_bm25 and the queries the workbench. rank_bm25 scores every document per query
term in Python, so it runs on the first `--peer-queries` queries only; queries/s
are per library over the queries it ran. Both run on one thread.

Agreement on the peer's queries: mean share of the workbench's top-10 that the
peer's top-10 also holds, and the share of queries whose top-10 sets are equal
(the peer ranks by the same tie rule: higher score, then lower item index).

    python bench/bench_bm25.py                       # 100k products, lucene and bm25+ (about 2 min)
    python bench/bench_bm25.py --items 20000 --methods bm25+
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import bm25s  # noqa: F401 - imported before any timing: its import is not build time
import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workbench.catalog.synthetic import SyntheticConfig, generate_synthetic  # noqa: E402
from workbench.encoders.data import product_texts  # noqa: E402
from workbench.lexical import METHODS, BM25Config, BM25Index  # noqa: E402

K = 10


def peer_class(method: str):
    import rank_bm25

    return {"bm25+": rank_bm25.BM25Plus, "bm25l": rank_bm25.BM25L}.get(method, rank_bm25.BM25Okapi)


def peer_top(scores: np.ndarray, k: int) -> np.ndarray:
    """Top-k by (higher score, lower index), the workbench's tie rule."""
    part = np.argpartition(-scores, k - 1)[:k]
    kth = scores[part].min()
    cand = np.flatnonzero(scores >= kth)
    return cand[np.lexsort((cand, -scores[cand]))][:k]


def run_method(method: str, item_ids: list[str], texts: list[str], queries: list[str], n_peer: int) -> dict:
    cfg = BM25Config(method=method)
    t0 = time.perf_counter()
    index = BM25Index.build(item_ids, texts, cfg)
    build_wb = time.perf_counter() - t0

    t0 = time.perf_counter()
    idx, _ = index.search_indices(queries, K)
    query_wb = time.perf_counter() - t0

    cls = peer_class(method)
    kwargs = {"k1": cfg.k1, "b": cfg.b}
    if method in ("bm25+", "bm25l"):
        kwargs["delta"] = cfg.delta
    t0 = time.perf_counter()
    corpus_tokens = index.tokenize(texts)  # the same tokens: only scoring differs
    peer = cls(corpus_tokens, **kwargs)
    build_peer = time.perf_counter() - t0

    sub = queries[:n_peer]
    t0 = time.perf_counter()
    q_tokens = index.tokenize(sub)
    peer_lists = []
    for tokens in q_tokens:
        peer_lists.append(peer_top(peer.get_scores(tokens), K) if tokens else np.zeros(0, np.int64))
    query_peer = time.perf_counter() - t0

    shares, equal = [], []
    for mine, theirs in zip(idx[:n_peer], peer_lists, strict=True):
        mine = mine[mine >= 0]
        if mine.size == 0:
            continue  # no word any product has: the peer ranks all-zero scores, nothing to compare
        theirs = theirs[: mine.size]
        shares.append(len(set(mine.tolist()) & set(theirs.tolist())) / mine.size)
        equal.append(set(mine.tolist()) == set(theirs.tolist()))
    return {
        "method": method,
        "peer": cls.__name__,
        "build_s": build_wb,
        "peer_build_s": build_peer,
        "qps": len(queries) / query_wb,
        "peer_qps": len(sub) / query_peer,
        "overlap": float(np.mean(shares)) if shares else float("nan"),
        "identical": float(np.mean(equal)) if equal else float("nan"),
        "compared": len(shares),
        "n_terms": index.n_terms,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=100_000, help="synthetic products (default 100000)")
    ap.add_argument("--queries", type=int, default=2000, help="queries for the workbench (default 2000)")
    ap.add_argument("--peer-queries", type=int, default=200, help="of those, queries for rank_bm25 (default 200)")
    ap.add_argument("--methods", default="lucene,bm25+", help="comma-separated BM25 variants (default lucene,bm25+)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        ap.error(f"--methods: unknown {unknown}; expected some of {', '.join(METHODS)}")
    n_peer = min(args.peer_queries, args.queries)

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = SyntheticConfig(n_items=args.items, n_users=0, n_queries=args.queries, seed=args.seed,
                              with_media=False, workers=0)
        root = generate_synthetic(Path(tmp) / "catalog", cfg, progress=False)
        products = pl.read_parquet(root / "products.parquet")
        queries = pl.read_parquet(root / "queries.parquet")["text"].to_list()
    item_ids = products["item_id"].to_list()
    texts = product_texts(products)
    words = np.mean([len(t.split()) for t in texts])
    print(f"data: {len(texts)} synthetic products ({words:.1f} words each), {len(queries)} queries, "
          f"generated in {time.perf_counter() - t0:.1f} s")

    for method in methods:
        r = run_method(method, item_ids, texts, queries, n_peer)
        print(f"\nmethod {r['method']} vs rank_bm25.{r['peer']} ({r['n_terms']} terms)")
        print(f"  build:      workbench {r['build_s']:7.2f} s   rank_bm25 {r['peer_build_s']:7.2f} s   "
              f"workbench speed / rank_bm25 speed = {r['peer_build_s'] / r['build_s']:.2f}")
        print(f"  queries/s:  workbench {r['qps']:7.0f}     rank_bm25 {r['peer_qps']:7.1f}     "
              f"workbench / rank_bm25 = {r['qps'] / r['peer_qps']:.0f}  "
              f"(workbench on {len(queries)} queries, rank_bm25 on {n_peer})")
        print(f"  top-{K} agreement on {r['compared']} queries: mean overlap {r['overlap']:.3f}, "
              f"identical sets {r['identical']:.3f}")


if __name__ == "__main__":
    main()
