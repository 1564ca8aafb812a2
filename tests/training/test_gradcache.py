"""Gradient caching gives the gradients of the plain step, dropout included."""

from __future__ import annotations

import copy
from contextlib import nullcontext

import pytest
import torch

from contriever.training.losses import gradcache
from contriever.training.losses.gradcache import gradcache_loss
from contriever.training.losses.inbatch import InBatchLoss


def gradcache_backward(model, q, k, loss_fn, chunk_size):
    """The loss with gradient caching, then its backward pass (which runs the chunked re-encoding)."""
    loss, stats = gradcache_loss(model, q, k, loss_fn, chunk_size)
    loss.backward()
    return loss.detach(), stats


def batch(n: int, length: int, seed: int, vocab: int = 1000) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (n, length), generator=g)
    lengths = torch.randint(2, length + 1, (n,), generator=g)
    mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
    return {"input_ids": ids * mask, "attention_mask": mask}


def chunked(inputs: dict, size: int) -> list[dict]:
    n = len(inputs["input_ids"])
    return [{name: t[i : i + size] for name, t in inputs.items()} for i in range(0, n, size)]


def grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def assert_same_grads(a: dict, b: dict, atol: float = 1e-5) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=atol, msg=name)


@pytest.fixture
def bert(tiny_encoder):
    model = copy.deepcopy(tiny_encoder)  # the fixture is shared: never change it
    model.zero_grad(set_to_none=True)
    return model


def run_gradcache(model, q, k, loss_fn, chunk, seed=0):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    loss, stats = gradcache_backward(model, q, k, loss_fn, chunk)
    return loss, stats, grads(model), torch.get_rng_state()


def test_equals_full_batch_step_without_dropout(bert):
    bert.eval()
    q, k = batch(6, 9, seed=1), batch(12, 11, seed=2)  # 6 positives, then 6 extra negatives
    loss_fn = InBatchLoss(temperature=0.05)
    bert.zero_grad(set_to_none=True)
    reference, ref_stats = loss_fn(bert(**q), bert(**k))
    reference.backward()
    expected = grads(bert)
    loss, stats, got, _ = run_gradcache(bert, q, k, loss_fn, chunk=4)
    assert loss.item() == pytest.approx(reference.item(), rel=1e-6)
    assert stats["accuracy"] == ref_stats["accuracy"]
    assert_same_grads(got, expected)


def test_equals_plain_step_with_dropout(bert):
    """Dropout on: the same chunks encoded with a graph from the same random state."""
    bert.train()
    q, k = batch(6, 9, seed=3), batch(6, 10, seed=4)
    loss_fn = InBatchLoss(temperature=0.05)
    chunk = 4

    bert.zero_grad(set_to_none=True)
    torch.manual_seed(0)
    q_vec = torch.cat([bert(**c) for c in chunked(q, chunk)])
    k_vec = torch.cat([bert(**c) for c in chunked(k, chunk)])
    reference, _ = loss_fn(q_vec, k_vec)
    reference.backward()
    expected, expected_rng = grads(bert), torch.get_rng_state()

    loss, _, got, rng_after = run_gradcache(bert, q, k, loss_fn, chunk)
    assert loss.item() == pytest.approx(reference.item(), rel=1e-6)
    assert_same_grads(got, expected)
    assert torch.equal(rng_after, expected_rng)  # the global random stream moves on as in the plain step

    # without replaying the random state the dropout masks differ, and so do the gradients
    original = gradcache.RandomState.replay
    try:
        gradcache.RandomState.replay = lambda self: nullcontext()
        _, _, unreplayed, _ = run_gradcache(bert, q, k, loss_fn, chunk)
    finally:
        gradcache.RandomState.replay = original
    assert any(not torch.allclose(unreplayed[n], expected[n], atol=1e-5) for n in expected)


def test_scaled_loss_function_and_accumulation(bert):
    """A loss function that returns loss / 2 halves the gradients; gradients add up like backward()."""
    bert.eval()
    q, k = batch(4, 8, seed=5), batch(4, 8, seed=6)
    loss_fn = InBatchLoss(temperature=0.1)
    _, _, full, _ = run_gradcache(bert, q, k, loss_fn, chunk=3)

    def halved(a, b):
        loss, stats = loss_fn(a, b)
        return loss / 2, stats

    bert.zero_grad(set_to_none=True)
    gradcache_backward(bert, q, k, halved, 2)
    gradcache_backward(bert, q, k, halved, 5)
    assert_same_grads(grads(bert), full)


def test_bad_chunk_size(bert):
    with pytest.raises(ValueError):
        gradcache_backward(bert, batch(2, 4, 0), batch(2, 4, 1), InBatchLoss(), 0)


def test_works_under_autocast(bert):
    """Wrapped in bf16 autocast: the plain bf16 step's gradients, up to bf16 rounding."""
    bert.eval()
    q, k = batch(4, 8, seed=7), batch(4, 8, seed=8)
    loss_fn = InBatchLoss(temperature=0.05)

    def flat(g: dict) -> torch.Tensor:
        return torch.cat([v.flatten() for v in g.values()])

    bert.zero_grad(set_to_none=True)
    loss_fn(bert(**q), bert(**k))[0].backward()
    fp32 = flat(grads(bert))
    bert.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        reference, _ = loss_fn(bert(**q), bert(**k))
    reference.backward()
    plain = flat(grads(bert))
    bert.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = gradcache_backward(bert, q, k, loss_fn, 2)
    cached = flat(grads(bert))
    assert loss.item() == pytest.approx(reference.item(), rel=1e-6)
    plain_error = ((plain - fp32).norm() / fp32.norm()).item()
    cached_error = ((cached - fp32).norm() / fp32.norm()).item()
    assert plain_error < 2e-3
    assert cached_error < 2 * plain_error


def test_an_option_of_the_inbatch_loss_that_the_caller_just_backpropagates(bert):
    """`InBatchLoss(gradcache_chunk=...)`: the same loss and gradients as the plain loss, through
    `loss.backward()` alone, scaled by whatever the caller multiplies the loss by."""
    bert.eval()
    q, k = batch(6, 9, seed=11), batch(12, 7, seed=12)
    tokens = {"q_ids": q["input_ids"], "q_mask": q["attention_mask"]}
    tokens |= {"k_ids": k["input_ids"], "k_mask": k["attention_mask"]}
    plain_loss, plain_stats = InBatchLoss(temperature=0.05).loss(bert, tokens)
    (plain_loss / 3).backward()
    expected = grads(bert)
    bert.zero_grad(set_to_none=True)
    loss, stats = InBatchLoss(temperature=0.05, gradcache_chunk=4).loss(bert, tokens)
    assert bert.model.embeddings.word_embeddings.weight.grad is None  # nothing reaches the weights yet
    (loss / 3).backward()
    assert loss.item() == pytest.approx(plain_loss.item(), rel=1e-6)
    assert stats == pytest.approx(plain_stats, rel=1e-5)  # accuracy, scores, q_std, k_std
    assert_same_grads(grads(bert), expected)
