"""In-batch negatives (SimCLR-style): every other key of the global batch is a negative.

This is sentence-transformers' `MultipleNegativesRankingLoss` with `scale = 1 / temperature`
(temperature 0.05 = scale 20) and dot-product similarity, plus optional extra negatives per query
(random or mined hard negatives, as in the paper's fine-tuning) that are negatives for every query.
Gradients flow through queries and keys alike: one encoder, two views.

Under several processes (torchrun) the keys of all processes are gathered with their gradient
(`all_gather_with_grad`), so the negatives are the whole global batch, like
`MultipleNegativesRankingLoss(gather_across_devices=True)` or FlagEmbedding's
`negatives_cross_device`. Each process's loss is the mean over its own queries, unscaled: with
gradients averaged over processes afterwards (`all_reduce_gradients`, or DDP), the update equals one
process with the global batch (the argument is in `contriever.training.distributed`).

`gradcache_chunk > 0` computes the same loss with gradient caching (`gradcache.py`): the batch is
encoded `gradcache_chunk` texts at a time, so its size is no longer bounded by activation memory.
The caller still just calls `loss.backward()`.
"""

from __future__ import annotations

import torch

from contriever.training.distributed import all_gather_with_grad, get_rank, is_distributed
from contriever.training.losses.gradcache import gradcache_loss
from contriever.training.losses.infonce import info_nce
from contriever.training.losses.objective import Objective, key_inputs, query_inputs, with_spread


class InBatchLoss(Objective):
    """`forward(q [B, D], k [B + M, D]) -> (loss, stats)`; `loss(encoder, batch)` encodes first.

    The first B keys are the queries' positives in order; the remaining M keys are extra negatives
    (any number, e.g. one hard negative per query). Across P processes the keys become
    `[positives of rank 0, ..., of rank P-1, extra negatives of rank 0, ..., of rank P-1]` and query i
    of rank r has positive `r * B + i`. Every process must use the same B and M.
    """

    def __init__(self, temperature: float = 0.05, label_smoothing: float = 0.0, gradcache_chunk: int = 0):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if gradcache_chunk < 0:
            raise ValueError(f"gradcache_chunk must be 0 (off) or a number of texts, got {gradcache_chunk}")
        self.temperature = temperature
        self.label_smoothing = label_smoothing
        self.gradcache_chunk = gradcache_chunk

    def loss(self, encoder: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """Encode queries and keys with `encoder` (chunk by chunk with gradient caching) and score them."""
        if self.gradcache_chunk:
            return gradcache_loss(
                encoder, query_inputs(batch), key_inputs(batch), self.scored, self.gradcache_chunk
            )
        return self.scored(encoder(**query_inputs(batch)), encoder(**key_inputs(batch)))

    def scored(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """`forward` with the spread of the embeddings added to the statistics."""
        loss, stats = self(q, k)
        return loss, with_spread(stats, q, k)

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        n_queries = q.shape[0]
        if k.shape[0] < n_queries:
            raise ValueError(
                f"{n_queries} queries need their {n_queries} positives first, got {k.shape[0]} keys"
            )
        offset = 0
        if is_distributed():
            # One collective for all keys, then regroup: all positives first, in rank order.
            gathered = all_gather_with_grad(k)  # [P * (B + M), D]
            per_rank = gathered.view(-1, k.shape[0], k.shape[1])  # [P, B + M, D]
            positives = per_rank[:, :n_queries].reshape(-1, k.shape[1])
            negatives = per_rank[:, n_queries:].reshape(-1, k.shape[1])
            k = torch.cat([positives, negatives]) if negatives.shape[0] else positives
            offset = get_rank() * n_queries
        positive_index = torch.arange(offset, offset + n_queries, device=q.device)
        return info_nce(q, k, positive_index, self.temperature, self.label_smoothing)

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, label_smoothing={self.label_smoothing}, "
            f"gradcache_chunk={self.gradcache_chunk}"
        )
