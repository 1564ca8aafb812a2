"""Snippets: the part of a document around the query's terms, and the spans to highlight in it.

Terms are matched the way BM25 matches them (`contriever.retrieval.bm25`): words of two or more
characters, lowercased, stop words dropped, stemmed (Porter by default), so "cells" in a query
highlights "cell" and "cellular" only where the stemmer maps them together. The page wraps the
returned `[start, end)` character spans in `<mark>`; the server never returns HTML.
"""

from __future__ import annotations

import functools
import re

WORD = re.compile(r"\w\w+")
ELLIPSIS = "\u2026"


@functools.lru_cache(maxsize=8)
def _stemmer(name: str | None):
    if name in (None, "", "none"):
        return None
    import Stemmer

    return Stemmer.Stemmer(name)


@functools.lru_cache(maxsize=8)
def _stopwords(language: str | None) -> frozenset[str]:
    if not language:
        return frozenset()
    import bm25s.stopwords

    return frozenset(getattr(bm25s.stopwords, f"STOPWORDS_{language.upper()}", ()))


class TermMatcher:
    """The stems of a query's words; finds the spans of a text whose words share one."""

    def __init__(self, query: str, stemmer: str | None = "porter", stopwords: str | list[str] | None = "en"):
        self._stem = _stemmer(stemmer)
        stop = _stopwords(stopwords) if stopwords is None or isinstance(stopwords, str) else set(stopwords)
        words = [w for w in WORD.findall(query.lower()) if w not in stop]
        self.terms = frozenset(self._stems(words))

    def _stems(self, words: list[str]) -> list[str]:
        return self._stem.stemWords(words) if self._stem is not None else words

    def spans(self, text: str) -> list[tuple[int, int]]:
        """`[start, end)` of each word of `text` that matches a query term, in order."""
        if not self.terms:
            return []
        found = list(WORD.finditer(text))
        stems = self._stems([m.group().lower() for m in found])
        return [m.span() for m, stem in zip(found, stems) if stem in self.terms]


def snippet(text: str, matcher: TermMatcher, width: int = 300) -> tuple[str, list[list[int]]]:
    """At most about `width` characters of `text` holding as many matched terms as possible, and the
    matched spans within it. Starts at the text's beginning when nothing matches; cuts fall between
    words and are marked with an ellipsis."""
    text = " ".join(text.split())
    spans = matcher.spans(text)
    if len(text) <= width:
        return text, [list(s) for s in spans]
    start = 0
    if spans:
        # the window (leaving a fifth of it for context before) that covers the most matches
        reach = width - width // 5
        best, right = 0, 0
        for left, (span_start, _) in enumerate(spans):
            right = max(right, left)
            while right + 1 < len(spans) and spans[right + 1][1] <= span_start + reach:
                right += 1
            if right - left + 1 > best:
                best, start = right - left + 1, span_start
        start = min(max(0, start - width // 5), max(0, len(text) - width))
        if start > 0 and text[start - 1] != " ":  # begin on a word
            space = text.find(" ", start)
            start = space + 1 if 0 <= space < start + 30 else start
    end = min(len(text), start + width)
    if end < len(text):
        space = text.rfind(" ", start, end)
        end = space if space > start + width // 2 else end
    piece = text[start:end]
    prefix = ELLIPSIS if start > 0 else ""
    suffix = ELLIPSIS if end < len(text) else ""
    shift = len(prefix) - start
    inside = [[a + shift, b + shift] for a, b in spans if a >= start and b <= end]
    return prefix + piece + suffix, inside
