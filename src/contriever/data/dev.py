"""Held-out dev sets for early stopping when fine-tuning.

`split_dev(examples, fraction, seed)` holds out whole queries; `dev_set(dev, corpus, examples)` turns
them into the (corpus, queries, qrels) a retrieval evaluation reads; `sample_dev_corpus` shrinks the
dev corpus to every judged document plus a seeded sample, for cheaper evaluations.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from contriever.data.negatives import corpus_from_examples
from contriever.data.pairs import TrainingExample, doc_id, doc_key


def split_dev(
    examples: Sequence[TrainingExample], fraction: float = 0.1, seed: int = 0
) -> tuple[list[TrainingExample], list[TrainingExample]]:
    """(train, dev): `round(fraction * n_queries)` whole queries (at least one) held out, order kept.

    Examples sharing a query (id, else text) always land on the same side. Same input and seed, same
    split.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"dev fraction must be in [0, 1), got {fraction}")
    keys = list(dict.fromkeys(e.key for e in examples))
    if fraction == 0.0 or not keys:
        return list(examples), []
    if len(keys) < 2:
        raise ValueError(
            "cannot hold out a dev split from a single query: give more training queries, or set the dev "
            "fraction to 0 (no early stopping)"
        )
    n_dev = min(max(1, round(fraction * len(keys))), len(keys) - 1)
    chosen = np.random.default_rng(seed).permutation(len(keys))[:n_dev]
    dev_keys = {keys[i] for i in chosen}
    train = [e for e in examples if e.key not in dev_keys]
    dev = [e for e in examples if e.key in dev_keys]
    return train, dev


def dev_set(
    dev: list[TrainingExample], corpus: dict | None, all_examples: list[TrainingExample]
) -> tuple[dict, dict, dict]:
    """(corpus, queries, qrels) for held-out examples, ready for `retrieval_evaluator`.

    With a corpus, documents are its ids; without one, every document the examples name is the
    corpus, keyed by its identity (`doc_key`).
    """
    if corpus is None:
        corpus = {
            doc_key(d): d if isinstance(d, dict) else {"text": d} for d in corpus_from_examples(all_examples)
        }
        ident = doc_key
    else:
        ident = doc_id
    queries, qrels = {}, {}
    for number, example in enumerate(dev):
        qid = example.qid if example.qid is not None else f"dev-{number}"
        queries[qid] = example.query
        qrels.setdefault(qid, {}).update({ident(d): 1 for d in example.positives if ident(d) in corpus})
    return corpus, queries, {qid: docs for qid, docs in qrels.items() if docs}


def sample_dev_corpus(corpus: dict, qrels: dict, size: int, seed: int = 0) -> dict:
    """At most `size` documents of `corpus`: every judged dev document, then a seeded random sample.

    Retrieval among fewer distractors scores higher than over the whole corpus, but it ranks the
    checkpoints of one run alike at a fraction of the cost, which is all early stopping needs.
    """
    if size <= 0 or size >= len(corpus):
        return corpus
    judged = [doc for docs in qrels.values() for doc in docs if doc in corpus]
    keep = dict.fromkeys(judged)
    others = [doc for doc in corpus if doc not in keep]
    room = max(size - len(keep), 0)
    chosen = np.random.default_rng(seed).choice(len(others), size=min(room, len(others)), replace=False)
    keep.update(dict.fromkeys(others[i] for i in sorted(chosen)))
    return {doc: corpus[doc] for doc in keep}
