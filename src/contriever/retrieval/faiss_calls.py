"""FAISS as this package calls it: its OpenMP threads (set once, to the CPUs this process may use),
query rows as contiguous float32, batched search with a progress bar, and the readable part of its
C++ error messages. Shared by every searcher of an index folder (exact, ANN)."""

from __future__ import annotations

import os

import faiss
import numpy as np
from tqdm.auto import tqdm

from contriever.machine import available_cpus

THREADS_ENV = "CONTRIEVER_FAISS_THREADS"

_threads_set = False


def set_faiss_threads(threads: int | None = None) -> int:
    """Set FAISS's OpenMP threads: `threads`, else $CONTRIEVER_FAISS_THREADS, else $OMP_NUM_THREADS,
    else the CPUs this process may use (OpenMP's own default counts every core of the machine, which
    oversubscribes a container limited to a few). Returns the number set."""
    global _threads_set
    if threads is None:
        for name in (THREADS_ENV, "OMP_NUM_THREADS"):
            value = os.environ.get(name, "").strip()
            if value.isdigit() and int(value) > 0:
                threads = int(value)
                break
        else:
            threads = available_cpus()
    faiss.omp_set_num_threads(int(threads))
    _threads_set = True
    return int(threads)


def _ensure_threads() -> None:
    if not _threads_set:
        set_faiss_threads()


def _faiss_reason(error: Exception) -> str:
    """The human part of a FAISS C++ exception message (the text after the last 'failed:'/location)."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
    if "failed: " in text:
        return text.rsplit("failed: ", 1)[1]
    return text.rsplit(": ", 1)[-1]


def _as_float32_rows(vectors, dim: int | None, what: str) -> np.ndarray:
    array = np.asarray(vectors)
    if array.ndim != 2:
        raise ValueError(f"{what} must be a 2-d array [n, dim], got shape {array.shape}")
    if dim is not None and array.shape[1] != dim:
        raise ValueError(f"{what} have dimension {array.shape[1]}, the index has {dim}")
    return np.ascontiguousarray(array, dtype=np.float32)


def search_in_batches(
    index, queries: np.ndarray, k: int, *, batch_size: int, show_progress: bool, progress=None
) -> tuple[np.ndarray, np.ndarray]:
    """`index.search` over float32 `queries` in batches, with a progress bar (and `progress(share of
    the queries)` after each batch, when given): `(scores, rows)` of shape [n, k]; rows FAISS did
    not fill are -1 with score -inf."""
    scores = np.empty((len(queries), k), dtype=np.float32)
    labels = np.empty((len(queries), k), dtype=np.int64)
    bar = tqdm(total=len(queries), desc="searching", unit="query", disable=not show_progress)
    try:
        for start in range(0, len(queries), batch_size):
            batch_scores, batch_labels = index.search(queries[start : start + batch_size], k)
            scores[start : start + len(batch_labels)] = batch_scores
            labels[start : start + len(batch_labels)] = batch_labels
            bar.update(len(batch_labels))
            if progress is not None:
                progress(len(batch_labels) / len(queries))
    finally:
        bar.close()
    scores[labels < 0] = -np.inf
    return scores, labels
