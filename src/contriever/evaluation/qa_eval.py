"""The open-domain QA evaluation job: questions + an index + its passages -> top-k accuracy.

`evaluate_qa(questions, index, corpus)` encodes the questions with the index's model (its recorded
pooling, normalization and length), retrieves the `max(ks)` best passages of each from the index,
reads the text of just those passages from the corpus, and reports DPR's top-k accuracy (the
paper's table: top-1/5/20/100 on NaturalQuestions and TriviaQA), with DPR's answer matching
(`contriever.evaluation.qa`): the passage *text* is matched, not its title.

The corpus is the file the index was built from, in either form:

- a BEIR folder, or a `corpus.jsonl[.gz]` (`_id`, `title`, `text`);
- DPR's passage file `psgs_w100.tsv[.gz]` (`id<TAB>text<TAB>title`, under a header line).

It is streamed once and only the retrieved passages are kept, so a 21M-passage corpus does not
have to fit in memory. With `output_dir`, `metrics.json` (the accuracies) and `results.jsonl` (per
question: id, question, answers, rank of the first passage with an answer, retrieved ids) are
written, each through a temporary file.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from tqdm.auto import tqdm

from contriever.data.questions import Question, load_questions
from contriever.errors import DataError
from contriever.evaluation.qa import AnswerMatcher, accuracy_from_ranks
from contriever.io import atomic_write, open_text, write_json

PAPER_KS = (1, 5, 20, 100)


def _is_tsv(path: Path) -> bool:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return bool(suffixes) and suffixes[-1] in (".tsv", ".csv")


def _iter_dpr_passages(path: Path) -> Iterator[tuple[str, str]]:
    """(id, text) of DPR's `id<TAB>text<TAB>title` passage file (header line skipped)."""
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # passages can exceed csv's 128 KB default
    with open_text(path) as handle:
        reader = csv.reader(handle, delimiter="\t")
        try:
            for row in reader:
                if not row:
                    continue
                if reader.line_num == 1 and row[0].strip().lower() == "id":
                    continue
                if len(row) < 2:
                    raise DataError(
                        path, f"expected id<TAB>text<TAB>title, found {len(row)} column(s)", reader.line_num
                    )
                yield row[0].strip(), row[1]
        except csv.Error as error:
            raise DataError(path, f"cannot read the line: {error}", reader.line_num) from None


def _iter_jsonl_passages(path: Path) -> Iterator[tuple[str, str]]:
    from contriever.data.beir import iter_jsonl

    for line, obj in iter_jsonl(path, with_line_numbers=True):
        doc_id = obj.get("_id", obj.get("id"))
        text = obj.get("text")
        if doc_id is None or not isinstance(text, str):
            raise DataError(path, f"expected _id and text fields (fields present: {sorted(obj)})", line)
        yield str(doc_id), text


def corpus_file(corpus: str | os.PathLike) -> Path:
    """The passage file behind `corpus`: the file itself, or a BEIR folder's corpus.jsonl[.gz]."""
    path = Path(corpus)
    if path.is_dir():
        from contriever.data.beir import CORPUS_NAMES

        found = [path / name for name in CORPUS_NAMES if (path / name).is_file()]
        if not found:
            raise DataError(path, f"no corpus file in this folder ({' or '.join(CORPUS_NAMES)})")
        return found[0]
    if not path.is_file():
        raise DataError(path, "no such corpus file or folder")
    return path


def passage_texts(corpus: str | os.PathLike, ids: Iterable[str]) -> dict[str, str]:
    """`{id: text}` for `ids`, streamed from the corpus (see the module doc); every id must be found."""
    path = corpus_file(corpus)
    wanted = set(ids)
    found: dict[str, str] = {}
    passages = _iter_dpr_passages(path) if _is_tsv(path) else _iter_jsonl_passages(path)
    with tqdm(desc="reading passages", unit="passage", smoothing=0.05, mininterval=1.0) as progress:
        for doc_id, text in passages:
            progress.update()
            if doc_id in wanted:
                found[doc_id] = text
                if len(found) == len(wanted):
                    break
    missing = wanted - found.keys()
    if missing:
        shown = ", ".join(repr(m) for m in sorted(missing)[:5])
        raise DataError(
            path,
            f"{len(missing)} retrieved passage id(s) are not in this corpus (e.g. {shown}): "
            "pass the corpus the index was built from",
        )
    return found


def hit_ranks(
    questions: Sequence[Question],
    retrieved_ids: Sequence[Sequence[str]],
    texts: dict[str, str],
    match: str = "string",
    show_progress: bool = True,
) -> list[int | None]:
    """The 1-based rank of each question's first passage holding an answer (None: none does)."""
    ranks: list[int | None] = []
    for question, ids in tqdm(
        zip(questions, retrieved_ids, strict=True),
        total=len(questions),
        desc="matching answers",
        unit="question",
        disable=not show_progress,
    ):
        matcher = AnswerMatcher(question.answers, match)
        ranks.append(next((r for r, d in enumerate(ids, start=1) if matcher(texts[d])), None))
    return ranks


def evaluate_qa(
    questions_path: str | os.PathLike,
    index_path: str | os.PathLike,
    corpus: str | os.PathLike | None = None,
    *,
    model: str | None = None,
    ks: Sequence[int] = PAPER_KS,
    match: str = "string",
    batch_size: int | None = None,
    precision: str = "auto",
    output_dir: str | os.PathLike | None = None,
    show_progress: bool = True,
    ann: str | None = None,
    nprobe: int | None = None,
    ef_search: int | None = None,
    rerank: int | None = None,
) -> dict:
    """Top-k accuracy of an index on a question file (see the module doc): `{"top1": ..., ...}` plus
    counts. `ann` searches the folder's approximate index `ann/<ann>` (`nprobe`, `ef_search`, `rerank`
    as in `contriever search`)."""
    from contriever.retrieval.index import load_for_search
    from contriever.retrieval.retrieve import encoder_for_index

    if not ks or any(k < 1 for k in ks):
        raise ValueError(f"ks must be positive ranks, got {tuple(ks)}")
    questions = load_questions(questions_path)
    if match == "regex":
        from contriever.evaluation.qa import regex_pattern_error

        for question in questions:
            for pattern in question.answers:
                problem = regex_pattern_error(pattern)
                if problem:
                    raise DataError(
                        questions_path,
                        f"question {question.id!r}: answer {pattern!r} is no regex ({problem})",
                    )
    # exact search over memory-mapped shards when flat and no `ann` is named
    index, store = load_for_search(index_path, ann, nprobe=nprobe, ef_search=ef_search, rerank=rerank)
    corpus = corpus or (None if store is not None else index.metadata.get("corpus"))
    if not corpus and store is None:
        raise DataError(
            index_path, "the index does not record its corpus: pass the corpus it was built from (--corpus)"
        )
    encoder = encoder_for_index(index, model)
    started = time.perf_counter()
    vectors = encoder.encode_queries(
        [q.question for q in questions],
        batch_size=batch_size,
        precision=precision,
        show_progress=show_progress,
    )
    _, retrieved = index.search(vectors, max(ks), show_progress=show_progress)
    retrieval_s = time.perf_counter() - started
    retrieved_ids = (doc_id for ids in retrieved for doc_id in ids)
    # the index folder's passage store, unless a corpus is named
    texts = passage_texts(corpus, retrieved_ids) if corpus else store.texts_by_id(retrieved_ids)
    ranks = hit_ranks(questions, retrieved, texts, match, show_progress)
    metrics = {
        **accuracy_from_ranks(ranks, ks),
        "n_questions": len(questions),
        "match": match,
        "questions": str(questions_path),
        "index": str(index_path),
        "ann": ann,
        "corpus": str(corpus or store.path),
        "model": index.metadata.get("model") if model is None else model,
        "retrieval_s": round(retrieval_s, 3),
    }
    if output_dir is not None:
        output = Path(output_dir)
        with atomic_write(output / "results.jsonl") as handle:
            for question, ids, rank in zip(questions, retrieved, ranks, strict=True):
                record = {"id": question.id, "question": question.question, "answers": question.answers}
                handle.write(json.dumps({**record, "hit_rank": rank, "retrieved": ids}) + "\n")
        write_json(output / "metrics.json", metrics)
    return metrics


def format_accuracy(metrics: dict, title: str | None = None) -> str:
    """The paper's table row: top-k accuracy x100 for each k in `metrics`."""
    ks = [key for key in metrics if key.startswith("top") and key[3:].isdigit()]
    header = "  ".join(f"{'top-' + k[3:]:>8}" for k in ks)
    row = "  ".join(f"{100 * metrics[k]:8.1f}" for k in ks)
    lines = [title] if title else []
    lines += [
        header,
        row,
        f"({metrics.get('n_questions', '?')} questions, {metrics.get('match', 'string')} match)",
    ]
    return "\n".join(lines)
