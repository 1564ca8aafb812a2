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


def test_exact_search_reports_its_progress_chunk_by_chunk(vectors, tmp_path):
    """`progress(share)` once per chunk searched, then as the candidates are re-scored, the shares
    adding up to 1; the retriever's bar reaches every query."""
    import io

    from tqdm import tqdm

    from contriever.retrieval.retrievers import share_counter
    from contriever.retrieval.shards import PASS_SHARE

    index = open_index(write_folder(tmp_path / "idx", vectors, 100))
    queries = np.random.default_rng(4).standard_normal((33, DIM)).astype(np.float32)
    shares: list[float] = []
    index.search_rows(queries, 10, chunk_rows=37, progress=shares.append)
    chunks = 10 * 3 + 1  # shards of 100 rows in chunks of 37, 37, 26; the last shard has 3
    assert sum(shares[:chunks]) == pytest.approx(PASS_SHARE)
    assert len(shares) > chunks and sum(shares) == pytest.approx(1.0)
    bar = tqdm(total=33, file=io.StringIO())
    bar.update(5)
    index.search(queries, 10, chunk_rows=37, progress=share_counter(bar, 28))
    assert bar.n == 5 + 28


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


def exact_ranking(queries: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every row of every query ranked by the exact inner product rounded once to fp32, ties to the
    lower row: what exact search must return, computed independently in float64."""
    exact = (queries.astype(np.float64) @ vectors.astype(np.float64).T).astype(np.float32)
    order = np.stack([np.lexsort((np.arange(len(vectors)), -row)) for row in exact])
    return np.take_along_axis(exact, order, axis=1), order


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("shard_rows,chunk_rows", [(240, 16384), (37, 16), (5, 3)])
def test_exact_search_identical_to_exact_ranking_on_near_ties(tmp_path, shard_rows, chunk_rows, precision):
    """Exact duplicates tie and go to the lower row, one-fp16-step neighbours are ordered by their
    true scores, whatever the shards and chunks and with k cutting through tied groups: the rows
    and scores of the exact ranking; and against fp32 exact search over all vectors at once (one
    flat FAISS index), the same rows for each query's own group and scores within fp32's rounding."""
    import faiss

    vectors, queries = near_tie_vectors()
    index = open_index(write_folder(tmp_path / "idx", vectors, shard_rows))
    want_scores, want_rows = exact_ranking(queries, vectors)
    flat = faiss.IndexFlatIP(DIM)
    flat.add(vectors.astype(np.float32))
    fp32_scores, fp32_rows = flat.search(queries, len(vectors))
    for k in (1, 2, 3, 4, 5, 7, 240):
        scores, rows = index.search_rows(queries, k, chunk_rows=chunk_rows, precision=precision)
        np.testing.assert_array_equal(rows, want_rows[:, :k])
        np.testing.assert_array_equal(scores, want_scores[:, :k])
        np.testing.assert_allclose(scores, fp32_scores[:, :k], rtol=0, atol=1e-5)
        if k <= 4:  # the designed group: gaps far above fp32's rounding
            order = [np.lexsort((r, -s)) for r, s in zip(fp32_rows, fp32_scores)]
            np.testing.assert_array_equal(rows, np.stack([r[o][:k] for r, o in zip(fp32_rows, order)]))


def test_auto_chooses_the_cheaper_pass_and_finds_the_same_rows(tmp_path, monkeypatch):
    """Where bf16 is native, "auto" takes the fp32 pass for an index whose scores crowd near the
    k-th best (kept per k), and returns what either pass returns."""
    import contriever.retrieval.shards as shards

    rng = np.random.default_rng(7)
    common = rng.standard_normal(DIM)
    crowded = common / np.linalg.norm(common) + 0.35 * rng.standard_normal((3000, DIM)) / np.sqrt(DIM)
    crowded = (crowded / np.linalg.norm(crowded, axis=1, keepdims=True)).astype(np.float16)
    index = open_index(write_folder(tmp_path / "idx", crowded[:2960], 1000))
    queries = crowded[2960:].astype(np.float32)
    monkeypatch.setattr(
        shards, "search_precision", lambda precision="auto": "bf16" if precision == "auto" else precision
    )
    monkeypatch.delenv(shards.SEARCH_PRECISION_ENV, raising=False)
    found = index.search_rows(queries, 500)
    assert index._pass_choices == {500: "fp32"}
    for precision in ("fp32", "bf16"):
        for want, got in zip(index.search_rows(queries, 500, precision=precision), found):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_exact_search_keeps_every_tie_across_chunks(tmp_path, precision):
    """A tie group larger than k spread over many chunks, an exactly tied k-th place and rows whose
    fp32 product scores above a truly better row: still the exact ranking, lower rows first."""
    rng = np.random.default_rng(5)
    base = rng.uniform(-1, 1, (3, DIM)).astype(np.float16)
    vectors = np.concatenate([np.repeat(base, 40, axis=0), rng.uniform(-1, 1, (200, DIM)).astype(np.float16)])
    vectors = vectors[rng.permutation(len(vectors))]
    queries = np.concatenate(
        [base.astype(np.float32), rng.standard_normal((5, DIM)).astype(np.float32) * 1e3]
    )
    index = open_index(write_folder(tmp_path / "idx", vectors, 17))
    want_scores, want_rows = exact_ranking(queries, vectors)
    for k in (1, 10, 39, 40, 41, 100, len(vectors)):
        for chunk_rows in (3, 64, 16384):
            scores, rows = index.search_rows(queries, k, chunk_rows=chunk_rows, precision=precision)
            np.testing.assert_array_equal(rows, want_rows[:, :k])
            np.testing.assert_array_equal(scores, want_scores[:, :k])


def test_exact_search_refuses_non_finite_queries(vectors, tmp_path):
    index = open_index(write_folder(tmp_path / "idx", vectors, 500))
    queries = vectors[:2].copy()
    queries[1, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        index.search_rows(queries, 5)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_rows_closer_than_the_pass_can_see_are_ranked_exactly(tmp_path, precision):
    """300 vectors a few fp16 steps from one another: far below bf16's resolution (its pass sees
    them as ties or in the wrong order), still the exact ranking at every k."""
    rng = np.random.default_rng(7)
    base = rng.uniform(0.5, 1.0, DIM).astype(np.float16)
    steps = rng.integers(-3, 4, (300, DIM)) * (rng.random((300, DIM)) < 0.3)
    vectors = (base.astype(np.float32) + steps * 2.0**-11).astype(np.float16)
    queries = np.stack([base.astype(np.float32), rng.uniform(0.5, 1.0, DIM).astype(np.float32)])
    index = open_index(write_folder(tmp_path / "idx", vectors, 64))
    want_scores, want_rows = exact_ranking(queries, vectors)
    for k in (1, 10, 50):
        scores, rows = index.search_rows(queries, k, chunk_rows=32, precision=precision)
        np.testing.assert_array_equal(rows, want_rows[:, :k])
        np.testing.assert_array_equal(scores, want_scores[:, :k])
