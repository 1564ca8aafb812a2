"""The evaluate-qa job and command: question files + passages + systems -> DPR top-k accuracy, ceilings."""

from __future__ import annotations

import json

import pytest

from contriever.cli.main import main
from contriever.errors import DataError, UsageError
from contriever.evaluation.qa import has_answer
from contriever.evaluation.qa_eval import evaluate_qa
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


def _results(folder):
    return [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]


def test_evaluate_qa_matches_dpr_rule_on_retrieved_texts(qa_setup):
    out = qa_setup / "out"
    metrics = evaluate_qa(
        qa_setup / "qa.csv",
        corpus=qa_setup / "psgs.tsv",
        index_path=qa_setup / "index",
        ks=(1, 2, 5),
        output_dir=out,
        show_progress=False,
    )
    # depth 5 = the whole corpus: exactly the questions whose answer is in some passage *text*
    assert metrics["top5"] == pytest.approx(3 / 5) == pytest.approx(metrics["ceiling"])
    (folder,) = (out / "qa").iterdir()  # one system
    results = _results(folder)
    assert [r["id"] for r in results] == ["0", "1", "2", "3", "4"]
    for k in (1, 2):  # recompute from the saved rankings with the plain matching function
        hits = [any(has_answer(r["answers"], PASSAGES[d][1]) for d in r["retrieved"][:k]) for r in results]
        assert metrics[f"top{k}"] == pytest.approx(sum(hits) / len(hits))
    assert results[3]["hit_rank"] is None and results[3]["corpus_passage"] is None  # title only
    assert results[2]["corpus_passage"] == "p3"
    assert all(r["hit_passage"] == r["retrieved"][r["hit_rank"] - 1] for r in results if r["hit_rank"])
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["sets"]["qa"]["ceiling"] == pytest.approx(3 / 5)
    assert (out / "accuracy.png").stat().st_size > 1000


def test_several_systems_and_question_files_in_one_run(qa_setup, tmp_path):
    regex_file = tmp_path / "curated.jsonl"
    regex_file.write_text(
        json.dumps(
            {"id": "c0", "question": "when did apollo land", "answers": [r"19[67]\d"], "match": "regex"}
        )
        + "\n"
        + json.dumps(
            {"id": "c1", "question": "which city", "answers": [r"LIVERPOOL|Leeds"], "match": "regex"}
        )
        + "\n"
        + json.dumps({"id": "c2", "question": "which band", "answers": [r"beatles?"], "match": "regex"})
        + "\n"
    )
    model = str(qa_setup / "model")
    out = tmp_path / "out"
    results = evaluate_qa(
        [qa_setup / "qa.csv", regex_file],
        corpus=qa_setup / "psgs.tsv",
        index_path=qa_setup / "index",
        models=["bm25", model, f"hybrid:{model}"],
        ks=(1, 5),
        output_dir=out,
        show_progress=False,
    )
    assert set(results["sets"]) == {"qa", "curated"}
    curated = results["sets"]["curated"]
    assert curated["ceiling"] == pytest.approx(2 / 3)  # 1969 and Liverpool (the text); beatles: title only
    for entry in results["sets"].values():
        assert set(entry["systems"]) == {"bm25", model, f"hybrid:{model}"}
        for metrics in entry["systems"].values():
            assert metrics["top1"] <= metrics["top5"] <= entry["ceiling"] + 1e-9
        # dense and hybrid see every passage at depth 5: exactly the ceiling
        assert entry["systems"][model]["top5"] == pytest.approx(entry["ceiling"])
    assert results["sets"]["qa"]["systems"]["bm25"]["top1"] == pytest.approx(3 / 5)  # word overlap wins here
    assert len(list((out / "curated").iterdir())) == 3


@pytest.mark.bad_input
def test_a_corpus_that_is_not_the_index_is_refused_before_any_search(qa_setup, tmp_path, monkeypatch):
    import contriever.evaluation.qa_eval as qa_eval

    def no_search(*args, **kwargs):
        raise AssertionError("searched")

    monkeypatch.setattr(qa_eval, "retrieve", no_search)
    monkeypatch.setattr(qa_eval, "first_answering_passages", no_search)
    other = tmp_path / "other.tsv"
    other.write_text("id\ttext\ttitle\np1\tx\tt\np9\ty\tt\np3\tz\tt\np4\tz\tt\np5\tz\tt\n")
    with pytest.raises(DataError, match=r"other.tsv: passage 1 is 'p9' but the index .* has 'p2' there"):
        evaluate_qa(qa_setup / "qa.csv", corpus=other, index_path=qa_setup / "index", show_progress=False)
    short = tmp_path / "short.tsv"
    short.write_text("id\ttext\ttitle\np1\tx\tt\n")
    with pytest.raises(DataError, match=r"1 passages, but the index .* holds 5"):
        evaluate_qa(qa_setup / "qa.csv", corpus=short, index_path=qa_setup / "index", show_progress=False)
    with pytest.raises(DataError, match="does not record its corpus"):
        evaluate_qa(qa_setup / "qa.csv", index_path=qa_setup / "index", show_progress=False)


@pytest.mark.bad_input
def test_another_model_than_the_indexs_is_refused(qa_setup):
    with pytest.raises(UsageError, match="holds .*'s vectors"):
        evaluate_qa(
            qa_setup / "qa.csv",
            corpus=qa_setup / "psgs.tsv",
            index_path=qa_setup / "index",
            models=["default"],
            show_progress=False,
        )


def test_answerable_only_keeps_the_questions_the_corpus_answers(qa_setup):
    results = evaluate_qa(
        qa_setup / "qa.csv",
        corpus=qa_setup / "psgs.tsv",
        models=["bm25"],
        ks=(5,),
        answerable_only=True,
        show_progress=False,
    )
    entry = results["sets"]["qa"]
    assert (entry["n_file"], entry["n_answerable"], entry["n_questions"]) == (5, 3, 3)
    assert (entry["ceiling_all"], entry["ceiling"]) == (pytest.approx(3 / 5), 1.0)


def test_evaluate_qa_command(qa_setup, capsys):
    code = main(
        [
            "evaluate-qa",
            "--questions",
            str(qa_setup / "qa.csv"),
            "--corpus",
            str(qa_setup / "psgs.tsv"),
            "--model",
            "bm25",
            "--k",
            "1",
            "--k",
            "5",
            "--quiet",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "top-1" in printed and "top-5" in printed and "ceiling" in printed
    assert "ceiling 60.0" in printed  # next to the accuracy, on the set's line and every row


@pytest.mark.bad_input
@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"question": "x", "answers": "Paris"}, "answers must be a non-empty list"),
        ({"question": "x"}, "field 'answers' is missing"),
        ({"question": "", "answers": ["a"]}, "field 'question' missing or not a non-empty string"),
        ({"question": "x", "answers": ["(a"], "match": "regex"}, "is not a valid regular expression"),
        ({"id": "0", "question": "x", "answers": ["a"]}, "question id '0' appears twice"),
    ],
)
def test_bad_question_lines_are_one_line_errors_naming_file_and_line(
    qa_setup, tmp_path, capsys, row, message
):
    path = tmp_path / "bad.jsonl"
    path.write_text(
        json.dumps({"id": "0", "question": "capital of france", "answers": ["Paris"]})
        + "\n"
        + json.dumps(row)
        + "\n"
    )
    argv = [
        "evaluate-qa",
        "--questions",
        str(path),
        "--corpus",
        str(qa_setup / "psgs.tsv"),
        "--model",
        "bm25",
        "--quiet",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{path}:2:" in err and message in err
    assert main([*argv, "--skip-bad"]) == 0
    assert "1 bad questions skipped" in capsys.readouterr().out
