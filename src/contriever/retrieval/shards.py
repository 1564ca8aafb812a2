"""The index folder: fp16 vector shards written one by one, a manifest written last, exact search
over memory-mapped shards.

An index folder (format version 2) holds:

| file | what it is |
|---|---|
| `embeddings-NNNNN.npy` | shard NNNNN's vectors, `[rows, dim]`, fp16 (fp32 when built so), a plain `.npy` |
| `ids-NNNNN.txt` | shard NNNNN's passage ids, one a line, in row order |
| `shard-NNNNN.json` | shard NNNNN's record: rows, dim, dtype, file names, byte sizes and checksums; written after both files |
| `index.json` | the manifest, written last: format version, dim, count, dtype, the shards in order (names, rows, byte sizes, checksums), the other files' sizes and checksums (`files`: the passage store, `index.faiss`), the settings that made the vectors (`metadata`: model, pooling, normalization, max length, passage settings, input fingerprint) |
| `encoding.json` | (streamed encoding only) the plan written before the first shard: settings, passage count, shard size |
| `passages.sqlite` | (optional) the passage store: id, document id, title and text by row (`contriever.retrieval.store`) |
| `ann/<name>/` | (optional) approximate indexes built from the shards (`contriever.retrieval.ann`) |

Folders that older versions built with an `--index-factory` other than Flat also hold `index.faiss`
(recorded as `faiss_file`), a FAISS index searched in RAM: it is no longer read. Their recorded
`factory` names the ANN that `load_for_search` looks for, `ann/<ann_name(factory)>`; until it is
built (`contriever ann-build`), searching them is a DataError saying so.

Every file is written to a temporary name beside it, flushed, fsynced and renamed into place, its
size checked; a shard counts only once its record exists and the sizes on disk match it, so a kill
or a full disk leaves a shard absent, never half-written. The folder is an index only once
`index.json` exists; `open_index` checks every file's size against it.

Contents: each file's XXH3-128 checksum (`contriever.io`) is computed from its bytes as they are
written and recorded in the shard record and `index.json`. Verified always where it costs next to
nothing against the work at hand: an ids file whenever it is read (its bytes are hashed as they are
parsed), each shard's vectors the first time exact search scans them (the scan reads every byte
anyway), the passage store's header on open, and every file of a folder whose files total at most
`contriever.io.CHEAP_BYTES`. `verify_folder` (`contriever verify IDX`) checks everything. Folders
written before checksums have none: they load with their sizes checked, as before.

Rows are numbered across shards in order: row `r` of the index is row `r - offset[s]` of shard `s`.
Format version 1 folders (one `ids.txt` for all shards, no records) are still read.

`write_index(folder, ids, vectors)` writes a whole folder from vectors in memory (the one writer
besides streamed encoding, `contriever.retrieval.encode`, which uses the same `write_shard` and
`write_manifest`). `open_index(folder)` gives a `ShardedIndex`: `.dim`, `len()`, `.iter_shards()` yielding `(ids, fp16
memmap)`, `.ids_for(rows)`, `.search(queries, k)` (exact inner product, shard by shard, the top k
merged: the same results as one flat FAISS index over all rows) and `.passages(rows)` when the folder
has a passage store. Memory: one chunk of one shard (`chunk_rows x dim` fp32) plus the running top k.
"""

from __future__ import annotations

import errno
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from contriever.errors import DataError
from contriever.io import CHEAP_BYTES, atomic_write, checksum_bytes, content_problem, written_checksum

FORMAT_VERSION = 2
MANIFEST = "index.json"
PLAN = "encoding.json"
STORE = "passages.sqlite"
FP16_MAX = float(np.finfo(np.float16).max)
FP32_KEEP_ENV = "CONTRIEVER_SEARCH_KEEP_MIB"
SEARCH_PRECISION_ENV = "CONTRIEVER_SEARCH_PRECISION"
FP32_KEEP_MIB = 1024  # an index whose fp32 vectors fit keeps them between searches (0: never)


def fp32_keep_bytes() -> int:
    """How large an index's fp32 vectors may be and still be kept between searches: $CONTRIEVER_SEARCH_KEEP_MIB
    (MiB), else `FP32_KEEP_MIB`. Larger indexes are converted chunk by chunk at every search call."""
    value = os.environ.get(FP32_KEEP_ENV, "").strip()
    return int(float(value) * 2**20) if value.replace(".", "", 1).isdigit() else FP32_KEEP_MIB * 2**20


def search_precision(precision: str = "auto") -> str:
    """The candidate pass's precision: "auto" is bf16 where the CPU multiplies bf16 natively
    (`contriever.model.precision`), else fp32; $CONTRIEVER_SEARCH_PRECISION overrides "auto"."""
    if precision == "auto":
        precision = os.environ.get(SEARCH_PRECISION_ENV, "").strip() or "auto"
    if precision != "auto":
        return precision
    import torch

    from contriever.model.precision import bf16_supported

    return "bf16" if bf16_supported(torch.device("cpu")) else "fp32"


PASS_SHARE = 0.8  # of a search's progress: the pass over the chunks; the re-scoring after it the rest
# (~80% of the time where the pass suits the data; where scores crowd, re-scoring took more)


def _reporting(chunks: Iterator[tuple[int, object, float]], total: float, progress) -> Iterator:
    """`chunks` as they are, with `progress(share of total)` called once each has been searched
    (the generator resumes when the search asks for the next one)."""
    for entry in chunks:
        yield entry
        progress(len(entry[1]) / total)


def vectors_name(number: int) -> str:
    return f"embeddings-{number:05d}.npy"


def ids_name(number: int) -> str:
    return f"ids-{number:05d}.txt"


def record_name(number: int) -> str:
    return f"shard-{number:05d}.json"


# ----- writing ----------------------------------------------------------------------------------------
def _checked_size(path: Path, expected: int) -> int:
    size = path.stat().st_size
    if size != expected:
        raise OSError(errno.EIO, f"{path}: wrote {size} bytes, expected {expected}")
    return size


def _write_checked(path: Path, data: bytes) -> int:
    return _write_summed(path, data)[0]


def _write_summed(path: Path, data: bytes) -> tuple[int, str]:
    """Write `data` atomically; `(size checked on disk, checksum of the bytes as written)`."""
    with atomic_write(path, "wb") as handle:
        handle.write(data)
    return _checked_size(path, len(data)), handle.checksum()


def file_entry(path: str | os.PathLike) -> dict:
    """`{"bytes", "checksum"}` of a finished file (the checksum from its writer when it was written
    by `atomic_write`, else read once)."""
    return {"bytes": os.stat(path).st_size, "checksum": written_checksum(path)}


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def check_ids(ids: Sequence[str]) -> list[str]:
    ids = [str(i) for i in ids]
    bad = next((i for i in ids if not i or "\n" in i or "\r" in i), None)
    if bad is not None:
        raise ValueError(f"id {bad!r} is empty or contains a line break")
    return ids


def write_shard(folder: str | os.PathLike, number: int, ids: Sequence[str], vectors: np.ndarray) -> dict:
    """Write shard `number` (its ids, its vectors, then its record) into `folder`; return the record.

    `vectors` are stored in their dtype (fp16 or fp32). Each file is written atomically and its
    size checked; the record comes last, so a shard without one is incomplete and is rewritten.
    """
    folder = Path(folder)
    ids = check_ids(ids)
    vectors = np.asarray(vectors)
    if vectors.ndim != 2 or len(vectors) != len(ids):
        raise ValueError(f"shard {number}: {len(ids)} ids but vectors of shape {vectors.shape}")
    if vectors.dtype not in (np.float16, np.float32):
        raise ValueError(f"shard {number}: vectors must be float16 or float32, got {vectors.dtype}")
    id_bytes = "".join(f"{i}\n" for i in ids).encode("utf-8")
    ids_bytes, ids_checksum = _write_summed(folder / ids_name(number), id_bytes)
    vectors_bytes, vectors_checksum = _write_summed(folder / vectors_name(number), _npy_bytes(vectors))
    record = {
        "number": number,
        "rows": len(ids),
        "dim": int(vectors.shape[1]),
        "dtype": str(vectors.dtype),
        "ids": ids_name(number),
        "ids_bytes": ids_bytes,
        "ids_checksum": ids_checksum,
        "vectors": vectors_name(number),
        "vectors_bytes": vectors_bytes,
        "vectors_checksum": vectors_checksum,
    }
    _write_checked(folder / record_name(number), (json.dumps(record, indent=1) + "\n").encode())
    return record


def read_shard_record(folder: str | os.PathLike, number: int, *, checksums: bool = False) -> dict | None:
    """Shard `number`'s record when the shard is complete (files present with the recorded sizes,
    and with `checksums`, the recorded contents: see `shard_problems`)."""
    folder = Path(folder)
    try:
        record = json.loads((folder / record_name(number)).read_text())
        for name, size in (
            (record["ids"], record["ids_bytes"]),
            (record["vectors"], record["vectors_bytes"]),
        ):
            if (folder / name).stat().st_size != size:
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if checksums and any(True for _ in shard_problems(folder, record)):
        return None
    return record


SHARD_KEYS = ("rows", "ids", "ids_bytes", "vectors", "vectors_bytes")
CHECKSUM_KEYS = ("ids_checksum", "vectors_checksum")


def shard_problems(folder: str | os.PathLike, entry: dict, progress=None, where: str = MANIFEST):
    """DataErrors for the files of a shard `entry` (a record, or an index.json shard entry) whose
    contents differ from its recorded checksums (none recorded: nothing to check)."""
    folder = Path(folder)
    for name_key, checksum_key in (("ids", "ids_checksum"), ("vectors", "vectors_checksum")):
        if entry.get(name_key) and entry.get(checksum_key) is not None:
            path = folder / entry[name_key]
            if not path.is_file():
                yield DataError(path, f"missing ({where} lists it)")
                continue
            yield from content_problem(path, entry[checksum_key], where, progress)


def write_manifest(
    folder: str | os.PathLike,
    shards: Sequence[dict],
    *,
    dim: int,
    dtype: str = "float16",
    metadata: dict | None = None,
    factory: str = "Flat",
    extra: dict | None = None,
    files: dict | None = None,
) -> dict:
    """Write `index.json` (atomically, last): the folder is an index from this moment on. `files`:
    `{name: file_entry(...)}` of the folder's other files (the passage store). `factory` other than
    Flat names the ANN (`ann/<ann_name(factory)>`) searched by default (`load_for_search`)."""
    shards = [
        {key: record[key] for key in (*SHARD_KEYS, *CHECKSUM_KEYS) if key in record} for record in shards
    ]
    manifest = {
        "format_version": FORMAT_VERSION,
        "dim": int(dim),
        "count": sum(record["rows"] for record in shards),
        "dtype": dtype,
        "metric": "inner_product",
        "factory": factory,
        "shards": shards,
        "metadata": dict(metadata or {}),
        **(extra or {}),
    }
    if files:
        manifest["files"] = dict(files)
    data = (json.dumps(manifest, indent=1) + "\n").encode("utf-8")
    _write_checked(Path(folder) / MANIFEST, data)
    return manifest


def to_fp16(vectors) -> np.ndarray:
    """`vectors` as fp16, refused when a component is not finite or beyond fp16's range (rounding
    would make it infinite: a damaged ranking, not an error, later)."""
    vectors = np.asarray(vectors)
    if not np.isfinite(vectors).all():
        raise ValueError("vectors contain NaN or infinite values")
    largest = float(np.abs(vectors).max(initial=0.0))
    if largest > FP16_MAX:
        raise ValueError(
            f"a vector component ({largest:.3g}) exceeds the fp16 range ({FP16_MAX:.0f}); "
            "store the vectors with dtype='float32'"
        )
    return vectors.astype(np.float16)


def check_index_target(folder: str | os.PathLike) -> Path:
    """`folder` as a Path, if an index may be written there (absent, empty, or an index folder)."""
    target = Path(folder)
    if target.exists() and (
        not target.is_dir() or (any(target.iterdir()) and not (target / MANIFEST).exists())
    ):
        raise FileExistsError(f"{target} exists and is not an index folder; refusing to replace it")
    return target


def write_index(
    folder: str | os.PathLike,
    ids: Sequence[str],
    vectors,
    *,
    metadata: dict | None = None,
    dtype: str = "float16",
    shard_rows: int = 1_000_000,
) -> Path:
    """Write vectors `[n, dim]` held in memory, rows named by `ids`, as the index folder `folder`:
    shards of `shard_rows` rows stored as `dtype` (fp16 by default, rounded by `to_fp16`), then
    `index.json`. The folder is staged beside `folder` and renamed into place when complete; an
    index already there is replaced, any other content refused."""
    from contriever.io import atomic_folder

    if dtype not in ("float16", "float32"):
        raise ValueError(f"dtype must be 'float16' or 'float32', got {dtype!r}")
    vectors = np.asarray(vectors)
    if vectors.ndim != 2:
        raise ValueError(f"vectors must be a 2-d array [n, dim], got shape {vectors.shape}")
    if len(vectors) != len(ids):
        raise ValueError(f"{len(vectors)} vectors but {len(ids)} ids")
    ids = check_ids(ids)
    stored = to_fp16(vectors) if dtype == "float16" else vectors.astype(np.float32)
    target = check_index_target(folder)
    with atomic_folder(target, manifest=False) as staging:  # index.json is its manifest
        records = [
            write_shard(staging, number, ids[start : start + shard_rows], stored[start : start + shard_rows])
            for number, start in enumerate(range(0, len(ids), shard_rows))
        ]
        write_manifest(staging, records, dim=vectors.shape[1], dtype=dtype, metadata=metadata)
    return target


def record_factory(folder: str | os.PathLike, factory: str) -> None:
    """Record in a finished folder's `index.json` that it is searched through the ANN of `factory`
    by default (`contriever index --index-factory`; see `write_manifest`)."""
    folder = Path(folder)
    manifest = {**_read_manifest(folder), "factory": factory}
    _write_checked(folder / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode("utf-8"))


# ----- reading ----------------------------------------------------------------------------------------
def _read_manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    if not path.is_file():
        if not folder.exists():
            raise DataError(folder, "not an index folder (no such folder); build one with `contriever index`")
        if (folder / PLAN).is_file():
            done = len(list(folder.glob("shard-*.json")))
            try:
                planned = json.loads((folder / PLAN).read_text()).get("shards", "?")
            except ValueError:
                planned = "?"
            raise DataError(
                folder,
                f"incomplete index: {done} of {planned} shards encoded and no index.json yet; run the same "
                "`contriever index` command again to encode the missing shards and finish it",
            )
        raise DataError(
            folder, "not an index folder (no index.json in it); build one with `contriever index`"
        )
    try:
        manifest = json.loads(path.read_text())
        int(manifest["dim"]), int(manifest["count"])
    except json.JSONDecodeError as error:
        raise DataError(path, f"not valid JSON ({error.msg})", error.lineno) from None
    except (KeyError, TypeError, ValueError) as error:
        raise DataError(path, f"missing or bad field: {error}") from None
    return manifest


class ShardedIndex:
    """A read-only view of an index folder: shards memory-mapped, searched exactly, shard by shard."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.manifest = _read_manifest(self.folder)
        self.dim = int(self.manifest["dim"])
        self.dtype = str(self.manifest.get("dtype", "float16"))
        self.metadata: dict = dict(self.manifest.get("metadata") or {})
        self.factory = str(self.manifest.get("factory", "Flat"))
        version = int(self.manifest.get("format_version", 1))
        entries = self.manifest.get("shards") or []
        if version == 1:  # names only, all ids in one ids.txt
            self._shared_ids: list[str] | None = None
            entries = [{"vectors": name, "ids": None} for name in entries]
        self._shards: list[np.ndarray] = []
        self._id_files: list[str | None] = []
        self._entries: list[dict] = list(entries)
        self._verified: set[int] = set()  # shards whose vectors' checksum was checked in this process
        for entry in entries:
            path = self.folder / entry["vectors"]
            expected = entry.get("vectors_bytes")
            try:
                if expected is not None and path.stat().st_size != expected:
                    raise DataError(
                        path,
                        f"is {path.stat().st_size} bytes, index.json says {expected}: the file is damaged",
                    )
                vectors = np.load(path, mmap_mode="r", allow_pickle=False)  # never unpickle
            except (OSError, ValueError) as error:
                raise DataError(path, f"cannot read embeddings shard: {error}") from None
            if vectors.ndim != 2 or vectors.shape[1] != self.dim:
                raise DataError(path, f"shard has shape {vectors.shape}, expected [rows, {self.dim}]")
            if entry.get("rows") is not None and len(vectors) != entry["rows"]:
                raise DataError(path, f"shard has {len(vectors)} rows, index.json says {entry['rows']}")
            if entry.get("ids") and entry.get("ids_bytes") is not None:
                ids_path = self.folder / entry["ids"]
                size = ids_path.stat().st_size if ids_path.exists() else None
                if size != entry["ids_bytes"]:
                    raise DataError(ids_path, f"is {size} bytes, index.json says {entry['ids_bytes']}")
            self._shards.append(vectors)
            self._id_files.append(entry.get("ids"))
        self.offsets = np.cumsum([0] + [len(s) for s in self._shards])
        if int(self.offsets[-1]) != int(self.manifest["count"]):
            raise DataError(
                self.folder / MANIFEST,
                f"shards hold {int(self.offsets[-1])} vectors, count is {self.manifest['count']}",
            )
        self._ids_cache: dict[int, list[str]] = {}
        if version == 1:
            self._check_shared_ids()
        self._store = None
        small = self.recorded_bytes() <= CHEAP_BYTES  # a small folder: every content checked at once
        self._check_files(checksums=small)
        if small:
            for number in range(len(self._shards)):
                self.verify_shard(number)
                self.shard_ids(number)

    # ----- contents -----------------------------------------------------------------------------------
    def recorded_bytes(self) -> int:
        """The bytes of every file index.json lists (shards and other files)."""
        shards = sum(int(e.get("vectors_bytes") or 0) + int(e.get("ids_bytes") or 0) for e in self._entries)
        files = self.manifest.get("files") or {}
        return shards + sum(int((entry or {}).get("bytes") or 0) for entry in files.values())

    @property
    def has_checksums(self) -> bool:
        """Whether index.json records the contents of its shards (folders written before do not)."""
        return bool(self._entries) and all("vectors_checksum" in entry for entry in self._entries)

    def verify_shard(self, number: int) -> None:
        """Check shard `number`'s vectors against their recorded checksum, once per process."""
        if number in self._verified:
            return
        entry = self._entries[number]
        if entry.get("vectors_checksum") is not None:
            for problem in content_problem(
                self.folder / entry["vectors"], entry["vectors_checksum"], MANIFEST
            ):
                raise problem
        self._verified.add(number)

    def _file_problems(self, *, checksums: bool, progress=None):
        return recorded_file_problems(self.folder, self.manifest, checksums=checksums, progress=progress)

    def _check_files(self, checksums: bool = False) -> None:
        """Refuse a recorded file that is missing, resized (or with `checksums`, changed); a missing
        passage store is a warning."""
        for problem in self._file_problems(checksums=checksums):
            store = self.folder / STORE
            if problem.path == str(store) and not store.exists():
                # the vectors and ids are whole: search still works, with ids only; said, not silent
                print(
                    f"warning: {store}: missing ({MANIFEST} records it): results show ids only, without "
                    "titles or text; restore the file or rebuild the index with `contriever index`",
                    file=sys.stderr,
                )
                continue
            raise problem

    # ----- ids ----------------------------------------------------------------------------------------
    def _check_shared_ids(self) -> None:
        path = self.folder / "ids.txt"
        ids = path.read_text(encoding="utf-8").splitlines() if path.exists() else None
        if ids is None or len(ids) != len(self):
            found = "missing" if ids is None else f"{len(ids)} lines"
            raise DataError(path, f"expected {len(self)} ids (index.json count), found {found}")
        for number in range(len(self._shards)):
            self._ids_cache[number] = ids[int(self.offsets[number]) : int(self.offsets[number + 1])]

    def shard_ids(self, number: int) -> list[str]:
        """The ids of shard `number`, in row order (read on first use, then kept)."""
        if number not in self._ids_cache:
            path = self.folder / str(self._id_files[number])
            try:
                data = path.read_bytes()
            except OSError as error:
                raise DataError(path, f"cannot read the ids file: {error.strerror or error}") from None
            expected = self._entries[number].get("ids_checksum")
            if expected is not None and checksum_bytes(data) != expected:  # lines swapped, same size
                raise DataError(
                    path,
                    f"contents changed since it was written ({MANIFEST} records another checksum): "
                    "damaged; restore it or rebuild the index",
                )
            try:
                ids = data.decode("utf-8").splitlines()
            except UnicodeDecodeError as error:
                raise DataError(path, f"not UTF-8 text (byte offset {error.start})") from None
            if len(ids) != len(self._shards[number]):
                raise DataError(path, f"has {len(ids)} ids for {len(self._shards[number])} vectors")
            self._ids_cache[number] = ids
        return self._ids_cache[number]

    def ids_for(self, rows) -> list[str]:
        """The ids of global `rows` (an iterable of ints)."""
        rows = np.asarray(rows, dtype=np.int64).ravel()
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"row out of range [0, {len(self)})")
        shard_of = np.searchsorted(self.offsets, rows, side="right") - 1
        return [self.shard_ids(int(s))[int(r - self.offsets[s])] for r, s in zip(rows, shard_of)]

    @property
    def ids(self) -> list[str]:
        """Every id in row order (reads all id files: for small indexes and tests)."""
        return [i for number in range(len(self._shards)) for i in self.shard_ids(number)]

    # ----- shards -------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def num_shards(self) -> int:
        return len(self._shards)

    def iter_shards(self) -> Iterator[tuple[list[str], np.ndarray]]:
        """`(ids, vectors)` of each shard in order; vectors are a read-only memory map (fp16)."""
        for number, vectors in enumerate(self._shards):
            yield self.shard_ids(number), vectors

    def vectors(self, number: int) -> np.ndarray:
        """Shard `number`'s vectors, memory-mapped."""
        return self._shards[number]

    def vectors_for(self, rows) -> np.ndarray:
        """The fp32 vectors of global `rows` (any order, repeats allowed), read from the memory-mapped
        shards: only the pages holding those rows are touched, each shard's rows in file order."""
        rows = np.asarray(rows, dtype=np.int64).ravel()
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"row out of range [0, {len(self)})")
        vectors = np.empty((len(rows), self.dim), dtype=np.float32)
        shard_of = np.searchsorted(self.offsets, rows, side="right") - 1
        for number in np.unique(shard_of).tolist():
            where = np.flatnonzero(shard_of == number)
            local = rows[where] - self.offsets[number]
            order = np.argsort(local, kind="stable")
            vectors[where[order]] = self._shards[number][local[order]]
        return vectors

    def stored_vectors(self, rows: np.ndarray) -> np.ndarray:
        """The vectors of ascending global `rows` as stored (fp16 by default), shard by shard in
        file order: what exact re-scoring reads, with no fp32 copy and no scatter."""
        bounds = np.searchsorted(rows, self.offsets)
        parts = [
            self._shards[number][rows[bounds[number] : bounds[number + 1]] - self.offsets[number]]
            for number in range(len(self._shards))
            if bounds[number] < bounds[number + 1]
        ]
        if len(parts) == 1:  # one shard's rows (nearly always, in blocks): no second copy
            return parts[0]
        return np.concatenate(parts) if parts else np.empty((0, self.dim), dtype=self.dtype)

    def embeddings(self) -> np.ndarray:
        """All vectors in one array in memory (for small indexes)."""
        if not self._shards:
            return np.empty((0, self.dim), dtype=self.dtype)
        return np.concatenate([np.asarray(s) for s in self._shards])

    # ----- search -------------------------------------------------------------------------------------
    def search_rows(
        self, query_vectors, k: int, *, chunk_rows: int = 16384, precision: str = "auto", progress=None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-`k` by inner product: `(scores [n, k'], rows [n, k'])`, `k' = min(k, len)`,
        ordered by score, then by the lower row (`contriever.retrieval.exact`: a pass over each chunk
        in `precision` -- "auto": bf16 where the CPU multiplies bf16 natively and
        `exact.cheaper_pass` expects it to cost less for these queries, else fp32 -- picks
        candidates within its proven error, which are then scored exactly; the scores are the exact
        inner products of the stored vectors, rounded once to fp32, whatever the precision).

        Each chunk of `chunk_rows` vectors is converted once per call (once per index while the
        whole index fits in `FP32_KEEP_BYTES` as fp32: later calls, such as the next block of
        queries, convert nothing). `progress(share)`, when given, is called as the search goes, the
        shares adding up to 1 (a search of millions of vectors takes minutes): after each chunk with
        `PASS_SHARE` x its share of the index, then as the candidates are re-scored.
        """
        from contriever.retrieval.exact import exact_top_k
        from contriever.retrieval.faiss_calls import _ensure_threads

        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        queries = np.ascontiguousarray(query_vectors, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"query vectors must have shape [n, {self.dim}], got {queries.shape}")
        if not np.isfinite(queries).all():
            raise ValueError("query vectors contain NaN or infinite values")
        _ensure_threads()
        k = min(k, len(self))
        n = len(queries)
        if k == 0 or n == 0:
            return np.full((n, k), -np.inf, dtype=np.float32), np.full((n, k), -1, dtype=np.int64)
        chosen = search_precision(precision)
        if (
            chosen == "bf16"
            and precision == "auto"
            and os.environ.get(SEARCH_PRECISION_ENV, "").strip() in ("", "auto")
        ):
            chosen = self._cheaper_pass(queries, k, chunk_rows)
        chunks = self._pass_chunks(chunk_rows, chosen)
        rescored = None
        if progress is not None:  # the pass counts for PASS_SHARE of the work, the re-scoring the rest
            chunks = _reporting(chunks, len(self) / PASS_SHARE, progress)

            def rescored(share: float) -> None:
                progress((1 - PASS_SHARE) * share)

        return exact_top_k(queries, chunks, k, self.stored_vectors, chosen, rescored)

    def _cheaper_pass(self, queries: np.ndarray, k: int, chunk_rows: int) -> str:
        """`exact.cheaper_pass` judged on the index's first chunk with the first queries searched at
        this `k`, then kept for this index and k (~70 ms a time; a model's queries are alike)."""
        from contriever.retrieval.exact import cheaper_pass

        choices = self.__dict__.setdefault("_pass_choices", {})
        if k not in choices:
            shard = next(shard for shard in self._shards if len(shard))
            first = np.asarray(shard[:chunk_rows], dtype=np.float32)
            norms = np.sqrt(np.einsum("nd,nd->n", first, first)) * np.float32(1.001)
            choices[k] = cheaper_pass(queries, first, len(self), k, float(norms.max(initial=0.0)))
        return choices[k]

    def _pass_chunks(self, chunk_rows: int, precision: str) -> Iterator[tuple[int, object, float]]:
        """`(first global row, vectors as the pass multiplies them, their largest norm)` of each chunk
        of each shard, checked finite; kept for the next call when the whole index fits in
        `FP32_KEEP_BYTES` (fp32: 4 bytes a value, bf16: 2; searching one index again and again, as
        blocks of queries do, then converts it once)."""
        from contriever.retrieval.exact import pass_matrix

        kept = getattr(self, "_pass_kept", None)
        if kept is not None and kept[0] == (chunk_rows, precision):
            yield from kept[1]
            return
        keep = len(self) * self.dim * (4 if precision == "fp32" else 2) <= fp32_keep_bytes()
        chunks = []
        for number, shard in enumerate(self._shards):
            self.verify_shard(number)  # once per process: the scan below reads every byte anyway
            for start in range(0, len(shard), chunk_rows):
                chunk = np.ascontiguousarray(shard[start : start + chunk_rows], dtype=np.float32)
                # fp32 norms are within dim ulps of the true ones: 1e-3 more is a safe bound
                norms = np.sqrt(np.einsum("nd,nd->n", chunk, chunk)) * np.float32(1.001)
                if not np.isfinite(norms).all():  # a NaN would silently drop out of every ranking
                    row = start + int(np.argmin(np.isfinite(norms)))
                    raise DataError(
                        self.folder / vectors_name(number),
                        f"row {row} holds NaN or infinite values: a damaged shard; rebuild the index",
                    )
                entry = (
                    int(self.offsets[number]) + start,
                    pass_matrix(chunk, precision),
                    float(norms.max(initial=0.0)),
                )
                if keep:
                    chunks.append(entry)
                yield entry
        if keep:
            self._pass_kept = ((chunk_rows, precision), chunks)

    def search(self, query_vectors, k: int, *, show_progress: bool = False, **kwargs):
        """`(scores [n, k'], doc_ids)`: `doc_ids[i]` lists query i's documents best first."""
        scores, rows = self.search_rows(query_vectors, k, **kwargs)
        flat = self.ids_for(rows[rows >= 0])
        doc_ids, position = [], 0
        for row in rows:
            found = int((row >= 0).sum())
            doc_ids.append(flat[position : position + found])
            position += found
        return scores, doc_ids

    # ----- passages -----------------------------------------------------------------------------------
    @property
    def store(self):
        """The passage store (`PassageStore`), or None when the folder has none."""
        if self._store is None and (self.folder / STORE).is_file():
            from contriever.retrieval.store import PassageStore

            self._store = PassageStore(self.folder / STORE)
        return self._store

    def passages(self, rows) -> list[dict]:
        """`{"id", "doc_id", "title", "text"}` of global `rows`, read from the passage store."""
        if self.store is None:
            raise DataError(
                self.folder, f"has no passage store ({STORE}); rebuild it with `contriever index`"
            )
        return self.store.get(rows)


def open_index(folder: str | os.PathLike) -> ShardedIndex:
    """Open an index folder for exact search over its memory-mapped shards (see the module docstring)."""
    return ShardedIndex(folder)


def recorded_file_problems(
    folder: Path, manifest: dict, *, checksums: bool, progress=None
) -> Iterator[DataError]:
    """The files index.json records besides the shards (the passage store): missing,
    resized, or (with `checksums`) changed. A passage store named by `store` must exist."""
    files = dict(manifest.get("files") or {})
    if manifest.get("store") and manifest["store"] not in files:
        files[manifest["store"]] = {}
    for name, entry in files.items():
        path = folder / name
        if not path.is_file():
            yield DataError(
                path,
                f"missing ({MANIFEST} records it): the index folder is damaged; restore the file or rebuild "
                "the index with `contriever index`",
            )
            continue
        size = path.stat().st_size
        if entry.get("bytes") is not None and size != entry["bytes"]:
            yield DataError(
                path, f"is {size:,} bytes, {MANIFEST} says {entry['bytes']:,}: truncated or damaged"
            )
            continue
        if checksums and entry.get("checksum") is not None:
            yield from content_problem(path, entry["checksum"], MANIFEST, progress)


def _vectors_shape_problem(path: Path, dim: int, rows) -> DataError | None:
    try:
        vectors = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as error:
        return DataError(path, f"cannot read embeddings shard: {error}")
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        return DataError(path, f"shard has shape {vectors.shape}, expected [rows, {dim}]")
    if rows is not None and len(vectors) != rows:
        return DataError(path, f"shard has {len(vectors)} rows, {MANIFEST} says {rows}")
    return None


def index_problems(folder: str | os.PathLike, progress=None) -> Iterator[DataError]:
    """Every problem of an index folder, one per file: a missing or unreadable `index.json`; each
    shard file missing, of another size or shape, or whose contents differ from its checksum; a shard
    record disagreeing with index.json; the other recorded files (the passage store).
    `progress.update(bytes)` as files are read. Folders written before checksums get the rest."""
    folder = Path(folder)
    try:
        manifest = _read_manifest(folder)
    except DataError as error:
        yield error
        return
    if int(manifest.get("format_version", 1)) == 1:  # names only: what open_index checks is all there is
        try:
            ShardedIndex(folder).ids  # noqa: B018 - reads and counts the ids
        except DataError as error:
            yield error
        return
    dim = int(manifest["dim"])
    for number, entry in enumerate(manifest.get("shards") or []):
        for kind in ("ids", "vectors"):
            path = folder / str(entry.get(kind))
            if not path.is_file():
                yield DataError(path, f"missing ({MANIFEST} lists it); the index folder is incomplete")
                continue
            size, expected = path.stat().st_size, entry.get(f"{kind}_bytes")
            if expected is not None and size != expected:
                yield DataError(
                    path, f"is {size:,} bytes, {MANIFEST} says {expected:,}: truncated or damaged"
                )
                continue
            if kind == "vectors" and (problem := _vectors_shape_problem(path, dim, entry.get("rows"))):
                yield problem
                continue
            if entry.get(f"{kind}_checksum") is not None:
                yield from content_problem(path, entry[f"{kind}_checksum"], MANIFEST, progress)
            else:
                if kind == "ids":
                    lines = len(path.read_bytes().splitlines())
                    if entry.get("rows") is not None and lines != entry["rows"]:
                        yield DataError(path, f"has {lines} ids, {MANIFEST} says {entry['rows']} rows")
                if progress is not None:
                    progress.update(size)
        record_path = folder / record_name(number)
        if record_path.is_file():
            try:
                record = json.loads(record_path.read_text())
            except ValueError:
                yield DataError(record_path, "not valid JSON")
                continue
            differing = [
                key for key in (*SHARD_KEYS, *CHECKSUM_KEYS) if key in entry and record.get(key) != entry[key]
            ]
            if differing:
                yield DataError(record_path, f"disagrees with {MANIFEST} on {', '.join(differing)}")
    yield from recorded_file_problems(folder, manifest, checksums=True, progress=progress)
