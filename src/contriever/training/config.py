"""Typed training configuration: TOML (or JSON) files plus `--set section.key=value` overrides.

An unknown or misspelled key is an error, with the closest valid name suggested: a silently ignored
option once cost the paper's own code its published queue size.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

from contriever.errors import ConfigError


@dataclass
class ModelConfig:
    """The encoder to train: a pretrained folder (`init="pretrained"`) or a random BERT (`"scratch"`)."""

    init: str = "pretrained"  # "pretrained" | "scratch"
    path: str | None = (
        None  # model folder; for "scratch", where the tokenizer comes from (None: default model)
    )
    pooling: str = "mean"
    normalize: bool = False
    max_length: int = 512  # evaluation truncation saved with the model
    dropout: float | None = None  # None: the model's own (BERT: 0.1); sets hidden and attention dropout
    # Attention dropout alone (overrides `dropout` there). 0 lets PyTorch use its fused attention
    # kernel in training; on a CPU that takes a third off the step time (benchmarks/README.md).
    attention_dropout: float | None = None
    # Used only by init="scratch" (transformers.BertConfig fields).
    hidden_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int = 1024
    max_position_embeddings: int = 512


@dataclass
class PretrainDataConfig:
    """Unsupervised pairs from prepared token streams (`contriever prepare`)."""

    folders: list[str] = field(default_factory=list)
    chunk_length: int = 256
    within_documents: bool = False
    mix_exponent: float = 0.0  # source weight ~ size**exponent: 0 = 50/50 (paper), 1 = uniform over union
    mix_unit: str = "chunk"  # "chunk": each chunk picks its source | "batch": each batch from one source
    min_doc_length: int = 8  # within_documents: shorter documents are never sampled
    max_view_length: int = 0  # cap on each view, special tokens included; 0: no cap
    method: str = "crop"  # "crop" (independent cropping) | "ict" (inverse cloze task)
    ratio_min: float = 0.05
    ratio_max: float = 0.5
    ict_keep_span_prob: float = 0.1
    augmentation: str = "delete"  # "none" | "delete" | "replace" | "mask" | "shuffle"
    augmentation_prob: float = 0.1


@dataclass
class FinetuneDataConfig:
    """Labelled pairs: a BEIR folder (train qrels), a DPR JSON/JSONL file or a {query, positive, negatives} JSONL."""

    train: str | None = None
    corpus: str | None = (
        None  # BEIR folder for random negatives and dev evaluation (default: `train` if a folder)
    )
    split: str = "train"
    dev_fraction: float = 0.1  # held out from train for early stopping when the dataset has no dev split
    dev_split: str | None = None  # use this qrels split as dev instead of holding out
    # Dev retrieval over this many corpus documents (every dev positive, then a seeded random sample);
    # 0: the whole corpus. Cheaper evaluations for early stopping; the test split is always full.
    dev_corpus_size: int = 0
    n_negatives: int = 1  # extra negatives per query besides the in-batch ones
    hard_negative_prob: float = 0.0  # chance each extra negative is a mined hard one (paper round 2: 0.1)
    # Mined hard negatives are drawn after skipping this many from the top of each query's mined list
    # (the official code's negative_hard_min_idx): top-ranked "negatives" are often unlabelled positives.
    hard_negative_min_index: int = 0
    query_max_length: int = 64
    doc_max_length: int = 256


@dataclass
class LossConfig:
    kind: str = "moco"  # "moco" | "inbatch"
    temperature: float = 0.05  # = scale 20 in sentence-transformers' MultipleNegativesRankingLoss
    label_smoothing: float = 0.0
    queue_size: int = 131072
    momentum: float = 0.9995
    key_encoder_dropout: bool = False
    gradcache_chunk: int = 0  # >0: in-batch loss with gradient caching, chunks of this many texts


@dataclass
class OptimConfig:
    name: str = "adamw"  # "adamw" | "sam" | "asam"
    lr: float = 5e-5
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    weight_decay: float = 0.01
    rho: float = 0.05  # SAM/ASAM neighbourhood size (ASAM usually 0.5 or more)
    eta: float = 0.01  # ASAM's T_w = |w| + eta
    scheduler: str = "linear"  # "linear" | "cosine" | "constant"
    warmup_steps: int = 20000
    final_lr_ratio: float = 0.0
    clip_norm: float = 1.0  # 0 disables clipping


@dataclass
class TrainConfig:
    steps: int = 500000  # optimizer updates
    batch_size: int = 2048  # global: split evenly over processes
    grad_accum: int = 1
    seed: int = 0
    precision: str = "auto"  # "auto" (bf16 where fast) | "bf16" | "fp16" | "fp32"
    log_every: int = 10
    save_every: int = 1000  # checkpoint every N updates (and at the end)
    eval_every: int = 0  # 0: no periodic evaluation
    early_stopping_patience: int = 0  # evaluations without improvement before stopping (0: never)
    max_minutes: float = 0.0  # stop (with a checkpoint and a saved model) after this wall time; 0: no limit


@dataclass
class EvalConfig:
    data: str | None = None  # BEIR folder evaluated during training (pretraining); dev split for fine-tuning
    split: str = "test"
    metric: str = "ndcg@10"
    batch_size: int = 128
    max_length: int = 256


@dataclass
class Config:
    task: str = "pretrain"  # "pretrain" | "finetune"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: PretrainDataConfig = field(default_factory=PretrainDataConfig)
    finetune: FinetuneDataConfig = field(default_factory=FinetuneDataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


CHOICES = {
    "task": ("pretrain", "finetune"),
    "model.init": ("pretrained", "scratch"),
    "model.pooling": ("mean", "cls"),
    "data.method": ("crop", "ict"),
    "data.mix_unit": ("chunk", "batch"),
    "data.augmentation": ("none", "delete", "replace", "mask", "shuffle"),
    "loss.kind": ("moco", "inbatch"),
    "optim.name": ("adamw", "sam", "asam"),
    "optim.scheduler": ("linear", "cosine", "constant"),
    "train.precision": ("auto", "bf16", "fp16", "fp32"),
}


def _coerce(value, kind, where: str):
    """Check (and gently convert) one value against its annotated type."""
    origin = typing.get_origin(kind)
    args = typing.get_args(kind)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        if value is None and type(None) in args:
            return None
        kind = next(a for a in args if a is not type(None))
        return _coerce(value, kind, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else typing.Any
        items = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        if origin is tuple and args and len(args) != len(items):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(items)}")
        return tuple(items) if origin is tuple else items
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def _build(cls, values: dict, where: str):
    if not isinstance(values, dict):
        raise ConfigError(f"{where or 'config'}: expected a table of settings, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        path = f"{where}.{key}" if where else key
        if key not in names:
            close = difflib.get_close_matches(key, sorted(names), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(sorted(names))}"
            raise ConfigError(f"unknown config key {path!r}{hint}")
        kind = hints[key]
        if dataclasses.is_dataclass(kind):
            kwargs[key] = _build(kind, value, path)
        else:
            kwargs[key] = _coerce(value, kind, path)
            if path in CHOICES and kwargs[key] not in CHOICES[path]:
                raise ConfigError(f"{path}: {kwargs[key]!r} is not one of {CHOICES[path]}")
    return cls(**kwargs)


def _parse_value(text: str):
    """A `--set` value: TOML literal syntax (numbers, true/false, "strings", [lists]); else a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_config_file(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such config file")
    text = path.read_text()
    try:
        if path.suffix == ".json":
            return json.loads(text)
        values = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"{path}: {error}") from error
    # A config may start from another: `base = "other.toml"` (relative to this file).
    if "base" in values:
        base = read_config_file(path.parent / values.pop("base"))
        values = _merge(base, values)
    return values


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a config file and apply `section.key=value` overrides; every key is checked."""
    values = read_config_file(path) if path else {}
    for override in overrides or []:
        if "=" not in override:
            raise ConfigError(f"--set {override!r}: expected section.key=value")
        dotted, text = override.split("=", 1)
        node = values
        parts = dotted.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = _parse_value(text.strip())
    config = _build(Config, values, "")
    validate(config)
    return config


def validate(config: Config) -> None:
    """Cross-field checks that no single type can express."""
    if not 0 < config.data.ratio_min <= config.data.ratio_max <= 1:
        raise ConfigError("data.ratio_min and data.ratio_max must satisfy 0 < ratio_min <= ratio_max <= 1")
    for name in ("dropout", "attention_dropout"):
        value = getattr(config.model, name)
        if value is not None and not 0.0 <= value < 1.0:
            raise ConfigError(f"model.{name} must be in [0, 1), got {value}")
    if config.finetune.hard_negative_min_index < 0:
        raise ConfigError("finetune.hard_negative_min_index must be 0 or more (mined entries skipped)")
    if config.finetune.dev_corpus_size < 0:
        raise ConfigError("finetune.dev_corpus_size must be 0 (the whole corpus) or a number of documents")
    if config.train.batch_size < 1 or config.train.steps < 1 or config.train.grad_accum < 1:
        raise ConfigError("train.batch_size, train.steps and train.grad_accum must be at least 1")
    if config.train.batch_size % config.train.grad_accum:
        raise ConfigError("train.batch_size must be a multiple of train.grad_accum")
    if config.loss.kind == "moco" and config.loss.gradcache_chunk:
        raise ConfigError(
            "loss.gradcache_chunk applies to the in-batch loss only (MoCo keys carry no gradient)"
        )
    if config.task == "finetune" and config.loss.kind != "inbatch":
        raise ConfigError('fine-tuning uses in-batch negatives: set loss.kind = "inbatch"')
    if config.task == "pretrain" and config.optim.name != "adamw" and config.loss.kind == "moco":
        raise ConfigError("SAM/ASAM with MoCo is not supported: the queue would be updated twice per step")
