"""Encoding holds one shard at a time: memory in use does not grow with the passages encoded.

Measured after each shard (where `encoding-log.jsonl` is written) by two counters that sharing the
machine cannot disturb: the blocks Python's allocator has handed out (`sys.getallocatedblocks`:
objects) and the bytes glibc has handed out (`mallinfo2`: torch's tensors, numpy's arrays, large
strings, the tokenizer's buffers); not `tracemalloc`, whose own tables grow in C memory. Both are
compared between an early shard (caches warm) and the last one: a leak of as little as one small
object a passage grows them by more than the bound over the shards between; resident memory, which
the allocator's reuse makes noisy, is left to the benchmark (`benchmarks/index_scale.py`)."""

from __future__ import annotations

import ctypes
import functools
import gc
import json
import sys

import contriever.retrieval.encode as encode
from contriever.retrieval.settings import EncodingSettings

SHARD_ROWS = 100
SHARDS = 20
WARM = 10  # shards before the first measurement: what grows with the shard count (caches of torch,
# oneDNN, glibc's per-size free lists) has settled by then
# Measured without a leak (shared CPU B): +0.1 to +0.28 blocks and +31 bytes a passage (a few objects
# and KB a shard, not a passage); with one string and 64 floats (a vector of a small model) kept a
# passage: +1.1 blocks, +300 bytes.
PYTHON_BLOCKS_PER_PASSAGE = 0.5
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
        seen.append({"python": sys.getallocatedblocks(), "malloc": malloc_in_use()})

    monkeypatch.setattr(encode, "_log", measuring_log)
    encode.build_index(
        [corpus],
        tiny_encoder,
        tmp_path / "index",
        EncodingSettings(words=20, overlap=0, use_cache=False),
        layout=encode.FolderSettings(shard_rows=SHARD_ROWS),
        show_progress=False,
    )
    assert len(seen) == SHARDS
    return seen


def growth_per_passage(seen: list[dict], key: str) -> float:
    return (seen[-1][key] - seen[WARM - 1][key]) / (SHARD_ROWS * (SHARDS - WARM))


def test_memory_in_use_does_not_grow_with_passages(tiny_encoder, tmp_path, monkeypatch):
    seen = per_shard_memory(tiny_encoder, tmp_path, monkeypatch)
    print("per passage:", growth_per_passage(seen, "python"), growth_per_passage(seen, "malloc"))
    assert growth_per_passage(seen, "python") < PYTHON_BLOCKS_PER_PASSAGE, [s["python"] for s in seen]
    if seen[0]["malloc"] is not None:
        assert growth_per_passage(seen, "malloc") < MALLOC_BYTES_PER_PASSAGE, [s["malloc"] for s in seen]


def test_the_check_catches_a_small_leak(tiny_encoder, tmp_path, monkeypatch):
    """The bounds are tight enough that a short string a passage (Python) or 64 floats a passage
    (a torch tensor: C memory) kept by mistake fails them."""
    import torch

    kept_strings, kept_tensors = [], []

    def leak(entry):
        kept_strings.extend(f"p{entry['shard']}-{i}" for i in range(entry["rows"]))
        kept_tensors.append(torch.ones(entry["rows"], 64))

    seen = per_shard_memory(tiny_encoder, tmp_path, monkeypatch, leak=leak)
    print("per passage:", growth_per_passage(seen, "python"), growth_per_passage(seen, "malloc"))
    assert growth_per_passage(seen, "python") > PYTHON_BLOCKS_PER_PASSAGE
    if seen[0]["malloc"] is not None:
        assert growth_per_passage(seen, "malloc") > MALLOC_BYTES_PER_PASSAGE
