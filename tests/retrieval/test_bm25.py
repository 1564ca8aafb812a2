"""BM25 through bm25s: ranking, stemming, identical ids, save/load, and BEIR's SciFact number."""

from __future__ import annotations

import time

import pytest

from contriever.errors import DataError
from contriever.retrieval.bm25 import BM25Index, bm25_search, build_bm25, load_bm25, save_bm25

CORPUS = {
    "run": {"title": "Running", "text": "She runs every morning and has run three marathons."},
    "cook": {"title": "Cooking", "text": "Recipes for pasta, bread and soup."},
    "vit": {"title": "", "text": "Vitamin C prevents scurvy; vitamin D prevents rickets."},
    "q-self": {"title": "Self", "text": "A document whose id equals a query id, about pasta."},
    "empty": {"title": "", "text": ""},
}
QUERIES = {
    "q1": "running marathons",
    "q2": "vitamin deficiency scurvy",
    "q-self": "pasta recipes",
    "q4": "zzz",
}


@pytest.fixture(scope="module")
def index() -> BM25Index:
    return build_bm25(CORPUS, show_progress=False)


def test_ranking_and_stemming(index):
    run = bm25_search(index, QUERIES, k=10, show_progress=False)
    assert next(iter(run["q1"])) == "run"  # "running"/"runs" share the Porter stem "run"
    assert next(iter(run["q2"])) == "vit"
    assert list(run["q1"]) == ["run"]  # documents sharing no term are not returned
    assert run["q4"] == {}  # no known term: no results, but the query is in the run
    scores = list(run["q2"].values())
    assert scores == sorted(scores, reverse=True) and all(s > 0 for s in scores)


def test_identical_ids_and_k(index):
    run = bm25_search(index, QUERIES, k=1, show_progress=False)
    assert run["q-self"] == {"cook": pytest.approx(run["q-self"]["cook"])}  # the query's own doc skipped
    kept = bm25_search(index, QUERIES, k=10, ignore_identical_ids=False, show_progress=False)
    assert "q-self" in kept["q-self"]
    assert all(len(docs) <= 1 for docs in run.values())
    assert bm25_search(index, {}, k=5) == {}
    with pytest.raises(ValueError, match="k must be"):
        bm25_search(index, QUERIES, k=0)


def test_parameters_are_used():
    base = bm25_search(build_bm25(CORPUS, show_progress=False), QUERIES, 10, show_progress=False)
    other = bm25_search(
        build_bm25(CORPUS, k1=1.5, b=0.75, show_progress=False), QUERIES, 10, show_progress=False
    )
    assert base["q2"]["vit"] != pytest.approx(other["q2"]["vit"])
    unstemmed = bm25_search(
        build_bm25(CORPUS, stemmer=None, show_progress=False), QUERIES, 10, show_progress=False
    )
    assert unstemmed["q1"] == {"run": pytest.approx(unstemmed["q1"]["run"])}  # "marathons" still matches
    with pytest.raises(ValueError, match="unknown stemmer"):
        build_bm25(CORPUS, stemmer="klingon")
    with pytest.raises(ValueError, match="unknown BM25 method"):
        build_bm25(CORPUS, method="bm26")
    with pytest.raises(ValueError, match="empty corpus"):
        build_bm25({})


def test_plain_string_corpus():
    index = build_bm25({"a": "apples and pears", "b": "oranges"}, show_progress=False)
    assert list(bm25_search(index, {"q": "pear"}, 5, show_progress=False)["q"]) == ["a"]


def test_save_load_round_trip(index, tmp_path):
    folder = save_bm25(index, tmp_path / "bm25")
    assert (folder / "ids.txt").read_text().splitlines() == list(CORPUS)
    assert (folder / "bm25.json").exists()
    loaded = load_bm25(folder)
    assert loaded.settings == index.settings and loaded.doc_ids == index.doc_ids
    assert bm25_search(loaded, QUERIES, 10, show_progress=False) == bm25_search(
        index, QUERIES, 10, show_progress=False
    )
    assert BM25Index.load(index.save(tmp_path / "again")).doc_ids == index.doc_ids
    with pytest.raises(DataError, match="not a BM25 index folder"):
        load_bm25(tmp_path / "nothing")


def test_a_retriever_kept_in_a_folder_is_built_once_then_loaded(tmp_path):
    from contriever.retrieval.retrievers import BM25Retriever

    folder = tmp_path / "bm25"
    built = BM25Retriever.kept_in(folder, CORPUS, show_progress=False)
    assert (folder / "bm25.json").exists()
    loaded = BM25Retriever.kept_in(folder, CORPUS, show_progress=False)
    assert (
        loaded.retrieve(QUERIES, 10)
        == built.retrieve(QUERIES, 10)
        == BM25Retriever(CORPUS, show_progress=False).retrieve(QUERIES, 10)
    )
    with pytest.raises(DataError, match="holds other passages than the corpus"):
        BM25Retriever.kept_in(folder, {"other": "text"}, show_progress=False)


@pytest.mark.slow
def test_scifact_matches_beir_bm25(scifact_dir):
    """BEIR reports 66.5 nDCG@10 for Elasticsearch BM25 on SciFact test; we must be within 1.5 points."""
    from contriever.data.beir import load_beir
    from contriever.evaluation.metrics import evaluate_run
    from contriever.retrieval.retrieve import bm25_retrieve

    corpus, queries, qrels = load_beir(scifact_dir, "test")
    start = time.perf_counter()
    run = bm25_retrieve(corpus, queries, k=1000, show_progress=False)
    seconds = time.perf_counter() - start
    metrics = evaluate_run(qrels, run)
    assert abs(100 * metrics["ndcg@10"] - 66.5) <= 1.5, metrics
    assert metrics["recall@100"] > 0.88, metrics  # BEIR: 90.8
    assert seconds < 30
