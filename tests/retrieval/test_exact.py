"""Exact top-k from an fp32 candidate pass plus exact re-scoring (`contriever.retrieval.exact`)."""

from __future__ import annotations

import numpy as np
import pytest

from contriever.retrieval.exact import cheaper_pass, error_margin, exact_scores, exact_top_k, ranked_top_k

DIM = 16


def exact_ranking(queries: np.ndarray, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    exact = (queries.astype(np.float64) @ vectors.astype(np.float64).T).astype(np.float32)
    order = np.stack([np.lexsort((np.arange(len(vectors)), -row))[:k] for row in exact])
    return np.take_along_axis(exact, order, axis=1), order


def adversarial_chunks(queries, vectors, chunk_rows, push, k):
    """The chunks the fp32 pass sees: each vector moved by `push` times the error bound the pass
    is allowed, away from the query for the true top k and towards it for every other row, so an
    fp32 ranking taken at face value puts truly worse rows first. (One query: the push is along it.)"""
    query = queries[0].astype(np.float64)
    unit = query / np.linalg.norm(query)
    largest = float(np.linalg.norm(vectors.astype(np.float64), axis=1).max())
    eps = float(error_margin(DIM, np.linalg.norm(query)[None], largest)[0]) / np.linalg.norm(query)
    sign = np.ones(len(vectors))
    sign[exact_ranking(queries, vectors, k)[1][0]] = -1.0
    seen = (vectors.astype(np.float64) + push * eps * sign[:, None] * unit).astype(np.float32)
    for start in range(0, len(vectors), chunk_rows):
        yield start, seen[start : start + chunk_rows], largest


@pytest.mark.parametrize("chunk_rows", [7, 64, 1000])
def test_candidates_within_the_error_bound_are_ranked_exactly(chunk_rows):
    """A pass whose scores are off by up to 0.9 of the bound (adversarially) still gives the exact
    ranking: the margin keeps every row that can be in the top k; with the pass off by more than
    the margin allows, it would not (the test can fail)."""
    rng = np.random.default_rng(0)
    # scores a few millionths apart, below the bound (about 5e-6 here): vectors one or two fp16
    # steps apart in components the query weighs little
    vectors = (np.ones((400, DIM)) + rng.integers(-2, 3, (400, DIM)) * 2.0**-10).astype(np.float16)
    queries = np.array([[1.0] + [0.003] * (DIM - 1)], dtype=np.float32)
    for k in (1, 5, 50):
        want_scores, want_rows = exact_ranking(queries, vectors, k)
        chunks = adversarial_chunks(queries, vectors, chunk_rows, push=0.9, k=k)
        scores, rows = exact_top_k(queries, chunks, k, lambda r: vectors[r].astype(np.float32))
        np.testing.assert_array_equal(rows, want_rows)
        np.testing.assert_array_equal(scores, want_scores)
        # pushed past twice the bound, the pass drops truly better rows: the margin is what keeps them
        chunks = adversarial_chunks(queries, vectors, chunk_rows, push=3.0, k=k)
        _, rows = exact_top_k(queries, chunks, k, lambda r: vectors[r].astype(np.float32))
        assert not np.array_equal(rows, want_rows)


def test_exact_scores_are_equal_for_equal_vectors_anywhere():
    rng = np.random.default_rng(1)
    vector = rng.standard_normal(384).astype(np.float16)
    stack = np.concatenate([rng.standard_normal((13, 384)).astype(np.float16), vector[None]] * 5)
    query = rng.standard_normal(384).astype(np.float32)
    scores = exact_scores(stack, np.repeat(query[None], len(stack), axis=0))
    assert len(set(scores[13::14].tolist())) == 1
    assert scores[13] == np.float32(vector.astype(np.float64) @ query.astype(np.float64))


def test_exact_scores_pair_each_vector_with_its_owner_in_blocks_of_any_size(monkeypatch):
    """Gathered queries (`owners`) and the block size leave every score equal to its float64
    reference rounded once: a vector scores the same in a block of 1 row as in one of thousands."""
    import contriever.retrieval.exact as exact

    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((3001, 384)).astype(np.float16)
    queries = rng.standard_normal((7, 384)).astype(np.float32)
    owners = rng.integers(0, 7, len(vectors))
    want = np.einsum("nd,nd->n", vectors.astype(np.float64), queries[owners].astype(np.float64)).astype(
        np.float32
    )
    for block in (1, 5, 2048):
        monkeypatch.setattr(exact, "RESCORE_ROWS", block)
        np.testing.assert_array_equal(exact_scores(vectors, queries, owners), want)


@pytest.mark.parametrize("crowd", [0, 30000])
def test_ranked_top_k_orders_by_score_then_lower_row(crowd):
    """Candidates grouped by query, scores with exact ties, negatives and -0.0, against a three-key
    sort; `crowd` gives one query tens of thousands of tied candidates (the sorting fallback)."""
    rng = np.random.default_rng(4)
    owners = np.sort(np.concatenate([rng.integers(0, 6, 300), np.zeros(crowd, np.int64)]))
    rows = rng.permutation(len(owners) * 3)[: len(owners)].astype(np.int64)
    scores = rng.choice(np.array([-1.5, -0.0, 0.0, 0.25, 0.25, 2.0, -(2.0**-20)], np.float32), len(owners))
    if crowd:
        scores[owners == 0] = 0.25
    n, k = 50, 40  # queries 6-49 have none; the others ~50, so ties at 0 are ranked too
    got_scores, got_rows = ranked_top_k(owners, rows, scores, np.argsort(rows, kind="stable"), n, k)
    for query in range(n):
        mine = np.flatnonzero(owners == query)
        order = mine[np.lexsort((rows[mine], -(scores[mine] + np.float32(0))))][:k]
        np.testing.assert_array_equal(got_rows[query, : len(order)], rows[order])
        np.testing.assert_array_equal(got_scores[query, : len(order)], scores[order])
        assert (got_rows[query, len(order) :] == -1).all()
        assert np.isneginf(got_scores[query, len(order) :]).all()


def test_fewer_rows_than_k_are_padded():
    vectors = np.eye(3, DIM, dtype=np.float16)
    queries = np.ones((2, DIM), dtype=np.float32)
    chunks = [(0, vectors.astype(np.float32), 1.0)]
    scores, rows = exact_top_k(queries, chunks, 5, lambda r: vectors[r].astype(np.float32))
    assert rows.tolist() == [[0, 1, 2, -1, -1]] * 2
    assert np.isneginf(scores[:, 3:]).all()


def test_the_bf16_pass_bound_covers_its_error():
    """The bf16 pass's scores stay within its stated bound of the exact scores (vectors of every
    scale and sign, unnormalized), with room to spare: the bound is what its candidates rely on."""
    from contriever.retrieval.exact import Bf16Scores, pass_matrix

    rng = np.random.default_rng(2)
    vectors = (
        (rng.standard_normal((500, 384)) * rng.uniform(0.01, 3, (500, 1)))
        .astype(np.float16)
        .astype(np.float32)
    )
    queries = (rng.standard_normal((40, 384)) * rng.uniform(0.01, 3, (40, 1))).astype(np.float32)
    exact = queries.astype(np.float64) @ vectors.astype(np.float64).T
    block = Bf16Scores(pass_matrix(queries, "bf16"), pass_matrix(vectors, "bf16"))
    bf16 = block.values(np.arange(block.bits.size)).reshape(block.shape)
    largest = float(np.linalg.norm(vectors, axis=1).max())
    bound = error_margin(384, np.linalg.norm(queries, axis=1), largest, "bf16")
    worst = (np.abs(bf16 - exact) / bound[:, None]).max()
    assert 0 < worst < 0.5


def test_an_unknown_pass_precision_is_refused():
    with pytest.raises(ValueError, match="search precision"):
        exact_top_k(np.ones((1, DIM), np.float32), [], 1, None, precision="fp8")


def unit_rows(array: np.ndarray) -> np.ndarray:
    return (array / np.linalg.norm(array, axis=1, keepdims=True)).astype(np.float32)


def crowded_vectors(rng, rows: int, dim: int = 384) -> np.ndarray:
    """Unit vectors all near one direction (cosines ~0.9 to each other), as an anisotropic model's
    are: many rows score within the bf16 pass's margin of any k-th best."""
    common = rng.standard_normal(dim)
    return unit_rows(common / np.linalg.norm(common) + 0.35 * rng.standard_normal((rows, dim)) / np.sqrt(dim))


def test_the_cheaper_pass_is_fp32_where_scores_crowd_and_bf16_where_they_spread():
    rng = np.random.default_rng(6)
    crowded = crowded_vectors(rng, 16384 + 64)
    # a deep k over 60,000 crowded rows (debian-xling with multilingual-e5): bf16's candidates cost more
    assert cheaper_pass(crowded[16384:], crowded[:16384], 60_000, 1000, 1.001) == "fp32"
    spread = unit_rows(rng.standard_normal((16384 + 64, 384)))
    # k = 100 over a million isotropic rows: a few hundred extra candidates, half the products saved
    assert cheaper_pass(spread[16384:], spread[:16384], 1_000_000, 100, 1.001) == "bf16"
