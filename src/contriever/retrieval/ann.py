"""Compressed and approximate FAISS indexes built from the vector shards of an index folder.

An index folder (`contriever index --output IDX`) holds every passage vector exactly, as fp16 shards.
`build_ann(IDX, "IVF4096,PQ48")` makes an approximate index beside them, in `IDX/ann/<name>/`:

- `ann.json`: the factory string, dim, count, training sample size and seed, build time, search
  defaults, and the shards it was built from, with their checksums (so an ANN of other vectors, a
  stale one or one copied from another index, is refused, never searched);
- `manifest.json`: every file's size and checksum (`contriever.io`), written last;
- `index.faiss`: the FAISS index; for IVF indexes only its header (quantizer, PQ/OPQ tables);
- `lists.ivfdata` (IVF only): the inverted lists, FAISS's `OnDiskInvertedLists` format, which
  search reads memory-mapped: the index answers on a machine with less RAM than the lists, the
  operating system keeping the lists that queries touch in its page cache.

Any `faiss.index_factory` string works, always with inner-product scores: `HNSW32`, `HNSW32,SQ8`,
`IVF4096,Flat`, `IVF4096,PQ48`, `OPQ48,IVF4096,PQ48`, `IVF65536_HNSW32,PQ64`, ...

Building never holds all vectors in memory: the index is trained on a seeded random sample of rows
(`train_size`, read shard by shard), then the shards are added one after another. For IVF indexes
each shard becomes a block of inverted lists written to disk, and the blocks are merged into the one
`lists.ivfdata` file (the recipe of `faiss.contrib.ondisk.merge_ondisk`), so peak memory is one shard
plus the trained header. HNSW has no on-disk lists: it is built in RAM (graph and vectors; hence
`HNSW32,SQ8`, a quarter of the vectors' fp32 size). Equivalences: with `on_disk=False` an IVF index is built the
ordinary in-memory way; both return identical results (tested). Loaded with `mmap=True` (the default),
flat code storage is memory-mapped as well (`IO_FLAG_MMAP_IFC`: HNSW's vectors, SQ and PQ codes), so
only HNSW's graph links are read into RAM.

Re-ranking: a compressed index (PQ, SQ) scores with approximate vectors, so its top 10 is not the
exact top 10. `AnnIndex.set_params(rerank=100)` takes the index's top 100 candidates of a query (k,
if more are asked for) and re-scores them exactly with their fp16 vectors, read by row from the
folder's memory-mapped shards: FAISS's `IndexRefineFlat` with the refining vectors on disk, where the
folder already has them, instead of a second copy in RAM. It reads that many vectors a query (768
bytes each at dim 384).

Vectors come from any object with `dim`, `len()`, `iter_shards()` yielding `(ids, fp16 [rows, dim])`
in row order, `ids_for(rows)`, `vectors_for(rows)` and the folder's `manifest` and `metadata`
(`ShardSource`: the shape of `contriever.retrieval.shards.open_index(folder)`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import faiss
import numpy as np
from tqdm.auto import tqdm

from contriever.errors import DataError, UsageError
from contriever.io import atomic_folder, verify_manifest, write_json
from contriever.retrieval.exact import exact_scores, merge_top_k
from contriever.retrieval.faiss_calls import (
    _as_float32_rows,
    _ensure_threads,
    _faiss_reason,
    search_in_batches,
)

ANN_DIR = "ann"
ANN_MANIFEST = "ann.json"
INDEX_FILE = "index.faiss"
LISTS_FILE = "lists.ivfdata"
FORMAT_VERSION = 1
DEFAULT_NPROBE = 32
DEFAULT_EF_SEARCH = 128


class ShardSource(Protocol):
    """The vectors of an index folder, one shard at a time (see the module docstring); the reader of
    `contriever.retrieval.shards` has this shape."""

    dim: int
    manifest: dict
    metadata: dict

    def __len__(self) -> int: ...

    def iter_shards(self) -> Iterator[tuple[Sequence[str], np.ndarray]]: ...

    def ids_for(self, rows) -> list[str]: ...

    def vectors_for(self, rows) -> np.ndarray: ...


def open_shards(folder: str | os.PathLike) -> ShardSource:
    """The vector shards of the index folder `folder` (`contriever.retrieval.shards.open_index`)."""
    from contriever.retrieval.shards import open_index

    return open_index(folder)


SHARD_LAYOUT_KEYS = ("rows", "ids", "ids_bytes", "vectors", "vectors_bytes")


def source_fingerprint(source: ShardSource) -> dict:
    """What an ANN index must match to be searched with a folder's ids: count, dim, the shards as
    the folder's manifest lists them (file names, and rows and sizes where recorded), and the
    checksums of their ids and vectors (`shard_checksums`, when the folder records them)."""
    entries = source.manifest.get("shards") or []
    layout = [
        {k: e[k] for k in SHARD_LAYOUT_KEYS if k in e} if isinstance(e, dict) else e for e in entries
    ]  # what older versions hashed: ANNs built by them still match their folder
    shards = json.dumps(layout, sort_keys=True).encode()
    fingerprint = {
        "count": len(source),
        "dim": source.dim,
        "shards_sha256": hashlib.sha256(shards).hexdigest()[:16],
    }
    if entries and all(isinstance(e, dict) and "vectors_checksum" in e for e in entries):
        fingerprint["shard_checksums"] = [[e.get("ids_checksum"), e["vectors_checksum"]] for e in entries]
    return fingerprint


def source_mismatch(recorded, current: dict) -> str | None:
    """Why an ANN's recorded source does not match the folder's shards now (None: it matches). An
    ANN built before checksums is matched on count, dim and shard layout, as then."""
    if not isinstance(recorded, dict):
        return "it records no source"
    for key in ("count", "dim", "shards_sha256"):
        if recorded.get(key) != current.get(key):
            return f"{key}: {recorded.get(key)!r} when built, {current.get(key)!r} now"
    if "shard_checksums" in recorded and recorded["shard_checksums"] != current.get("shard_checksums"):
        return "the shards' checksums differ: it was built from other vectors (another index, or these shards before they changed)"
    return None


def check_ann_name(name: str) -> str:
    """`name` if it can name a folder under IDX/ann/ (one path component, not `.` or `..`)."""
    if (
        not name
        or name in (".", "..")
        or "/" in name
        or "\\" in name
        or "\0" in name
        or name.startswith(".")
        or name != name.strip()
    ):
        raise UsageError(
            f"--name {name!r}: an ANN name is a folder name under IDX/{ANN_DIR}/, without path separators, "
            "'..', a leading dot or spaces around it"
        )
    return name


@contextmanager
def _quiet_stdout() -> Iterator[None]:
    """Silence FAISS's C-level printf messages ("resizing ...", "IO_FLAG_ONDISK_SAME_DIR: updating
    ...") which would otherwise land in `contriever search --json` output."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


# ----- names and factories -----------------------------------------------------------------------------
def ann_name(factory: str) -> str:
    """A folder name for a factory string: `"OPQ48,IVF4096,PQ48"` -> `"OPQ48_IVF4096_PQ48"`."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", factory.strip()).strip("_") or "ann"


def ivf_lists(factory: str) -> int | None:
    match = re.search(r"IVF(\d+)", factory)
    return int(match.group(1)) if match else None


def is_hnsw(factory: str) -> bool:
    """An HNSW index (`HNSW32`, `HNSW32,SQ8`), not an IVF whose coarse quantizer is HNSW."""
    return re.match(r"\s*(\w+\s*,\s*)?HNSW", factory) is not None and ivf_lists(factory) is None


def default_search_params(factory: str) -> dict[str, int]:
    params: dict[str, int] = {}
    lists = ivf_lists(factory)
    if lists is not None:
        params["nprobe"] = min(lists, DEFAULT_NPROBE)
    if is_hnsw(factory):
        params["efSearch"] = DEFAULT_EF_SEARCH
    return params


def make_faiss_index(factory: str, dim: int) -> faiss.Index:
    """An empty index for `factory`, inner-product metric. IVF-PQ's polysemous training (codebooks
    ordered for Hamming pre-filtering, which search does not use here) is switched off: on this
    machine it took 99% of the training time of a small IVF-PQ."""
    try:
        index = faiss.index_factory(int(dim), factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as error:
        raise ValueError(
            f"FAISS cannot make index {factory!r} for {dim}-dim vectors: {_faiss_reason(error)}. "
            "Examples: HNSW32, IVF4096,Flat, IVF4096,PQ48, OPQ48,IVF4096,PQ48 (PQ needs dim % M == 0)."
        ) from None
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None and isinstance(faiss.downcast_index(ivf), faiss.IndexIVFPQ):
        faiss.downcast_index(ivf).do_polysemous_training = False
    return index


def check_factory(dim: int, factory: str, n_vectors: int | None = None) -> None:
    """Raise the ValueError that building `factory` over `n_vectors` vectors of size `dim` would
    raise, before a corpus is encoded for it (an invalid string otherwise fails only at the end)."""
    make_faiss_index(factory, dim)
    if n_vectors is not None:
        _check_trainable(factory, n_vectors, n_vectors)


def is_flat(factory: str) -> bool:
    """Exact search: the shards themselves, no ANN to build."""
    return factory.replace(" ", "") == "Flat"


def default_train_size(factory: str, count: int) -> int:
    """Rows to train on: 64 per IVF list (FAISS warns under 39), at least 50,000 (PQ codebooks want
    ~10,000 rows per 256 centroids), at most 2,000,000 (6 GiB of fp32 at 768 dims), never more than
    the corpus."""
    lists = ivf_lists(factory) or 0
    return min(count, max(50_000, min(2_000_000, 64 * lists)))


# ----- building ----------------------------------------------------------------------------------------
def sample_rows(source: ShardSource, size: int, seed: int) -> np.ndarray:
    """`size` rows of `source` drawn without replacement with `seed`, as fp32, read shard by shard."""
    count = len(source)
    rows = np.sort(np.random.default_rng(seed).choice(count, size=min(size, count), replace=False))
    out = np.empty((len(rows), source.dim), dtype=np.float32)
    start = filled = 0
    for _, shard in source.iter_shards():
        stop = start + len(shard)
        take = rows[(rows >= start) & (rows < stop)] - start
        out[filled : filled + len(take)] = shard[take]
        filled += len(take)
        start = stop
    return out


def _check_trainable(factory: str, count: int, sample: int) -> None:
    lists = ivf_lists(factory)
    if lists is not None and min(count, sample) < lists:
        raise ValueError(
            f"index {factory!r} has {lists} IVF lists but only {min(count, sample)} vectors to train on: "
            f"use at most IVF{max(1, min(count, sample) // 39)} (FAISS wants ~39 vectors per list)"
        )


def build_ann(
    folder: str | os.PathLike,
    factory: str,
    *,
    name: str | None = None,
    source: ShardSource | None = None,
    train_size: int | None = None,
    seed: int = 0,
    on_disk: bool = True,
    show_progress: bool = True,
) -> Path:
    """Build the approximate index `factory` from the shards of `folder` into `folder/ann/<name>/`.

    Trained on `train_size` rows drawn with `seed` (default: `default_train_size`); IVF indexes keep
    their inverted lists in `lists.ivfdata` unless `on_disk=False`. Returns the ANN folder; an
    existing one of the same name is replaced only once the new one is complete.
    """
    if name is not None:
        check_ann_name(name)  # before anything is read or written
    source = source if source is not None else open_shards(folder)
    verify = getattr(source, "verify_shard", None)
    for number in range(getattr(source, "num_shards", 0) if verify else 0):
        verify(number)  # what the ANN records as its source is what it is built from
    started = time.perf_counter()
    _ensure_threads()
    index = make_faiss_index(factory, source.dim)
    count = len(source)
    train_size = int(train_size or default_train_size(factory, count))
    trained_on = 0
    if not index.is_trained:
        _check_trainable(factory, count, train_size)
        sample = sample_rows(source, train_size, seed)
        trained_on = len(sample)
        try:
            index.train(sample)
        except RuntimeError as error:
            raise ValueError(
                f"cannot train index {factory!r} on {len(sample)} vectors: {_faiss_reason(error)}"
            ) from None
        del sample
    train_s = time.perf_counter() - started
    target = Path(folder) / ANN_DIR / (name or ann_name(factory))
    ivf = faiss.try_extract_index_ivf(index)
    lists_on_disk = on_disk and ivf is not None
    progress = tqdm(total=count, desc=f"adding to {factory}", unit="vec", disable=not show_progress)
    with atomic_folder(target) as staging:
        try:
            if lists_on_disk:
                _add_on_disk(index, source, staging, progress)
            else:
                for _, shard in source.iter_shards():
                    index.add(np.ascontiguousarray(shard, dtype=np.float32))
                    progress.update(len(shard))
        finally:
            progress.close()
        faiss.write_index(index, str(staging / INDEX_FILE))
        write_json(
            staging / ANN_MANIFEST,
            {
                "format_version": FORMAT_VERSION,
                "name": target.name,
                "factory": factory,
                "metric": "inner_product",
                "dim": source.dim,
                "count": count,
                "index_file": INDEX_FILE,
                "lists_file": LISTS_FILE if lists_on_disk else None,
                "train_rows": trained_on,
                "seed": seed,
                "train_s": round(train_s, 3),
                "build_s": round(time.perf_counter() - started, 3),
                "search_params": default_search_params(factory),
                "source": source_fingerprint(source),
            },
        )
    return target


def _add_on_disk(index: faiss.Index, source: ShardSource, staging: Path, progress) -> None:
    """Add every shard as its own block of inverted lists, then merge the blocks into one
    `OnDiskInvertedLists` file in `staging` (as `faiss.contrib.ondisk.merge_ondisk`, which would
    keep the blocks mapped until exit); `index` (trained, empty) ends up pointing at it."""
    blocks_dir = staging / "blocks"
    blocks_dir.mkdir()
    blocks, start = [], 0
    for number, (_, shard) in enumerate(source.iter_shards()):
        block = faiss.clone_index(index)
        block.add_with_ids(
            np.ascontiguousarray(shard, dtype=np.float32),
            np.arange(start, start + len(shard), dtype=np.int64),
        )
        path = blocks_dir / f"block-{number:05d}.index"
        faiss.write_index(block, str(path))
        blocks.append(path)
        start += len(shard)
        del block
        progress.update(len(shard))
    opened = [faiss.read_index(str(path), faiss.IO_FLAG_MMAP) for path in blocks]
    ivf = faiss.extract_index_ivf(index)
    lists = faiss.OnDiskInvertedLists(ivf.nlist, ivf.code_size, str(staging / LISTS_FILE))
    pointers = faiss.InvertedListsPtrVector()
    for block in opened:
        pointers.push_back(faiss.extract_index_ivf(block).invlists)
    with _quiet_stdout():
        total = lists.merge_from_multiple(pointers.data(), pointers.size(), False)
    ivf.replace_invlists(lists, True)
    lists.this.disown()  # owned by the index from now on
    index.ntotal = ivf.ntotal = total
    del pointers, opened  # unmaps the blocks before their files are removed
    if total != start:
        raise RuntimeError(f"merged {total} vectors into {LISTS_FILE}, expected {start}")
    shutil.rmtree(blocks_dir)


# ----- loading and searching ---------------------------------------------------------------------------
def list_ann(folder: str | os.PathLike) -> list[str]:
    """The names of the ANN indexes built in the index folder `folder`."""
    root = Path(folder) / ANN_DIR
    return sorted(p.parent.name for p in root.glob(f"*/{ANN_MANIFEST}")) if root.is_dir() else []


class AnnIndex:
    """An approximate index of an index folder, searched as the folder is (`search`, `search_rows`,
    `ids_for`; rows numbered across the folder's shards)."""

    def __init__(self, index: faiss.Index, info: dict, source: ShardSource, path: Path):
        self.index, self.info, self.source, self.path = index, info, source, path
        self.metadata = source.metadata
        self.dim = int(info["dim"])
        self.factory = str(info["factory"])
        self.search_params = {k: int(v) for k, v in (info.get("search_params") or {}).items()}
        self.rerank: int | None = None  # candidates re-scored exactly from the shards (None: none)

    @classmethod
    def load(
        cls,
        folder: str | os.PathLike,
        name: str,
        *,
        source: ShardSource | None = None,
        mmap: bool = True,
    ) -> AnnIndex:
        """Open `folder/ann/<name>`; IVF lists are memory-mapped from disk (`mmap=False` reads an
        on-disk index's lists into RAM)."""
        folder = Path(folder)
        check_ann_name(name)
        path = folder / ANN_DIR / name
        manifest = path / ANN_MANIFEST
        if not manifest.is_file():
            built = list_ann(folder)
            hint = f"built: {', '.join(built)}" if built else "none is built"
            raise DataError(
                path,
                f"no ANN index named {name!r} in {folder} ({hint}); "
                f"build it with `contriever ann-build --index {folder} --factory FACTORY --name {name}`",
            )
        try:
            info = json.loads(manifest.read_text())
            int(info["dim"]), int(info["count"]), str(info["factory"]), info["index_file"]
        except json.JSONDecodeError as error:
            raise DataError(manifest, f"not valid JSON ({error.msg})", error.lineno) from None
        except (KeyError, TypeError, ValueError) as error:
            raise DataError(manifest, f"missing or bad field: {error}") from None
        source = source if source is not None else open_shards(folder)
        mismatch = source_mismatch(info.get("source"), source_fingerprint(source))
        if mismatch is not None:
            raise DataError(
                manifest,
                f"built from other vectors than this index folder's shards ({mismatch}); rebuild it with "
                f"`contriever ann-build --index {folder} --factory {info['factory']!r} --name {name}`",
            )
        verify_manifest(path, required=False)  # sizes; contents too when the folder is small
        for key in ("index_file", "lists_file"):
            if info.get(key) and not (path / info[key]).is_file():
                raise DataError(
                    path / info[key], f"missing: the ANN index {name!r} is incomplete; rebuild it"
                )
        # the lists file is found beside index.faiss wherever the folder now is; with `mmap`, flat
        # code storage (HNSW's vectors, SQ/PQ codes) is memory-mapped (FAISS allows one or the other)
        if info.get("lists_file"):
            flags = faiss.IO_FLAG_ONDISK_SAME_DIR
        else:
            flags = faiss.IO_FLAG_MMAP_IFC if mmap else 0
        try:
            with _quiet_stdout():
                index = faiss.read_index(str(path / info["index_file"]), flags)
        except RuntimeError as error:
            raise DataError(
                path / info["index_file"], f"cannot read FAISS index: {_faiss_reason(error)}"
            ) from None
        if index.ntotal != int(info["count"]) or index.d != int(info["dim"]):
            raise DataError(
                path / info["index_file"],
                f"holds {index.ntotal} x {index.d} vectors, {ANN_MANIFEST} says {info['count']} x {info['dim']}",
            )
        if info.get("lists_file") and not mmap:
            _lists_to_memory(index)
        return cls(index, info, source, path)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def set_params(
        self, *, nprobe: int | None = None, ef_search: int | None = None, rerank: int | None = None
    ) -> None:
        """IVF lists searched per query (`nprobe`), HNSW candidate list size (`ef_search`), and
        candidates re-scored exactly from the folder's shards (`rerank`, see the module docstring)."""
        if rerank is not None:
            if rerank < 1:
                raise ValueError(f"rerank must be at least 1, got {rerank}")
            self.rerank = int(rerank)
        for key, value in (("nprobe", nprobe), ("efSearch", ef_search)):
            if value is None:
                continue
            if value < 1:
                raise ValueError(f"{key} must be at least 1, got {value}")
            if key not in default_search_params(self.factory):
                kind = "IVF" if key == "nprobe" else "HNSW"
                raise ValueError(f"{key} applies to {kind} indexes; {self.factory!r} is not one")
            self.search_params[key] = int(value)

    def search(
        self, query_vectors, k: int, *, batch_size: int = 4096, show_progress: bool = True, progress=None
    ) -> tuple[np.ndarray, list[list[str]]]:
        """`(scores [n, k'], doc_ids)`, best first; where fewer than k' were found, `doc_ids[i]` is
        shorter and the missing scores are -inf. `progress(fraction)`, when given, is called after
        each batch of queries with its share of them (as `ShardedIndex.search` does per chunk)."""
        scores, rows = self.search_rows(
            query_vectors, k, batch_size=batch_size, show_progress=show_progress, progress=progress
        )
        flat = self.ids_for(rows[rows >= 0])
        doc_ids, position = [], 0
        for found in (rows >= 0).sum(axis=1).tolist():
            doc_ids.append(flat[position : position + found])
            position += found
        return scores, doc_ids

    def ids_for(self, rows) -> list[str]:
        """The ids of rows (numbered across the folder's shards, as `search_rows` returns them)."""
        return self.source.ids_for(rows)

    def search_rows(
        self,
        queries: np.ndarray,
        k: int,
        *,
        batch_size: int = 4096,
        show_progress: bool = False,
        progress=None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scores and row numbers `[n, k']` (-1 where fewer than k' were found)."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        queries = _as_float32_rows(queries, self.dim, "query vectors")
        _ensure_threads()
        k = min(k, len(self))
        depth = min(max(k, self.rerank or 0), len(self))
        space = faiss.ParameterSpace()
        for key, value in self.search_params.items():
            value = max(value, depth) if key == "efSearch" else value  # HNSW returns at most efSearch
            space.set_index_parameter(self.index, key, float(value))
        scores, rows = search_in_batches(
            self.index, queries, depth, batch_size=batch_size, show_progress=show_progress, progress=progress
        )
        if self.rerank:
            scores, rows = rescore_exactly(self.source, queries, rows, k)
        return scores, rows

    def sizes(self) -> dict[str, int]:
        """Bytes on disk: `header` (read into RAM when loaded) and `lists` (memory-mapped, if any)."""
        lists = self.info.get("lists_file")
        return {
            "header": (self.path / self.info["index_file"]).stat().st_size,
            "lists": (self.path / lists).stat().st_size if lists else 0,
        }


RESCORE_BYTES = 64 << 20  # fp32 candidate vectors gathered at once while re-scoring


def rescore_exactly(
    source: ShardSource, queries: np.ndarray, rows: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Re-score candidate `rows [n, c]` (-1: none) of float32 `queries [n, dim]` by inner product with
    their vectors in `source`, exactly as exact search scores them (`contriever.retrieval.exact`);
    return the best `k` of each row as `(scores, rows)`, ties by lower row first."""
    k = min(k, rows.shape[1])
    best_scores = np.full((len(rows), k), -np.inf, dtype=np.float32)
    best_rows = np.full((len(rows), k), -1, dtype=np.int64)
    batch = max(1, RESCORE_BYTES // (4 * source.dim * max(1, rows.shape[1])))
    for start in range(0, len(rows), batch):
        block = rows[start : start + batch]
        found = block >= 0
        owner = np.nonzero(found)[0] + start
        exact = np.full(block.shape, -np.inf, dtype=np.float32)
        exact[found] = exact_scores(source.vectors_for(block[found]), queries, owner)
        merge_top_k(
            best_scores[start : start + len(block)], best_rows[start : start + len(block)], exact, block
        )
    return best_scores, best_rows


def temporary_ann(source: ShardSource, factory: str, *, show_progress: bool = True) -> AnnIndex:
    """The ANN `factory` built over `source`'s shards into a temporary folder, removed when the
    returned index is dropped: what a non-flat `index_factory` searches for a corpus encoded on the
    fly (the source folder, perhaps the encode cache, is left as it is)."""
    import tempfile
    import weakref

    folder = Path(tempfile.mkdtemp(prefix="contriever-ann-"))
    try:
        build_ann(folder, factory, name="ann", source=source, show_progress=show_progress)
        ann = AnnIndex.load(folder, "ann", source=source)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    weakref.finalize(ann, shutil.rmtree, folder, ignore_errors=True)
    return ann


def _lists_to_memory(index: faiss.Index) -> None:
    """Replace an IVF index's on-disk lists by an in-RAM copy."""
    ivf = faiss.extract_index_ivf(index)
    on_disk = ivf.invlists
    in_memory = faiss.ArrayInvertedLists(ivf.nlist, ivf.code_size)
    for number in range(ivf.nlist):
        size = on_disk.list_size(number)
        if size:
            in_memory.add_entries(number, size, on_disk.get_ids(number), on_disk.get_codes(number))
    ivf.replace_invlists(in_memory, True)
    in_memory.this.disown()
