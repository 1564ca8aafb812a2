"""The searcher of an index folder, picked by a search setting: exact, ANN, or ANN re-ranked.

The index folder (`contriever.retrieval.shards`) is the one index: `load_for_search(folder, ...)`
searches it exactly from its memory-mapped shards (`ShardedIndex`), or through one of its approximate
indexes `ann/<name>` (`contriever.retrieval.ann.AnnIndex`, its top candidates optionally re-scored
exactly). `temporary_index(ids, vectors)` gives the same searchers for vectors in memory (a corpus
encoded on the fly: the training evaluator, mining, `evaluate` without `--index`): they are written
into a temporary index folder, removed when the searcher is dropped.

Every searcher answers `search_rows(query_vectors, k) -> (scores, rows)`, `ids_for(rows)`,
`search(query_vectors, k) -> (scores, doc_ids)`, `.dim`, `.metadata` and `len()`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from collections.abc import Sequence
from pathlib import Path

from contriever.errors import UsageError
from contriever.retrieval.ann import AnnIndex, ann_name, is_flat, temporary_ann
from contriever.retrieval.settings import SearchSettings
from contriever.retrieval.shards import open_index, write_index


def load_for_search(folder: str | os.PathLike, search: SearchSettings | None = None):
    """`(searcher, passage store or None)` for `search`, `evaluate --index`, `evaluate-qa` and
    `serve`, as the search setting says: with `search.ann`, the approximate index `folder/ann/<ann>`
    (IVF lists memory-mapped from disk; `nprobe`/`ef_search` override its recorded search
    parameters, `rerank` re-scores its top candidates exactly from the shards). Without, a folder built with a non-flat `--index-factory`
    (its index.json records the factory) is searched through that ANN, `ann/<ann_name(factory)>`
    (a folder of an older version, with the FAISS file `index.faiss` instead, is a DataError saying
    how to build it); any other folder is searched exactly from its memory-mapped shards."""
    search = search or SearchSettings()
    sharded = open_index(folder)
    ann = search.ann or (None if is_flat(sharded.factory) else ann_name(sharded.factory))
    if ann:
        index = AnnIndex.load(folder, ann, source=sharded)
        index.set_params(**search.approximate)
        return index, sharded.store
    if any(value is not None for value in search.approximate.values()):
        raise UsageError("--nprobe, --ef-search and --rerank apply to an approximate index: add --ann NAME")
    return sharded, sharded.store


def temporary_index(
    ids: Sequence[str],
    vectors,
    *,
    metadata: dict | None = None,
    factory: str = "Flat",
    show_progress: bool = True,
):
    """A searcher over vectors `[n, dim]` in memory: written as an index folder (fp16 shards,
    `shards.write_index`) into a temporary folder, removed when the searcher is dropped; searched
    exactly, or for a non-flat `factory` through the ANN built over that folder."""
    if not len(ids):
        raise ValueError("cannot index an empty corpus")
    folder = Path(tempfile.mkdtemp(prefix="contriever-index-"))
    try:
        sharded = open_index(write_index(folder / "index", ids, vectors, metadata=metadata))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    weakref.finalize(sharded, shutil.rmtree, folder, ignore_errors=True)
    return sharded if is_flat(factory) else temporary_ann(sharded, factory, show_progress=show_progress)
