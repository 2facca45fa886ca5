"""Train/test splits of interactions and queries, guarded against leakage."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def split_queries(
    query_ids: Sequence[str], test_fraction: float = 0.2, seed: int = 0
) -> tuple[list[str], list[str]]:
    """Deterministic query split by a hash of (seed, query_id): stable across runs and machines.

    Used by every stage that trains on queries (alignment) and every stage that
    evaluates on them, so no test query is ever trained on.
    """
    train, test = [], []
    for qid in query_ids:
        digest = hashlib.sha256(f"{seed}:{qid}".encode()).digest()
        (test if int.from_bytes(digest[:8], "big") / 2**64 < test_fraction else train).append(qid)
    return train, test
