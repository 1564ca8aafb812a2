"""The index folder as the one index: written from vectors in memory (`write_index`, or a temporary
folder: `temporary_index`), fp16 storage, save/load round trips, exact and approximate search, and
the searcher a search setting picks (`load_for_search`)."""

from __future__ import annotations

import gc
import json

import numpy as np
import pytest

from contriever.errors import DataError, UsageError
from contriever.machine import available_cpus
from contriever.retrieval.ann import AnnIndex, ann_name, build_ann, check_factory
from contriever.retrieval.faiss_calls import set_faiss_threads
from contriever.retrieval.index import load_for_search, temporary_index
from contriever.retrieval.settings import SearchSettings
from contriever.retrieval.shards import ShardedIndex, open_index, record_factory, write_index
from tests.limits import run_with_file_size_limit

DIM = 16


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((400, DIM)).astype(np.float32)


@pytest.fixture(scope="module")
def ids(vectors) -> list[str]:
    return [f"doc-{i}" for i in range(len(vectors))]


def brute_force(docs: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    scores = queries @ docs.T
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def test_flat_is_exact_inner_product(vectors, ids):
    index = temporary_index(ids, vectors, show_progress=False)
    assert isinstance(index, ShardedIndex)
    queries = vectors[:20] * 0.5 + np.random.default_rng(1).standard_normal((20, DIM)).astype(np.float32)
    scores, found = index.search(queries, 10)
    stored = vectors.astype(np.float16).astype(np.float32)  # what the index holds
    expected = brute_force(stored, queries, 10)
    assert found == [[ids[j] for j in row] for row in expected]
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ stored.T, expected, axis=1), rtol=1e-5)
    assert scores.dtype == np.float32 and scores.shape == (20, 10)
    assert np.all(np.diff(scores, axis=1) <= 0)


def test_a_temporary_index_folder_is_removed_with_its_searcher(vectors, ids):
    index = temporary_index(ids[:10], vectors[:10], metadata={"model": "m"}, show_progress=False)
    folder = index.folder.parent
    assert (index.folder / "index.json").is_file() and index.metadata == {"model": "m"}
    del index
    gc.collect()
    assert not folder.exists()
    with pytest.raises(ValueError, match="empty corpus"):
        temporary_index([], np.zeros((0, DIM), dtype=np.float32))


def test_save_load_round_trip_fp16(vectors, ids, tmp_path):
    index = temporary_index(ids, vectors, metadata={"model": "m", "pooling": "mean"}, show_progress=False)
    before = index.search(vectors[:30], 25)
    folder = write_index(
        tmp_path / "idx", ids, vectors, metadata={"model": "m", "pooling": "mean"}, shard_rows=150
    )
    assert sorted(p.name for p in folder.iterdir()) == [
        *(f"{kind}-0000{n}.{ext}" for kind, ext in (("embeddings", "npy"), ("ids", "txt")) for n in range(3)),
        "index.json",
        *(f"shard-0000{n}.json" for n in range(3)),
    ]
    shard = np.load(folder / "embeddings-00000.npy")
    assert shard.dtype == np.float16 and shard.shape == (150, DIM)
    np.testing.assert_array_equal(shard, vectors[:150].astype(np.float16))
    info = json.loads((folder / "index.json").read_text())
    assert (
        info["dim"] == DIM
        and info["count"] == 400
        and info["factory"] == "Flat"
        and info["dtype"] == "float16"
    )
    assert info["metadata"] == {"model": "m", "pooling": "mean"}
    assert [r["rows"] for r in info["shards"]] == [150, 150, 100]
    assert [r["vectors_bytes"] for r in info["shards"]] == [
        (folder / f"embeddings-0000{n}.npy").stat().st_size for n in range(3)
    ]
    assert "".join((folder / f"ids-0000{n}.txt").read_text() for n in range(3)).splitlines() == ids

    loaded = open_index(folder)
    after = loaded.search(vectors[:30], 25)
    np.testing.assert_array_equal(before[0], after[0])  # identical: both hold the fp16 values
    assert before[1] == after[1]
    assert loaded.metadata == {"model": "m", "pooling": "mean"} and len(loaded) == 400
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]  # no staging folder left


def test_float32_storage(vectors, ids, tmp_path):
    folder = write_index(tmp_path / "idx", ids, vectors, dtype="float32")
    np.testing.assert_array_equal(np.load(folder / "embeddings-00000.npy"), vectors)
    scores, _ = open_index(folder).search(vectors[:1], 1)
    assert scores[0, 0] == pytest.approx(float(vectors[0] @ vectors[0]), rel=1e-6)


@pytest.mark.bad_input
def test_fp16_overflow_is_refused(ids, tmp_path):
    big = np.full((3, DIM), 1e5, dtype=np.float32)
    with pytest.raises(ValueError, match="fp16 range"):
        temporary_index(ids[:3], big, show_progress=False)
    with pytest.raises(ValueError, match="NaN"):
        write_index(tmp_path / "nan", ids[:3], np.full((3, DIM), np.nan, dtype=np.float32))
    assert not (tmp_path / "nan").exists()


@pytest.mark.parametrize("factory", ["HNSW32", "IVF8,Flat", "IVF4,PQ8x4"])
def test_approximate_factories_build_search_and_round_trip(vectors, ids, tmp_path, factory):
    index = temporary_index(ids, vectors, factory=factory, show_progress=False)
    assert isinstance(index, AnnIndex)
    scores, found = index.search(vectors[:50], 5, show_progress=False)
    best = [ids[j] for j in brute_force(vectors, vectors[:50], 1)[:, 0]]
    if "PQ" not in factory:  # HNSW and IVF-Flat (8 lists, all probed) find the exact best document
        assert np.mean([row[0] == b for row, b in zip(found, best)]) >= 0.95
    else:  # PQ codes are lossy: the exact best should still be among the top 5 most of the time
        assert np.mean([b in row for row, b in zip(found, best)]) >= 0.5
    # `contriever index --index-factory`: the ANN built over the folder is its default searcher
    folder = write_index(tmp_path / "idx", ids, vectors)
    build_ann(folder, factory, show_progress=False)
    record_factory(folder, factory)
    assert (folder / "ann" / ann_name(factory) / "index.faiss").exists()
    loaded, _ = load_for_search(folder)
    assert isinstance(loaded, AnnIndex) and loaded.factory == factory
    scores2, found2 = loaded.search(vectors[:50], 5, show_progress=False)
    again, _ = load_for_search(folder)
    np.testing.assert_array_equal(scores2, again.search(vectors[:50], 5, show_progress=False)[0])
    if factory != "HNSW32":  # trained on the same rows with the same seed: the same index
        np.testing.assert_array_equal(scores, scores2)
        assert found == found2
    np.testing.assert_array_equal(np.load(folder / "embeddings-00000.npy"), vectors.astype(np.float16))


def test_training_needs_enough_vectors(vectors, ids):
    with pytest.raises(ValueError, match=r"1024 IVF lists but only 400 vectors"):
        check_factory(DIM, "IVF1024,Flat", len(vectors))
    with pytest.raises(ValueError, match=r"1024 IVF lists but only 400 vectors"):
        temporary_index(ids, vectors, factory="IVF1024,Flat", show_progress=False)
    with pytest.raises(ValueError, match=r"cannot train index 'IVF4,PQ4'"):  # 8-bit PQ needs 256 vectors
        temporary_index(ids[:100], vectors[:100], factory="IVF4,PQ4", show_progress=False)


@pytest.mark.bad_input
def test_bad_factory_string():
    with pytest.raises(ValueError, match="FAISS cannot make index 'Bogus'"):
        check_factory(DIM, "Bogus")
    with pytest.raises(ValueError, match="multiple of the number of subquantizers"):
        check_factory(DIM, "IVF4,PQ5")


def test_k_larger_than_the_index(vectors, ids):
    index = temporary_index(ids[:7], vectors[:7], show_progress=False)
    scores, found = index.search(vectors[:2], 100)
    assert scores.shape == (2, 7) and all(len(row) == 7 for row in found)
    assert all(d.startswith("doc-") for row in found for d in row)


def test_approximate_index_drops_missing_results(vectors, ids):
    index = temporary_index(ids, vectors, factory="IVF40,Flat", show_progress=False)
    index.set_params(nprobe=1)  # one list of ~10 vectors: fewer than k
    scores, found = index.search(vectors[:5], 50, show_progress=False)
    assert scores.shape == (5, 50)
    for row_scores, row_ids in zip(scores, found):
        assert 0 < len(row_ids) < 50 and "-1" not in row_ids
        assert np.isneginf(row_scores[len(row_ids) :]).all() and np.isfinite(row_scores[: len(row_ids)]).all()


def test_shards_of_any_size_search_as_one(vectors, ids, tmp_path):
    whole = open_index(write_index(tmp_path / "whole", ids, vectors))
    parts = open_index(write_index(tmp_path / "parts", ids, vectors, shard_rows=33))
    assert parts.num_shards == 13
    a, b = whole.search(vectors[:10], 10), parts.search(vectors[:10], 10)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1] == b[1]


def test_input_checks(vectors, ids, tmp_path):
    with pytest.raises(ValueError, match="400 vectors but 3 ids"):
        write_index(tmp_path / "idx", ids[:3], vectors)
    index = temporary_index(ids, vectors, show_progress=False)
    with pytest.raises(ValueError, match=r"shape \[n, 16\]"):
        index.search(np.zeros((1, 8), dtype=np.float32), 3)
    with pytest.raises(ValueError, match="line break"):
        write_index(tmp_path / "idx", ["a\nb"], vectors[:1])
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        write_index(tmp_path / "precious", ids, vectors)
    assert (tmp_path / "precious" / "notes.txt").exists()


def test_search_settings_pick_the_searcher(vectors, ids, tmp_path):
    folder = write_index(tmp_path / "idx", ids, vectors)
    exact, store = load_for_search(folder)
    assert isinstance(exact, ShardedIndex) and store is None
    with pytest.raises(UsageError, match="add --ann NAME"):
        load_for_search(folder, SearchSettings(nprobe=4))
    build_ann(folder, "IVF8,PQ4", name="pq", show_progress=False)
    approx, _ = load_for_search(folder, SearchSettings(ann="pq", nprobe=8, rerank=50))
    assert isinstance(approx, AnnIndex) and approx.rerank == 50 and approx.search_params == {"nprobe": 8}
    _, found = approx.search(vectors[:20], 1, show_progress=False)  # re-scored exactly: the exact best
    assert found == exact.search(vectors[:20], 1)[1]


@pytest.mark.bad_input
def test_a_folder_with_an_old_faiss_file_says_how_to_build_its_ann(vectors, ids, tmp_path):
    folder = write_index(tmp_path / "idx", ids[:10], vectors[:10])
    manifest = json.loads((folder / "index.json").read_text())
    manifest.update(factory="HNSW32", faiss_file="index.faiss", search_params={"efSearch": 128})
    (folder / "index.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=r"no ANN index named 'HNSW32'.*contriever ann-build"):
        load_for_search(folder)
    exact = open_index(folder)  # its shards are whole: exact search still reads them
    assert exact.search(vectors[:1], 1)[1] == [["doc-0"]]


@pytest.mark.bad_input
def test_load_errors(vectors, ids, tmp_path):
    with pytest.raises(DataError, match="not an index folder"):
        open_index(tmp_path / "missing")
    folder = write_index(tmp_path / "idx", ids[:10], vectors[:10])
    (folder / "ids-00000.txt").write_text("only-one\n")
    with pytest.raises(DataError, match=r"ids-00000\.txt: is 9 bytes, index.json says"):
        open_index(folder)


def test_a_full_disk_while_saving_keeps_the_previous_index(vectors, ids, tmp_path):
    folder = write_index(tmp_path / "idx", ids[:10], vectors[:10])
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    script = (
        "import sys, numpy as np\n"
        "from contriever.io import DiskFullError, ignore_file_size_signal\n"
        "from contriever.retrieval.shards import write_index\n"
        "ignore_file_size_signal()\n"
        "vectors = np.random.default_rng(0).standard_normal((50000, 16)).astype(np.float32)\n"
        "try:\n"
        "    write_index(sys.argv[1], [str(i) for i in range(50000)], vectors)\n"
        "except DiskFullError as error:\n"
        "    print(error)\n"
    )
    result = run_with_file_size_limit(["-c", script, str(folder)], 128 * 1024)
    assert result.stdout.startswith(f"{folder / 'ids-00000.txt'}: disk full (File too large)"), result.stderr
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]


def test_reads_format_version_1(vectors, ids, tmp_path):
    """Folders written before the per-shard ids (one ids.txt, shard names only) still load."""
    folder = tmp_path / "v1"
    folder.mkdir()
    stored = vectors[:10].astype(np.float16)
    np.save(folder / "embeddings-00000.npy", stored[:6])
    np.save(folder / "embeddings-00001.npy", stored[6:])
    (folder / "ids.txt").write_text("".join(f"{i}\n" for i in ids[:10]))
    info = {"format_version": 1, "dim": DIM, "count": 10, "factory": "Flat", "dtype": "float16"}
    info["shards"] = ["embeddings-00000.npy", "embeddings-00001.npy"]
    (folder / "index.json").write_text(json.dumps(info))
    loaded = open_index(folder)
    assert loaded.ids == ids[:10]
    np.testing.assert_array_equal(loaded.embeddings(), stored)
    (folder / "ids.txt").write_text("only-one\n")
    with pytest.raises(DataError, match=r"ids\.txt: expected 10 ids"):
        open_index(folder)


def test_threads():
    assert available_cpus() >= 1
    assert set_faiss_threads(1) == 1
    assert set_faiss_threads() >= 1
