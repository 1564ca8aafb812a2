"""Typed training configuration: TOML (or JSON) files plus `--set section.key=value` overrides.

Every option the trainer would ignore is an error rather than a silent no-op (a silently ignored
option once cost the paper's own code its published queue size):

* an unknown or misspelled key, with the closest valid dotted name suggested (`loss.kind`);
* a value of the wrong type, outside its `Literal` choices or outside its range (`Range`);
* a key that does not apply to the task, the loss or the optimizer chosen (`APPLIES_TO`), e.g.
  `loss.queue_size` with the in-batch loss or `data.folders` when fine-tuning. One exception: a
  key from a config file that a `--set` made inapplicable (`--set loss.kind=inbatch` on a MoCo
  preset leaves its `loss.queue_size` behind) is dropped with a warning naming it, so a preset can be
  varied from the command line without writing a new file.

Defaults follow the task: pretraining starts from the paper's pretraining settings (MoCo, 500k
updates of 2,048 pairs), fine-tuning from its fine-tuning ones (`FINETUNE_DEFAULTS`).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import math
import tomllib
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from contriever.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Range:
    """The values a number may take, written as an interval: `Range("(0, inf)")`, `Range("[0, 1)")`."""

    interval: str

    def contains(self, value: float) -> bool:
        low, high = (float(part.strip(" [()]")) for part in self.interval.split(","))
        above = value > low if self.interval[0] == "(" else value >= low
        below = value < high if self.interval[-1] == ")" else value <= high
        return above and below


Positive = Annotated[float, Range("(0, inf)")]
NonNegative = Annotated[float, Range("[0, inf)")]
Probability = Annotated[float, Range("[0, 1]")]
Fraction = Annotated[float, Range("[0, 1)")]
Count = Annotated[int, Range("[1, inf)")]  # at least one
CountOrZero = Annotated[int, Range("[0, inf)")]  # 0 switches the feature off


@dataclass
class ModelConfig:
    """The encoder to train: a pretrained folder (`init="pretrained"`) or a random BERT (`"scratch"`)."""

    init: Literal["pretrained", "scratch"] = "pretrained"
    # Model folder; for "scratch", where the tokenizer comes from. None: the default model.
    path: str | None = None
    pooling: Literal["mean", "cls"] = "mean"
    normalize: bool = False
    max_length: Count = 512  # evaluation truncation saved with the model
    # Text options of the paper's code, applied to every text the encoder tokenizes (fine-tuning
    # queries and documents, evaluation) and saved with the model; None: the model folder's own (off).
    # The paper's code used both for mContriever. Pretraining text is transformed by `prepare`.
    lowercase: bool | None = None
    normalize_text: bool | None = None
    # Text put before queries / passages (sentence-transformers' `prompts`; E5, `--model multilingual`:
    # "query: " and "passage: "). None: the model folder's own; "": none. Applied to fine-tuning
    # queries and documents, to pretraining views (query view / key view, as token ids after the
    # first special token) and to evaluation, and saved with the trained model. A prompt that differs
    # from one the model records is refused unless force_prompts.
    query_prompt: str | None = None
    passage_prompt: str | None = None
    force_prompts: bool = False
    # Word embeddings kept as loaded. For adapting a multilingual model on text in a few languages:
    # the rows of languages absent from the text keep their place beside the trained ones (what the
    # cross-lingual alignment rests on), and the optimizer skips most of the parameters (multilingual-e5-
    # small: 96M of its 118M are the 250,002-piece vocabulary's embeddings).
    freeze_embeddings: bool = False
    dropout: Fraction | None = None  # None: the model's own (BERT: 0.1); sets hidden and attention dropout
    # Attention dropout alone (overrides `dropout` there). 0 lets PyTorch use its fused attention
    # kernel in training; on a CPU that takes a third off the step time (benchmarks/README.md).
    attention_dropout: Fraction | None = None
    # The architecture of init="scratch" (transformers.BertConfig fields).
    hidden_size: Count = 256
    num_hidden_layers: Count = 4
    num_attention_heads: Count = 4
    intermediate_size: Count = 1024
    max_position_embeddings: Count = 512


@dataclass
class PretrainDataConfig:
    """Unsupervised pairs from prepared token streams (`contriever prepare`)."""

    folders: list[str] = field(default_factory=list)
    chunk_length: Count = 256
    within_documents: bool = False
    mix_exponent: float = 0.0  # source weight ~ size**exponent: 0 = 50/50 (paper), 1 = uniform over union
    mix_unit: Literal["chunk", "batch"] = "chunk"  # each chunk picks its source, or each batch
    min_doc_length: Count = 8  # within_documents: shorter documents are never sampled
    max_view_length: CountOrZero = 0  # cap on each view, special tokens included; 0: no cap
    method: Literal["crop", "ict"] = "crop"  # independent cropping or the inverse cloze task
    ratio_min: Probability = 0.05
    ratio_max: Probability = 0.5
    ict_keep_span_prob: Probability = 0.1
    augmentation: Literal["none", "delete", "replace", "mask", "shuffle"] = "delete"
    augmentation_prob: Probability = 0.1


@dataclass
class FinetuneDataConfig:
    """Labelled pairs: a BEIR folder (train qrels), a DPR JSON/JSONL file or a {query, positive, negatives} JSONL."""

    train: str | None = None
    # BEIR folder for random negatives and dev evaluation (default: `train` if a folder).
    corpus: str | None = None
    split: str = "train"
    dev_fraction: Fraction = 0.1  # held out from train for early stopping when the dataset has no dev split
    dev_split: str | None = None  # use this qrels split as dev instead of holding out
    # Dev retrieval over this many corpus documents (every dev positive, then a seeded random sample);
    # 0: the whole corpus. Cheaper evaluations for early stopping; the test split is always full.
    dev_corpus_size: CountOrZero = 0
    n_negatives: CountOrZero = 1  # extra negatives per query besides the in-batch ones
    # Chance each extra negative is a mined one. None: 0, except in round 2 of `contriever finetune`
    # (--rounds 2), where it is the paper's 0.1; a value set here is used as it is, 0 included.
    hard_negative_prob: Probability | None = None
    # Mined hard negatives are drawn after skipping this many from the top of each query's mined list
    # (the official code's negative_hard_min_idx): top-ranked "negatives" are often unlabelled positives.
    hard_negative_min_index: CountOrZero = 0
    query_max_length: Count = 64
    doc_max_length: Count = 256


@dataclass
class LossConfig:
    kind: Literal["moco", "inbatch"] = "moco"
    temperature: Positive = 0.05  # = scale 20 in sentence-transformers' MultipleNegativesRankingLoss
    label_smoothing: Fraction = 0.0
    queue_size: Count = 131072
    momentum: Probability = 0.9995
    key_encoder_dropout: bool = False  # the official code's key encoder always has dropout: true there
    # "empty": the queue fills up, only filled slots are negatives; "random": unit vectors, all counted
    # (the official code's start)
    queue_init: Literal["empty", "random"] = "empty"
    gradcache_chunk: CountOrZero = 0  # >0: in-batch loss with gradient caching, chunks of this many texts


@dataclass
class OptimConfig:
    name: Literal["adamw", "sam", "asam"] = "adamw"  # SAM/ASAM wrap AdamW
    lr: NonNegative = 5e-5
    betas: tuple[Fraction, Fraction] = (0.9, 0.98)
    eps: Positive = 1e-6
    weight_decay: NonNegative = 0.01
    rho: NonNegative = 0.05  # SAM/ASAM neighbourhood size (ASAM usually 0.5 or more)
    eta: NonNegative = 0.01  # ASAM's T_w = |w| + eta
    scheduler: Literal["linear", "cosine", "constant"] = "linear"
    warmup_steps: CountOrZero = 20000
    final_lr_ratio: Probability = 0.0
    clip_norm: NonNegative = 1.0  # 0 disables clipping (the official code does not clip)
    # Weight decay on biases and LayerNorm too (the official code decays every parameter); default: spared.
    decay_biases_and_norms: bool = False


@dataclass
class TrainConfig:
    steps: Count = 500000  # optimizer updates
    batch_size: Count = 2048  # global: split evenly over processes
    grad_accum: Count = 1
    seed: int = 0
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"  # auto: bf16 where the hardware is fast
    log_every: Count = 10
    save_every: Count = 1000  # checkpoint every N updates (and at the end)
    eval_every: CountOrZero = 0  # 0: no periodic evaluation
    early_stopping_patience: CountOrZero = 0  # evaluations without improvement before stopping (0: never)
    max_minutes: NonNegative = (
        0.0  # stop (with a checkpoint and a saved model) after this wall time; 0: no limit
    )


@dataclass
class EvalConfig:
    data: str | None = (
        None  # pretraining: a BEIR folder watched during training (fine-tuning uses its dev set)
    )
    split: str = "test"
    metric: Literal["ndcg@10", "recall@100", "mrr@10"] = "ndcg@10"
    batch_size: Count = 128
    max_length: Count = 256


@dataclass
class Config:
    task: Literal["pretrain", "finetune"] = "pretrain"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: PretrainDataConfig = field(default_factory=PretrainDataConfig)
    finetune: FinetuneDataConfig = field(default_factory=FinetuneDataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# The paper's fine-tuning (appendix A: in-batch negatives, lr 1e-5, batch 1,024, 20k updates), in
# place of the pretraining defaults above. The paper states no warmup for it; dev evaluation every
# 1,000 updates keeps the best model in `best/`.
FINETUNE_DEFAULTS = {
    "loss": {"kind": "inbatch"},
    "optim": {"lr": 1e-5, "warmup_steps": 1000},
    "train": {"steps": 20000, "batch_size": 1024, "eval_every": 1000},
}

# Keys read only under some settings: (key or "section.", when it is read, why otherwise not).
APPLIES_TO: list[tuple[str, Callable[[Config], bool], str]] = [
    ("data.", lambda c: c.task == "pretrain", "fine-tuning reads its examples from finetune.*"),
    ("finetune.", lambda c: c.task == "finetune", "pretraining reads token streams from data.*"),
    ("eval.data", lambda c: c.task == "pretrain", "fine-tuning evaluates on its own dev set"),
    ("eval.split", lambda c: c.task == "pretrain", "fine-tuning evaluates on its own dev set"),
    ("loss.queue_size", lambda c: c.loss.kind == "moco", "only MoCo keeps a queue"),
    ("loss.momentum", lambda c: c.loss.kind == "moco", "only MoCo has a momentum key encoder"),
    ("loss.key_encoder_dropout", lambda c: c.loss.kind == "moco", "only MoCo has a key encoder"),
    ("loss.queue_init", lambda c: c.loss.kind == "moco", "only MoCo keeps a queue"),
    ("loss.gradcache_chunk", lambda c: c.loss.kind == "inbatch", "MoCo's keys carry no gradient to cache"),
    ("optim.rho", lambda c: c.optim.name in ("sam", "asam"), "only SAM and ASAM have a neighbourhood"),
    ("optim.eta", lambda c: c.optim.name == "asam", "only ASAM scales its neighbourhood by |w| + eta"),
    *[
        (f"model.{name}", lambda c: c.model.init == "scratch", "a pretrained model has its own architecture")
        for name in (
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
        )
    ],
]


# ----- reading ------------------------------------------------------------------------------------------
def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a config file and apply `section.key=value` overrides; every key is checked."""
    file_values = read_config_file(path) if path else {}
    values = json.loads(json.dumps(file_values))  # a deep copy the overrides may change
    for override in overrides or []:
        if "=" not in override:
            raise ConfigError(f"--set {override!r}: expected section.key=value")
        dotted, text = override.split("=", 1)
        node = values
        parts = dotted.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {override!r}: {part!r} is a setting, not a section")
        node[parts[-1]] = _parse_value(text.strip())
    given = _build(Config, values, "")  # checks every key and value the user gave
    if given.task == "finetune":
        values = _merge(FINETUNE_DEFAULTS, values)
    config = _build(Config, values, "")
    if overrides:
        set_keys = {override.split("=", 1)[0].strip() for override in overrides}
        values, config = _drop_superseded(values, config, file_values, set_keys)
    check_applies(config, _dotted_keys(values, ""))
    validate(config)
    return config


def _drop_superseded(
    values: dict, config: Config, file_values: dict, set_keys: set[str]
) -> tuple[dict, Config]:
    """Remove the file's keys that applied under the file alone but not after the `--set` overrides."""
    try:
        file_config = _build(Config, file_values, "")
        if file_config.task == "finetune":
            file_config = _build(Config, _merge(FINETUNE_DEFAULTS, file_values), "")
    except ConfigError:  # the file alone is invalid (an override mends it): nothing to compare with
        return values, config
    file_keys = _dotted_keys(file_values, "")
    superseded = [
        (key, why)
        for key, why in inapplicable(config, _dotted_keys(values, ""))
        if key in file_keys - set_keys and not any(key == k for k, _ in inapplicable(file_config, {key}))
    ]
    for key, why in superseded:
        log.warning("%s from the config file is dropped: %s", key, why)
        section, _, name = key.rpartition(".")
        node = values
        for part in section.split(".") if section else []:
            node = node[part]
        del node[name]
    return (values, _build(Config, values, "")) if superseded else (values, config)


def read_config_file(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """The settings of a TOML (or JSON) file, merged over those of the file its `base` names."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such config file")
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder, not a config file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not a text file (byte {error.start} is not UTF-8)") from None
    try:
        values = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"{path}: {error}") from error
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a table of settings, got {type(values).__name__}")
    # A config may start from another: `base = "other.toml"` (relative to this file).
    if "base" in values:
        base = values.pop("base")
        if not isinstance(base, str):
            raise ConfigError(f"{path}: base must be a file name (a string), got {base!r}")
        base_path = (path.parent / base).resolve()
        if base_path in _seen or base_path == path.resolve():
            chain = " -> ".join(str(p) for p in (*_seen, path.resolve(), base_path))
            raise ConfigError(f"{path}: base files form a cycle: {chain}")
        values = _merge(read_config_file(base_path, (*_seen, path.resolve())), values)
    return values


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


def _dotted_keys(values: dict, where: str) -> set[str]:
    keys = set()
    for key, value in values.items():
        path = f"{where}.{key}" if where else key
        keys |= _dotted_keys(value, path) if isinstance(value, dict) else {path}
    return keys


# ----- checking -----------------------------------------------------------------------------------------
def _all_keys(cls=Config, where: str = "") -> list[str]:
    """Every valid dotted key, e.g. `loss.kind`."""
    keys = []
    for f in dataclasses.fields(cls):
        path = f"{where}.{f.name}" if where else f.name
        kind = typing.get_type_hints(cls)[f.name]
        keys += _all_keys(kind, path) if dataclasses.is_dataclass(kind) else [path]
    return keys


def _suggest(path: str) -> str:
    """`; did you mean 'loss.queue_size'?` for a misspelled or misplaced key."""
    sections = [f.name for f in dataclasses.fields(Config) if f.name != "task"]
    keys = _all_keys() + sections
    leaf = path.rsplit(".", 1)[-1]
    same_leaf = [key for key in keys if key.rsplit(".", 1)[-1] == leaf]
    close = same_leaf or difflib.get_close_matches(path, keys, n=1, cutoff=0.6)
    if not close:
        leaves = {key.rsplit(".", 1)[-1]: key for key in keys}
        close = [leaves[name] for name in difflib.get_close_matches(leaf, list(leaves), n=1)]
    return f"; did you mean {' or '.join(repr(k) for k in close)}?" if close else ""


def _coerce(value, kind, where: str):
    """Check (and gently convert) one value against its annotated type, choices and range."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is Annotated:
        value = _coerce(value, args[0], where)
        for bound in args[1:]:
            if isinstance(bound, Range) and not bound.contains(value):
                raise ConfigError(f"{where} must be in {bound.interval}, got {value!r}")
        return value
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        if value is None and type(None) in args:
            return None
        return _coerce(value, next(a for a in args if a is not type(None)), where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        items = [_coerce(v, args[i if origin is tuple else 0], f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if kind is bool and not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if kind is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if kind is str and not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def _build(cls, values: dict, where: str):
    if not isinstance(values, dict):
        raise ConfigError(f"{where or 'config'}: expected a table of settings, got {values!r}")
    hints = typing.get_type_hints(cls, include_extras=True)
    kwargs = {}
    for key, value in values.items():
        path = f"{where}.{key}" if where else key
        if key not in hints:
            raise ConfigError(f"unknown config key {path!r}{_suggest(path)}")
        kind = hints[key]
        kwargs[key] = (
            _build(kind, value, path) if dataclasses.is_dataclass(kind) else _coerce(value, kind, path)
        )
    return cls(**kwargs)


def inapplicable(config: Config, given: set[str]) -> list[tuple[str, str]]:
    """The keys among `given` that the chosen task, loss or optimizer would ignore, each with why."""
    found = []
    for key in sorted(given):
        for pattern, applies, why in APPLIES_TO:
            if (key == pattern or (pattern.endswith(".") and key.startswith(pattern))) and not applies(
                config
            ):
                found.append((key, why))
                break
    return found


def check_applies(config: Config, given: set[str]) -> None:
    """A key the user set that the chosen task, loss or optimizer would ignore is an error."""
    for key, why in inapplicable(config, given):
        raise ConfigError(f"{key} does not apply here and would be ignored: {why}")


def validate(config: Config) -> None:
    """Cross-field checks that no single type can express."""
    if not 0 < config.data.ratio_min <= config.data.ratio_max <= 1:
        raise ConfigError("data.ratio_min and data.ratio_max must satisfy 0 < ratio_min <= ratio_max <= 1")
    if config.train.batch_size % config.train.grad_accum:
        raise ConfigError("train.batch_size must be a multiple of train.grad_accum")
    if config.task == "finetune" and config.loss.kind != "inbatch":
        raise ConfigError('fine-tuning uses in-batch negatives: set loss.kind = "inbatch"')
    if config.task == "pretrain" and config.optim.name != "adamw" and config.loss.kind == "moco":
        raise ConfigError("SAM/ASAM with MoCo is not supported: the queue would be updated twice per step")
