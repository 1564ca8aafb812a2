"""Retrieval in one call: corpus + queries in, a run `{qid: {doc_id: score}}` out, each function
building the retriever of `contriever.retrieval.retrievers` that does the work.

- `dense_retrieve`: encode the corpus into a `DenseIndex` (or use a given one), then `DenseRetriever`;
- `bm25_retrieve`: `BM25Retriever` (bm25s, `contriever.retrieval.bm25`);
- `hybrid_retrieve`: both, fused by `HybridRetriever` (reciprocal rank fusion or a weighted sum).

All of them skip a retrieved document whose id equals the query id (BEIR's rule, applied in
`runs.py`; set `ignore_identical_ids=False` to keep it), taking one more document so a query still
gets k.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from contriever.errors import UsageError
from contriever.retrieval.index import DenseIndex, check_factory
from contriever.retrieval.retrievers import (
    FUSIONS,
    BM25Retriever,
    DenseRetriever,
    HybridRetriever,
)
from contriever.retrieval.runs import Run


def encoder_for_index(index: DenseIndex, model: str | None = None, device=None):
    """The encoder that made `index`: its recorded model (or `model`), pooling, normalization, length,
    and text options (so queries get the lowercasing / `normalize_text` the passages got)."""
    from contriever.model.encoder import Encoder
    from contriever.model.text_options import TextOptions

    meta = index.metadata
    model = model or meta.get("model", "default")
    encoder = Encoder.load(
        model,
        pooling=meta.get("pooling"),
        normalize=meta.get("normalize"),
        max_length=meta.get("max_length"),
        device=device,
        text=TextOptions(
            lowercase=meta.get("lowercase"),
            normalize_text=meta.get("normalize_text"),
            # the prompts the passages got decide the queries' (an index without any: none)
            prompts=meta.get("prompts") or {"query": None, "passage": None},
            force_prompts=True,  # the index's own record decides, whatever the model folder says now
        ),
    )
    if encoder.dim != index.dim:
        raise UsageError(
            f"the model {model} makes {encoder.dim}-dim vectors but the index holds {index.dim}-dim ones "
            f"(built with {meta.get('model', 'an unrecorded model')}): search with the model the index was built with"
        )
    return encoder


def build_dense_index(
    encoder,
    corpus: dict[str, dict | str],
    *,
    batch_size: int | None = None,
    index_factory: str = "Flat",
    show_progress: bool = True,
    metadata: dict | None = None,
    precision: str = "auto",
) -> DenseIndex:
    """Encode `corpus` (`title + " " + text`) and index the vectors.

    `precision` is the encoder's autocast setting ("auto": bf16 where the hardware is fast at it).
    """
    if not corpus:
        raise ValueError("cannot index an empty corpus")
    check_factory(encoder.dim, index_factory, len(corpus))
    embeddings = encoder.encode_corpus(
        list(corpus.values()), batch_size=batch_size, show_progress=show_progress, precision=precision
    )
    meta = {
        "pooling": getattr(encoder, "pooling", None),
        "normalize": getattr(encoder, "normalize", None),
        "max_length": getattr(encoder, "max_length", None),
        **(metadata or {}),
    }
    return DenseIndex.build(
        embeddings, list(corpus), index_factory, metadata=meta, show_progress=show_progress
    )


def dense_search(
    encoder,
    index: DenseIndex,
    queries: dict[str, str],
    k: int = 1000,
    *,
    batch_size: int | None = None,
    ignore_identical_ids: bool = True,
    show_progress: bool = True,
    timings: dict | None = None,
    precision: str = "auto",
    passage_depth: int = 0,
) -> Run:
    """Encode `queries` and search `index`: a run with each query's `k` best documents
    (`DenseRetriever`; `passage_depth` > 0: documents scored by their best passage)."""
    retriever = DenseRetriever(
        encoder,
        index,
        batch_size=batch_size,
        precision=precision,
        passage_depth=passage_depth,
        ignore_identical_ids=ignore_identical_ids,
        show_progress=show_progress,
        timings=timings,
    )
    return retriever.retrieve(queries, k)


def dense_retrieve(
    encoder,
    corpus: dict[str, dict | str] | None,
    queries: dict[str, str],
    k: int = 1000,
    batch_size: int | None = None,
    index_factory: str = "Flat",
    index: DenseIndex | None = None,
    *,
    ignore_identical_ids: bool = True,
    show_progress: bool = True,
    timings: dict | None = None,
    precision: str = "auto",
    passage_depth: int = 0,
) -> Run:
    """Dense retrieval with `encoder`: index `corpus` (unless `index` is given), then search.

    `timings`, when given, receives `encode_corpus_s` (encoding + indexing), `encode_queries_s` and
    `search_s`.
    """
    start = time.perf_counter()
    if index is None:
        if corpus is None:
            raise ValueError("pass a corpus to encode, or an index")
        index = build_dense_index(
            encoder,
            corpus,
            batch_size=batch_size,
            index_factory=index_factory,
            show_progress=show_progress,
            precision=precision,
        )
    if timings is not None:
        timings["encode_corpus_s"] = time.perf_counter() - start
    return dense_search(
        encoder,
        index,
        queries,
        k,
        batch_size=batch_size,
        ignore_identical_ids=ignore_identical_ids,
        show_progress=show_progress,
        timings=timings,
        precision=precision,
        passage_depth=passage_depth,
    )


def bm25_retrieve(
    corpus: dict[str, dict | str],
    queries: dict[str, str],
    k: int = 1000,
    *,
    ignore_identical_ids: bool = True,
    show_progress: bool = True,
    timings: dict | None = None,
    **bm25_settings,
) -> Run:
    """BM25 over `corpus` (`title + " " + text`); `bm25_settings` go to `build_bm25` (k1, b, method,
    stemmer, stopwords; defaults follow BEIR's Elasticsearch BM25)."""
    retriever = BM25Retriever(corpus, bm25_settings, ignore_identical_ids, show_progress, timings)
    return retriever.retrieve(queries, k)


def hybrid_retrieve(
    encoder,
    corpus: dict[str, dict | str],
    queries: dict[str, str],
    k: int = 1000,
    fusion: str = "rrf",
    weights: Sequence[float] | None = None,
    *,
    depth: int | None = None,
    rrf_k: float = 60,
    normalization: str = "minmax",
    batch_size: int | None = None,
    index_factory: str = "Flat",
    bm25_settings: dict | None = None,
    ignore_identical_ids: bool = True,
    show_progress: bool = True,
    timings: dict | None = None,
    precision: str = "auto",
    index: DenseIndex | None = None,
    passage_depth: int = 0,
) -> Run:
    """BM25 and dense retrieval fused: `fusion="rrf"` (reciprocal rank fusion, constant `rrf_k`) or
        `"weighted"` (sum of per-query `normalization`-ed scores). `weights` is `(bm25, dense)`, equal by
        default. Each system retrieves `depth` documents (default `max(k, 100)`) before fusion. `index`,
    when given, is searched instead of encoding `corpus` (`passage_depth`: see `dense_search`)."""
    if fusion not in FUSIONS:
        raise ValueError(f"unknown fusion {fusion!r}; choose 'rrf' or 'weighted'")
    bm25_timings: dict = {}
    dense_timings: dict = {}
    lexical = BM25Retriever(corpus, bm25_settings or {}, ignore_identical_ids, show_progress, bm25_timings)
    start = time.perf_counter()
    if index is None:
        index = build_dense_index(
            encoder,
            corpus,
            batch_size=batch_size,
            index_factory=index_factory,
            show_progress=show_progress,
            precision=precision,
        )
    dense_timings["encode_corpus_s"] = time.perf_counter() - start
    dense = DenseRetriever(
        encoder,
        index,
        batch_size,
        precision,
        passage_depth,
        ignore_identical_ids,
        show_progress,
        dense_timings,
    )
    fused = HybridRetriever(
        lexical, dense, fusion, weights, depth, rrf_k, normalization, timings=dense_timings
    )
    run = fused.retrieve(queries, k)
    if timings is not None:
        timings.update({f"bm25_{name}": value for name, value in bm25_timings.items()})
        timings.update(dense_timings)
    return run
