"""Hybrid fusion (workbench.hybrid): RRF and convex combination on hand-computed numbers."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.errors import ConfigError, EvaluationError
from workbench.hybrid import (
    choose_weight,
    convex_combination,
    normalise_scores,
    reciprocal_rank_fusion,
    scatter_scores,
    top_k,
)

NEG = -np.inf


# --------------------------------------------------------------------------- RRF


def test_rrf_of_two_known_rankings() -> None:
    a = np.array([[0, 1, 2], [3, -1, -1]])
    b = np.array([[2, 0, -1], [-1, -1, -1]])
    idx, scores = reciprocal_rank_fusion([a, b], k_out=4, c=1)
    # row 0: item0 1/2 + 1/3, item2 1/4 + 1/2, item1 1/3
    assert idx.tolist() == [[0, 2, 1, -1], [3, -1, -1, -1]]
    np.testing.assert_allclose(scores[0, :3], [1 / 2 + 1 / 3, 1 / 4 + 1 / 2, 1 / 3])
    assert scores[1, 0] == 1 / 2 and np.isneginf(scores[0, 3]) and np.isneginf(scores[1, 1:]).all()


def test_rrf_default_constant_and_lists_of_other_lengths() -> None:
    a = np.array([[5, 7]])
    b = np.array([[7, 9, 5, 1]])
    idx, scores = reciprocal_rank_fusion([a, b], k_out=3)
    # c=60: 7 -> 1/62 + 1/61, 5 -> 1/61 + 1/63, 9 -> 1/62 (1 is cut)
    assert idx.tolist() == [[7, 5, 9]]
    np.testing.assert_allclose(scores[0], [1 / 62 + 1 / 61, 1 / 61 + 1 / 63, 1 / 62])


def test_rrf_ties_go_to_the_lower_item_and_pads_keep_their_rank() -> None:
    idx, scores = reciprocal_rank_fusion([np.array([[4, 2]]), np.array([[2, 4]])], k_out=2)
    assert idx.tolist() == [[2, 4]] and scores[0, 0] == scores[0, 1]
    # a pad in the middle holds rank 2: item 8 is at rank 3 (1/63), not 2
    idx, scores = reciprocal_rank_fusion([np.array([[1, -1, 8]])], k_out=2)
    assert idx.tolist() == [[1, 8]] and scores[0, 1] == 1 / 63


def test_rrf_refuses_bad_rankings() -> None:
    with pytest.raises(ConfigError, match=r"rankings\[1\] row 0 lists item 3 more than once"):
        reciprocal_rank_fusion([np.array([[1, 2]]), np.array([[3, 3]])], 2)
    with pytest.raises(ConfigError, match=r"rankings have \[1, 2\] rows"):
        reciprocal_rank_fusion([np.array([[1]]), np.array([[1], [2]])], 2)
    with pytest.raises(ConfigError, match=r"rankings\[0\]\[0, 1\] = -2"):
        reciprocal_rank_fusion([np.array([[1, -2]])], 2)
    with pytest.raises(ConfigError, match="expected integer item indices"):
        reciprocal_rank_fusion([np.array([[1.0, 2.0]])], 2)
    with pytest.raises(ConfigError, match="k_out=0"):
        reciprocal_rank_fusion([np.array([[1]])], 0)
    with pytest.raises(ConfigError, match="c=-1"):
        reciprocal_rank_fusion([np.array([[1]])], 1, c=-1)
    with pytest.raises(ConfigError, match="empty"):
        reciprocal_rank_fusion([], 1)
    idx, scores = reciprocal_rank_fusion([np.full((2, 3), -1)], 2)  # nothing retrieved at all
    assert (idx == -1).all() and np.isneginf(scores).all()


# --------------------------------------------------------------------------- convex combination


def test_convex_combination_by_hand_minmax_and_zscore() -> None:
    dense = np.array([[1.0, 2.0, 3.0]])
    lexical = np.array([[NEG, 10.0, 0.0]])
    # minmax: dense [0, .5, 1]; lexical scored [1, 0], unscored 0 -> [0, 1, 0]
    np.testing.assert_allclose(convex_combination(dense, lexical, 0.5), [[0.0, 0.75, 0.5]])
    # zscore: dense [-1.2247, 0, 1.2247]; lexical scored [1, -1], unscored = lowest (-1)
    z = np.sqrt(1.5)
    np.testing.assert_allclose(
        convex_combination(dense, lexical, 0.5, normalise="zscore"),
        [[(-z - 1) / 2, 0.5, (z - 1) / 2]],
    )


def test_convex_extremes_rank_exactly_like_each_input() -> None:
    rng = np.random.default_rng(0)
    dense = rng.standard_normal((20, 50))
    dense[rng.random(dense.shape) < 0.3] = NEG  # candidates only
    lexical = rng.gamma(2.0, size=(20, 50))
    lexical[rng.random(lexical.shape) < 0.6] = NEG  # no word match
    lexical[3] = NEG  # an empty query
    for how in ("minmax", "zscore"):
        for weight, source in ((0.0, dense), (1.0, lexical)):
            fused = convex_combination(dense, lexical, weight, normalise=how)
            fi, _ = top_k(fused, 50)
            si, _ = top_k(source, 50)
            assert np.array_equal(fi, si), (how, weight)
    # with a weight inside (0, 1), only the items neither input scored are -inf
    mid = convex_combination(dense, lexical, 0.3)
    assert np.array_equal(np.isneginf(mid), np.isneginf(dense) & np.isneginf(lexical))
    # an empty lexical row leaves the dense order
    assert np.array_equal(top_k(mid[3:4], 50)[0], top_k(dense[3:4], 50)[0])


def test_normalisation_of_ties_constant_rows_and_empty_rows() -> None:
    x = np.array([[NEG, 3.0, 3.0], [NEG, NEG, NEG], [2.0, 4.0, 4.0]])
    mm, scored = normalise_scores(x, "minmax")
    assert mm.tolist() == [[0.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.0, 1.0, 1.0]]
    assert scored.tolist() == [[False, True, True], [False, False, False], [True, True, True]]
    zs, _ = normalise_scores(x, "zscore")
    assert zs[0].tolist() == [-1.0, 0.0, 0.0] and zs[1].tolist() == [0.0, 0.0, 0.0]
    np.testing.assert_allclose(zs[2], [-np.sqrt(2), 1 / np.sqrt(2), 1 / np.sqrt(2)])
    # tied fused scores list the lower item first
    fused = convex_combination(np.array([[1.0, 1.0, 0.0]]), np.array([[0.0, 0.0, 1.0]]), 0.5)
    assert fused.tolist() == [[0.5, 0.5, 0.5]] and top_k(fused, 3)[0].tolist() == [[0, 1, 2]]


def test_convex_refuses_nan_inf_bad_weights_and_shapes() -> None:
    ok = np.zeros((2, 3))
    bad = ok.copy()
    bad[0, 1] = np.nan
    with pytest.raises(ConfigError, match=r"dense_scores\[0, 1\] = nan .*or -inf for an item"):
        convex_combination(bad, ok, 0.5)
    bad[0, 1] = np.inf
    with pytest.raises(ConfigError, match=r"lexical_scores\[0, 1\] = inf"):
        convex_combination(ok, bad, 0.5)
    for weight in (-0.1, 1.5, True, "0.5", float("nan")):
        with pytest.raises(ConfigError, match=rf"weight={weight!r}: expected a number in \[0, 1\]"):
            convex_combination(ok, ok, weight)
    with pytest.raises(ConfigError, match=r"shape \(2, 3\), lexical_scores \(2, 2\)"):
        convex_combination(ok, np.zeros((2, 2)), 0.5)
    with pytest.raises(ConfigError, match="normalise='rank'"):
        convex_combination(ok, ok, 0.5, normalise="rank")


def test_scatter_and_top_k_round_trip() -> None:
    idx = np.array([[2, 0, -1], [1, -1, -1]])
    scores = np.array([[0.9, 0.4, NEG], [0.7, NEG, NEG]], dtype=np.float32)
    full = scatter_scores(idx, scores, 4)
    assert np.isneginf(full[0, [1, 3]]).all() and full[1, 1] == np.float32(0.7)
    back, back_scores = top_k(full, 3)
    assert back.tolist() == idx.tolist()
    np.testing.assert_array_equal(back_scores, scores.astype(np.float64))
    assert top_k(full, 6)[0].shape == (2, 6)  # k beyond the items pads
    with pytest.raises(ConfigError, match=r"expected -1 or 0..3"):
        scatter_scores(np.array([[4]]), np.array([[1.0]]), 4)


# --------------------------------------------------------------------------- choose_weight


def test_choose_weight_picks_the_best_and_breaks_ties_to_the_smaller() -> None:
    calls: list[float] = []

    def score(w: float) -> float:
        calls.append(w)
        return -((w - 0.3) ** 2)

    best, table = choose_weight([0.6, 0.0, 0.3, 0.3], score)
    assert best == 0.3 and calls == [0.0, 0.3, 0.6]  # each distinct weight once, in order
    assert [r["weight"] for r in table] == [0.0, 0.3, 0.6]
    assert [r["chosen"] for r in table] == [False, True, False]
    assert table[2]["score"] == pytest.approx(-0.09)
    # a plateau: the smaller weight wins
    best, _ = choose_weight([0.8, 0.2, 0.5], lambda w: 0.4 if w >= 0.5 else 0.1)
    assert best == 0.5
    best, _ = choose_weight([0.8, 0.2], lambda w: 1.0)
    assert best == 0.2


def test_choose_weight_refuses_what_it_cannot_rank() -> None:
    with pytest.raises(ConfigError, match="empty"):
        choose_weight([], lambda w: 0.0)
    with pytest.raises(ConfigError, match=r"holds \[inf\]"):
        choose_weight([0.1, float("inf")], lambda w: 0.0)
    with pytest.raises(EvaluationError, match=r"evaluate\(0.5\) returned NaN"):
        choose_weight([0.5], lambda w: float("nan"))
    with pytest.raises(EvaluationError, match=r"returned 'x'"):
        choose_weight([0.5], lambda w: "x")
