"""How the `contriever` command fails: one line on stderr, exit code 2, tracebacks only under --debug."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from contriever.cli import main as cli
from contriever.cli.argtypes import non_negative_int, positive_int
from contriever.cli.main import build_parser, main
from contriever.errors import DataError

pytestmark = pytest.mark.bad_input

CHECKED_INT_TYPES = (positive_int, non_negative_int)


def _integer_options():
    """(command, option, type) for every option of every subcommand that parses a whole number."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for command, subparser in sub.choices.items():
        for action in subparser._actions:
            if action.type is int or action.type in CHECKED_INT_TYPES:
                yield command, action.option_strings[-1], action.type, action.choices


def test_every_whole_number_option_is_checked():
    """No command parses a count or size with a bare `int`: each refuses zero or negative values."""
    unchecked = [
        f"{command} {option}"
        for command, option, kind, choices in _integer_options()
        if kind is int and choices is None
    ]
    assert unchecked == []
    assert any(option == "--k" for _, option, _, _ in _integer_options())


@pytest.mark.parametrize(
    ("command", "option", "kind"),
    [(c, o, t) for c, o, t, choices in _integer_options() if t in CHECKED_INT_TYPES],
)
def test_zero_or_negative_counts_are_refused_while_parsing(command, option, kind, capsys):
    bad = "0" if kind is positive_int else "-1"
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([command, option, bad])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}" in err and bad in err


@pytest.mark.parametrize(
    "argv",
    [
        ["search", "--index", "x", "--k", "0", "query"],
        ["evaluate", "--batch-size", "0"],
        ["mine", "--data", "d", "--model", "bm25", "--output", "o", "--skip-top", "-1"],
        ["mine", "--data", "d", "--model", "bm25", "--output", "o", "--n-keep", "-5"],
        ["mine", "--data", "d", "--model", "bm25", "--output", "o", "--range", "abc"],
        ["mine", "--data", "d", "--model", "bm25", "--output", "o", "--range", "50-10"],
        ["index", "--corpus", "c", "--output", "o", "--batch-size", "ten"],
    ],
)
def test_bad_option_values_exit_2_before_any_work(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "error: argument" in err and "Traceback" not in err


def test_argument_types_accept_good_values():
    assert positive_int("3") == 3
    assert non_negative_int("0") == 0
    with pytest.raises(argparse.ArgumentTypeError, match="whole number"):
        positive_int("2.5")


def _parser_with(func):
    original = build_parser

    def patched():
        built = original()
        sub = next(a for a in built._actions if isinstance(a, argparse._SubParsersAction))
        sub.choices["search"].set_defaults(func=func)
        return built

    return patched


def _raising(error: BaseException):
    def fail(args):
        raise error

    return _parser_with(fail)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (DataError("corpus.jsonl", "field '_id' missing", 7), "error: corpus.jsonl:7: field '_id' missing"),
        (PermissionError(13, "Permission denied", "/runs/out"), "error: /runs/out: Permission denied"),
        (
            OSError(28, "No space left on device", "/runs/x.npy"),
            "error: /runs/x.npy: No space left on device",
        ),
        (FileNotFoundError("model/: no such\nmodel folder"), "error: model/: no such model folder"),
    ],
)
def test_our_errors_and_os_errors_are_one_line_and_exit_2(monkeypatch, capsys, error, expected):
    monkeypatch.setattr(cli, "build_parser", _raising(error))
    assert main(["search", "--index", "x", "q"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == expected


def test_a_value_error_raised_by_our_code_is_a_user_error(monkeypatch, capsys):
    from contriever.retrieval.mining import parse_rank_range

    def fail(args):
        parse_rank_range("9-3")

    monkeypatch.setattr(cli, "build_parser", _parser_with(fail))
    assert main(["search", "--index", "x", "q"]) == 2
    assert "must satisfy 0 <= start < end" in capsys.readouterr().err


def test_a_bug_is_one_line_with_exit_1_and_a_traceback_under_debug(monkeypatch, capsys):
    def bug(args):
        return {}["missing"]

    monkeypatch.setattr(cli, "build_parser", _parser_with(bug))
    assert main(["search", "--index", "x", "q"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error (KeyError" in err and "--debug" in err
    with pytest.raises(KeyError):
        main(["--debug", "search", "--index", "x", "q"])
    with pytest.raises(KeyError):
        main(["search", "--index", "x", "q", "--debug"])  # after the subcommand too


def test_a_value_error_from_a_library_is_a_bug(monkeypatch, capsys):
    def bug(args):
        np.zeros(3).reshape(2, 2)

    monkeypatch.setattr(cli, "build_parser", _parser_with(bug))
    assert main(["search", "--index", "x", "q"]) == 1
    assert "internal error (ValueError" in capsys.readouterr().err


def test_debug_shows_the_traceback_of_a_user_error_too(monkeypatch, capsys):
    def fail(args):
        raise DataError("qrels/test.tsv", "no rows")

    monkeypatch.setattr(cli, "build_parser", _parser_with(fail))
    assert main(["search", "--index", "x", "q", "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().endswith("error: qrels/test.tsv: no rows")


def test_interrupt_exits_130(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", _parser_with(interrupted))
    assert main(["search", "--index", "x", "q"]) == 130
    assert capsys.readouterr().err.strip() == "interrupted"


# ----- end to end: bad data and bad requests, one line, exit 2, nothing written ---------------------------
GOOD_DOCS = [
    ("d1", "Scurvy comes from a lack of vitamin C."),
    ("d2", "Rickets comes from a lack of vitamin D."),
]


def write_beir(folder: Path, docs=GOOD_DOCS, queries=(("q1", "scurvy cause"),), qrels="q1\td1\t1\n") -> Path:
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "text": t}) + "\n" for d, t in docs))
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries)
    )
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + qrels)
    return folder


@pytest.fixture
def tiny_model(tiny_encoder, tmp_path) -> Path:
    return tiny_encoder.save(tmp_path / "tiny-model")


@pytest.fixture
def no_encoding(monkeypatch):
    """Fails the test if a corpus is encoded: the error must come before the expensive work."""
    from contriever.model.encoder import Encoder

    def refuse(*args, **kwargs):
        raise AssertionError("the corpus was encoded before the bad input was noticed")

    monkeypatch.setattr(Encoder, "encode_corpus", refuse)
    monkeypatch.setattr(Encoder, "encode", refuse)


def one_line_error(capsys) -> str:
    """The error line, which must end stderr (progress bars of work done before may precede it)."""
    err = capsys.readouterr().err
    lines = [line for line in re.split(r"[\r\n]", err) if line.strip()]
    assert lines and lines[-1].startswith("error: ") and "Traceback" not in err, err
    assert sum(line.startswith("error: ") for line in lines) == 1, err
    return lines[-1]


@pytest.mark.parametrize("system", ["bm25", "dense"])
@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"docs": []}, "no documents: the corpus is empty"),
        ({"qrels": ""}, "no judgments"),
        ({"qrels": "q1\tnot-there\t1\n"}, "none of the 1 judged documents is in the corpus"),
        ({"docs": [("d1 ", "padded id")]}, "document id 'd1 ' has whitespace around it"),
        ({"docs": [("d 1", "spaced id"), ("d1", "x")]}, "contain whitespace"),
    ],
)
def test_evaluate_refuses_bad_data_before_any_work(
    tmp_path, capsys, tiny_model, no_encoding, system, data, expected
):
    capsys.readouterr()  # what the fixtures printed
    folder = write_beir(tmp_path / "data", **data)
    model = "bm25" if system == "bm25" else str(tiny_model)
    output = tmp_path / "out"
    assert main(["evaluate", "--data", str(folder), "--model", model, "--output", str(output)]) == 2
    assert expected in one_line_error(capsys)
    assert not output.exists()


def test_evaluate_checks_the_index_factory_before_encoding(tmp_path, capsys, tiny_model, no_encoding):
    capsys.readouterr()  # what the fixtures printed
    folder = write_beir(tmp_path / "data")
    argv = ["evaluate", "--data", str(folder), "--model", str(tiny_model)]
    assert main([*argv, "--index-factory", "HNSW32,Nonsense"]) == 2
    assert "FAISS cannot make index 'HNSW32,Nonsense'" in one_line_error(capsys)
    assert main([*argv, "--index-factory", "IVF64,Flat"]) == 2
    assert "64 IVF lists but only 2 vectors" in one_line_error(capsys)


def test_evaluate_gives_each_system_its_own_folder_when_paths_end_alike(tiny_encoder, tmp_path, capsys):
    folder = write_beir(tmp_path / "data")
    tail = "experiment/checkpoints/final-model-after-fine-tuning-on-the-whole-set"  # > 60 characters
    first = tiny_encoder.save(tmp_path / "a" / tail)
    second = tiny_encoder.save(tmp_path / "b" / tail)
    out = tmp_path / "out"
    argv = ["evaluate", "--data", str(folder), "--model", str(first), "--model", str(second)]
    assert main([*argv, "--output", str(out), "--k", "2"]) == 0
    written = sorted(out.glob("*/metrics.json"))
    assert len(written) == 2
    assert {json.loads(p.read_text())["meta"]["model"] for p in written} == {str(first), str(second)}
    capsys.readouterr()
    assert main(["evaluate", "--data", str(folder), "--model", "bm25", "--model", "bm25"]) == 2
    assert "--model bm25 is given twice" in one_line_error(capsys)


def test_evaluate_warns_about_empty_queries_and_records_it(tmp_path, caplog):
    folder = write_beir(
        tmp_path / "data", queries=(("q1", "scurvy"), ("q2", "")), qrels="q1\td1\t1\nq2\td2\t1\n"
    )
    assert main(["evaluate", "--data", str(folder), "--model", "bm25", "--output", str(tmp_path / "o")]) == 0
    assert "1 of 2 evaluated queries have empty text" in caplog.text
    meta = json.loads((tmp_path / "o" / "metrics.json").read_text())["meta"]
    assert len(meta["warnings"]) == 1


def test_an_output_that_is_a_file_is_refused_while_parsing(tmp_path, capsys):
    existing = tmp_path / "results.txt"
    existing.write_text("keep me")
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--data", str(tmp_path), "--output", str(existing)])
    assert exit_info.value.code == 2 and "is an existing file" in capsys.readouterr().err
    assert existing.read_text() == "keep me"
    with pytest.raises(SystemExit):
        main(["mine", "--data", "d", "--model", "bm25", "--output", str(tmp_path)])
    assert "is an existing folder" in capsys.readouterr().err


def test_an_output_folder_without_write_permission_is_refused(tmp_path):
    """As root, permission bits do not stop writes: the command then runs as `nobody` (setpriv)."""
    base = Path(tempfile.mkdtemp(prefix="contriever-perm-"))
    try:
        base.chmod(0o755)
        locked = base / "locked"
        locked.mkdir(mode=0o555)
        locked.chmod(0o555)
        argv = ["evaluate", "--data", str(base), "--model", "bm25", "--output", str(locked / "out")]
        command = [
            sys.executable,
            "-c",
            "import sys; from contriever.cli.main import main; sys.exit(main(sys.argv[1:]))",
            *argv,
        ]
        if os.geteuid() == 0:
            if shutil.which("setpriv") is None:
                pytest.skip(
                    "running as root, where permission bits do not stop writes, and no setpriv to drop to nobody"
                )
            command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
        result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=base, timeout=120)
        if os.geteuid() == 0 and "ModuleNotFoundError" in result.stderr:
            pytest.skip(
                f"user nobody cannot import contriever here: {result.stderr.strip().splitlines()[-1]}"
            )
        assert result.returncode == 2, result.stderr
        assert f"no permission to write in {locked}" in result.stderr
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)
        shutil.rmtree(base)


def test_index_refuses_a_bad_factory_and_an_empty_corpus_before_encoding(
    tmp_path, tiny_model, no_encoding, capsys
):
    capsys.readouterr()  # what the fixtures printed
    folder = write_beir(tmp_path / "data")
    out = tmp_path / "idx"
    argv = ["index", "--data", str(folder), "--model", str(tiny_model), "--output", str(out)]
    assert main([*argv, "--index-factory", "NotAnIndex"]) == 2
    assert "FAISS cannot make index 'NotAnIndex'" in one_line_error(capsys)
    assert not out.exists()
    write_beir(folder, docs=[])
    assert main(argv) == 2
    assert "every document was empty" in one_line_error(capsys)


def test_search_refuses_an_empty_query_a_model_of_another_size_and_a_nan_shard(tmp_path, tiny_model, capsys):
    from contriever.model.encoder import Encoder

    folder = write_beir(tmp_path / "data")
    index = tmp_path / "idx"
    assert main(["index", "--data", str(folder), "--model", str(tiny_model), "--output", str(index)]) == 0
    capsys.readouterr()
    assert main(["search", "--index", str(index), "fine", ""]) == 2
    assert "query 2 is empty" in one_line_error(capsys)

    wider = Encoder.from_scratch(
        hidden_size=48, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, seed=0
    ).save(tmp_path / "wider")
    assert main(["search", "--index", str(index), "--model", str(wider), "scurvy"]) == 2
    assert "makes 48-dim vectors but the index" in one_line_error(capsys)

    shard = index / "embeddings-00000.npy"
    vectors = np.load(shard)
    vectors[1, 3] = np.nan
    np.save(shard, vectors)
    assert main(["search", "--index", str(index), "scurvy"]) == 2  # its checksum says it changed
    err = one_line_error(capsys)
    assert str(shard) in err and "contents changed" in err
    # a folder written before checksums (none recorded) still finds the NaN
    manifest = json.loads((index / "index.json").read_text())
    del manifest["shards"][0]["vectors_checksum"]
    (index / "index.json").write_text(json.dumps(manifest))
    assert main(["search", "--index", str(index), "scurvy"]) == 2
    err = one_line_error(capsys)
    assert str(shard) in err and "NaN" in err


def test_mine_that_would_keep_no_negative_is_an_error_and_writes_nothing(tmp_path, capsys):
    folder = write_beir(tmp_path / "data")
    (folder / "qrels" / "train.tsv").write_text("q1\td1\t1\n")
    out = tmp_path / "mined.jsonl"
    argv = ["mine", "--data", str(folder), "--model", "bm25", "--output", str(out)]
    assert main([*argv, "--skip-top", "50", "--k", "5"]) == 2
    assert "skip_top=50 skips every one of the 5 candidates" in one_line_error(capsys)
    assert main([*argv, "--skip-top", "1", "--k", "5"]) == 2  # one non-positive document, skipped
    assert "no hard negative was found for any of the 1 queries" in one_line_error(capsys)
    assert not out.exists()
