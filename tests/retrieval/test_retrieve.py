"""Retrieval pipelines with the tiny random encoder: dense, BM25 and hybrid runs."""

from __future__ import annotations

import numpy as np
import pytest

from contriever.data.documents import document_text
from contriever.retrieval.hybrid import reciprocal_rank_fusion
from contriever.retrieval.retrieve import bm25_retrieve, dense_retrieve, dense_retriever, index_corpus
from contriever.retrieval.retrievers import BM25Retriever, DenseRetriever, HybridRetriever
from contriever.retrieval.settings import EncodingSettings

CORPUS = {
    f"d{i}": {"title": f"Title {i}", "text": f"document number {i} about topic {i % 3} and word{i}"}
    for i in range(12)
}
CORPUS["q0"] = {"title": "", "text": "the first query's own text, present in the corpus"}
QUERIES = {"q0": "the first query's own text", "q1": "topic 1 word4", "q2": "document word7"}


def test_dense_retrieve_scores_are_inner_products(tiny_encoder):
    timings: dict = {}
    run = dense_retrieve(tiny_encoder, CORPUS, QUERIES, k=5, show_progress=False, timings=timings)
    assert set(run) == set(QUERIES) and all(len(docs) == 5 for docs in run.values())
    assert set(timings) == {"encode_corpus_s", "encode_queries_s", "search_s"}
    docs = (
        tiny_encoder.encode_corpus(list(CORPUS.values()), show_progress=False)
        .astype(np.float16)
        .astype(np.float32)
    )
    queries = tiny_encoder.encode_queries(list(QUERIES.values()), show_progress=False)
    ids = list(CORPUS)
    for row, qid in enumerate(QUERIES):
        scores = queries[row] @ docs.T
        order = [ids[j] for j in np.argsort(-scores) if ids[j] != qid][:5]
        assert list(run[qid]) == order
        assert list(run[qid].values()) == pytest.approx(
            [scores[ids.index(d)] for d in order], rel=1e-4, abs=1e-4
        )
    assert "q0" not in run["q0"]  # the query's own id is skipped, and it still gets 5 documents


def test_prebuilt_index_and_factories(tiny_encoder):
    index = index_corpus(tiny_encoder, CORPUS, show_progress=False, metadata={"model": "tiny"})
    assert index.metadata["model"] == "tiny" and index.metadata["pooling"] == "mean"
    first = DenseRetriever(tiny_encoder, index, show_progress=False).retrieve(QUERIES, 3)
    again = dense_retrieve(tiny_encoder, None, QUERIES, k=3, index=index, show_progress=False)
    assert first == again
    hnsw = dense_retrieve(
        tiny_encoder, CORPUS, QUERIES, 3, EncodingSettings(index_factory="HNSW32"), show_progress=False
    )
    assert {q: list(d) for q, d in hnsw.items()} == {q: list(d) for q, d in first.items()}
    everything = dense_retrieve(tiny_encoder, CORPUS, QUERIES, k=1000, show_progress=False)
    assert len(everything["q1"]) == len(CORPUS) and len(everything["q0"]) == len(CORPUS) - 1
    with pytest.raises(ValueError, match="corpus"):
        dense_retrieve(tiny_encoder, None, QUERIES)


@pytest.mark.parametrize("passage_depth", [0, 3])
def test_queries_searched_in_blocks_give_the_same_run(tiny_encoder, monkeypatch, passage_depth):
    import contriever.retrieval.retrievers as retrievers

    index = index_corpus(tiny_encoder, CORPUS, show_progress=False)
    retriever = DenseRetriever(tiny_encoder, index, passage_depth=passage_depth, show_progress=False)
    whole = retriever.retrieve(QUERIES, 4)
    monkeypatch.setattr(retrievers, "SEARCH_ENTRIES", 1)  # one query a block
    searched = []
    search = index.search
    monkeypatch.setattr(
        index, "search", lambda vectors, k, **kw: searched.append(len(vectors)) or search(vectors, k, **kw)
    )
    blocks = retriever.retrieve(QUERIES, 4)
    assert searched == [1, 1, 1] and blocks == whole and list(blocks) == list(QUERIES)


def test_bm25_retrieve_settings_and_timings():
    timings: dict = {}
    run = bm25_retrieve(CORPUS, QUERIES, k=3, show_progress=False, timings=timings)
    assert next(iter(run["q2"])) == "d7" and "q0" not in run["q0"]
    assert set(timings) == {"index_s", "search_s"}
    unstemmed = bm25_retrieve(CORPUS, QUERIES, k=3, stemmer=None, k1=1.2, show_progress=False)
    assert unstemmed["q2"] != run["q2"]
    assert document_text(CORPUS["d1"]).startswith("Title 1 ")


def hybrid(encoder, **fusion) -> HybridRetriever:
    lexical = BM25Retriever(CORPUS, show_progress=False)
    return HybridRetriever(lexical, dense_retriever(encoder, CORPUS, show_progress=False), **fusion)


def test_hybrid_retrieve_is_the_fusion_of_both_runs(tiny_encoder):
    fused = hybrid(tiny_encoder, depth=100).retrieve(QUERIES, 4)
    lexical = bm25_retrieve(CORPUS, QUERIES, k=100, show_progress=False)
    dense = dense_retrieve(tiny_encoder, CORPUS, QUERIES, k=100, show_progress=False)
    expected = reciprocal_rank_fusion([lexical, dense], top_k=4)
    assert fused.keys() == expected.keys()
    for qid in expected:
        assert list(fused[qid]) == list(expected[qid])
        assert list(fused[qid].values()) == pytest.approx(list(expected[qid].values()))
    weighted = hybrid(tiny_encoder, fusion="weighted", weights=[1.0, 0.0]).retrieve(QUERIES, 4)
    assert list(weighted["q2"])[0] == "d7"  # all weight on BM25
    with pytest.raises(ValueError, match="unknown fusion"):
        hybrid(tiny_encoder, fusion="max")


def test_max_over_passages_hand_made():
    """Documents ranked by their best passage: a (0.9) > b (0.8, its best of 0.8 and 0.7) > c (0.5)."""
    from contriever.data.passages import doc_id_of
    from contriever.retrieval.runs import run_from_search

    scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.5], [0.9, 0.8, 0.7, 0.6, 0.5]], dtype=np.float32)
    passages = [["a#1", "b#0", "b#3", "a#0", "c#0"], ["q#0", "x#y#0", "q#1", "x#y#2", "z#0"]]
    run = run_from_search(["q"], scores[1:], passages[1:], k=10, doc_of=doc_id_of)
    assert run["q"] == pytest.approx({"x#y": 0.8, "z": 0.5})  # the query's own document skipped
    run = run_from_search(["q1", "q2"], scores, passages, k=2, doc_of=doc_id_of)
    assert run["q1"] == pytest.approx({"a": 0.9, "b": 0.8})  # k documents, not k passages
    assert list(run["q2"]) == ["q", "x#y"] and run["q2"]["x#y"] == pytest.approx(0.8)
