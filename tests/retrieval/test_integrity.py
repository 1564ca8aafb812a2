"""Contents, not just sizes (issue 20): checksums recorded as files are written, and every change of a
file's contents that keeps its size caught: a bit flipped in a shard, two id lines swapped, an ANN
copied from another index, a damaged encode cache entry."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from contriever import io
from contriever.errors import DataError, UsageError
from contriever.retrieval import shards
from contriever.retrieval.ann import AnnIndex, build_ann
from contriever.retrieval.shards import open_index, write_index

N, DIM = 300, 16


def make_index(folder: Path, seed: int = 0, ids: list[str] | None = None) -> Path:
    vectors = np.random.default_rng(seed).standard_normal((N, DIM)).astype(np.float32)
    ids = ids or [f"d{i:03d}" for i in range(N)]
    return write_index(folder, ids, vectors, shard_rows=100)


def flip_bit(path: Path, offset_from_end: int = 10, bit: int = 6) -> None:
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 1 << bit
    path.write_bytes(bytes(data))


def test_checksums_are_recorded_from_the_bytes_as_written(tmp_path, monkeypatch):
    folder = make_index(tmp_path / "idx")
    manifest = json.loads((folder / "index.json").read_text())
    for entry in manifest["shards"]:
        assert entry["vectors_checksum"] == io.file_checksum(folder / entry["vectors"])
        assert entry["ids_checksum"] == io.file_checksum(folder / entry["ids"])
        record = json.loads(
            (folder / entry["vectors"].replace("embeddings", "shard").replace(".npy", ".json")).read_text()
        )
        assert record["vectors_checksum"] == entry["vectors_checksum"]
    # a manifest made after atomic_write takes its checksums from the writer: no file is read again
    with io.atomic_write(tmp_path / "other" / "a.bin", "wb") as handle:
        handle.write(b"x" * 1000)
    monkeypatch.setattr(io, "file_checksum", lambda *a, **k: pytest.fail("read the file again"))
    manifest = io.write_manifest(tmp_path / "other")
    assert manifest["checksums"]["a.bin"] == io.checksum_bytes(b"x" * 1000)


@pytest.mark.bad_input
def test_a_bit_flipped_in_a_shard_is_caught(tmp_path, monkeypatch):
    folder = make_index(tmp_path / "idx")
    shard = folder / "embeddings-00001.npy"
    flip_bit(shard)
    # a small folder is checked whole when opened
    with pytest.raises(DataError, match=r"embeddings-00001\.npy: contents changed since it was written"):
        open_index(folder)
    # a big one (here: the threshold lowered) opens on sizes, and exact search checks each shard once
    monkeypatch.setattr(shards, "CHEAP_BYTES", 0)
    index = open_index(folder)
    with pytest.raises(DataError, match=r"embeddings-00001\.npy: contents changed"):
        index.search(np.ones((1, DIM), dtype=np.float32), 5)


@pytest.mark.bad_input
def test_two_swapped_id_lines_are_caught(tmp_path, monkeypatch):
    folder = make_index(tmp_path / "idx")
    path = folder / "ids-00002.txt"
    lines = path.read_text().splitlines(keepends=True)
    lines[0], lines[1] = lines[1], lines[0]
    path.write_text("".join(lines))  # same size, other ids
    with pytest.raises(DataError, match=r"ids-00002\.txt: contents changed"):
        open_index(folder)
    monkeypatch.setattr(shards, "CHEAP_BYTES", 0)  # a big folder: the ids file is checked when read
    index = open_index(folder)
    with pytest.raises(DataError, match=r"ids-00002\.txt: contents changed"):
        index.ids_for([250])


@pytest.mark.bad_input
def test_an_ann_copied_from_another_index_is_refused(tmp_path):
    folder = make_index(tmp_path / "a", seed=0)
    other = make_index(tmp_path / "b", seed=1)  # same rows, dim, ids and file sizes; other vectors
    assert json.loads((folder / "index.json").read_text())["count"] == N
    ann = build_ann(folder, "IVF4,Flat", name="ivf", show_progress=False)
    info = json.loads((ann / "ann.json").read_text())
    assert len(info["source"]["shard_checksums"]) == 3
    shutil.copytree(ann, other / "ann" / "ivf")
    with pytest.raises(DataError, match="built from other vectors.*checksums differ"):
        AnnIndex.load(other, "ivf")
    AnnIndex.load(folder, "ivf")  # its own index: fine


@pytest.mark.bad_input
def test_an_ann_is_not_built_from_a_damaged_shard(tmp_path, monkeypatch):
    folder = make_index(tmp_path / "idx")
    monkeypatch.setattr(shards, "CHEAP_BYTES", 0)
    flip_bit(folder / "embeddings-00000.npy")
    with pytest.raises(DataError, match=r"embeddings-00000\.npy: contents changed"):
        build_ann(folder, "HNSW8", show_progress=False)
    assert not (folder / "ann").exists()


@pytest.mark.bad_input
@pytest.mark.parametrize("name", ["../../escaped", "a/b", "..", ".hidden", "x\\y", ""])
def test_an_ann_name_with_separators_or_dots_is_refused_before_writing(tmp_path, name):
    folder = make_index(tmp_path / "idx")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(UsageError, match="an ANN name is a folder name"):
        build_ann(folder, "HNSW8", name=name, show_progress=False)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def strip_checksums(folder: Path) -> None:
    """Make `folder` look like one written before checksums existed."""
    manifest = json.loads((folder / "index.json").read_text())
    for entry in manifest["shards"]:
        entry.pop("ids_checksum"), entry.pop("vectors_checksum")
    manifest.pop("files", None)
    (folder / "index.json").write_text(json.dumps(manifest))
    for record in folder.glob("shard-*.json"):
        data = json.loads(record.read_text())
        data.pop("ids_checksum"), data.pop("vectors_checksum")
        record.write_text(json.dumps(data))


@pytest.mark.bad_input
def test_folders_written_before_checksums_still_load_with_their_sizes_checked(tmp_path):
    folder = make_index(tmp_path / "idx")
    strip_checksums(folder)
    index = open_index(folder)
    assert not index.has_checksums and len(index.ids) == N
    (folder / "ids-00000.txt").write_text("short\n")
    with pytest.raises(DataError, match=r"ids-00000\.txt: is 6 bytes, index.json says"):
        open_index(folder)


@pytest.mark.bad_input
def test_a_passage_store_of_random_bytes_is_an_error_and_a_deleted_one_a_warning(
    tmp_path, tiny_encoder, capsys
):
    from contriever.retrieval.encode import build_index
    from contriever.retrieval.settings import EncodingSettings
    from contriever.retrieval.store import PassageStore

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": f"d{i}", "text": f"text {i}"}) + "\n" for i in range(12)))
    folder = tmp_path / "idx"
    build_index([corpus], tiny_encoder, folder, EncodingSettings(use_cache=False), show_progress=False)
    store = folder / "passages.sqlite"
    assert json.loads((folder / "index.json").read_text())["files"]["passages.sqlite"]["checksum"] == (
        io.file_checksum(store)
    )
    size = store.stat().st_size
    store.write_bytes(np.random.default_rng(0).bytes(size))
    with pytest.raises(DataError, match=r"passages\.sqlite: not a passage store \(not an SQLite database\)"):
        PassageStore(store)
    with pytest.raises(DataError, match=r"passages\.sqlite: contents changed"):
        open_index(folder)
    store.unlink()
    open_index(folder)  # the vectors and ids are whole: ids only, with a warning
    assert (
        "passages.sqlite: missing (index.json records it): results show ids only" in capsys.readouterr().err
    )


@pytest.mark.bad_input
def test_a_damaged_encode_cache_entry_is_encoded_again_and_the_metrics_equal_a_clean_run(
    tmp_path, tiny_model, write_beir, monkeypatch, capsys
):
    from contriever.evaluation.beir_eval import evaluate_beir

    monkeypatch.setenv("CONTRIEVER_CACHE", str(tmp_path / "cache"))
    docs = {f"d{i}": (f"title {i}", f"scurvy vitamin {i} " * (1 + i % 4)) for i in range(30)}
    queries = {f"q{i}": f"vitamin {i}" for i in range(6)}
    qrels = {"test": [(f"q{i}", f"d{i}", 1) for i in range(6)]}
    data = write_beir(tmp_path / "data", docs, queries, qrels)

    def evaluate():
        metrics = evaluate_beir(data, model=str(tiny_model), show_progress=False, precision="fp32")
        return {key: value for key, value in metrics.items() if key != "meta"}

    clean = evaluate()
    (shard,) = (tmp_path / "cache" / "encodings").glob("*/embeddings-00000.npy")
    vectors = np.load(shard)
    flip_bit(shard, offset_from_end=2 * vectors.size // 2, bit=6)  # an exponent bit, mid-file
    assert not np.array_equal(np.load(shard), vectors)
    capsys.readouterr()
    assert evaluate() == clean
    assert "embeddings-00000.npy: contents changed" in capsys.readouterr().err
    np.testing.assert_array_equal(np.load(shard), vectors)  # the entry was replaced by a good one
    for query_set in (tmp_path / "cache" / "queries").glob("*.npy"):
        flip_bit(query_set, offset_from_end=8)
    assert evaluate() == clean
    assert "damaged cache entry" in capsys.readouterr().err
    (store,) = (tmp_path / "cache" / "encodings").glob("*/passages.sqlite")
    flip_bit(store, offset_from_end=store.stat().st_size // 2)
    assert evaluate() == clean
    assert "passages.sqlite: contents changed" in capsys.readouterr().err
