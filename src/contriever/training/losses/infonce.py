"""InfoNCE: cross-entropy of the positive key among all keys, scores divided by a temperature.

    loss_i = -log( exp(s(q_i, k_pos(i)) / tau) / sum_j exp(s(q_i, k_j) / tau) ),   s = dot product

Temperature 0.05 (the paper's) = scale 20 in sentence-transformers' `MultipleNegativesRankingLoss`
(which divides nothing and multiplies by `scale`; scale = 1 / temperature). Dot product on
unnormalized vectors is Contriever's choice; with `Encoder(normalize=True)` the scores are cosines,
as in sentence-transformers' default.

The scores and the softmax are computed in fp32 even under bf16/fp16 autocast, in the forward *and*
the backward pass (`fp32_scores`): dividing by 0.05 magnifies rounding errors twentyfold, and the
`[B, N]` score matrix is cheap next to the encoder. (A plain fp32 matmul is not enough: a backward
pass started inside an autocast region runs its matmuls in bf16 again, which costs gradients about
0.5% of relative error.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class _FP32Scores(torch.autograd.Function):
    """`a @ b.T` in fp32, forward and backward, whatever autocast region the passes run in."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a, b = a.float(), b.float()
        ctx.save_for_backward(a, b)
        with torch.autocast(device_type=a.device.type, enabled=False):
            return a @ b.T

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        a, b = ctx.saved_tensors
        with torch.autocast(device_type=grad.device.type, enabled=False):
            grad_a = grad @ b if ctx.needs_input_grad[0] else None
            grad_b = grad.T @ a if ctx.needs_input_grad[1] else None
        return grad_a, grad_b


def fp32_scores(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Dot products `[len(a), len(b)]`, computed and differentiated in fp32 even under autocast."""
    return _FP32Scores.apply(a, b)


def info_nce_from_scores(
    scores: torch.Tensor,
    positive_index: torch.Tensor,
    temperature: float = 0.05,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """InfoNCE from raw similarity scores `[B, N]` (before the temperature) and positive columns `[B]`.

    Returns the mean loss and detached statistics: `accuracy` (share of queries whose positive
    scores highest; ties count as misses), `positive_score` and `negative_score` (mean raw scores).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    scores = scores.float()
    logits = scores / temperature
    loss = F.cross_entropy(logits, positive_index, label_smoothing=label_smoothing)
    with torch.no_grad():
        positive = scores.gather(1, positive_index[:, None])  # [B, 1]
        ranked_first = (scores >= positive).sum(dim=1) == 1  # nothing else scores as high (ties miss)
        n_negative = scores.numel() - scores.shape[0]
        negative_mean = (scores.sum() - positive.sum()) / max(n_negative, 1)
        # one device-to-host copy for the three numbers
        values = torch.stack([ranked_first.float().mean(), positive.mean(), negative_mean]).tolist()
        stats = dict(zip(("accuracy", "positive_score", "negative_score"), values))
    return loss, stats


def info_nce(
    queries: torch.Tensor,
    keys: torch.Tensor,
    positive_index: torch.Tensor | None = None,
    temperature: float = 0.05,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """InfoNCE of queries `[B, D]` against keys `[N, D]`; query i's positive is key `positive_index[i]`.

    `positive_index` defaults to `arange(B)` (the first B keys are the positives, in order; the other
    keys are negatives for every query). Every key that is not a query's positive is one of its
    negatives. Returns `(mean loss, stats)`, see `info_nce_from_scores`.
    """
    if queries.ndim != 2 or keys.ndim != 2 or queries.shape[1] != keys.shape[1]:
        raise ValueError(
            f"queries {tuple(queries.shape)} and keys {tuple(keys.shape)} must be [B, D] and [N, D]"
        )
    if positive_index is None:
        if keys.shape[0] < queries.shape[0]:
            raise ValueError(f"{queries.shape[0]} queries need at least as many keys, got {keys.shape[0]}")
        positive_index = torch.arange(queries.shape[0], device=queries.device)
    scores = fp32_scores(queries, keys)
    return info_nce_from_scores(scores, positive_index, temperature, label_smoothing)
