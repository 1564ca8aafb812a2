"""Streamed, sharded, resumable encoding: exactly once over parts, resume after SIGKILL, refusals,
the encode cache, a full disk."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from contriever.data.documents import document_text
from contriever.data.passages import PassageSettings
from contriever.errors import ConfigError, DataError
from contriever.io import FolderLockedError
from contriever.model.encoder import Encoder
from contriever.retrieval.encode import FolderSettings, build_index, owned_shards, resolve_part
from contriever.retrieval.settings import EncodingSettings
from contriever.retrieval.shards import open_index
from contriever.retrieval.store import PassageStore

SETTINGS = PassageSettings(words=12, overlap=0)


def write_corpus(path: Path, docs: int = 9, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    with open(path, "w") as handle:
        for i in range(docs):
            text = " ".join(f"word{rng.integers(500)}" for _ in range(int(rng.integers(5, 40))))
            handle.write(json.dumps({"_id": f"doc{i}", "title": f"Title {i}", "text": text}) + "\n")
    return path


@pytest.fixture
def corpus(tmp_path) -> Path:
    return write_corpus(tmp_path / "corpus.jsonl")


def build(
    corpus, encoder, folder, passages=SETTINGS, shard_rows=4, use_cache=False, skip_bad=False, **kwargs
):
    encoding = EncodingSettings(words=passages.words, overlap=passages.overlap, use_cache=use_cache)
    layout = FolderSettings(shard_rows, skip_bad=skip_bad)
    return build_index([corpus], encoder, folder, encoding, layout=layout, show_progress=False, **kwargs)


def test_one_process_index_holds_every_passage(corpus, tiny_encoder, tmp_path):
    summary = build(corpus, tiny_encoder, tmp_path / "idx")
    index = open_index(tmp_path / "idx")
    assert summary["complete"] and len(index) == summary["passages"] == summary["read"]["passages"]
    assert summary["encoded"] == index.num_shards == -(-len(index) // 4)
    passages = index.passages(range(len(index)))
    assert [p["id"] for p in passages] == index.ids
    assert index.ids[0] == "doc0#0" and passages[0]["title"] == "Title 0"
    texts = [document_text(p) for p in passages]
    expected = tiny_encoder.encode(texts[:4], 128, show_progress=False).astype(np.float16)
    np.testing.assert_array_equal(np.asarray(index.vectors(0)), expected)
    meta = index.metadata
    assert meta["passages"] == {"words": 12, "overlap": 0} and meta["pooling"] == "mean"
    assert meta["dim"] == 32 and len(meta["input_fingerprint"]) == 32
    again = build(corpus, tiny_encoder, tmp_path / "idx")  # a finished index: nothing to do
    assert again["complete"] and again["encoded"] == 0


@pytest.mark.parametrize("parts", [1, 2, 3, 4, 7, 11])
def test_every_passage_encoded_exactly_once_for_any_part_count(corpus, tiny_encoder, tmp_path, parts):
    """Parts run one after another here (as a job array's jobs may); 9 documents make a passage
    count that no part count divides, and 11 parts outnumber the shards."""
    reference = tmp_path / "one"
    build(corpus, tiny_encoder, reference)
    folder = tmp_path / f"parts-{parts}"
    encoded = []
    for part in range(parts):
        summary = build(corpus, tiny_encoder, folder, part=(part, parts))
        encoded.append(summary["encoded"])
    assert summary["complete"]  # the last part to finish wrote index.json
    one, many = open_index(reference), open_index(folder)
    assert sum(encoded) == one.num_shards  # each shard exactly once
    assert many.ids == one.ids and len(set(many.ids)) == len(many.ids)
    np.testing.assert_array_equal(many.embeddings(), one.embeddings())


def test_owned_shards_and_parts():
    assert sorted(s for i in range(3) for s in owned_shards(10, (i, 3))) == list(range(10))
    assert owned_shards(2, (5, 7)) == []
    assert resolve_part(None, {}) == (0, 1)
    assert resolve_part(None, {"RANK": "1", "WORLD_SIZE": "2"}) == (1, 2)
    assert resolve_part("2/3", {"RANK": "1", "WORLD_SIZE": "2"}) == (5, 6)  # job array of torchrun jobs
    with pytest.raises(ConfigError, match="need 0 <= I < N"):
        resolve_part("3/3", {})
    with pytest.raises(ConfigError, match="I/N"):
        resolve_part("1-3", {})


KILLER = """
import os, signal, sys
from contriever.retrieval import shards
from contriever.cli.main import main
real, calls = shards._npy_bytes, []
def dying(array):  # SIGKILL while shard 2 is half written (its ids are on disk, its vectors not)
    calls.append(1)
    if len(calls) == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(array)
shards._npy_bytes = dying
sys.exit(main(sys.argv[1:]))
"""


def test_resume_after_sigkill_encodes_only_missing_shards(corpus, tiny_encoder, tmp_path):
    model = tiny_encoder.save(tmp_path / "model")
    args = ["index", "--corpus", str(corpus), "--model", str(model), "--output", str(tmp_path / "idx")]
    args += ["--words", "12", "--shard-size", "4", "--no-cache", "--quiet"]
    killed = subprocess.run([sys.executable, "-c", KILLER, *args], capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr
    assert sorted(p.name for p in (tmp_path / "idx").glob("shard-*.json")) == [
        "shard-00000.json",
        "shard-00001.json",
    ]
    assert (tmp_path / "idx" / "ids-00002.txt").exists()  # the shard being written when killed
    with pytest.raises(DataError, match="incomplete index: 2 of"):
        open_index(tmp_path / "idx")
    resumed = build(corpus, Encoder.load(model), tmp_path / "idx", model=str(model))
    assert resumed["already_done"] == 2 and resumed["encoded"] == resumed["shards"] - 2
    build(corpus, Encoder.load(model), tmp_path / "whole", model=str(model))
    np.testing.assert_array_equal(
        open_index(tmp_path / "idx").embeddings(), open_index(tmp_path / "whole").embeddings()
    )
    assert open_index(tmp_path / "idx").ids == open_index(tmp_path / "whole").ids
    assert not list((tmp_path / "idx").glob(".*.tmp"))  # the killed run's temporary files are gone


def test_other_settings_model_or_corpus_are_refused(corpus, tiny_encoder, tmp_path):
    folder = tmp_path / "idx"
    build(corpus, tiny_encoder, folder, part=(0, 2))  # half done
    with pytest.raises(
        ConfigError, match=r"passages: \{'words': 12, 'overlap': 0\} in the folder, \{'words': 20"
    ):
        build(corpus, tiny_encoder, folder, passages=PassageSettings(20), part=(1, 2))
    other_model = Encoder.from_scratch(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, seed=1
    )
    with pytest.raises(ConfigError, match="model_fingerprint"):
        build(corpus, other_model, folder, part=(1, 2), model=str(other_model.save(tmp_path / "m1")))
    write_corpus(corpus, seed=1)
    with pytest.raises(ConfigError, match="input_fingerprint"):
        build(corpus, tiny_encoder, folder, part=(1, 2))
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not an index folder"):
        build(corpus, tiny_encoder, tmp_path / "notes")


@contextlib.contextmanager
def lock_held_by_another_process(folder: Path, name: str):
    """`contriever.io.folder_lock(folder, name=name)` held by a child process for the block."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from contriever.io import folder_lock\n"
            "with folder_lock(sys.argv[1], 'index', name=sys.argv[2]):\n"
            "    print('held', flush=True); sys.stdin.read()",
            str(folder),
            name,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder.pid
    finally:
        holder.stdin.close()
        holder.wait(30)


def test_a_second_writer_is_refused(corpus, tiny_encoder, tmp_path):
    from contriever.io import LOCK_NAME

    folder = tmp_path / "idx"
    with lock_held_by_another_process(folder, LOCK_NAME) as pid:  # another `contriever index`
        with pytest.raises(
            FolderLockedError, match=f"in use by another process \\(`contriever index`, pid {pid}"
        ):
            build(corpus, tiny_encoder, folder)
        with pytest.raises(FolderLockedError):
            build(corpus, tiny_encoder, folder, part=(0, 2))
    with lock_held_by_another_process(folder, ".lock-part-1-of-2"):  # the same part twice
        build(corpus, tiny_encoder, folder, part=(0, 2))
        with pytest.raises(FolderLockedError):
            build(corpus, tiny_encoder, folder, part=(1, 2))


def test_full_disk_leaves_the_shard_absent_and_the_index_unloadable(
    corpus, tiny_encoder, tmp_path, monkeypatch
):
    from contriever.retrieval import shards

    real, calls = shards._write_summed, []

    def full(path, data):
        calls.append(path.name)
        if path.name == "embeddings-00001.npy":
            raise OSError(28, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(shards, "_write_summed", full)
    with pytest.raises(OSError, match="No space"):
        build(corpus, tiny_encoder, tmp_path / "idx")
    assert not (tmp_path / "idx" / "embeddings-00001.npy").exists()
    assert not (tmp_path / "idx" / "index.json").exists()
    with pytest.raises(DataError, match="incomplete index: 1 of"):
        open_index(tmp_path / "idx")
    monkeypatch.setattr(shards, "_write_summed", real)
    assert build(corpus, tiny_encoder, tmp_path / "idx")["already_done"] == 1


def test_duplicate_ids_and_bad_lines(tmp_path, tiny_encoder):
    path = tmp_path / "corpus.jsonl"
    path.write_text('{"_id": "a", "text": "x y"}\n{"_id": "b", "text": ""}\n{"_id": "a", "text": "z"}\n')
    with pytest.raises(
        DataError, match=r"corpus\.jsonl:3: duplicate id 'a' \(first seen in .*corpus\.jsonl line 1\)"
    ):
        build(path, tiny_encoder, tmp_path / "idx", passages=PassageSettings())
    assert not (tmp_path / "idx" / "passages.sqlite").exists()
    path.write_text('{"_id": "a", "text": "x y"}\n{"_id": "b", "text": ""}\n{oops\n')
    with pytest.raises(DataError, match=r"corpus\.jsonl:3: not valid JSON"):
        build(path, tiny_encoder, tmp_path / "idx2")
    summary = build(path, tiny_encoder, tmp_path / "idx3", skip_bad=True)
    assert summary["passages"] == 1 and summary["read"]["bad"] == 1 and summary["read"]["empty"] == 1


def test_the_encode_cache_reuses_vectors(corpus, tiny_encoder, tmp_path, monkeypatch):
    monkeypatch.setenv("CONTRIEVER_CACHE", str(tmp_path / "cache"))
    first = build(corpus, tiny_encoder, tmp_path / "a", use_cache=True)
    second = build(corpus, tiny_encoder, tmp_path / "b", use_cache=True)
    assert first["encoded"] == first["shards"] and second["encoded"] == 0
    assert second["from_cache"] == second["shards"]
    np.testing.assert_array_equal(
        open_index(tmp_path / "a").embeddings(), open_index(tmp_path / "b").embeddings()
    )
    # hard links: the cache costs no second copy
    assert (
        os.stat(tmp_path / "b" / "embeddings-00000.npy").st_ino
        == os.stat(tmp_path / "a" / "embeddings-00000.npy").st_ino
    )
    monkeypatch.setenv("CONTRIEVER_CACHE", "off")
    assert build(corpus, tiny_encoder, tmp_path / "c", use_cache=True)["encoded"] == first["shards"]


def test_query_vectors_come_from_the_cache_the_second_time(tiny_encoder, tmp_path, monkeypatch):
    from contriever.retrieval.encode import CachedQueryEncoder

    calls = []
    encode = tiny_encoder.encode_queries
    monkeypatch.setattr(
        tiny_encoder,
        "encode_queries",
        lambda texts, *a, **kw: calls.append(list(texts)) or encode(texts, *a, **kw),
    )
    cached = CachedQueryEncoder(tiny_encoder, tmp_path / "cache")
    assert cached.dim == tiny_encoder.dim and cached.pooling == tiny_encoder.pooling  # the encoder's own
    queries = ["scurvy and vitamin C", "cells"]
    first = cached.encode_queries(queries, show_progress=False)
    again = CachedQueryEncoder(tiny_encoder, tmp_path / "cache").encode_queries(queries, show_progress=False)
    np.testing.assert_array_equal(first, again)
    assert calls == [queries]  # encoded once
    cached.encode_queries(queries[::-1], show_progress=False)  # other texts (or order): encoded
    (path,) = [
        p
        for p in (tmp_path / "cache" / "queries").glob("*.npy")
        if np.load(p)[0].tolist() == first[0].tolist()
    ]
    path.write_bytes(b"damaged")
    np.testing.assert_array_equal(cached.encode_queries(queries, show_progress=False), first)  # encoded again
    assert len(calls) == 3 and cached.hits == 0


def test_store_random_access(corpus, tiny_encoder, tmp_path):
    build(corpus, tiny_encoder, tmp_path / "idx")
    store = PassageStore(tmp_path / "idx" / "passages.sqlite")
    rows = store.get([5, 0, 5])
    assert [r["row"] for r in rows] == [5, 0, 5] and rows[1]["id"] == "doc0#0"
    assert [pid for pid, _, _ in store.range(0, 3)] == open_index(tmp_path / "idx").ids[:3]
    with pytest.raises(DataError, match="no passage at row"):
        store.get([len(store)])


@pytest.mark.slow  # two fresh processes importing torch take a while on a small machine
def test_torchrun_two_processes_equal_one(corpus, tiny_encoder, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun is not installed beside this Python")
    model = tiny_encoder.save(tmp_path / "model")
    common = ["--corpus", str(corpus), "--model", str(model), "--words", "12", "--shard-size", "4"]
    common += ["--no-cache", "--quiet"]
    two = subprocess.run(
        [
            str(torchrun),
            "--nproc_per_node",
            "2",
            "--no-python",
            Path(sys.executable).with_name("contriever").as_posix(),
        ]
        + ["index", *common, "--output", str(tmp_path / "two")],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert two.returncode == 0, two.stderr[-2000:]
    build(corpus, Encoder.load(model), tmp_path / "one", model=str(model))
    one, many = open_index(tmp_path / "one"), open_index(tmp_path / "two")
    assert many.ids == one.ids
    np.testing.assert_array_equal(many.embeddings(), one.embeddings())
    parts = {
        tuple(json.loads(line)["part"])
        for line in (tmp_path / "two" / "encoding-log.jsonl").read_text().splitlines()
    }
    assert parts == {(0, 2), (1, 2)}


def test_the_batching_used_is_recorded(corpus, tiny_encoder, tmp_path):
    """Each shard's log line says how its batches were cut (the token budget, or --batch-size), and
    the summary `evaluate` records carries the budget."""
    from contriever.model.batching import token_budget

    summary = build(corpus, tiny_encoder, tmp_path / "budget")
    assert summary["token_budget"] == token_budget(tiny_encoder.device)
    log = [json.loads(line) for line in (tmp_path / "budget" / "encoding-log.jsonl").read_text().splitlines()]
    assert log and all(entry["token_budget"] == summary["token_budget"] for entry in log)
    encoding = EncodingSettings(words=SETTINGS.words, batch_size=3, use_cache=False)
    build_index(
        [corpus], tiny_encoder, tmp_path / "fixed", encoding, layout=FolderSettings(4), show_progress=False
    )
    log = [json.loads(line) for line in (tmp_path / "fixed" / "encoding-log.jsonl").read_text().splitlines()]
    assert all(entry["batch_size"] == 3 and "token_budget" not in entry for entry in log)
