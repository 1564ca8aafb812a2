"""Raw text to token streams: tokenize a corpus once, then sample chunks from it memory-mapped.

`prepare(inputs, tokenizer, output)` reads documents, tokenizes them WITHOUT special tokens (the
views cut from them are wrapped later, see `augment.wrap_special_tokens`) and writes one folder:

    tokens.bin       every document's token ids back to back: raw uint16 when the vocabulary has at
                     most 65,536 entries (BERT: 30,522), else uint32
    doc_offsets.npy  int64 [n_docs + 1]: document i is tokens[offsets[i]:offsets[i + 1]]
    meta.json        dtype, counts, tokenizer (path, name, vocab size, special ids), inputs, settings
    manifest.json    each file's size, written last: `TokenDataset` refuses a folder that does not
                     match it (a truncated tokens.bin) or lacks it (an unfinished write)

Inputs, by file name (`.gz` means gzip):
    *.jsonl, *.ndjson, *.json   one JSON object per line; the document is `obj[text_field]`, or
                                `obj[title_field] + " " + obj[text_field]` with include_title=True
                                (how BEIR corpora are encoded for retrieval). Blank lines are ignored.
    *.txt, *.text               one document per line.
Documents that are empty (or only whitespace) are skipped and counted in meta.json.

These and the text options are one `DocumentSettings` value. Text options (off by default; recorded
in meta.json): `normalize_text=True` applies the paper code's
`normalize_text` table (`contriever.data.normalize`; its mContriever training data went through it)
and `lowercase=True` lowercases, in that order, before tokenizing.

Settings: documents are read in batches of `batch_docs` lines (or ~`batch_chars` characters, whichever
comes first) and tokenized by `workers` processes, at most `2 * workers` batches in flight, results in
input order and written as they come back, so memory stays flat whatever the corpus size. The folder
is built under a temporary name beside `output` and renamed into place at the end; every write is
checked, and a full disk raises `contriever.io.DiskFullError` naming the file, leaving `output` as it was.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import shutil
import tempfile
import time
from collections import deque
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from contriever.data.beir import json_object
from contriever.data.normalize import transform_text
from contriever.errors import DataError
from contriever.io import (
    MANIFEST_NAME,
    CheckedFile,
    DiskFullError,
    atomic_write,
    numbered_lines,
    swap_into_place,
    verify_manifest,
    write_json,
    write_manifest,
)

TOKENS_FILE = "tokens.bin"
OFFSETS_FILE = "doc_offsets.npy"
META_FILE = "meta.json"
PREPARED_FILES = (TOKENS_FILE, OFFSETS_FILE, META_FILE, MANIFEST_NAME)  # all we write, manifest last
FORMAT_VERSION = 2  # 2: the folder has a manifest.json (each file's size), written last

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
TEXT_SUFFIXES = (".txt", ".text")


@dataclass(frozen=True)
class DocumentSettings:
    """Where a document's text is in an input line (JSONL: `text_field`, with `title_field` before
    it when `include_title`) and the text options applied to it before tokenizing (normalize_text,
    then lowercase). All recorded in meta.json."""

    text_field: str = "text"
    title_field: str = "title"
    include_title: bool = False
    lowercase: bool = False
    normalize_text: bool = False


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (vocab_size <= 65,536), else uint32."""
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def input_format(path: Path) -> str:
    """ "jsonl" or "txt", from the file name (a trailing .gz is looked through)."""
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(TEXT_SUFFIXES):
        return "txt"
    raise DataError(
        path,
        "unknown input format: name it *.jsonl (one JSON object a line) or *.txt (one document a line), .gz allowed",
    )


# ----- worker side: lines -> token ids -------------------------------------------------------------
_WORKER: dict = {}


def _init_worker(
    tokenizer_json: str, documents: DocumentSettings, dtype: str, pool_worker: bool = True
) -> None:
    """Build the Rust tokenizer once per process (no truncation, no padding).

    In a pool worker the tokenizer's own thread pool is turned off: the processes are the parallelism.
    """
    if pool_worker:
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(tokenizer_json)
    tokenizer.no_truncation()
    tokenizer.no_padding()
    _WORKER.update(tokenizer=tokenizer, documents=documents, dtype=np.dtype(dtype))


def document_from_json_line(line: str, documents: DocumentSettings) -> str | None:
    """The document text of one JSONL line (None for a blank line); ValueError says what is wrong."""
    if not line.strip():
        return None
    obj = json_object(line)
    text_field, title_field = documents.text_field, documents.title_field
    if text_field not in obj:
        raise ValueError(f"no {text_field!r} field (fields: {', '.join(map(repr, obj)) or 'none'})")
    text = obj[text_field]
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise ValueError(f"field {text_field!r} is a {type(text).__name__}, expected a string")
    if documents.include_title:
        title = obj.get(title_field) or ""
        if not isinstance(title, str):
            raise ValueError(f"field {title_field!r} is a {type(title).__name__}, expected a string")
        title = title.strip()
        if title:
            text = f"{title} {text}" if text.strip() else title
    return text


def _tokenize_lines(kind: str, first_line: int, lines: list[str]) -> dict:
    """One batch of raw lines -> concatenated ids, per-document lengths, skipped count (or an error)."""
    w = _WORKER
    documents: DocumentSettings = w["documents"]
    texts = []
    skipped = 0
    for offset, line in enumerate(lines):
        if kind == "jsonl":
            try:
                text = document_from_json_line(line, documents)
            except ValueError as error:
                return {"error": (first_line + offset, str(error))}
            if text is None:  # blank line
                continue
        else:
            text = line.rstrip("\r\n")
        if text.strip():
            texts.append(text)
        else:
            skipped += 1
    if documents.lowercase or documents.normalize_text:
        texts = [
            transform_text(t, lowercase=documents.lowercase, normalize=documents.normalize_text)
            for t in texts
        ]
    encode = getattr(w["tokenizer"], "encode_batch_fast", w["tokenizer"].encode_batch)
    ids = [e.ids for e in encode(texts, add_special_tokens=False)] if texts else []
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    skipped += int((lengths == 0).sum())
    lengths = lengths[lengths > 0]
    tokens = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=int(lengths.sum()))
    limit = np.iinfo(w["dtype"]).max
    if tokens.size and int(tokens.max()) > limit:
        return {"error": (first_line, f"token id {int(tokens.max())} does not fit {w['dtype']}")}
    return {"tokens": tokens.astype(w["dtype"]), "lengths": lengths, "skipped": skipped}


# ----- main side: read, dispatch, write ------------------------------------------------------------
def _line_batches(path: Path, batch_docs: int, batch_chars: int):
    """(first line number, lines) for consecutive batches of a text file (gzip when .gz)."""
    lines: list[str] = []
    first, size = 1, 0
    for line_no, line in numbered_lines(path):  # bad bytes, truncated gzip: DataError at their line
        if not lines:
            first = line_no
        lines.append(line)
        size += len(line)
        if len(lines) >= batch_docs or size >= batch_chars:
            yield first, lines
            lines, size = [], 0
    if lines:
        yield first, lines


class _StreamWriter:
    """Appends batches to tokens.bin and a raw int64 lengths file as they come back, and counts."""

    def __init__(self, staging: Path, output: Path, bar, started: float):
        self.staging, self.output, self.bar, self.started = staging, output, bar, started
        self.n_docs = self.n_tokens = self.skipped = 0
        self.inputs: list[dict] = []

    def __enter__(self):
        # Checked writes (a full disk raises DiskFullError naming the file where it belongs).
        self.token_file = CheckedFile(open(self.staging / TOKENS_FILE, "wb"), self.output / TOKENS_FILE)  # noqa: SIM115
        self.length_file = CheckedFile(open(self.staging / "lengths.tmp", "wb"), self.output / "lengths.tmp")  # noqa: SIM115
        return self

    def __exit__(self, exc_type, *exc):
        try:
            if exc_type is None:
                self.token_file.finish()
                self.length_file.finish()
        finally:
            for handle in (self.token_file, self.length_file):
                try:
                    handle.close()
                except OSError:
                    if exc_type is None:
                        raise
                    # Already failing (disk full): closing flushes the same unwritable buffer.

    def start_input(self, path: Path) -> dict:
        stats = {
            "path": str(path.resolve()),
            "bytes": path.stat().st_size,
            "docs": 0,
            "tokens": 0,
            "skipped_empty": 0,
        }
        self.inputs.append(stats)
        return stats

    def write(self, path: Path, stats: dict, result: dict) -> None:
        if "error" in result:
            line, message = result["error"]
            raise DataError(path, message, line)
        self.token_file.write(result["tokens"].tobytes())
        self.length_file.write(result["lengths"].astype(np.int64, copy=False).tobytes())
        docs, tokens = len(result["lengths"]), int(result["tokens"].size)
        stats["docs"] += docs
        stats["tokens"] += tokens
        stats["skipped_empty"] += result["skipped"]
        self.n_docs += docs
        self.n_tokens += tokens
        self.skipped += result["skipped"]
        self.bar.update(docs)
        rate = self.n_tokens / max(time.perf_counter() - self.started, 1e-9)
        self.bar.set_postfix_str(f"{self.n_tokens:,} tokens, {rate:,.0f} tokens/s", refresh=False)


class _InProcess:
    """A stand-in for a pool's AsyncResult when workers <= 1."""

    def __init__(self, value):
        self.value = value

    def get(self):
        return self.value


def _special_ids(tokenizer) -> dict:
    names = ("cls", "sep", "pad", "mask", "bos", "eos", "unk")
    return {name: getattr(tokenizer, f"{name}_token_id", None) for name in names}


def _prepare_target(output: Path) -> None:
    """Refuse to write into a folder that is neither empty nor a prepared token folder."""
    if output.exists():
        if not output.is_dir():
            raise FileExistsError(f"{output}: exists and is not a folder")
        entries = sorted(p.name for p in output.iterdir())
        if entries and not (output / META_FILE).exists():
            shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
            raise FileExistsError(
                f"{output}: exists, is not empty ({shown}) and is not a prepared token folder; not "
                "writing into it: name a new or empty folder"
            )


def _install(staging: Path, output: Path) -> None:
    """Move the finished folder into place without touching anything of the user's.

    A new or empty `output` is replaced by `staging` in one rename. An older prepared folder gets only
    our files replaced, `manifest.json` last (it is what makes the folder complete: its sizes are
    checked on load); any other file kept there stays.
    """
    if not output.exists() or not any(output.iterdir()):
        swap_into_place(staging, output)
        return
    for name in PREPARED_FILES:
        os.replace(staging / name, output / name)
    shutil.rmtree(staging)


def prepare(
    inputs: list[str | os.PathLike] | str | os.PathLike,
    tokenizer: str | os.PathLike,
    output: str | os.PathLike,
    *,
    documents: DocumentSettings = DocumentSettings(),
    workers: int = 2,
    batch_docs: int = 256,
    batch_chars: int = 4_000_000,
    show_progress: bool = True,
) -> Path:
    """Tokenize `inputs` with the Hugging Face tokenizer at `tokenizer` into the folder `output`.

    Settings: no special tokens; no truncation; empty documents skipped; each document's text read
    and transformed as `documents` says; `workers` processes (<= 1: tokenize in this process);
    batches of `batch_docs` lines or `batch_chars` characters.
    An older prepared folder at `output` gets its files replaced (others kept there stay); a folder
    that is neither empty nor prepared is refused. Returns `output`.
    Raises DataError (file and line) for unreadable input, invalid JSON or a missing text field.
    """
    paths, kinds = _checked_inputs(inputs)
    output = Path(output)
    _prepare_target(output)
    tok = _fast_tokenizer(tokenizer)
    dtype = token_dtype(len(tok))
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the result is an ordinary data folder
    pool = bar = None
    started = time.perf_counter()
    try:
        pool, submit = _tokenizing_pool(workers, (tok.backend_tokenizer.to_str(), documents, dtype.name))
        bar = tqdm(desc="tokenizing", unit=" docs", unit_scale=True, disable=not show_progress, smoothing=0.1)
        writer = _StreamWriter(staging, output, bar, started)
        with writer:
            for path, kind in zip(paths, kinds):
                _tokenize_input(writer, path, kind, submit, (batch_docs, batch_chars), 2 * max(1, workers))
        bar.close()
        if writer.n_docs == 0:
            raise DataError(
                paths[0] if len(paths) == 1 else ", ".join(map(str, paths)), "no non-empty documents"
            )
        _write_offsets(staging, writer.n_docs, writer.n_tokens)
        write_json(
            staging / META_FILE, _meta(writer, dtype, _tokenizer_record(tokenizer, tok), documents, started)
        )
        write_manifest(staging)  # last: its presence says the folder is complete
        _install(staging, output)
    except BaseException as error:
        _abandon(staging, bar, pool)
        pool = None
        if isinstance(error, DiskFullError) and Path(error.path).parent == staging:
            raise DiskFullError(
                output / Path(error.path).name, error.written, error.needed, error.reason
            ) from None
        raise
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    return output


def _meta(
    writer: _StreamWriter, dtype: np.dtype, tokenizer: dict, documents: DocumentSettings, started: float
) -> dict:
    """meta.json: the format, the counts, the tokenizer, the document settings, the inputs."""
    return {
        "format_version": FORMAT_VERSION,
        "dtype": dtype.name,
        "n_tokens": writer.n_tokens,
        "n_docs": writer.n_docs,
        "skipped_empty": writer.skipped,
        "tokenizer": tokenizer,
        "special_tokens_added": False,
        **asdict(documents),
        "inputs": writer.inputs,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - started, 3),
    }


def _abandon(staging: Path, bar, pool) -> None:
    """After a failure: end the progress line (so the error is a line of its own), stop the workers,
    remove the staging folder."""
    if bar is not None:
        bar.close()
    if pool is not None:
        pool.terminate()
        pool.join()
    shutil.rmtree(staging, ignore_errors=True)


def _checked_inputs(inputs) -> tuple[list[Path], list[str]]:
    """The input paths and their formats; a missing file fails before anything is written."""
    paths = [Path(p) for p in ([inputs] if isinstance(inputs, (str, os.PathLike)) else inputs)]
    if not paths:
        raise ValueError("no input files")
    kinds = []
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such input file")
        kinds.append(input_format(path))
    return paths, kinds


def _fast_tokenizer(tokenizer):
    from contriever.model.locate import load_tokenizer

    tok = load_tokenizer(tokenizer)  # a local folder or a Hub id, never waiting on an unreachable Hub
    if not getattr(tok, "is_fast", False) or not hasattr(tok, "backend_tokenizer"):
        raise ValueError(f"{tokenizer}: needs a fast (Rust) tokenizer with a tokenizer.json")
    return tok


def _tokenizer_record(tokenizer, tok) -> dict:
    return {
        "path": str(Path(tokenizer).resolve()) if Path(tokenizer).exists() else str(tokenizer),
        "name": type(tok).__name__,
        "vocab_size": len(tok),
        "special_ids": _special_ids(tok),
    }


def _tokenizing_pool(workers: int, init_args: tuple):
    """`(pool or None, submit)`: `submit(kind, first, lines)` returns something with `.get()`."""
    if workers > 1:
        pool = multiprocessing.get_context("spawn").Pool(
            workers, initializer=_init_worker, initargs=init_args
        )
        return pool, lambda *args: pool.apply_async(_tokenize_lines, args)
    _init_worker(*init_args, pool_worker=False)
    return None, lambda *args: _InProcess(_tokenize_lines(*args))


def _tokenize_input(
    writer, path: Path, kind: str, submit, batch: tuple[int, int], max_in_flight: int
) -> None:
    """One input file through the workers, its batches written in order as they come back."""
    stats = writer.start_input(path)
    pending: deque = deque()
    for first, lines in _line_batches(path, *batch):
        pending.append(submit(kind, first, lines))
        if len(pending) >= max_in_flight:
            writer.write(path, stats, pending.popleft().get())
    while pending:
        writer.write(path, stats, pending.popleft().get())


def _write_offsets(staging: Path, n_docs: int, n_tokens: int) -> None:
    """doc_offsets.npy from the lengths written as the documents came."""
    lengths = np.fromfile(staging / "lengths.tmp", dtype=np.int64)
    offsets = np.zeros(n_docs + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    assert int(offsets[-1]) == n_tokens
    # Written through a checked handle, not a memory map (a full disk under a map is a SIGBUS crash).
    with atomic_write(staging / OFFSETS_FILE, "wb", size_hint=offsets.nbytes + 128) as handle:
        np.save(handle, offsets)
    del offsets, lengths
    (staging / "lengths.tmp").unlink()


class TokenDataset:
    """A prepared folder, memory-mapped: `tokens` (uint16/uint32) and `offsets` (int64 [n_docs + 1])."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        meta_path = self.folder / META_FILE
        if not meta_path.exists():
            raise FileNotFoundError(
                f"{self.folder}: not a prepared token folder (no {META_FILE}); make one with `contriever prepare`"
            )
        try:
            self.meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as error:
            raise DataError(meta_path, f"not valid JSON ({error.msg})", error.lineno) from None
        # Version 1 folders predate manifests; from version 2 a missing one means an unfinished write.
        verify_manifest(self.folder, required=int(self.meta.get("format_version", 1)) >= 2)
        dtype = np.dtype(self.meta.get("dtype", "?"))
        if dtype not in (np.dtype(np.uint16), np.dtype(np.uint32)):
            raise DataError(meta_path, f"unsupported token dtype {dtype}; expected uint16 or uint32")
        vocab_size = self.meta.get("tokenizer", {}).get("vocab_size")
        if vocab_size is not None and token_dtype(vocab_size).itemsize > dtype.itemsize:
            raise DataError(meta_path, f"dtype {dtype} cannot hold ids of a {vocab_size}-token vocabulary")
        n_tokens, n_docs = int(self.meta["n_tokens"]), int(self.meta["n_docs"])
        token_path = self.folder / TOKENS_FILE
        size = token_path.stat().st_size
        if size != n_tokens * dtype.itemsize:
            raise DataError(
                token_path,
                f"{size} bytes, expected {n_tokens} {dtype} tokens ({n_tokens * dtype.itemsize} bytes)",
            )
        self.tokens = np.memmap(token_path, dtype=dtype, mode="r", shape=(n_tokens,))
        try:  # never unpickle: a crafted .npy could run code
            self.offsets = np.load(self.folder / OFFSETS_FILE, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as error:
            raise DataError(self.folder / OFFSETS_FILE, f"cannot read document offsets: {error}") from None
        if self.offsets.shape != (n_docs + 1,) or self.offsets[0] != 0 or self.offsets[-1] != n_tokens:
            raise DataError(
                self.folder / OFFSETS_FILE,
                f"shape {self.offsets.shape} / bounds do not match {n_docs} docs, {n_tokens} tokens",
            )

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def n_docs(self) -> int:
        return int(self.offsets.shape[0] - 1)

    @property
    def dtype(self) -> np.dtype:
        return self.tokens.dtype

    @property
    def vocab_size(self) -> int | None:
        return self.meta.get("tokenizer", {}).get("vocab_size")

    @property
    def special_ids(self) -> dict:
        return dict(self.meta.get("tokenizer", {}).get("special_ids", {}))

    def __len__(self) -> int:
        return self.n_docs

    def document(self, i: int) -> np.ndarray:
        """Token ids of document i (a read-only view into the memory map)."""
        if not -self.n_docs <= i < self.n_docs:
            raise IndexError(f"document {i} out of range ({self.n_docs} documents)")
        i %= self.n_docs
        return self.tokens[int(self.offsets[i]) : int(self.offsets[i + 1])]

    def doc_lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def check_tokenizer(self, tokenizer) -> None:
        """Refuse a tokenizer other than the one this folder was prepared with: its ids would pick the
        wrong embeddings, or none ("index out of range in self" deep inside torch)."""
        recorded = self.meta.get("tokenizer", {})
        vocab_size = recorded.get("vocab_size")
        current = _special_ids(tokenizer)
        differ = [
            name
            for name, ident in (recorded.get("special_ids") or {}).items()
            if ident is not None and current.get(name) is not None and current[name] != ident
        ]
        if (vocab_size is not None and vocab_size > len(tokenizer)) or differ:
            why = f"special token ids differ: {', '.join(differ)}" if differ else "a larger vocabulary"
            raise DataError(
                self.folder / META_FILE,
                f"this token folder was prepared with another tokenizer ({recorded.get('path')}, "
                f"{vocab_size} tokens; the model's has {len(tokenizer)}; {why}): prepare it again with "
                "`contriever prepare --model MODEL`",
            )

    def __repr__(self) -> str:
        return f"TokenDataset({str(self.folder)!r}, n_docs={self.n_docs:,}, n_tokens={self.n_tokens:,}, dtype={self.dtype})"
