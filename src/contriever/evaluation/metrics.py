"""Retrieval metrics through pytrec_eval, and TREC run files.

A *run* is `dict[query_id, dict[doc_id, score]]`; *qrels* are `dict[query_id, dict[doc_id, int]]`
with graded relevance (a document counts as relevant for recall and MRR when its grade is >= 1; nDCG
uses the grade itself as the gain, as trec_eval does).

Metrics (all fractions in [0, 1]):

- `ndcg@10`: trec_eval's `ndcg_cut.10`;
- `recall@100`, `recall@1000`: trec_eval's `recall.100`, `recall.1000`;
- `mrr@10`: trec_eval's `recip_rank` on the run cut to its 10 best documents per query.

**Which queries are averaged.** Every query of `qrels` counts, including a query the run has no
results for: such a query scores 0 on every metric. (pytrec_eval alone averages only over the queries
present in the run, which flatters a system that fails on some queries; BEIR averages over the queries
it evaluated, which is the same thing whenever every query got results.) Queries of the run that have
no qrels are ignored. Queries of qrels with no relevant document score 0, as they do in BEIR.

**Ties.** trec_eval orders documents by score, then by doc id in *descending* string order; the cut
for MRR@10 and the ranks written to TREC files use the same order, so they agree with the evaluation.

**Identical ids.** As BEIR does, a retrieved document whose id equals the query id is dropped before
evaluation (`ignore_identical_ids=True`): on ArguAna and Quora the query itself is in the corpus.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytrec_eval

from contriever.errors import DataError
from contriever.io import atomic_write, open_text
from contriever.retrieval.runs import Run, drop_identical_ids

METRICS = ("ndcg@10", "recall@100", "mrr@10", "recall@1000")
_TREC_MEASURES = {"ndcg@10": "ndcg_cut_10", "recall@100": "recall_100", "recall@1000": "recall_1000"}

Qrels = dict[str, dict[str, int]]


def trec_order(docs: dict[str, float]) -> list[tuple[str, float]]:
    """`(doc_id, score)` pairs in trec_eval's order: score descending, then doc id descending."""
    return sorted(docs.items(), key=lambda item: (item[1], item[0]), reverse=True)


def truncate_run(run: Run, k: int) -> Run:
    """Each query's `k` best documents (trec_eval's order, ties included the way trec_eval breaks them)."""
    return {qid: dict(trec_order(docs)[:k]) if len(docs) > k else dict(docs) for qid, docs in run.items()}


def _check_scores(run: Run) -> None:
    for qid, docs in run.items():
        for doc, score in docs.items():
            if not math.isfinite(score):
                raise ValueError(f"run: query {qid!r}, document {doc!r} has a non-finite score {score!r}")


def evaluate_per_query(
    qrels: Qrels, run: Run, *, ignore_identical_ids: bool = True
) -> dict[str, dict[str, float]]:
    """`{query_id: {"ndcg@10", "recall@100", "mrr@10", "recall@1000"}}` for every query of `qrels`.

    A query with no results in `run` gets 0 for every metric.
    """
    if not qrels:
        raise ValueError("qrels are empty: there is nothing to evaluate")
    if ignore_identical_ids:
        run = drop_identical_ids(run)
    run = {
        qid: {doc: float(score) for doc, score in docs.items()} for qid, docs in run.items() if qid in qrels
    }
    _check_scores(run)
    results: dict[str, dict[str, float]] = {qid: dict.fromkeys(METRICS, 0.0) for qid in qrels}
    # pytrec_eval wants string ids and int grades; a qrels entry with a float grade is a caller bug
    clean_qrels = {
        str(qid): {str(doc): int(grade) for doc, grade in docs.items()} for qid, docs in qrels.items()
    }
    evaluator = pytrec_eval.RelevanceEvaluator(clean_qrels, {"ndcg_cut.10", "recall.100", "recall.1000"})
    for qid, values in evaluator.evaluate(run).items():
        for name, measure in _TREC_MEASURES.items():
            results[qid][name] = float(values[measure])
    mrr = pytrec_eval.RelevanceEvaluator(clean_qrels, {"recip_rank"})
    for qid, values in mrr.evaluate(truncate_run(run, 10)).items():
        results[qid]["mrr@10"] = float(values["recip_rank"])
    return results


def evaluate_run(qrels: Qrels, run: Run, *, ignore_identical_ids: bool = True) -> dict[str, float]:
    """`{"ndcg@10", "recall@100", "mrr@10", "recall@1000"}` as fractions, averaged over the queries of
    `qrels` (a query without results counts as 0; see the module docstring)."""
    per_query = evaluate_per_query(qrels, run, ignore_identical_ids=ignore_identical_ids)
    n = len(per_query)
    return {name: math.fsum(values[name] for values in per_query.values()) / n for name in METRICS}


# ----- TREC run files ---------------------------------------------------------------------------------
def write_trec_run(run: Run, path: str | os.PathLike, tag: str = "contriever") -> Path:
    """Write `qid Q0 docid rank score tag` lines, each query's documents by score descending.

    Scores are written with `repr`, so reading the file back gives the same floats. Ids and the tag
    must not contain whitespace (the format is whitespace-separated).
    """
    if not tag or any(c.isspace() for c in tag):
        raise ValueError(f"TREC run tag {tag!r} must be non-empty and contain no whitespace")
    path = Path(path)
    with atomic_write(path) as handle:
        for qid, docs in run.items():
            if not qid or any(c.isspace() for c in qid):
                raise ValueError(f"query id {qid!r} contains whitespace: it cannot be written to a TREC run")
            lines = []
            for rank, (doc, score) in enumerate(trec_order(docs), start=1):
                if not doc or any(c.isspace() for c in doc):
                    raise ValueError(
                        f"document id {doc!r} contains whitespace: it cannot be written to a TREC run"
                    )
                lines.append(f"{qid} Q0 {doc} {rank} {float(score)!r} {tag}\n")
            handle.write("".join(lines))
    return path


def read_trec_run(path: str | os.PathLike) -> Run:
    """Read a TREC run file (`qid Q0 docid rank score tag`, whitespace-separated) into a run.

    The rank column is ignored (scores decide the order, as in trec_eval).
    """
    path = Path(path)
    run: Run = {}
    try:
        handle = open_text(path)
    except FileNotFoundError as error:
        raise DataError(path, "no such file") from error
    with handle:
        for line_number, line in enumerate(handle, start=1):
            columns = line.split()
            if not columns:
                continue
            if len(columns) != 6:
                raise DataError(
                    path,
                    f"expected 6 columns (qid Q0 docid rank score tag), found {len(columns)}",
                    line_number,
                )
            qid, _, doc, _, score_text, _ = columns
            try:
                score = float(score_text)
            except ValueError:
                raise DataError(path, f"score {score_text!r} is not a number", line_number) from None
            docs = run.setdefault(qid, {})
            if doc in docs:
                raise DataError(path, f"document {doc!r} is listed twice for query {qid!r}", line_number)
            docs[doc] = score
    return run
