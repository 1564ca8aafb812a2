"""`Encoder.encode(on_batch=...)` reports every forward pass, so `contriever index` (and `make serve`
with nothing cached) moves its bar per batch instead of every 8 batches."""

from __future__ import annotations

import numpy as np


def test_on_batch_is_called_once_per_forward_pass(tiny_encoder):
    texts = [("word " * n).strip() for n in range(1, 24)]
    calls: list[int] = []
    vectors = tiny_encoder.encode(texts, batch_size=4, show_progress=False, on_batch=calls.append)
    assert calls == [4, 4, 4, 4, 4, 3]  # 23 texts, batches of 4
    np.testing.assert_allclose(
        vectors, tiny_encoder.encode(texts, batch_size=4, show_progress=False), rtol=1e-6
    )


def test_index_progress_moves_per_batch(tiny_encoder, tmp_path, monkeypatch):
    import json

    from contriever.retrieval import encode
    from contriever.retrieval.settings import EncodingSettings

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": str(i), "text": f"document {i}"}) + "\n" for i in range(20)))
    updates: list[int] = []
    real_tqdm = encode.tqdm

    def recording_tqdm(*args, **kwargs):
        bar = real_tqdm(*args, **kwargs)
        if str(kwargs.get("desc", "")).startswith("encoding part"):
            update = bar.update
            bar.update = lambda n=1: (updates.append(n), update(n))[1]
        return bar

    monkeypatch.setattr(encode, "tqdm", recording_tqdm)
    encoding = EncodingSettings(batch_size=4, use_cache=False)
    encode.build_index([corpus], tiny_encoder, tmp_path / "index", encoding, show_progress=False)
    assert updates == [4] * 5
