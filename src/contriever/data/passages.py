"""Documents to passages, streamed: the paper's Wikipedia setting is 100-word passages, no overlap,
the document title carried on every passage (DPR's split of Wikipedia).

Inputs (chosen by file name; `.gz` allowed on each):

- `*.jsonl`: one JSON object a line with `_id` (or `id`), `text` and optionally `title`: a BEIR
  `corpus.jsonl`, or the enwiki sample's `{"id", "title", "text"}` lines;
- `*.tsv`: DPR-style `id<TAB>text<TAB>title` (the header line `id text title` is skipped; fields may
  be quoted as in DPR's `psgs_w100.tsv`);
- anything else (`*.txt`): plain text, one document a line, whose id is `STEM:LINE` (the file name
  without its suffixes, then the line number counted from 1).

`split_words(text, words, overlap)` cuts on whitespace into windows of `words` words starting every
`words - overlap` words; the last window holds what is left (a document of 250 words makes passages
of 100, 100 and 50 words). `words=0` keeps each document whole (the model truncates it).

Passage ids: `DOCID#N` with N counted from 0 within the document when documents are split; the
document id itself when they are not. `doc_id_of("a#b#2") == "a#b"` (the last `#` separates).

Bad input: a line that is not JSON, or lacks an id or text, raises `DataError` naming the file and
line; with `skip_bad=True` it is skipped and counted instead. A document with empty text is skipped
and counted. A truncated gzip raises `DataError` naming the file. Duplicate ids are found by the
passage store (`contriever.retrieval.store`), which is on disk, so memory stays constant.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from contriever.data.beir import check_id, json_object
from contriever.errors import DataError
from contriever.io import numbered_lines


@dataclass(frozen=True)
class PassageSettings:
    """How documents become passages: `words=0` keeps documents whole."""

    words: int = 0
    overlap: int = 0

    def __post_init__(self):
        if self.words < 0 or self.overlap < 0:
            raise ValueError(f"--words and --overlap must be >= 0, got {self.words} and {self.overlap}")
        if self.words and self.overlap >= self.words:
            raise ValueError(f"--overlap ({self.overlap}) must be smaller than --words ({self.words})")
        if not self.words and self.overlap:
            raise ValueError("--overlap needs --words (documents are kept whole without it)")

    def as_dict(self) -> dict:
        return asdict(self)


WHOLE_DOCUMENTS = PassageSettings()


@dataclass
class Document:
    id: str
    title: str
    text: str
    path: str
    line: int


@dataclass(frozen=True)
class Passage:
    id: str
    doc_id: str
    title: str
    text: str


@dataclass
class ReadStats:
    """What reading skipped: counted, reported in the index manifest."""

    documents: int = 0
    passages: int = 0
    empty: int = 0
    bad: int = 0
    bad_examples: list[str] = field(default_factory=list)

    def note_bad(self, error: DataError) -> None:
        self.bad += 1
        if len(self.bad_examples) < 5:
            self.bad_examples.append(str(error))

    def as_dict(self) -> dict:
        return asdict(self)


def split_words(text: str, words: int, overlap: int = 0) -> list[str]:
    """Windows of `words` whitespace-separated words every `words - overlap` words (see module doc)."""
    tokens = text.split()
    if not words:
        return [" ".join(tokens)] if tokens else []
    stride = words - overlap
    out = []
    for start in range(0, len(tokens), stride):
        out.append(" ".join(tokens[start : start + words]))
        if start + words >= len(tokens):
            break
    return out


def doc_id_of(passage_id: str) -> str:
    """The document id of a `DOCID#N` passage id."""
    return passage_id.rsplit("#", 1)[0]


def input_format(path: str | os.PathLike) -> str:
    name = Path(path).name.lower().removesuffix(".gz")
    if name.endswith(".jsonl") or name.endswith(".json"):
        return "jsonl"
    if name.endswith(".tsv"):
        return "tsv"
    return "text"


def _stem(path: Path) -> str:
    name = path.name.removesuffix(".gz")
    return name.rsplit(".", 1)[0] if "." in name else name


def _field(obj: dict, names: Sequence[str], path: Path, line: int, required: bool) -> str:
    for name in names:
        if name in obj and obj[name] is not None:
            value = obj[name]
            if isinstance(value, bool) or not isinstance(value, str | int):
                raise DataError(path, f"field {name!r} must be a string, found {type(value).__name__}", line)
            return str(value)
    if required:
        raise DataError(path, f"field {names[0]!r} is missing (fields present: {sorted(obj)})", line)
    return ""


def _jsonl_documents(path: Path, lines, skip_bad: bool, stats: ReadStats) -> Iterator[Document]:
    for line_number, raw in lines:
        if not raw.strip():
            continue
        try:
            try:
                obj = json_object(raw)
            except ValueError as error:
                raise DataError(path, str(error), line_number) from None
            doc_id = _field(obj, ("_id", "id"), path, line_number, required=True)
            if not doc_id.strip():
                raise DataError(path, "empty document id", line_number)
            check_id(path, line_number, doc_id)  # the one id rule of every loader (data.beir)
            text = _field(obj, ("text",), path, line_number, required=True)
            title = _field(obj, ("title",), path, line_number, required=False)
        except DataError as error:
            if not skip_bad:
                raise
            stats.note_bad(error)
            continue
        yield Document(doc_id, title, text, str(path), line_number)


def _tsv_documents(path: Path, lines, skip_bad: bool, stats: ReadStats) -> Iterator[Document]:
    reader = csv.reader((line for _, line in lines), delimiter="\t")
    for row in reader:
        line_number = reader.line_num
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if line_number == 1 and [c.strip().lower() for c in row[:3]] == ["id", "text", "title"]:
            continue
        if len(row) not in (2, 3) or not row[0].strip():
            error = DataError(
                path,
                f"expected 'id<TAB>text<TAB>title' (2 or 3 columns), found {len(row)}: {row[:3]!r}",
                line_number,
            )
            if not skip_bad:
                raise error
            stats.note_bad(error)
            continue
        try:
            doc_id = check_id(path, line_number, row[0])
        except DataError as error:
            if not skip_bad:
                raise
            stats.note_bad(error)
            continue
        yield Document(doc_id, row[2] if len(row) == 3 else "", row[1], str(path), line_number)


def _text_documents(path: Path, lines, skip_bad: bool, stats: ReadStats) -> Iterator[Document]:
    stem = _stem(path)
    for line_number, raw in lines:
        yield Document(f"{stem}:{line_number}", "", raw.rstrip("\r\n"), str(path), line_number)


READERS = {"jsonl": _jsonl_documents, "tsv": _tsv_documents, "text": _text_documents}


def iter_documents(
    paths: Iterable[str | os.PathLike], *, skip_bad: bool = False, stats: ReadStats | None = None
) -> Iterator[Document]:
    """Stream the documents of `paths` in order (see the module docstring for formats and errors)."""
    stats = stats if stats is not None else ReadStats()
    for path in map(Path, paths):
        # each line decoded on its own: a bad byte or a cut gzip is named at its line (and column)
        lines = numbered_lines(path)
        try:
            yield from READERS[input_format(path)](path, lines, skip_bad, stats)
        except csv.Error as error:
            raise DataError(path, f"cannot read the file (truncated or damaged?): {error}") from error
        finally:
            lines.close()


def iter_passages(
    paths: Iterable[str | os.PathLike],
    settings: PassageSettings = WHOLE_DOCUMENTS,
    *,
    skip_bad: bool = False,
    stats: ReadStats | None = None,
) -> Iterator[tuple[Passage, Document]]:
    """Stream `(passage, its document)` pairs; documents with empty text are skipped and counted."""
    stats = stats if stats is not None else ReadStats()
    for doc in iter_documents(paths, skip_bad=skip_bad, stats=stats):
        pieces = split_words(doc.text, settings.words, settings.overlap)
        if not pieces:
            stats.empty += 1
            continue
        stats.documents += 1
        title = " ".join(doc.title.split())
        for number, text in enumerate(pieces):
            passage_id = f"{doc.id}#{number}" if settings.words else doc.id
            stats.passages += 1
            yield Passage(passage_id, doc.id, title, text if settings.words else doc.text), doc


def fingerprint_files(paths: Sequence[str | os.PathLike], chunk: int = 1 << 20) -> dict:
    """The inputs' content hash (blake2b of every file's bytes, in order) with names and sizes."""
    digest = hashlib.blake2b(digest_size=16)
    files = []
    for path in map(Path, paths):
        try:
            size = path.stat().st_size
            with open(path, "rb") as handle:
                while block := handle.read(chunk):
                    digest.update(block)
        except FileNotFoundError:
            raise DataError(path, "no such file") from None
        digest.update(b"\0")
        files.append({"path": str(path.resolve()), "bytes": size})
    return {"files": files, "fingerprint": digest.hexdigest()}
