"""Negative sampling (hard/random mix, never a positive) and resumable fine-tuning batches."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from contriever.data.negatives import ExampleBatcher, NegativeSampler, corpus_from_examples
from contriever.data.pairs import TrainingExample


def doc(ident: str, text: str | None = None) -> dict:
    return {"_id": ident, "title": f"title {ident}", "text": text or f"text of {ident}"}


CORPUS = {f"c{i}": {"title": f"title c{i}", "text": f"text of c{i}"} for i in range(50)}


def example(i: int, n_hard: int = 3, **kwargs) -> TrainingExample:
    return TrainingExample(
        query=f"query {i}",
        positives=[doc(f"c{i}")],
        hard_negatives=[doc(f"h{i}-{j}") for j in range(n_hard)],
        qid=f"q{i}",
        **kwargs,
    )


def is_hard(d: dict) -> bool:
    return d["_id"].startswith("h")


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_hard_negative_share_follows_probability(p):
    sampler = NegativeSampler(CORPUS, hard_negative_prob=p, n_negatives=2, seed=0)
    draws = [d for _ in range(2500) for d in sampler.sample(example(1))]
    share = sum(map(is_hard, draws)) / len(draws)
    sigma = (p * (1 - p) / len(draws)) ** 0.5
    assert abs(share - p) < 5 * sigma
    hard_counts = Counter(d["_id"] for d in draws if is_hard(d))
    assert len(hard_counts) == 3 and min(hard_counts.values()) > 0.2 * max(hard_counts.values())  # uniform


def test_probability_extremes_and_examples_without_hard_negatives():
    never = NegativeSampler(CORPUS, hard_negative_prob=0.0, n_negatives=1, seed=0)
    always = NegativeSampler(CORPUS, hard_negative_prob=1.0, n_negatives=1, seed=0)
    assert not any(is_hard(never.sample(example(2))[0]) for _ in range(300))
    assert all(is_hard(always.sample(example(2))[0]) for _ in range(300))
    assert not any(
        is_hard(always.sample(example(2, n_hard=0))[0]) for _ in range(300)
    )  # falls back to random
    assert NegativeSampler(CORPUS, n_negatives=0).sample(example(2)) == []


def test_random_negatives_are_never_positives():
    # A corpus where nearly every document is a positive (by id, by text, or the query's own id).
    corpus = {f"c{i}": {"title": "", "text": f"doc {i}"} for i in range(8)}
    corpus["dup"] = {"title": "", "text": "doc 1"}  # same text as a positive, another id
    corpus["q0"] = {"title": "", "text": "the query itself"}
    ex = TrainingExample(
        query="query",
        positives=[{"_id": f"c{i}", "title": "", "text": f"doc {i}"} for i in range(7)]
        + [{"title": "", "text": "doc 1"}],
        qid="q0",
    )
    sampler = NegativeSampler(corpus, n_negatives=1, seed=1, max_tries=2)
    for _ in range(300):
        assert {d["_id"] for d in sampler.sample(ex)} == {"c7"}
    with pytest.raises(ValueError, match="only 1 distinct documents can serve"):
        NegativeSampler(corpus, n_negatives=3, seed=1, max_tries=2).sample(ex)  # never c7 three times
    text_only = TrainingExample(query="q", positives=["doc 0"])
    list_sampler = NegativeSampler(
        [{"title": "", "text": f"doc {i}"} for i in range(3)], n_negatives=1, seed=0
    )
    assert all(list_sampler.sample(text_only)[0]["text"] != "doc 0" for _ in range(200))
    everything = TrainingExample(query="q", positives=[{"_id": i, **d} for i, d in corpus.items()])
    with pytest.raises(ValueError, match="only 0 distinct documents"):
        NegativeSampler(corpus, seed=0).sample(everything)


def _binomial_pmf(n: int, p: float) -> list[float]:
    from math import comb

    return [comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(n + 1)]


def test_number_of_hard_negatives_is_binomial():
    n, p, draws = 4, 0.3, 4000
    sampler = NegativeSampler(CORPUS, hard_negative_prob=p, n_negatives=n, seed=3)
    counts = Counter(sum(map(is_hard, sampler.sample(example(1, n_hard=10)))) for _ in range(draws))
    for k, probability in enumerate(_binomial_pmf(n, p)):
        sigma = (probability * (1 - probability) / draws) ** 0.5
        assert abs(counts[k] / draws - probability) < 5 * sigma + 1e-9, (k, counts)


def test_draws_never_repeat_a_negative():
    # hard and given lists with repeats and an overlap: still n distinct documents every time
    ex = TrainingExample(
        query="q",
        positives=[doc("c1")],
        hard_negatives=[doc("h0"), doc("h0"), doc("h1"), doc("n0")],
        negatives=[doc("n0"), doc("n1"), doc("n1")],
        qid="q",
    )
    for p in (0.0, 0.5, 1.0):
        sampler = NegativeSampler(CORPUS, hard_negative_prob=p, n_negatives=5, seed=0)
        for _ in range(300):
            keys = [d["_id"] for d in sampler.sample(ex)]
            assert len(keys) == 5 and len(set(keys)) == 5, keys
            assert "c1" not in keys


def test_short_hard_list_is_capped_and_completed_with_random_negatives():
    sampler = NegativeSampler(CORPUS, hard_negative_prob=1.0, n_negatives=4, seed=0)
    for _ in range(100):
        drawn = sampler.sample(example(2, n_hard=2, negatives=[doc("n1")]))
        assert sorted(d["_id"] for d in drawn if is_hard(d)) == ["h2-0", "h2-1"]  # both, once each
        assert "n1" in {d["_id"] for d in drawn}  # the given random negative first
        assert len({d["_id"] for d in drawn}) == 4  # and one distinct corpus document


def test_hard_negative_min_index_skips_the_top_of_the_mined_list():
    sampler = NegativeSampler(
        CORPUS, hard_negative_prob=1.0, n_negatives=2, seed=0, hard_negative_min_index=3
    )
    seen = Counter(d["_id"] for _ in range(2000) for d in sampler.sample(example(4, n_hard=10)))
    assert set(seen) == {f"h4-{j}" for j in range(3, 10)}  # h4-0 .. h4-2 never drawn
    expected = 2 * 2000 / 7  # uniform over the 7 left
    assert all(abs(c - expected) < 5 * expected**0.5 for c in seen.values()), seen
    everything_skipped = NegativeSampler(
        CORPUS, hard_negative_prob=1.0, n_negatives=1, seed=0, hard_negative_min_index=10
    )
    assert not any(is_hard(everything_skipped.sample(example(4, n_hard=10))[0]) for _ in range(100))
    with pytest.raises(ValueError, match="hard_negative_min_index"):
        NegativeSampler(CORPUS, hard_negative_min_index=-1)


def test_hard_negatives_equal_to_a_positive_are_not_used():
    ex = TrainingExample(
        query="q",
        positives=[doc("c1")],
        hard_negatives=[doc("c1"), {"_id": "x", "title": "title c1", "text": "text of c1"}, doc("h")],
        qid="q",
    )
    sampler = NegativeSampler(CORPUS, hard_negative_prob=1.0, n_negatives=1, seed=0)
    assert all(sampler.sample(ex)[0]["_id"] == "h" for _ in range(100))


def test_given_negatives_serve_as_random_negatives():
    ex = example(3, n_hard=0, negatives=[doc("n1"), doc("n2")])
    sampler = NegativeSampler(CORPUS, n_negatives=1, seed=0)
    assert {sampler.sample(ex)[0]["_id"] for _ in range(100)} == {"n1", "n2"}
    corpus_only = NegativeSampler(CORPUS, n_negatives=1, seed=0, use_given_negatives=False)
    assert all(corpus_only.sample(ex)[0]["_id"].startswith("c") for _ in range(100))
    no_corpus = NegativeSampler(None, n_negatives=1, seed=0)
    assert no_corpus.sample(ex)[0]["_id"] in {"n1", "n2"}
    with pytest.raises(ValueError, match="no corpus"):
        no_corpus.sample(example(4, n_hard=0))


def test_sampler_is_deterministic_and_resumes():
    def draws(sampler, n):
        return [d["_id"] for _ in range(n) for d in sampler.sample(example(5))]

    a = NegativeSampler(CORPUS, hard_negative_prob=0.3, n_negatives=2, seed=7)
    b = NegativeSampler(CORPUS, hard_negative_prob=0.3, n_negatives=2, seed=7)
    assert draws(a, 20) == draws(b, 20)
    state = json.loads(json.dumps(a.state_dict()))
    expected = draws(a, 20)
    c = NegativeSampler(CORPUS, hard_negative_prob=0.3, n_negatives=2, seed=99)
    c.load_state_dict(state)
    assert draws(c, 20) == expected
    assert draws(NegativeSampler(CORPUS, 0.3, 2, seed=8), 20) != draws(
        NegativeSampler(CORPUS, 0.3, 2, seed=7), 20
    )


def test_corpus_from_examples_deduplicates():
    examples = [example(1), example(1), example(2)]
    assert len(corpus_from_examples(examples)) == 2 * (1 + 3)


# ----- batches ------------------------------------------------------------------------------------------
def make_batcher(n_examples=10, batch_size=4, seed=0, n_negatives=2, p=0.5, **kwargs) -> ExampleBatcher:
    examples = [example(i) for i in range(n_examples)]
    sampler = NegativeSampler(CORPUS, hard_negative_prob=p, n_negatives=n_negatives, seed=seed)
    return ExampleBatcher(examples, batch_size, sampler, seed=seed, **kwargs)


def test_batch_layout():
    batcher = make_batcher()
    queries, positives, negatives = batcher.next_batch()
    assert len(queries) == len(positives) == 4 and len(negatives) == 2 * 4
    for i, query in enumerate(queries):
        number = query.split()[-1]
        assert positives[i] == f"title c{number} text of c{number}"  # title + " " + text
        for slot in range(2):  # block `slot` holds every query's slot-th negative
            negative = negatives[slot * 4 + i]
            assert negative.startswith(f"title h{number}-") or negative.startswith("title c")
            assert negative != positives[i]


def test_every_example_once_per_epoch_and_never_twice_in_a_batch():
    batcher = make_batcher(n_examples=10, batch_size=4)
    batches = [batcher.next_batch().queries for _ in range(5)]  # 20 = exactly two epochs
    assert all(len(set(b)) == len(b) for b in batches)
    assert set(Counter(q for b in batches for q in b).values()) == {2}
    assert batcher.epoch == 1
    for _ in range(200):
        b = batcher.next_batch().queries
        assert len(set(b)) == len(b)
    assert make_batcher(n_examples=10, batch_size=10).next_batch().queries != [
        f"query {i}" for i in range(10)
    ]


def test_positive_is_drawn_among_several():
    ex = TrainingExample(query="q", positives=["one", "two"])
    batcher = ExampleBatcher([ex, TrainingExample(query="r", positives=["three"])], 2, None, seed=0)
    seen = {p for _ in range(50) for p in batcher.next_batch().positives}
    assert seen == {"one", "two", "three"}
    assert batcher.next_batch().negatives == []


def test_batcher_resume_gives_identical_batches():
    first = make_batcher(n_examples=11, batch_size=4, seed=3)
    for _ in range(4):
        first.next_batch()
    state = json.loads(json.dumps(first.state_dict()))  # JSON-serialisable
    expected = [first.next_batch() for _ in range(9)]
    resumed = make_batcher(n_examples=11, batch_size=4, seed=3)
    resumed.next_batch()  # its own state is overwritten
    resumed.load_state_dict(state)
    assert [resumed.next_batch() for _ in range(9)] == expected
    other = make_batcher(n_examples=12, batch_size=4, seed=3)
    with pytest.raises(ValueError, match="not the same training data"):
        other.load_state_dict(state)


def test_ranks_take_slices_of_one_global_batch():
    whole = make_batcher(n_examples=12, batch_size=4, seed=5)
    parts = [make_batcher(n_examples=12, batch_size=4, seed=5, rank=r, world_size=2) for r in range(2)]
    for _ in range(6):
        batch = whole.next_batch()
        a, b = (p.next_batch() for p in parts)
        assert a.queries + b.queries == batch.queries
        assert a.positives + b.positives == batch.positives
        for slot in range(2):
            assert (
                a.negatives[2 * slot : 2 * slot + 2] + b.negatives[2 * slot : 2 * slot + 2]
                == batch.negatives[4 * slot : 4 * slot + 4]
            )


def test_batcher_rejects_impossible_sizes():
    with pytest.raises(ValueError, match="larger than"):
        make_batcher(n_examples=3, batch_size=4)
    with pytest.raises(ValueError, match="divisible"):
        make_batcher(batch_size=3, world_size=2)
    with pytest.raises(ValueError, match="no training examples"):
        ExampleBatcher([], 1)
