"""ChunkSampler: chunks inside the stream (and documents), source mixing, rank parts, exact resume.

The folders here are written directly in the prepared format with token id = global position
(+ a per-source base), so every chunk tells where it came from.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from contriever.data.sampling import ChunkSampler, ChunkSettings, rank_document_range, source_probabilities


def write_folder(folder: Path, doc_lengths: list[int], base: int = 0) -> Path:
    """A prepared folder whose tokens are base + 0, 1, 2, ... (uint32)."""
    folder.mkdir(parents=True)
    offsets = np.concatenate([[0], np.cumsum(doc_lengths)]).astype(np.int64)
    n = int(offsets[-1])
    (base + np.arange(n, dtype=np.uint32)).tofile(folder / "tokens.bin")
    np.save(folder / "doc_offsets.npy", offsets)
    meta = {"dtype": "uint32", "n_tokens": n, "n_docs": len(doc_lengths), "tokenizer": {"vocab_size": 2**24}}
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


def positions(chunk: np.ndarray, base: int = 0) -> tuple[int, int]:
    """(start, end) in the stream, checking the chunk is one contiguous slice of it."""
    start = int(chunk[0]) - base
    assert np.array_equal(chunk, np.arange(start + base, start + base + len(chunk)))
    return start, start + len(chunk)


@pytest.fixture
def flat(tmp_path) -> Path:
    return write_folder(tmp_path / "flat", [50, 400, 7, 300, 243])  # 1,000 tokens


def test_flat_chunks_are_full_length_slices_inside_the_stream(flat):
    sampler = ChunkSampler([flat], ChunkSettings(chunk_length=64), seed=1)
    chunks = sampler.sample(2000)
    assert all(c.dtype == np.int64 and len(c) == 64 for c in chunks)
    starts = [positions(c)[0] for c in chunks]
    assert min(starts) >= 0 and max(starts) <= 1000 - 64
    assert min(starts) < 20 and max(starts) > 1000 - 64 - 20  # the whole range is used


def test_within_documents_never_crosses_a_boundary(tmp_path):
    lengths = [5, 100, 20, 3, 64, 300, 9]
    folder = write_folder(tmp_path / "docs", lengths)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    sampler = ChunkSampler([folder], ChunkSettings(64, within_documents=True, min_doc_length=8), seed=2)
    hits = np.zeros(len(lengths), dtype=int)
    for chunk in sampler.sample(6000):
        start, end = positions(chunk)
        doc = int(np.searchsorted(offsets, start, side="right")) - 1
        assert end <= offsets[doc + 1], "chunk crosses a document boundary"
        assert len(chunk) == min(64, lengths[doc])  # short documents give short chunks
        hits[doc] += 1
    assert hits[0] == 0 and hits[3] == 0  # shorter than min_doc_length: never chosen
    eligible = np.array([0, 100, 20, 0, 64, 300, 9])
    np.testing.assert_allclose(hits / hits.sum(), eligible / eligible.sum(), atol=0.02)  # p ~ length


@pytest.mark.parametrize(("exponent", "expected_first"), [(0.0, 0.5), (1.0, 0.1), (0.5, 0.25)])
def test_mixing_follows_the_exponent(tmp_path, exponent, expected_first):
    small = write_folder(tmp_path / "small", [1000])
    large = write_folder(tmp_path / "large", [9000], base=10**6)
    sampler = ChunkSampler([small, large], ChunkSettings(16, mix_exponent=exponent), seed=3)
    np.testing.assert_allclose(sampler.probabilities[0], expected_first)
    chunks, sources = sampler.sample_with_sources(8000)
    assert abs((sources == 0).mean() - expected_first) < 0.02
    for chunk, s in zip(chunks, sources):
        positions(chunk, base=0 if s == 0 else 10**6)  # the chunk really comes from that source


def test_source_probabilities():
    np.testing.assert_allclose(source_probabilities([10, 30], 0.0), [0.5, 0.5])
    np.testing.assert_allclose(source_probabilities([10, 30], 1.0), [0.25, 0.75])


def test_batch_mix_unit_takes_each_call_from_one_source(tmp_path):
    a = write_folder(tmp_path / "a", [500])
    b = write_folder(tmp_path / "b", [5000], base=10**6)
    sampler = ChunkSampler([a, b], ChunkSettings(8, mix_unit="batch"), seed=4)
    firsts = []
    for _ in range(400):
        _, sources = sampler.sample_with_sources(16)
        assert len(set(sources.tolist())) == 1
        firsts.append(sources[0] == 0)
    assert abs(np.mean(firsts) - 0.5) < 0.08


@pytest.mark.parametrize("within", [False, True])
def test_ranks_sample_disjoint_parts(tmp_path, within):
    lengths = [30 + (i * 37) % 90 for i in range(60)]
    folder = write_folder(tmp_path / "d", lengths)
    n = sum(lengths)
    seen = []
    for rank in range(3):
        sampler = ChunkSampler([folder], ChunkSettings(32, within_documents=within), rank=rank, world_size=3)
        covered = np.zeros(n, dtype=bool)
        for chunk in sampler.sample(3000):
            start, end = positions(chunk)
            covered[start:end] = True
        seen.append(covered)
        if within:
            first, last = rank_document_range(np.concatenate([[0], np.cumsum(lengths)]), rank, 3)
            assert first < last
    assert not (seen[0] & seen[1]).any() and not (seen[1] & seen[2]).any() and not (seen[0] & seen[2]).any()
    coverage = np.sum(seen, axis=0) > 0
    assert coverage.mean() > 0.95  # together the ranks see (nearly) everything
    for covered in seen:
        assert 0.25 < covered.mean() < 0.42  # about a third each


def test_same_seed_same_chunks_other_rank_or_seed_others(flat):
    first = ChunkSampler([flat], ChunkSettings(16), seed=7).sample(50)
    again = ChunkSampler([flat], ChunkSettings(16), seed=7).sample(50)
    other_seed = ChunkSampler([flat], ChunkSettings(16), seed=8).sample(50)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other_seed))


@pytest.mark.parametrize("within", [False, True])
def test_state_dict_resume_is_exact(tmp_path, within):
    a = write_folder(tmp_path / "a", [40, 200, 13, 90])
    b = write_folder(tmp_path / "b", [700, 12], base=10**6)
    chunking = ChunkSettings(32, within_documents=within, mix_exponent=0.5)
    straight = ChunkSampler([a, b], chunking, seed=11)
    expected = [straight.sample(10) for _ in range(6)]

    interrupted = ChunkSampler([a, b], chunking, seed=11)
    for _ in range(3):
        interrupted.sample(10)
    state = json.loads(json.dumps(interrupted.state_dict()))  # JSON-serialisable
    resumed = ChunkSampler([a, b], chunking, seed=11)
    resumed.load_state_dict(state)
    assert resumed.chunks_sampled == 30
    for batch in expected[3:]:
        got = resumed.sample(10)
        assert all(np.array_equal(x, y) for x, y in zip(batch, got))


def test_sampling_does_not_depend_on_call_sizes(flat):
    whole = ChunkSampler([flat], ChunkSettings(16), seed=5).sample(12)
    split = ChunkSampler([flat], ChunkSettings(16), seed=5)
    parts = split.sample(5) + split.sample(7)
    assert all(np.array_equal(x, y) for x, y in zip(whole, parts))


def test_state_from_other_settings_is_refused(flat):
    state = ChunkSampler([flat], ChunkSettings(16)).state_dict()
    with pytest.raises(ValueError, match="chunk_length"):
        ChunkSampler([flat], ChunkSettings(32)).load_state_dict(state)
    with pytest.raises(ValueError, match="rank"):
        ChunkSampler([flat], ChunkSettings(16), rank=1, world_size=2).load_state_dict(state)


def test_bad_settings(flat, tmp_path):
    with pytest.raises(ValueError, match="rank"):
        ChunkSampler([flat], rank=2, world_size=2)
    with pytest.raises(ValueError, match="mix_unit"):
        ChunkSampler([flat], ChunkSettings(mix_unit="epoch"))
    with pytest.raises(FileNotFoundError, match="not a prepared token folder"):
        ChunkSampler([tmp_path])
    tiny = write_folder(tmp_path / "tiny", [3, 4])
    with pytest.raises(ValueError, match="no document of at least 8 tokens"):
        ChunkSampler([tiny], ChunkSettings(within_documents=True))


def test_short_stream_gives_short_chunks(tmp_path):
    folder = write_folder(tmp_path / "short", [10])
    chunks = ChunkSampler([folder], ChunkSettings(256)).sample(5)
    assert all(c.tolist() == list(range(10)) for c in chunks)
