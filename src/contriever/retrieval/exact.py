"""Exact top-k by inner product at the machine's matrix-product rate: a fast pass (fp32, or bf16
where the CPU has bf16 matrix instructions) picks candidates with a proven error margin, the
candidates are re-scored exactly.

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

The bf16 pass (`precision="bf16"`, what "auto" picks where bf16 products are native, ~2x the fp32
rate there, unless `cheaper_pass` expects it to cost more) rounds queries and vectors to bf16
(relative error `u_b = 2^-8` each), accumulates in fp32 and rounds the score to bf16 (torch's CPU
product returns bf16): its bound is `eps = (3.25 u_b + gamma_d + 4u) |q| max|c|`, so it hands more
candidates to the exact re-scoring (measured at k = 100 on clustered vectors: 187 instead of 100 a
query over 200,000, 619 over 1,000,000; where scores crowd, far more: `cheaper_pass` decides whether
that is worth the products it saves). The results are the same rows and scores whichever pass
picked them.

Per chunk the fp32 pass costs the product plus one comparison per score against the query's running
threshold; a partial sort runs only for a query with more than 4k candidates in the chunk (the first
chunk, mostly). No `[n, rows]` matrix outlives its chunk.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

UNIT_ROUNDOFF = 2.0**-24  # fp32
BF16_ROUNDOFF = 2.0**-8
PRECISIONS = ("fp32", "bf16")
SCORE_BLOCK_ENTRIES = 16 << 20  # fp32 scores of one (queries x chunk rows) product held at once
CROWDED = (
    4  # a query with more than CROWDED x k candidates in one chunk gets that chunk's k-th best as its cut
)


def error_margin(
    dim: int, query_norms: np.ndarray, max_row_norm: float, precision: str = "fp32"
) -> np.ndarray:
    """`eps` per query: a bound on |pass score - exact score| plus one ulp of the exact score."""
    gamma = dim * UNIT_ROUNDOFF / (1 - dim * UNIT_ROUNDOFF)
    # + 4u: the last ulp of the exact score, and the fp32 rounding of `cut - 2 eps` itself
    relative = gamma + 4 * UNIT_ROUNDOFF
    if precision == "bf16":  # both operands rounded to bf16, the score rounded to bf16 (with slack)
        relative += 3.25 * BF16_ROUNDOFF
    return (relative * query_norms * max_row_norm).astype(np.float32)


# What a candidate costs the search beyond the pass (gathering its vector, the exact product,
# the pool's bookkeeping), in fp32 products of one query and one row: ~1.2 us against ~4 ns on
# CPU C (1.05 us a candidate in the million-vector benchmark, 1.39 us on debian-xling).
CANDIDATE_COST = 300
BF16_SAVING = 0.55  # of an fp32 product, what the bf16 pass saves where bf16 is native (~2.2x the rate)
PROBE_QUERIES = 256


def cheaper_pass(queries: np.ndarray, chunk: np.ndarray, total_rows: int, k: int, max_norm: float) -> str:
    """ "bf16" or "fp32": the candidate pass expected to cost less for `queries` over an index of
    `total_rows` vectors, judged on `chunk` (fp32 vectors of the index, its first rows).

    The bf16 pass halves the products but its wider error bound lets through every row within
    ~0.025 |q| |c| of the k-th best, and each costs ~300 fp32 products of re-scoring. Where scores
    crowd near the k-th best, as with an anisotropic model and a deep k (multilingual-e5 on
    debian-xling: 16,800 candidates a query at k = 1,000 over 60,000 documents, 47 s where the
    products take 0.3), that costs far more than it saves. The estimate: for up to 256 queries, the
    rows of `chunk` between the k-th best's likely place in it and the bf16 margin below, scaled to
    the index. Either pass gives the same results; only the time differs."""
    sample = np.ascontiguousarray(queries[:PROBE_QUERIES], dtype=np.float32)
    scores = sample @ chunk.T
    rows = scores.shape[1]
    place = min(rows, max(1, round(k * rows / total_rows)))  # the k-th best's rank among these rows
    cut = np.partition(scores, rows - place, axis=1)[:, rows - place]
    margin = 2 * error_margin(
        chunk.shape[1], np.linalg.norm(sample.astype(np.float64), axis=1), max_norm, "bf16"
    )
    near = ((scores >= (cut - margin)[:, None]) & (scores < cut[:, None])).sum(axis=1)
    extra = float(np.median(near)) * total_rows / rows
    return "bf16" if extra * CANDIDATE_COST < BF16_SAVING * total_rows else "fp32"


def pass_matrix(vectors: np.ndarray, precision: str):
    """A chunk's fp32 vectors as the candidate pass multiplies them: as they are (fp32), or a
    torch bf16 tensor (half the memory, kept between calls like the fp32 ones)."""
    if precision == "fp32":
        return vectors
    import warnings

    import torch

    with warnings.catch_warnings():  # a read-only memory map: never written, copied to bf16 at once
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(vectors).to(torch.bfloat16)


class Fp32Scores:
    """One block of the fp32 pass's scores `[queries, rows]` (numpy's BLAS product), written into
    `storage` (a flat buffer passed from block to block: a new one each time costs the page faults
    of tens of megabytes) when it is large enough."""

    def __init__(self, queries: np.ndarray, matrix: np.ndarray, storage: np.ndarray | None = None):
        size = len(queries) * len(matrix)
        if storage is None or storage.size < size:
            storage = np.empty(size, dtype=np.float32)
        self.storage = storage
        self.array = np.matmul(queries, matrix.T, out=storage[:size].reshape(len(queries), len(matrix)))
        self.shape = self.array.shape

    def at_least(self, thresholds: np.ndarray) -> np.ndarray:
        """Flat indices of the scores >= their row's threshold (numpy's 2-d nonzero costs ~50x more
        than flatnonzero on a mostly-False mask)."""
        return np.flatnonzero(self.array >= thresholds[:, None])

    def values(self, flat: np.ndarray) -> np.ndarray:
        return self.array.ravel()[flat]

    def kth_best(self, rows: np.ndarray, k: int) -> np.ndarray:
        return kth_best(self.array if len(rows) == self.shape[0] else self.array[rows], k)


class Bf16Scores:
    """One block of the bf16 pass's scores (torch's bf16 product), read through their bit patterns:
    a positive bf16 value orders as its int16 bits do, so a threshold is one int16 comparison
    (converting the block to fp32 would cost as much as the product)."""

    def __init__(self, queries, matrix, storage=None):
        """`queries` and `matrix` as `pass_matrix(..., "bf16")` makes them (the queries converted once
        per search); `storage` as for `Fp32Scores`."""
        import torch

        size = len(queries) * len(matrix)
        if storage is None or storage.numel() < size:
            storage = torch.empty(size, dtype=torch.bfloat16)
        self.storage = storage
        self.tensor = torch.matmul(queries, matrix.T, out=storage[:size].view(len(queries), len(matrix)))
        self.bits = self.tensor.view(torch.int16).numpy()
        self.shape = self.bits.shape

    def at_least(self, thresholds: np.ndarray) -> np.ndarray:
        # the largest bf16 value <= each threshold: for a positive one, its fp32 bits cut to the top 16
        positive = thresholds > 0
        floor_bits = (np.ascontiguousarray(thresholds, dtype=np.float32).view(np.int32) >> 16).astype(
            np.int16
        )
        if positive.all():
            return np.flatnonzero(self.bits >= floor_bits[:, None])
        found = np.zeros(self.shape, dtype=bool)
        found[positive] = self.bits[positive] >= floor_bits[positive, None]
        other = np.flatnonzero(~positive)
        found[other] = self.tensor[other].float().numpy() >= thresholds[other, None]
        return np.flatnonzero(found)

    def values(self, flat: np.ndarray) -> np.ndarray:
        return (self.bits.ravel()[flat].astype(np.int32) << 16).view(np.float32)

    def kth_best(self, rows: np.ndarray, k: int) -> np.ndarray:
        import torch

        scores = self.tensor if len(rows) == self.shape[0] else self.tensor[torch.from_numpy(rows)]
        return torch.topk(scores, k, dim=1, sorted=False).values.min(dim=1).values.float().numpy()


PASSES = {"fp32": Fp32Scores, "bf16": Bf16Scores}


def kth_best(scores: np.ndarray, k: int) -> np.ndarray:
    """The k-th largest value of each row (torch's top-k: ~4x numpy's partition on wide rows)."""
    import torch

    return (
        torch.topk(torch.from_numpy(np.ascontiguousarray(scores)), k, dim=1, sorted=False)
        .values.min(dim=1)
        .values.numpy()
    )


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

    def add(self, scores, query_ids: np.ndarray, first_row: int) -> None:
        """Take the candidates of one block of pass scores (`Fp32Scores` / `Bf16Scores`, `[len(query_ids),
        chunk]`) whose first column is global row `first_row`."""
        cut = self.cut[query_ids]
        margins = self.margins[query_ids]
        chunk = scores.shape[1]
        if chunk >= self.k:
            # a query with no k-th best yet (the first chunk): this chunk's own k-th best is a floor
            # for its final one, so a valid cut before any candidate is taken
            fresh = np.flatnonzero(np.isneginf(cut))
            if len(fresh):
                cut[fresh] = scores.kth_best(fresh, self.k)
                self.cut[query_ids[fresh]] = cut[fresh]
        found = scores.at_least(cut - margins)
        local_query = found // chunk
        values = scores.values(found)
        crowded = np.flatnonzero(np.bincount(local_query, minlength=len(cut)) > CROWDED * self.k)
        if len(crowded) and chunk >= self.k:
            # more candidates than a chunk's top k can need (a query whose best rows come late): the
            # chunk's own k-th best raises its cut
            cut[crowded] = np.maximum(cut[crowded], scores.kth_best(crowded, self.k))
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
        n = len(self.cut)
        # grouped by query with a stable sort of small integers (numpy radix-sorts 16-bit keys)
        keys = queries.astype(np.uint16) if n <= 1 << 16 else queries
        order = np.argsort(keys, kind="stable")
        queries, rows, scores = queries[order], rows[order], scores[order]
        counts = np.bincount(queries, minlength=n)
        full = np.flatnonzero(counts >= self.k)
        if len(full):
            self.cut[full] = np.maximum(self.cut[full], _kth_by_query(queries, scores, counts, self.k)[full])
        keep = scores >= (self.cut - self.margins)[queries]
        self.queries, self.rows, self.scores = [queries[keep]], [rows[keep]], [scores[keep]]
        self.size = self.kept_size = int(keep.sum())


def _kth_by_query(queries: np.ndarray, scores: np.ndarray, counts: np.ndarray, k: int) -> np.ndarray:
    """The k-th best score of each query (-inf for one with fewer), `queries` grouped: one padded
    `[n, most]` matrix and one top-k, or a sort where one query holds far more than the others."""
    n, most = len(counts), int(counts.max(initial=0))
    if n * most > 4 * len(scores) + (1 << 20):  # a few queries with huge tie groups: sort instead
        order = np.lexsort((-scores, queries))
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        kth = np.full(n, -np.inf, dtype=np.float32)
        full = counts >= k
        kth[full] = scores[order][starts[full] + k - 1]
        return kth
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    padded = np.full((n, max(most, k)), -np.inf, dtype=np.float32)
    padded[queries, np.arange(len(queries)) - starts[queries]] = scores
    return kth_best(padded, k)


def exact_scores(vectors: np.ndarray, queries: np.ndarray, owners: np.ndarray | None = None) -> np.ndarray:
    """Inner products of `vectors[i]` and `queries[owners[i]]` (`queries[i]` without `owners`),
    rounded once to fp32: products of fp16 (or fp32) and fp32 values are exact in float64, and each
    row is summed in the same order, so equal vectors get equal scores wherever they are stored."""
    import torch

    owners = np.arange(len(vectors)) if owners is None else owners
    table = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32)).double()
    return np.concatenate(
        [
            paired_scores(vectors[start : start + RESCORE_ROWS], table, owners[start : start + RESCORE_ROWS])
            for start in range(0, len(vectors), RESCORE_ROWS)
        ]
        or [np.empty(0, np.float32)]
    )


def paired_scores(vectors: np.ndarray, table, owners: np.ndarray) -> np.ndarray:
    """`exact_scores` of one block against `table`, the queries as a float64 tensor: torch's float64
    kernels on a block that stays in the cache, each query gathered from a table converted once
    (numpy's einsum over the same blocks took 3x as long, a third of it converting gathered queries)."""
    import torch

    products = torch.from_numpy(np.ascontiguousarray(vectors)).double()
    products.mul_(table.index_select(0, torch.from_numpy(np.asarray(owners, dtype=np.int64))))
    return products.sum(dim=1).float().numpy()  # float64 sums, rounded once to fp32


RESCORE_ROWS = 2048  # candidates gathered and re-scored at once: their float64 copies stay in the cache


def exact_top_k(
    queries: np.ndarray,
    chunks: Iterable[tuple[int, np.ndarray, float]],
    k: int,
    vectors_for,
    precision: str = "fp32",
    rescored=None,
) -> tuple[np.ndarray, np.ndarray]:
    """The exact top `k` rows of each fp32 query `[n, dim]` by inner product: `(scores [n, k], rows
    [n, k])`, ordered by score (rounded once to fp32), then by the lower row; -inf / -1 where fewer
    than k rows exist. `rescored(share)`, when given, is called as the candidates are re-scored,
    with the share of them done (the pass's progress is the chunks').

    `chunks` yields `(first global row, vectors [rows, dim] as `pass_matrix(..., precision)` makes
    them, the largest row norm in them)`; `vectors_for(rows)` gives the stored vectors (fp16 or fp32)
    of ascending global rows for the exact re-scoring.
    """
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"unknown search precision {precision!r}; choose {' or '.join(PRECISIONS)}")
    n, dim = queries.shape
    pool = CandidatePool(n, k)
    query_norms = np.linalg.norm(queries.astype(np.float64), axis=1)
    largest_norm = 0.0
    pass_queries = queries if precision == "fp32" else pass_matrix(queries, precision)
    storage = None  # one score buffer for every block
    for first_row, chunk, max_norm in chunks:
        largest_norm = max(largest_norm, float(max_norm))
        pool.margins = 2 * error_margin(dim, query_norms, largest_norm, precision)
        block = max(1, SCORE_BLOCK_ENTRIES // max(1, len(chunk)))
        for start in range(0, n, block):
            scores = PASSES[precision](pass_queries[start : start + block], chunk, storage)
            storage = scores.storage
            pool.add(scores, np.arange(start, min(n, start + block)), first_row)
    pool.prune()
    owners, rows, _ = pool._flat()
    exact = np.empty(len(rows), dtype=np.float32)
    table = torch.from_numpy(queries).double()
    by_row = np.argsort(rows, kind="stable")  # the shards read in file order, each page once
    for start in range(0, len(rows), RESCORE_ROWS):
        part = by_row[start : start + RESCORE_ROWS]
        exact[part] = paired_scores(vectors_for(rows[part]), table, owners[part])
        if rescored is not None:
            rescored(len(part) / len(rows))
    return ranked_top_k(owners, rows, exact, by_row, n, k)


def ranked_top_k(
    owners: np.ndarray, rows: np.ndarray, scores: np.ndarray, by_row: np.ndarray, n: int, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The best `k` candidates of each of `n` queries from flat arrays grouped by query (`owners`
    ascending; `by_row` orders `rows` ascending): by score, best first, then the lower row; -inf / -1
    where a query has fewer. One top-k over a padded `[n, most]` matrix of int64 keys (the score's
    order in the high 32 bits, the row's rank reversed in the low 32): 0.013 s where a three-key
    lexsort took 0.15 s (619,000 candidates of 1,000 queries)."""
    import torch

    best_scores = np.full((n, k), -np.inf, dtype=np.float32)
    best_rows = np.full((n, k), -1, dtype=np.int64)
    counts = np.bincount(owners, minlength=n)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    most = max(int(counts.max(initial=0)), k)
    if n * most > 4 * len(rows) + (1 << 20):  # a few queries with huge tie groups: sort instead
        order = np.lexsort((rows, -scores, owners))
        rank = np.arange(len(order)) - starts[owners[order]]
        keep = order[rank < k]
        best_scores[owners[keep], rank[rank < k]] = scores[keep]
        best_rows[owners[keep], rank[rank < k]] = rows[keep]
        return best_scores, best_rows
    bits = (scores + np.float32(0)).view(np.int32)  # + 0: -0.0 becomes 0.0, as equal as they compare
    ordered = (bits ^ ((bits >> 31) & 0x7FFFFFFF)).astype(np.int64)  # fp32 order as int32 order
    reversed_rank = np.empty(len(rows), dtype=np.int64)
    reversed_rank[by_row] = np.arange(len(rows) - 1, -1, -1)  # the lower row, the larger key
    padded = np.full((n, most), np.iinfo(np.int64).min, dtype=np.int64)
    padded[owners, np.arange(len(owners)) - starts[owners]] = (ordered << 32) | reversed_rank
    top = torch.topk(torch.from_numpy(padded), k, dim=1).indices.numpy()
    found = np.arange(k)[None, :] < counts[:, None]
    flat = (starts[:, None] + top)[found]
    best_scores[found] = scores[flat]
    best_rows[found] = rows[flat]
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
