"""Open-domain QA question files (question + answer strings), in the formats DPR and its users share.

`load_questions(path)` reads, by file name (gzip allowed: `.gz` after the name):

- `.csv`, `.tsv`, `.txt`: DPR's question files (`nq-test.csv`, `trivia-test.csv`, `curatedtrec-test.csv`,
  ...): one question a line, tab-separated `question<TAB>answers[<TAB>id]`, where `answers` is a
  Python or JSON list of strings (`['Wilhelm Conrad Röntgen']`, `["a", "b"]`); read with the csv
  module and a tab delimiter, as DPR reads them. A header line `question<TAB>answers` is skipped;
- `.jsonl`: one object a line with `question` and `answers` (or `answer`: a list, or one string), and
  optionally `id` / `qid` / `_id` (NQ-open and EfficientQA files, the paper's evaluation files);
- `.json`: a list of such objects (DPR's retriever files: `question`, `answers`, `positive_ctxs`, ...;
  the extra fields are ignored), or an object with a `data` list.

Question ids default to the 0-based position in the file. Every problem raises `DataError` naming
the file and line (the position for `.json`). An answer that DPR's tokenizer reduces to nothing
matches every passage under DPR's rule; such answers are reported by a warning, not changed.
"""

from __future__ import annotations

import ast
import csv
import json
import os
import warnings
from pathlib import Path
from typing import NamedTuple

from contriever.errors import DataError
from contriever.io import open_text

QUESTION_FORMATS = (".csv", ".tsv", ".txt", ".jsonl", ".json")
_ID_FIELDS = ("id", "qid", "_id", "question_id")


class Question(NamedTuple):
    id: str
    question: str
    answers: list[str]


def question_format(path: str | os.PathLike) -> str:
    """The format suffix of a question file (`.gz` looked through); DataError for an unknown one."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    suffix = suffixes[-1] if suffixes else ""
    if suffix not in QUESTION_FORMATS:
        raise DataError(
            path,
            f"unknown question file type {suffix or '(none)'!r}; use DPR's .csv/.tsv "
            "(question<TAB>['answer', ...]) or .jsonl/.json with question and answers",
        )
    return suffix


def _answer_list(path: Path, where: int | None, value, field: str = "answers") -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise DataError(path, f"{field} must be a non-empty list of strings, found {value!r}"[:200], where)
    for answer in value:
        if not isinstance(answer, str):
            raise DataError(path, f"every answer must be a string, found {answer!r}"[:200], where)
    return list(value)


def _parse_answers_column(path: Path, line: int, text: str) -> list[str]:
    text = text.strip()
    for parse in (json.loads, ast.literal_eval):
        try:
            value = parse(text)
            break
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
    else:
        raise DataError(
            path, f"the answers column is not a list literal such as ['a', 'b']: {text[:80]!r}", line
        )
    return _answer_list(path, line, value)


def _read_tsv(path: Path) -> list[Question]:
    questions: list[Question] = []
    with open_text(path) as handle:
        reader = csv.reader(handle, delimiter="\t")
        try:
            for row in reader:
                line = reader.line_num
                if not row or not any(cell.strip() for cell in row):
                    continue
                header = [cell.strip().lower() for cell in row[:2]]
                if (
                    line == 1
                    and header[0] in ("question", "query")
                    and header[1:] in (["answers"], ["answer"])
                ):
                    continue
                if len(row) < 2:
                    raise DataError(
                        path, f"expected question<TAB>answers, found one column: {row[0][:80]!r}", line
                    )
                if len(row) > 3:
                    raise DataError(path, f"expected 2 or 3 tab-separated columns, found {len(row)}", line)
                question = row[0].strip()
                if not question:
                    raise DataError(path, "empty question", line)
                answers = _parse_answers_column(path, line, row[1])
                qid = row[2].strip() if len(row) == 3 and row[2].strip() else str(len(questions))
                questions.append(Question(qid, question, answers))
        except csv.Error as error:
            raise DataError(path, f"cannot read the line: {error}", reader.line_num) from None
    return questions


def _from_object(path: Path, where: int | None, obj, position: int) -> Question:
    if not isinstance(obj, dict):
        raise DataError(path, f"expected an object with question and answers, found {obj!r}"[:200], where)
    question = obj.get("question")
    if not isinstance(question, str) or not question.strip():
        raise DataError(
            path, f"field 'question' missing or not a non-empty string (fields: {sorted(obj)})", where
        )
    if "answers" in obj:
        answers = _answer_list(path, where, obj["answers"])
    elif "answer" in obj:
        answers = _answer_list(path, where, obj["answer"], "answer")
    else:
        raise DataError(path, f"field 'answers' is missing (fields: {sorted(obj)})", where)
    qid = next((str(obj[f]) for f in _ID_FIELDS if obj.get(f) not in (None, "")), str(position))
    return Question(qid, question.strip(), answers)


def _read_jsonl(path: Path) -> list[Question]:
    from contriever.data.beir import iter_jsonl

    return [
        _from_object(path, line, obj, position)
        for position, (line, obj) in enumerate(iter_jsonl(path, with_line_numbers=True))
    ]


def _read_json(path: Path) -> list[Question]:
    with open_text(path) as handle:
        try:
            data = json.load(handle)
        except json.JSONDecodeError as error:
            raise DataError(path, f"not valid JSON ({error.msg})", error.lineno) from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise DataError(path, "expected a JSON list of objects with question and answers")
    questions = []
    for i, obj in enumerate(data):
        try:
            questions.append(_from_object(path, None, obj, i))
        except DataError as error:  # no line numbers in a JSON document: name the entry instead
            raise DataError(path, f"entry {i}: {error.message}") from None
    return questions


def load_questions(path: str | os.PathLike) -> list[Question]:
    """The questions of a file in any of the module's formats, in file order (at least one)."""
    path = Path(path)
    kind = question_format(path)
    if not path.is_file():
        raise DataError(path, "no such question file")
    try:
        if kind in (".csv", ".tsv", ".txt"):
            questions = _read_tsv(path)
        elif kind == ".jsonl":
            questions = _read_jsonl(path)
        else:
            questions = _read_json(path)
    except (OSError, EOFError, UnicodeDecodeError) as error:
        raise DataError(path, f"cannot read the file: {error}") from error
    if not questions:
        raise DataError(path, "no questions in the file")
    seen: dict[str, int] = {}
    for position, question in enumerate(questions):
        if question.id in seen:
            raise DataError(
                path,
                f"question id {question.id!r} appears twice (entries {seen[question.id]} and {position})",
            )
        seen[question.id] = position
    _warn_empty_answers(path, questions)
    return questions


def _warn_empty_answers(path: Path, questions: list[Question]) -> None:
    from contriever.data.answer_tokens import dpr_tokens

    empty = [q.id for q in questions if any(not dpr_tokens(a) for a in q.answers)]
    if empty:
        warnings.warn(
            f"{path}: {len(empty)} question(s) have an answer with no tokens (e.g. id {empty[0]!r}); "
            "under DPR's rule such an answer matches every passage",
            stacklevel=3,
        )
