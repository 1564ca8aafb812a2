"""The one interface every training objective has, so the trainer never asks which one it runs.

    loss, stats = objective.loss(encoder, batch)   # under autocast; the caller calls loss.backward()
    objective.after_step(encoder)                  # after each optimizer step (MoCo: key encoder, queue)
    objective.state_dict() / load_state_dict()     # everything a resumed run needs

`batch` holds token tensors: `q_ids`, `q_mask` (one row per query) and `k_ids`, `k_mask` (the
queries' positives first, then any extra negatives). `stats` are plain floats for the log: the
loss's own (`accuracy`, mean positive and negative scores, ...) plus `q_std` and `k_std`, the mean
per-dimension standard deviation of the query and key embeddings over the batch (near 0: collapse).
"""

from __future__ import annotations

import torch


class Objective(torch.nn.Module):
    """Base class: subclasses define `loss`; `after_step` does nothing unless they override it."""

    def loss(self, encoder: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def after_step(self, encoder: torch.nn.Module) -> None:
        """Called once after every optimizer step."""


def query_inputs(batch: dict) -> dict[str, torch.Tensor]:
    return {"input_ids": batch["q_ids"], "attention_mask": batch["q_mask"]}


def key_inputs(batch: dict) -> dict[str, torch.Tensor]:
    return {"input_ids": batch["k_ids"], "attention_mask": batch["k_mask"]}


def embedding_std(vectors: torch.Tensor) -> float:
    """Mean per-dimension standard deviation over the batch: near 0 means the embeddings collapsed."""
    return float(vectors.detach().float().std(dim=0).mean()) if len(vectors) > 1 else 0.0


def with_spread(stats: dict, q: torch.Tensor, k: torch.Tensor) -> dict:
    """`stats` plus the spread of the query and key embeddings (`q_std`, `k_std`)."""
    return {**stats, "q_std": embedding_std(q), "k_std": embedding_std(k)}
