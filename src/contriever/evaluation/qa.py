"""Open-domain QA retrieval accuracy, with DPR's answer matching: top-k accuracy on NQ, TriviaQA, ...

The metric of DPR (Karpukhin et al. 2020) and of the Contriever paper (top-5/20/100 accuracy): the
share of questions with an answer in one of their top k passages. A passage *has an answer* exactly
as DPR's `has_answer` decides it (`match="string"`, the default):

1. the passage text and each answer are put in Unicode NFD form;
2. both are split by DPR's simple tokenizer: a token is either a maximal run of letters, digits and
   combining marks (`[\\p{L}\\p{N}\\p{M}]+`) or any single other character that is neither a
   separator nor a control/format character (`[^\\p{Z}\\p{C}]`), so punctuation is kept, one
   token per character;
3. tokens are lowercased (`str.lower`);
4. the answer matches when its token sequence occurs contiguously in the passage's.

So nothing is dropped: "The Beatles" does not match "Songs by Beatles", "U.S." does not match
"the U.S in 1950" (the final "." is a token), "AT&T" does not match "at t", and the answer "the"
matches "the cat". An answer with no tokens at all (empty, or only spaces) matches every passage,
as in DPR (the reader of question files warns about such answers).

`match="regex"` is DPR's other mode (CuratedTREC): each answer is a regular expression searched in
the NFD passage text, case-insensitive; a pattern that does not compile never matches (the reader of
question files refuses such a pattern, naming its line).

Step 4 is done as a substring test on the tokens joined by single spaces (`" a b "` in `" x a b y "`):
no DPR token holds a space (spaces are separators, never part of a token), so this is exactly the
contiguous-sequence test, run in C; the ceilings (`qa_ceiling.py`) use the same joined form.

Only the passage *text* is matched, not its title: DPR and the paper's evaluation look at the text
field alone, even though the retriever encodes `title + " " + text`.
"""

from __future__ import annotations

import unicodedata
import warnings
from collections.abc import Iterable, Sequence
from functools import lru_cache

import regex

from contriever.data.questions import MATCH_TYPES, Question, compile_answer_pattern

# DPR's SimpleTokenizer: a run of letters/numbers/marks, or one non-space, non-control character
# (no groups, so findall returns the token strings without building match objects).
_DPR_TOKEN = regex.compile(
    r"[\p{L}\p{N}\p{M}]+|[^\p{Z}\p{C}]", flags=regex.IGNORECASE | regex.UNICODE | regex.MULTILINE
)


def dpr_tokens(text: str) -> list[str]:
    """DPR's tokens of `text`: NFD, simple tokenizer, lowercased (steps 1-3 of the module doc).

    Lowercasing the whole text before splitting gives the same tokens, faster: `str.lower` maps a
    character to characters of the same classes (letters and marks stay in runs, others stay single
    non-space characters), and it is context-free except for Greek capital sigma (final form by
    context), so a text holding one takes DPR's own order."""
    normalized = unicodedata.normalize("NFD", text)
    if "\u03a3" in normalized:
        return [token.lower() for token in _DPR_TOKEN.findall(normalized)]
    return _DPR_TOKEN.findall(normalized.lower())


def joined_tokens(tokens: Sequence[str]) -> str:
    """`" a b c "`: tokens joined by single spaces, padded, so sequence containment is `in`."""
    return " " + " ".join(tokens) + " "


def warn_empty_answers(path, questions: Sequence[Question]) -> None:
    """Warn about answers DPR's tokenizer reduces to nothing: under DPR's rule they match every passage."""
    empty = [q.id for q in questions if q.match == "string" and any(not dpr_tokens(a) for a in q.answers)]
    if empty:
        warnings.warn(
            f"{path}: {len(empty)} question(s) have an answer with no tokens (e.g. id {empty[0]!r}); "
            "under DPR's rule such an answer matches every passage",
            stacklevel=2,
        )


def contains_sequence(haystack: Sequence[str], needle: Sequence[str]) -> bool:
    """Whether `needle` occurs contiguously in `haystack` (an empty needle always does, as in DPR)."""
    if not needle:
        return True
    return joined_tokens(needle) in joined_tokens(haystack)


@lru_cache(maxsize=4096)
def _compiled(pattern: str):
    try:
        return compile_answer_pattern(pattern)
    except (regex.error, ValueError, TypeError, OverflowError):
        return None


def regex_pattern_error(pattern: str) -> str | None:
    """Why `pattern` cannot be used with `match="regex"` (None if it compiles)."""
    try:
        compile_answer_pattern(pattern)
    except (regex.error, ValueError, TypeError, OverflowError) as error:
        return str(error)
    return None


class AnswerMatcher:
    """One question's answers, tokenized (or compiled) once: `matcher(passage_text) -> bool`."""

    def __init__(self, answers: Iterable[str], match: str = "string"):
        if match not in MATCH_TYPES:
            raise ValueError(f"unknown match type {match!r}; choose one of {MATCH_TYPES}")
        if isinstance(answers, str):
            raise TypeError(f"answers must be a list of strings, got the string {answers!r}")
        self.match = match
        answers = list(answers)
        if match == "string":
            tokenized = [dpr_tokens(answer) for answer in answers]
            self.matches_everything = any(not tokens for tokens in tokenized)  # DPR: an empty answer matches
            self._answers = [joined_tokens(tokens) for tokens in tokenized if tokens]
        else:
            self._patterns = [p for p in (_compiled(answer) for answer in answers) if p is not None]

    def passage_tokens(self, passage_text: str) -> str:
        """What `matches` compares against: the joined DPR tokens (string match) or the NFD text (regex)."""
        return prepare_passage(passage_text, self.match)

    def matches(self, prepared: str) -> bool:
        """Match against `passage_tokens(text)` output (lets callers tokenize a passage once)."""
        if self.match == "string":
            return self.matches_everything or any(answer in prepared for answer in self._answers)
        return any(pattern.search(prepared) is not None for pattern in self._patterns)

    def __call__(self, passage_text: str) -> bool:
        return self.matches(self.passage_tokens(passage_text))


def prepare_passage(passage_text: str, match: str = "string") -> str:
    """A passage text as the matchers read it: joined DPR tokens ("string") or NFD text ("regex")."""
    if match == "string":
        return joined_tokens(dpr_tokens(passage_text))
    return unicodedata.normalize("NFD", passage_text)


def has_answer(answers: Iterable[str], passage_text: str, match: str = "string") -> bool:
    """DPR's `has_answer`: whether one of `answers` occurs in `passage_text` (see the module doc)."""
    return AnswerMatcher(answers, match)(passage_text)


def first_hit_rank(
    answers: Sequence[str], passages: Sequence[str], max_rank: int | None = None, match: str = "string"
) -> int | None:
    """The 1-based rank of the first passage holding an answer (looking at most `max_rank` deep), or None."""
    matcher = AnswerMatcher(answers, match)
    for rank, passage_text in enumerate(passages[:max_rank] if max_rank else passages, start=1):
        if matcher(passage_text):
            return rank
    return None


def accuracy_from_ranks(ranks: Sequence[int | None], ks: Sequence[int] = (1, 5, 20, 100)) -> dict[str, float]:
    """`{"top1": ..., "top5": ...}`: the fraction of questions whose first hit rank is at most k."""
    if not ranks:
        raise ValueError("no questions to evaluate")
    if not ks or any(k < 1 for k in ks):
        raise ValueError(f"ks must be positive ranks, got {tuple(ks)}")
    n = len(ranks)
    return {f"top{k}": sum(1 for rank in ranks if rank is not None and rank <= k) / n for k in ks}


def top_k_accuracy(
    retrieved_texts_per_question: Sequence[Sequence[str]],
    answers_per_question: Sequence[Sequence[str]],
    ks: Sequence[int] = (5, 20, 100),
    match: str = "string",
) -> dict[str, float]:
    """`{"top5": ..., "top20": ..., "top100": ...}`: the fraction of questions with an answer in their top k.

    `retrieved_texts_per_question[i]` is question i's passage texts, best first (the text field
    only, as DPR matches it); `answers_per_question[i]` its answer strings. A question with fewer
    than k passages is judged on those it has.
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
        first_hit_rank(answers, passages, deepest, match)
        for passages, answers in zip(retrieved_texts_per_question, answers_per_question, strict=True)
    ]
    return accuracy_from_ranks(ranks, ks)
