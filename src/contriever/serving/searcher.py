"""What the service searches: a dense index with its model, a BM25 index, and the documents' text.

`Searcher` holds them and answers in three modes:

- `dense`: the query encoded by the index's model, the index searched by inner product
  (`encode_batch`, run by the batcher's model thread for many requests at once);
- `bm25`: BM25 through bm25s with the settings it was built with (`bm25_hits`);
- `hybrid`: both, each `hybrid_depth` deep, fused by reciprocal rank fusion (k = 60), the default
  fusion of `contriever evaluate --model hybrid:PATH` (`contriever.retrieval.hybrid`).

Titles and snippets come from a `Documents` source: a corpus in memory (`CorpusDocuments`), an
index folder's passage store on disk (`StoreDocuments`), or any object with
`get(doc_id) -> {"title", "text"} | None`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

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


def default_forward_batch(encoder) -> int:
    """Texts per forward pass within one dynamic batch, which is sorted by length first.

    On a CPU a forward pass costs in proportion to its tokens, padding included, so one pass over a
    whole batch of 24 queries pays for every query at the longest one's length. Passes of 8 texts of
    similar length waste little padding and still amortise the per-pass overhead (CPU B, 1 thread,
    SciFact queries in requests of 24: 30.6 ms a query in one pass, 22.5 in passes of 8, 33.3 one
    at a time). A GPU is the other way round: it wants the whole batch at once.
    """
    device = getattr(encoder, "device", None)
    return CPU_FORWARD_BATCH if getattr(device, "type", "cpu") == "cpu" else 256


class Searcher:
    def __init__(
        self,
        encoder=None,
        index=None,
        bm25=None,
        documents: Documents | None = None,
        *,
        model_name: str = "model",
        hybrid_depth: int = 100,
        rrf_k: float = 60,
        snippet_chars: int = 300,
        precision: str = "auto",
        forward_batch: int | None = None,
    ):
        if index is not None and encoder is None:
            raise ValueError("a dense index needs the encoder that made it")
        if index is not None and encoder.dim != index.dim:
            raise ValueError(
                f"the model makes {encoder.dim}-dim vectors, the index holds {index.dim}-dim ones"
            )
        self.encoder = encoder
        self.index = index
        self.bm25 = bm25
        self.documents = documents
        self.model_name = model_name
        self.hybrid_depth = hybrid_depth
        self.rrf_k = rrf_k
        self.snippet_chars = snippet_chars
        self.precision = precision
        self.forward_batch = forward_batch or default_forward_batch(encoder)

    @property
    def modes(self) -> tuple[str, ...]:
        available = {"dense": self.index is not None, "bm25": self.bm25 is not None}
        available["hybrid"] = available["dense"] and available["bm25"]
        return tuple(mode for mode in MODES if available[mode])

    @property
    def size(self) -> int:
        source = self.index if self.index is not None else self.bm25
        return len(source) if source is not None else 0

    # ----- the model thread -----------------------------------------------------------------------
    def embed(self, texts: Sequence[str]) -> tuple[np.ndarray, list[int]]:
        """Vectors `[n, dim]` and token counts; texts sorted by length so each forward pads little."""
        import torch

        from contriever.model.encoder import autocast_context

        with torch.inference_mode():
            return self._embed(texts, autocast_context)

    def _embed(self, texts: Sequence[str], autocast_context) -> tuple[np.ndarray, list[int]]:
        encoder = self.encoder
        # Search queries and /v1/embeddings inputs alike get the model's query prompt (E5's `query: `,
        # which its authors also advise for texts that are not retrieval passages).
        sequences = encoder.tokenize(list(texts), prompt_name="query")
        order = np.argsort([-len(s) for s in sequences], kind="stable")
        vectors = np.empty((len(sequences), encoder.dim), dtype=np.float32)
        device = encoder.device
        with autocast_context(device, self.precision):
            for start in range(0, len(order), self.forward_batch):
                rows = order[start : start + self.forward_batch]
                ids, mask = encoder.collate([sequences[i] for i in rows])
                vectors[rows] = encoder(ids.to(device), mask.to(device)).float().cpu().numpy()
        return vectors, [len(s) for s in sequences]

    def encode_batch(self, jobs: list[EncodeJob]) -> list[Encoded]:
        """Encode every job's text in one pass, then search the index once for those that asked."""
        if self.encoder is None:
            raise RuntimeError("no model is loaded")
        vectors, tokens = self.embed([job.text for job in jobs])
        results = [Encoded(vector, count) for vector, count in zip(vectors, tokens)]
        searching = [row for row, job in enumerate(jobs) if job.k > 0]
        if searching:
            if self.index is None:
                raise RuntimeError("no dense index is loaded")
            depth = max(jobs[row].k for row in searching)
            scores, doc_ids = self.index.search(vectors[searching], depth, show_progress=False)
            for row, row_scores, row_ids in zip(searching, scores.tolist(), doc_ids):
                k = jobs[row].k
                results[row].hits = list(zip(row_ids[:k], row_scores[:k]))
        return results

    # ----- lexical and fused ----------------------------------------------------------------------
    def bm25_hits(self, queries: Sequence[str], k: int) -> list[Hits]:
        from contriever.retrieval.bm25 import bm25_search

        run = bm25_search(
            self.bm25,
            {str(i): query for i, query in enumerate(queries)},
            k,
            ignore_identical_ids=False,
            threads=0,  # bm25s without a thread pool: the server's concurrency is its requests
            show_progress=False,
        )
        return [list(run[str(i)].items()) for i in range(len(queries))]

    def fuse(self, dense: Hits, lexical: Hits, k: int) -> Hits:
        from contriever.retrieval.hybrid import reciprocal_rank_fusion

        fused = reciprocal_rank_fusion([{"q": dict(lexical)}, {"q": dict(dense)}], k=self.rrf_k, top_k=k)
        return list(fused["q"].items())

    # ----- presentation ---------------------------------------------------------------------------
    def describe(self, query: str, hits: Hits) -> list[dict]:
        """Each hit with its title and a snippet of its text, and the spans matching the query."""
        settings = getattr(self.bm25, "settings", None) or {}
        matcher = TermMatcher(query, settings.get("stemmer", "porter"), settings.get("stopwords", "en"))
        described = []
        for doc_id, score in hits:
            doc = self.documents.get(doc_id) if self.documents is not None else None
            title = ((doc or {}).get("title") or "").strip()
            text, highlights = snippet((doc or {}).get("text") or "", matcher, self.snippet_chars)
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
