"""BM25 through bm25s: the lexical baseline of the BEIR tables, and a hard-negative source.

**Variant and parameters.** BEIR's reference BM25 is Elasticsearch (Lucene's BM25) with k1 = 0.9,
b = 0.4 and the "english" analyzer (lowercasing, Lucene's 33 English stop words, the Porter
stemmer) over the title and text fields. The defaults here follow it as closely as bm25s allows:

- `method="lucene"`: Lucene's scoring, idf = ln(1 + (N - df + 0.5) / (df + 0.5));
- `k1=0.9`, `b=0.4`;
- `stopwords="en"`: bm25s's English list, which is Lucene's 33 words;
- `stemmer="porter"`: PyStemmer's original Porter algorithm (Lucene's `PorterStemFilter`);
- documents are `title + " " + text` (one field instead of Elasticsearch's two; see below);
- tokens: bm25s's pattern `\\b\\w\\w+\\b` (words of two or more characters, lowercased).

On SciFact test (BEIR reports 66.5 nDCG@10, 90.8 R@100) these settings give 67.1 / 91.9; the
Snowball "english" stemmer gives 67.6 / 91.3 and no stemmer 65.7 / 87.6. Likely sources of the
remaining difference: Elasticsearch scores title and text as separate fields (`multi_match`, best
field plus 0.5 x the other), and Lucene's tokenizer keeps one-character tokens.

Documents that share no term with a query score 0 and are not returned (Elasticsearch returns only
matching documents), so a run can hold fewer than k documents for a query.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from contriever.data.documents import document_text
from contriever.errors import DataError
from contriever.io import atomic_folder, verify_manifest
from contriever.machine import available_cpus
from contriever.retrieval.runs import Run, run_from_search

DEFAULTS = {"k1": 0.9, "b": 0.4, "method": "lucene", "stemmer": "porter", "stopwords": "en"}
METHODS = ("lucene", "robertson", "atire", "bm25l", "bm25+")
SETTINGS_FILE = "bm25.json"


@dataclass
class BM25Index:
    """A bm25s retriever, the document ids of its rows, and the settings queries must be tokenized with."""

    retriever: object
    doc_ids: list[str]
    settings: dict = field(default_factory=lambda: dict(DEFAULTS))

    def __len__(self) -> int:
        return len(self.doc_ids)

    def save(self, folder: str | os.PathLike) -> Path:
        return save_bm25(self, folder)

    @classmethod
    def load(cls, folder: str | os.PathLike) -> BM25Index:
        return load_bm25(folder)


def _stemmer(name: str | None):
    if name in (None, "", "none"):
        return None
    import Stemmer

    try:
        return Stemmer.Stemmer(name)
    except KeyError:
        raise ValueError(
            f"unknown stemmer {name!r}; PyStemmer has {', '.join(Stemmer.algorithms())} (or None for no stemming)"
        ) from None


def _tokenize(texts: Sequence[str], settings: dict, *, return_ids: bool, show_progress: bool):
    import bm25s

    stopwords = settings["stopwords"]
    return bm25s.tokenize(
        list(texts),
        lower=True,
        stopwords=stopwords if stopwords else None,
        stemmer=_stemmer(settings["stemmer"]),
        return_ids=return_ids,
        show_progress=show_progress,
    )


def build_bm25(
    corpus: dict[str, dict | str],
    k1: float = 0.9,
    b: float = 0.4,
    method: str = "lucene",
    stemmer: str | None = "porter",
    stopwords: str | list[str] | None = "en",
    *,
    show_progress: bool = True,
) -> BM25Index:
    """Index `corpus` (`{doc_id: {"title", "text"}}` or `{doc_id: text}`) for BM25.

    `stemmer` is a PyStemmer algorithm name ("porter", "english", "german", ...) or None;
    `stopwords` is a bm25s language code ("en", "de", ...), a list of words, or None.
    """
    import bm25s

    if method not in METHODS:
        raise ValueError(f"unknown BM25 method {method!r}; choose one of {METHODS}")
    if not corpus:
        raise ValueError("cannot build a BM25 index over an empty corpus")
    settings = {"k1": float(k1), "b": float(b), "method": method, "stemmer": stemmer, "stopwords": stopwords}
    _stemmer(stemmer)  # fail early on a bad name
    doc_ids = [str(doc_id) for doc_id in corpus]
    tokens = _tokenize(
        [document_text(doc) for doc in corpus.values()],
        settings,
        return_ids=True,
        show_progress=show_progress,
    )
    retriever = bm25s.BM25(k1=k1, b=b, method=method)
    retriever.index(tokens, show_progress=show_progress)
    return BM25Index(retriever, doc_ids, settings)


def bm25_search(
    index: BM25Index,
    queries: dict[str, str],
    k: int = 1000,
    *,
    ignore_identical_ids: bool = True,
    threads: int | None = None,
    show_progress: bool = True,
) -> Run:
    """A run `{qid: {doc_id: score}}` with each query's `k` best matching documents.

    With `ignore_identical_ids`, a document whose id equals the query id is skipped (and the next one
    takes its place), as BEIR does.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if not queries:
        return {}
    qids = list(queries)
    tokens = _tokenize([queries[q] for q in qids], index.settings, return_ids=False, show_progress=False)
    depth = min(k + (1 if ignore_identical_ids else 0), len(index))
    docs, scores = index.retriever.retrieve(
        tokens,
        k=depth,
        show_progress=show_progress,
        n_threads=threads if threads is not None else available_cpus(),
        chunksize=64,
    )
    # Sorted best first; a score of 0 matches no query term, so it ends the query's list.
    ranked = [
        [(index.doc_ids[row], score) for row, score in zip(row_docs, row_scores, strict=True) if score > 0]
        for row_docs, row_scores in zip(np.asarray(docs).tolist(), np.asarray(scores).tolist(), strict=True)
    ]
    return run_from_search(
        qids,
        [[score for _, score in row] for row in ranked],
        [[doc for doc, _ in row] for row in ranked],
        k,
        ignore_identical_ids=ignore_identical_ids,
    )


def save_bm25(index: BM25Index, folder: str | os.PathLike) -> Path:
    """Write bm25s's files plus `ids.txt` and `bm25.json` (the settings) to `folder`, atomically."""
    target = Path(folder)
    if target.exists() and (
        not target.is_dir() or (any(target.iterdir()) and not (target / SETTINGS_FILE).exists())
    ):
        raise FileExistsError(f"{target} exists and is not a BM25 index folder; refusing to replace it")
    with atomic_folder(target) as staging:
        index.retriever.save(str(staging), show_progress=False)
        (staging / "ids.txt").write_text("".join(f"{d}\n" for d in index.doc_ids), encoding="utf-8")
        (staging / SETTINGS_FILE).write_text(
            json.dumps({**index.settings, "count": len(index)}, indent=2) + "\n"
        )
    return target


def load_bm25(folder: str | os.PathLike) -> BM25Index:
    """Read a folder written by `save_bm25`."""
    import bm25s

    folder = Path(folder)
    settings_path = folder / SETTINGS_FILE
    if not settings_path.is_file():
        raise DataError(
            folder, f"not a BM25 index folder (no {SETTINGS_FILE}); build one with build_bm25 + save_bm25"
        )
    try:
        saved = json.loads(settings_path.read_text())
    except json.JSONDecodeError as error:
        raise DataError(settings_path, f"not valid JSON ({error.msg})", error.lineno) from None
    count = saved.pop("count", None)
    settings = {**DEFAULTS, **{key: saved[key] for key in DEFAULTS if key in saved}}
    ids_path = folder / "ids.txt"
    if not ids_path.is_file():
        raise DataError(ids_path, "missing: the document ids of the index rows")
    doc_ids = ids_path.read_text(encoding="utf-8").splitlines()
    if count is not None and len(doc_ids) != count:
        raise DataError(ids_path, f"{len(doc_ids)} ids, but {SETTINGS_FILE} says {count}")
    verify_manifest(folder, required=False)  # folders saved before manifests have none
    retriever = bm25s.BM25.load(str(folder), allow_pickle=False)  # arrays only: nothing to run
    if retriever.scores["num_docs"] != len(doc_ids):
        raise DataError(
            ids_path, f"{len(doc_ids)} ids for an index of {retriever.scores['num_docs']} documents"
        )
    return BM25Index(retriever, doc_ids, settings)
