"""MoCo: the FIFO queue, the momentum update, the key encoder's isolation and exact resume."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch

from contriever.training.losses.moco import MoCo


class ToyEncoder(torch.nn.Module):
    """Embedding, linear, dropout, masked mean: the `Encoder` call signature in a few parameters."""

    def __init__(self, vocab: int = 30, dim: int = 4, dropout: float = 0.0):
        super().__init__()
        self.dim = dim
        self.embed = torch.nn.Embedding(vocab, dim)
        self.proj = torch.nn.Linear(dim, dim)
        self.dropout = torch.nn.Dropout(dropout)

    def forward(self, input_ids, attention_mask):
        hidden = self.dropout(self.proj(self.embed(input_ids)))
        mask = attention_mask.unsqueeze(-1).float()
        return (hidden * mask).sum(1) / mask.sum(1)


def queue_in_age_order(moco: MoCo) -> torch.Tensor:
    """Queued keys from oldest to newest."""
    if moco.queue_filled < moco.queue_size:
        return moco.queue[: moco.queue_filled]
    return torch.roll(moco.queue, -moco.queue_ptr, dims=0)


@pytest.mark.parametrize("batch_sizes", [[2, 2, 2, 2, 2], [3, 1, 4, 2], [7, 2], [5, 5, 3]])
def test_queue_is_fifo_with_wrap_around(batch_sizes):
    moco = MoCo(ToyEncoder(dim=2), queue_size=5)
    history, counter = [], 0
    for n in batch_sizes:
        keys = torch.arange(counter, counter + n, dtype=torch.float32)[:, None].repeat(1, 2)
        moco.enqueue(keys)
        history.extend(range(counter, counter + n))
        counter += n
        expected = history[-5:]
        assert moco.queue_filled == len(expected)
        assert queue_in_age_order(moco)[:, 0].tolist() == expected
        assert moco.queue.shape == (5, 2)
    assert moco.queue_ptr == counter % 5


def test_only_filled_slots_are_negatives():
    torch.manual_seed(0)
    moco = MoCo(ToyEncoder(dim=3), queue_size=8, temperature=0.1)
    q, k = torch.randn(2, 3), torch.randn(2, 3)
    loss, stats = moco(q, k)
    assert loss.item() == pytest.approx(0.0, abs=1e-7)  # the positive is the only candidate
    assert moco.queue_filled == 0  # k enters the queue after the backward pass
    moco.flush()
    assert moco.queue_filled == 2
    q2, k2 = torch.randn(2, 3), torch.randn(2, 3)
    loss, stats = moco(q2, k2)
    # direct: positive k2[i], negatives the two queued keys k
    expected = 0.0
    for i in range(2):
        scores = [float(q2[i] @ k2[i]) / 0.1] + [float(q2[i] @ k[j]) / 0.1 for j in range(2)]
        expected += math.log(sum(math.exp(s) for s in scores)) - scores[0]
    assert loss.item() == pytest.approx(expected / 2, rel=1e-5)
    assert stats["queue_filled"] == pytest.approx(2 / 8)
    moco.flush()
    assert moco.queue_filled == 4


def test_queue_is_constant_within_a_step():
    """Gradient accumulation: every micro-batch of a step sees the same queue, like one big batch."""
    torch.manual_seed(0)
    encoder = ToyEncoder(dim=3)
    moco = MoCo(encoder, queue_size=8, momentum=0.5)
    moco.enqueue(torch.randn(4, 3))
    q, k = torch.randn(4, 3), torch.randn(4, 3)
    whole, _ = moco(q, k, update_queue=False)  # the step as one batch, then as two micro-batches
    first, _ = moco(q[:2], k[:2])
    second, _ = moco(q[2:], k[2:])
    assert ((first + second) / 2).item() == pytest.approx(whole.item(), rel=1e-6)
    assert moco.queue_filled == 4  # nothing written yet
    moco.momentum_update(encoder)  # end of the step: both micro-batches' keys enter, in order
    assert moco.queue_filled == 8
    torch.testing.assert_close(moco.queue[4:], k)


def test_random_queue_init_counts_as_full():
    moco = MoCo(ToyEncoder(dim=3), queue_size=6, queue_init="random")
    assert moco.queue_filled == 6
    assert torch.allclose(moco.queue.norm(dim=1), torch.ones(6))
    # the same queue on every process (whatever the per-rank global seed), another with another seed
    torch.manual_seed(123)
    again = MoCo(ToyEncoder(dim=3), queue_size=6, queue_init="random")
    torch.testing.assert_close(again.queue, moco.queue)
    assert not torch.allclose(
        MoCo(ToyEncoder(dim=3), queue_size=6, queue_init="random", seed=1).queue, moco.queue
    )


def test_momentum_update_formula():
    torch.manual_seed(0)
    encoder = ToyEncoder()
    moco = MoCo(encoder, queue_size=4, momentum=0.9)
    with torch.no_grad():
        for p in encoder.parameters():
            p.add_(torch.randn_like(p))
    before = [p.clone() for p in moco.key_encoder.parameters()]
    moco.momentum_update(encoder)
    for k_old, k_new, q in zip(before, moco.key_encoder.parameters(), encoder.parameters()):
        torch.testing.assert_close(k_new, 0.9 * k_old + 0.1 * q, rtol=1e-6, atol=1e-7)


def test_key_encoder_gets_no_gradient_and_no_dropout():
    torch.manual_seed(0)
    encoder = ToyEncoder(dropout=0.5)
    moco = MoCo(encoder, queue_size=16)
    moco.train()
    assert not moco.key_encoder.training  # key_encoder_dropout=False keeps it in eval mode
    ids, mask = torch.randint(0, 30, (4, 6)), torch.ones(4, 6, dtype=torch.long)
    k = moco.encode_keys(ids, mask)
    assert not k.requires_grad
    torch.testing.assert_close(k, moco.encode_keys(ids, mask))  # no dropout: deterministic
    for _ in range(3):  # the queue fills between steps
        moco(encoder(ids, mask), moco.encode_keys(ids, mask))[0].backward()
        moco.momentum_update(encoder)
    assert moco.queue_filled == 12
    assert all(p.grad is None and not p.requires_grad for p in moco.key_encoder.parameters())
    assert all(p.grad is not None for p in encoder.parameters())

    with_dropout = MoCo(encoder, queue_size=16, key_encoder_dropout=True)
    assert with_dropout.key_encoder.training
    assert not with_dropout.eval().key_encoder.training


def test_moco_with_the_tiny_bert(tiny_encoder):
    moco = MoCo(tiny_encoder, queue_size=8)
    ids, mask = tiny_encoder.collate(tiny_encoder.tokenize(["a query", "another document here"]))
    k = moco.encode_keys(ids, mask)
    assert k.shape == (2, tiny_encoder.dim)
    torch.testing.assert_close(k, tiny_encoder(ids, mask).detach())  # an exact copy at the start


def test_state_dict_round_trip():
    torch.manual_seed(0)
    encoder = ToyEncoder()
    moco = MoCo(encoder, queue_size=5, momentum=0.5)
    for _ in range(2):
        moco.enqueue(torch.randn(2, 4))
    with torch.no_grad():
        for p in encoder.parameters():
            p.mul_(2)
    moco.momentum_update(encoder)
    moco(torch.randn(2, 4), torch.randn(2, 4))  # its keys are pending: state_dict must include them

    buffer = io.BytesIO()
    torch.save(moco.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)

    restored = MoCo(ToyEncoder(), queue_size=5, momentum=0.5)
    restored.load_state_dict(state)
    assert (restored.queue_ptr, restored.queue_filled) == (moco.queue_ptr, moco.queue_filled) == (1, 5)
    torch.testing.assert_close(restored.queue, moco.queue)
    for a, b in zip(restored.key_encoder.parameters(), moco.key_encoder.parameters()):
        torch.testing.assert_close(a, b)
    # and both continue identically
    keys = torch.randn(3, 4)
    moco.enqueue(keys)
    restored.enqueue(keys)
    torch.testing.assert_close(restored.queue, moco.queue)
    assert restored.queue_ptr == moco.queue_ptr


def test_deepcopy_does_not_share_weights():
    encoder = ToyEncoder()
    moco = MoCo(encoder, queue_size=4)
    twin = copy.deepcopy(encoder)
    with torch.no_grad():
        encoder.proj.weight.add_(1.0)
    torch.testing.assert_close(moco.key_encoder.proj.weight, twin.proj.weight)
