"""The bi-encoder: one transformer that turns queries and documents into vectors.

`Encoder` wraps any Hugging Face encoder (BERT, MiniLM, RoBERTa/XLM-R, ...) with a pooling rule.
It is an `nn.Module` (training calls it on token ids) and an inference tool (`encode_queries`,
`encode_corpus`: length-sorted batches, bf16 autocast where the hardware has it, fp32 pooling; on a
CPU, BERT-family models called directly at inference, as `serve` does, run packed, with no padding
in their position-wise layers: `contriever.model.packed`).

Saved folders are plain Hugging Face model folders plus the sentence-transformers module files, so
the same folder loads with `transformers.AutoModel`, with `sentence_transformers.SentenceTransformer`
(with the same pooling) and with `Encoder.load`. A folder without sentence-transformers files (a
published Contriever checkpoint) loads as its authors use it: mean pooling, no normalization, dot
product.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from contriever.data.documents import document_text
from contriever.data.normalize import transform_text
from contriever.errors import DataError
from contriever.io import atomic_folder, verify_manifest
from contriever.model import packed
from contriever.model.locate import (
    default_model_path,  # noqa: F401 (re-exported: its old home)
    from_pretrained,
    load_tokenizer,
    locate_model,
)
from contriever.model.pooling import POOLINGS, pool
from contriever.model.precision import (  # noqa: F401 (bf16_supported, resolve_precision: re-exported)
    autocast_context,
    bf16_supported,
    resolve_precision,
)
from contriever.model.text_options import TextOptions

DEFAULT_MAX_LENGTH = 512
NORMALIZE_TEXT_KEY = "contriever_normalize_text"  # in the saved config.json
# oneDNN, which runs bf16 products on a CPU, keeps compiled kernels and scratch memory for each input
# shape it meets (up to 1,024 of them, ~4 MiB each at a 2,048-token batch): batches padded to their
# exact longest text meet hundreds of shapes and resident memory grew with the corpus (+666 MiB over
# 170 lengths). Lengths rounded up to a multiple of 16 and full batches keep it to a few dozen shapes
# (+70 MiB) at the same speed (benchmarks/README.md, issue 22, "oneDNN's shapes").
BF16_CPU_LENGTH_MULTIPLE = 16


def pad_batch(
    sequences: Sequence[Sequence[int] | np.ndarray],
    pad_id: int,
    length: int | None = None,
    rows: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to the longest sequence, or to `length`: (input_ids, attention_mask), both int64
    [batch, longest]. `rows` more than the sequences adds copies of the first one (a fixed batch
    shape; the caller drops their outputs)."""
    if len(sequences) == 0:
        raise ValueError("cannot pad an empty batch")
    longest = max(max(len(s) for s in sequences), length or 0)
    rows = max(len(sequences), rows or 0)
    ids = np.full((rows, longest), pad_id, dtype=np.int64)
    mask = np.zeros((rows, longest), dtype=np.int64)
    for row in range(rows):
        seq = sequences[row] if row < len(sequences) else sequences[0]
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return torch.from_numpy(ids), torch.from_numpy(mask)


def shape_multiple(device: torch.device, precision: str, multiple: int | None = None) -> int:
    """What batch lengths are rounded up to: `multiple` (default BF16_CPU_LENGTH_MULTIPLE) under bf16
    (or fp16) on a CPU, where oneDNN keeps kernels and scratch memory for every shape it meets; 1
    elsewhere (fp32 on a CPU keeps nothing per shape, and its results stay those of exact padding)."""
    if device.type == "cpu" and resolve_precision(precision, device) != "fp32":
        return BF16_CPU_LENGTH_MULTIPLE if multiple is None else multiple
    return 1


def _read_json(path: Path) -> dict | list:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: line {error.lineno}: not valid JSON ({error.msg})") from error


def read_sentence_transformers_settings(folder: Path) -> dict:
    """Pooling, normalization and max length from a sentence-transformers folder ({} if it is none)."""
    modules_file = folder / "modules.json"
    if not modules_file.exists():
        return {}
    settings: dict = {}
    for module in _read_json(modules_file):
        kind = module.get("type", "")
        if kind.endswith("Pooling"):
            config = _read_json(folder / module.get("path", "1_Pooling") / "config.json")
            if config.get("pooling_mode_cls_token"):
                settings["pooling"] = "cls"
            elif config.get("pooling_mode_mean_tokens"):
                settings["pooling"] = "mean"
            else:
                modes = [k for k, v in config.items() if k.startswith("pooling_mode") and v]
                raise ValueError(f"{folder}: pooling {modes} is not supported; use mean or cls pooling")
        elif kind.endswith("Normalize"):
            settings["normalize"] = True
    settings.setdefault("normalize", False)
    sbert_config = folder / "sentence_bert_config.json"
    if sbert_config.exists():
        values = _read_json(sbert_config)
        if values.get("max_seq_length"):
            settings["max_length"] = int(values["max_seq_length"])
        if values.get("do_lower_case"):  # sentence-transformers lowercases the input text then
            settings["lowercase"] = True
    prompts = read_prompts(folder)
    if prompts:
        settings["prompts"] = prompts
    return settings


PROMPT_NAMES = ("query", "passage")  # what `encode_queries` / `encode_corpus` prepend
PROMPT_ALIASES = {"passage": ("passage", "document", "corpus")}  # sentence-transformers' other names


def merge_prompts(recorded: dict, given: dict | None, force: bool, model: str) -> dict[str, str]:
    """The model's prompts with `given` ones in their place; a given prompt that differs from one the
    model records is refused unless `force` (the model was trained with its own: another one
    silently costs quality)."""
    merged = dict(recorded)
    for name, text in (given or {}).items():
        text = text or ""
        if not force and recorded.get(name) and recorded[name] != text:
            from contriever.errors import UsageError

            raise UsageError(
                f"{model} records the {name} prompt {recorded[name]!r}; refusing {text!r} "
                "(to use it anyway: --force-prompts, or model.force_prompts = true in a training config)"
            )
        merged[name] = text
    return {name: text for name, text in merged.items() if text}


def read_prompts(folder: Path) -> dict[str, str]:
    """sentence-transformers' `prompts` of `config_sentence_transformers.json` ({} without them):
    text put before a query or a passage, as E5 expects `query: ` and `passage: `."""
    path = folder / "config_sentence_transformers.json"
    if not path.is_file():
        return {}
    prompts = _read_json(path).get("prompts") or {}
    if not isinstance(prompts, dict) or not all(isinstance(v, str) for v in prompts.values()):
        raise ValueError(f"{path}: prompts must map names to strings, got {prompts!r}")
    return {str(k): v for k, v in prompts.items() if v}


def hub_sentence_transformers_settings(hub_id: str) -> dict:
    """`read_sentence_transformers_settings` for a Hub model: its few small JSON files, best effort.

    Fetched under the same cache-first, never-wait-offline rules as the model; a model without them
    (or any failure to get them) gives {}: Contriever's recipe.
    """

    def fetch(name: str, **kwargs) -> str:
        from huggingface_hub import snapshot_download

        patterns = [
            "modules.json",
            "sentence_bert_config.json",
            "*Pooling/config.json",
            "config_sentence_transformers.json",
        ]
        return snapshot_download(name, allow_patterns=patterns, **kwargs)

    try:
        return read_sentence_transformers_settings(Path(from_pretrained(fetch, hub_id)))
    except Exception:  # noqa: BLE001 - optional files; the model itself has loaded
        return {}


WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def check_model_folder(folder: Path) -> None:
    """Refuse a model folder that cannot load, saying why, before `transformers` fails obscurely:
    a config.json that is not a model config (`{}`), no weights, a safetensors file cut short."""
    config_path = folder / "config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DataError(config_path, f"not valid JSON ({error.msg})", error.lineno) from None
    except UnicodeDecodeError:
        raise DataError(config_path, "not UTF-8 text: not a model config") from None
    if not isinstance(config, dict) or "model_type" not in config:
        raise DataError(
            config_path,
            'not a transformers model config: it names no model_type (such as "bert"); save the model '
            "again with `Encoder.save` or `save_pretrained`",
        )
    weights = [folder / name for name in WEIGHT_FILES if (folder / name).is_file()]
    if not weights:
        present = ", ".join(sorted(p.name for p in folder.iterdir())) or "nothing"
        raise DataError(
            folder, f"no model weights (model.safetensors or pytorch_model.bin); it holds: {present}"
        )
    for path in weights:
        if path.name == "model.safetensors.index.json":
            try:
                shards = set(json.loads(path.read_text(encoding="utf-8"))["weight_map"].values())
            except (ValueError, KeyError, TypeError, AttributeError):
                raise DataError(path, "not a safetensors shard index (no weight_map)") from None
            for name in sorted(shards):
                if not (folder / name).is_file():
                    raise DataError(folder / name, f"missing: {path.name} lists it")
                _check_safetensors(folder / name)
        elif path.suffix == ".safetensors":
            _check_safetensors(path)


def refuse_pickled_weights(source, error: BaseException) -> None:
    """Raise a DataError naming `pytorch_model.bin` when `error` is torch's safe loader refusing it
    (it holds pickled objects other than tensors; nothing in it ran); else return."""
    text = str(error)
    if not isinstance(source, Path) or not re.search(r"(?i)weights.only|unpickl|unsupported global", text):
        return
    path = source / "pytorch_model.bin"
    found = re.search(r"GLOBAL [\w.]+", text)
    raise DataError(
        path,
        "refused: pickled weights holding objects other than tensors"
        + (f" ({found.group(0)})" if found else "")
        + "; nothing in it ran. Load only weights you trust, converted to model.safetensors",
    ) from None


def _check_safetensors(path: Path) -> None:
    """A safetensors file is an 8-byte header length, a JSON header of tensor offsets, then the data:
    a file shorter than its header says was cut short (an interrupted copy or download)."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(8)
        header_length = int.from_bytes(head, "little") if len(head) == 8 else -1
        if header_length < 0 or 8 + header_length > size:
            raise DataError(
                path, f"truncated or not a safetensors file ({size} bytes); copy or save the model again"
            )
        try:
            header = json.loads(handle.read(header_length))
            data_end = max(
                (int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"), default=0
            )
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            raise DataError(
                path, "not a safetensors file (unreadable header); copy or save the model again"
            ) from None
    needed = 8 + header_length + data_end
    if size < needed:
        raise DataError(
            path, f"truncated: {size} bytes where its header needs {needed}; copy or save the model again"
        )


_LENGTH_NOTICES: set[tuple[int, int]] = set()


def position_limit(model) -> int | None:
    """The most tokens `model`'s position table holds (None: no table, e.g. rotary positions).
    RoBERTa-style models number positions from padding_idx + 1, so two slots are not usable."""
    config = getattr(model, "config", None)
    limit = getattr(config, "max_position_embeddings", None)
    if not isinstance(limit, int) or limit <= 0:
        return None
    if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert", "xlm-roberta-xl"):
        limit -= int(getattr(config, "pad_token_id", 1) or 1) + 1
    return limit


def capped_length(model, max_length: int) -> int:
    """`max_length`, at most the model's position table: a longer one would fail inside the model
    with a tensor-size error. Said once on stderr per (asked, limit)."""
    limit = position_limit(model)
    if limit is None or max_length <= limit:
        return int(max_length)
    if (max_length, limit) not in _LENGTH_NOTICES:
        _LENGTH_NOTICES.add((max_length, limit))
        print(
            f"note: max length {max_length} is more than the model's position table holds ({limit} tokens); "
            f"using {limit}",
            file=sys.stderr,
        )
    return limit


def _model_source(path: str | os.PathLike | None) -> Path | str:
    """Where `path` points (`locate_model`); a local folder is checked before `transformers` reads it."""
    source = locate_model(path)
    if isinstance(source, Path) and not (source / "config.json").exists():
        raise FileNotFoundError(
            f"{source}: not a model folder (no config.json). Pass a folder saved by "
            "`contriever`, `transformers` or sentence-transformers."
        )
    if isinstance(source, Path):
        verify_manifest(source, required=False)  # folders we saved list their sizes; others have none
        check_model_folder(source)
    return source


def _load_transformer(source: Path | str):
    """`(model, tokenizer)` from a folder or Hub id, without the pooler (where the architecture has
    one) and never running code shipped in the folder (`auto_map` + modeling_*.py)."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # the unused-pooler load report is noise for a retriever
    hf_logging.disable_progress_bar()
    try:
        safe = {"trust_remote_code": False}
        try:
            try:
                model = from_pretrained(AutoModel.from_pretrained, source, add_pooling_layer=False, **safe)
            except TypeError:  # architectures without a pooler take no add_pooling_layer argument
                model = from_pretrained(AutoModel.from_pretrained, source, **safe)
        except (pickle.UnpicklingError, OSError, RuntimeError) as error:
            refuse_pickled_weights(source, error)
            raise
        tokenizer = from_pretrained(AutoTokenizer.from_pretrained, source, **safe)
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    return model, tokenizer


class Encoder(torch.nn.Module):
    """A transformer plus pooling: `encoder(input_ids, attention_mask) -> [batch, dim]` vectors."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        pooling: str = "mean",
        normalize: bool = False,
        max_length: int = DEFAULT_MAX_LENGTH,
        *,
        lowercase: bool = False,
        normalize_text: bool = False,
        prompts: dict[str, str] | None = None,
    ):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; choose one of {POOLINGS}")
        self.model = model
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.normalize = normalize
        self.max_length = capped_length(model, max_length)
        # Text options of the paper's code, applied to every text before tokenization (`tokenize`):
        # `normalize_text` (its character table, `contriever.data.normalize`), then lowercasing.
        self.lowercase = lowercase
        self.normalize_text = normalize_text
        # Text put before queries / passages (sentence-transformers' `prompts`, e.g. E5's `query: `):
        # `{"query": ..., "passage": ...}`, either may be absent. Part of the model's settings.
        self.prompts = {name: text for name, text in (prompts or {}).items() if text}

    # ----- construction -------------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        path: str | os.PathLike | None = None,
        *,
        pooling: str | None = None,
        normalize: bool | None = None,
        max_length: int | None = None,
        device: str | torch.device | None = None,
        text: TextOptions | None = None,
    ) -> Encoder:
        """Load a local model folder, a Hugging Face Hub id, or the default model (`path` None or "default").

        Pooling, normalization and max length come from the folder's sentence-transformers files when
        it has them, else Contriever's recipe (mean, unnormalized, 512); arguments override both.
        The text options come from the folder too (`do_lower_case` in `sentence_bert_config.json`,
        `contriever_normalize_text` in `config.json`; both off when absent), and `text` (a
        `TextOptions`) overrides them where it sets them.
        So do the prompts (`prompts` of `config_sentence_transformers.json`); `text.prompts`
        replace the folder's name by name (an empty string or None removes one), but a prompt that
        contradicts one the folder records is refused (`UsageError`) unless `text.force_prompts`.
        A name that is not a local folder and looks like a Hub id (`bert-base-uncased`,
        `facebook/contriever`) goes to `transformers` (its cache, then the Hub where the network
        allows); a mistyped local path fails at once. See `contriever.model.locate`.
        """
        text = text or TextOptions()
        source = _model_source(path)
        model, tokenizer = _load_transformer(source)
        if isinstance(source, Path):
            settings = read_sentence_transformers_settings(source)
        else:
            settings = hub_sentence_transformers_settings(source)
        chosen_prompts = merge_prompts(
            settings.get("prompts", {}), text.prompts, text.force_prompts, str(source)
        )
        encoder = cls(
            model,
            tokenizer,
            pooling=pooling or settings.get("pooling", "mean"),
            normalize=settings.get("normalize", False) if normalize is None else normalize,
            max_length=max_length or settings.get("max_length", DEFAULT_MAX_LENGTH),
            lowercase=settings.get("lowercase", False) if text.lowercase is None else text.lowercase,
            normalize_text=(
                bool(getattr(model.config, NORMALIZE_TEXT_KEY, False))
                if text.normalize_text is None
                else text.normalize_text
            ),
            prompts=chosen_prompts,
        )
        encoder.eval()
        if device is not None:
            encoder.to(device)
        return encoder

    @classmethod
    def from_scratch(
        cls,
        tokenizer_path: str | os.PathLike | None = None,
        *,
        pooling: str = "mean",
        normalize: bool = False,
        max_length: int = DEFAULT_MAX_LENGTH,
        seed: int | None = None,
        **bert_config,
    ) -> Encoder:
        """A randomly initialised BERT with a given tokenizer's vocabulary (default model's if None).

        `bert_config` sets `transformers.BertConfig` fields, e.g. hidden_size=256, num_hidden_layers=4.
        """
        from transformers import BertConfig, BertModel

        tokenizer = load_tokenizer(tokenizer_path)
        config = BertConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **bert_config)
        if seed is not None:
            torch.manual_seed(seed)
        model = BertModel(config, add_pooling_layer=False)
        return cls(model, tokenizer, pooling=pooling, normalize=normalize, max_length=max_length)

    def save(self, path: str | os.PathLike) -> Path:
        """Write a folder that loads in transformers, sentence-transformers and `Encoder.load`.

        Written to a temporary folder beside the target, `manifest.json` (each file's size) last, and
        renamed into place, so an interrupted save or a full disk never leaves a half-written model
        where a good one was (a full disk raises `contriever.io.DiskFullError`).
        """
        target = Path(path)
        if self.normalize_text:  # saved in config.json, which transformers keeps as an attribute
            setattr(self.model.config, NORMALIZE_TEXT_KEY, True)
        elif hasattr(self.model.config, NORMALIZE_TEXT_KEY):
            delattr(self.model.config, NORMALIZE_TEXT_KEY)
        weights = sum(t.nelement() * t.element_size() for t in self.model.state_dict().values())
        with atomic_folder(target, size_hint=weights) as staging:
            self.model.save_pretrained(staging, safe_serialization=True)
            self.tokenizer.save_pretrained(staging)
            modules = [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            ]
            if self.normalize:
                modules.append(
                    {
                        "idx": 2,
                        "name": "2",
                        "path": "2_Normalize",
                        "type": "sentence_transformers.models.Normalize",
                    }
                )
                (staging / "2_Normalize").mkdir()
            (staging / "modules.json").write_text(json.dumps(modules, indent=2))
            (staging / "1_Pooling").mkdir()
            pooling_config = {
                "word_embedding_dimension": self.dim,
                "pooling_mode_cls_token": self.pooling == "cls",
                "pooling_mode_mean_tokens": self.pooling == "mean",
                "pooling_mode_max_tokens": False,
                "pooling_mode_mean_sqrt_len_tokens": False,
                "include_prompt": True,
            }
            (staging / "1_Pooling" / "config.json").write_text(json.dumps(pooling_config, indent=2))
            (staging / "sentence_bert_config.json").write_text(
                json.dumps({"max_seq_length": self.max_length, "do_lower_case": self.lowercase}, indent=2)
            )
            similarity = "cosine" if self.normalize else "dot"
            st_config = {"similarity_fn_name": similarity}
            if self.prompts:
                st_config.update({"prompts": dict(self.prompts), "default_prompt_name": None})
            (staging / "config_sentence_transformers.json").write_text(json.dumps(st_config, indent=2))
        return target

    # ----- the module -----------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Token ids `[batch, length]` to pooled vectors `[batch, dim]` (fp32).

        Inference on a CPU with a BERT-family model skips the padding (`contriever.model.packed`)."""
        if packed.applies(self.model, input_ids):
            hidden, rows = packed.packed_forward(self.model, input_ids, attention_mask)
            return packed.pool_packed(hidden, rows, input_ids.shape[0], self.pooling, self.normalize)
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return pool(hidden, attention_mask, self.pooling, self.normalize)

    # ----- inference -----------------------------------------------------------------------------
    def prompt(self, name: str | None) -> str:
        """The text put before a `name` ("query" or "passage") text: "" when the model has none."""
        if not name:
            return ""
        for key in PROMPT_ALIASES.get(name, (name,)):
            if self.prompts.get(key):
                return self.prompts[key]
        return ""

    def prompt_token_ids(self) -> dict[str, list[int]]:
        """Each prompt's token ids alone (no special tokens; trailing spaces dropped, since in
        `prompt + text` the space joins the next word): pretraining puts them into token views."""
        out = {}
        for name in PROMPT_NAMES:
            text = self.prompt(name).rstrip()
            if text:
                out[name] = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return out

    def tokenize(
        self, texts: Sequence[str], max_length: int | None = None, *, prompt_name: str | None = None
    ) -> list[list[int]]:
        """Token ids with the model's special tokens, truncated, unpadded (after the text options).

        `prompt_name` ("query" / "passage") puts that prompt of the model before each text, as
        sentence-transformers does (the prompt's tokens are pooled too).
        """
        prefix = self.prompt(prompt_name)
        texts = [prefix + t for t in texts] if prefix else list(texts)
        if self.lowercase or self.normalize_text:
            texts = [
                transform_text(t, lowercase=self.lowercase, normalize=self.normalize_text) for t in texts
            ]
        return self.tokenizer(
            texts,
            add_special_tokens=True,
            truncation=True,
            max_length=capped_length(self.model, max_length or self.max_length),
            return_attention_mask=False,
            return_token_type_ids=False,
        )["input_ids"]

    def set_dropout(self, p: float | None, attention: float | None = None) -> None:
        """Set dropout to probability `p` everywhere and to `attention` (default `p`) on attention weights.

        The saved config carries both, so a reloaded model trains the same way. None leaves a kind as it is.
        """
        attention = p if attention is None else attention
        for name, module in self.named_modules():
            if isinstance(module, torch.nn.Dropout):
                # BERT-style models name the attention-probability dropout `attention.self.dropout`.
                value = attention if ".attention.self" in f".{name}" else p
                if value is not None:
                    module.p = value
        for name, value in (("hidden_dropout_prob", p), ("attention_probs_dropout_prob", attention)):
            if value is not None and hasattr(self.model.config, name):
                setattr(self.model.config, name, value)

    def collate(
        self, sequences: Sequence[Sequence[int]], multiple: int = 1, rows: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-pad token id lists with this tokenizer's pad id: (input_ids, attention_mask), as long
        as the longest list rounded up to `multiple` (at most the model's position table), and at
        least `rows` rows (copies of the first list, whose outputs the caller drops)."""
        return pad_batch(
            sequences, self.tokenizer.pad_token_id, self.padded_length(sequences, multiple), rows
        )

    def padded_length(self, sequences: Sequence[Sequence[int]], multiple: int = 1) -> int:
        """The length `collate` pads `sequences` to: the longest rounded up to `multiple`, at most the
        model's position table (never shorter than the longest)."""
        from contriever.model.batching import round_up

        longest = max((len(s) for s in sequences), default=0)
        rounded = round_up(longest, multiple)
        limit = position_limit(self.model)
        if limit is not None:
            rounded = min(rounded, limit)
        return max(longest, rounded)

    @torch.inference_mode()
    def encode(
        self,
        texts: Iterable[str],
        batch_size: int | None = None,
        *,
        precision: str = "auto",
        show_progress: bool = True,
        desc: str = "encoding",
        prompt_name: str | None = None,
        token_budget: int | None = None,
        on_batch: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """Vectors `[n, dim]` (float32) for `texts`, in input order.

        Texts are tokenized in blocks and each block is sorted by length, so a batch pads to nearly its
        own length; results are put back in input order. Batches hold `batch_size` texts when it is
        given, else as many as fit in `token_budget` padded tokens (default: the budget measured for
        this device, `contriever.model.batching`), which bounds a batch's memory whatever the lengths.
        Each text is cut to the encoder's `max_length` tokens. `on_batch(n)` is called after each
        forward pass of n texts (a caller's own progress bar).
        """
        from contriever.model.batching import token_batches
        from contriever.model.batching import token_budget as device_budget

        texts = list(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        was_training = self.training
        self.eval()
        device = self.device
        budget = None if batch_size else (token_budget or device_budget(device))
        multiple = shape_multiple(device, precision)
        block = 64 * batch_size if batch_size else 8192  # texts tokenized and sorted together
        progress = tqdm(total=len(texts), desc=desc, unit="text", disable=not show_progress, smoothing=0.05)
        try:
            # The transformers forward: packed, a corpus encoded 5-10% faster but resident memory crept
            # shard after shard (+9 to +41 MiB over 10 shards of 100-word passages against +3;
            # benchmarks/README.md, "Packed inference"), and flat memory matters more here.
            with autocast_context(device, precision), packed.disabled():
                for start in range(0, len(texts), block):
                    sequences = self.tokenize(texts[start : start + block], prompt_name=prompt_name)
                    if batch_size:
                        order = np.argsort([-len(s) for s in sequences], kind="stable")
                        batches = [order[b : b + batch_size] for b in range(0, len(order), batch_size)]
                    else:
                        batches = token_batches([len(s) for s in sequences], budget, multiple=multiple)
                    for rows in batches:
                        batch = [sequences[i] for i in rows]
                        full = None  # a block's last batch filled to its full shape where shapes cost
                        if multiple > 1:
                            full = batch_size or max(1, budget // self.padded_length(batch, multiple))
                        ids, mask = self.collate(batch, multiple, full)
                        vectors = self(ids.to(device, non_blocking=True), mask.to(device, non_blocking=True))
                        out[start + rows] = vectors[: len(rows)].float().cpu().numpy()
                        progress.update(len(rows))
                        if on_batch is not None:
                            on_batch(len(rows))
        finally:
            progress.close()
            self.train(was_training)
        return out

    def encode_queries(self, queries: Iterable[str], batch_size: int | None = None, **kwargs) -> np.ndarray:
        kwargs.setdefault("desc", "encoding queries")
        kwargs.setdefault("prompt_name", "query")
        return self.encode(queries, batch_size, **kwargs)

    def encode_corpus(
        self, docs: Iterable[dict | str], batch_size: int | None = None, **kwargs
    ) -> np.ndarray:
        """Documents as dicts with `title` and `text` (or plain strings): `title + " " + text`."""
        kwargs.setdefault("desc", "encoding corpus")
        kwargs.setdefault("prompt_name", "passage")
        return self.encode((document_text(d) for d in docs), batch_size, **kwargs)
