"""Open-domain QA accuracy: answer normalization, token-level matching, top-k accuracy."""

from __future__ import annotations

import unicodedata

import pytest

from contriever.evaluation.qa import first_hit_rank, has_answer, normalize_answer, top_k_accuracy


def test_normalize_answer():
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert normalize_answer("An apple, a day") == "apple day"
    assert normalize_answer("U.S.") == "u s"
    assert normalize_answer("“Quoted” — text") == "quoted text"  # Unicode punctuation too
    assert normalize_answer("theatre") == "theatre"  # only whole-word articles go
    composed = "Beyonc\u00e9"
    assert normalize_answer(composed) == normalize_answer(unicodedata.normalize("NFD", composed))


def test_has_answer_matches_whole_tokens():
    passage = "Paris is the capital of France. It hosted the 1900 Summer Olympics (1900-1901 season)."
    assert has_answer(["Paris"], passage)
    assert has_answer(["the capital of France"], passage)  # articles ignored on both sides
    assert has_answer(["1900"], passage)
    assert has_answer(["1901"], passage)  # punctuation separates tokens
    assert has_answer(["London", "france"], passage)  # any answer will do
    assert not has_answer(["Par"], passage)  # no partial tokens
    assert not has_answer(["capital France"], passage)  # contiguous only
    assert not has_answer(["London"], passage)
    assert not has_answer(["the", "?!"], passage)  # answers that normalize to nothing never match
    assert not has_answer([], passage)


def test_has_answer_unicode_forms():
    passage = unicodedata.normalize("NFD", "Beyoncé released Lemonade in 2016.")
    assert has_answer(["Beyonc\u00e9"], passage)
    assert not has_answer(["Beyonce"], passage)  # accents are kept, as in DPR


def test_top_k_accuracy():
    answers = [["Paris"], ["blue whale"], ["1969"], ["nothing"]]
    retrieved = [
        ["Paris is in France."] + ["filler"] * 99,  # rank 1
        ["filler"] * 7 + ["The blue whale is large."] + ["filler"] * 92,  # rank 8
        ["filler"] * 50 + ["Apollo 11 landed in 1969."],  # rank 51
        ["filler"] * 100,  # never
    ]
    accuracy = top_k_accuracy(retrieved, answers)
    assert accuracy == {"top5": 0.25, "top20": 0.5, "top100": 0.75}
    assert top_k_accuracy(retrieved, answers, ks=(1, 10)) == {"top1": 0.25, "top10": 0.5}
    assert first_hit_rank(answers[1], retrieved[1]) == 8
    assert first_hit_rank(answers[2], retrieved[2], max_rank=20) is None


def test_top_k_accuracy_bad_inputs():
    with pytest.raises(ValueError, match="answer lists"):
        top_k_accuracy([["a"]], [])
    with pytest.raises(TypeError, match="list of strings"):
        top_k_accuracy([["Paris"]], ["Paris"])
    with pytest.raises(ValueError, match="positive"):
        top_k_accuracy([["Paris"]], [["Paris"]], ks=(0,))
