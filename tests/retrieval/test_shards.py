"""The index folder format: shards written one by one, the manifest, exact search shard by shard."""

from __future__ import annotations

import json
import multiprocessing
import os

import faiss
import numpy as np
import pytest

from contriever.errors import DataError
from contriever.io import FolderLockedError, folder_lock
from contriever.retrieval.shards import (
    open_index,
    read_shard_record,
    write_manifest,
    write_shard,
)

DIM = 12


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return np.random.default_rng(3).standard_normal((1003, DIM)).astype(np.float32)


def write_folder(folder, vectors, shard_rows):
    records = []
    for number, start in enumerate(range(0, len(vectors), shard_rows)):
        rows = vectors[start : start + shard_rows].astype(np.float16)
        records.append(write_shard(folder, number, [f"p{start + i}" for i in range(len(rows))], rows))
    write_manifest(folder, records, dim=DIM, metadata={"model": "m"})
    return folder


@pytest.mark.parametrize("shard_rows,chunk_rows", [(1003, 16384), (100, 37), (7, 5)])
def test_sharded_search_equals_one_flat_index(vectors, tmp_path, shard_rows, chunk_rows):
    ids = [f"p{i}" for i in range(len(vectors))]
    flat = faiss.IndexFlatIP(DIM)  # one flat FAISS index over the fp16 values the folder holds
    flat.add(vectors.astype(np.float16).astype(np.float32))
    index = open_index(write_folder(tmp_path / "idx", vectors, shard_rows))
    assert len(index) == 1003 and index.dim == DIM and index.num_shards == -(-1003 // shard_rows)
    queries = np.random.default_rng(4).standard_normal((33, DIM)).astype(np.float32)
    for k in (1, 10, 1003, 5000):
        expected_scores, expected_rows = flat.search(queries, min(k, len(ids)))
        expected_ids = [[ids[j] for j in row] for row in expected_rows]
        scores, found = index.search(queries, k, chunk_rows=chunk_rows)
        assert found == expected_ids
        np.testing.assert_allclose(scores, expected_scores, rtol=1e-5, atol=1e-5)


def test_reader_api(vectors, tmp_path):
    index = open_index(write_folder(tmp_path / "idx", vectors, 400))
    shards = list(index.iter_shards())
    assert [len(ids) for ids, _ in shards] == [400, 400, 203]
    assert all(isinstance(v, np.memmap) and v.dtype == np.float16 for _, v in shards)
    assert index.ids_for([0, 399, 400, 1002]) == ["p0", "p399", "p400", "p1002"]
    np.testing.assert_array_equal(index.embeddings(), vectors.astype(np.float16))
    assert index.metadata == {"model": "m"}
    with pytest.raises(IndexError):
        index.ids_for([1003])
    rows = [1002, 0, 401, 399, 401, 7]  # across shards, out of order, one repeated
    np.testing.assert_array_equal(
        index.vectors_for(rows), vectors.astype(np.float16)[rows].astype(np.float32)
    )
    assert index.vectors_for([]).shape == (0, DIM)
    with pytest.raises(IndexError):
        index.vectors_for([-1])
    assert index.ids == [f"p{i}" for i in range(1003)]


def test_manifest_checks_sizes(vectors, tmp_path):
    folder = write_folder(tmp_path / "idx", vectors, 500)
    with open(folder / "embeddings-00001.npy", "r+b") as handle:
        handle.truncate(1000)
    with pytest.raises(DataError, match=r"embeddings-00001\.npy: is 1000 bytes, index.json says"):
        open_index(folder)
    assert read_shard_record(folder, 0)["rows"] == 500
    assert read_shard_record(folder, 1) is None  # a damaged shard is not complete


def test_incomplete_folder_is_not_an_index(vectors, tmp_path):
    folder = tmp_path / "idx"
    write_shard(folder, 0, ["a", "b"], vectors[:2].astype(np.float16))
    (folder / "encoding.json").write_text(json.dumps({"shards": 3}))
    with pytest.raises(DataError, match="incomplete index: 1 of 3 shards encoded"):
        open_index(folder)


def test_failed_write_leaves_no_shard(vectors, tmp_path, monkeypatch):
    """A write that fails half-way (a full disk) leaves neither the file nor a record."""
    folder = tmp_path / "idx"
    folder.mkdir()
    real_fsync = os.fsync

    def full_disk(fd):
        if os.fstat(fd).st_size > 1000:
            raise OSError(28, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space"):
        write_shard(folder, 0, [f"p{i}" for i in range(100)], vectors[:100].astype(np.float16))
    assert sorted(p.name for p in folder.iterdir()) == ["ids-00000.txt"]
    assert read_shard_record(folder, 0) is None


def _hold_lock(folder, ready, release):
    with folder_lock(folder):
        ready.set()
        release.wait(30)


def test_lock_refuses_a_second_writer(tmp_path):
    context = multiprocessing.get_context("spawn")
    ready, release = context.Event(), context.Event()
    holder = context.Process(target=_hold_lock, args=(tmp_path, ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        with (
            pytest.raises(FolderLockedError, match=f"in use by another process \\(pid {holder.pid} on host"),
            folder_lock(tmp_path),
        ):
            pass
    finally:
        release.set()
        holder.join(30)
    with folder_lock(tmp_path):  # released when the holder exits
        pass


def near_tie_vectors(seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Groups of four fp16 vectors around each base vector: the vector twice (an exact tie) and the
    vector with one component one fp16 step up and one step down (a score gap of one step of that
    component, far below fp16's resolution of the score but above fp32's rounding of it), shuffled
    over rows so each group crosses shards and chunks. Queries are base vectors: their own group
    holds their top four, tied or nearly."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.25, 1.0, (60, DIM)).astype(np.float16) * rng.choice([-1, 1], (60, DIM))
    rows = []
    for vector in base:
        j = rng.integers(DIM)
        up, down = vector.copy(), vector.copy()
        up[j] = np.nextafter(vector[j], np.float16(np.inf))
        down[j] = np.nextafter(vector[j], np.float16(-np.inf))
        rows += [vector, vector.copy(), up, down]
    return np.stack(rows)[rng.permutation(4 * len(base))], base[:25].astype(np.float32)


@pytest.mark.parametrize("shard_rows,chunk_rows", [(240, 16384), (37, 16), (5, 3)])
def test_exact_search_identical_to_fp32_search_on_near_ties(tmp_path, shard_rows, chunk_rows):
    """Same rows in the same order, and the same scores, as fp32 exact search over all vectors at
    once (one flat FAISS index, ties to the lower row), whatever the shards and chunks, k cutting
    through tied groups; the top four (each query's own group) also as an exact float64 ranking."""
    import faiss

    vectors, queries = near_tie_vectors()
    index = open_index(write_folder(tmp_path / "idx", vectors, shard_rows))
    flat = faiss.IndexFlatIP(DIM)
    flat.add(vectors.astype(np.float32))
    all_scores, all_rows = flat.search(queries, len(vectors))
    exact = queries.astype(np.float64) @ vectors.astype(np.float64).T
    for k in (1, 2, 3, 4, 5, 7, 240):
        scores, rows = index.search_rows(queries, k, chunk_rows=chunk_rows)
        for q in range(len(queries)):
            order = np.lexsort((all_rows[q], -all_scores[q]))[:k]  # fp32: score, then the lower row
            np.testing.assert_array_equal(rows[q], all_rows[q][order])
            np.testing.assert_array_equal(scores[q], all_scores[q][order])
            if k <= 4:  # the designed group: gaps far above fp32's rounding (deeper, unrelated rows
                # may be closer than that, where fp32 and float64 can order them differently)
                by_exact = np.lexsort((np.arange(len(vectors)), -exact[q]))[:k]
                np.testing.assert_array_equal(rows[q], by_exact)
