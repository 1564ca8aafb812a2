"""Approximate indexes built shard by shard from an index folder: recall against exact search, on-disk
IVF lists equal to in-memory ones, and clear errors for missing or stale ANN files.

The data: 2,400 unit vectors in 32 dimensions around 24 cluster centres (noise 0.25 per component,
so neighbours are mostly, not all, in the query's own cluster), saved as a folder of uneven shards;
queries are 40 of the vectors jittered. Random ranking would have recall@10 of 10/2400 = 0.004; the
thresholds below sit below what each index reaches here (measured: HNSW and IVF-Flat with 4 of 16
lists probed 1.0; IVF-PQ and OPQ-IVF-PQ with 8 bytes a vector, 1/16 of the fp32 size, 0.40-0.43: this
noise is full-rank, harder for PQ than real embeddings) and far above chance, so a broken build, a wrong row order or a wrong
shard offset (which returns neighbours of another cluster: recall near 0) fails.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from contriever.errors import DataError
from contriever.retrieval.ann import AnnIndex, ann_name, build_ann, list_ann
from contriever.retrieval.shards import ShardedIndex, open_index, write_index

DIM, N, CLUSTERS, K = 32, 2400, 24, 10
# name: (factory, search settings, minimum mean recall@10 against exact search); OPQ is trained on
# 640 rows (its rotation's training costs seconds a step on a busy 2-core machine)
KINDS = {
    "hnsw": ("HNSW16", {"ef_search": 64}, 0.95),
    "ivf-flat": ("IVF16,Flat", {"nprobe": 4}, 0.9),
    "ivf-pq": ("IVF16,PQ8", {"nprobe": 4}, 0.3),
    "opq-ivf-pq": ("OPQ8,IVF16,PQ8", {"nprobe": 4}, 0.3),
}


def clustered(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(CLUSTERS, DIM))
    vectors = centres[rng.integers(0, CLUSTERS, N)] + 0.25 * rng.normal(size=(N, DIM))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[rng.choice(N, 40, replace=False)] + 0.05 * rng.normal(size=(40, DIM))
    return vectors.astype(np.float32), queries.astype(np.float32)


@pytest.fixture(scope="module")
def data():
    return clustered()


@pytest.fixture
def folder(tmp_path, data):
    vectors, _ = data
    ids = [f"doc{i}" for i in range(N)]
    return write_index(tmp_path / "idx", ids, vectors, shard_rows=700)


def recall(found: list[list[str]], truth: list[list[str]]) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_kind_built_from_shards_finds_the_exact_neighbours(folder, data, kind):
    factory, params, minimum = KINDS[kind]
    _, queries = data
    path = build_ann(folder, factory, train_size=640 if "OPQ" in factory else None, show_progress=False)
    info = json.loads((path / "ann.json").read_text())
    assert info["count"] == N and info["factory"] == factory
    assert (path / "lists.ivfdata").is_file() == ("IVF" in factory)
    assert list_ann(folder) == [ann_name(factory)]
    index = AnnIndex.load(folder, path.name)
    index.set_params(**params)
    _, truth = open_exact(folder).search(queries, K, show_progress=False)
    scores, found = index.search(queries, K, show_progress=False)
    assert recall(found, truth) >= minimum
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first


def open_exact(folder) -> ShardedIndex:
    return open_index(folder)


def test_ivf_flat_probing_every_list_is_exact(folder, data):
    _, queries = data
    build_ann(folder, "IVF16,Flat", show_progress=False)
    index = AnnIndex.load(folder, "IVF16_Flat")
    index.set_params(nprobe=16)
    exact_scores, exact_ids = open_exact(folder).search(queries, K, show_progress=False)
    scores, found = index.search(queries, K, show_progress=False)
    assert recall(found, exact_ids) == 1.0
    np.testing.assert_allclose(scores, exact_scores, atol=1e-5)


def test_reranking_every_candidate_gives_the_exact_search_of_the_shards(folder, data):
    _, queries = data
    index = AnnIndex.load(folder, build_ann(folder, "IVF16,PQ8", show_progress=False).name)
    index.set_params(nprobe=16, rerank=N)
    exact_scores, exact_rows = open_index(folder).search_rows(queries, K)
    scores, rows = index.search_rows(queries, K)
    np.testing.assert_array_equal(rows, exact_rows)
    np.testing.assert_allclose(scores, exact_scores, rtol=1e-6, atol=1e-6)


def test_reranking_recovers_what_compression_gives_up(folder, data):
    _, queries = data
    index = AnnIndex.load(folder, build_ann(folder, "IVF16,PQ8", show_progress=False).name)
    index.set_params(nprobe=4)
    _, truth = open_exact(folder).search(queries, K, show_progress=False)
    _, compressed = index.search(queries, K, show_progress=False)
    index.set_params(rerank=100)
    scores, rows = index.search_rows(queries, K)
    reranked = [index.ids_for(r) for r in rows]
    # measured: 0.43 without; with re-ranking 20, 50, 100 of the 2,400: 0.64, 0.89, 1.0
    assert recall(compressed, truth) < 0.6 and recall(reranked, truth) >= 0.95
    shards = open_index(folder)  # the scores are the exact inner products with the fp16 vectors
    for query, found, found_scores in zip(queries, rows, scores):
        np.testing.assert_allclose(found_scores, shards.vectors_for(found) @ query, rtol=1e-5, atol=1e-6)
    assert np.all(np.diff(scores, axis=1) <= 0)
    with pytest.raises(ValueError, match="rerank must be at least 1"):
        index.set_params(rerank=0)


@pytest.mark.parametrize("factory", ["IVF16,Flat", "IVF16,PQ8"])
def test_on_disk_lists_give_the_same_results_as_in_memory(folder, data, factory):
    _, queries = data
    on_disk = AnnIndex.load(folder, build_ann(folder, factory, show_progress=False).name)
    in_memory = AnnIndex.load(
        folder, build_ann(folder, factory, name="ram", on_disk=False, show_progress=False).name
    )
    assert on_disk.info["lists_file"] == "lists.ivfdata" and in_memory.info["lists_file"] is None
    read_into_ram = AnnIndex.load(folder, on_disk.path.name, mmap=False)
    reference = in_memory.search_rows(queries, K)
    for index in (on_disk, read_into_ram):
        scores, rows = index.search_rows(queries, K)
        np.testing.assert_array_equal(rows, reference[1])
        np.testing.assert_array_equal(scores, reference[0])


def test_the_ann_folder_moves_with_its_index_folder(folder, data, tmp_path):
    _, queries = data
    build_ann(folder, "IVF16,Flat", show_progress=False)
    before = AnnIndex.load(folder, "IVF16_Flat").search_rows(queries, K)
    moved = folder.rename(tmp_path / "elsewhere")
    after = AnnIndex.load(moved, "IVF16_Flat").search_rows(queries, K)
    np.testing.assert_array_equal(before[1], after[1])


class ListSource:
    """The minimal shard protocol, from arrays: what `build_ann` needs of an index folder."""

    def __init__(self, shards):
        self.shards = shards
        self.dim = shards[0].shape[1]
        self.manifest = {"shards": [len(s) for s in shards]}
        self.metadata: dict = {}
        self.largest_read = 0

    def __len__(self):
        return sum(len(s) for s in self.shards)

    def iter_shards(self):
        start = 0
        for shard in self.shards:
            self.largest_read = max(self.largest_read, len(shard))
            yield [f"doc{i}" for i in range(start, start + len(shard))], shard.astype(np.float16)
            start += len(shard)

    def ids_for(self, rows):
        return [f"doc{int(r)}" for r in rows]


def test_vectors_are_read_one_shard_at_a_time(tmp_path, data):
    vectors, queries = data
    source = ListSource(np.array_split(vectors, 7))
    path = build_ann(tmp_path, "IVF16,Flat", source=source, show_progress=False)
    assert source.largest_read == len(source.shards[0])  # never more than one shard in hand
    index = AnnIndex.load(tmp_path, path.name, source=source)
    index.set_params(nprobe=16)
    exact = open_index(write_index(tmp_path / "exact", [f"doc{i}" for i in range(N)], vectors))
    assert recall(index.search(queries, K, show_progress=False)[1], exact.search(queries, K)[1]) == 1.0


def test_missing_or_stale_ann_files_are_clear_errors(folder, data):
    vectors, _ = data
    with pytest.raises(
        DataError, match="no ANN index named 'IVF16_Flat'.*none is built.*contriever ann-build"
    ):
        AnnIndex.load(folder, "IVF16_Flat")
    path = build_ann(folder, "IVF16,Flat", show_progress=False)
    with pytest.raises(DataError, match="built: IVF16_Flat"):
        AnnIndex.load(folder, "HNSW32")
    (path / "lists.ivfdata").unlink()
    with pytest.raises(DataError, match="lists.ivfdata.*missing"):
        AnnIndex.load(folder, "IVF16_Flat")
    # an ANN index copied beside other vectors (here: fewer of them) is refused, never searched
    other_folder = write_index(folder.parent / "other", [f"x{i}" for i in range(2000)], vectors[:2000])
    shutil.copytree(build_ann(folder, "IVF16,Flat", show_progress=False), other_folder / "ann" / "copied")
    with pytest.raises(DataError, match="built from other vectors"):
        AnnIndex.load(other_folder, "copied")


def test_bad_factories_and_parameters_are_clear_errors(folder):
    with pytest.raises(ValueError, match="FAISS cannot make index 'Bogus'"):
        build_ann(folder, "Bogus", show_progress=False)
    with pytest.raises(ValueError, match="4096 IVF lists but only 2400 vectors"):
        build_ann(folder, "IVF4096,Flat", show_progress=False)
    index = AnnIndex.load(folder, build_ann(folder, "HNSW16", show_progress=False).name)
    with pytest.raises(ValueError, match="nprobe applies to IVF indexes"):
        index.set_params(nprobe=8)
    with pytest.raises(ValueError, match="at least 1"):
        index.set_params(ef_search=0)


def test_ann_search_reports_its_progress_batch_by_batch(folder, data):
    """`progress(share)` after each batch of queries, the shares adding up to all of them."""
    _, queries = data
    index = AnnIndex.load(folder, build_ann(folder, "IVF16,Flat", show_progress=False).name)
    shares: list[float] = []
    index.search(queries, K, batch_size=16, show_progress=False, progress=shares.append)
    assert shares == pytest.approx([16 / 40, 16 / 40, 8 / 40])
