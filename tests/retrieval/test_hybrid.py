"""Run fusion on hand-built runs: reciprocal rank fusion and normalized weighted sums."""

from __future__ import annotations

import math

import pytest

from contriever.retrieval.hybrid import normalize_scores, reciprocal_rank_fusion, weighted_sum

A = {"q": {"d1": 3.0, "d2": 2.0, "d3": 1.0}, "only-a": {"x": 1.0}}
B = {"q": {"d3": 0.9, "d1": 0.5, "d4": 0.1}}


def test_rrf_hand_computed():
    fused = reciprocal_rank_fusion([A, B], k=60)
    expected = {
        "d1": 1 / 61 + 1 / 62,  # rank 1 in A, rank 2 in B
        "d3": 1 / 63 + 1 / 61,
        "d2": 1 / 62,
        "d4": 1 / 63,
    }
    assert fused["q"] == pytest.approx(expected)
    assert list(fused["q"]) == ["d1", "d3", "d2", "d4"]  # best first
    assert fused["only-a"] == {"x": pytest.approx(1 / 61)}  # a query in one run only is kept


def test_rrf_weights_constant_and_top_k():
    fused = reciprocal_rank_fusion([A, B], k=0, weights=[1.0, 3.0], top_k=2)
    # k=0: d1 = 1/1 + 3/2 = 2.5, d3 = 1/3 + 3/1 = 3.333
    assert fused["q"] == pytest.approx({"d3": 1 / 3 + 3.0, "d1": 1.0 + 1.5})
    assert list(fused["q"]) == ["d3", "d1"]
    assert reciprocal_rank_fusion([A], top_k=None)["q"] == pytest.approx(
        {"d1": 1 / 61, "d2": 1 / 62, "d3": 1 / 63}
    )


def test_rrf_ties_rank_by_doc_id():
    tied = {"q": {"b": 1.0, "a": 1.0, "c": 1.0}}
    assert list(reciprocal_rank_fusion([tied])["q"]) == ["a", "b", "c"]


def test_normalizations():
    scores = {"a": 4.0, "b": 2.0, "c": 0.0}
    assert normalize_scores(scores, "minmax") == {"a": 1.0, "b": 0.5, "c": 0.0}
    z = normalize_scores(scores, "zscore")
    std = math.sqrt(8 / 3)
    assert z == pytest.approx({"a": 2 / std, "b": 0.0, "c": -2 / std})
    assert normalize_scores(scores, "none") == scores
    assert normalize_scores({"a": 5.0, "b": 5.0}, "minmax") == {"a": 1.0, "b": 1.0}
    assert normalize_scores({"a": 5.0, "b": 5.0}, "zscore") == {"a": 0.0, "b": 0.0}
    with pytest.raises(ValueError, match="unknown normalization"):
        normalize_scores(scores, "softmax")


def test_weighted_sum_minmax_hand_computed():
    fused = weighted_sum([A, B], weights=[1.0, 2.0], normalization="minmax")
    # A normalized: d1 1, d2 .5, d3 0 ; B normalized: d3 1, d1 .5, d4 0 ; missing -> that run's minimum (0)
    expected = {"d1": 1 + 2 * 0.5, "d2": 0.5 + 2 * 0.0, "d3": 0 + 2 * 1.0, "d4": 0 + 2 * 0.0}
    assert fused["q"] == pytest.approx(expected)
    assert list(fused["q"]) == ["d1", "d3", "d2", "d4"]  # d1 and d3 tie at 2.0: doc id order
    assert weighted_sum([A, B], top_k=1)["q"] == {"d1": pytest.approx(1.5)}  # equal weights: d1 = 1 + 0.5


def test_weighted_sum_zscore_and_none_give_missing_documents_the_run_minimum():
    fused = weighted_sum([A, B], normalization="zscore", top_k=None)
    za, zb = normalize_scores(A["q"], "zscore"), normalize_scores(B["q"], "zscore")
    assert fused["q"]["d2"] == pytest.approx(za["d2"] + min(zb.values()))
    assert fused["q"]["d4"] == pytest.approx(min(za.values()) + zb["d4"])
    raw = weighted_sum([A, B], weights=[1.0, 10.0], normalization="none")
    assert raw["q"]["d1"] == pytest.approx(3.0 + 10 * 0.5)
    assert raw["q"]["d2"] == pytest.approx(2.0 + 10 * 0.1)  # B's lowest score stands in for d2
    assert raw["only-a"] == {"x": 1.0}  # B has no results for this query: it adds nothing


def test_fusion_errors():
    with pytest.raises(ValueError, match="2 runs but 1 weights"):
        weighted_sum([A, B], weights=[1.0])
    with pytest.raises(ValueError, match="non-negative"):
        reciprocal_rank_fusion([A, B], weights=[1.0, -1.0])
    with pytest.raises(ValueError, match="no runs"):
        reciprocal_rank_fusion([])
    with pytest.raises(ValueError, match="unknown normalization"):
        weighted_sum([A], normalization="l2")
