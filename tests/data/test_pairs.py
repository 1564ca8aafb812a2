"""Fine-tuning example readers, merging, dev split and the training-file writer."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from contriever.data.dev import split_dev
from contriever.data.pairs import (
    TrainingExample,
    from_beir,
    load_training_data,
    merge_by_query,
    write_jsonl_examples,
)
from contriever.errors import DataError


def write_lines(path: Path, records) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def make_beir(folder: Path, qrels_lines: list[str], queries=None, corpus=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    corpus = corpus or {f"d{i}": {"title": f"T{i}", "text": f"text {i}"} for i in range(6)}
    with gzip.open(folder / "corpus.jsonl.gz", "wt") as handle:
        for ident, doc in corpus.items():
            handle.write(json.dumps({"_id": ident, **doc}) + "\n")
    queries = queries or {"q1": "first query", "q2": "second query", "q3": "third query"}
    write_lines(folder / "queries.jsonl", [{"_id": q, "text": t} for q, t in queries.items()])
    (folder / "qrels").mkdir(exist_ok=True)
    (folder / "qrels" / "train.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(x + "\n" for x in qrels_lines)
    )
    return folder


# ----- BEIR ------------------------------------------------------------------------------------------
def test_from_beir_positives_have_score_above_zero(tmp_path):
    folder = make_beir(tmp_path / "beir", ["q1\td0\t1", "q1\td1\t2", "q1\td2\t0", "q2\td3\t0", "q3\td4\t1"])
    examples = from_beir(folder)
    assert [e.qid for e in examples] == ["q1", "q3"]  # q2 has no positive
    assert [d["_id"] for d in examples[0].positives] == ["d0", "d1"]
    assert examples[0].positives[0] == {"_id": "d0", "title": "T0", "text": "text 0"}
    assert examples[0].query == "first query"
    assert load_training_data(folder) == examples  # a folder dispatches to from_beir


@pytest.mark.bad_input
def test_from_beir_missing_query_names_qrels_line(tmp_path):
    folder = make_beir(tmp_path / "beir", ["q1\td0\t1", "q9\td1\t1"])
    with pytest.raises(DataError, match=r"train\.tsv:3: query 'q9'"):
        from_beir(folder)


@pytest.mark.bad_input
def test_from_beir_bad_score_names_line(tmp_path):
    folder = make_beir(tmp_path / "beir", ["q1\td0\t1", "q2\td1\tyes"])
    with pytest.raises(DataError, match=r"train\.tsv:3"):
        from_beir(folder)


def test_from_beir_positive_missing_from_corpus_is_left_out(tmp_path, caplog):
    folder = make_beir(tmp_path / "beir", ["q1\td0\t1", "q1\tgone\t1", "q2\tgone\t1"])
    examples = from_beir(folder)
    assert [(e.qid, [d["_id"] for d in e.positives]) for e in examples] == [("q1", ["d0"])]
    assert "train.tsv:3" in caplog.text and "2 positive documents" in caplog.text


@pytest.mark.bad_input
def test_from_beir_without_positives_is_an_error(tmp_path):
    folder = make_beir(tmp_path / "beir", ["q1\td0\t0"])
    with pytest.raises(DataError, match="no query has a document with score > 0"):
        from_beir(folder)


@pytest.mark.bad_input
def test_folder_that_is_not_beir(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="BEIR"):
        load_training_data(tmp_path / "empty")
    with pytest.raises(FileNotFoundError):
        load_training_data(tmp_path / "nope.jsonl")


# ----- DPR --------------------------------------------------------------------------------------------
DPR_RECORDS = [
    {
        "question": "who wrote hamlet",
        "answers": ["Shakespeare"],
        "positive_ctxs": [{"title": "Hamlet", "text": "A play by Shakespeare.", "passage_id": "11"}],
        "negative_ctxs": [{"title": "Tea", "text": "A drink.", "passage_id": "12"}],
        "hard_negative_ctxs": [{"title": "Macbeth", "text": "Another play.", "passage_id": "13"}],
    },
    {"question": "no gold here", "positive_ctxs": [], "negative_ctxs": []},
    {"question": "capital of france", "positive_ctxs": [{"title": "", "text": "Paris is the capital."}]},
]


def test_dpr_json_list(tmp_path):
    path = tmp_path / "train.json"
    path.write_text(json.dumps(DPR_RECORDS, indent=2))
    examples = load_training_data(path)
    assert len(examples) == 2  # the record without positives is skipped, as DPR does
    first = examples[0]
    assert first.query == "who wrote hamlet"
    assert first.positives == [{"_id": "11", "title": "Hamlet", "text": "A play by Shakespeare."}]
    assert first.negatives[0]["_id"] == "12" and first.hard_negatives[0]["title"] == "Macbeth"
    assert examples[1].positives == [{"title": "", "text": "Paris is the capital."}]


def test_dpr_jsonl_gz(tmp_path):
    path = tmp_path / "train.jsonl.gz"
    with gzip.open(path, "wt") as handle:
        for record in DPR_RECORDS:
            handle.write(json.dumps(record) + "\n")
    assert [e.query for e in load_training_data(path)] == ["who wrote hamlet", "capital of france"]


@pytest.mark.bad_input
def test_dpr_json_list_broken_record_names_it(tmp_path):
    records = [DPR_RECORDS[0], {"question": "q", "positive_ctxs": [{"title": "no text"}]}]
    path = tmp_path / "train.json"
    path.write_text(json.dumps(records, indent=2))
    with pytest.raises(
        DataError, match=r"train\.json: record 2: positive_ctxs\[0\]: a document needs 'text'"
    ):
        load_training_data(path)


@pytest.mark.bad_input
def test_dpr_json_syntax_error_names_its_line(tmp_path):
    path = tmp_path / "train.json"
    path.write_text('[\n  {"question": "a", "positive_ctxs": []},\n  {"question": "b",, }\n]\n')
    with pytest.raises(DataError, match=r"train\.json:3: not valid JSON"):
        load_training_data(path)
    path.write_text('[{"question": "a", "positive_ctxs": [{"text": "x"}]}\n{"question": "b"}]')
    with pytest.raises(DataError, match=r"train\.json:2: not valid JSON \(Expecting ',' delimiter"):
        load_training_data(path)


# ----- plain JSONL -------------------------------------------------------------------------------------
def test_plain_jsonl_forms(tmp_path):
    path = write_lines(
        tmp_path / "train.jsonl",
        [
            {
                "query": "q one",
                "positive": "gold text",
                "negatives": ["bad 1", {"title": "B", "text": "bad 2"}],
            },
            "",
            {
                "query": "q two",
                "positives": [{"title": "G", "text": "gold", "_id": "7"}],
                "hard_negatives": ["h"],
            },
            {"qid": "x", "query": "q three", "positive": {"title": "P", "text": "p"}},
        ],
    )
    one, two, three = load_training_data(path)
    assert one.positives == [{"title": "", "text": "gold text"}]
    assert one.negatives == [{"title": "", "text": "bad 1"}, {"title": "B", "text": "bad 2"}]
    assert (
        two.positives == [{"title": "G", "text": "gold", "_id": "7"}] and two.hard_negatives[0]["text"] == "h"
    )
    assert three.qid == "x" and three.negatives == [] and three.hard_negatives == []


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not valid JSON"),
        ('["a list"]', "expected a JSON object"),
        ('{"question_text": "q", "positive": "p"}', "no 'query' field"),
        ('{"query": "", "positive": "p"}', "'query' must be a non-empty string"),
        ('{"query": "q"}', "no positive"),
        ('{"query": "q", "positive": "p", "negatives": "n"}', "'negatives' must be a list"),
        ('{"query": "q", "positive": 3}', "positive: a document must be a string or an object"),
        ('{"query": "q", "positive": {"title": "t", "text": 5}}', "must be strings"),
        ('{"query": "q", "positive": {"_id": "d1"}}', "has no text; pass a corpus"),
    ],
)
@pytest.mark.bad_input
def test_plain_jsonl_broken_line(tmp_path, line, message):
    path = tmp_path / "train.jsonl"
    path.write_text('{"query": "fine", "positive": "p"}\n\n' + line + "\n")
    with pytest.raises(DataError, match=rf"train\.jsonl:3: .*{message}"):
        load_training_data(path)


def test_id_references_resolve_against_corpus(tmp_path):
    corpus = {"d1": {"title": "One", "text": "first"}, "d2": {"title": "Two", "text": "second"}}
    path = write_lines(
        tmp_path / "train.jsonl",
        [{"query": "q", "positive": {"_id": "d1"}, "hard_negatives": [{"_id": "d2"}]}],
    )
    (example,) = load_training_data(path, corpus=corpus)
    assert example.positives == [{"_id": "d1", "title": "One", "text": "first"}]
    assert example.hard_negatives == [{"_id": "d2", "title": "Two", "text": "second"}]
    write_lines(path, [{"query": "q", "positive": {"_id": "d1"}}, {"query": "r", "positive": {"_id": "d9"}}])
    with pytest.raises(DataError, match=r"train\.jsonl:2: positive: document 'd9' is not in the corpus"):
        load_training_data(path, corpus=corpus)


@pytest.mark.bad_input
def test_empty_file_is_an_error(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("\n")
    with pytest.raises(DataError, match="no training examples"):
        load_training_data(path)


def test_merge_joins_rows_of_one_query(tmp_path):
    path = write_lines(
        tmp_path / "train.jsonl",
        [
            {"query": "q", "positive": "a", "negatives": ["n1"]},
            {"query": "other", "positive": "b"},
            {"query": "q", "positive": "c", "negatives": ["n1", "n2"]},
            {"query": "q", "positive": "a"},
        ],
    )
    merged = load_training_data(path)
    assert [e.query for e in merged] == ["q", "other"]
    assert [d["text"] for d in merged[0].positives] == ["a", "c"]
    assert [d["text"] for d in merged[0].negatives] == ["n1", "n2"]
    assert len(load_training_data(path, merge=False)) == 4
    assert merge_by_query([]) == []


# ----- dev split --------------------------------------------------------------------------------------
def _examples(n: int) -> list[TrainingExample]:
    return [TrainingExample(query=f"query {i}", positives=[f"doc {i}"], qid=str(i)) for i in range(n)]


def test_split_dev_sizes_determinism_and_disjointness():
    examples = _examples(809)
    train, dev = split_dev(examples, 0.1, seed=0)
    assert (len(train), len(dev)) == (728, 81)
    assert {e.qid for e in train}.isdisjoint({e.qid for e in dev})
    assert {e.qid for e in train} | {e.qid for e in dev} == {e.qid for e in examples}
    again = split_dev(examples, 0.1, seed=0)
    assert again == (train, dev)
    other_train, _ = split_dev(examples, 0.1, seed=1)
    assert other_train != train
    assert [int(e.qid) for e in train] == sorted(int(e.qid) for e in train)  # input order kept
    assert split_dev(examples, 0.0) == (examples, [])
    assert len(split_dev(_examples(5), 0.01)[1]) == 1  # at least one query held out
    with pytest.raises(ValueError):
        split_dev(examples, 1.0)


def test_split_dev_keeps_a_query_on_one_side():
    examples = [TrainingExample(query=f"q{i % 10}", positives=[f"d{i}"]) for i in range(50)]
    train, dev = split_dev(examples, 0.3, seed=3)
    assert len({e.query for e in dev}) == 3
    assert {e.query for e in train}.isdisjoint({e.query for e in dev})
    assert len(train) + len(dev) == 50


# ----- writer -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["mined.jsonl", "mined.jsonl.gz"])
def test_write_then_read_round_trip(tmp_path, name):
    examples = [
        TrainingExample(
            query="q é",
            positives=[{"_id": "1", "title": "T", "text": "gold"}],
            negatives=[{"title": "", "text": "plain negative"}],
            hard_negatives=[{"_id": "2", "title": "H", "text": "hard"}],
            qid="a",
        ),
        TrainingExample(query="r", positives=[{"title": "", "text": "g2"}]),
    ]
    path = write_jsonl_examples(examples, tmp_path / name)
    assert load_training_data(path) == examples
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_write_ids_only_needs_the_corpus_to_read(tmp_path):
    corpus = {"1": {"title": "T", "text": "gold"}, "2": {"title": "H", "text": "hard"}}
    example = TrainingExample(
        query="q",
        positives=[{"_id": "1", "title": "T", "text": "gold"}],
        hard_negatives=[{"_id": "2", "title": "H", "text": "hard"}],
        qid="a",
    )
    path = write_jsonl_examples([example], tmp_path / "ids.jsonl", ids_only=True)
    assert json.loads(path.read_text())["hard_negatives"] == [{"_id": "2"}]
    assert load_training_data(path, corpus=corpus) == [example]
    with pytest.raises(DataError, match="pass a corpus"):
        load_training_data(path)


# ----- bad inputs ---------------------------------------------------------------------------------------
@pytest.mark.bad_input
@pytest.mark.parametrize("record", [{"query": "q", "positive": ""}, {"query": "q", "positives": ["ok", " "]}])
def test_an_empty_positive_is_an_error(tmp_path, record):
    path = write_lines(tmp_path / "train.jsonl", [{"query": "fine", "positive": "text"}, record])
    with pytest.raises(DataError, match="is empty") as error:
        load_training_data(path)
    assert error.value.line == 2


@pytest.mark.bad_input
def test_a_byte_order_mark_is_accepted_and_bad_bytes_are_found_on_their_line(tmp_path):
    path = tmp_path / "train.jsonl"
    rows = [json.dumps({"query": f"q{i}", "positive": "p" * 3000}).encode() for i in range(9)]
    path.write_bytes(b"\xef\xbb\xbf" + b"\n".join(rows) + b"\n")
    assert len(load_training_data(path)) == 9
    rows[6] = b'{"query": "caf\xe9", "positive": "p"}'
    path.write_bytes(b"\n".join(rows) + b"\n")
    with pytest.raises(DataError, match="not UTF-8") as error:
        load_training_data(path)
    assert error.value.line == 7
    listed = tmp_path / "train.json"
    listed.write_bytes(b"[\n" + b",\n".join(rows) + b"\n]\n")
    with pytest.raises(DataError, match="not UTF-8") as error:
        load_training_data(listed)
    assert error.value.line == 8


@pytest.mark.bad_input
def test_a_truncated_gzip_training_file_is_a_data_error(tmp_path):
    path = tmp_path / "train.jsonl.gz"
    text = "".join(json.dumps({"query": f"q{i}", "positive": f"doc {i}"}) + "\n" for i in range(3000))
    path.write_bytes(gzip.compress(text.encode())[:1500])
    with pytest.raises(DataError, match="truncated or corrupt gzip"):
        load_training_data(path)


@pytest.mark.bad_input
def test_a_single_query_cannot_give_a_dev_split():
    with pytest.raises(ValueError, match="single query.*dev fraction to 0"):
        split_dev([TrainingExample(query="only", positives=["p"])], fraction=0.1)
