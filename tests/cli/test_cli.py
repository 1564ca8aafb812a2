"""The `contriever` command on a tiny BEIR folder and a tiny random model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from contriever.cli.main import main
from contriever.evaluation.metrics import METRICS, evaluate_run, read_trec_run

DOCS = {
    "d1": ("Scurvy", "Scurvy is a disease caused by a lack of vitamin C."),
    "d2": ("Rickets", "Rickets comes from a lack of vitamin D in children."),
    "d3": ("Anemia", "Iron deficiency anemia is the most common anemia."),
    "d4": ("", "Dense retrievers encode queries and documents into vectors."),
}
QUERIES = {
    "q1": "what causes scurvy",
    "q2": "vitamin D deficiency in children",
    "q3": "dense vector retrieval",
}
QRELS = [("q1", "d1", 1), ("q2", "d2", 2), ("q3", "d4", 1)]


@pytest.fixture
def beir_folder(tmp_path, write_beir) -> Path:
    return write_beir(tmp_path / "tiny-beir", DOCS, QUERIES, {"test": QRELS}, gzip_corpus=True)


def test_evaluate_writes_metrics_and_run_for_each_system(beir_folder, tiny_model, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(
        [
            "evaluate",
            "--data",
            str(beir_folder),
            "--model",
            str(tiny_model),
            "--model",
            "bm25",
            "--output",
            str(out),
            "--k",
            "10",
        ]
    )
    assert code == 0
    table = capsys.readouterr().out.splitlines()
    assert table[1].split()[:5] == ["system", "nDCG@10", "R@100", "MRR@10", "R@1000"]
    folders = sorted(p for p in out.iterdir() if p.is_dir())
    assert len(folders) == 2
    qrels = {q: {d: s} for q, d, s in QRELS}
    shown = []
    for folder in folders:
        metrics = json.loads((folder / "metrics.json").read_text())
        run = read_trec_run(folder / "run.trec")
        assert set(run) == set(QUERIES) and all(docs for docs in run.values())
        # the saved metrics are those of the saved run, and the table shows them x100
        assert {k: metrics[k] for k in METRICS} == pytest.approx(evaluate_run(qrels, run))
        shown.append(100 * metrics["ndcg@10"])
    rows = [line.split() for line in table[3:5]]  # header, rule, then one row per system
    assert sorted(float(row[1]) for row in rows) == pytest.approx(sorted(shown), abs=0.051)
    bm25 = json.loads((out / "bm25" / "metrics.json").read_text())
    assert bm25["ndcg@10"] > 0.9  # every query shares its key words with its document


def test_single_model_writes_into_output_directly(beir_folder, tiny_model, tmp_path):
    assert (
        main(["evaluate", "--data", str(beir_folder), "--model", "bm25", "--output", str(tmp_path / "o")])
        == 0
    )
    assert (tmp_path / "o" / "metrics.json").exists() and (tmp_path / "o" / "run.trec").exists()


@pytest.mark.bad_input
def test_missing_dataset_gives_a_clear_error(tmp_path, capsys):
    code = main(["evaluate", "--data", str(tmp_path / "nowhere"), "--model", "bm25"])
    assert code == 2
    assert "nowhere" in capsys.readouterr().err


def test_index_then_search(beir_folder, tiny_model, tmp_path, capsys):
    index = tmp_path / "index"
    assert (
        main(["index", "--data", str(beir_folder), "--model", str(tiny_model), "--output", str(index)]) == 0
    )
    capsys.readouterr()
    assert main(["search", "--index", str(index), "--k", "2", "--json", "scurvy", "vitamin D"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    results = [json.loads(line) for line in lines]
    assert [r["query"] for r in results] == ["scurvy", "vitamin D"]
    assert all(len(r["results"]) == 2 and r["results"][0]["id"] in DOCS for r in results)
    top = results[0]["results"][0]
    assert (top["title"], top["text"]) == DOCS[top["id"]]  # read from the index's passage store


def test_ann_build_then_search_with_ann(beir_folder, tiny_model, tmp_path, capsys):
    index = tmp_path / "index"
    main(["index", "--data", str(beir_folder), "--model", str(tiny_model), "--output", str(index)])
    assert main(["search", "--index", str(index), "--ann", "IVF2_Flat", "q"]) == 2
    assert "no ANN index named 'IVF2_Flat'" in capsys.readouterr().err
    assert main(["ann-build", "--index", str(index), "--factory", "IVF2,Flat"]) == 0
    assert "--ann IVF2_Flat" in capsys.readouterr().out
    queries = ["scurvy", "vitamin D"]
    assert main(["search", "--index", str(index), "--k", "3", "--json", *queries]) == 0
    exact = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    command = ["search", "--index", str(index), "--k", "3", "--json", "--ann", "IVF2_Flat", "--nprobe", "2"]
    assert main([*command, *queries]) == 0
    found = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    for ann_row, exact_row in zip(found, exact, strict=True):  # every list probed: exact results
        assert [(r["id"], r["title"]) for r in ann_row["results"]] == [
            (r["id"], r["title"]) for r in exact_row["results"]
        ]
        assert [r["score"] for r in ann_row["results"]] == pytest.approx(
            [r["score"] for r in exact_row["results"]]
        )
    assert main([*command, "--ef-search", "8", "q"]) == 2
    assert "efSearch applies to HNSW" in capsys.readouterr().err
    assert main(["search", "--index", str(index), "--nprobe", "2", "q"]) == 2
    assert "add --ann NAME" in capsys.readouterr().err
    assert main(["search", "--index", str(index), "--rerank", "5", "q"]) == 2
    assert "add --ann NAME" in capsys.readouterr().err
    assert main([*command, "--rerank", "10", *queries]) == 0  # every row re-scored: the exact results
    reranked = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    for ann_row, exact_row in zip(reranked, exact, strict=True):
        assert [r["id"] for r in ann_row["results"]] == [r["id"] for r in exact_row["results"]]


def test_index_passages_and_search_shows_title_and_snippet(beir_folder, tiny_model, tmp_path, capsys):
    index = tmp_path / "index"
    args = ["index", "--data", str(beir_folder), "--model", str(tiny_model), "--output", str(index)]
    assert main([*args, "--words", "4", "--quiet"]) == 0
    assert "indexed 10 passages" in capsys.readouterr().out
    assert main([*args, "--words", "5", "--quiet"]) == 2  # other settings, same folder
    assert "refusing to mix them" in capsys.readouterr().err
    assert main(["search", "--index", str(index), "--k", "11", "vitamin"]) == 0
    out = capsys.readouterr().out
    assert "d1#0  Scurvy" in out and "     Scurvy is a disease" in out and "d1#2" in out


@pytest.mark.bad_input
def test_unknown_config_key_is_reported(tmp_path, capsys):
    code = main(["pretrain", "--set", "loss.queue_szie=10", "--output", str(tmp_path / "run")])
    assert code == 2
    assert "did you mean 'loss.queue_size'" in capsys.readouterr().err


def test_evaluate_qa_reads_passages_from_the_corpus_the_index_records(
    beir_folder, tiny_model, tmp_path, capsys
):
    index = tmp_path / "index"
    assert (
        main(["index", "--data", str(beir_folder), "--model", str(tiny_model), "--output", str(index)]) == 0
    )
    questions = tmp_path / "qa.jsonl"
    questions.write_text(
        json.dumps({"question": "what causes scurvy", "answers": ["vitamin C"]})
        + "\n"
        + json.dumps({"question": "what is rickets", "answers": ["vitamin K"]})  # in no passage
        + "\n"
    )
    capsys.readouterr()
    assert main(["evaluate-qa", "--questions", str(questions), "--index", str(index), "--k", "4"]) == 0
    out = capsys.readouterr().out
    assert "top-4" in out and "50.0" in out  # depth 4 = the whole corpus: one question of two


def test_mistyped_model_path_fails_before_loading_anything(tmp_path):
    import subprocess
    import sys

    (tmp_path / "runs" / "cpu-small").mkdir(parents=True)
    script = (
        "import sys; from contriever.cli.main import main; "
        "code = main(['evaluate', '--data', 'nowhere', '--model', 'runs/cpu-smal']); "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules; sys.exit(code)"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert "runs/cpu-smal: no such model folder; folders in runs: cpu-small" in done.stderr


def test_finetune_without_a_config_uses_the_finetuning_defaults(tmp_path, capsys):
    """No pretraining default gets in the way: the only thing missing is the training data."""
    assert main(["finetune", "--rounds", "1", "--output", str(tmp_path / "ft")]) == 2
    assert "finetune.train is empty" in capsys.readouterr().err
    saved = json.loads((tmp_path / "ft" / "config.json").read_text())
    assert (saved["task"], saved["loss"]["kind"], saved["optim"]["lr"]) == ("finetune", "inbatch", 1e-5)


def test_index_with_a_factory_is_searched_through_its_ann(beir_folder, tiny_model, tmp_path, capsys):
    """`index --index-factory F` builds the ANN of F over the folder (ann/<name>), searched by default."""
    from contriever.retrieval.ann import AnnIndex
    from contriever.retrieval.index import load_for_search

    index = tmp_path / "index"
    argv = ["index", "--data", str(beir_folder), "--model", str(tiny_model), "--output", str(index)]
    assert main([*argv, "--index-factory", "Bogus"]) != 0  # refused before anything is encoded
    assert not (index / "index.json").exists()
    assert main([*argv, "--index-factory", "IVF2,Flat"]) == 0
    assert (index / "ann" / "IVF2_Flat" / "index.faiss").is_file() and not (index / "index.faiss").exists()
    loaded, _ = load_for_search(index)
    assert isinstance(loaded, AnnIndex) and loaded.factory == "IVF2,Flat"
    capsys.readouterr()
    assert main(["search", "--index", str(index), "--k", "2", "--json", "--nprobe", "2", "scurvy"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert len(found["results"]) == 2 and found["results"][0]["id"] in DOCS


def test_text_options_are_recorded_in_the_index_and_reach_the_queries(beir_folder, tiny_model, tmp_path):
    from contriever.retrieval.index import load_for_search
    from contriever.retrieval.retrieve import encoder_for_index

    index = tmp_path / "index"
    argv = ["index", "--data", str(beir_folder), "--model", str(tiny_model), "--output", str(index)]
    assert main([*argv, "--lowercase", "--normalize-text", "--no-cache"]) == 0
    loaded, _ = load_for_search(index)
    assert (loaded.metadata["lowercase"], loaded.metadata["normalize_text"]) == (True, True)
    encoder = encoder_for_index(loaded)  # what search and evaluate-qa encode queries with
    assert (encoder.lowercase, encoder.normalize_text) == (True, True)
    out = tmp_path / "eval"
    evaluate = ["evaluate", "--data", str(beir_folder), "--model", str(tiny_model), "--output", str(out)]
    assert main([*evaluate, "--normalize-text"]) == 0
    meta = json.loads((out / "metrics.json").read_text())["meta"]
    assert (meta["lowercase"], meta["normalize_text"]) == (False, True)


def test_every_subcommand_has_a_description_an_example_and_help_on_every_argument():
    from contriever.cli.main import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert {"evaluate", "index", "search", "prepare", "pretrain", "finetune", "mine"} <= set(commands)
    for name, command in commands.items():
        assert command.description and "\n" not in command.description, name
        assert command.epilog.startswith(f"example:\n  contriever {name} "), name
        for action in command._actions:
            assert action.help, f"{name} {action.option_strings or action.dest}: no help"
        text = command.format_help()
        assert "(default:" in text, name


def test_index_takes_data_or_corpus_not_both(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["index", "--data", "a", "--corpus", "b", "--output", str(tmp_path)])
    assert "not allowed with argument" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["index", "--output", str(tmp_path)])
    assert "one of the arguments --data --corpus is required" in capsys.readouterr().err


def test_evaluate_an_index_folder_and_its_ann_index(beir_folder, tiny_model, tmp_path, capsys):
    index = tmp_path / "index"
    assert (
        main(["index", "--data", str(beir_folder), "--model", str(tiny_model), "--output", str(index)]) == 0
    )
    assert main(["ann-build", "--index", str(index), "--factory", "IVF2,Flat"]) == 0
    capsys.readouterr()
    outputs = {}
    for name, extra in (("exact", []), ("ann", ["--ann", "IVF2_Flat", "--nprobe", "2"])):
        out = tmp_path / name
        assert (
            main(
                ["evaluate", "--data", str(beir_folder), "--index", str(index), "--output", str(out), *extra]
            )
            == 0
        )
        outputs[name] = json.loads((out / "metrics.json").read_text())
        assert f"on {index}" in capsys.readouterr().out
    assert outputs["ann"]["meta"]["ann"] == "IVF2_Flat"
    assert outputs["exact"]["meta"]["model_path"] == str(tiny_model.resolve())  # the folder's model
    assert {m: outputs["ann"][m] for m in METRICS} == pytest.approx({m: outputs["exact"][m] for m in METRICS})
    assert main(["evaluate", "--data", str(beir_folder), "--index", str(index), "--words", "100"]) == 2
    assert "--words: the index folder" in capsys.readouterr().err
    assert (
        main(["evaluate", "--data", str(beir_folder), "--model", str(tiny_model), "--ann", "IVF2_Flat"]) == 2
    )
    assert "pass index_path (--index)" in capsys.readouterr().err


def test_cache_lists_and_clears_encodings_and_query_vectors(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CONTRIEVER_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache" / "encodings" / "abc").mkdir(parents=True)
    (tmp_path / "cache" / "queries").mkdir()
    np.save(tmp_path / "cache" / "queries" / "q.npy", np.zeros((3, 4), dtype=np.float32))
    assert main(["cache"]) == 0
    out = capsys.readouterr().out
    assert "in 1 encodings" in out and "in 1 query sets" in out
    assert main(["cache", "--clear"]) == 0 and "cleared" in capsys.readouterr().out
    assert not (tmp_path / "cache" / "queries").exists() and not (tmp_path / "cache" / "encodings").exists()
