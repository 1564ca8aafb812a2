"""Hard-negative mining: top-ranked documents that are not labelled positive.

`mine_hard_negatives(examples, corpus, retriever, MiningSettings(k=100, skip_top=0, n_keep=30))` retrieves the top
documents of every training query, then per query:

1. ranks the candidates by score (best first);
2. with `rank_range="a-b"` keeps only the slice `[a:b]` of that raw ranking (0-based, end excluded),
   as FlagEmbedding's `--range_for_sampling 2-200` does: ranks a+1 to b; the retrieval depth is
   raised to b when `k` is smaller;
3. drops every labelled positive (by id, and by `title + " " + text` for positives without ids or
   duplicated under another id) and a document whose id is the query's own id: a positive is never
   returned;
4. skips the first `skip_top` remaining candidates (the very top non-positives are often unlabelled
   positives);
5. keeps `n_keep` of the rest: the best-ranked ones, or with `sample=True` a seeded random choice
   (FlagEmbedding's behaviour), kept in rank order. `n_keep=None` keeps all.

`retriever` is "bm25" (`retrieve.bm25_retrieve`), an `Encoder` (`retrieve.dense_retrieve`: the
corpus encoded into a temporary index folder), a retriever (`retrieve(queries, k) -> run`, e.g.
`retrieve.dense_retriever(encoder, corpus, EncodingSettings(batch_size=64))`), any callable
`(corpus, queries, k) -> run`, or a ready run `{qid: {doc_id: score}}`. The choice of negatives is one
`MiningSettings` value (k, skip_top, n_keep, rank_range, sample, seed).
Hard negatives are stored whole, `{"_id", "title", "text"}`, and the mined examples can be written
with `output=` in the plain JSONL format of `contriever.data.pairs` (one query per line), which
`load_training_data` reads back without the corpus.
`mine_beir(folder, model, output)` does all of it for a BEIR folder's train qrels.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contriever.data.pairs import (
    PositiveSet,
    TrainingExample,
    corpus_doc,
    examples_from_qrels,
    write_jsonl_examples,
)
from contriever.retrieval.runs import Run

logger = logging.getLogger(__name__)


def parse_rank_range(rank_range: str | Sequence[int] | None) -> tuple[int, int] | None:
    """ "2-200" or (2, 200) -> (2, 200): the slice [2:200] of the ranking."""
    if rank_range is None:
        return None
    if isinstance(rank_range, str):
        parts = rank_range.replace(" ", "").split("-")
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            raise ValueError(f"rank range {rank_range!r} must look like '2-200'")
        start, end = int(parts[0]), int(parts[1])
    else:
        start, end = (int(x) for x in rank_range)
    if not 0 <= start < end:
        raise ValueError(f"rank range {rank_range!r} must satisfy 0 <= start < end")
    return start, end


def _retrieve(retriever, corpus: Mapping[str, dict], queries: dict[str, str], k: int) -> Run:
    if isinstance(retriever, Mapping):
        return retriever
    if isinstance(retriever, str):
        if retriever != "bm25":
            raise ValueError(f"unknown retriever {retriever!r}: give 'bm25', an Encoder or a callable")
        from contriever.retrieval.retrieve import bm25_retrieve

        return bm25_retrieve(corpus, queries, k)
    if hasattr(retriever, "retrieve"):  # a retriever of contriever.retrieval.retrievers
        return retriever.retrieve(queries, k)
    from contriever.model.encoder import Encoder

    if isinstance(retriever, Encoder):
        from contriever.retrieval.retrieve import dense_retrieve

        return dense_retrieve(retriever, corpus, queries, k)
    if callable(retriever):
        return retriever(corpus, queries, k)
    raise TypeError(
        f"retriever must be 'bm25', an Encoder, a retriever, a callable or a run, not {type(retriever).__name__}"
    )


def _ranked(hits: Mapping[str, float] | None) -> list[str]:
    """Document ids, best score first; ties keep the retriever's order (the sort is stable)."""
    if not hits:
        return []
    return [doc for doc, _ in sorted(hits.items(), key=lambda item: -float(item[1]))]


def select_hard_negatives(
    ranked: Sequence[str],
    example: TrainingExample,
    corpus: Mapping[str, dict],
    *,
    skip_top: int = 0,
    n_keep: int | None = 30,
    rank_range: tuple[int, int] | None = None,
    rng: np.random.Generator | None = None,
) -> list[str]:
    """The ids kept as hard negatives from one query's ranking (steps 2 to 5 of the module doc)."""
    if rank_range is not None:
        ranked = ranked[rank_range[0] : rank_range[1]]
    positives = PositiveSet(example)
    candidates = [d for d in ranked if d in corpus and not positives.excludes(corpus_doc(corpus, d))]
    candidates = candidates[skip_top:]
    if n_keep is None or len(candidates) <= n_keep:
        return candidates
    if rng is None:
        return candidates[:n_keep]
    chosen = np.sort(rng.choice(len(candidates), size=n_keep, replace=False))
    return [candidates[i] for i in chosen]


@dataclass(frozen=True)
class MiningSettings:
    """How negatives are chosen from a ranking (steps 1 to 5 of the module doc): retrieval depth `k`,
    `rank_range`, `skip_top`, `n_keep` (None: all), and `sample` with `seed`."""

    k: int = 100
    skip_top: int = 0
    n_keep: int | None = 30
    rank_range: str | Sequence[int] | None = None
    sample: bool = False
    seed: int = 0

    def window_and_depth(self) -> tuple[tuple[int, int] | None, int]:
        """`(rank window or None, retrieval depth)`, after refusing settings that cannot keep any."""
        if self.skip_top < 0:
            raise ValueError(f"skip_top must be >= 0, got {self.skip_top}")
        if self.n_keep is not None and self.n_keep < 0:
            raise ValueError(f"n_keep must be >= 0 or None, got {self.n_keep}")
        window = parse_rank_range(self.rank_range)
        depth = max(self.k, window[1]) if window is not None else self.k
        if depth < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        ranked = window[1] - window[0] if window is not None else depth
        if self.skip_top >= ranked:
            where = f"the range {window[0]}-{window[1]}" if window is not None else f"k={self.k}"
            raise ValueError(
                f"skip_top={self.skip_top} skips every one of the {ranked} candidates per query ({where}): "
                "no hard negative could be kept; retrieve more (k of at least skip_top + n_keep) or skip fewer"
            )
        return window, depth


def _query_keys(examples: Sequence[TrainingExample]) -> list[str]:
    """Query keys for the retriever: the real id where it is unique (so a retriever's own "drop the
    document whose id is the query id" rule still applies), else a private one."""
    counts: dict[str, int] = {}
    for example in examples:
        if example.qid is not None:
            counts[example.qid] = counts.get(example.qid, 0) + 1
    return [
        e.qid if e.qid is not None and counts[e.qid] == 1 else f"\x00mining-query-{i}"
        for i, e in enumerate(examples)
    ]


def mine_hard_negatives(
    data: Sequence[TrainingExample] | tuple[Mapping[str, str], Mapping[str, Mapping[str, int]]],
    corpus: Mapping[str, dict],
    retriever="bm25",
    settings: MiningSettings | None = None,
    *,
    output: str | os.PathLike | None = None,
    **options,
) -> list[TrainingExample]:
    """Examples with `hard_negatives` filled from `retriever`'s ranking (see the module doc), chosen
    by `settings` with `options` (its fields by name: `k=10, n_keep=4, ...`) laid over them.

    `data`: training examples (documents with `_id` match corpus ids; others match by text), or
    `(queries, qrels)` as BEIR loaders give them (documents of score > 0 are the positives).
    """
    settings = dataclasses.replace(settings or MiningSettings(), **options)
    window, depth = settings.window_and_depth()
    if isinstance(data, tuple):
        queries_in, qrels = data
        examples = examples_from_qrels(queries_in, qrels, corpus)
    else:
        examples = list(data)
    keys = _query_keys(examples)
    started = time.perf_counter()
    run = _retrieve(retriever, corpus, dict(zip(keys, (e.query for e in examples))), depth)
    retrieved = time.perf_counter() - started
    rng = np.random.default_rng([settings.seed, 41]) if settings.sample else None
    mined = []
    for key, example in zip(keys, examples):
        ids = select_hard_negatives(
            _ranked(run.get(key)),
            example,
            corpus,
            skip_top=settings.skip_top,
            n_keep=settings.n_keep,
            rank_range=window,
            rng=rng,
        )
        mined.append(dataclasses.replace(example, hard_negatives=[corpus_doc(corpus, d) for d in ids]))
    logger.info(
        "mined %d queries in %.1fs (retrieval %.1fs)", len(mined), time.perf_counter() - started, retrieved
    )
    if mined and not any(e.hard_negatives for e in mined):
        raise ValueError(
            f"no hard negative was found for any of the {len(mined)} queries (every candidate was a "
            "positive, skipped or outside the corpus); nothing written. Retrieve more (k) or skip fewer"
        )
    if output is not None:
        write_jsonl_examples(mined, output)
    return mined


def mining_stats(examples: Sequence[TrainingExample]) -> dict:
    """Sanity numbers: queries, mean positives and hard negatives per query, share with any."""
    n = len(examples)
    if n == 0:
        return {"queries": 0}
    return {
        "queries": n,
        "mean_positives": sum(len(e.positives) for e in examples) / n,
        "mean_hard_negatives": sum(len(e.hard_negatives) for e in examples) / n,
        "with_hard_negatives": sum(bool(e.hard_negatives) for e in examples) / n,
    }


def mine_beir(
    folder: str | os.PathLike,
    model="bm25",
    output: str | os.PathLike | None = None,
    *,
    split: str = "train",
    settings: MiningSettings | None = None,
    device: str | None = None,
    **options,
) -> dict:
    """Mine hard negatives for a BEIR folder's `split` queries and write the training file.

    `model`: "bm25", "default" (the default model), a model folder, an `Encoder` or a retriever;
    `settings` and `options` as `mine_hard_negatives` takes them.
    Returns `mining_stats` plus the time taken (`seconds`) and the output path.
    """
    from contriever.data.beir import load_corpus
    from contriever.data.pairs import from_beir
    from contriever.model.encoder import Encoder

    started = time.perf_counter()
    folder = Path(folder)
    corpus = load_corpus(folder)
    examples = from_beir(folder, split, corpus=corpus)
    retriever = model
    if isinstance(model, (str, os.PathLike)) and str(model) != "bm25":
        import torch

        retriever = Encoder.load(model)
        retriever.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    mined = mine_hard_negatives(examples, corpus, retriever, settings, output=output, **options)
    stats = mining_stats(mined)
    stats["seconds"] = round(time.perf_counter() - started, 2)
    if output is not None:
        stats["output"] = str(output)
    logger.info("hard negatives: %s", stats)
    return stats
