"""The optimizer (AdamW, no weight decay on biases and norms unless asked) and the learning-rate schedule.

Paper settings: AdamW, lr 5e-5, betas (0.9, 0.98), eps 1e-6, weight decay 0.01, 20k warmup steps
then linear decay to 0. The schedule is a factor on the base learning rate:

    warmup (step < W):   step / W                       (0 at step 0, as transformers' schedules)
    linear:              1 - (1 - r) * p                 p = (step - W) / (T - W), clipped to [0, 1]
    cosine:              r + (1 - r) * (1 + cos(pi p)) / 2
    constant:            1

with r = `final_lr_ratio`. `kind="linear"` with r = 0 is transformers'
`get_linear_schedule_with_warmup`; `kind="cosine"` with r = 0 is `get_cosine_schedule_with_warmup`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from contriever.errors import ConfigError

SCHEDULES = ("linear", "cosine", "constant")
NO_DECAY = ("bias", "LayerNorm.weight", "layernorm", "norm")


def parameter_groups(
    model: torch.nn.Module,
    weight_decay: float,
    no_decay: Iterable[str] = NO_DECAY,
    decay_vectors: bool = False,
) -> list[dict]:
    """Two groups: decayed weight matrices, and undecayed biases, norms and other 1-d parameters.

    A parameter escapes decay when its name contains one of `no_decay` (case-insensitive) or, unless
    `decay_vectors`, it has fewer than 2 dimensions (biases, LayerNorm scales). With `no_decay=()`
    and `decay_vectors=True` every parameter is decayed, as the paper's code does. Frozen
    parameters are left out.
    """
    patterns = [p.lower() for p in no_decay]
    decay, plain = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if (param.ndim < 2 and not decay_vectors) or any(p in name.lower() for p in patterns):
            plain.append(param)
        else:
            decay.append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(
    model: torch.nn.Module,
    lr: float = 5e-5,
    betas: tuple[float, float] = (0.9, 0.98),
    eps: float = 1e-6,
    weight_decay: float = 0.01,
    no_decay: Iterable[str] = NO_DECAY,
    decay_vectors: bool = False,
) -> torch.optim.AdamW:
    """AdamW over `model`'s trainable parameters, see `parameter_groups` (SAM/ASAM wrap it: `asam.py`).

    On CUDA the fused AdamW kernel is used (one kernel for all parameters); elsewhere torch's
    multi-tensor (foreach) implementation.
    """
    groups = parameter_groups(model, weight_decay, no_decay, decay_vectors)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    params = [p for g in groups for p in g["params"]]
    all_cuda = all(p.device.type == "cuda" and p.is_floating_point() for p in params)
    fast = {"fused": True} if all_cuda else {"foreach": True}
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, **fast)


def lr_factor(
    step: int, warmup_steps: int, total_steps: int, kind: str = "linear", final_lr_ratio: float = 0.0
) -> float:
    """The schedule's multiplier of the base learning rate after `step` updates (see module docstring)."""
    if step < warmup_steps:
        return step / warmup_steps
    if kind == "constant":
        return 1.0
    progress = min(1.0, max(0.0, (step - warmup_steps) / max(1, total_steps - warmup_steps)))
    if kind == "linear":
        return 1.0 - (1.0 - final_lr_ratio) * progress
    if kind == "cosine":
        return final_lr_ratio + (1.0 - final_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ConfigError(f"unknown schedule {kind!r}; choose one of {SCHEDULES}")


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    warmup_steps: int,
    total_steps: int,
    kind: str = "linear",
    final_lr_ratio: float = 0.0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup from 0 over `warmup_steps`, then `kind` decay to `final_lr_ratio` at `total_steps`.

    Call `scheduler.step()` once after each `optimizer.step()`.
    """
    if kind not in SCHEDULES:
        raise ConfigError(f"unknown schedule {kind!r}; choose one of {SCHEDULES}")
    if warmup_steps < 0 or total_steps < 0:
        raise ConfigError(f"warmup_steps ({warmup_steps}) and total_steps ({total_steps}) must be >= 0")
    if not 0.0 <= final_lr_ratio <= 1.0:
        raise ConfigError(f"final_lr_ratio must be in [0, 1], got {final_lr_ratio}")

    def factor(step: int) -> float:
        return lr_factor(step, warmup_steps, total_steps, kind, final_lr_ratio)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
