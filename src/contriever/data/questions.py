"""Open-domain QA question files (question + answer strings), in the formats DPR and its users share.

`load_questions(path)` reads, by file name (gzip allowed: `.gz` after the name):

- `.csv`, `.tsv`, `.txt`: DPR's question files (`nq-test.csv`, `trivia-test.csv`, `curatedtrec-test.csv`,
  ...): one question a line, tab-separated `question<TAB>answers[<TAB>id]`, where `answers` is a
  Python or JSON list of strings (`['Wilhelm Conrad Röntgen']`, `["a", "b"]`); read with the csv
  module and a tab delimiter, as DPR reads them. A header line `question<TAB>answers` is skipped;
- `.jsonl`: one object a line with `question` and `answers` (a list; or `answer`: a list, or one
  string), optionally `id` / `qid` / `_id` (NQ-open and EfficientQA files, the paper's evaluation
  files) and `"match": "regex"` (CuratedTREC as DPR ships it: each answer is a regular expression);
- `.json`: a list of such objects (DPR's retriever files: `question`, `answers`, `positive_ctxs`, ...;
  the extra fields are ignored), or an object with a `data` list.

Question ids default to the 0-based position in the file. Every problem raises `DataError` naming
the file and line (the position for `.json`): no `answers`, `answers` not a list, an empty
question, a regex answer that does not compile, an id seen before (both lines named). With
`skip_bad=True` such a question is skipped and counted in `stats` instead.

A `"match": "regex"` answer is compiled here as DPR compiles it (`compile_answer_pattern`: NFD,
case-insensitive, Unicode, multi-line) so a bad pattern is found while reading, with its line; the
matching itself is `contriever.evaluation.qa`'s (this module imports nothing from evaluation).
"""

from __future__ import annotations

import ast
import csv
import json
import os
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import regex

from contriever.errors import DataError
from contriever.io import numbered_lines, open_text

QUESTION_FORMATS = (".csv", ".tsv", ".txt", ".jsonl", ".json")
MATCH_TYPES = ("string", "regex")
_ID_FIELDS = ("id", "qid", "_id", "question_id")
# DPR's flags for regex answers (CuratedTREC): re.IGNORECASE + re.UNICODE + re.MULTILINE
ANSWER_REGEX_FLAGS = regex.IGNORECASE | regex.UNICODE | regex.MULTILINE


class Question(NamedTuple):
    id: str
    question: str
    answers: list[str]
    match: str = "string"  # "regex": each answer is a pattern (CuratedTREC)


@dataclass
class QuestionStats:
    """What `load_questions(skip_bad=True)` skipped: counted, with the first few reasons."""

    read: int = 0
    skipped: int = 0
    examples: list[str] = field(default_factory=list)
    bad_patterns: list[str] = field(default_factory=list)  # kept with keep_bad_regex: they never match

    def note(self, error: DataError) -> None:
        self.skipped += 1
        if len(self.examples) < 5:
            self.examples.append(str(error))


def compile_answer_pattern(pattern: str):
    """A regex answer compiled as DPR compiles it (NFD, `ANSWER_REGEX_FLAGS`); raises `regex.error`."""
    return regex.compile(unicodedata.normalize("NFD", pattern), flags=ANSWER_REGEX_FLAGS)


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
    if isinstance(value, str) and field == "answer":  # a single `answer` may be one string
        value = [value]
    if not isinstance(value, list) or not value:
        raise DataError(path, f"{field} must be a non-empty list of strings, found {value!r}"[:200], where)
    for answer in value:
        if not isinstance(answer, str):
            raise DataError(path, f"every answer must be a string, found {answer!r}"[:200], where)
    return list(value)


def _check_patterns(path: Path, where: int | None, answers: list[str], stats: QuestionStats | None) -> None:
    """A pattern that does not compile: an error, or (`stats` given: keep_bad_regex) noted and kept."""
    for pattern in answers:
        try:
            compile_answer_pattern(pattern)
        except (regex.error, ValueError, TypeError, OverflowError) as error:
            problem = DataError(
                path, f"answer {pattern[:60]!r} is not a valid regular expression ({error})", where
            )
            if stats is None:
                raise problem from None
            stats.bad_patterns.append(str(problem))


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


def _read_tsv(
    path: Path, skip_bad: bool, stats: QuestionStats, keep_bad_regex: bool = False, match: str = "string"
) -> list[tuple[int, Question]]:
    questions: list[tuple[int, Question]] = []
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
                try:
                    keep = stats if keep_bad_regex else None
                    position = len(questions) + stats.skipped
                    questions.append((line, _from_row(path, line, row, position, match, keep)))
                except DataError as error:
                    if not skip_bad:
                        raise
                    stats.note(error)
        except csv.Error as error:
            raise DataError(path, f"cannot read the line: {error}", reader.line_num) from None
    return questions


def _from_row(
    path: Path, line: int, row: list[str], position: int, match: str = "string", keep_bad=None
) -> Question:
    if len(row) < 2:
        raise DataError(path, f"expected question<TAB>answers, found one column: {row[0][:80]!r}", line)
    if len(row) > 3:
        raise DataError(path, f"expected 2 or 3 tab-separated columns, found {len(row)}", line)
    question = row[0].strip()
    if not question:
        raise DataError(path, "empty question", line)
    answers = _parse_answers_column(path, line, row[1])
    if match == "regex":
        _check_patterns(path, line, answers, keep_bad)
    qid = row[2].strip() if len(row) == 3 and row[2].strip() else str(position)
    return Question(qid, question, answers, match)


def _from_object(
    path: Path, where: int | None, obj, position: int, keep_bad: QuestionStats | None = None, default="string"
) -> Question:
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
    match = obj.get("match", default)
    if match not in MATCH_TYPES:
        raise DataError(path, f"field 'match' must be one of {MATCH_TYPES}, found {match!r}"[:200], where)
    if match == "regex":
        _check_patterns(path, where, answers, keep_bad)
    qid = next((str(obj[f]) for f in _ID_FIELDS if obj.get(f) not in (None, "")), str(position))
    return Question(qid, question.strip(), answers, match)


def _read_jsonl(
    path: Path, skip_bad: bool, stats: QuestionStats, keep_bad_regex: bool = False, match: str = "string"
) -> list[tuple[int, Question]]:
    from contriever.data.beir import json_object

    questions: list[tuple[int, Question]] = []
    for line, text in numbered_lines(path):
        if not text.strip():
            continue
        try:
            try:
                obj = json_object(text)
            except ValueError as error:
                raise DataError(path, str(error), line) from None
            keep = stats if keep_bad_regex else None
            position = len(questions) + stats.skipped
            questions.append((line, _from_object(path, line, obj, position, keep, match)))
        except DataError as error:
            if not skip_bad:
                raise
            stats.note(error)
    return questions


def _read_json(
    path: Path, skip_bad: bool, stats: QuestionStats, keep_bad_regex: bool = False, match: str = "string"
) -> list[tuple[int | None, Question]]:
    with open_text(path) as handle:
        try:
            data = json.load(handle)
        except json.JSONDecodeError as error:
            raise DataError(path, f"not valid JSON ({error.msg})", error.lineno) from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise DataError(path, "expected a JSON list of objects with question and answers")
    questions: list[tuple[int | None, Question]] = []
    for i, obj in enumerate(data):
        try:
            keep = stats if keep_bad_regex else None
            questions.append((None, _from_object(path, None, obj, i, keep, match)))
        except DataError as error:  # no line numbers in a JSON document: name the entry instead
            error = DataError(path, f"entry {i}: {error.message}")
            if not skip_bad:
                raise error from None
            stats.note(error)
    return questions


def load_questions(
    path: str | os.PathLike,
    *,
    skip_bad: bool = False,
    keep_bad_regex: bool = False,
    match: str = "string",
    stats: QuestionStats | None = None,
) -> list[Question]:
    """The questions of a file in any of the module's formats, in file order (at least one).

    `skip_bad`: skip (and count in `stats`) a bad question, a duplicate id included, instead of
    stopping at it. `keep_bad_regex`: keep a question with a regex answer that does not compile,
    the pattern never matching (DPR's rule: its `regex_match` returns False for such a pattern;
    CuratedTREC's test set has 3), noted in `stats.bad_patterns`. `match`: the match type of
    questions that do not name one (DPR's CSV files cannot: `"regex"` for its curatedtrec-test.csv)."""
    if match not in MATCH_TYPES:
        raise ValueError(f"unknown match type {match!r}; choose one of {MATCH_TYPES}")
    path = Path(path)
    stats = stats if stats is not None else QuestionStats()
    kind = question_format(path)
    if not path.is_file():
        raise DataError(path, "no such question file")
    try:
        if kind in (".csv", ".tsv", ".txt"):
            numbered = _read_tsv(path, skip_bad, stats, keep_bad_regex, match)
        elif kind == ".jsonl":
            numbered = _read_jsonl(path, skip_bad, stats, keep_bad_regex, match)
        else:
            numbered = _read_json(path, skip_bad, stats, keep_bad_regex, match)
    except (OSError, EOFError, UnicodeDecodeError) as error:
        raise DataError(path, f"cannot read the file: {error}") from error
    questions: list[Question] = []
    seen: dict[str, int | None] = {}
    for position, (line, question) in enumerate(numbered):
        if question.id in seen:
            first = seen[question.id]
            where = f"line {first}" if first is not None else "an earlier entry"
            error = DataError(
                path,
                f"question id {question.id!r} appears twice (first at {where})"
                + ("" if line is not None else f"; entry {position}"),
                line,
            )
            if not skip_bad:
                raise error
            stats.note(error)
            continue
        seen[question.id] = line
        questions.append(question)
    stats.read = len(questions)
    if not questions:
        raise DataError(
            path, "no questions in the file" + (f" ({stats.skipped} skipped)" if stats.skipped else "")
        )
    return questions
