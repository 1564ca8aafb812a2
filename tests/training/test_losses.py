"""InfoNCE and the in-batch loss against direct computations."""

from __future__ import annotations

import math

import pytest
import torch

from contriever.training.losses.inbatch import InBatchLoss
from contriever.training.losses.infonce import info_nce, info_nce_from_scores


def direct_info_nce(q, k, positives, temperature):
    """The textbook formula, one query at a time, in float64."""
    total = 0.0
    for i in range(len(q)):
        scores = [float(q[i].double() @ k[j].double()) / temperature for j in range(len(k))]
        top = max(scores)
        log_z = top + math.log(sum(math.exp(s - top) for s in scores))
        total += log_z - scores[positives[i]]
    return total / len(q)


def test_info_nce_equals_direct_cross_entropy():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(5, 8, generator=g), torch.randn(9, 8, generator=g)
    positives = torch.tensor([3, 0, 8, 1, 1])
    loss, _ = info_nce(q, k, positives, temperature=0.05)
    assert loss.item() == pytest.approx(direct_info_nce(q, k, positives.tolist(), 0.05), rel=1e-5)
    # temperature 0.05 = scale 20 in sentence-transformers' MultipleNegativesRankingLoss
    scaled = torch.nn.functional.cross_entropy(20 * q @ k.T, positives)
    assert loss.item() == pytest.approx(scaled.item(), rel=1e-6)


def test_default_positives_are_the_first_keys():
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(4, 6, generator=g), torch.randn(7, 6, generator=g)
    loss, _ = info_nce(q, k, temperature=0.1)
    assert loss.item() == pytest.approx(direct_info_nce(q, k, [0, 1, 2, 3], 0.1), rel=1e-5)


def test_label_smoothing():
    g = torch.Generator().manual_seed(2)
    q, k = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    eps, t = 0.1, 0.5
    loss, _ = info_nce(q, k, temperature=t, label_smoothing=eps)
    log_p = torch.log_softmax(q.double() @ k.double().T / t, dim=1)
    n = k.shape[0]
    target = torch.full((4, n), eps / n, dtype=torch.float64) + (1 - eps) * torch.eye(
        4, n, dtype=torch.float64
    )
    expected = -(target * log_p).sum(dim=1).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_accuracy_and_scores():
    scores = torch.tensor([[5.0, 1.0, 2.0], [0.0, 3.0, 4.0], [1.0, 1.0, 0.0]])
    # positives: 0 (ranked first), 1 (second), 0 (a tie counts as a miss)
    loss, stats = info_nce_from_scores(scores, torch.tensor([0, 1, 0]), temperature=1.0)
    assert stats["accuracy"] == pytest.approx(1 / 3)
    assert stats["positive_score"] == pytest.approx((5 + 3 + 1) / 3)
    assert stats["negative_score"] == pytest.approx((1 + 2 + 0 + 4 + 1 + 0) / 6)
    assert isinstance(stats["accuracy"], float)


def test_scores_are_fp32_under_autocast():
    g = torch.Generator().manual_seed(3)
    q, k = torch.randn(4, 16, generator=g), torch.randn(4, 16, generator=g)
    reference, _ = info_nce(q, k)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = info_nce(q, k)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(reference.item(), rel=1e-6)


def test_gradients_are_fp32_under_autocast():
    """Even with backward called inside the autocast region, the score matmuls stay fp32."""
    g = torch.Generator().manual_seed(5)
    q, k = (
        torch.randn(6, 32, generator=g, requires_grad=True),
        torch.randn(6, 32, generator=g, requires_grad=True),
    )
    info_nce(q, k)[0].backward()
    expected = q.grad.clone(), k.grad.clone()
    q.grad, k.grad = None, None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        info_nce(q, k)[0].backward()
    torch.testing.assert_close(q.grad, expected[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(k.grad, expected[1], rtol=1e-5, atol=1e-6)


def test_bad_shapes_and_temperature():
    with pytest.raises(ValueError):
        info_nce(torch.zeros(3, 4), torch.zeros(3, 5))
    with pytest.raises(ValueError):
        info_nce(torch.zeros(3, 4), torch.zeros(2, 4))
    with pytest.raises(ValueError):
        InBatchLoss(temperature=0.0)


def test_inbatch_with_extra_negatives():
    g = torch.Generator().manual_seed(4)
    q = torch.randn(3, 8, generator=g, requires_grad=True)
    k = torch.randn(3 + 6, 8, generator=g, requires_grad=True)  # 3 positives, then 2 extra negatives each
    loss, stats = InBatchLoss(temperature=0.05)(q, k)
    assert loss.item() == pytest.approx(direct_info_nce(q.detach(), k.detach(), [0, 1, 2], 0.05), rel=1e-5)
    loss.backward()
    assert q.grad is not None and k.grad is not None  # gradients flow through both sides
    assert k.grad[3:].abs().sum() > 0  # the extra negatives get gradient too
    assert set(stats) >= {"accuracy", "positive_score", "negative_score"}


def test_inbatch_perfect_retrieval_has_full_accuracy():
    q = torch.eye(4) * 3
    loss, stats = InBatchLoss(temperature=0.05)(q, torch.eye(4))
    assert stats["accuracy"] == 1.0
    assert loss.item() < 1e-6
