"""The last tracebacks, wrong exit codes and silent answers of issue 20's 229-case fault sweep: each
is now one line on stderr and exit code 2 (or, for an over-long max length, one notice)."""

from __future__ import annotations

import io
import json
import re
import socket
import sys
from pathlib import Path

import numpy as np
import pytest

from contriever.cli.main import main

pytestmark = pytest.mark.bad_input


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in re.split(r"[\r\n]", err) if line.strip()]
    assert lines and lines[-1].startswith("error: ") and "Traceback" not in err, err
    return lines[-1]


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_model) -> Path:
    """An index folder of 30 documents made by `contriever index` with the tiny model."""
    root = tmp_path_factory.mktemp("sweep")
    corpus = root / "corpus.jsonl"
    corpus.write_text(
        "".join(
            json.dumps({"_id": f"d{i}", "title": f"t{i}", "text": f"vitamin {i} scurvy"}) + "\n"
            for i in range(30)
        )
    )
    folder = root / "idx"
    argv = ["index", "--corpus", str(corpus), "--model", str(tiny_model), "--output", str(folder), "--quiet"]
    assert main([*argv, "--no-cache"]) == 0
    return folder


@pytest.fixture
def index(built, tmp_path) -> Path:
    """A private copy of `built`, free to damage."""
    import shutil

    return Path(shutil.copytree(built, tmp_path / "idx"))


def test_search_with_a_line_that_is_not_utf8_on_stdin(index, monkeypatch, capsys):
    stdin = io.TextIOWrapper(io.BytesIO(b"scurvy\ncaf\xe9 au lait\n"), encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", stdin)
    assert main(["search", "--index", str(index)]) == 2
    assert one_line_error(capsys) == "error: <stdin>:2: not UTF-8 text (byte 0xe9 at column 4)"


def test_search_with_a_passage_store_of_random_bytes_or_none(index, capsys):
    store = index / "passages.sqlite"
    store.write_bytes(np.random.default_rng(0).bytes(store.stat().st_size))
    assert main(["search", "--index", str(index), "scurvy"]) == 2
    assert str(store) in one_line_error(capsys)
    store.unlink()  # deleted while index.json records it: ids only, with a warning; verify fails
    assert main(["search", "--index", str(index), "scurvy"]) == 0
    captured = capsys.readouterr()
    assert f"warning: {store}: missing (index.json records it): results show ids only" in captured.err
    assert "d1" in captured.out
    assert main(["verify", str(index)]) == 2
    assert f"{store}: missing (index.json records it)" in capsys.readouterr().out


def test_a_bit_flipped_shard_and_swapped_ids_stop_search(index, capsys):
    ids = index / "ids-00000.txt"
    lines = ids.read_text().splitlines(keepends=True)
    lines[3], lines[4] = lines[4], lines[3]
    ids.write_text("".join(lines))
    assert main(["search", "--index", str(index), "scurvy"]) == 2
    assert one_line_error(capsys).startswith(f"error: {ids}: contents changed")


@pytest.mark.parametrize(
    ("factory", "expected"),
    [
        ("Bogus", "FAISS cannot make index 'Bogus'"),
        ("IVF4096,Flat", "4096 IVF lists but only 30 vectors"),
        ("PQ5", "FAISS cannot make index 'PQ5'"),  # 32 dims: PQ5 does not divide them
    ],
)
def test_ann_build_failures_exit_2(index, capsys, factory, expected):
    assert main(["ann-build", "--index", str(index), "--factory", factory]) == 2
    assert expected in one_line_error(capsys)


def test_ann_build_refuses_a_name_that_escapes_before_writing(index, tmp_path, capsys):
    before = sorted(tmp_path.rglob("*"))
    assert main(["ann-build", "--index", str(index), "--factory", "HNSW8", "--name", "../../escaped"]) == 2
    assert "an ANN name is a folder name" in one_line_error(capsys)
    assert sorted(tmp_path.rglob("*")) == before


def test_evaluate_hybrid_with_an_empty_path_is_refused(tmp_path, capsys, write_beir):
    data = write_beir(tmp_path / "data", {"d1": ("t", "x")}, {"q1": "x"}, {"test": [("q1", "d1", 1)]})
    assert main(["evaluate", "--data", str(data), "--model", "hybrid:"]) == 2
    assert "hybrid: names no model" in one_line_error(capsys)


def test_a_max_length_beyond_the_position_table_is_capped_with_one_notice(tmp_path, capsys):
    from contriever.model.encoder import Encoder

    short = Encoder.from_scratch(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        seed=0,
        max_position_embeddings=64,
    ).save(tmp_path / "short")  # its tokenizer allows 512 tokens, its position table 64
    capsys.readouterr()
    encoder = Encoder.load(short, max_length=1000)
    assert encoder.max_length == 64
    vectors = encoder.encode_queries(["scurvy " * 20_000, "vitamin"], show_progress=False)
    assert vectors.shape == (2, 32) and np.isfinite(vectors).all()
    Encoder.load(short, max_length=1000)
    err = capsys.readouterr().err
    assert err.count("max length 1000 is more than the model's position table holds (64 tokens)") == 1


def test_serve_on_a_busy_port_or_a_missing_index_exits_2(built, tmp_path, capsys):
    pytest.importorskip("fastapi")
    assert main(["serve", "--index", str(tmp_path / "absent"), "--port", "0"]) == 2
    assert "absent" in one_line_error(capsys)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert main(["serve", "--index", str(built), "--port", str(port)]) == 2
        assert f"cannot listen on 127.0.0.1:{port}" in one_line_error(capsys)
