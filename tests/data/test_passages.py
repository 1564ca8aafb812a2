"""Documents to passages: the 100-word split, the three input formats, bad input."""

from __future__ import annotations

import gzip
import json

import pytest

from contriever.data.passages import (
    PassageSettings,
    ReadStats,
    doc_id_of,
    fingerprint_files,
    iter_passages,
    split_words,
)
from contriever.errors import DataError


def words(n: int, prefix: str = "w") -> str:
    return " ".join(f"{prefix}{i}" for i in range(n))


def test_split_words_windows():
    pieces = split_words(words(250), 100)
    assert [len(p.split()) for p in pieces] == [100, 100, 50]
    assert " ".join(pieces).split() == words(250).split()  # no overlap: every word once, in order
    assert [len(p.split()) for p in split_words(words(200), 100)] == [100, 100]  # no empty tail
    overlapped = split_words(words(25), 10, overlap=3)
    assert [p.split()[0] for p in overlapped] == ["w0", "w7", "w14", "w21"]  # 3 words shared
    assert overlapped[-1].split() == ["w21", "w22", "w23", "w24"]
    assert split_words("  a \n b\tc ", 0) == ["a b c"] and split_words("   ", 100) == []
    with pytest.raises(ValueError, match="smaller than --words"):
        PassageSettings(10, 10)


def test_passage_ids_and_titles(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text(
        json.dumps({"_id": "a#1", "title": "Alpha  Title", "text": words(150)})
        + "\n"
        + json.dumps({"id": 7, "text": words(20)})  # the enwiki sample's "id"; an integer id
        + "\n"
    )
    passages = [p for p, _ in iter_passages([path], PassageSettings(100))]
    assert [p.id for p in passages] == ["a#1#0", "a#1#1", "7#0"]
    assert [doc_id_of(p.id) for p in passages] == ["a#1", "a#1", "7"]
    assert [p.title for p in passages] == ["Alpha Title", "Alpha Title", ""]
    whole = [p for p, _ in iter_passages([path])]  # words=0: documents whole, ids unchanged
    assert [p.id for p in whole] == ["a#1", "7"] and whole[0].text == words(150)


def test_dpr_tsv_and_plain_text(tmp_path):
    tsv = tmp_path / "psgs.tsv"
    tsv.write_text('id\ttext\ttitle\n1\t"Aaron ( or ; ""Ahärôn"") was a prophet"\tAaron\n2\tplain text\tB\n')
    passages = [p for p, _ in iter_passages([tsv])]
    assert [(p.id, p.title, p.text) for p in passages] == [
        ("1", "Aaron", 'Aaron ( or ; "Ahärôn") was a prophet'),
        ("2", "B", "plain text"),
    ]
    text = tmp_path / "docs.txt.gz"
    with gzip.open(text, "wt") as handle:
        handle.write("first document\n\nthird document\n")
    stats = ReadStats()
    passages = [p for p, _ in iter_passages([text], stats=stats)]
    assert [p.id for p in passages] == ["docs:1", "docs:3"]
    assert stats.empty == 1 and stats.documents == 2


def test_bad_lines_name_file_and_line(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text(
        '{"_id": "a", "text": "ok"}\nnot json\n{"_id": "c"}\n{"text": "no id"}\n{"_id": "e", "text": ""}\n'
    )
    with pytest.raises(DataError, match=r"corpus\.jsonl:2: not valid JSON"):
        list(iter_passages([path]))
    stats = ReadStats()
    kept = [p.id for p, _ in iter_passages([path], skip_bad=True, stats=stats)]
    assert kept == ["a"]
    assert stats.bad == 3 and stats.empty == 1
    assert "corpus.jsonl:3: field 'text' is missing" in stats.bad_examples[1]
    assert "corpus.jsonl:4: field '_id' is missing" in stats.bad_examples[2]
    tsv = tmp_path / "bad.tsv"
    tsv.write_text("1\tone\tT\n2\n")
    with pytest.raises(DataError, match=r"bad\.tsv:2: expected 'id<TAB>text<TAB>title'"):
        list(iter_passages([tsv]))


def test_truncated_gzip_names_the_file(tmp_path):
    path = tmp_path / "corpus.jsonl.gz"
    with gzip.open(path, "wt") as handle:
        for i in range(2000):
            handle.write(json.dumps({"_id": str(i), "text": words(50)}) + "\n")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(
        DataError, match=r"corpus\.jsonl\.gz:\d+: cannot read the file .*truncated or corrupt gzip"
    ):
        list(iter_passages([path]))


def test_fingerprint_follows_content(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("one\n")
    first = fingerprint_files([path])
    assert first == fingerprint_files([path]) and first["files"][0]["bytes"] == 4
    path.write_text("two\n")
    assert fingerprint_files([path])["fingerprint"] != first["fingerprint"]
    with pytest.raises(DataError, match="no such file"):
        fingerprint_files([tmp_path / "missing.jsonl"])
