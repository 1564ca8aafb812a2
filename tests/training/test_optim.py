"""The optimizer's parameter groups, the learning-rate schedules and gradient clipping."""

from __future__ import annotations

import math

import pytest
import torch

from contriever.errors import ConfigError
from contriever.training.optim import build_optimizer, build_scheduler, lr_factor


def test_no_weight_decay_on_biases_and_norms(tiny_encoder):
    optimizer = build_optimizer(tiny_encoder, lr=1e-4, weight_decay=0.01)
    assert isinstance(optimizer, torch.optim.AdamW)
    names = {id(p): n for n, p in tiny_encoder.named_parameters()}
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.01 and plain["weight_decay"] == 0.0
    decayed_names = {names[id(p)] for p in decayed["params"]}
    plain_names = {names[id(p)] for p in plain["params"]}
    assert all(not n.endswith("bias") and "LayerNorm" not in n for n in decayed_names)
    assert "model.embeddings.word_embeddings.weight" in decayed_names
    assert "model.encoder.layer.0.attention.self.query.weight" in decayed_names
    assert "model.embeddings.LayerNorm.weight" in plain_names
    assert "model.encoder.layer.1.output.LayerNorm.bias" in plain_names
    assert "model.encoder.layer.0.attention.self.query.bias" in plain_names
    assert len(decayed_names) + len(plain_names) == len(names)  # every parameter, once
    group = optimizer.param_groups[0]
    assert (group["lr"], group["betas"], group["eps"]) == (1e-4, (0.9, 0.98), 1e-6)


def test_decay_on_every_parameter_as_the_official_code(tiny_encoder):
    optimizer = build_optimizer(tiny_encoder, weight_decay=0.01, no_decay=(), decay_vectors=True)
    (group,) = optimizer.param_groups
    assert group["weight_decay"] == 0.01
    assert len(group["params"]) == len(list(tiny_encoder.parameters()))  # biases and LayerNorm included


def test_paper_defaults():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.LayerNorm(3))
    group = build_optimizer(model).param_groups[0]
    assert (group["lr"], group["betas"], group["eps"], group["weight_decay"]) == (
        5e-5,
        (0.9, 0.98),
        1e-6,
        0.01,
    )


def test_frozen_parameters_are_left_out():
    model = torch.nn.Linear(3, 3)
    model.bias.requires_grad_(False)
    optimizer = build_optimizer(model)
    assert [p for g in optimizer.param_groups for p in g["params"]] == [model.weight]


def lrs(kind: str, warmup: int, total: int, final: float = 0.0, steps: int | None = None) -> list[float]:
    """The learning rate in force for each update 0, 1, ..., as the trainer sees it."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    scheduler = build_scheduler(optimizer, warmup, total, kind=kind, final_lr_ratio=final)
    out = []
    for _ in range(steps or total + 5):
        out.append(optimizer.param_groups[0]["lr"] / 2.0)
        optimizer.step()
        scheduler.step()
    return out


def test_linear_schedule_key_steps():
    factors = lrs("linear", warmup=10, total=110)
    assert factors[0] == 0.0  # warmup starts from zero
    assert factors[5] == pytest.approx(0.5)
    assert factors[10] == pytest.approx(1.0)  # peak at the end of warmup
    assert factors[60] == pytest.approx(0.5)  # halfway through the decay
    assert factors[110] == pytest.approx(0.0)
    assert factors[114] == pytest.approx(0.0)  # stays at the floor
    assert lrs("linear", 10, 110, final=0.1)[110] == pytest.approx(0.1)


def test_cosine_schedule_key_steps():
    factors = lrs("cosine", warmup=10, total=110)
    assert factors[5] == pytest.approx(0.5)
    assert factors[10] == pytest.approx(1.0)
    assert factors[60] == pytest.approx(0.5)  # cosine midpoint
    assert factors[35] == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert factors[110] == pytest.approx(0.0)
    final = lrs("cosine", 10, 110, final=0.1)
    assert final[60] == pytest.approx(0.55)
    assert final[112] == pytest.approx(0.1)


def test_constant_schedule_and_no_warmup():
    factors = lrs("constant", warmup=4, total=20)
    assert factors[:5] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    assert set(factors[4:]) == {1.0}
    assert lrs("linear", warmup=0, total=10)[0] == 1.0
    assert lr_factor(5, warmup_steps=10, total_steps=10) == 0.5  # warmup as long as training


def test_matches_transformers_schedules():
    from transformers import get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

    for ours_kind, theirs in (
        ("linear", get_linear_schedule_with_warmup),
        ("cosine", get_cosine_schedule_with_warmup),
    ):
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        reference = theirs(optimizer, 7, 40)
        for step in range(41):  # past the end transformers' cosine rises again; ours stays at the floor
            assert lr_factor(step, 7, 40, ours_kind) == pytest.approx(
                reference.lr_lambdas[0](step), abs=1e-12
            )


def test_scheduler_resumes():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = build_scheduler(optimizer, 5, 50)
    for _ in range(17):
        optimizer.step()
        scheduler.step()
    state = scheduler.state_dict()
    fresh_optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    fresh = build_scheduler(fresh_optimizer, 5, 50)
    fresh.load_state_dict(state)
    fresh_optimizer.load_state_dict(optimizer.state_dict())
    assert fresh.get_last_lr() == scheduler.get_last_lr() == [pytest.approx(lr_factor(17, 5, 50))]


def test_bad_schedules():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ConfigError, match="cosine"):
        build_scheduler(optimizer, 1, 10, kind="cosinus")
    with pytest.raises(ConfigError):
        build_scheduler(optimizer, 1, 10, final_lr_ratio=2.0)
