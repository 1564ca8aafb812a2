"""QA question files: DPR's CSV/TSV, JSONL and JSON, with errors naming the file and line."""

from __future__ import annotations

import gzip
import json

import pytest

from contriever.data.questions import Question, load_questions
from contriever.errors import DataError


def test_dpr_csv(tmp_path):
    path = tmp_path / "nq-test.csv"
    path.write_text(
        "who got the first nobel prize in physics\t['Wilhelm Conrad Röntgen']\n"
        "when is the next deadpool movie being released\t['May 18 , 2018']\n"
        "what is \"rock n roll\"\t[\"Rock 'n' roll\", 'rock and roll']\n"
        "\n"
    )
    questions = load_questions(path)
    assert questions == [
        Question("0", "who got the first nobel prize in physics", ["Wilhelm Conrad Röntgen"]),
        Question("1", "when is the next deadpool movie being released", ["May 18 , 2018"]),
        Question("2", 'what is "rock n roll"', ["Rock 'n' roll", "rock and roll"]),
    ]


def test_tsv_with_header_ids_and_gzip(tmp_path):
    path = tmp_path / "questions.tsv.gz"
    with gzip.open(path, "wt") as handle:
        handle.write('question\tanswers\tid\nwho wrote hamlet\t["Shakespeare"]\tq7\n')
    assert load_questions(path) == [Question("q7", "who wrote hamlet", ["Shakespeare"])]


def test_jsonl_and_json(tmp_path):
    jsonl = tmp_path / "nq-open.jsonl"
    jsonl.write_text(
        json.dumps({"question": "capital of france", "answer": ["Paris"]})
        + "\n"
        + json.dumps({"question": "largest whale", "answers": "blue whale", "id": "w1"})
        + "\n"
    )
    assert load_questions(jsonl) == [
        Question("0", "capital of france", ["Paris"]),
        Question("w1", "largest whale", ["blue whale"]),
    ]
    dpr = tmp_path / "nq-dev.json"
    dpr.write_text(json.dumps([{"question": "q?", "answers": ["a"], "positive_ctxs": [{"text": "a"}]}]))
    assert load_questions(dpr) == [Question("0", "q?", ["a"])]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("q.csv", "who\t['a']\nwhy\tnot a list\n", r"q.csv:2: the answers column is not a list"),
        ("q.csv", "who\t['a']\njust a question\n", r"q.csv:2: expected question<TAB>answers"),
        ("q.csv", "who\t[]\n", r"q.csv:1: answers must be a non-empty list"),
        ("q.csv", "who\t[1, 2]\n", r"q.csv:1: every answer must be a string"),
        ("q.jsonl", '{"question": "x"}\n', r"q.jsonl:1: field 'answers' is missing"),
        ("q.jsonl", '{"answers": ["x"]}\n', r"q.jsonl:1: field 'question' missing"),
        ("q.jsonl", "{not json\n", r"q.jsonl:1: not valid JSON"),
        (
            "q.json",
            '[{"question": "x", "answers": ["a"]}, {"question": "y"}]',
            r"q.json: entry 1: field 'answers'",
        ),
        ("q.csv", "", r"q.csv: no questions"),
        ("q.csv", "a\t['x']\tq1\nb\t['y']\tq1\n", r"question id 'q1' appears twice"),
        ("q.xml", "<q/>", r"unknown question file type '.xml'"),
    ],
)
def test_bad_question_files(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        load_questions(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such question file"):
        load_questions(tmp_path / "nq-test.csv")


def test_answers_without_tokens_are_reported(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"question": "x", "answers": [" ", "y"]}) + "\n")
    with pytest.warns(UserWarning, match="matches every passage"):
        assert load_questions(path)[0].answers == [" ", "y"]  # kept as they are, as DPR keeps them
