"""Hard-negative mining: never a positive, skip_top, rank windows, sampling, output file."""

from __future__ import annotations

import gzip
import importlib.util
import json

import pytest

from contriever.data.pairs import TrainingExample, load_training_data
from contriever.retrieval.mining import mine_beir, mine_hard_negatives, mining_stats, parse_rank_range

CORPUS = {f"d{i}": {"title": f"T{i}", "text": f"document number {i}"} for i in range(30)}
QRELS = {"q1": {"d3": 1, "d7": 2, "d9": 0}, "q2": {"d0": 1}}
QUERIES = {"q1": "first question", "q2": "second question", "q3": "unjudged"}

needs_retrieve = pytest.mark.skipif(
    importlib.util.find_spec("contriever.retrieval.retrieve") is None,
    reason="contriever.retrieval.retrieve (dense_retrieve / bm25_retrieve) is not written yet",
)


class PositivesFirst:
    """A retriever that ranks every labelled positive first, then d0, d1, ... in order."""

    def __init__(self, qrels):
        self.qrels = qrels
        self.k_seen = None

    def __call__(self, corpus, queries, k):
        self.k_seen = k
        run = {}
        for qid in queries:
            gold = [d for d, s in self.qrels.get(qid, {}).items() if s > 0]
            rest = [d for d in corpus if d not in gold]
            ranked = (gold + rest)[:k]
            run[qid] = {d: float(len(ranked) - r) for r, d in enumerate(ranked)}
        return run


def hard_ids(example: TrainingExample) -> list[str]:
    return [d["_id"] for d in example.hard_negatives]


def test_never_returns_a_positive_and_keeps_the_top():
    mined = mine_hard_negatives((QUERIES, QRELS), CORPUS, PositivesFirst(QRELS), k=10, n_keep=4)
    assert [e.qid for e in mined] == ["q1", "q2"]
    q1, q2 = mined
    assert hard_ids(q1) == ["d0", "d1", "d2", "d4"]  # d3 and d7 are positives; d9 (score 0) may be mined
    assert hard_ids(q2) == ["d1", "d2", "d3", "d4"]
    assert q1.hard_negatives[0] == {"_id": "d0", "title": "T0", "text": "document number 0"}
    for example in mined:
        assert not {d["_id"] for d in example.positives} & set(hard_ids(example))
    everything = mine_hard_negatives((QUERIES, QRELS), CORPUS, PositivesFirst(QRELS), k=30, n_keep=None)
    assert len(hard_ids(everything[0])) == 28 and "d3" not in hard_ids(everything[0])


def test_skip_top_skips_the_best_non_positives():
    mined = mine_hard_negatives((QUERIES, QRELS), CORPUS, PositivesFirst(QRELS), k=10, skip_top=2, n_keep=3)
    assert hard_ids(mined[0]) == ["d2", "d4", "d5"]
    assert hard_ids(mined[1]) == ["d3", "d4", "d5"]


def test_rank_range_slices_the_raw_ranking_and_raises_depth():
    retriever = PositivesFirst(QRELS)
    mined = mine_hard_negatives((QUERIES, QRELS), CORPUS, retriever, k=5, rank_range="1-6", n_keep=None)
    assert retriever.k_seen == 6
    # q1 ranking: d3 d7 d0 d1 d2 d4 ...; slice [1:6] = d7 d0 d1 d2 d4, minus positive d7
    assert hard_ids(mined[0]) == ["d0", "d1", "d2", "d4"]
    assert parse_rank_range("2-200") == (2, 200) == parse_rank_range((2, 200))
    assert parse_rank_range(None) is None
    for bad in ("200-2", "2", "a-b", "3-3"):
        with pytest.raises(ValueError):
            parse_rank_range(bad)


def test_sampling_within_the_window_is_seeded_and_in_rank_order():
    def run(seed):
        mined = mine_hard_negatives(
            (QUERIES, QRELS),
            CORPUS,
            PositivesFirst(QRELS),
            rank_range="2-30",
            n_keep=5,
            sample=True,
            seed=seed,
        )
        return [hard_ids(e) for e in mined]

    first = run(0)
    assert first == run(0) and first != run(1)
    ranking = [d for d in CORPUS if d not in ("d3", "d7")]
    for ids in first[:1]:
        assert len(ids) == 5 and ids == sorted(ids, key=ranking.index)
        assert ids != ranking[:5]


def test_examples_without_ids_and_query_id_documents():
    corpus = dict(CORPUS)
    corpus["self"] = {"title": "", "text": "the query's own document"}
    examples = [
        TrainingExample(query="q", positives=[{"title": "T0", "text": "document number 0"}], qid="self"),
        TrainingExample(query="q", positives=["T1 document number 1"]),  # no id, no qid: matched by text
    ]

    def ranks_self_and_positives_first(corpus, queries, k):
        order = ["self", "d0", "d1", "d2", "d3"]
        return {qid: {d: 10.0 - r for r, d in enumerate(order)} for qid in queries}

    mined = mine_hard_negatives(examples, corpus, ranks_self_and_positives_first, n_keep=2)
    assert hard_ids(mined[0]) == ["d1", "d2"]  # neither the query's own id nor the text-matched positive
    assert hard_ids(mined[1]) == ["self", "d0"]
    assert mined[0].positives == examples[0].positives  # positives untouched


def test_a_ready_run_and_the_output_file(tmp_path):
    run = {"q1": {"d3": 9.0, "d5": 8.0, "d6": 8.5, "d7": 1.0}, "q2": {}}
    out = tmp_path / "mined" / "hard.jsonl"
    mined = mine_hard_negatives((QUERIES, QRELS), CORPUS, run, n_keep=10, output=out)
    assert hard_ids(mined[0]) == ["d6", "d5"] and mined[1].hard_negatives == []
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records[0]["qid"] == "q1" and records[0]["hard_negatives"][0] == {
        "_id": "d6",
        "title": "T6",
        "text": "document number 6",
    }
    assert load_training_data(out) == mined
    stats = mining_stats(mined)
    assert stats == {
        "queries": 2,
        "mean_positives": 1.5,
        "mean_hard_negatives": 1.0,
        "with_hard_negatives": 0.5,
    }


@pytest.mark.bad_input
def test_bad_arguments():
    with pytest.raises(ValueError):
        mine_hard_negatives((QUERIES, QRELS), CORPUS, PositivesFirst(QRELS), skip_top=-1)
    with pytest.raises(ValueError, match="unknown retriever"):
        mine_hard_negatives((QUERIES, QRELS), CORPUS, "tfidf")
    with pytest.raises(TypeError):
        mine_hard_negatives((QUERIES, QRELS), CORPUS, 42)


# ----- the real retrievers ----------------------------------------------------------------------------------
WORDS_CORPUS = {
    "p1": {"title": "Aspirin", "text": "aspirin reduces fever and pain in adults"},
    "p2": {"title": "Ibuprofen", "text": "ibuprofen reduces inflammation and pain"},
    "n1": {"title": "Fever", "text": "fever is a rise in body temperature, aspirin or ibuprofen treat it"},
    "n2": {"title": "Pain", "text": "pain relief drugs include aspirin and ibuprofen"},
    "n3": {"title": "Cats", "text": "cats sleep most of the day"},
    "n4": {"title": "Rivers", "text": "the nile is a long river"},
}
WORDS_QUERIES = {"a": "does aspirin reduce fever", "b": "ibuprofen for inflammation pain"}
WORDS_QRELS = {"a": {"p1": 1}, "b": {"p2": 1}}


@needs_retrieve
def test_bm25_mining_excludes_positives():
    mined = mine_hard_negatives((WORDS_QUERIES, WORDS_QRELS), WORDS_CORPUS, "bm25", k=6, n_keep=3)
    for example in mined:
        ids = hard_ids(example)
        assert ids and example.positives[0]["_id"] not in ids
    assert hard_ids(mined[0])[0] in ("n1", "n2")  # the lexical near-misses come first


@needs_retrieve
def test_dense_mining_with_tiny_encoder(tiny_encoder):
    mined = mine_hard_negatives((WORDS_QUERIES, WORDS_QRELS), WORDS_CORPUS, tiny_encoder, k=6, n_keep=10)
    for example in mined:
        assert len(hard_ids(example)) == 5 and example.positives[0]["_id"] not in hard_ids(example)


@needs_retrieve
def test_mine_beir_writes_the_training_file(tmp_path):
    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    with gzip.open(folder / "corpus.jsonl.gz", "wt") as handle:
        for ident, d in WORDS_CORPUS.items():
            handle.write(json.dumps({"_id": ident, **d}) + "\n")
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in WORDS_QUERIES.items())
    )
    (folder / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\na\tp1\t1\nb\tp2\t1\n")
    out = tmp_path / "out" / "hard.jsonl"
    stats = mine_beir(folder, "bm25", out, k=6, n_keep=2)
    assert stats["queries"] == 2 and stats["with_hard_negatives"] == 1.0 and stats["output"] == str(out)
    examples = load_training_data(out)
    assert [e.qid for e in examples] == ["a", "b"] and all(len(e.hard_negatives) == 2 for e in examples)
