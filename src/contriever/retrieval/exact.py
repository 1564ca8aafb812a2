"""Exact top-k by inner product at the machine's matrix-product rate: a fast fp32 pass picks
candidates with a proven error margin, the candidates are re-scored exactly.

Why two passes. A BLAS product of queries and vectors runs near the machine's matmul peak, but its
fp32 sums are rounded in an order that depends on where a row sits in the block (two equal vectors
in different places can score an ulp apart), so it cannot decide near-ties by itself. Its error is
bounded, though: for any summation order, `|fp32(q.c) - q.c| <= gamma_d * sum|q_i c_i| <= gamma_d *
|q| |c|` with `gamma_d = d u / (1 - d u)`, `u = 2^-24` (Higham, *Accuracy and Stability of Numerical
Algorithms*, 3.1). So every row that can be in the exact top k scores, in the fp32 pass, at least
`cut - 2 eps` where `cut` is the k-th best fp32 score and `eps = (gamma_d + 4u) |q| max|c|` (the extra
`4u` covers the last ulp of the rounded exact score and the rounding of `cut - 2 eps`). Those candidates, about k a query plus the rows
truly within a few ulps of the k-th, are then scored exactly: fp16 x fp32 products are exact in
float64, summed in float64 in the same order for every row (so equal vectors score equally wherever
they are), then rounded once to fp32. Rows are ranked by that score, ties to the lower row.

Per chunk the fp32 pass costs the product plus one comparison per score against the query's running
threshold; a partial sort runs only for a query with more than 4k candidates in the chunk (the first
chunk, mostly). No `[n, rows]` matrix outlives its chunk.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

UNIT_ROUNDOFF = 2.0**-24  # fp32
SCORE_BLOCK_ENTRIES = 16 << 20  # fp32 scores of one (queries x chunk rows) product held at once
CROWDED = (
    4  # a query with more than CROWDED x k candidates in one chunk gets that chunk's k-th best as its cut
)


def error_margin(dim: int, query_norms: np.ndarray, max_row_norm: float) -> np.ndarray:
    """`eps` per query: a bound on |fp32 score - exact score| plus one ulp of the exact score."""
    gamma = dim * UNIT_ROUNDOFF / (1 - dim * UNIT_ROUNDOFF)
    # + 4u: the last ulp of the exact score, and the fp32 rounding of `cut - 2 eps` itself
    return ((gamma + 4 * UNIT_ROUNDOFF) * query_norms * max_row_norm).astype(np.float32)


class CandidatePool:
    """Per query, every row whose fp32 score is within `2 eps` of the query's running k-th best:
    flat arrays of (query, row, fp32 score), pruned when they grow past twice the k best."""

    def __init__(self, n_queries: int, k: int):
        self.k = k
        self.cut = np.full(n_queries, -np.inf, dtype=np.float32)  # k-th best fp32 score seen so far
        self.queries: list[np.ndarray] = []
        self.rows: list[np.ndarray] = []
        self.scores: list[np.ndarray] = []
        self.size = 0
        self.kept_size = 0  # entries right after the last pruning
        self.margins = np.zeros(n_queries, dtype=np.float32)  # 2 eps per query, for the rows seen so far

    def add(self, scores: np.ndarray, query_ids: np.ndarray, first_row: int) -> None:
        """Take the candidates of one block of fp32 `scores [len(query_ids), chunk]` whose first
        column is global row `first_row`."""
        cut = self.cut[query_ids]
        margins = self.margins[query_ids]
        chunk = scores.shape[1]
        # flat indices: numpy's 2-d nonzero costs ~50x more than flatnonzero on a mostly-False mask
        found = np.flatnonzero(scores >= (cut - margins)[:, None])
        local_query = found // chunk
        values = scores.ravel()[found]
        crowded = np.flatnonzero(np.bincount(local_query, minlength=len(cut)) > CROWDED * self.k)
        if len(crowded):
            # more candidates than a chunk's top k can need (a query that has not seen k rows yet, or
            # whose best rows come late): this chunk's own k-th best is a floor for the final cut
            kth = np.partition(scores[crowded], chunk - self.k, axis=1)[:, chunk - self.k]
            cut[crowded] = np.maximum(cut[crowded], kth)
            self.cut[query_ids[crowded]] = cut[crowded]
            keep = values >= (cut - margins)[local_query]
            found, local_query, values = found[keep], local_query[keep], values[keep]
        self.queries.append(query_ids[local_query])
        self.rows.append(found - local_query * chunk + first_row)
        self.scores.append(values)
        self.size += len(found)
        if self.size > 2 * self.kept_size + 2 * self.k * len(self.cut):
            self.prune()

    def _flat(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if len(self.queries) != 1:
            self.queries = [np.concatenate(self.queries)] if self.queries else [np.empty(0, np.int64)]
            self.rows = [np.concatenate(self.rows)] if self.rows else [np.empty(0, np.int64)]
            self.scores = [np.concatenate(self.scores)] if self.scores else [np.empty(0, np.float32)]
        return self.queries[0], self.rows[0], self.scores[0]

    def prune(self) -> None:
        """Recompute each query's k-th best fp32 score from the pool and drop what lies more than the
        query's margin below it. (A margin valid for the rows seen so far is valid for dropping: the
        k rows that set the cut and the dropped row were all scored within it.)"""
        queries, rows, scores = self._flat()
        order = np.lexsort((-scores, queries))  # by query, then best first
        queries, rows, scores = queries[order], rows[order], scores[order]
        starts = np.searchsorted(queries, np.arange(len(self.cut)))
        full = np.bincount(queries, minlength=len(self.cut)) >= self.k
        self.cut[full] = np.maximum(self.cut[full], scores[starts[full] + self.k - 1])
        keep = scores >= (self.cut - self.margins)[queries]
        self.queries, self.rows, self.scores = [queries[keep]], [rows[keep]], [scores[keep]]
        self.size = self.kept_size = int(keep.sum())


def exact_scores(vectors: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Inner products of `vectors[i]` and `queries[i]`, rounded once to fp32: products of fp16 (or
    fp32) and fp32 values are exact in float64, and each row is summed in the same order, so equal
    vectors get equal scores wherever they are stored."""
    return np.einsum("nd,nd->n", vectors.astype(np.float64), queries.astype(np.float64)).astype(np.float32)


RESCORE_ROWS = 32768  # candidates re-scored at once (float64 copies: 32,768 x dim x 8 bytes x 2)


def exact_top_k(
    queries: np.ndarray,
    chunks: Iterable[tuple[int, np.ndarray, float]],
    k: int,
    vectors_for,
) -> tuple[np.ndarray, np.ndarray]:
    """The exact top `k` rows of each fp32 query `[n, dim]` by inner product: `(scores [n, k], rows
    [n, k])`, ordered by score (rounded once to fp32), then by the lower row; -inf / -1 where fewer
    than k rows exist.

    `chunks` yields `(first global row, fp32 vectors [rows, dim], the largest row norm in them)`;
    `vectors_for(rows)` gives the stored vectors of global rows for the exact re-scoring.
    """
    n, dim = queries.shape
    pool = CandidatePool(n, k)
    query_norms = np.linalg.norm(queries.astype(np.float64), axis=1)
    largest_norm = 0.0
    for first_row, chunk, max_norm in chunks:
        largest_norm = max(largest_norm, float(max_norm))
        pool.margins = 2 * error_margin(dim, query_norms, largest_norm)
        block = max(1, SCORE_BLOCK_ENTRIES // max(1, len(chunk)))
        for start in range(0, n, block):
            pool.add(
                queries[start : start + block] @ chunk.T, np.arange(start, min(n, start + block)), first_row
            )
    pool.prune()
    owners, rows, _ = pool._flat()
    exact = np.empty(len(rows), dtype=np.float32)
    for start in range(0, len(rows), RESCORE_ROWS):
        part = slice(start, start + RESCORE_ROWS)
        exact[part] = exact_scores(vectors_for(rows[part]), queries[owners[part]])
    order = np.lexsort((rows, -exact, owners))  # by query, then score (best first), then row
    owners, rows, exact = owners[order], rows[order], exact[order]
    rank = np.arange(len(owners)) - np.searchsorted(owners, owners)
    keep = rank < k
    best_scores = np.full((n, k), -np.inf, dtype=np.float32)
    best_rows = np.full((n, k), -1, dtype=np.int64)
    best_scores[owners[keep], rank[keep]] = exact[keep]
    best_rows[owners[keep], rank[keep]] = rows[keep]
    return best_scores, best_rows


def merge_top_k(best_scores: np.ndarray, best_rows: np.ndarray, scores: np.ndarray, rows: np.ndarray) -> None:
    """Merge candidates `scores`, `rows` [n, c] into the running top k, in place.

    Ties keep the lower row first, as a flat index scanning rows in order does."""
    k = best_scores.shape[1]
    all_scores = np.concatenate([best_scores, scores], axis=1)
    all_rows = np.concatenate([best_rows, rows], axis=1)
    # sort by score descending, then row ascending (empty slots, row -1 and score -inf, last)
    order = np.lexsort((np.where(all_rows < 0, np.iinfo(np.int64).max, all_rows), -all_scores), axis=1)[:, :k]
    best_scores[:] = np.take_along_axis(all_scores, order, axis=1)
    best_rows[:] = np.take_along_axis(all_rows, order, axis=1)
