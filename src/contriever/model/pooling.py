"""Pooling: turn a transformer's last hidden states into one vector per text.

Contriever pools with a masked mean over every real token, [CLS] and [SEP] included, and does not
normalize; it scores by dot product. CLS pooling and L2 normalization (dot product of normalized
vectors = cosine) are options.
"""

from __future__ import annotations

import torch

POOLINGS = ("mean", "cls")


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Masked mean over the sequence axis; padding positions (mask 0) do not count."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * mask).sum(dim=1)
    counts = mask.sum(dim=1).clamp(min=1.0)
    return summed / counts


def cls_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The first token's state ([CLS] for BERT, <s> for RoBERTa)."""
    return hidden[:, 0]


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str, normalize: bool) -> torch.Tensor:
    """Pool in fp32 whatever the autocast dtype was, so bf16 encoding loses as little as possible."""
    hidden = hidden.float()
    if pooling == "mean":
        vectors = mean_pool(hidden, attention_mask)
    elif pooling == "cls":
        vectors = cls_pool(hidden, attention_mask)
    else:
        raise ValueError(f"unknown pooling {pooling!r}; choose one of {POOLINGS}")
    if normalize:
        vectors = torch.nn.functional.normalize(vectors, dim=-1)
    return vectors
