"""Packed inference (no padding in the position-wise layers) gives the transformers forward's vectors."""

from __future__ import annotations

import math
import random

import pytest
import torch

from contriever.model import packed
from contriever.model.encoder import Encoder
from contriever.model.pooling import pool

TEXTS = [
    "a short one",
    "a somewhat longer text with more words in it than the others have",
    "x",
    "the middle length sentence of the batch",
]


def reference(encoder: Encoder, ids, mask) -> torch.Tensor:
    """What `Encoder.forward` computed before packing: transformers' padded forward, then pooling."""
    hidden = encoder.model(input_ids=ids, attention_mask=mask).last_hidden_state
    return pool(hidden, mask, encoder.pooling, encoder.normalize)


@pytest.mark.parametrize(("pooling", "normalize"), [("mean", False), ("cls", True)])
def test_packed_forward_matches_the_padded_one_in_fp32(pooling, normalize):
    encoder = Encoder.from_scratch(
        hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96, seed=3
    )
    encoder.pooling, encoder.normalize = pooling, normalize
    encoder.eval()
    ids, mask = encoder.collate(encoder.tokenize(TEXTS), multiple=16)
    with torch.inference_mode():
        assert packed.applies(encoder.model, ids)
        got = encoder(ids, mask)
        want = reference(encoder, ids, mask)
    assert got.shape == (len(TEXTS), 48)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_packed_forward_under_bf16_autocast_stays_close_to_fp32(tiny_encoder):
    ids, mask = tiny_encoder.collate(tiny_encoder.tokenize(TEXTS), multiple=8)
    with torch.inference_mode():
        exact = reference(tiny_encoder, ids, mask)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = tiny_encoder(ids, mask)
            autocast = reference(tiny_encoder, ids, mask)
    assert got.dtype == torch.float32
    cosine = torch.nn.functional.cosine_similarity(got, exact)
    assert cosine.min() > 0.999
    # and as close to fp32 as transformers' own forward under autocast is
    assert (cosine - torch.nn.functional.cosine_similarity(autocast, exact)).abs().max() < 2e-3


def test_training_and_gradients_take_the_transformers_forward(tiny_encoder):
    ids, mask = tiny_encoder.collate(tiny_encoder.tokenize(TEXTS))
    assert not packed.applies(tiny_encoder.model, ids)  # gradients are on here
    with torch.no_grad():
        assert packed.applies(tiny_encoder.model, ids)
        tiny_encoder.train()
        try:
            assert not packed.applies(tiny_encoder.model, ids)  # dropout is on
        finally:
            tiny_encoder.eval()


def test_changed_weights_are_cast_again():
    encoder = Encoder.from_scratch(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, seed=1
    )
    encoder.eval()
    ids, mask = encoder.collate(encoder.tokenize(TEXTS))
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        before = encoder(ids, mask)
    with torch.no_grad():  # an optimizer step changes parameters in place, as this does
        encoder.model.encoder.layer[0].intermediate.dense.weight.mul_(-1.0)
    with torch.inference_mode():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            after = encoder(ids, mask)
        want = reference(encoder, ids, mask)
    assert not torch.allclose(before, after)
    assert torch.nn.functional.cosine_similarity(after, want).min() > 0.999


def test_a_model_made_under_inference_mode_runs_packed():
    with torch.inference_mode():  # its parameters are inference tensors: no version counters
        encoder = Encoder.from_scratch(
            hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, seed=2
        )
        encoder.eval()
        ids, mask = encoder.collate(encoder.tokenize(TEXTS))
        torch.testing.assert_close(encoder(ids, mask), reference(encoder, ids, mask), rtol=1e-5, atol=1e-5)


def test_packed_bf16_passes_meet_few_product_shapes(tiny_encoder, monkeypatch):
    """Row counts are rounded (`packed.row_count`) so a stream of batches meets few product shapes
    however many token totals it has; `encode` keeps the transformers forward."""
    totals, rows = [], []
    row_count = packed.row_count

    def recording_rows(tokens, dtype):
        totals.append(tokens)
        rows.append(row_count(tokens, dtype))
        return rows[-1]

    monkeypatch.setattr(packed, "row_count", recording_rows)
    sequences = tiny_encoder.tokenize([" ".join(["word"] * n) for n in range(1, 121)])
    rng = random.Random(0)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        for _ in range(120):
            tiny_encoder(*tiny_encoder.collate(rng.sample(sequences, 10)))
    doublings = math.floor(math.log2(max(totals))) - math.floor(math.log2(min(totals))) + 1
    assert len(set(totals)) > 60 and len(set(rows)) <= 8 * doublings + 1, (
        sorted(set(totals)),
        sorted(set(rows)),
    )
    assert all(t <= r <= max(t + 15, t * 1.125) for r, t in zip(rows, totals))
    rows.clear()
    tiny_encoder.encode(["a text", "another text"], show_progress=False, precision="bf16")
    assert rows == []  # encode ran the transformers forward
