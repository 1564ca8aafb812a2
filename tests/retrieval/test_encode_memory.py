"""Encoding holds one shard at a time: memory in use does not grow with the passages encoded.

Measured after each shard (where `encoding-log.jsonl` is written) by two counters that sharing the
machine cannot disturb: Python's allocations (`tracemalloc`, which sees numpy arrays too) and the
bytes glibc has handed out (`mallinfo2`: torch's tensors, the tokenizer's buffers). Both are compared
between an early shard (caches warm) and the last one: a leak of as little as one small object a
passage grows them by more than the bound over the shards between; resident memory, which the
allocator's reuse makes noisy, is left to the benchmark (`benchmarks/index_scale.py`)."""

from __future__ import annotations

import ctypes
import functools
import gc
import json
import tracemalloc

import contriever.retrieval.encode as encode
from contriever.data.passages import PassageSettings

SHARD_ROWS = 150
SHARDS = 10
WARM = 3  # shards before the first measurement: caches (torch's, oneDNN's) filled
# Measured without a leak (shared CPU B): Python +3 bytes a passage, C +32 (a few KB a shard: files,
# log lines, not passages); with one 8-character string and 16 floats kept a passage: +67 and +245.
PYTHON_BYTES_PER_PASSAGE = 30
MALLOC_BYTES_PER_PASSAGE = 100


class MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks")
        + ("fordblks", "keepcost")
    ]


@functools.cache
def _libraries():
    """glibc and the libsqlite3 Python's sqlite3 module uses, loaded once (each load makes classes:
    garbage that would itself look like growth); None off glibc or without a shared libsqlite3."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = MallInfo2
        sqlite = ctypes.CDLL("libsqlite3.so.0")
        sqlite.sqlite3_memory_used.restype = ctypes.c_int64
    except (OSError, AttributeError):
        return None
    return libc, sqlite


def malloc_in_use() -> int | None:
    """Bytes glibc has handed out and not had back (heap and mapped blocks), less SQLite's own page
    cache (it fills, up to its 2 MiB limit, as the store's pages are first read: bounded, but in a
    small test it grows with the passages read)."""
    libraries = _libraries()
    if libraries is None:
        return None
    info = libraries[0].mallinfo2()
    return int(info.uordblks + info.hblkhd) - int(libraries[1].sqlite3_memory_used())


WORDS = ("time", "year", "people", "way", "day", "man", "world", "school", "state", "family", "group", "life")


def write_corpus(path, passages: int) -> None:
    """One 20-word passage a document, all of one token length: every shard's batches have the same
    shapes, so caches kept per shape (torch's, oneDNN's) are full after the first shard and what
    grows after that grows with the passages."""
    with open(path, "w") as handle:
        for i in range(passages):
            words = " ".join(WORDS[(i * 7 + j * 5) % len(WORDS)] for j in range(20))
            handle.write(json.dumps({"_id": f"doc{i}", "title": "title", "text": words}) + "\n")


def per_shard_memory(tiny_encoder, tmp_path, monkeypatch, leak=None) -> list[dict]:
    corpus = tmp_path / "corpus.jsonl"
    write_corpus(corpus, SHARD_ROWS * SHARDS)
    seen: list[dict] = []
    log = encode._log

    def measuring_log(folder, entry):
        log(folder, entry)
        if leak is not None:
            leak(entry)
        gc.collect()  # garbage in reference cycles is not growth
        seen.append({"python": tracemalloc.get_traced_memory()[0], "malloc": malloc_in_use()})

    monkeypatch.setattr(encode, "_log", measuring_log)
    tracemalloc.start()
    try:
        encode.build_index(
            [corpus],
            tiny_encoder,
            tmp_path / "index",
            passages=PassageSettings(words=20, overlap=0),
            shard_rows=SHARD_ROWS,
            use_cache=False,
            show_progress=False,
        )
    finally:
        tracemalloc.stop()
    assert len(seen) == SHARDS
    return seen


def growth_per_passage(seen: list[dict], key: str) -> float:
    return (seen[-1][key] - seen[WARM - 1][key]) / (SHARD_ROWS * (SHARDS - WARM))


def test_memory_in_use_does_not_grow_with_passages(tiny_encoder, tmp_path, monkeypatch):
    seen = per_shard_memory(tiny_encoder, tmp_path, monkeypatch)
    print("per passage:", growth_per_passage(seen, "python"), growth_per_passage(seen, "malloc"))
    assert growth_per_passage(seen, "python") < PYTHON_BYTES_PER_PASSAGE, [s["python"] for s in seen]
    if seen[0]["malloc"] is not None:
        assert growth_per_passage(seen, "malloc") < MALLOC_BYTES_PER_PASSAGE, [s["malloc"] for s in seen]


def test_the_check_catches_a_small_leak(tiny_encoder, tmp_path, monkeypatch):
    """The bounds are tight enough that a short string a passage (Python) or 16 floats a passage
    (a torch tensor: C memory) kept by mistake fails them."""
    import torch

    kept_strings, kept_tensors = [], []

    def leak(entry):
        kept_strings.extend(f"p{entry['shard']}-{i}" for i in range(entry["rows"]))
        kept_tensors.append(torch.ones(entry["rows"], 16))

    seen = per_shard_memory(tiny_encoder, tmp_path, monkeypatch, leak=leak)
    print("per passage:", growth_per_passage(seen, "python"), growth_per_passage(seen, "malloc"))
    assert growth_per_passage(seen, "python") > PYTHON_BYTES_PER_PASSAGE
    if seen[0]["malloc"] is not None:
        assert growth_per_passage(seen, "malloc") > MALLOC_BYTES_PER_PASSAGE
