"""BEIR folders: loading, and errors that name the file, the line and what is wrong."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from contriever.data.beir import (
    iter_jsonl,
    load_beir,
    load_corpus,
    load_corpus_file,
    load_qrels,
    load_queries,
)
from contriever.errors import DataError

DOCS = [
    {"_id": "d2", "title": "Second", "text": "listed first", "metadata": {}},
    {"_id": "d1", "text": "no title here"},
    {"_id": 7, "title": None, "text": ""},  # integer id, null title, empty text: all allowed
]
QUERIES = [
    {"_id": "q1", "text": "first query"},
    {"_id": "q2", "text": "second"},
    {"_id": "q3", "text": "unjudged"},
]


def write_jsonl(path: Path, rows, gz: bool = False) -> Path:
    text = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def make_folder(root: Path, gz: bool = True, qrels: str | None = None) -> Path:
    (root / "qrels").mkdir(parents=True)
    write_jsonl(root / ("corpus.jsonl.gz" if gz else "corpus.jsonl"), DOCS, gz=gz)
    write_jsonl(root / "queries.jsonl", QUERIES)
    (root / "qrels" / "test.tsv").write_bytes(
        (qrels or "query-id\tcorpus-id\tscore\r\nq2\td1\t2\r\nq1\td2\t1\r\nq1\t7\t0\r\n").encode()
    )
    return root


@pytest.mark.parametrize("gz", [True, False])
def test_load_beir_folder(tmp_path, gz):
    corpus, queries, qrels = load_beir(make_folder(tmp_path, gz=gz))
    assert list(corpus) == ["d2", "d1", "7"]  # file order, ids as strings
    assert corpus["d2"] == {"title": "Second", "text": "listed first"}
    assert corpus["d1"] == {"title": "", "text": "no title here"}
    assert corpus["7"] == {"title": "", "text": ""}
    assert queries == {"q1": "first query", "q2": "second"}  # only judged queries, file order
    assert list(queries) == ["q1", "q2"]
    assert qrels == {"q2": {"d1": 2}, "q1": {"d2": 1, "7": 0}}  # CRLF and header handled, grades kept


def test_loaders_separately(tmp_path):
    folder = make_folder(tmp_path)
    assert len(load_corpus(folder)) == 3
    assert list(load_queries(folder)) == ["q1", "q2", "q3"]
    assert load_qrels(folder, "test")["q2"] == {"d1": 2}
    assert load_corpus_file(folder / "corpus.jsonl.gz") == load_corpus(folder)


def test_iter_jsonl_streams_and_skips_blank_lines(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", ['{"a": 1}', "", "   ", '{"a": 2}'])
    assert list(iter_jsonl(path)) == [{"a": 1}, {"a": 2}]
    assert [line for line, _ in iter_jsonl(path, with_line_numbers=True)] == [1, 4]


def test_qrels_without_header_and_with_blank_lines(tmp_path):
    folder = make_folder(tmp_path, qrels="q1\td1\t1\n\nq2\td2\t3\n")
    assert load_qrels(folder, "test") == {"q1": {"d1": 1}, "q2": {"d2": 3}}


def error_of(call, *args) -> str:
    with pytest.raises(DataError) as info:
        call(*args)
    return str(info.value)


@pytest.mark.bad_input
def test_invalid_json_names_file_and_line(tmp_path):
    folder = make_folder(tmp_path, gz=False)
    write_jsonl(folder / "corpus.jsonl", [DOCS[0], '{"_id": "d9", "text": oops}'])
    message = error_of(load_corpus, folder)
    assert f"{folder / 'corpus.jsonl'}:2:" in message and "not valid JSON" in message


@pytest.mark.bad_input
def test_missing_fields(tmp_path):
    folder = make_folder(tmp_path, gz=False)
    write_jsonl(folder / "corpus.jsonl", [DOCS[0], {"title": "t", "text": "x"}])
    assert "corpus.jsonl:2:" in error_of(load_corpus, folder) and "'_id'" in error_of(load_corpus, folder)
    write_jsonl(folder / "corpus.jsonl", [{"_id": "a", "title": "t"}])
    message = error_of(load_corpus, folder)
    assert "corpus.jsonl:1:" in message and "'text' is missing" in message
    write_jsonl(folder / "queries.jsonl", [{"_id": "q1", "text": "ok"}, {"_id": "q2"}])
    assert "queries.jsonl:2:" in error_of(load_queries, folder)
    write_jsonl(folder / "queries.jsonl", [{"_id": "q1", "text": 3}])
    assert "must be a string" in error_of(load_queries, folder)


@pytest.mark.bad_input
def test_duplicate_ids(tmp_path):
    folder = make_folder(tmp_path, gz=False)
    write_jsonl(folder / "corpus.jsonl", [DOCS[0], DOCS[1], {"_id": "d2", "text": "again"}])
    message = error_of(load_corpus, folder)
    assert "corpus.jsonl:3:" in message and "duplicate document id 'd2'" in message and "line 1" in message
    write_jsonl(folder / "queries.jsonl", [QUERIES[0], QUERIES[0]])
    assert "queries.jsonl:2: duplicate query id 'q1'" in error_of(load_queries, folder)


@pytest.mark.parametrize(
    ("qrels", "line", "expected"),
    [
        ("query-id\tcorpus-id\tscore\nq1\td1\n", 2, "expected 3 tab-separated columns"),
        ("q1\td1\t1\nq1 d2 1\n", 2, "found 1"),
        ("q1\td1\t1\tx\n", 1, "found 4"),
        ("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\thigh\n", 3, "score 'high' is not an integer"),
        ("q1\td1\t1.5\n", 1, "not an integer"),
        ("q1\td1\t1\nq1\td1\t2\n", 2, "listed again"),
    ],
)
@pytest.mark.bad_input
def test_bad_qrels_rows(tmp_path, qrels, line, expected):
    folder = make_folder(tmp_path, qrels=qrels)
    message = error_of(load_qrels, folder, "test")
    assert f"{folder / 'qrels' / 'test.tsv'}:{line}:" in message
    assert expected in message


@pytest.mark.bad_input
def test_missing_folder_says_what_a_beir_folder_needs(tmp_path):
    message = error_of(load_beir, tmp_path / "nowhere")
    assert "nowhere" in message and "corpus.jsonl" in message and "queries.jsonl" in message
    assert "qrels/<split>.tsv" in message and "does not exist" in message


@pytest.mark.bad_input
def test_folder_without_corpus_lists_what_it_found(tmp_path):
    folder = make_folder(tmp_path)
    (folder / "corpus.jsonl.gz").rename(folder / "docs.jsonl")
    message = error_of(load_beir, folder)
    assert "missing corpus.jsonl[.gz]" in message and "found: docs.jsonl, qrels/, queries.jsonl" in message
    assert "no corpus file" in error_of(load_corpus, folder)


@pytest.mark.bad_input
def test_load_beir_reports_every_missing_piece(tmp_path):
    folder = make_folder(tmp_path)
    (folder / "queries.jsonl").unlink()
    message = error_of(load_beir, folder, "dev")
    assert "missing queries.jsonl, qrels/dev.tsv" in message and "qrels exist for: test" in message


@pytest.mark.bad_input
def test_missing_split_lists_available_splits(tmp_path):
    folder = make_folder(tmp_path)
    message = error_of(load_qrels, folder, "dev")
    assert (
        "dev.tsv" in message and "no qrels for split 'dev'" in message and "splits available: test" in message
    )


@pytest.mark.bad_input
def test_qrels_query_missing_from_queries(tmp_path):
    folder = make_folder(tmp_path, qrels="q1\td1\t1\nq404\td1\t1\n")
    assert "q404" in error_of(load_beir, folder)


@pytest.mark.bad_input
def test_truncated_gzip_is_a_data_error(tmp_path):
    folder = make_folder(tmp_path)
    data = (folder / "corpus.jsonl.gz").read_bytes()
    (folder / "corpus.jsonl.gz").write_bytes(data[: len(data) // 2])
    assert "cannot read the file" in error_of(load_corpus, folder)


def test_a_corpus_stored_as_a_link_in_text_is_read_from_its_target(tmp_path):
    shared = make_folder(tmp_path / "shared")
    language = tmp_path / "shared" / "de"
    (language / "qrels").mkdir(parents=True)
    (language / "corpus.jsonl.gz").write_text("../corpus.jsonl.gz\n")  # as a checkout without symlinks
    write_jsonl(language / "queries.jsonl", QUERIES)
    (language / "qrels" / "test.tsv").write_bytes((shared / "qrels" / "test.tsv").read_bytes())
    assert load_beir(language)[0] == load_beir(shared)[0]
    (language / "corpus.jsonl.gz").write_text("../../elsewhere/corpus.jsonl.gz")
    message = error_of(load_corpus, language)
    assert "a symbolic link stored as text" in message and "elsewhere/corpus.jsonl.gz is missing" in message


def test_real_debian_xling_language_folder():
    from tests.conftest import shared_data

    corpus, queries, qrels = load_beir(shared_data("debian-xling") / "de")  # its corpus: a link as text
    assert (len(corpus), len(queries)) == (60000, 2000) and set(queries) == set(qrels)


def test_real_scifact(scifact_dir):
    corpus, queries, qrels = load_beir(scifact_dir, "test")
    assert (len(corpus), len(queries), sum(len(d) for d in qrels.values())) == (5183, 300, 339)
    assert all(set(doc) == {"title", "text"} for doc in corpus.values())
    assert set(queries) == set(qrels)


# ----- bad inputs that used to pass silently or end in a traceback -----------------------------------------
@pytest.mark.bad_input
@pytest.mark.parametrize("gz", [True, False])
def test_a_byte_order_mark_is_accepted_everywhere(tmp_path, gz):
    folder = make_folder(tmp_path, gz=gz)
    bom = b"\xef\xbb\xbf"
    for path in (folder / "queries.jsonl", folder / "qrels" / "test.tsv"):
        path.write_bytes(bom + path.read_bytes())
    corpus_path = folder / ("corpus.jsonl.gz" if gz else "corpus.jsonl")
    raw = gzip.decompress(corpus_path.read_bytes()) if gz else corpus_path.read_bytes()
    corpus_path.write_bytes(gzip.compress(bom + raw) if gz else bom + raw)
    corpus, queries, qrels = load_beir(folder)  # the qrels header is still recognised as one
    assert list(corpus) == ["d2", "d1", "7"] and set(queries) == {"q1", "q2"}
    assert qrels == {"q2": {"d1": 2}, "q1": {"d2": 1, "7": 0}}


@pytest.mark.bad_input
@pytest.mark.parametrize("which", ["corpus", "qrels"])
def test_bytes_that_are_not_utf8_are_reported_on_their_own_line(tmp_path, which):
    """Long lines before the bad byte: a block-decoding reader used to blame line 5 for line 7."""
    folder = make_folder(tmp_path, gz=False)
    if which == "corpus":
        path = folder / "corpus.jsonl"
        lines = [json.dumps({"_id": f"d{i}", "text": "x" * 3000}).encode() for i in range(10)]
        lines[6] = b'{"_id": "d6", "text": "caf\xe9"}'
        expected_column = 27
    else:
        path = folder / "qrels" / "test.tsv"
        lines = [b"query-id\tcorpus-id\tscore"] + [f"q1\t{'d' * 3000}{i}\t1".encode() for i in range(9)]
        lines[6] = b"q1\td\xff\t1"
        expected_column = 5
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(DataError) as error:
        load_corpus(folder) if which == "corpus" else load_qrels(folder)
    assert error.value.line == 7 and error.value.path == str(path)
    assert "not UTF-8" in error.value.message and f"column {expected_column}" in error.value.message


@pytest.mark.bad_input
def test_a_truncated_gzip_qrels_file_is_a_data_error(tmp_path):
    from contriever.data.beir import load_qrels_file

    packed = tmp_path / "test.tsv.gz"
    packed.write_bytes(gzip.compress("".join(f"q{i}\td{i}\t1\n" for i in range(5000)).encode())[:2000])
    with pytest.raises(DataError, match="truncated or corrupt gzip") as error:
        load_qrels_file(packed)
    assert error.value.line > 1


@pytest.mark.bad_input
def test_qrels_without_rows_and_an_empty_corpus_are_errors(tmp_path):
    folder = make_folder(tmp_path, gz=False, qrels="query-id\tcorpus-id\tscore\n\n")
    assert "no judgments" in error_of(load_qrels, folder)
    (folder / "corpus.jsonl").write_text("\n")
    assert "no documents" in error_of(load_corpus, folder)
    (folder / "queries.jsonl").write_text("")
    assert "no queries" in error_of(load_queries, folder)


@pytest.mark.bad_input
def test_ids_with_whitespace_around_them_are_refused_by_one_rule_in_every_loader(tmp_path):
    """Corpus, queries, qrels and index inputs: the same message, naming the file and the line."""
    from contriever.data.passages import iter_documents

    folder = make_folder(tmp_path, gz=False)
    docs = [{"_id": "d2", "text": "a"}, {"_id": "d1 ", "text": "b"}, {"_id": " 7", "text": "c"}]
    write_jsonl(folder / "corpus.jsonl", docs)
    with pytest.raises(DataError) as error:
        load_corpus(folder)
    expected = "document id 'd1 ' has whitespace around it"
    assert error.value.line == 2 and expected in error.value.message
    with pytest.raises(DataError) as error:  # `contriever index --data` reads the corpus this way
        list(iter_documents([folder / "corpus.jsonl"]))
    assert error.value.line == 2 and expected in error.value.message
    (tmp_path / "corpus.tsv").write_text("id\ttext\ttitle\nd1 \tb\tt\n")
    with pytest.raises(DataError) as error:
        list(iter_documents([tmp_path / "corpus.tsv"]))
    assert error.value.line == 2 and expected in error.value.message
    write_jsonl(folder / "queries.jsonl", [{"_id": "q1 ", "text": "x"}])
    assert "query id 'q1 ' has whitespace around it" in error_of(load_queries, folder)
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1 \t1\n")
    with pytest.raises(DataError) as error:  # the qrels reader once trimmed it silently
        load_qrels(folder, "test")
    assert error.value.line == 2 and expected in error.value.message


@pytest.mark.bad_input
def test_an_id_holding_a_line_break_names_the_file_and_line(tmp_path):
    from contriever.data.passages import iter_documents

    path = tmp_path / "corpus.jsonl"
    write_jsonl(path, [{"_id": "a", "text": "x"}, {"_id": "b\nc", "text": "y"}])
    with pytest.raises(DataError) as error:
        list(iter_documents([path]))
    assert error.value.path == str(path) and error.value.line == 2
    assert "contains a tab or line break" in error.value.message


@pytest.mark.bad_input
def test_a_bad_byte_in_a_corpus_is_reported_at_its_line_and_column(tmp_path):
    from contriever.data.passages import iter_documents

    path = tmp_path / "corpus.jsonl"
    path.write_bytes(b'{"_id": "a", "text": "fine"}\n{"_id": "b", "text": "caf\xe9"}\n')
    with pytest.raises(DataError) as error:
        list(iter_documents([path]))
    assert error.value.line == 2 and "byte 0xe9 at column 26" in error.value.message


@pytest.mark.bad_input
def test_qrels_outside_the_corpus_warn_with_counts_and_refuse_when_none_match(tmp_path, caplog):
    folder = make_folder(tmp_path, qrels="q1\td2\t1\nq1\tgone\t1\nq2\tgone-too\t1\n")
    warnings: list[str] = []
    load_beir(folder, warnings=warnings)
    assert len(warnings) == 1 and "2 of 3 judged documents are not in the corpus" in warnings[0]
    assert "2 of 3 judged documents" in caplog.text
    folder = make_folder(tmp_path / "other", qrels="q1\tx\t1\nq2\ty\t1\n")
    message = error_of(load_beir, folder)
    assert "none of the 2 judged documents is in the corpus" in message and "test.tsv" in message


@pytest.mark.bad_input
def test_queries_with_empty_text_are_counted_in_a_warning(tmp_path):
    folder = make_folder(tmp_path)
    write_jsonl(folder / "queries.jsonl", [{"_id": "q1", "text": "  "}, {"_id": "q2", "text": "fine"}])
    warnings: list[str] = []
    load_beir(folder, warnings=warnings)
    assert len(warnings) == 1 and "1 of 2 evaluated queries have empty text (first: 'q1')" in warnings[0]


@pytest.mark.bad_input
def test_ids_containing_whitespace_are_found_before_any_work_with_their_line(tmp_path):
    from contriever.data.beir import refuse_ids_with_whitespace

    folder = make_folder(tmp_path, gz=False)
    write_jsonl(folder / "corpus.jsonl", [{"_id": "d2", "text": "a"}, {"_id": "d 1", "text": "b"}])
    corpus, queries, _ = load_beir(make_folder(tmp_path / "ok"))
    refuse_ids_with_whitespace(tmp_path / "ok", corpus, queries)  # fine
    corpus = load_corpus(folder)
    with pytest.raises(DataError) as error:
        refuse_ids_with_whitespace(folder, corpus, queries)
    assert (
        error.value.line == 2 and "1 document id(s) contain whitespace (first: 'd 1')" in error.value.message
    )


@pytest.mark.bad_input
def test_an_id_with_a_tab_or_line_break_is_refused_at_its_line(tmp_path):
    folder = make_folder(tmp_path, gz=False)
    write_jsonl(folder / "corpus.jsonl", [{"_id": "d1", "text": "a"}, {"_id": "d\n2", "text": "b"}])
    with pytest.raises(DataError, match="tab or line break") as error:
        load_corpus(folder)
    assert error.value.line == 2
