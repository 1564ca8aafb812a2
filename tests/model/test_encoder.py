from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from contriever.data.documents import document_text
from contriever.model.encoder import Encoder, read_sentence_transformers_settings
from contriever.model.pooling import mean_pool, pool

TEXTS = [
    "Contriever trains dense retrievers without labels.",
    "a",
    "Mean pooling averages the last hidden states over every real token, [CLS] and [SEP] included, "
    "and the vectors are compared by dot product.",
    "",
    "BM25 is a strong lexical baseline.",
]


def direct_mean_pooling(encoder: Encoder, text: str) -> np.ndarray:
    """One text at a time, no padding at all: the plain average of the token states."""
    ids = torch.tensor([encoder.tokenizer(text, truncation=True, max_length=encoder.max_length)["input_ids"]])
    with torch.no_grad():
        hidden = encoder.model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[0]
    return hidden.mean(dim=0).numpy()


def test_mean_pooling_matches_direct_computation(tiny_encoder):
    batched = tiny_encoder.encode(TEXTS, batch_size=3, precision="fp32", show_progress=False)
    for row, text in enumerate(TEXTS):
        np.testing.assert_allclose(
            batched[row], direct_mean_pooling(tiny_encoder, text), rtol=1e-4, atol=1e-5
        )


def test_mean_pool_ignores_padding_and_counts_special_tokens():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert torch.allclose(mean_pool(hidden, mask), torch.tensor([[2.0, 3.0]]))
    cls = pool(hidden, mask, "cls", normalize=False)
    assert torch.allclose(cls, torch.tensor([[1.0, 2.0]]))
    unit = pool(hidden, mask, "mean", normalize=True)
    assert torch.allclose(unit.norm(dim=-1), torch.ones(1))


def test_encode_keeps_input_order_whatever_the_batching(tiny_encoder):
    one_by_one = np.stack([tiny_encoder.encode([t], precision="fp32", show_progress=False)[0] for t in TEXTS])
    batched = tiny_encoder.encode(TEXTS, batch_size=2, precision="fp32", show_progress=False)
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-4, atol=1e-5)


def test_document_text_joins_title_and_text():
    assert document_text({"title": "T", "text": "body"}) == "T body"
    assert document_text({"title": "", "text": "body"}) == "body"
    assert document_text({"text": "body"}) == "body"
    assert document_text("plain") == "plain"


def test_saved_model_reloads_with_the_same_vectors(tiny_encoder, tmp_path):
    tiny_encoder.save(tmp_path / "model")
    reloaded = Encoder.load(tmp_path / "model")
    assert (reloaded.pooling, reloaded.normalize, reloaded.max_length) == (
        "mean",
        False,
        tiny_encoder.max_length,
    )
    before = tiny_encoder.encode(TEXTS, precision="fp32", show_progress=False)
    after = reloaded.encode(TEXTS, precision="fp32", show_progress=False)
    np.testing.assert_array_equal(before, after)


def test_save_overwrites_atomically_and_records_pooling(tmp_path):
    encoder = Encoder.from_scratch(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        pooling="cls",
        normalize=True,
        max_length=128,
        seed=1,
    )
    encoder.save(tmp_path / "m")
    encoder.save(tmp_path / "m")  # replacing an existing folder leaves one clean folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    settings = read_sentence_transformers_settings(tmp_path / "m")
    assert settings == {"pooling": "cls", "normalize": True, "max_length": 128}
    assert (
        json.loads((tmp_path / "m" / "config_sentence_transformers.json").read_text())["similarity_fn_name"]
        == "cosine"
    )


def test_plain_hf_folder_loads_with_contriever_recipe(tiny_encoder, tmp_path):
    """A published Contriever checkpoint is a bare BERT folder: mean pooling, no normalization, 512."""
    tiny_encoder.model.save_pretrained(tmp_path / "bare")
    tiny_encoder.tokenizer.save_pretrained(tmp_path / "bare")
    loaded = Encoder.load(tmp_path / "bare")
    assert (loaded.pooling, loaded.normalize, loaded.max_length) == ("mean", False, 512)
    np.testing.assert_allclose(
        loaded.encode(TEXTS, precision="fp32", show_progress=False),
        tiny_encoder.encode(TEXTS, precision="fp32", show_progress=False),
        rtol=1e-5,
        atol=1e-6,
    )


def test_saved_model_loads_in_transformers_and_sentence_transformers(tiny_encoder, tmp_path):
    st = pytest.importorskip("sentence_transformers")
    from transformers import AutoModel

    tiny_encoder.save(tmp_path / "model")
    ours = tiny_encoder.encode(TEXTS, precision="fp32", show_progress=False)

    model = AutoModel.from_pretrained(tmp_path / "model")
    batch = tiny_encoder.tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    np.testing.assert_allclose(mean_pool(hidden, batch["attention_mask"]).numpy(), ours, rtol=1e-4, atol=1e-5)

    theirs = st.SentenceTransformer(str(tmp_path / "model"), device="cpu").encode(
        TEXTS, convert_to_numpy=True
    )
    np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-5)


def test_missing_or_bad_folder_errors_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such model folder"):
        Encoder.load(tmp_path / "nothing-here")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        Encoder.load(tmp_path / "empty")


@pytest.mark.slow
def test_default_model_matches_sentence_transformers(default_encoder):
    st = pytest.importorskip("sentence_transformers")
    from contriever.model.encoder import default_model_path

    assert (default_encoder.pooling, default_encoder.normalize, default_encoder.max_length) == (
        "mean",
        True,
        256,
    )
    theirs = st.SentenceTransformer(str(default_model_path()), device="cpu").encode(
        TEXTS, convert_to_numpy=True
    )
    ours = default_encoder.encode(TEXTS, precision="fp32", show_progress=False)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
    bf16 = default_encoder.encode(TEXTS, precision="bf16", show_progress=False)
    cosine = (bf16 * ours).sum(1) / np.linalg.norm(bf16, axis=1) / np.linalg.norm(ours, axis=1)
    assert cosine.min() >= 0.999


def test_auto_precision_uses_bf16_only_where_the_hardware_runs_it(monkeypatch):
    # On an AVX2-only CPU bf16 matrix products are emulated and far slower than fp32: auto must not pick it.
    from contriever.model import encoder as encoder_module
    from contriever.model import precision

    cpu = torch.device("cpu")
    monkeypatch.setattr(precision, "bf16_supported", lambda device: False)
    assert not isinstance(encoder_module.autocast_context(cpu, "auto"), torch.autocast)
    monkeypatch.setattr(precision, "bf16_supported", lambda device: True)
    context = encoder_module.autocast_context(cpu, "auto")
    assert isinstance(context, torch.autocast) and context.fast_dtype == torch.bfloat16
    assert isinstance(encoder_module.autocast_context(cpu, "bf16"), torch.autocast)  # asked for: obeyed
    with pytest.raises(ValueError, match="unknown precision"):
        encoder_module.autocast_context(cpu, "int4")


@pytest.mark.bad_input
def test_a_model_folder_that_cannot_load_says_why(tiny_encoder, tmp_path):
    from contriever.errors import DataError

    folder = tiny_encoder.save(tmp_path / "model")
    weights = folder / "model.safetensors"
    intact = weights.read_bytes()
    weights.write_bytes(intact[: len(intact) - 100])
    with pytest.raises(DataError, match=r"bytes, manifest\.json says .*: truncated"):
        Encoder.load(folder)  # a folder we saved: its manifest catches it first
    (folder / "manifest.json").unlink()  # as a folder saved elsewhere, without one
    with pytest.raises(DataError, match="truncated: .* bytes where its header needs"):
        Encoder.load(folder)
    weights.write_bytes(intact[:5])
    with pytest.raises(DataError, match="truncated or not a safetensors file"):
        Encoder.load(folder)
    weights.unlink()
    with pytest.raises(DataError, match="no model weights"):
        Encoder.load(folder)
    (folder / "config.json").write_text("{}")
    with pytest.raises(DataError, match="names no model_type") as error:
        Encoder.load(folder)
    assert error.value.path.endswith("config.json")


def test_pad_batch():
    from contriever.model.encoder import pad_batch

    ids, mask = pad_batch([[101, 5, 102], np.array([101, 102])], pad_id=0)
    assert ids.dtype == mask.dtype == torch.int64
    assert ids.tolist() == [[101, 5, 102], [101, 102, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 1, 0]]
