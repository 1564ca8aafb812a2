"""Snippets and highlights: stemmed term matches, the densest window, offsets in code points."""

from __future__ import annotations

from contriever.serving.snippets import ELLIPSIS, TermMatcher, snippet


def _marked(text, spans):
    return [text[a:b] for a, b in spans]


def test_terms_are_stemmed_and_stop_words_dropped():
    matcher = TermMatcher("causes of the cells to divide")
    text = "A cell divides; dividing cells cause growth. Of the cause: to be."
    assert _marked(text, matcher.spans(text)) == ["cell", "divides", "dividing", "cells", "cause", "cause"]


def test_no_terms_means_no_highlights_and_the_text_start():
    matcher = TermMatcher("the and of")
    text = "word " * 200
    piece, spans = snippet(text, matcher, width=50)
    assert spans == [] and piece.startswith("word") and piece.endswith(ELLIPSIS) and len(piece) <= 51


def test_short_text_is_whole_with_its_matches():
    matcher = TermMatcher("vitamin deficiency")
    piece, spans = snippet("Scurvy: a  vitamin C\n deficiency.", matcher)
    assert piece == "Scurvy: a vitamin C deficiency."
    assert _marked(piece, spans) == ["vitamin", "deficiency"]


def test_window_goes_to_the_matches_and_offsets_point_at_them():
    matcher = TermMatcher("mitochondria energy")
    text = " ".join(["filler"] * 100) + " mitochondria make energy for the cell " + " ".join(["tail"] * 100)
    piece, spans = snippet(text, matcher, width=120)
    assert piece.startswith(ELLIPSIS) and piece.endswith(ELLIPSIS)
    assert len(piece) <= 122
    assert _marked(piece, spans) == ["mitochondria", "energy"]
    assert not piece[1:].startswith(" ")  # cut between words


def test_offsets_count_code_points_past_emoji():
    matcher = TermMatcher("vitamin")
    piece, spans = snippet("Emoji 😀 before the word vitamin.", matcher)
    assert _marked(piece, spans) == ["vitamin"]
