"""The trainer end to end on a tiny random BERT: it learns, saves a loadable model, and resumes exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny import TINY_MODEL

from contriever.model.encoder import Encoder
from contriever.training.config import load_config
from contriever.training.trainer import train


def pretrain_config(folder: Path, *extra: str, model: list[str] = TINY_MODEL):
    return load_config(
        None,
        [
            "task=pretrain",
            *model,
            f'data.folders=["{folder}"]',
            "data.chunk_length=32",
            *([] if "loss.kind=inbatch" in extra else ["loss.queue_size=64", "loss.momentum=0.99"]),
            "optim.lr=1e-3",
            "optim.warmup_steps=2",
            "train.batch_size=8",
            "train.log_every=1",
            "train.precision=fp32",
            *extra,
        ],
    )


def losses(folder: Path) -> list[float]:
    return [
        r["loss"] for r in map(json.loads, (folder / "metrics.jsonl").read_text().splitlines()) if "loss" in r
    ]


@pytest.mark.parametrize("kind", ["moco", "inbatch"])
def test_pretraining_writes_a_loadable_model_and_metrics(token_folder, tmp_path, kind):
    config = pretrain_config(token_folder, f"loss.kind={kind}", "train.steps=6", "train.save_every=3")
    final = train(config, tmp_path / "run")
    encoder = Encoder.load(final)
    assert encoder.encode(["a query"], show_progress=False).shape == (1, 32)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    for key in ("loss", "accuracy", "q_std", "k_std", "lr", "pairs_per_s"):
        assert key in records[-1]
    assert (tmp_path / "run" / "checkpoint.pt").exists()


def test_official_code_options_reach_the_objective_and_optimizer(token_folder, tmp_path):
    """loss.queue_init, loss.key_encoder_dropout and optim.decay_biases_and_norms as the paper presets set them."""
    config = pretrain_config(
        token_folder,
        "train.steps=1",
        "loss.queue_init=random",
        "loss.key_encoder_dropout=true",
        "optim.decay_biases_and_norms=true",
    )
    train(config, tmp_path / "run")
    checkpoint = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    extra = next(v for k, v in checkpoint["objective"].items() if k.endswith("_extra_state"))
    assert extra["queue_filled"] == 64  # random unit vectors fill the queue from the start
    groups = checkpoint["optimizer"]["param_groups"]
    assert [g["weight_decay"] for g in groups] == [0.01]  # one group: biases and LayerNorm decayed too


def test_attention_dropout_is_set_apart_from_hidden_dropout(tmp_path):
    from contriever.training.trainer import build_encoder

    config = load_config(None, [*TINY_MODEL, "model.dropout=0.2", "model.attention_dropout=0.0"])
    encoder = build_encoder(config)
    rates = {
        name: module.p for name, module in encoder.named_modules() if isinstance(module, torch.nn.Dropout)
    }
    attention = {name: p for name, p in rates.items() if ".attention.self." in f".{name}."}
    assert len(attention) == 2 and set(attention.values()) == {0.0}
    assert set(rates.values()) - {0.0} == {0.2} and len(rates) > len(attention)
    encoder.save(tmp_path / "model")  # the saved config carries both, so a reload trains the same
    saved = json.loads((tmp_path / "model" / "config.json").read_text())
    assert saved["attention_probs_dropout_prob"] == 0.0 and saved["hidden_dropout_prob"] == 0.2


def test_frozen_embeddings_stay_as_loaded_while_the_rest_trains(token_folder, tiny_model, tmp_path):
    init = ["model.init=pretrained", f"model.path={tiny_model}", "model.freeze_embeddings=true"]
    train(pretrain_config(token_folder, "train.steps=2", model=init), tmp_path / "run")
    start = Encoder.load(tiny_model).model.state_dict()
    trained = Encoder.load(tmp_path / "run" / "model").model.state_dict()
    changed = {name for name in start if not torch.equal(trained[name], start[name])}
    assert "embeddings.word_embeddings.weight" not in changed
    assert "encoder.layer.0.attention.self.query.weight" in changed
    groups = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["optimizer"]["param_groups"]
    trainable = sum(len(group["params"]) for group in groups)
    assert trainable == sum(p.requires_grad for p in Encoder.load(tiny_model).model.parameters()) - 1


def test_killed_run_resumes_to_the_same_losses(token_folder, tmp_path):
    """Stop after 4 of 8 steps (checkpoint every 2), resume, and compare with an uninterrupted run."""
    straight = pretrain_config(token_folder, "train.steps=8", "train.save_every=2")
    train(straight, tmp_path / "straight")

    interrupted = pretrain_config(
        token_folder, "train.steps=8", "train.save_every=2", "train.max_minutes=1e-9"
    )
    train(interrupted, tmp_path / "resumed")  # the time limit stops it after one step, with a checkpoint
    assert len(losses(tmp_path / "resumed")) == 1
    resumed = pretrain_config(token_folder, "train.steps=8", "train.save_every=2")
    train(resumed, tmp_path / "resumed")
    assert losses(tmp_path / "resumed") == pytest.approx(losses(tmp_path / "straight"), rel=1e-6, abs=1e-7)


def test_gradcache_trains_like_the_plain_step(token_folder, tmp_path):
    # Dropout off: chunked and whole-batch forwards draw their dropout masks in different shapes.
    plain = pretrain_config(token_folder, "loss.kind=inbatch", "train.steps=3", "model.dropout=0.0")
    cached = pretrain_config(
        token_folder, "loss.kind=inbatch", "train.steps=3", "model.dropout=0.0", "loss.gradcache_chunk=3"
    )
    train(plain, tmp_path / "plain")
    train(cached, tmp_path / "cached")
    assert losses(tmp_path / "cached") == pytest.approx(losses(tmp_path / "plain"), rel=1e-4)


def test_torchrun_two_processes_train_and_resume(token_folder, tmp_path):
    """The same command under torchrun (gloo): 2 processes share the global batch, checkpoint and resume."""
    import os
    import subprocess
    import sys

    args = [
        "task=pretrain",
        *TINY_MODEL,
        f'data.folders=["{token_folder}"]',
        "data.chunk_length=32",
        "loss.kind=inbatch",
        "optim.warmup_steps=2",
        "train.batch_size=8",
        "train.log_every=1",
        "train.save_every=2",
        "train.precision=fp32",
    ]

    def run(steps: int) -> None:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
        command += ["-m", "contriever.cli.main", "pretrain", "--output", str(tmp_path / "run")]
        for item in [*args, f"train.steps={steps}"]:
            command += ["--set", item]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]

    run(2)
    first = losses(tmp_path / "run")
    run(4)  # resumes from the step-2 checkpoint, each process from its own data position and RNG
    resumed = losses(tmp_path / "run")
    assert len(first) == 2 and len(resumed) == 4 and resumed[:2] == first
    state = __import__("torch").load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert state["step"] == 4 and len(state["batches"]) == 2 and len(state["rng"]) == 2
    saved = Encoder.load(tmp_path / "run" / "model").state_dict()  # the model is the checkpoint's
    assert all(torch.equal(saved[name], value) for name, value in state["encoder"].items())


# Losses and accuracies of the first 4 updates, recorded with the trainer as it was before the
# objectives got one interface (commit a0bc2a3): a refactoring of the loop must not move them.
PINNED = [
    pytest.param([], [0.0, 22.087242, 16.771835, 19.391441], [1.0, 0.0, 0.0, 0.0], id="moco"),
    pytest.param(
        ["train.grad_accum=2"], [0.0, 21.779144, 16.741115, 19.220514], [1.0, 0.0, 0.0, 0.0], id="moco_accum"
    ),
    pytest.param(
        ["loss.kind=inbatch"],
        [17.412823, 10.329862, 15.620831, 12.25883],
        [0.25, 0.125, 0.125, 0.125],
        id="inbatch",
    ),
    pytest.param(
        ["loss.kind=inbatch", "loss.gradcache_chunk=3"],
        [19.976784, 23.514811, 19.053778, 11.317738],
        [0.0, 0.125, 0.125, 0.0],
        id="inbatch_gradcache",
    ),
    pytest.param(
        ["loss.kind=inbatch", "optim.name=sam"],
        [17.412823, 11.80456, 18.278889, 15.018957],
        [0.25, 0.0, 0.125, 0.125],
        id="inbatch_sam",
    ),
    pytest.param(
        ["loss.kind=inbatch", "optim.name=asam", "optim.rho=0.5", "train.grad_accum=2"],
        [18.564505, 10.699197, 18.820006, 8.741801],
        [0.375, 0.125, 0.125, 0.25],
        id="inbatch_asam_accum",
    ),
]


@pytest.mark.parametrize(("extra", "expected_losses", "expected_accuracy"), PINNED)
def test_loss_trajectory_is_pinned(token_folder, tmp_path, extra, expected_losses, expected_accuracy):
    train(pretrain_config(token_folder, *extra, "train.steps=4"), tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in records] == pytest.approx(expected_losses, rel=1e-4, abs=1e-5)
    assert [r["accuracy"] for r in records] == expected_accuracy


@pytest.mark.bad_input
def test_a_token_folder_from_another_tokenizer_is_refused_before_training(tmp_path):
    """Ids from a 250k vocabulary fed to a 30k BERT used to die in "index out of range in self"."""
    import numpy as np

    from contriever.errors import DataError

    folder = tmp_path / "xlmr-tokens"
    folder.mkdir()
    tokens = np.arange(200_000, 200_640, dtype=np.uint32)
    tokens.tofile(folder / "tokens.bin")
    np.save(folder / "doc_offsets.npy", np.array([0, 320, 640], dtype=np.int64))
    meta = {
        "dtype": "uint32",
        "n_tokens": 640,
        "n_docs": 2,
        "tokenizer": {"path": "xlm-roberta-base", "vocab_size": 250002, "special_ids": {"cls": 0, "pad": 1}},
    }
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="prepared with another tokenizer .*xlm-roberta-base, 250002 tokens"):
        train(pretrain_config(folder), tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
