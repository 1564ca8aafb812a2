"""Fine-tuning examples: a query, its gold documents and (optionally) negatives.

`TrainingExample(query, positives, negatives, hard_negatives, qid)`. A document is a dict
`{"title", "text"}` with `"_id"` when its corpus id is known (always from BEIR folders and from the
miner), or a plain string (its text). The id is what lets the negative sampler and the miner tell a
positive from a negative; without it they compare `title + " " + text`.

Readers (`load_training_data` picks one by what it finds):

- a BEIR folder: `from_beir(folder, split="train")`: each query of `qrels/<split>.tsv` with its
  documents of score > 0 as positives (judged-irrelevant documents are not used);
- DPR-style records, as one JSON list (`.json`) or as JSON lines: `question`, `positive_ctxs`,
  `negative_ctxs`, `hard_negative_ctxs`, each context `{title, text}` and maybe `passage_id`.
  Records with no positive context are skipped (DPR's own files hold some), as DPR does;
- plain JSON lines: `{"query", "positive" | "positives", "negatives"?, "hard_negatives"?, "qid"?}`.
  A document there is a string (its text), `{"title", "text"}` (maybe with `"_id"`), or a reference
  `{"_id"}` looked up in the `corpus` passed to the reader.

`.gz` files are read and written compressed. Every bad record raises `contriever.errors.DataError`
naming the file and the line. The miner's output is the plain format (`write_jsonl_examples`), with
each hard negative written in full as `{"_id", "title", "text"}`, so a mined file trains on its own.

Dev sets for early stopping are in `contriever.data.dev`.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from contriever.data.beir import iter_jsonl
from contriever.data.documents import document_text
from contriever.errors import DataError
from contriever.io import atomic_write, numbered_lines

logger = logging.getLogger(__name__)

Doc = dict | str
ID_KEYS = ("_id", "passage_id", "psg_id", "docid", "doc_id", "id")
QID_KEYS = ("qid", "query_id", "_id", "id")


@dataclass
class TrainingExample:
    """One training query. `positives` is never empty once read; documents are dicts or strings."""

    query: str
    positives: list[Doc]
    negatives: list[Doc] = field(default_factory=list)
    hard_negatives: list[Doc] = field(default_factory=list)
    qid: str | None = None

    @property
    def key(self) -> str:
        """What identifies the query: its id, else its text."""
        return self.qid if self.qid is not None else self.query


# ----- documents ------------------------------------------------------------------------------------
def doc_id(doc: Doc) -> str | None:
    return doc.get("_id") if isinstance(doc, dict) else None


def doc_key(doc: Doc) -> str:
    """A document's identity: `id:<_id>` when it has an id, else `text:<title text>`."""
    ident = doc_id(doc)
    return f"id:{ident}" if ident is not None else f"text:{document_text(doc)}"


def corpus_doc(corpus: Mapping[str, dict], ident: str) -> dict:
    """The corpus entry `ident` as a training document `{"_id", "title", "text"}`."""
    entry = corpus[ident]
    return {"_id": ident, "title": entry.get("title") or "", "text": entry.get("text") or ""}


class PositiveSet:
    """An example's positives, to test whether a document may serve as its negative.

    A document is excluded when its id is a positive's id or the query's own id, or when its
    `title + " " + text` equals a positive's (positives without ids, duplicates under other ids).
    """

    __slots__ = ("ids", "texts", "qid")

    def __init__(self, example: TrainingExample):
        self.ids = {doc_id(d) for d in example.positives} - {None}
        self.texts = {document_text(d) for d in example.positives}
        self.qid = example.qid

    def excludes(self, doc: Doc) -> bool:
        ident = doc_id(doc)
        if ident is not None and (ident in self.ids or ident == self.qid):
            return True
        return document_text(doc) in self.texts


def _parse_doc(value, path, line: int, where: str) -> dict:
    if isinstance(value, str):
        return {"title": "", "text": value}
    if not isinstance(value, dict):
        raise DataError(
            path, f"{where}: a document must be a string or an object, not {type(value).__name__}", line
        )
    ident = next((value[k] for k in ID_KEYS if value.get(k) not in (None, "")), None)
    text = value.get("text")
    if text is None:
        if ident is None:
            raise DataError(
                path, f"{where}: a document needs 'text' (or an '_id' to look up in a corpus)", line
            )
        return {"_id": str(ident)}  # a reference, resolved against the corpus
    title = value.get("title")
    if title is None:
        title = ""
    if not isinstance(text, str) or not isinstance(title, str):
        raise DataError(path, f"{where}: 'title' and 'text' must be strings", line)
    doc = {"title": title, "text": text}
    if ident is not None:
        doc["_id"] = str(ident)
    return doc


def _resolve(doc: dict, corpus: Mapping[str, dict] | None, path, line: int, where: str) -> dict:
    if "text" in doc:
        return doc
    ident = doc["_id"]
    if corpus is None:
        raise DataError(path, f"{where}: document {ident!r} has no text; pass a corpus to look it up", line)
    if ident not in corpus:
        raise DataError(path, f"{where}: document {ident!r} is not in the corpus", line)
    return corpus_doc(corpus, ident)


def _doc_list(record: dict, name: str, path, line: int, corpus, single: str | None = None) -> list[dict]:
    """The documents under `name` (a list) and, for the plain format, `single` (one document)."""
    values: list[tuple[str, object]] = []
    if single is not None and record.get(single) is not None:
        values.append((single, record[single]))
    many = record.get(name)
    if many is not None:
        if not isinstance(many, list):
            raise DataError(path, f"'{name}' must be a list, not {type(many).__name__}", line)
        values.extend((f"{name}[{i}]", value) for i, value in enumerate(many))
    return [
        _resolve(_parse_doc(value, path, line, where), corpus, path, line, where) for where, value in values
    ]


# ----- records ----------------------------------------------------------------------------------------
def example_from_record(
    record, path, line: int, corpus: Mapping[str, dict] | None = None
) -> TrainingExample | None:
    """A DPR (`question`, `positive_ctxs`, ...) or plain (`query`, `positive`, ...) record; None = skip."""
    if not isinstance(record, dict):
        raise DataError(path, f"expected a JSON object, not {type(record).__name__}", line)
    dpr = "question" in record
    query_field = "question" if dpr else "query"
    if query_field not in record:
        raise DataError(path, "no 'query' field (plain format) nor 'question' field (DPR format)", line)
    query = record[query_field]
    if not isinstance(query, str) or not query.strip():
        raise DataError(path, f"'{query_field}' must be a non-empty string", line)
    qid = next((record[k] for k in QID_KEYS if record.get(k) not in (None, "")), None)
    qid = None if qid is None else str(qid)
    if dpr:
        positives = _doc_list(record, "positive_ctxs", path, line, corpus)
        negatives = _doc_list(record, "negative_ctxs", path, line, corpus)
        hard = _doc_list(record, "hard_negative_ctxs", path, line, corpus)
        if not positives:
            return None
    else:
        positives = _doc_list(record, "positives", path, line, corpus, single="positive")
        if not positives:
            raise DataError(path, "no positive: give 'positive' (a document) or 'positives' (a list)", line)
        negatives = _doc_list(record, "negatives", path, line, corpus, single="negative")
        hard = _doc_list(record, "hard_negatives", path, line, corpus)
    empty = next((i for i, doc in enumerate(positives) if not document_text(doc).strip()), None)
    if empty is not None:
        raise DataError(path, f"positive {empty} is empty (no title, no text): it cannot be trained on", line)
    return TrainingExample(
        query=query, positives=positives, negatives=negatives, hard_negatives=hard, qid=qid
    )


def _json_list_records(path: Path) -> Iterator[tuple[int | None, str, object]]:
    """`(None, "record N: ", record)` for each record of a JSON list (json.load: no line per record)."""
    try:
        records = json.loads("".join(line for _, line in numbered_lines(path)))  # BOM and bad bytes named
    except json.JSONDecodeError as error:
        raise DataError(path, f"not valid JSON ({error.msg}, column {error.colno})", error.lineno) from None
    if not isinstance(records, list):
        raise DataError(path, f"expected a JSON list of records, not {type(records).__name__}")
    for number, record in enumerate(records, start=1):
        yield None, f"record {number}: ", record


def _json_lines_records(path: Path) -> Iterator[tuple[int | None, str, object]]:
    for line, record in iter_jsonl(path, with_line_numbers=True):
        yield line, "", record


def _first_char(path: Path) -> str:
    for _, line in numbered_lines(path):
        stripped = line.lstrip()
        if stripped:
            return stripped[0]
    return ""


def read_examples_file(
    path: str | os.PathLike, corpus: Mapping[str, dict] | None = None
) -> list[TrainingExample]:
    """DPR or plain records from a JSON list or a JSON-lines file (gzip allowed)."""
    path = Path(path)
    records = _json_list_records(path) if _first_char(path) == "[" else _json_lines_records(path)
    examples, skipped = [], 0
    for line, where, record in records:
        try:
            example = example_from_record(record, path, line, corpus)
        except DataError as error:
            raise DataError(path, where + error.message, line) from None
        if example is None:
            skipped += 1
        else:
            examples.append(example)
    if skipped:
        logger.warning("%s: skipped %d records without a positive", path, skipped)
    if not examples:
        raise DataError(path, "no training examples")
    return examples


# ----- BEIR -------------------------------------------------------------------------------------------
def _qrels_line(path: Path, qid: str, docid: str | None = None) -> int | None:
    """The line of `qrels` that names `qid` (and `docid`), for error messages."""
    try:
        with open(path, encoding="utf-8") as handle:
            for number, raw in enumerate(handle, start=1):
                parts = raw.rstrip("\r\n").split("\t")
                if parts and parts[0] == qid and (docid is None or (len(parts) > 1 and parts[1] == docid)):
                    return number
    except OSError:
        return None
    return None


def examples_from_qrels(
    queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, int]],
    corpus: Mapping[str, dict],
    source: str | os.PathLike = "qrels",
) -> list[TrainingExample]:
    """One example per query with a document of score > 0 (in qrels order); documents carry their ids.

    A query missing from `queries` is an error (with the qrels line when `source` is the file). A
    positive missing from the corpus cannot be trained on: it is left out with a warning (BEIR's
    loaders keep such qrels too), and a query left without positives is dropped.
    """
    examples, missing = [], []
    for qid, judged in qrels.items():
        positive_ids = [d for d, score in judged.items() if score > 0]
        if not positive_ids:
            continue
        if qid not in queries:
            line = _qrels_line(Path(source), qid) if Path(source).is_file() else None
            raise DataError(source, f"query {qid!r} is not in the queries file", line)
        present = [d for d in positive_ids if d in corpus]
        missing.extend((qid, d) for d in positive_ids if d not in corpus)
        if present:
            examples.append(
                TrainingExample(
                    query=queries[qid], positives=[corpus_doc(corpus, d) for d in present], qid=qid
                )
            )
    if missing:
        qid, ident = missing[0]
        line = _qrels_line(Path(source), qid, ident) if Path(source).is_file() else None
        where = f"{source}:{line}" if line is not None else str(source)
        logger.warning(
            "%s: %d positive documents are not in the corpus and were left out (first: %r of query %r)",
            where,
            len(missing),
            ident,
            qid,
        )
    return examples


def from_beir(
    folder: str | os.PathLike, split: str = "train", corpus: Mapping[str, dict] | None = None
) -> list[TrainingExample]:
    """Examples from a BEIR folder's queries and `qrels/<split>.tsv` (documents of score > 0)."""
    from contriever.data.beir import load_corpus, load_qrels, load_queries

    folder = Path(folder)
    if corpus is None:
        corpus = load_corpus(folder)
    examples = examples_from_qrels(
        load_queries(folder), load_qrels(folder, split), corpus, folder / "qrels" / f"{split}.tsv"
    )
    if not examples:
        raise DataError(folder / "qrels" / f"{split}.tsv", "no query has a document with score > 0")
    return examples


def is_beir_folder(path: Path) -> bool:
    return path.is_dir() and (path / "qrels").is_dir()


# ----- dispatch, merge, split, write ----------------------------------------------------------------------
def merge_by_query(examples: Iterable[TrainingExample]) -> list[TrainingExample]:
    """One example per query (id, else text): documents united in first-seen order, duplicates dropped.

    Files with one line per (query, positive) pair would otherwise put the same query twice in a
    batch, each pair's positive then being a false negative of the other.
    """
    merged: dict[str, TrainingExample] = {}
    for example in examples:
        current = merged.get(example.key)
        if current is None:
            merged[example.key] = TrainingExample(
                query=example.query,
                positives=list(example.positives),
                negatives=list(example.negatives),
                hard_negatives=list(example.hard_negatives),
                qid=example.qid,
            )
            continue
        for name in ("positives", "negatives", "hard_negatives"):
            target = getattr(current, name)
            seen = {doc_key(d) for d in target}
            for doc in getattr(example, name):
                if doc_key(doc) not in seen:
                    seen.add(doc_key(doc))
                    target.append(doc)
    return list(merged.values())


def load_training_data(
    path: str | os.PathLike,
    split: str = "train",
    *,
    corpus: Mapping[str, dict] | None = None,
    merge: bool = True,
) -> list[TrainingExample]:
    """Examples from a BEIR folder, a DPR JSON/JSONL file or a plain JSONL file (see the module doc).

    `corpus` resolves `{"_id"}` references in files (and saves reloading it for a BEIR folder);
    `merge` joins records of the same query (`merge_by_query`).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_dir():
        if not is_beir_folder(path):
            raise DataError(
                path, "a folder of training data must be a BEIR folder (with qrels/ and a corpus)"
            )
        return from_beir(path, split, corpus=corpus)
    examples = read_examples_file(path, corpus)
    return merge_by_query(examples) if merge else examples


def _doc_record(doc: Doc, ids_only: bool):
    if isinstance(doc, str):
        return doc
    if ids_only and doc.get("_id") is not None:
        return {"_id": doc["_id"]}
    out = {"_id": doc["_id"]} if doc.get("_id") is not None else {}
    out["title"] = doc.get("title") or ""
    out["text"] = doc.get("text") or ""
    return out


def example_record(example: TrainingExample, ids_only: bool = False) -> dict:
    record: dict = {}
    if example.qid is not None:
        record["qid"] = example.qid
    record["query"] = example.query
    record["positives"] = [_doc_record(d, ids_only) for d in example.positives]
    record["negatives"] = [_doc_record(d, ids_only) for d in example.negatives]
    record["hard_negatives"] = [_doc_record(d, ids_only) for d in example.hard_negatives]
    return record


def write_jsonl_examples(
    examples: Iterable[TrainingExample], path: str | os.PathLike, *, ids_only: bool = False
) -> Path:
    """Write the plain format, one query per line, atomically (gzip when the name ends in .gz).

    Documents are written whole (`{"_id", "title", "text"}`); `ids_only=True` writes documents that
    have an id as `{"_id"}` alone (smaller; reading it back then needs the corpus).
    """
    path = Path(path)
    with atomic_write(path, "wb") as raw:
        handle = gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) if path.suffix == ".gz" else raw
        for example in examples:
            handle.write(
                (json.dumps(example_record(example, ids_only), ensure_ascii=False) + "\n").encode("utf-8")
            )
        if handle is not raw:
            handle.close()
    return path
