"""Metrics against hand-computed values and pytrec_eval; identical ids; TREC run files."""

from __future__ import annotations

import math

import numpy as np
import pytest
import pytrec_eval

from contriever.errors import DataError
from contriever.evaluation.metrics import (
    evaluate_per_query,
    evaluate_run,
    read_trec_run,
    truncate_run,
    write_trec_run,
)
from contriever.retrieval.runs import drop_identical_ids

QRELS = {
    "q1": {"d1": 2, "d2": 1, "d3": 0, "d4": 3},
    "q2": {"x1": 1},
    "q3": {"y1": 1},  # never retrieved: counts as 0
}
RUN = {
    "q1": {"d5": 0.9, "d1": 0.8, "d3": 0.7, "d2": 0.6},
    "q2": {f"n{i:02d}": 1.0 - i / 100 for i in range(10)} | {"x1": 0.5},  # x1 at rank 11
    "q9": {"d1": 1.0},  # not in qrels: ignored
}


def test_hand_computed_values():
    per_query = evaluate_per_query(QRELS, RUN)
    # q1 ranking: d5 (0), d1 (2), d3 (0), d2 (1); d4 (3) is missing. Gains are the grades, log2 discounts.
    dcg = 2 / math.log2(3) + 1 / math.log2(5)
    idcg = 3 / math.log2(2) + 2 / math.log2(3) + 1 / math.log2(4)
    assert per_query["q1"]["ndcg@10"] == pytest.approx(dcg / idcg, abs=1e-12)
    assert per_query["q1"]["ndcg@10"] == pytest.approx(0.35544, abs=1e-5)
    assert per_query["q1"]["recall@100"] == pytest.approx(2 / 3)  # d1, d2 of {d1, d2, d4}; d3 is grade 0
    assert per_query["q1"]["mrr@10"] == 0.5
    assert per_query["q2"] == {"ndcg@10": 0.0, "recall@100": 1.0, "mrr@10": 0.0, "recall@1000": 1.0}
    assert per_query["q3"] == dict.fromkeys(("ndcg@10", "recall@100", "mrr@10", "recall@1000"), 0.0)
    assert set(per_query) == {"q1", "q2", "q3"}

    metrics = evaluate_run(QRELS, RUN)
    assert list(metrics) == ["ndcg@10", "recall@100", "mrr@10", "recall@1000"]
    assert metrics["ndcg@10"] == pytest.approx(dcg / idcg / 3)  # averaged over all 3 qrels queries
    assert metrics["recall@100"] == pytest.approx((2 / 3 + 1) / 3)
    assert metrics["mrr@10"] == pytest.approx(0.5 / 3)


def test_recall_cutoffs():
    qrels = {"q": {"a": 1, "b": 1}}
    run = {"q": {f"n{i:04d}": 2000.0 - i for i in range(500)} | {"a": 1999.5}}  # a at rank 2, b never
    run["q"]["b"] = 0.0  # rank 502: inside 1000, outside 100
    metrics = evaluate_run(qrels, run)
    assert metrics["recall@100"] == 0.5 and metrics["recall@1000"] == 1.0


def test_parity_with_pytrec_eval_on_random_graded_runs():
    rng = np.random.default_rng(0)
    qrels, run = {}, {}
    for q in range(40):
        docs = [f"d{i}" for i in range(300)]
        judged = rng.choice(300, size=12, replace=False)
        qrels[f"q{q}"] = {docs[i]: int(rng.integers(0, 4)) for i in judged}
        qrels[f"q{q}"][docs[judged[0]]] = 2  # at least one relevant document
        retrieved = rng.choice(300, size=150, replace=False)
        run[f"q{q}"] = {docs[i]: float(rng.normal()) for i in retrieved}
    expected = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100", "recall.1000"}).evaluate(
        run
    )
    mrr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(truncate_run(run, 10))
    ours = evaluate_per_query(qrels, run)
    for qid in qrels:
        assert ours[qid]["ndcg@10"] == pytest.approx(expected[qid]["ndcg_cut_10"], abs=1e-12)
        assert ours[qid]["recall@100"] == pytest.approx(expected[qid]["recall_100"], abs=1e-12)
        assert ours[qid]["recall@1000"] == pytest.approx(expected[qid]["recall_1000"], abs=1e-12)
        assert ours[qid]["mrr@10"] == pytest.approx(mrr[qid]["recip_rank"], abs=1e-12)
    assert evaluate_run(qrels, run)["ndcg@10"] == pytest.approx(
        np.mean([v["ndcg_cut_10"] for v in expected.values()])
    )
    assert len({round(v["ndcg@10"], 6) for v in ours.values()}) > 10  # the data exercise the metric


def test_mrr_cut_breaks_ties_like_trec_eval():
    # 10 irrelevant documents tie with the relevant one; trec_eval puts larger doc ids first on ties
    qrels = {"q": {"a": 1}}
    tied = {"q": {f"z{i}": 1.0 for i in range(10)} | {"a": 1.0}}  # "a" sorts last: rank 11
    assert evaluate_run(qrels, tied)["mrr@10"] == 0.0
    tied = {"q": {f"b{i}": 1.0 for i in range(10)} | {"c": 1.0}}
    assert evaluate_run({"q": {"c": 1}}, tied)["mrr@10"] == 1.0


def test_identical_ids_are_dropped():
    qrels = {"q1": {"d1": 1}}
    run = {"q1": {"q1": 5.0, "d1": 1.0}}
    assert drop_identical_ids(run) == {"q1": {"d1": 1.0}}
    assert run == {"q1": {"q1": 5.0, "d1": 1.0}}  # input untouched
    assert evaluate_run(qrels, run)["mrr@10"] == 1.0
    assert evaluate_run(qrels, run, ignore_identical_ids=False)["mrr@10"] == 0.5


@pytest.mark.bad_input
def test_bad_inputs():
    with pytest.raises(ValueError, match="empty"):
        evaluate_run({}, RUN)
    with pytest.raises(ValueError, match="non-finite"):
        evaluate_run(QRELS, {"q1": {"d1": float("nan")}})


def test_trec_run_round_trip(tmp_path):
    run = {"q1": {"a": 0.5, "b": 2.25, "c": 1 / 3}, "q2": {"x": -1.0}}
    path = write_trec_run(run, tmp_path / "out" / "run.trec", tag="mytag")
    lines = path.read_text().splitlines()
    assert lines[0] == "q1 Q0 b 1 2.25 mytag"
    assert [line.split()[2] for line in lines[:3]] == ["b", "a", "c"]  # score descending
    assert [line.split()[3] for line in lines[:3]] == ["1", "2", "3"]
    assert read_trec_run(path) == run  # exact floats
    assert sorted(p.name for p in path.parent.iterdir()) == ["run.trec"]  # no temporary left behind


@pytest.mark.bad_input
def test_trec_run_errors(tmp_path):
    with pytest.raises(ValueError, match="whitespace"):
        write_trec_run({"q 1": {"a": 1.0}}, tmp_path / "r.trec")
    with pytest.raises(ValueError, match="whitespace"):
        write_trec_run({"q1": {"a b": 1.0}}, tmp_path / "r.trec")
    assert not (tmp_path / "r.trec").exists()
    bad = tmp_path / "bad.trec"
    bad.write_text("q1 Q0 a 1 1.0 t\nq1 Q0 b 2 1.0\n")
    with pytest.raises(DataError, match=r"bad\.trec:2: expected 6 columns"):
        read_trec_run(bad)
    bad.write_text("q1 Q0 a 1 high t\n")
    with pytest.raises(DataError, match=r"bad\.trec:1: score 'high'"):
        read_trec_run(bad)
