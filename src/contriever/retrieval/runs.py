"""A run `{query_id: {doc_id: score}}`: the one type every retriever returns and every metric reads.

This is also the one place that applies BEIR's rule: a retrieved document whose id equals the query
id is dropped (on ArguAna and Quora the query itself is in the corpus). Retrievers apply it while
taking each query's top k (`run_from_search`, so a query still gets k documents); the metrics apply
it again to runs read from files (`drop_identical_ids`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

Run = dict[str, dict[str, float]]


def run_from_search(
    query_ids: Sequence[str],
    scores: Sequence[Sequence[float]],
    ranked_ids: Sequence[Sequence[str]],
    k: int,
    *,
    ignore_identical_ids: bool = True,
    doc_of: Callable[[str], str] | None = None,
) -> Run:
    """At most `k` documents per query from rows of ids ranked best first, with their scores.

    `doc_of` maps a ranked id to its document (passages `DOCID#N` to `DOCID`): a document then keeps
    the score of its best passage (max over passages). A document is never taken twice.
    """
    scores = scores.tolist() if hasattr(scores, "tolist") else scores
    run: Run = {}
    for qid, row_scores, row_ids in zip(query_ids, scores, ranked_ids, strict=True):
        results: dict[str, float] = {}
        for ranked_id, score in zip(row_ids, row_scores):
            if len(results) == k:
                break
            doc_id = doc_of(ranked_id) if doc_of is not None else ranked_id
            if doc_id in results or (ignore_identical_ids and doc_id == qid):
                continue
            results[doc_id] = float(score)
        run[qid] = results
    return run


def drop_identical_ids(run: Run) -> Run:
    """The run without any document whose id equals its query's id (a new dict; the input is untouched)."""
    return {qid: {doc: score for doc, score in docs.items() if doc != qid} for qid, docs in run.items()}
