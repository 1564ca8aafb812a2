"""Fine-tuning on the one trainer: dev held out, early stopping keeps the best model, two-round recipe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny import TINY_MODEL

from contriever.data.dev import sample_dev_corpus
from contriever.errors import ConfigError
from contriever.model.encoder import Encoder
from contriever.training.batches import FinetuneBatches
from contriever.training.config import load_config
from contriever.training.evaluator import retrieval_evaluator
from contriever.training.finetune import run_finetune
from contriever.training.trainer import train

TOPICS = [
    "protein",
    "galaxy",
    "volcano",
    "enzyme",
    "glacier",
    "neutron",
    "orchid",
    "tundra",
    "quasar",
    "virus",
]


@pytest.fixture(scope="module")
def beir_folder(tmp_path_factory, write_beir) -> Path:
    """60 documents, one query per document; train qrels for 50 queries, test qrels for 10."""
    corpus, queries, qrels = {}, {}, {"train": [], "test": []}
    for i in range(60):
        topic, other = TOPICS[i % 10], TOPICS[(i // 10) % 10]
        corpus[f"d{i}"] = (f"{topic} {other}", f"notes on {topic} and {other} number {i}")
        queries[f"q{i}"] = f"{topic} {other}"
        qrels["train" if i < 50 else "test"].append((f"q{i}", f"d{i}", 1))
    return write_beir(tmp_path_factory.mktemp("beir"), corpus, queries, qrels)


def finetune_config(folder: Path, *extra: str):
    return load_config(
        None,
        [
            "task=finetune",
            *TINY_MODEL,
            f'finetune.train="{folder}"',
            "finetune.dev_fraction=0.2",
            "finetune.query_max_length=16",
            "finetune.doc_max_length=32",
            "loss.kind=inbatch",
            "optim.warmup_steps=0",
            "train.batch_size=8",
            "train.log_every=1",
            "train.eval_every=2",
            "train.precision=fp32",
            "eval.max_length=32",
            *extra,
        ],
    )


def records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_dev_is_held_out_from_training_queries(beir_folder, tiny_encoder):
    config = finetune_config(beir_folder)
    batches = FinetuneBatches(config, tiny_encoder, local_batch=8, rank=0, world_size=1)
    train_ids = {example.qid for example in batches.train_examples}
    assert len(batches.dev_queries) == 10 and len(train_ids) == 40
    assert not train_ids & set(batches.dev_queries)
    assert not {f"q{i}" for i in range(50, 60)} & (
        train_ids | set(batches.dev_queries)
    )  # test queries unused
    batch = batches.next_batch()
    assert batch["q_ids"].shape[0] == 8 and batch["k_ids"].shape[0] == 16  # positives, then one negative each


def test_dev_corpus_sample_keeps_every_judged_document(beir_folder, tiny_encoder):
    config = finetune_config(beir_folder, "finetune.dev_corpus_size=20")
    batches = FinetuneBatches(config, tiny_encoder, local_batch=8, rank=0, world_size=1)
    judged = {doc for docs in batches.dev_qrels.values() for doc in docs}
    assert len(batches.dev_corpus) == 20 and judged <= set(batches.dev_corpus)
    assert len(batches.corpus) == 60  # negatives still come from the whole corpus
    again = sample_dev_corpus(batches.corpus, batches.dev_qrels, 20, seed=config.train.seed)
    assert list(again) == list(batches.dev_corpus)  # seeded: the same sample every time
    assert sample_dev_corpus(batches.corpus, batches.dev_qrels, 0) is batches.corpus
    assert len(sample_dev_corpus(batches.corpus, batches.dev_qrels, 5)) == len(judged)  # never drops one


def test_early_stopping_stops_when_dev_stalls_and_keeps_the_first_best(beir_folder, tmp_path):
    # A learning rate of zero: the dev score never improves after the first evaluation.
    config = finetune_config(
        beir_folder,
        "optim.lr=0.0",
        "optim.scheduler=constant",
        "train.steps=40",
        "train.early_stopping_patience=2",
    )
    train(config, tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    evals = [r for r in records(tmp_path / "run") if "eval/ndcg@10" in r]
    assert summary["stop"].startswith("early stopping")
    assert [r["step"] for r in evals] == [2, 4, 6]  # the best, then `patience` evaluations without gain
    assert summary["steps"] == 6


def test_best_model_is_the_best_dev_checkpoint(beir_folder, tmp_path):
    config = finetune_config(beir_folder, "optim.lr=3e-3", "train.steps=12", "model.dropout=0.0")
    final = train(config, tmp_path / "run")
    assert final == tmp_path / "run" / "best"
    evals = [r for r in records(tmp_path / "run") if "eval/ndcg@10" in r]
    best_score = max(r["eval/ndcg@10"] for r in evals)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["best"] == pytest.approx(best_score)

    batches = FinetuneBatches(config, Encoder.load(final), local_batch=8, rank=0, world_size=1)
    evaluate = retrieval_evaluator(batches.dev_corpus, batches.dev_queries, batches.dev_qrels, max_length=32)
    reloaded = Encoder.load(final)
    reloaded.eval()
    assert evaluate(reloaded)["ndcg@10"] == pytest.approx(best_score, abs=1e-6)


def test_two_round_recipe_mines_with_the_round_one_model(beir_folder, tmp_path):
    config = finetune_config(
        beir_folder, "optim.lr=1e-3", "train.steps=4", "train.eval_every=0", "finetune.n_negatives=0"
    )
    final = run_finetune(config, tmp_path / "ft", mine_k=10)
    mined = tmp_path / "ft" / "round1" / "hard_negatives.jsonl"
    assert final == tmp_path / "ft" / "round2" / "model"
    rows = [json.loads(line) for line in mined.read_text().splitlines()]
    assert len(rows) == 50 and all(row["hard_negatives"] for row in rows)
    for row in rows:
        positive_ids = {
            p["_id"] if isinstance(p, dict) else p for p in row.get("positives", [row.get("positive")])
        }
        assert not positive_ids & {n["_id"] for n in row["hard_negatives"]}
    round2 = json.loads((tmp_path / "ft" / "round2" / "config.json").read_text())
    assert round2["finetune"]["hard_negative_prob"] == pytest.approx(0.1)
    assert round2["finetune"]["n_negatives"] == 1  # round 1 had in-batch negatives alone
    assert round2["finetune"]["train"] == str(mined)


def test_finetuning_trajectory_is_pinned(beir_folder, tmp_path):
    """ASAM, one random negative, dev evaluation: losses and dev nDCG@10 recorded before the trainer's
    objectives got one interface (commit a0bc2a3)."""
    config = finetune_config(
        beir_folder, "optim.lr=1e-3", "train.steps=4", "optim.name=asam", "optim.rho=0.5"
    )
    train(config, tmp_path / "run")
    rows = records(tmp_path / "run")
    assert [r["loss"] for r in rows if "loss" in r] == pytest.approx(
        [6.989031, 10.828796, 11.291684, 10.059494], rel=1e-4
    )
    assert [r["eval/ndcg@10"] for r in rows if "eval/ndcg@10" in r] == pytest.approx(
        [0.5640995184095701, 0.5184818934934552], abs=1e-4
    )


@pytest.mark.parametrize(("chosen", "round2"), [(None, 0.1), (0.0, 0.0), (0.3, 0.3)])
def test_round_two_honours_the_hard_negative_share_set(beir_folder, tmp_path, monkeypatch, chosen, round2):
    """Unset: the paper's 0.1 in round 2; a value that is set (0 included) is used as it is."""
    from contriever.retrieval import mining
    from contriever.training import finetune

    configs = []
    monkeypatch.setattr(finetune, "train", lambda config, out: configs.append(config) or Path(out) / "model")
    monkeypatch.setattr(mining, "mine_beir", lambda *args, **kwargs: None)
    extra = [] if chosen is None else [f"finetune.hard_negative_prob={chosen}"]
    run_finetune(finetune_config(beir_folder, *extra), tmp_path / "ft")
    assert [c.finetune.hard_negative_prob for c in configs] == [0.0, round2]


def test_two_rounds_on_a_file_of_examples_fail_before_round_one(tmp_path):
    examples = tmp_path / "mined.jsonl"
    examples.write_text(json.dumps({"query": "q", "positive": "a document"}) + "\n")
    config = load_config(None, ["task=finetune", f'finetune.train="{examples}"'])
    with pytest.raises(ConfigError, match="two rounds mine hard negatives from a BEIR folder"):
        run_finetune(config, tmp_path / "ft")
    assert not (tmp_path / "ft").exists()
