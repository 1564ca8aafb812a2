"""Fusing runs (BM25 + dense, two dense models, ...) into one run. Pure functions over run dicts.

Within each run a query's documents are ranked by score descending, ties broken by doc id ascending
(any fixed rule would do; this one is documented so results are reproducible). Each function returns
a new run with each query's `top_k` best fused documents (all of them with `top_k=None`); a query
present in any input run is present in the output.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from contriever.retrieval.runs import Run

NORMALIZATIONS = ("minmax", "zscore", "none")


def _weights(runs: Sequence[Run], weights: Sequence[float] | None) -> list[float]:
    if not runs:
        raise ValueError("no runs to fuse")
    if weights is None:
        return [1.0] * len(runs)
    if len(weights) != len(runs):
        raise ValueError(f"{len(runs)} runs but {len(weights)} weights")
    if any(not math.isfinite(w) or w < 0 for w in weights):
        raise ValueError(f"weights must be finite and non-negative, got {list(weights)}")
    return [float(w) for w in weights]


def _ranked(docs: dict[str, float]) -> list[tuple[str, float]]:
    return sorted(docs.items(), key=lambda item: (-item[1], item[0]))


def _top(scores: dict[str, float], top_k: int | None) -> dict[str, float]:
    ranked = _ranked(scores)
    return dict(ranked if top_k is None else ranked[:top_k])


def _query_ids(runs: Sequence[Run]) -> list[str]:
    seen: dict[str, None] = {}
    for run in runs:
        seen.update(dict.fromkeys(run))
    return list(seen)


def reciprocal_rank_fusion(
    runs: Sequence[Run], k: float = 60, weights: Sequence[float] | None = None, *, top_k: int | None = 1000
) -> Run:
    """Reciprocal rank fusion (Cormack et al., 2009): score(d) = sum_i w_i / (k + rank_i(d)).

    `rank_i(d)` counts from 1 in run i; a run that did not retrieve d adds nothing.
    """
    if k < 0:
        raise ValueError(f"the RRF constant k must be non-negative, got {k}")
    weights = _weights(runs, weights)
    fused: Run = {}
    for qid in _query_ids(runs):
        scores: dict[str, float] = {}
        for run, weight in zip(runs, weights, strict=True):
            for rank, (doc, _) in enumerate(_ranked(run.get(qid, {})), start=1):
                scores[doc] = scores.get(doc, 0.0) + weight / (k + rank)
        fused[qid] = _top(scores, top_k)
    return fused


def normalize_scores(docs: dict[str, float], normalization: str = "minmax") -> dict[str, float]:
    """One query's scores rescaled: "minmax" to [0, 1] (all 1 when equal), "zscore" to mean 0 and
    standard deviation 1 (all 0 when equal), or "none"."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"unknown normalization {normalization!r}; choose one of {NORMALIZATIONS}")
    if normalization == "none" or not docs:
        return dict(docs)
    values = list(docs.values())
    if normalization == "minmax":
        low, high = min(values), max(values)
        if high == low:
            return dict.fromkeys(docs, 1.0)
        return {doc: (score - low) / (high - low) for doc, score in docs.items()}
    mean = math.fsum(values) / len(values)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / len(values))
    if std == 0:
        return dict.fromkeys(docs, 0.0)
    return {doc: (score - mean) / std for doc, score in docs.items()}


def weighted_sum(
    runs: Sequence[Run],
    weights: Sequence[float] | None = None,
    normalization: str = "minmax",
    *,
    top_k: int | None = 1000,
) -> Run:
    """score(d) = sum_i w_i * norm_i(d), each run's scores normalized per query first.

    A document that run i did not retrieve gets run i's lowest normalized score for that query (it
    ranks no better than the worst document run i kept: 0 under "minmax"); a run with no results for a
    query adds nothing to it.
    """
    weights = _weights(runs, weights)
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"unknown normalization {normalization!r}; choose one of {NORMALIZATIONS}")
    fused: Run = {}
    for qid in _query_ids(runs):
        normalized = [normalize_scores(run.get(qid, {}), normalization) for run in runs]
        docs = dict.fromkeys(doc for scores in normalized for doc in scores)
        scores = dict.fromkeys(docs, 0.0)
        for run_scores, weight in zip(normalized, weights, strict=True):
            if not run_scores:
                continue
            floor = min(run_scores.values())
            for doc in docs:
                scores[doc] += weight * run_scores.get(doc, floor)
        fused[qid] = _top(scores, top_k)
    return fused
