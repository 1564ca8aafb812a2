"""Extra negatives and fine-tuning batches, drawn from seeded numpy generators and exactly resumable.

`NegativeSampler(corpus, hard_negative_prob=0.0, n_negatives=1, seed=0, hard_negative_min_index=0)`
gives each example `n_negatives` distinct extra negatives, drawn as the paper's fine-tuning code
draws them:

1. the number of hard negatives is binomial, `h ~ Binomial(n_negatives, hard_negative_prob)` (each
   slot is hard with probability `hard_negative_prob`), capped at the number available;
2. the hard ones are drawn without replacement from the example's mined list *after skipping its
   first `hard_negative_min_index` entries* (the top of a mined ranking is often an unlabelled
   positive);
3. the other `n_negatives - h` are random negatives, drawn without replacement from the example's
   own `negatives` (DPR's `negative_ctxs`, a plain file's `negatives`; `use_given_negatives=False`
   turns this off), and where those run short, from uniformly random corpus documents.

No document appears twice in one example's draw (identity: `_id`, else `title + " " + text`), and a
document that is a positive of the example (same `_id`, or same `title + " " + text`), or whose id
is the query's own id, is never returned. One difference from the official code, which then returns
fewer negatives: our batches give every query the same number of extra negatives, so a short random
list is completed from the corpus, and an example with fewer than `n_negatives` possible negatives
in all is an error naming it.

`ExampleBatcher(examples, batch_size, sampler, seed=0)` cuts the examples into batches
`TextBatch(queries, positives, negatives)` of strings (documents as `title + " " + text`):
`positives[i]` is one gold document of `queries[i]` (drawn at random when it has several) and
`negatives` holds `n_negatives` blocks of `batch_size` texts, block `j` giving every query its
`j`-th extra negative (the trainer's key layout: positives first, then one block per extra slot).

Epochs: examples are visited in a fresh random order each epoch and every batch is full. A batch that
runs past the end of an epoch is completed from the next epoch's order, whose first entries are then
the examples not already in that batch, so no batch holds an example twice and each example still
comes once per epoch. With data parallelism (`rank`, `world_size`) every process draws the same
global batch and keeps its own contiguous slice, so all processes share one state and `state_dict()`
of any of them resumes all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

from contriever.data.documents import document_text
from contriever.data.pairs import Doc, PositiveSet, TrainingExample, doc_key

STATE_VERSION = 1


def corpus_from_examples(examples: Sequence[TrainingExample]) -> list[Doc]:
    """Every distinct document named by the examples: a random-negative pool when there is no corpus."""
    seen: dict[str, Doc] = {}
    for example in examples:
        for doc in (*example.positives, *example.negatives, *example.hard_negatives):
            seen.setdefault(doc_key(doc), doc)
    return list(seen.values())


class NegativeSampler:
    """Draws extra negatives per example (see the module doc); `state_dict()` resumes it exactly."""

    def __init__(
        self,
        corpus: Sequence[Doc] | Mapping[str, dict] | None,
        hard_negative_prob: float = 0.0,
        n_negatives: int = 1,
        seed: int = 0,
        *,
        use_given_negatives: bool = True,
        max_tries: int = 100,
        hard_negative_min_index: int = 0,
    ):
        if not 0.0 <= hard_negative_prob <= 1.0:
            raise ValueError(f"hard_negative_prob must be in [0, 1], got {hard_negative_prob}")
        if n_negatives < 0:
            raise ValueError(f"n_negatives must be >= 0, got {n_negatives}")
        if hard_negative_min_index < 0:
            raise ValueError(f"hard_negative_min_index must be >= 0, got {hard_negative_min_index}")
        if isinstance(corpus, Mapping):
            self._ids: list[str] | None = list(corpus)
            self._mapping = corpus
            self._docs = None
        else:
            self._ids = None
            self._mapping = None
            self._docs = list(corpus) if corpus is not None else None
        self.hard_negative_prob = float(hard_negative_prob)
        self.n_negatives = int(n_negatives)
        self.use_given_negatives = use_given_negatives
        self.hard_negative_min_index = int(hard_negative_min_index)
        self.max_tries = max_tries
        self.rng = np.random.default_rng([seed, 31])

    # ----- corpus ---------------------------------------------------------------------------------
    @property
    def corpus_size(self) -> int:
        if self._ids is not None:
            return len(self._ids)
        return len(self._docs) if self._docs is not None else 0

    def _corpus_doc(self, index: int) -> Doc:
        if self._ids is not None:
            ident = self._ids[index]
            entry = self._mapping[ident]
            return {"_id": ident, "title": entry.get("title") or "", "text": entry.get("text") or ""}
        return self._docs[index]

    def _random_corpus_doc(self, positives: PositiveSet, taken: set[str]) -> Doc | None:
        """A uniformly random corpus document that is neither a positive nor in `taken` (None: none left)."""
        size = self.corpus_size
        if size == 0:
            raise ValueError("no corpus to draw random negatives from (and the example gives no negatives)")

        def usable(doc: Doc) -> bool:
            return not positives.excludes(doc) and doc_key(doc) not in taken

        for _ in range(self.max_tries):
            doc = self._corpus_doc(int(self.rng.integers(size)))
            if usable(doc):
                return doc
        # Nearly every document is excluded: walk the corpus from a random start instead.
        start = int(self.rng.integers(size))
        for offset in range(size):
            doc = self._corpus_doc((start + offset) % size)
            if usable(doc):
                return doc
        return None

    # ----- sampling -------------------------------------------------------------------------------
    def _draw_distinct(self, pool: list[Doc], count: int, taken: set[str]) -> list[Doc]:
        """Up to `count` documents of `pool` without replacement, skipping those in `taken` (updated)."""
        free = [d for d in pool if doc_key(d) not in taken]
        picked = [free[int(i)] for i in self.rng.permutation(len(free))[: min(count, len(free))]]
        taken.update(doc_key(d) for d in picked)
        return picked

    def sample(self, example: TrainingExample) -> list[Doc]:
        """`n_negatives` distinct negatives for one example (never one of its positives)."""
        if self.n_negatives == 0:
            return []
        positives = PositiveSet(example)
        hard = _distinct(
            d for d in example.hard_negatives[self.hard_negative_min_index :] if not positives.excludes(d)
        )
        given = (
            _distinct(d for d in example.negatives if not positives.excludes(d))
            if self.use_given_negatives
            else []
        )
        n_hard = int(self.rng.binomial(self.n_negatives, self.hard_negative_prob)) if hard else 0
        taken: set[str] = set()
        out = self._draw_distinct(hard, n_hard, taken)
        out += self._draw_distinct(given, self.n_negatives - len(out), taken)
        while len(out) < self.n_negatives:
            doc = self._random_corpus_doc(positives, taken) if self.corpus_size or not given else None
            if doc is None:
                raise ValueError(
                    f"query {example.query[:60]!r}: only {len(out)} distinct documents can serve as its "
                    f"negatives (not positives, not drawn already), but n_negatives is {self.n_negatives}"
                )
            taken.add(doc_key(doc))
            out.append(doc)
        return out

    def state_dict(self) -> dict:
        return {"version": STATE_VERSION, "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]


def _distinct(docs) -> list[Doc]:
    """`docs` without repeats (same `doc_key`), first occurrence kept, in order."""
    seen: dict[str, Doc] = {}
    for doc in docs:
        seen.setdefault(doc_key(doc), doc)
    return list(seen.values())


class TextBatch(NamedTuple):
    """One batch as strings, before tokenizing (the trainer's `FinetuneBatches` tokenizes it)."""

    queries: list[str]
    positives: list[str]
    negatives: list[str]  # n_negatives blocks of len(queries): block j = every query's j-th extra negative


class ExampleBatcher:
    """Cuts training examples into shuffled, full `TextBatch`es with their extra negatives (module doc)."""

    def __init__(
        self,
        examples: Sequence[TrainingExample],
        batch_size: int,
        sampler: NegativeSampler | None = None,
        seed: int = 0,
        *,
        rank: int = 0,
        world_size: int = 1,
    ):
        if not examples:
            raise ValueError("no training examples")
        if batch_size < 1 or batch_size % world_size:
            raise ValueError(
                f"batch size {batch_size} must be positive and divisible by world size {world_size}"
            )
        if batch_size > len(examples):
            raise ValueError(
                f"batch size {batch_size} is larger than the {len(examples)} training examples: "
                "a batch would hold the same query twice; lower the batch size"
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        self.examples = list(examples)
        self.batch_size = batch_size
        self.sampler = sampler
        self.rank = rank
        self.world_size = world_size
        self.rng = np.random.default_rng([seed, 29])
        self.epoch = 0  # the epoch whose order is being consumed
        self.position = 0  # next index into `order`
        self.order = self.rng.permutation(len(self.examples))

    @property
    def local_batch_size(self) -> int:
        return self.batch_size // self.world_size

    def _next_indices(self) -> list[int]:
        taken: list[int] = []
        while len(taken) < self.batch_size:
            if self.position == len(self.order):
                order = self.rng.permutation(len(self.examples))
                if taken:  # keep this batch free of repeats: its examples go last in the new epoch
                    repeat = np.isin(order, taken)
                    order = np.concatenate([order[~repeat], order[repeat]])
                self.order = order
                self.epoch += 1
                self.position = 0
            take = min(self.batch_size - len(taken), len(self.order) - self.position)
            taken.extend(int(i) for i in self.order[self.position : self.position + take])
            self.position += take
        return taken

    def next_batch(self) -> TextBatch:
        """This process's slice of the next global batch."""
        indices = self._next_indices()
        queries, positives, per_example = [], [], []
        for index in indices:  # every process draws for the whole batch, so states stay in step
            example = self.examples[index]
            queries.append(example.query)
            pick = int(self.rng.integers(len(example.positives))) if len(example.positives) > 1 else 0
            positives.append(document_text(example.positives[pick]))
            per_example.append(self.sampler.sample(example) if self.sampler is not None else [])
        lo, hi = self.rank * self.local_batch_size, (self.rank + 1) * self.local_batch_size
        n_slots = min((len(n) for n in per_example), default=0)
        negatives = [document_text(per_example[i][slot]) for slot in range(n_slots) for i in range(lo, hi)]
        return TextBatch(queries[lo:hi], positives[lo:hi], negatives)

    def state_dict(self) -> dict:
        """JSON-serialisable: epoch, position, the current order and every generator's state."""
        return {
            "version": STATE_VERSION,
            "epoch": self.epoch,
            "position": self.position,
            "order": [int(i) for i in self.order],
            "rng": self.rng.bit_generator.state,
            "sampler": self.sampler.state_dict() if self.sampler is not None else None,
            "n_examples": len(self.examples),
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("n_examples", len(self.examples)) != len(self.examples):
            raise ValueError(
                f"the checkpoint was taken with {state['n_examples']} training examples, "
                f"this run has {len(self.examples)}: not the same training data"
            )
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self.order = np.asarray(state["order"], dtype=np.int64)
        self.rng.bit_generator.state = state["rng"]
        if self.sampler is not None and state.get("sampler") is not None:
            self.sampler.load_state_dict(state["sampler"])
