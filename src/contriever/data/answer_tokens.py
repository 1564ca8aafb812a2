"""DPR's simple tokenizer, used to match answers in passages (evaluation.qa) and to warn, while
reading a question file (data.questions), about answers with no tokens, which match every passage."""

from __future__ import annotations

import unicodedata

import regex

# DPR's SimpleTokenizer: a run of letters/numbers/marks, or one non-space, non-control character.
_DPR_TOKEN = regex.compile(
    r"([\p{L}\p{N}\p{M}]+)|([^\p{Z}\p{C}])", flags=regex.IGNORECASE | regex.UNICODE | regex.MULTILINE
)


def dpr_tokens(text: str) -> list[str]:
    """DPR's tokens of `text`: NFD, simple tokenizer, lowercased (steps 1-3 of evaluation.qa's doc)."""
    return [match.group().lower() for match in _DPR_TOKEN.finditer(unicodedata.normalize("NFD", text))]
