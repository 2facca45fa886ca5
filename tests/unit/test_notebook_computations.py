"""Computations the notebooks used to do in their cells, now package functions."""

from __future__ import annotations

import numpy as np

from workbench.index import tuning_queries


def test_tuning_queries_are_noisy_unit_item_vectors_then_the_text_queries():
    vectors = np.arange(1, 41, dtype=np.float32).reshape(10, 4)
    text = np.full((2, 4), 7.0, dtype=np.float32)
    queries = tuning_queries(vectors, 3, np.random.default_rng(0), noise=0.0, text_queries=text)
    pick = np.random.default_rng(0).choice(10, size=3, replace=False)
    assert queries.dtype == np.float32 and queries.shape == (5, 4)
    np.testing.assert_allclose(queries[:3], vectors[pick] / np.linalg.norm(vectors[pick], axis=1, keepdims=True),
                               rtol=1e-6)
    np.testing.assert_array_equal(queries[3:], text)


def test_tuning_queries_sample_at_most_every_item_and_draw_their_noise_from_rng():
    vectors = np.eye(4, dtype=np.float32)
    rng = np.random.default_rng(1)
    queries = tuning_queries(vectors, 100, rng, noise=0.05)
    assert queries.shape == (4, 4)
    again = np.random.default_rng(1)
    pick = again.choice(4, size=4, replace=False)
    noise = 0.05 * again.standard_normal((4, 4)).astype(np.float32)
    np.testing.assert_allclose(queries, vectors[pick] + noise, rtol=1e-6)
    assert rng.integers(1000) == again.integers(1000)  # the caller's generator moved on exactly as before
