"""The evaluate-qa job and command: questions + index + corpus -> DPR top-k accuracy."""

from __future__ import annotations

import json

import pytest

from contriever.cli.main import main
from contriever.errors import DataError
from contriever.evaluation.qa import has_answer
from contriever.evaluation.qa_eval import evaluate_qa, passage_texts
from contriever.retrieval.index import DenseIndex

PASSAGES = {
    "p1": ("Paris", "Paris is the capital of France."),
    "p2": ("Blue whale", "The blue whale is the largest animal."),
    "p3": ("Apollo 11", "Apollo 11 landed on the Moon in 1969."),
    "p4": ("The Beatles", "A band from Liverpool."),  # the answer is in the title only
    "p5": ("Oceans", "The Pacific is the largest ocean."),
}
QUESTIONS = [
    ("what is the capital of france", ["Paris"]),
    ("largest animal", ["blue whale"]),
    ("moon landing year", ["1969"]),
    ("band from liverpool", ["The Beatles"]),  # only in a title: a miss, as in DPR
    ("something absent", ["Atlantis"]),
]


@pytest.fixture
def qa_setup(tmp_path, tiny_encoder):
    model = tiny_encoder.save(tmp_path / "model")
    corpus = tmp_path / "psgs.tsv"
    corpus.write_text(
        "id\ttext\ttitle\n" + "".join(f"{i}\t{text}\t{title}\n" for i, (title, text) in PASSAGES.items())
    )
    docs = [f"{title} {text}" for title, text in PASSAGES.values()]
    index = DenseIndex.build(
        tiny_encoder.encode_corpus(docs, show_progress=False),
        list(PASSAGES),
        metadata={"model": str(model), "pooling": "mean", "normalize": False, "max_length": 512},
        show_progress=False,
    )
    index.save(tmp_path / "index")
    questions = tmp_path / "qa.csv"
    questions.write_text("".join(f"{q}\t{json.dumps(a)}\n" for q, a in QUESTIONS))
    return tmp_path


def test_evaluate_qa_matches_dpr_rule_on_retrieved_texts(qa_setup):
    out = qa_setup / "out"
    metrics = evaluate_qa(
        qa_setup / "qa.csv",
        qa_setup / "index",
        qa_setup / "psgs.tsv",
        ks=(1, 2, 5),
        output_dir=out,
        show_progress=False,
    )
    # depth 5 = the whole corpus: exactly the questions whose answer is in some passage *text*
    assert metrics["top5"] == pytest.approx(3 / 5)
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in results] == ["0", "1", "2", "3", "4"]
    for k in (1, 2):  # recompute from the saved rankings with the plain matching function
        hits = [any(has_answer(r["answers"], PASSAGES[d][1]) for d in r["retrieved"][:k]) for r in results]
        assert metrics[f"top{k}"] == pytest.approx(sum(hits) / len(hits))
    assert results[3]["hit_rank"] is None and results[4]["hit_rank"] is None
    assert json.loads((out / "metrics.json").read_text())["top5"] == metrics["top5"]


def test_evaluate_qa_command(qa_setup, capsys):
    code = main(
        [
            "evaluate-qa",
            "--questions",
            str(qa_setup / "qa.csv"),
            "--index",
            str(qa_setup / "index"),
            "--corpus",
            str(qa_setup / "psgs.tsv"),
            "--k",
            "1",
            "--k",
            "5",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "top-1" in printed and "top-5" in printed and "60.0" in printed


@pytest.mark.bad_input
def test_index_without_corpus_and_wrong_corpus(qa_setup, tmp_path):
    with pytest.raises(DataError, match="does not record its corpus"):
        evaluate_qa(qa_setup / "qa.csv", qa_setup / "index", show_progress=False)
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"_id": "p1", "title": "", "text": "x"}) + "\n")
    with pytest.raises(DataError, match="not in this corpus"):
        passage_texts(other, ["p1", "p9"])
    assert passage_texts(other, ["p1"]) == {"p1": "x"}
