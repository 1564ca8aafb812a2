"""Retrievers for a corpus given as a dict, and retrieval in one call (corpus + queries in, a run
`{qid: {doc_id: score}}` out), built on `contriever.retrieval.retrievers`:

- `index_corpus`: a corpus encoded into a temporary index folder (the one index format), searched
  exactly, or through the ANN of a non-flat `EncodingSettings.index_factory` built over it;
- `dense_retriever`: a `DenseRetriever` over that (or over a given searcher); `dense_retrieve` its run;
- `bm25_retrieve`: `BM25Retriever`'s run (bm25s, `contriever.retrieval.bm25`).

Hybrid retrieval is `HybridRetriever(BM25Retriever(corpus), dense_retriever(encoder, corpus))`.
All of them skip a retrieved document whose id equals the query id (BEIR's rule, applied in
`runs.py`; set `ignore_identical_ids=False` to keep it), taking one more document so a query still
gets k.
"""

from __future__ import annotations

import time

from contriever.errors import UsageError
from contriever.retrieval.ann import check_factory
from contriever.retrieval.index import temporary_index
from contriever.retrieval.retrievers import BM25Retriever, DenseRetriever
from contriever.retrieval.runs import Run
from contriever.retrieval.settings import EncodingSettings


def encoder_for_index(index, model: str | None = None, device=None):
    """The encoder that made `index` (a searcher of `load_for_search`): its recorded model (or
    `model`), pooling, normalization, length, and text options (so queries get the lowercasing /
    `normalize_text` the passages got)."""
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


def index_corpus(
    encoder,
    corpus: dict[str, dict | str],
    encoding: EncodingSettings | None = None,
    *,
    metadata: dict | None = None,
    show_progress: bool = True,
):
    """`corpus` (`title + " " + text`) encoded by `encoder` into a temporary index folder, removed
    when the returned searcher is dropped (`index.temporary_index`). From `encoding`: `batch_size`,
    `precision` (the encoder's autocast; "auto": bf16 where the hardware is fast at it) and
    `index_factory` (not Flat: searched through that ANN, built over the folder); the encoder's own
    text options and length apply."""
    encoding = encoding or EncodingSettings()
    if not corpus:
        raise ValueError("cannot index an empty corpus")
    check_factory(encoder.dim, encoding.index_factory, len(corpus))  # before encoding
    embeddings = encoder.encode_corpus(
        list(corpus.values()),
        batch_size=encoding.batch_size,
        show_progress=show_progress,
        precision=encoding.precision,
    )
    meta = {
        "pooling": getattr(encoder, "pooling", None),
        "normalize": getattr(encoder, "normalize", None),
        "max_length": getattr(encoder, "max_length", None),
        **(metadata or {}),
    }
    return temporary_index(
        list(corpus), embeddings, metadata=meta, factory=encoding.index_factory, show_progress=show_progress
    )


def dense_retriever(
    encoder,
    corpus: dict[str, dict | str] | None = None,
    encoding: EncodingSettings | None = None,
    *,
    index=None,
    timings: dict | None = None,
    **fields,
) -> DenseRetriever:
    """A `DenseRetriever` with `encoder` over `index`, or else over `corpus` encoded (`index_corpus`,
    timed as `timings["encode_corpus_s"]`). `encoding` gives the batch size and precision of the
    queries (and corpus); `fields` are the retriever's (`passage_depth`, `ignore_identical_ids`,
    `show_progress`)."""
    encoding = encoding or EncodingSettings()
    start = time.perf_counter()
    if index is None:
        if corpus is None:
            raise ValueError("pass a corpus to encode, or an index")
        index = index_corpus(encoder, corpus, encoding, show_progress=fields.get("show_progress", True))
    if timings is not None:
        timings["encode_corpus_s"] = time.perf_counter() - start
    return DenseRetriever(encoder, index, encoding.batch_size, encoding.precision, timings=timings, **fields)


def dense_retrieve(
    encoder,
    corpus: dict[str, dict | str] | None,
    queries: dict[str, str],
    k: int = 1000,
    encoding: EncodingSettings | None = None,
    *,
    index=None,
    **fields,
) -> Run:
    """Dense retrieval with `encoder`: index `corpus` (unless `index` is given), then search: the run
    of `dense_retriever(encoder, corpus, encoding, index=index, **fields)`. `timings`, when given,
    receives `encode_corpus_s` (encoding + indexing), `encode_queries_s` and `search_s`."""
    return dense_retriever(encoder, corpus, encoding, index=index, **fields).retrieve(queries, k)


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
