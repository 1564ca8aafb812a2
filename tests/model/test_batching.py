"""Batches cut by a token budget, and the budget measured once per device kind and recorded."""

from __future__ import annotations

import json

import numpy as np
import pytest

from contriever.model import batching
from contriever.model.batching import (
    FILE,
    choose_budget,
    device_kind,
    ensure_token_budget,
    measure_token_budget,
    recorded_budget,
    token_batches,
    token_budget,
)


@pytest.mark.parametrize("budget", [1, 7, 64, 1000])
def test_token_batches_cover_every_text_once_within_the_budget(budget):
    lengths = np.random.default_rng(0).integers(1, 40, size=300)
    batches = token_batches(lengths, budget)
    seen = np.concatenate(batches)
    assert sorted(seen.tolist()) == list(range(len(lengths)))  # every text exactly once
    assert (np.diff(lengths[seen]) <= 0).all()  # longest first, across batches
    for rows in batches:
        padded = len(rows) * lengths[rows].max()
        assert padded <= budget or len(rows) == 1  # a text longer than the budget goes alone
        if budget >= 40:  # the batch is as large as the budget allows
            assert rows is batches[-1] or (len(rows) + 1) * lengths[rows].max() > budget


def test_token_batches_max_rows_and_stable_ties():
    batches = token_batches([5, 5, 5, 5, 5], budget=100, max_rows=2)
    assert [b.tolist() for b in batches] == [[0, 1], [2, 3], [4]]
    with pytest.raises(ValueError, match="at least 1"):
        token_batches([3], 0)


def test_token_batches_count_lengths_rounded_up_to_the_multiple():
    batches = token_batches([17, 17, 17, 17, 9], budget=64, multiple=16)
    assert [b.tolist() for b in batches] == [[0, 1], [2, 3], [4]]  # 17 pads to 32: two rows of 32
    assert [b.tolist() for b in token_batches([16, 16, 16, 16], budget=64, multiple=16)] == [[0, 1, 2, 3]]
    with pytest.raises(ValueError, match="multiple must be at least 1"):
        token_batches([3], 10, multiple=0)


def test_collate_rounds_lengths_and_fills_rows_without_changing_the_vectors(tiny_encoder):
    """Rounded lengths and filler rows are padding the mask hides: the real rows' vectors are those of
    exact padding (fp32), and the length never passes the model's position table."""
    import torch

    sequences = tiny_encoder.tokenize(["a short one", "a somewhat longer text with more words in it"])
    exact_ids, exact_mask = tiny_encoder.collate(sequences)
    ids, mask = tiny_encoder.collate(sequences, multiple=16, rows=5)
    assert ids.shape == (5, 16) and exact_ids.shape == (2, max(len(s) for s in sequences))
    assert (ids[2:] == ids[0]).all()  # filler rows copy the first sequence
    with torch.inference_mode():
        exact = tiny_encoder(exact_ids, exact_mask)
        rounded = tiny_encoder(ids, mask)[:2]
    torch.testing.assert_close(rounded, exact, rtol=1e-5, atol=1e-6)
    limit = tiny_encoder.model.config.max_position_embeddings
    long_ids, _ = tiny_encoder.collate([list(range(limit - 3))], multiple=64)
    assert long_ids.shape[1] == limit


def test_bf16_encoding_on_a_cpu_meets_few_shapes(tiny_encoder, monkeypatch):
    """oneDNN keeps memory for every shape a bf16 product meets (the reason for the rounding): texts
    of 120 different lengths are encoded in at most one shape per 16-token length bucket, by budget
    and by --batch-size alike; fp32 keeps exact padding."""
    from contriever.model.encoder import BF16_CPU_LENGTH_MULTIPLE, Encoder

    shapes = []
    forward = Encoder.forward

    def recording(self, ids, mask):
        shapes.append(tuple(ids.shape))
        return forward(self, ids, mask)

    monkeypatch.setattr(Encoder, "forward", recording)
    texts = [" ".join(["word"] * n) for n in range(1, 121)] * 3
    for kwargs in ({"token_budget": 512}, {"batch_size": 7}):
        shapes.clear()
        tiny_encoder.encode(texts, show_progress=False, precision="bf16", **kwargs)
        buckets = {-(-length // BF16_CPU_LENGTH_MULTIPLE) for _, length in shapes}
        assert all(length % BF16_CPU_LENGTH_MULTIPLE == 0 for _, length in shapes), shapes
        assert len(set(shapes)) == len(buckets) <= 123 // BF16_CPU_LENGTH_MULTIPLE + 1, sorted(set(shapes))
    shapes.clear()
    tiny_encoder.encode(texts, show_progress=False, precision="fp32", token_budget=512)
    assert len(set(shapes)) > 3 * len(buckets)  # exact padding: a shape for nearly every batch


def test_encode_by_budget_gives_the_vectors_of_fixed_batches(tiny_encoder):
    texts = [" ".join(["word"] * n) for n in (1, 50, 3, 200, 7, 7, 120, 2)]
    # fp32: bf16 (`auto` on a CPU with bf16 products) rounds differently with the batch's shape
    fixed = tiny_encoder.encode(texts, 2, show_progress=False, precision="fp32")
    for budget in (16, 256, 100_000):
        by_budget = tiny_encoder.encode(texts, token_budget=budget, show_progress=False, precision="fp32")
        np.testing.assert_allclose(by_budget, fixed, rtol=1e-5, atol=1e-6)


def test_budget_measured_once_per_device_kind_and_recorded(tiny_encoder, tmp_path, monkeypatch):
    monkeypatch.setenv("CONTRIEVER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(batching.CANDIDATES, "cpu", (64, 256))  # a quick measurement
    assert recorded_budget(tiny_encoder.device) is None
    assert token_budget(tiny_encoder.device) == batching.DEFAULT_TOKEN_BUDGET["cpu"]
    assert ensure_token_budget(tiny_encoder, texts=10) == batching.DEFAULT_TOKEN_BUDGET["cpu"]  # too few
    assert not (tmp_path / "cache" / FILE).exists()
    calls = []
    real = batching.measure_token_budget
    monkeypatch.setattr(batching, "measure_token_budget", lambda *a, **k: calls.append(1) or real(*a, **k))
    chosen = ensure_token_budget(tiny_encoder, texts=batching.MEASURE_AFTER)
    records = json.loads((tmp_path / "cache" / FILE).read_text())
    entry = records[device_kind(tiny_encoder.device)]
    assert chosen == entry["budget"] and str(chosen) in entry["tokens_per_s"]
    assert ensure_token_budget(tiny_encoder, texts=10**6) == chosen  # kept: not measured again
    assert len(calls) == 1
    assert token_budget(tiny_encoder.device) == chosen


def test_no_record_when_the_cache_is_off(tiny_encoder, monkeypatch):
    monkeypatch.setenv("CONTRIEVER_CACHE", "off")
    result = measure_token_budget(tiny_encoder, budgets=[64, 128], rounds=1)
    assert result["budget"] in (64, 128) and recorded_budget(tiny_encoder.device) is None
    assert ensure_token_budget(tiny_encoder, texts=10**6) == batching.DEFAULT_TOKEN_BUDGET["cpu"]


def test_the_smallest_budget_as_fast_as_the_fastest_is_chosen():
    """Within 3% of the fastest is as fast (the measurement's noise): the smallest such budget,
    for its smaller activations; a budget clearly faster still wins."""
    assert choose_budget({2048: 11743.0, 4096: 11554.0, 8192: 11276.0, 16384: 10397.0}) == 2048
    assert choose_budget({2048: 10796.0, 4096: 11454.0, 8192: 11620.0, 16384: 10494.0}) == 4096
    assert choose_budget({2048: 8000.0, 4096: 9000.0, 8192: 11000.0}) == 8192
