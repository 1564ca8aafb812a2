"""Open-domain QA retrieval accuracy: the share of questions with an answer in the top k passages.

This is the metric of DPR and the Contriever paper on NaturalQuestions and TriviaQA (top-5/20/100
accuracy). A passage *has an answer* when the token sequence of one normalized answer string occurs,
contiguously, in the token sequence of the normalized passage.

Normalization (`normalize_answer`), applied alike to answers and passages:

1. Unicode NFD (so composed and decomposed accents compare equal, as DPR does);
2. lowercase;
3. punctuation (any Unicode punctuation character) replaced by a space;
4. the articles "a", "an", "the" removed;
5. whitespace collapsed.

This is SQuAD's answer normalization with one change: SQuAD *deletes* punctuation, which suits
comparing two short answers but glues passage words together ("1990-1995" would become "19901995",
hiding the answer "1990"). Replacing punctuation by a space keeps the words apart, which is what
DPR's tokenizer (punctuation as separate tokens) achieves.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence

_ARTICLES = frozenset({"a", "an", "the"})
_WHITESPACE = re.compile(r"\s+")


def _is_punctuation(char: str) -> bool:
    return unicodedata.category(char).startswith("P")


# Unicode punctuation in the Basic Multilingual Plane, as a translation table to spaces
_PUNCTUATION_TO_SPACE = {code: " " for code in range(0x10000) if _is_punctuation(chr(code))}
_PUNCTUATION_TO_SPACE.update({ord(c): " " for c in "$+<=>^`|~"})  # ASCII symbols SQuAD counts as punctuation


def normalize_tokens(text: str) -> list[str]:
    """The normalized tokens of `text` (see the module docstring)."""
    text = unicodedata.normalize("NFD", text).lower().translate(_PUNCTUATION_TO_SPACE)
    return [token for token in text.split() if token not in _ARTICLES]


def normalize_answer(text: str) -> str:
    """SQuAD-style normalized string: NFD, lowercase, punctuation -> space, no articles, single spaces."""
    return " ".join(normalize_tokens(text))


def _contains(haystack: Sequence[str], needle: Sequence[str]) -> bool:
    n = len(needle)
    if n == 0 or n > len(haystack):
        return False
    first = needle[0]
    for start in range(len(haystack) - n + 1):
        if haystack[start] == first and list(haystack[start : start + n]) == list(needle):
            return True
    return False


def has_answer(answers: Iterable[str], passage_text: str) -> bool:
    """Whether one of `answers` occurs in `passage_text` as a whole-token sequence after normalization.

    An answer that normalizes to nothing (e.g. "the" or "?") never matches.
    """
    passage = normalize_tokens(passage_text)
    return any(_contains(passage, normalize_tokens(answer)) for answer in answers)


def first_hit_rank(
    answers: Sequence[str], passages: Sequence[str], max_rank: int | None = None
) -> int | None:
    """The 1-based rank of the first passage holding an answer (looking at most `max_rank` deep), or None."""
    answer_tokens = [tokens for tokens in (normalize_tokens(a) for a in answers) if tokens]
    if not answer_tokens:
        return None
    for rank, passage_text in enumerate(passages[:max_rank] if max_rank else passages, start=1):
        passage = normalize_tokens(passage_text)
        if any(_contains(passage, tokens) for tokens in answer_tokens):
            return rank
    return None


def top_k_accuracy(
    retrieved_texts_per_question: Sequence[Sequence[str]],
    answers_per_question: Sequence[Sequence[str]],
    ks: Sequence[int] = (5, 20, 100),
) -> dict[str, float]:
    """`{"top5": ..., "top20": ..., "top100": ...}`: the fraction of questions with an answer in their top k.

    `retrieved_texts_per_question[i]` is question i's passages, best first (`title + " " + text` is the
    usual passage string); `answers_per_question[i]` its answer strings. A question with fewer than k
    passages is judged on those it has.
    """
    if len(retrieved_texts_per_question) != len(answers_per_question):
        raise ValueError(
            f"{len(retrieved_texts_per_question)} retrieved lists but {len(answers_per_question)} answer lists"
        )
    if not answers_per_question:
        raise ValueError("no questions to evaluate")
    if not ks or any(k < 1 for k in ks):
        raise ValueError(f"ks must be positive ranks, got {tuple(ks)}")
    for i, answers in enumerate(answers_per_question):
        if isinstance(answers, str):
            raise TypeError(f"answers of question {i} must be a list of strings, got the string {answers!r}")
    deepest = max(ks)
    ranks = [
        first_hit_rank(answers, passages, deepest)
        for passages, answers in zip(retrieved_texts_per_question, answers_per_question, strict=True)
    ]
    n = len(ranks)
    return {f"top{k}": sum(1 for rank in ranks if rank is not None and rank <= k) / n for k in ks}
