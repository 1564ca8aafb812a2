"""A dense index over document vectors, backed by FAISS, scored by inner product.

`DenseIndex.build(embeddings, ids)` gives exact search (`IndexFlatIP`); any FAISS `index_factory`
string gives a compressed or approximate one (`"HNSW32"`, `"IVF1024,PQ32"`, `"IVF256,Flat"`, ...),
always with `METRIC_INNER_PRODUCT`, trained on (a sample of) the vectors when the type needs it.

Vectors are held at fp16 precision (`dtype="float16"`, the default): they are rounded to fp16 before
they enter FAISS, so the index in memory and the one saved and loaded again give identical scores.
fp16 keeps about three significant digits, far below what changes a ranking in practice, and halves
the disk size (768-dim vectors: 1.5 KB each). Pass `dtype="float32"` to keep full precision.

A saved index is an index folder (`contriever.retrieval.shards`: fp16 `embeddings-NNNNN.npy` row
shards with their `ids-NNNNN.txt`, the `index.json` manifest written last; `index.faiss`, the trained
FAISS index, for non-flat factories only: a flat index is rebuilt from the shards, which is as fast as
reading it). `DenseIndex` holds every vector in RAM; `contriever.retrieval.shards.open_index` searches
the same folder exactly with the shards memory-mapped instead.

Writes go to a temporary folder beside the target, renamed into place when complete.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import faiss
import numpy as np
from tqdm.auto import tqdm

from contriever.errors import DataError, UsageError
from contriever.io import atomic_folder, atomic_write, write_json
from contriever.machine import available_cpus
from contriever.retrieval.shards import MANIFEST, file_entry, open_index, write_manifest, write_shard

FP16_MAX = float(np.finfo(np.float16).max)
DEFAULT_NPROBE = 32
DEFAULT_EF_SEARCH = 128
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


def is_flat(factory: str) -> bool:
    return factory.replace(" ", "") == "Flat"


def _ivf_lists(factory: str) -> int | None:
    match = re.search(r"IVF(\d+)", factory)
    return int(match.group(1)) if match else None


def _as_float32_rows(vectors, dim: int | None, what: str) -> np.ndarray:
    array = np.asarray(vectors)
    if array.ndim != 2:
        raise ValueError(f"{what} must be a 2-d array [n, dim], got shape {array.shape}")
    if dim is not None and array.shape[1] != dim:
        raise ValueError(f"{what} have dimension {array.shape[1]}, the index has {dim}")
    return np.ascontiguousarray(array, dtype=np.float32)


def _check_enough_vectors(factory: str, n: int) -> None:
    lists = _ivf_lists(factory)
    if lists is not None and n < lists:
        raise ValueError(
            f"index {factory!r} has {lists} IVF lists but only {n} vectors to train on: "
            f"use at most IVF{max(1, n // 39)} (FAISS wants ~39 vectors per list) or 'Flat'"
        )


def check_factory(dim: int, factory: str, n_vectors: int | None = None) -> None:
    """Raise the ValueError that building `factory` over `n_vectors` vectors of size `dim` would
    raise, before a corpus is encoded for it (an invalid string otherwise fails only at the end)."""
    DenseIndex(dim, factory)
    if n_vectors is not None:
        _check_enough_vectors(factory, n_vectors)


def check_index_target(folder: str | os.PathLike) -> Path:
    """`folder` as a Path, if an index may be saved there (absent, empty, or an index folder)."""
    target = Path(folder)
    if target.exists() and (
        not target.is_dir() or (any(target.iterdir()) and not (target / MANIFEST).exists())
    ):
        raise FileExistsError(f"{target} exists and is not an index folder; refusing to replace it")
    return target


def search_in_batches(
    index, queries: np.ndarray, k: int, *, batch_size: int, show_progress: bool
) -> tuple[np.ndarray, np.ndarray]:
    """`index.search` over float32 `queries` in batches, with a progress bar: `(scores, rows)` of
    shape [n, k]; rows FAISS did not fill are -1 with score -inf."""
    scores = np.empty((len(queries), k), dtype=np.float32)
    labels = np.empty((len(queries), k), dtype=np.int64)
    progress = tqdm(total=len(queries), desc="searching", unit="query", disable=not show_progress)
    try:
        for start in range(0, len(queries), batch_size):
            batch_scores, batch_labels = index.search(queries[start : start + batch_size], k)
            scores[start : start + len(batch_labels)] = batch_scores
            labels[start : start + len(batch_labels)] = batch_labels
            progress.update(len(batch_labels))
    finally:
        progress.close()
    scores[labels < 0] = -np.inf
    return scores, labels


class DenseIndex:
    """Document vectors plus their ids, searchable by inner product. See the module docstring."""

    def __init__(
        self, dim: int, factory: str = "Flat", *, dtype: str = "float16", metadata: dict | None = None
    ):
        if dtype not in ("float16", "float32"):
            raise ValueError(f"dtype must be 'float16' or 'float32', got {dtype!r}")
        _ensure_threads()
        self.dim = int(dim)
        self.factory = factory
        self.dtype = dtype
        self.metadata: dict = dict(metadata or {})
        try:
            self.index = faiss.index_factory(self.dim, factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as error:
            raise ValueError(
                f"FAISS cannot make index {factory!r} for {self.dim}-dim vectors: {_faiss_reason(error)}. "
                "Examples of valid strings: Flat, HNSW32, IVF256,Flat, IVF1024,PQ32 (PQ needs dim % M == 0)."
            ) from None
        self.ids: list[str] = []
        # non-flat indexes cannot give their vectors back exactly: keep a copy for `save`
        self._vectors: list[np.ndarray] = []
        self.search_params = self._default_search_params()

    # ----- construction -----------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        embeddings,
        ids: Sequence[str],
        factory: str = "Flat",
        *,
        metadata: dict | None = None,
        dtype: str = "float16",
        batch_size: int = 65536,
        max_train: int = 1_000_000,
        seed: int = 0,
        show_progress: bool = True,
    ) -> DenseIndex:
        """An index over `embeddings` `[n, dim]` whose rows are the documents `ids`.

        Non-flat factories are first trained on at most `max_train` rows drawn with `seed`.
        """
        embeddings = np.asarray(embeddings)
        if embeddings.ndim != 2:
            raise ValueError(f"embeddings must be a 2-d array [n, dim], got shape {embeddings.shape}")
        index = cls(embeddings.shape[1], factory, dtype=dtype, metadata=metadata)
        if not index.index.is_trained:
            index.train(embeddings, max_train=max_train, seed=seed)
        index.add(embeddings, ids, batch_size=batch_size, show_progress=show_progress)
        return index

    def _round(self, vectors: np.ndarray) -> np.ndarray:
        vectors = _as_float32_rows(vectors, self.dim, "vectors")
        if not np.isfinite(vectors).all():
            raise ValueError("vectors contain NaN or infinite values")
        if self.dtype == "float16":
            largest = float(np.abs(vectors).max(initial=0.0))
            if largest > FP16_MAX:
                raise ValueError(
                    f"a vector component ({largest:.3g}) exceeds the fp16 range ({FP16_MAX:.0f}); "
                    "build the index with dtype='float32'"
                )
            vectors = vectors.astype(np.float16).astype(np.float32)
        return vectors

    def train(self, embeddings, *, max_train: int = 1_000_000, seed: int = 0) -> None:
        """Train a non-flat index (IVF centroids, PQ codebooks) on at most `max_train` of the rows."""
        n = len(embeddings)
        _check_enough_vectors(self.factory, n)
        if n > max_train:
            rows = np.sort(np.random.default_rng(seed).choice(n, size=max_train, replace=False))
            sample = self._round(np.asarray(embeddings)[rows])
        else:
            sample = self._round(embeddings)
        try:
            self.index.train(sample)
        except RuntimeError as error:
            raise ValueError(
                f"cannot train index {self.factory!r} on {len(sample)} vectors: {_faiss_reason(error)}. "
                "Use fewer IVF lists / PQ bits, more vectors, or 'Flat'."
            ) from None

    def add(
        self, embeddings, ids: Sequence[str], *, batch_size: int = 65536, show_progress: bool = True
    ) -> None:
        """Append vectors `[n, dim]` with their document ids, `batch_size` rows at a time."""
        ids = [str(i) for i in ids]
        if len(ids) != len(embeddings):
            raise ValueError(f"{len(embeddings)} vectors but {len(ids)} ids")
        bad = next((i for i in ids if not i or "\n" in i or "\r" in i), None)
        if bad is not None:
            raise ValueError(f"document id {bad!r} is empty or contains a line break")
        if not self.index.is_trained:
            raise ValueError(f"index {self.factory!r} must be trained before vectors are added: call train()")
        _ensure_threads()
        progress = tqdm(
            total=len(ids), desc="indexing", unit="vec", disable=not show_progress or len(ids) == 0
        )
        try:
            for start in range(0, len(ids), batch_size):
                batch = self._round(embeddings[start : start + batch_size])
                self.index.add(batch)
                if not is_flat(self.factory):
                    self._vectors.append(batch.astype(self.dtype))
                progress.update(len(batch))
        finally:
            progress.close()
        self.ids.extend(ids)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    # ----- search -------------------------------------------------------------------------------------
    def _default_search_params(self) -> dict[str, int]:
        params: dict[str, int] = {}
        lists = _ivf_lists(self.factory)
        if lists is not None:
            params["nprobe"] = min(lists, DEFAULT_NPROBE)
        if re.search(r"(^|,)\s*HNSW", self.factory):  # an HNSW index (not an IVF's HNSW quantizer)
            params["efSearch"] = DEFAULT_EF_SEARCH
        return params

    def _apply_search_params(self, k: int) -> None:
        params = dict(self.search_params)
        if "efSearch" in params:  # HNSW returns at most efSearch results
            params["efSearch"] = max(params["efSearch"], k)
        space = faiss.ParameterSpace()
        for name, value in params.items():
            space.set_index_parameter(self.index, name, float(value))

    def search_rows(
        self, query_vectors, k: int, *, batch_size: int = 4096, show_progress: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """The `k` best rows of each query by inner product: `(scores [n, k'], rows [n, k'])`.

        `k' = min(k, len(index))`; an approximate index may find fewer than k' for a query, and then
        the missing rows are -1 with score -inf.
        """
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        queries = _as_float32_rows(query_vectors, self.dim, "query vectors")
        k = min(k, len(self))
        if k == 0:
            return np.zeros((len(queries), 0), dtype=np.float32), np.zeros((len(queries), 0), dtype=np.int64)
        _ensure_threads()
        self._apply_search_params(k)
        return search_in_batches(self.index, queries, k, batch_size=batch_size, show_progress=show_progress)

    def ids_for(self, rows) -> list[str]:
        ids = self.ids
        return [ids[int(r)] for r in np.asarray(rows).ravel()]

    def search(
        self, query_vectors, k: int, *, batch_size: int = 4096, show_progress: bool = True
    ) -> tuple[np.ndarray, list[list[str]]]:
        """The `k` best documents of each query by inner product: `(scores [n, k'], doc_ids)`.

        `k' = min(k, len(index))`. `doc_ids[i]` lists query i's documents best first; an approximate
        index may find fewer than k' for a query, and then `doc_ids[i]` is shorter and the missing
        scores are -inf.
        """
        scores, labels = self.search_rows(
            query_vectors, k, batch_size=batch_size, show_progress=show_progress
        )
        ids = self.ids
        doc_ids = [[ids[j] for j in row if j >= 0] for row in labels.tolist()]
        return scores, doc_ids

    # ----- persistence --------------------------------------------------------------------------------
    def embeddings(self) -> np.ndarray:
        """All vectors `[n, dim]` in the index's storage dtype (fp16 by default)."""
        if is_flat(self.factory):
            out = np.empty((len(self), self.dim), dtype=self.dtype)
            for start in range(0, len(self), 65536):
                rows = min(65536, len(self) - start)
                out[start : start + rows] = self.index.reconstruct_n(start, rows)
            return out
        if not self._vectors:
            return np.empty((0, self.dim), dtype=self.dtype)
        if len(self._vectors) > 1:
            self._vectors = [np.concatenate(self._vectors)]
        return self._vectors[0]

    def save(self, folder: str | os.PathLike, *, shard_rows: int = 1_000_000) -> Path:
        """Write the index folder (see the module docstring); an existing index there is replaced."""
        target = check_index_target(folder)
        with atomic_folder(target, manifest=False) as staging:  # index.json is its manifest
            vectors = self.embeddings()
            records = [
                write_shard(
                    staging, number, self.ids[start : start + shard_rows], vectors[start : start + shard_rows]
                )
                for number, start in enumerate(range(0, len(vectors), shard_rows))
            ]
            faiss_file = None
            if not is_flat(self.factory):
                faiss_file = "index.faiss"
                write_faiss(self.index, staging / faiss_file)
            write_manifest(
                staging,
                records,
                dim=self.dim,
                dtype=self.dtype,
                metadata=self.metadata,
                factory=self.factory,
                faiss_file=faiss_file,
                search_params=self.search_params,
                files={faiss_file: file_entry(staging / faiss_file)} if faiss_file else None,
            )
        return target

    @classmethod
    def load(cls, folder: str | os.PathLike, *, show_progress: bool = False) -> DenseIndex:
        """Read an index folder written by `save` or by `contriever index` (every vector into RAM)."""
        sharded = open_index(folder)
        folder = Path(folder)
        index = cls(sharded.dim, sharded.factory, dtype=sharded.dtype, metadata=sharded.metadata)
        faiss_file = sharded.manifest.get("faiss_file")
        if faiss_file:
            path = folder / faiss_file
            try:
                index.index = faiss.read_index(str(path))
            except RuntimeError as error:
                raise DataError(path, f"cannot read FAISS index: {_faiss_reason(error)}") from None
            if index.index.ntotal != len(sharded) or index.index.d != sharded.dim:
                raise DataError(
                    path,
                    f"holds {index.index.ntotal} x {index.index.d} vectors, "
                    f"index.json says {len(sharded)} x {sharded.dim}",
                )
            index.ids = sharded.ids
            index._vectors = [vectors for _, vectors in sharded.iter_shards()]  # memory-mapped
        else:
            for number, (ids, vectors) in enumerate(sharded.iter_shards()):
                sharded.verify_shard(number)  # every vector is read into RAM anyway: check it first
                index.add(np.asarray(vectors), ids, show_progress=show_progress)
        params = sharded.manifest.get("search_params") or {}
        index.search_params = {k: int(v) for k, v in params.items()}
        return index


def load_for_search(
    folder: str | os.PathLike,
    ann: str | None = None,
    *,
    nprobe: int | None = None,
    ef_search: int | None = None,
    rerank: int | None = None,
):
    """`(index, passage store or None)` for `search`, `evaluate --index`, `evaluate-qa` and `serve`:
    with `ann`, the approximate index `folder/ann/<ann>` (IVF lists memory-mapped from disk;
    `nprobe`/`ef_search` override its recorded search parameters, `rerank` re-scores its top candidates
    exactly from the shards); else a folder with a trained FAISS
    index loads as a `DenseIndex`, and a flat one is searched exactly from its memory-mapped shards
    (`ShardedIndex`). All have `.search`, `.search_rows`, `.ids_for`, `.dim` and `.metadata`."""
    sharded = open_index(folder)
    if ann:
        from contriever.retrieval.ann import AnnIndex

        index = AnnIndex.load(folder, ann, source=sharded)
        index.set_params(nprobe=nprobe, ef_search=ef_search, rerank=rerank)
        return index, sharded.store
    if nprobe or ef_search or rerank:
        raise UsageError("--nprobe, --ef-search and --rerank apply to an approximate index: add --ann NAME")
    if sharded.manifest.get("faiss_file"):
        return DenseIndex.load(folder), sharded.store
    return sharded, sharded.store


def write_faiss(index: faiss.Index, path: Path) -> None:
    """`faiss.write_index` through a checked atomic write: FAISS's own fwrite hides a full disk's
    cause; this raises `contriever.io.DiskFullError` naming the file and leaves the old one."""
    with atomic_write(path, "wb") as handle:
        faiss.write_index(index, faiss.PyCallbackIOWriter(handle.write))


def add_faiss_index(folder: str | os.PathLike, factory: str, **build) -> Path:
    """Train FAISS index `factory` on a finished index folder's vectors, write `index.faiss` and
    record it in the manifest (the shards, ids and passage store stay as they are)."""
    sharded = open_index(folder)
    index = DenseIndex.build(sharded.embeddings(), sharded.ids, factory, dtype=sharded.dtype, **build)
    folder = Path(folder)
    write_faiss(index.index, folder / "index.faiss")
    manifest = dict(sharded.manifest)
    manifest.update(factory=factory, faiss_file="index.faiss", search_params=index.search_params)
    manifest["files"] = {**(manifest.get("files") or {}), "index.faiss": file_entry(folder / "index.faiss")}
    write_json(folder / MANIFEST, manifest)
    return folder
