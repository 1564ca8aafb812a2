"""Retrievers with one method, `retrieve(queries, k) -> Run` (`{qid: {doc_id: score}}`), the shape
pyserini's searchers and BEIR's `EvaluateRetrieval` give: build one, retrieve, score apart.

- `DenseRetriever(encoder, index)`: encode the queries, search the index (`search(vectors, k, *,
  show_progress, progress) -> (scores, ids)`, `progress(share)` reporting as it goes: an index folder
  searched exactly or through its ANN, `index.load_for_search`); with
  `passage_depth > 0` the index holds passages (`DOCID#N`) and each document scores as its best one.
  `search_vectors` is the search alone, for queries encoded elsewhere.
- `BM25Retriever(corpus)`: BM25 through bm25s, built on first use (or given built: `index=`;
  `BM25Retriever.kept_in(folder, corpus)`: kept in a folder, built and saved once, loaded after).
- `HybridRetriever(first, second)`: any two retrievers fused, by reciprocal rank fusion or a
  normalized weighted sum, each asked for `depth` documents (default `max(k, 100)`). `fuse` is the
  fusion alone, for runs retrieved elsewhere.

Each skips a retrieved document whose id equals the query id (BEIR's rule, applied in `runs.py`;
`ignore_identical_ids=False` keeps it), taking one more document so a query still gets k. `timings`,
when given, receives the seconds each stage took.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tqdm.auto import tqdm

from contriever.data.passages import doc_id_of
from contriever.errors import DataError
from contriever.retrieval.runs import Run, run_from_search

SEARCH_ENTRIES = 2_000_000  # ranked ids held at once while searching (block of queries x depth)


class Retriever(Protocol):
    def retrieve(self, queries: dict[str, str], k: int) -> Run: ...


def share_counter(bar, size: int):
    """A `progress(share)` callback for an index's search: moves `bar` by whole items as the shares
    of `size` it reports add up."""
    start, reached = bar.n, 0.0

    def advance(share: float) -> None:
        nonlocal reached
        reached += share * size
        bar.update(start + min(size, int(reached + 1e-6)) - bar.n)  # + 1e-6: shares' float sums

    return advance


@dataclass
class DenseRetriever:
    encoder: Any
    index: Any
    batch_size: int | None = None  # None: batches by token budget
    precision: str = "auto"
    passage_depth: int = 0
    ignore_identical_ids: bool = True
    show_progress: bool = True
    timings: dict | None = None

    def retrieve(self, queries: dict[str, str], k: int) -> Run:
        if not queries:
            return {}
        start = time.perf_counter()
        vectors = self.encoder.encode_queries(
            list(queries.values()),
            batch_size=self.batch_size,
            show_progress=self.show_progress,
            precision=self.precision,
        )
        encoded = time.perf_counter()
        run = self.search_vectors(list(queries), vectors, k)
        if self.timings is not None:
            self.timings["encode_queries_s"] = encoded - start
            self.timings["search_s"] = time.perf_counter() - encoded
        return run

    def search_vectors(self, names: list[str], vectors, k: int) -> Run:
        """The run of query vectors already encoded (`vectors[i]` is query `names[i]`'s): what
        `retrieve` does after encoding, for a caller that encodes itself (`contriever serve`
        encodes the queries of many requests in one forward pass)."""
        passages = self.passage_depth > 0
        depth = k * self.passage_depth if passages else k + 1 if self.ignore_identical_ids else k
        # the search results of a block of queries are made a run before the next block is searched: at
        # k * passage_depth ranked ids a query, all queries' results at once would be gigabytes
        block = max(1, SEARCH_ENTRIES // depth)
        run: Run = {}
        bar = tqdm(total=len(names), desc="searching", unit="query", disable=not self.show_progress)
        for first in range(0, len(names), block):
            queries = vectors[first : first + block]
            # the bar moves as the index is searched (one block of queries over millions of vectors
            # takes minutes), then lands on the block's count
            done = bar.n
            scores, ranked = self.index.search(
                queries, depth, show_progress=False, progress=share_counter(bar, len(queries))
            )
            bar.update(done + len(ranked) - bar.n)
            run.update(
                run_from_search(
                    names[first : first + block],
                    scores,
                    ranked,
                    k,
                    ignore_identical_ids=self.ignore_identical_ids,
                    doc_of=doc_id_of if passages else None,
                )
            )
        bar.close()
        return run


@dataclass
class BM25Retriever:
    corpus: dict[str, dict | str]
    settings: dict = field(default_factory=dict)  # build_bm25's: k1, b, method, stemmer, stopwords
    ignore_identical_ids: bool = True
    show_progress: bool = True
    timings: dict | None = None
    index: Any = field(default=None, repr=False)  # a built `BM25Index`; None: built from corpus on first use
    threads: int | None = None  # bm25s's search threads; None: every available CPU, 0: no pool

    @classmethod
    def kept_in(cls, folder: str | os.PathLike, corpus: dict[str, dict | str], **options) -> BM25Retriever:
        """BM25 of `corpus` kept in `folder`: the index saved there (it must hold the corpus's ids, in
        order), or, when there is none, built now and saved there (`save_bm25`) for the next run."""
        from contriever.retrieval.bm25 import SETTINGS_FILE, build_bm25, load_bm25, save_bm25

        retriever = cls(corpus, **options)
        if Path(folder, SETTINGS_FILE).is_file():
            retriever.index = load_bm25(folder)
            if retriever.index.doc_ids != list(corpus):
                raise DataError(folder, "this BM25 index holds other passages than the corpus: delete it")
        else:
            retriever.index = build_bm25(corpus, show_progress=retriever.show_progress, **retriever.settings)
            save_bm25(retriever.index, folder)
        return retriever

    def retrieve(self, queries: dict[str, str], k: int) -> Run:
        from contriever.retrieval.bm25 import bm25_search, build_bm25

        start = time.perf_counter()
        if self.index is None:
            self.index = build_bm25(self.corpus, show_progress=self.show_progress, **self.settings)
        built = time.perf_counter()
        run = bm25_search(
            self.index,
            queries,
            k,
            ignore_identical_ids=self.ignore_identical_ids,
            threads=self.threads,
            show_progress=self.show_progress,
        )
        if self.timings is not None:
            self.timings["index_s"] = built - start
            self.timings["search_s"] = time.perf_counter() - built
        return run


FUSIONS = ("rrf", "weighted")


@dataclass
class HybridRetriever:
    """`first` and `second` fused; `weights` is `(first, second)`, equal by default."""

    first: Retriever
    second: Retriever
    fusion: str = "rrf"
    weights: Sequence[float] | None = None
    depth: int | None = None
    rrf_k: float = 60
    normalization: str = "minmax"
    timings: dict | None = None

    def __post_init__(self):
        if self.fusion not in FUSIONS:
            raise ValueError(f"unknown fusion {self.fusion!r}; choose 'rrf' or 'weighted'")

    def retrieve(self, queries: dict[str, str], k: int) -> Run:
        depth = self.candidates(k)
        return self.fuse([self.first.retrieve(queries, depth), self.second.retrieve(queries, depth)], k)

    def candidates(self, k: int) -> int:
        """How many documents each retriever is asked for, for a fused top `k`."""
        return self.depth or max(k, 100)

    def fuse(self, runs: Sequence[Run], k: int) -> Run:
        """`first`'s and `second`'s runs (`candidates(k)` deep) fused into each query's `k` best: what
        `retrieve` does after retrieving, for a caller that retrieves itself (`contriever serve` asks
        both at once, the dense one through its dynamic batches)."""
        from contriever.retrieval.hybrid import reciprocal_rank_fusion, weighted_sum

        start = time.perf_counter()
        if self.fusion == "rrf":
            fused = reciprocal_rank_fusion(runs, k=self.rrf_k, weights=self.weights, top_k=k)
        else:
            fused = weighted_sum(runs, weights=self.weights, normalization=self.normalization, top_k=k)
        if self.timings is not None:
            self.timings["fusion_s"] = time.perf_counter() - start
        return fused
