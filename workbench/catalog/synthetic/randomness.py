"""Counter-based randomness: a value depends only on (seed, stream, keys), never on the order of draws."""

from __future__ import annotations

import numpy as np

# random streams
_S_ITEM, _S_TEXT, _S_USER, _S_STEP, _S_QUERY, _S_QREL0 = 1, 2, 3, 4, 5, 6

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 arrays (wrapping arithmetic)."""
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def _uniform(seed: int, stream: int, *keys: np.ndarray | int) -> np.ndarray:
    """Uniform floats in [0, 1), broadcast over the integer key arrays."""
    with np.errstate(over="ignore"):
        h = _mix(np.full(1, seed, dtype=np.uint64) * _GOLD + np.uint64(stream))
        for k in keys:
            h = _mix(h ^ (np.asarray(k).astype(np.uint64) + _GOLD))
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)


def _normal(seed: int, stream: int, *keys: np.ndarray | int) -> np.ndarray:
    """Standard normals via Box-Muller from two counter-based uniforms (last key = slot)."""
    *head, slot = keys
    u1 = _uniform(seed, stream, *head, np.asarray(slot) * 2)
    u2 = _uniform(seed, stream, *head, np.asarray(slot) * 2 + 1)
    return np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2 * np.pi * u2)


def _choice(u: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Categorical draw by inverse CDF; `weights` is (k,) or (n, k) row-wise."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim == 1:
        cdf = np.cumsum(w) / w.sum()
        return np.minimum(np.searchsorted(cdf, u, side="right"), w.size - 1)
    cdf = np.cumsum(w, axis=1)
    cdf /= cdf[:, -1:]
    return np.minimum((cdf <= u[:, None]).sum(axis=1), w.shape[1] - 1)
