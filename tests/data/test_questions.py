"""QA question files: DPR's CSV/TSV, JSONL and JSON, with errors naming the file and line."""

from __future__ import annotations

import gzip
import json

import pytest

from contriever.data.questions import Question, QuestionStats, load_questions
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
        + json.dumps({"question": "largest whale", "answer": "blue whale", "id": "w1"})
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
        (
            "q.csv",
            "a\t['x']\tq1\nb\t['y']\tq1\n",
            r"q.csv:2: question id 'q1' appears twice \(first at line 1\)",
        ),
        ("q.jsonl", '{"question": "x", "answers": "a"}\n', r"q.jsonl:1: answers must be a non-empty list"),
        ("q.jsonl", '{"question": " ", "answers": ["a"]}\n', r"q.jsonl:1: field 'question' missing or not"),
        (
            "q.jsonl",
            '{"question": "x", "answers": ["a"]}\n\n{"question": "y", "answers": ["(b"], "match": "regex"}\n',
            r"q.jsonl:3: answer '\(b' is not a valid regular expression",
        ),
        (
            "q.jsonl",
            '{"question": "x", "answers": ["a"], "match": "fuzzy"}\n',
            r"q.jsonl:1: field 'match' must be",
        ),
        (
            "q.jsonl",
            '{"id": "a", "question": "x", "answers": ["a"]}\n{"id": "a", "question": "y", "answers": ["b"]}\n',
            r"q.jsonl:2: question id 'a' appears twice \(first at line 1\)",
        ),
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
    from contriever.evaluation.qa import warn_empty_answers

    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"question": "x", "answers": [" ", "y"]}) + "\n")
    questions = load_questions(path)
    assert questions[0].answers == [" ", "y"]  # kept as they are, as DPR keeps them
    with pytest.warns(UserWarning, match="matches every passage"):
        warn_empty_answers(path, questions)


def test_regex_rows_and_the_match_default(tmp_path):
    path = tmp_path / "curated.jsonl"
    path.write_text(
        json.dumps(
            {"id": "c0", "question": "how tall", "answers": [r"20\s?,?320\s*f(ee|oo)t"], "match": "regex"}
        )
        + "\n"
        + json.dumps({"id": "c1", "question": "who", "answers": ["Miller"]})
        + "\n"
    )
    assert [q.match for q in load_questions(path)] == ["regex", "string"]
    csv_path = tmp_path / "curatedtrec-test.csv"
    csv_path.write_text("how tall\t['20\\\\s?320']\n")
    assert load_questions(csv_path, match="regex") == [Question("0", "how tall", ["20\\s?320"], "regex")]


@pytest.mark.bad_input
def test_bad_questions_skipped_and_counted(tmp_path):
    path = tmp_path / "q.jsonl"
    rows = [
        {"id": "a", "question": "x", "answers": ["1"]},
        {"id": "b", "question": "", "answers": ["1"]},
        {"id": "c", "question": "y"},
        {"id": "a", "question": "z", "answers": ["2"]},
        {"id": "d", "question": "w", "answers": ["(unclosed"], "match": "regex"},
        {"id": "e", "question": "v", "answers": "not a list"},
        {"id": "f", "question": "u", "answers": ["3"]},
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows) + "{broken\n")
    stats = QuestionStats()
    questions = load_questions(path, skip_bad=True, stats=stats)
    assert [q.id for q in questions] == ["a", "f"]
    assert (stats.read, stats.skipped) == (2, 6)
    assert stats.examples[0].startswith(f"{path}:2:")


def test_a_regex_that_does_not_compile_kept_as_dpr_keeps_it(tmp_path):
    """DPR's regex_match returns False for a pattern re cannot compile (CuratedTREC has 3, e.g. `Sn\\ě\\žka`)."""
    path = tmp_path / "q.jsonl"
    path.write_text(
        json.dumps({"question": "q", "answers": ["Sne[zž]ka|Sn\\ě\\žka"], "match": "regex"}) + "\n"
    )
    with pytest.raises(DataError, match=r"q.jsonl:1: answer .* is not a valid regular expression"):
        load_questions(path)
    stats = QuestionStats()
    assert len(load_questions(path, keep_bad_regex=True, stats=stats)) == 1
    assert len(stats.bad_patterns) == 1
