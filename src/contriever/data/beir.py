"""Reading BEIR folders: `corpus.jsonl[.gz]`, `queries.jsonl`, `qrels/<split>.tsv`.

A BEIR folder holds:

- `corpus.jsonl` or `corpus.jsonl.gz`: one JSON object a line with `_id`, `text` and optionally `title`
  (other fields such as `metadata` are ignored);
- `queries.jsonl`: one JSON object a line with `_id` and `text`;
- `qrels/<split>.tsv`: tab-separated `query-id  corpus-id  score` with graded integer scores, under an
  optional header line `query-id<TAB>corpus-id<TAB>score`.

Ids are kept as strings (an integer `_id` becomes its decimal string, as the qrels file spells it).
A file that holds nothing but the relative path of a file of the same name elsewhere
(`../corpus.jsonl.gz`: a symbolic link stored as text, as a copy or a git checkout without symlink
support leaves one) is read from that file, with a log message. Every problem raises
`contriever.errors.DataError` naming the file and line.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from contriever.errors import DataError
from contriever.io import numbered_lines

CORPUS_NAMES = ("corpus.jsonl", "corpus.jsonl.gz")
QUERIES_NAMES = ("queries.jsonl", "queries.jsonl.gz")
logger = logging.getLogger(__name__)

BEIR_LAYOUT = "corpus.jsonl (or corpus.jsonl.gz), queries.jsonl and qrels/<split>.tsv"


def json_object(line: str) -> dict:
    """One JSONL line as a dict; ValueError says what is wrong (the caller adds the file and line)."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"not valid JSON ({error.msg} at column {error.colno})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, found {type(obj).__name__}")
    return obj


def iter_jsonl(path: str | os.PathLike, *, with_line_numbers: bool = False) -> Iterator:
    """Stream the JSON objects of a `.jsonl` (or `.jsonl.gz`) file, skipping blank lines.

    Yields dicts, or `(line_number, dict)` pairs with `with_line_numbers=True` (lines count from 1).
    A line that is not a JSON object raises `DataError` with its line number; so do bytes that are not
    UTF-8 and a truncated gzip (`contriever.io.numbered_lines`). A leading byte-order mark is fine.
    """
    path = Path(path)
    for line_number, line in numbered_lines(path):
        if not line.strip():
            continue
        try:
            obj = json_object(line)
        except ValueError as error:
            raise DataError(path, str(error), line_number) from None
        yield (line_number, obj) if with_line_numbers else obj


def _describe_folder(folder: Path) -> str:
    if not folder.exists():
        return "the folder does not exist"
    if not folder.is_dir():
        return "it is a file, not a folder"
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    if not entries:
        return "the folder is empty"
    shown = ", ".join(entries[:12]) + (f", ... ({len(entries)} entries)" if len(entries) > 12 else "")
    return f"found: {shown}"


def _require_folder(folder: str | os.PathLike) -> Path:
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, f"not a BEIR folder: it needs {BEIR_LAYOUT}; {_describe_folder(folder)}")
    return folder


def _find_file(folder: Path, names: tuple[str, ...], what: str) -> Path:
    present = [folder / name for name in names if (folder / name).is_file()]
    if not present:
        raise DataError(
            folder,
            f"not a BEIR folder: no {what} file ({' or '.join(names)}); a BEIR folder needs {BEIR_LAYOUT}; "
            f"{_describe_folder(folder)}",
        )
    if len(present) > 1:
        raise DataError(folder, f"both {present[0].name} and {present[1].name} are present; keep one")
    return follow_link_stub(present[0])


LINK_STUB_MAX_BYTES = 1024


def follow_link_stub(path: Path) -> Path:
    """`path`, or the file it names when it holds only a relative path to a file with the same name
    (a symbolic link stored as text); a stub naming a missing file is an error naming both."""
    if path.stat().st_size > LINK_STUB_MAX_BYTES:
        return path
    try:
        target = path.read_bytes().decode("utf-8").strip()
    except UnicodeDecodeError:  # compressed or binary: a real file
        return path
    if not target or "\n" in target or Path(target).name != path.name or Path(target).is_absolute():
        return path
    resolved = (path.parent / target).resolve()
    if not resolved.is_file():
        raise DataError(
            path,
            f"holds only the path {target!r} (a symbolic link stored as text), and {resolved} is missing",
        )
    logger.info("%s holds the path %s (a symbolic link stored as text): reading %s", path, target, resolved)
    return resolved


def id_problem(ident: str) -> str | None:
    """What is wrong with an id, by the one rule every loader applies (corpus, queries, qrels, index
    inputs), or None. An id is non-empty, holds no tab or line break, and has no whitespace around
    it: qrels and run files name ids without it, so a padded id would never match its judgments."""
    if ident == "":
        return "is empty"
    if any(c in ident for c in "\t\r\n"):
        return "contains a tab or line break, which no qrels, run or ids file can hold"
    if ident != ident.strip():
        return "has whitespace around it; qrels and run files name ids without it, so it would never match: remove it"
    return None


def check_id(path: str | os.PathLike, line: int | None, ident: str, what: str = "document") -> str:
    """`ident` if `id_problem` finds nothing, else a DataError naming the file and line."""
    problem = id_problem(ident)
    if problem is not None:
        raise DataError(path, f"{what} id {ident!r} {problem}", line)
    return ident


def _string_id(path: Path, line: int, obj: dict, field: str = "_id", what: str = "document") -> str:
    value = obj.get(field)
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        found = "missing" if value is None else f"{value!r} is not a non-empty string"
        raise DataError(path, f"field {field!r} {found} (fields present: {sorted(obj)})", line)
    return check_id(path, line, str(value), what)


def _text_field(path: Path, line: int, obj: dict, field: str, required: bool) -> str:
    value = obj.get(field)
    if value is None:
        if required:
            raise DataError(path, f"field {field!r} is missing (fields present: {sorted(obj)})", line)
        return ""
    if not isinstance(value, str):
        raise DataError(path, f"field {field!r} must be a string, found {type(value).__name__}", line)
    return value


def load_corpus_file(path: str | os.PathLike) -> dict[str, dict]:
    """A corpus file (`.jsonl` or `.jsonl.gz`): `{doc_id: {"title", "text"}}` in file order.

    `text` is required (it may be empty); a missing or null `title` becomes "".
    """
    path = Path(path)
    corpus: dict[str, dict] = {}
    first_line: dict[str, int] = {}
    for line, obj in iter_jsonl(path, with_line_numbers=True):
        doc_id = _string_id(path, line, obj)
        if doc_id in corpus:
            raise DataError(
                path, f"duplicate document id {doc_id!r} (first seen on line {first_line[doc_id]})", line
            )
        first_line[doc_id] = line
        corpus[doc_id] = {
            "title": _text_field(path, line, obj, "title", required=False),
            "text": _text_field(path, line, obj, "text", required=True),
        }
    if not corpus:
        raise DataError(path, "no documents: the corpus is empty")
    return corpus


def corpus_file(folder: str | os.PathLike) -> Path:
    """The corpus file of a BEIR folder (`corpus.jsonl` or `corpus.jsonl.gz`, a link stored as text
    followed)."""
    return _find_file(_require_folder(folder), CORPUS_NAMES, "corpus")


def load_corpus(folder: str | os.PathLike) -> dict[str, dict]:
    """The corpus of a BEIR folder: `{doc_id: {"title", "text"}}`, in file order."""
    return load_corpus_file(corpus_file(folder))


def load_queries_file(path: str | os.PathLike) -> dict[str, str]:
    """A queries file: `{query_id: text}` in file order."""
    path = Path(path)
    queries: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for line, obj in iter_jsonl(path, with_line_numbers=True):
        query_id = _string_id(path, line, obj, what="query")
        if query_id in queries:
            raise DataError(
                path, f"duplicate query id {query_id!r} (first seen on line {first_line[query_id]})", line
            )
        first_line[query_id] = line
        queries[query_id] = _text_field(path, line, obj, "text", required=True)
    if not queries:
        raise DataError(path, "no queries: the file is empty")
    return queries


def load_queries(folder: str | os.PathLike) -> dict[str, str]:
    """The queries of a BEIR folder: `{query_id: text}`, in file order."""
    folder = _require_folder(folder)
    return load_queries_file(_find_file(folder, QUERIES_NAMES, "queries"))


def qrels_splits(folder: str | os.PathLike) -> list[str]:
    """The splits a BEIR folder has qrels for (`qrels/<split>.tsv`)."""
    qrels_dir = Path(folder) / "qrels"
    return sorted(p.stem for p in qrels_dir.glob("*.tsv")) if qrels_dir.is_dir() else []


def load_qrels_file(path: str | os.PathLike) -> dict[str, dict[str, int]]:
    """A qrels TSV: `{query_id: {doc_id: score}}` (graded integer scores), in file order.

    The first line is skipped when it is the header (`query-id<TAB>corpus-id<TAB>score`); blank lines
    are skipped; CRLF line ends are fine. A pair listed twice with different scores is an error.
    """
    path = Path(path)
    qrels: dict[str, dict[str, int]] = {}
    for line_number, raw in numbered_lines(path):
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        columns = line.split("\t")
        if line_number == 1 and columns[0].strip().lower() in ("query-id", "query_id", "qid"):
            continue
        if len(columns) != 3:
            raise DataError(
                path,
                f"expected 3 tab-separated columns (query-id, corpus-id, score), found {len(columns)}: {line[:80]!r}",
                line_number,
            )
        query_id, doc_id, score_text = columns[0], columns[1], columns[2].strip()
        if not query_id.strip() or not doc_id.strip():
            raise DataError(path, f"empty query-id or corpus-id: {line[:80]!r}", line_number)
        check_id(path, line_number, query_id, "query")
        check_id(path, line_number, doc_id, "document")
        try:
            score = int(score_text)
        except ValueError:
            raise DataError(path, f"score {score_text!r} is not an integer", line_number) from None
        judged = qrels.setdefault(query_id, {})
        if doc_id in judged and judged[doc_id] != score:
            raise DataError(
                path,
                f"pair ({query_id}, {doc_id}) is listed again with score {score} (before: {judged[doc_id]})",
                line_number,
            )
        judged[doc_id] = score
    if not qrels:
        raise DataError(path, "no judgments: the file has no query-id, corpus-id, score rows")
    return qrels


def load_qrels(folder: str | os.PathLike, split: str = "test") -> dict[str, dict[str, int]]:
    """The qrels of one split of a BEIR folder: `{query_id: {doc_id: score}}`."""
    folder = _require_folder(folder)
    path = folder / "qrels" / f"{split}.tsv"
    if not path.is_file():
        splits = qrels_splits(folder)
        found = f"splits available: {', '.join(splits)}" if splits else _describe_folder(folder / "qrels")
        raise DataError(path, f"no qrels for split {split!r} (a BEIR folder needs {BEIR_LAYOUT}); {found}")
    return load_qrels_file(path)


def check_beir_folder(folder: str | os.PathLike, split: str = "test") -> Path:
    """Raise a `DataError` listing everything a BEIR folder lacks (and what it holds instead)."""
    folder = _require_folder(folder)
    missing = []
    if not any((folder / name).is_file() for name in CORPUS_NAMES):
        missing.append("corpus.jsonl[.gz]")
    if not any((folder / name).is_file() for name in QUERIES_NAMES):
        missing.append("queries.jsonl")
    if not (folder / "qrels" / f"{split}.tsv").is_file():
        missing.append(f"qrels/{split}.tsv")
    if missing:
        splits = qrels_splits(folder)
        other = f"; qrels exist for: {', '.join(splits)}" if splits else ""
        raise DataError(
            folder,
            f"not a BEIR folder for split {split!r}: missing {', '.join(missing)}. A BEIR folder needs "
            f"{BEIR_LAYOUT}; {_describe_folder(folder)}{other}",
        )
    return folder


def load_beir(
    folder: str | os.PathLike, split: str = "test", *, warnings: list[str] | None = None
) -> tuple[dict, dict, dict]:
    """`(corpus, queries, qrels)` of one split; queries are restricted to those with qrels.

    A qrels query missing from `queries.jsonl` is an error (it could not be evaluated); qrels documents
    missing from the corpus are kept (they count as relevant documents that cannot be retrieved), with
    a warning that counts them, and an error when none of the judged documents is in the corpus (the
    wrong corpus: every metric would be 0). Queries with empty text are counted in a warning too.
    Warnings are logged and, when `warnings` is a list, appended to it.
    """
    folder = check_beir_folder(folder, split)
    qrels_path = folder / "qrels" / f"{split}.tsv"
    qrels = load_qrels(folder, split)
    queries_path = _find_file(folder, QUERIES_NAMES, "queries")
    all_queries = load_queries_file(queries_path)
    missing = [qid for qid in qrels if qid not in all_queries]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise DataError(
            qrels_path, f"{len(missing)} query ids have qrels but are not in queries.jsonl: {shown}"
        )
    queries = {qid: text for qid, text in all_queries.items() if qid in qrels}
    corpus = load_corpus(folder)
    found = []
    judged = [(qid, doc) for qid, docs in qrels.items() for doc in docs]
    outside = [(qid, doc) for qid, doc in judged if doc not in corpus]
    if len(outside) == len(judged):
        raise DataError(
            qrels_path,
            f"none of the {len(judged)} judged documents is in the corpus (first: {outside[0][1]!r} of query "
            f"{outside[0][0]!r}); every metric would be 0. Are these the qrels of this corpus?",
        )
    if outside:
        found.append(
            f"{qrels_path}: {len(outside)} of {len(judged)} judged documents are not in the corpus (first: "
            f"{outside[0][1]!r} of query {outside[0][0]!r}); they count as relevant but cannot be retrieved"
        )
    empty = [qid for qid, text in queries.items() if not text.strip()]
    if empty:
        found.append(
            f"{queries_path}: {len(empty)} of {len(queries)} evaluated queries have empty text (first: "
            f"{empty[0]!r}); they count in every average but can retrieve nothing meaningful"
        )
    for message in found:
        logger.warning("warning: %s", message)
    if warnings is not None:
        warnings.extend(found)
    return corpus, queries, qrels


def refuse_ids_with_whitespace(folder: str | os.PathLike, corpus: dict, queries: dict) -> None:
    """Raise a `DataError` (file, line, count) if a document or query id contains whitespace.

    TREC run files are whitespace-separated, so such an id cannot be written to one: checked when the
    data is loaded, before minutes of encoding rather than after.
    """
    folder = Path(folder)
    for ids, names, what in ((queries, QUERIES_NAMES, "query"), (corpus, CORPUS_NAMES, "document")):
        spaced = [ident for ident in ids if any(c.isspace() for c in ident)]
        if spaced:
            path = _find_file(folder, names, what)
            line = next(
                (
                    n
                    for n, obj in iter_jsonl(path, with_line_numbers=True)
                    if str(obj.get("_id")) == spaced[0]
                ),
                None,
            )
            raise DataError(
                path,
                f"{len(spaced)} {what} id(s) contain whitespace (first: {spaced[0]!r}), which a TREC run file "
                "cannot hold: rename them, or evaluate without --output",
                line,
            )
