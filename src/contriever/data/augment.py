"""Positive pairs from one chunk of text: two views (crop or inverse cloze), token noise, special tokens.

Every function is pure and takes its randomness from an explicit `np.random.Generator`, so a batch is
a function of the generator state (checkpointed by the trainer). Token arrays are int64 numpy arrays
of ids WITHOUT special tokens until `wrap_special_tokens`.

Views (paper section 3.2):
    random_crop     a contiguous span whose length is a fraction r ~ U(ratio_min, ratio_max) of the
                    chunk: max(1, floor(r * n)) tokens, at a uniform start. For "crop", two spans are
                    drawn independently and may overlap. Paper: ratios 0.05 to 0.5.
    inverse_cloze   a span (same length rule) is the query; the key is the rest of the chunk
                    (prefix + suffix), except with probability keep_span_prob (0.1) when the key is
                    the whole chunk, span included. If removing the span would leave nothing, the key
                    keeps it.

Token noise, applied to each view independently, each position selected with probability p
(paper: "delete", p = 0.1):
    delete   selected tokens are removed (at least one token is always kept)
    replace  selected tokens become a uniformly random id of the vocabulary, special ids excluded
    mask     selected tokens become the mask id ([MASK])
    shuffle  the selected tokens are permuted among the selected positions; the others stay put, so
             p = 1 is a full shuffle, small p a few local swaps, and the multiset never changes
    none     the view is unchanged

Each view is finally wrapped in the special tokens the tokenizer itself adds when it encodes a text
([CLS] ... [SEP] for BERT, <s> ... </s> for RoBERTa/XLM-R, none for a tokenizer that adds none), so
training views look like what evaluation encodes; truncated first to `max_view_length` tokens in all
when that is set. (The paper's code adds [CLS]/[SEP] only when the model id contains "bert-".)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

METHODS = ("crop", "ict")


def crop_length(n: int, rng: np.random.Generator, ratio_min: float, ratio_max: float) -> int:
    """max(1, floor(r * n)) with r ~ U(ratio_min, ratio_max), never more than n."""
    ratio = rng.uniform(ratio_min, ratio_max)
    return min(n, max(1, int(ratio * n)))


def random_crop(
    tokens: np.ndarray, rng: np.random.Generator, ratio_min: float = 0.05, ratio_max: float = 0.5
) -> np.ndarray:
    """One contiguous span of `tokens`, of a random fraction U(ratio_min, ratio_max) of its length."""
    tokens = np.asarray(tokens)
    if tokens.size == 0:
        raise ValueError("cannot crop an empty chunk")
    length = crop_length(tokens.size, rng, ratio_min, ratio_max)
    start = int(rng.integers(0, tokens.size - length + 1))
    return tokens[start : start + length].copy()


def inverse_cloze(
    tokens: np.ndarray,
    rng: np.random.Generator,
    ratio_min: float = 0.05,
    ratio_max: float = 0.5,
    keep_span_prob: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """(query, key): a random span and the chunk without it (with it, `keep_span_prob` of the time)."""
    tokens = np.asarray(tokens)
    if tokens.size == 0:
        raise ValueError("cannot cut a span from an empty chunk")
    length = crop_length(tokens.size, rng, ratio_min, ratio_max)
    start = int(rng.integers(0, tokens.size - length + 1))
    keep = rng.random() < keep_span_prob
    query = tokens[start : start + length].copy()
    if keep or length == tokens.size:
        return query, tokens.copy()
    return query, np.concatenate([tokens[:start], tokens[start + length :]])


# ----- token noise ----------------------------------------------------------------------------------
@lru_cache(maxsize=8)
def _replacement_ids(vocab_size: int, special_ids: tuple[int, ...]) -> np.ndarray:
    allowed = np.setdiff1d(np.arange(vocab_size, dtype=np.int64), np.asarray(special_ids, dtype=np.int64))
    if allowed.size == 0:
        raise ValueError("the vocabulary has no non-special token to replace with")
    return allowed


def delete_tokens(tokens: np.ndarray, p: float, rng: np.random.Generator, **_) -> np.ndarray:
    """Drop each token with probability p; if all would go, keep one at random."""
    keep = rng.random(tokens.size) >= p
    if not keep.any() and tokens.size:
        keep[rng.integers(tokens.size)] = True
    return tokens[keep]


def replace_tokens(
    tokens: np.ndarray,
    p: float,
    rng: np.random.Generator,
    *,
    vocab_size: int | None = None,
    special_ids: Sequence[int] = (),
    **_,
) -> np.ndarray:
    """Replace each token with probability p by a uniform random non-special id of the vocabulary."""
    if vocab_size is None:
        raise ValueError("replace needs vocab_size")
    allowed = _replacement_ids(int(vocab_size), tuple(sorted({int(i) for i in special_ids if i is not None})))
    out = tokens.copy()
    selected = rng.random(tokens.size) < p
    out[selected] = allowed[rng.integers(0, allowed.size, size=int(selected.sum()))]
    return out


def mask_tokens(
    tokens: np.ndarray, p: float, rng: np.random.Generator, *, mask_id: int | None = None, **_
) -> np.ndarray:
    """Replace each token with probability p by `mask_id`."""
    if mask_id is None:
        raise ValueError("mask needs a mask id: this tokenizer has no mask token")
    out = tokens.copy()
    out[rng.random(tokens.size) < p] = mask_id
    return out


def shuffle_tokens(tokens: np.ndarray, p: float, rng: np.random.Generator, **_) -> np.ndarray:
    """Select each position with probability p and permute the tokens among the selected positions."""
    out = tokens.copy()
    positions = np.flatnonzero(rng.random(tokens.size) < p)
    out[positions] = tokens[rng.permutation(positions)]
    return out


def no_augmentation(tokens: np.ndarray, p: float, rng: np.random.Generator, **_) -> np.ndarray:
    return tokens.copy()


AUGMENTATIONS: dict[str, Callable[..., np.ndarray]] = {
    "none": no_augmentation,
    "delete": delete_tokens,
    "replace": replace_tokens,
    "mask": mask_tokens,
    "shuffle": shuffle_tokens,
}


def apply_augmentation(
    tokens: np.ndarray,
    name: str,
    p: float,
    rng: np.random.Generator,
    vocab_size: int | None = None,
    mask_id: int | None = None,
    special_ids: Sequence[int] = (),
) -> np.ndarray:
    """The augmentation called `name` ("none", "delete", "replace", "mask", "shuffle") at rate p."""
    if name not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {name!r}; choose one of {tuple(AUGMENTATIONS)}")
    tokens = np.asarray(tokens, dtype=np.int64)
    if p <= 0 or name == "none":
        return tokens.copy()
    return AUGMENTATIONS[name](
        tokens, p, rng, vocab_size=vocab_size, mask_id=mask_id, special_ids=special_ids
    )


# ----- special tokens ---------------------------------------------------------------------------------
def wrap_special_tokens(tokens: np.ndarray, bos_id: int | None, eos_id: int | None) -> np.ndarray:
    """[bos] + tokens + [eos]: [CLS] ... [SEP] for BERT, <s> ... </s> for RoBERTa (None: left out)."""
    parts = [np.asarray(tokens, dtype=np.int64)]
    if bos_id is not None:
        parts.insert(0, np.array([bos_id], dtype=np.int64))
    if eos_id is not None:
        parts.append(np.array([eos_id], dtype=np.int64))
    return np.concatenate(parts)


TEMPLATE_PROBE = "retrieval"


def template_ends(tokenizer) -> tuple[int | None, int | None]:
    """The ids the tokenizer puts before and after a single text when it encodes one (None: nothing).

    Read from the tokenizer's own output (its post-processor template), not from its attributes:
    BERT gives ([CLS], [SEP]), RoBERTa and XLM-R (<s>, </s>), a tokenizer that adds nothing (None, None).
    """
    plain = tokenizer(TEMPLATE_PROBE, add_special_tokens=False)["input_ids"]
    full = tokenizer(TEMPLATE_PROBE, add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if plain and full[start : start + len(plain)] == plain:
            before, after = full[:start], full[start + len(plain) :]
            break
    else:
        raise ValueError(f"cannot find the text inside the tokenizer's own encoding {full}: unknown template")
    if len(before) > 1 or len(after) > 1:
        raise ValueError(
            f"the tokenizer adds {before} before and {after} after a text; views support one id on each side"
        )
    return (int(before[0]) if before else None, int(after[0]) if after else None)


def special_ids_from_tokenizer(tokenizer) -> dict:
    """`bos_id`, `eos_id`, `mask_id`, `special_ids` for PairSettings, from a Hugging Face tokenizer.

    The view is wrapped as the tokenizer wraps a text (`template_ends`): [CLS]/[SEP] for BERT,
    <s>/</s> for RoBERTa and XLM-R. `special_ids` are all the tokenizer's special ids (never
    produced by "replace").
    """
    bos, eos = template_ends(tokenizer)
    specials = {int(i) for i in tokenizer.all_special_ids if i is not None}
    return {
        "bos_id": bos,
        "eos_id": eos,
        "mask_id": tokenizer.mask_token_id,
        "special_ids": tuple(sorted(specials)),
    }


# ----- pairs ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PairSettings:
    """How a chunk becomes (query, key). Defaults: the paper's crop 5-50% + delete p=0.1."""

    method: str = "crop"  # "crop" | "ict"
    ratio_min: float = 0.05
    ratio_max: float = 0.5
    ict_keep_span_prob: float = 0.1
    augmentation: str = "delete"  # "none" | "delete" | "replace" | "mask" | "shuffle"
    augmentation_prob: float = 0.1
    max_view_length: int | None = None  # including the special tokens; None: no limit
    bos_id: int | None = None
    eos_id: int | None = None
    mask_id: int | None = None
    vocab_size: int | None = None
    special_ids: tuple[int, ...] = field(default_factory=tuple)

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown pair method {self.method!r}; choose one of {METHODS}")
        if self.augmentation not in AUGMENTATIONS:
            raise ValueError(
                f"unknown augmentation {self.augmentation!r}; choose one of {tuple(AUGMENTATIONS)}"
            )
        if not 0 < self.ratio_min <= self.ratio_max <= 1:
            raise ValueError(f"need 0 < ratio_min <= ratio_max <= 1, got {self.ratio_min}, {self.ratio_max}")
        if not 0 <= self.augmentation_prob <= 1 or not 0 <= self.ict_keep_span_prob <= 1:
            raise ValueError("augmentation_prob and ict_keep_span_prob must lie in [0, 1]")
        if self.augmentation == "mask" and self.augmentation_prob > 0 and self.mask_id is None:
            raise ValueError("augmentation 'mask' needs mask_id")
        if self.augmentation == "replace" and self.augmentation_prob > 0 and not self.vocab_size:
            raise ValueError("augmentation 'replace' needs vocab_size")
        specials = sum(i is not None for i in (self.bos_id, self.eos_id))
        if self.max_view_length is not None and self.max_view_length <= specials:
            raise ValueError(f"max_view_length {self.max_view_length} leaves no room for text")
        object.__setattr__(self, "special_ids", tuple(int(i) for i in self.special_ids))


def finish_view(tokens: np.ndarray, rng: np.random.Generator, settings: PairSettings) -> np.ndarray:
    """Noise, truncation to max_view_length, special tokens."""
    s = settings
    view = apply_augmentation(
        tokens, s.augmentation, s.augmentation_prob, rng, s.vocab_size, s.mask_id, s.special_ids
    )
    if s.max_view_length is not None:
        view = view[: s.max_view_length - sum(i is not None for i in (s.bos_id, s.eos_id))]
    return wrap_special_tokens(view, s.bos_id, s.eos_id)


def make_pair(
    chunk: np.ndarray, rng: np.random.Generator, settings: PairSettings
) -> tuple[np.ndarray, np.ndarray]:
    """(query ids, key ids), both int64 and wrapped in special tokens, from one chunk."""
    chunk = np.asarray(chunk, dtype=np.int64)
    if settings.method == "crop":
        query = random_crop(chunk, rng, settings.ratio_min, settings.ratio_max)
        key = random_crop(chunk, rng, settings.ratio_min, settings.ratio_max)
    else:
        query, key = inverse_cloze(
            chunk, rng, settings.ratio_min, settings.ratio_max, settings.ict_keep_span_prob
        )
    return finish_view(query, rng, settings), finish_view(key, rng, settings)
