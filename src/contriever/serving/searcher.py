"""What the service searches: a dense index with its model, a BM25 index, and the documents' text.

`Searcher` holds them as the retrievers `contriever evaluate` uses (`contriever.retrieval.retrievers`),
so each mode ranks as there:

- `dense`: a `DenseRetriever` over the index; the queries of many requests are encoded in one pass
  by the batcher's model thread (`encode_batch`), which hands the vectors to its `search_vectors`;
- `bm25`: a `BM25Retriever` over bm25s with the settings it was built with;
- `hybrid`: a `HybridRetriever` of the two (BM25 first), each `candidates(k)` deep, fused by
  reciprocal rank fusion (k = 60), the default fusion of `contriever evaluate --model hybrid:PATH`.

The retrievers keep every document they find (`ignore_identical_ids=False`): the service names a
request's queries by position (`"0"`, `"1"`, ...), so BEIR's rule of dropping a document whose id
equals its query's would drop document `0` from the first query's results.

Titles and snippets come from a `Documents` source: a corpus in memory (`CorpusDocuments`), an
index folder's passage store on disk (`StoreDocuments`), or any object with
`get(doc_id) -> {"title", "text"} | None`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from contriever.retrieval.retrievers import BM25Retriever, DenseRetriever, HybridRetriever
from contriever.serving.snippets import TermMatcher, snippet

MODES = ("dense", "bm25", "hybrid")
Hits = list[tuple[str, float]]


class Documents(Protocol):
    def get(self, doc_id: str) -> dict | None: ...


class CorpusDocuments:
    """Documents held in memory: `{doc_id: {"title", "text"}}` (or `{doc_id: text}`)."""

    def __init__(self, corpus: dict[str, dict | str]):
        self.corpus = corpus

    def __len__(self) -> int:
        return len(self.corpus)

    def get(self, doc_id: str) -> dict | None:
        doc = self.corpus.get(doc_id)
        if doc is None or isinstance(doc, dict):
            return doc
        return {"title": "", "text": doc}


class StoreDocuments:
    """Passages read from an index folder's passage store (`passages.sqlite`, written by
    `contriever index` for sharded indexes: table `passages(row, id, doc_id, title, text, ...)`),
    a few rows per request, never the corpus in memory. One read-only connection shared by the
    server's threads (SQLite serialises its use)."""

    def __init__(self, path):
        import sqlite3
        import threading

        self.path = path
        self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM passages").fetchone()[0])

    def get(self, doc_id: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT title, text FROM passages WHERE id = ?", (doc_id,)).fetchone()
        return {"title": row[0], "text": row[1]} if row else None

    def all(self, chunk: int = 10_000):
        """`(id, {"title", "text"})` of every passage in row order (to build BM25 from)."""
        start = 0
        while True:
            with self._lock:
                rows = self._db.execute(
                    "SELECT id, title, text FROM passages WHERE row >= ? AND row < ? ORDER BY row",
                    (start, start + chunk),
                ).fetchall()
            if not rows:
                return
            for passage_id, title, text in rows:
                yield passage_id, {"title": title, "text": text}
            start += chunk


@dataclass
class EncodeJob:
    """One text for the model; with `k > 0` the dense index is searched for its `k` best documents."""

    text: str
    k: int = 0


@dataclass
class Encoded:
    vector: np.ndarray
    tokens: int
    hits: Hits | None = None


CPU_FORWARD_BATCH = 8
# With packed inference (`contriever.model.packed`) padding costs only in attention, and a larger
# pass is the faster one: SciFact queries, CPU C, bf16, 1 thread: 8 a pass 264.6 queries/s,
# 32 a pass 299.4 (medians of 3 rounds; benchmarks/README.md, "Packed inference").
PACKED_CPU_FORWARD_BATCH = 32
# Query lengths rounded up to a multiple of 8 under bf16 on a CPU (16 for corpora,
# `model.encoder.BF16_CPU_LENGTH_MULTIPLE`): queries are short, so 16 pads more of each. SciFact
# queries at 32 clients (CPU C, benchmarks/README.md, issue 19): exact lengths 157 requests/s and
# RSS +250 MB over 2,000 requests (a oneDNN kernel per shape), 8: 154 and +59 MB, 16: 132-142, +40 MB.
QUERY_LENGTH_MULTIPLE = 8


def query_length_multiple(encoder, precision: str) -> int:
    """What serve's query batches are padded to: exact lengths where packed inference runs (its
    products' row counts are rounded, `packed.row_count`, and attention keeps nothing per shape;
    serve's memory stayed flat through the benchmark runs and a 3,000-request burst), else a
    multiple of `QUERY_LENGTH_MULTIPLE` under bf16 on a CPU."""
    from contriever.model import packed
    from contriever.model.encoder import shape_multiple

    if encoder.device.type == "cpu" and packed.supports(encoder.model):
        return 1
    return shape_multiple(encoder.device, precision, QUERY_LENGTH_MULTIPLE)


def default_forward_batch(encoder) -> int:
    """Texts per forward pass within one dynamic batch, which is sorted by length first.

    On a CPU a forward pass costs in proportion to its tokens, padding included, so one pass over a
    whole batch of 24 queries pays for every query at the longest one's length. Passes of 8 texts of
    similar length waste little padding and still amortise the per-pass overhead (CPU B, 1 thread,
    SciFact queries in requests of 24: 30.6 ms a query in one pass, 22.5 in passes of 8, 33.3 one
    at a time). Packed inference pays for padding only in attention, so it takes passes of 32. A
    GPU is the other way round: it wants the whole batch at once.
    """
    from contriever.model import packed

    device = getattr(encoder, "device", None)
    if getattr(device, "type", "cpu") != "cpu":
        return 256
    model = getattr(encoder, "model", None)
    return PACKED_CPU_FORWARD_BATCH if model is not None and packed.supports(model) else CPU_FORWARD_BATCH


@dataclass(frozen=True)
class SearcherSettings:
    """How the searcher encodes and what it reports: the model's name in the API, the forward pass's
    precision (`--precision`), texts per forward pass (None: `default_forward_batch`), snippet length."""

    model_name: str = "model"
    precision: str = "auto"
    forward_batch: int | None = None
    snippet_chars: int = 300


class Searcher:
    """The retrievers of the modes the loaded parts allow, and the documents to describe hits with.

    `encoder` alone serves embeddings; with `index` (made by that encoder) dense search; with `bm25`
    (a `BM25Index`) BM25; with both, hybrid."""

    def __init__(
        self,
        encoder=None,
        index=None,
        bm25=None,
        documents: Documents | None = None,
        settings: SearcherSettings = SearcherSettings(),
    ):
        if index is not None and encoder is None:
            raise ValueError("a dense index needs the encoder that made it")
        if index is not None and encoder.dim != index.dim:
            raise ValueError(
                f"the model makes {encoder.dim}-dim vectors, the index holds {index.dim}-dim ones"
            )
        self.encoder = encoder
        self.documents = documents
        self.settings = settings
        self.forward_batch = settings.forward_batch or default_forward_batch(encoder)
        self.dense = self.bm25 = self.hybrid = None
        if index is not None:
            self.dense = DenseRetriever(
                encoder, index, precision=settings.precision, ignore_identical_ids=False, show_progress=False
            )
        if bm25 is not None:  # built or loaded by the loader (logged, saved with --bm25), not on first use
            # threads=0: bm25s without a thread pool; the server's concurrency is its requests
            self.bm25 = BM25Retriever(
                {}, index=bm25, ignore_identical_ids=False, show_progress=False, threads=0
            )
        if self.dense is not None and self.bm25 is not None:
            self.hybrid = HybridRetriever(self.bm25, self.dense)

    @property
    def model_name(self) -> str:
        return self.settings.model_name

    @property
    def precision(self) -> str:
        return self.settings.precision

    @property
    def modes(self) -> tuple[str, ...]:
        available = {"dense": self.dense, "bm25": self.bm25, "hybrid": self.hybrid}
        return tuple(mode for mode in MODES if available[mode] is not None)

    @property
    def size(self) -> int:
        if self.dense is not None:
            return len(self.dense.index)
        return len(self.bm25.index) if self.bm25 is not None else 0

    # ----- the model thread -----------------------------------------------------------------------
    def embed(self, texts: Sequence[str]) -> tuple[np.ndarray, list[int]]:
        """Vectors `[n, dim]` and token counts; texts sorted by length so each forward pads little."""
        import torch

        with torch.inference_mode():
            return self._embed(texts)

    def _embed(self, texts: Sequence[str]) -> tuple[np.ndarray, list[int]]:
        from contriever.model.encoder import autocast_context

        encoder = self.encoder
        # Search queries and /v1/embeddings inputs alike get the model's query prompt (E5's `query: `,
        # which its authors also advise for texts that are not retrieval passages).
        sequences = encoder.tokenize(list(texts), prompt_name="query")
        order = np.argsort([-len(s) for s in sequences], kind="stable")
        vectors = np.empty((len(sequences), encoder.dim), dtype=np.float32)
        device = encoder.device
        multiple = query_length_multiple(encoder, self.settings.precision)
        with autocast_context(device, self.settings.precision):
            for start in range(0, len(order), self.forward_batch):
                rows = order[start : start + self.forward_batch]
                ids, mask = encoder.collate([sequences[i] for i in rows], multiple)
                vectors[rows] = encoder(ids.to(device), mask.to(device)).float().cpu().numpy()
        return vectors, [len(s) for s in sequences]

    def encode_batch(self, jobs: list[EncodeJob]) -> list[Encoded]:
        """Encode every job's text in one pass, then search the index once for those that asked
        (as deep as the deepest asked; each job keeps its own k best)."""
        if self.encoder is None:
            raise RuntimeError("no model is loaded")
        vectors, tokens = self.embed([job.text for job in jobs])
        results = [Encoded(vector, count) for vector, count in zip(vectors, tokens)]
        searching = [row for row, job in enumerate(jobs) if job.k > 0]
        if searching:
            if self.dense is None:
                raise RuntimeError("no dense index is loaded")
            names = [str(row) for row in searching]
            run = self.dense.search_vectors(names, vectors[searching], max(jobs[row].k for row in searching))
            for row, name in zip(searching, names):
                results[row].hits = list(run[name].items())[: jobs[row].k]
        return results

    # ----- presentation ---------------------------------------------------------------------------
    def describe(self, query: str, hits: Hits) -> list[dict]:
        """Each hit with its title and a snippet of its text, and the spans matching the query."""
        settings = self.bm25.index.settings if self.bm25 is not None else {}
        matcher = TermMatcher(query, settings.get("stemmer", "porter"), settings.get("stopwords", "en"))
        described = []
        for doc_id, score in hits:
            doc = self.documents.get(doc_id) if self.documents is not None else None
            title = ((doc or {}).get("title") or "").strip()
            text, highlights = snippet((doc or {}).get("text") or "", matcher, self.settings.snippet_chars)
            described.append(
                {
                    "id": doc_id,
                    "score": float(score),
                    "title": title,
                    "snippet": text,
                    "highlights": highlights,
                    "title_highlights": [list(span) for span in matcher.spans(title)],
                }
            )
        return described
