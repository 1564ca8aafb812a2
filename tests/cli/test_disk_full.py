"""A full disk (a file-size limit in a child process): one line naming the file, exit code non-zero,
the previous complete output untouched, no traceback, for each command that writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contriever.io import verify_manifest
from tests.limits import one_line_error, run_with_file_size_limit

LIMIT = 64 * 1024  # bytes per file: every output below needs more
WORDS = ["retrieval", "dense", "contrastive", "learning", "query", "document", "passage", "negative"]


def text(i: int, n: int = 40) -> str:
    return " ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(n))


@pytest.fixture(scope="module")
def beir_folder(tmp_path_factory) -> Path:
    """2,000 documents and 60 queries: BM25's run file at k=1000 is far over the limit."""
    folder = tmp_path_factory.mktemp("beir")
    (folder / "qrels").mkdir()
    (folder / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": f"d{i}", "title": "", "text": text(i)}) + "\n" for i in range(2000))
    )
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": f"q{i}", "text": text(i, 5)}) + "\n" for i in range(60))
    )
    (folder / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(60))
    )
    return folder


def contriever(*args: str, limit: int | None = None):
    return run_with_file_size_limit(["-m", "contriever.cli.main", *args], limit or 2**40)


def snapshot(folder: Path) -> dict:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def assert_disk_full(result, file: Path) -> None:
    assert result.returncode != 0
    line = one_line_error(result)
    assert line.startswith(f"error: {file}: disk full (File too large): "), line
    assert "wrote" in line and "nothing was replaced" in line, line


def test_prepare_disk_full(beir_folder, tmp_path):
    out = tmp_path / "prepared"
    first = contriever("prepare", "--input", str(beir_folder / "queries.jsonl"), "--output", str(out))
    assert first.returncode == 0, first.stderr
    before = snapshot(out)
    result = contriever(
        "prepare", "--input", str(beir_folder / "corpus.jsonl"), "--output", str(out), "--workers", "1",
        limit=LIMIT,
    )  # fmt: skip
    assert_disk_full(result, out / "tokens.bin")
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared"]  # no staging folder left
    verify_manifest(out)


def test_evaluate_disk_full_keeps_the_previous_run_and_metrics(beir_folder, tmp_path):
    out = tmp_path / "eval"
    first = contriever(
        "evaluate", "--data", str(beir_folder), "--model", "bm25", "--k", "10", "--output", str(out)
    )
    assert first.returncode == 0, first.stderr
    before = snapshot(out)
    result = contriever(
        "evaluate", "--data", str(beir_folder), "--model", "bm25", "--output", str(out), limit=LIMIT
    )
    assert_disk_full(result, out / "run.trec")
    assert snapshot(out) == before
    assert set(verify_manifest(out)["files"]) == {"run.trec", "metrics.json"}


def test_index_disk_full_is_an_error_and_the_folder_is_not_an_index(beir_folder, tiny_encoder, tmp_path):
    """Once: "indexed 2000 documents", exit 0, a short shard, and `search` failing on mmap lengths."""
    model = tiny_encoder.save(tmp_path / "model")
    out = tmp_path / "index"
    args = ["--data", str(beir_folder), "--model", str(model), "--output", str(out), "--batch-size", "256"]
    result = contriever("index", *args, limit=LIMIT)
    assert result.returncode != 0 and "indexed" not in result.stdout
    line = one_line_error(result)
    assert line.startswith(f"error: {out}/passages.sqlite: disk full ("), line
    search = contriever("search", "--index", str(out), "--model", str(model), "retrieval")
    assert "not an index folder (no index.json in it)" in one_line_error(search)
    finished = contriever("index", *args)  # with room again, the same command finishes the index
    assert finished.returncode == 0, finished.stderr
    assert contriever("search", "--index", str(out), "--model", str(model), "retrieval").returncode == 0


def test_pretrain_disk_full_keeps_the_previous_checkpoint(tmp_path):
    from tests.training.tiny import TINY_MODEL

    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": text(i, 60)}) + "\n" for i in range(200)))
    tokens = tmp_path / "tokens"
    assert (
        contriever("prepare", "--input", str(docs), "--output", str(tokens), "--workers", "1").returncode == 0
    )
    settings = [
        *TINY_MODEL, f'data.folders=["{tokens}"]', "data.chunk_length=32", "loss.kind=inbatch",
        "train.batch_size=4", "train.save_every=2", "train.precision=fp32",
    ]  # fmt: skip
    sets = [arg for setting in settings for arg in ("--set", setting)]
    run = tmp_path / "run"
    first = contriever("pretrain", *sets, "--set", "train.steps=2", "--output", str(run))
    assert first.returncode == 0, first.stderr
    before = snapshot(run)
    # The tiny model's checkpoint (embeddings and Adam moments) is ~12 MB: over a 1 MiB limit.
    result = contriever("pretrain", *sets, "--set", "train.steps=4", "--output", str(run), limit=2**20)
    assert_disk_full(result, run / "checkpoint.pt")
    after = snapshot(run)
    for name in ("checkpoint.pt", "model/model.safetensors", "model/manifest.json", "summary.json"):
        assert after[name] == before[name], name
    verify_manifest(run)
