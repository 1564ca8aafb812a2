"""Open-domain QA accuracy: DPR's tokenizer and answer matching, top-k accuracy."""

from __future__ import annotations

import unicodedata

import pytest

from contriever.evaluation.qa import (
    AnswerMatcher,
    accuracy_from_ranks,
    dpr_tokens,
    first_hit_rank,
    has_answer,
    regex_pattern_error,
    top_k_accuracy,
)


def test_dpr_tokens_keep_punctuation_one_character_each():
    assert dpr_tokens("The  Eiffel Tower!") == ["the", "eiffel", "tower", "!"]
    assert dpr_tokens("U.S.") == ["u", ".", "s", "."]
    assert dpr_tokens("AT&T's 1990-1995") == ["at", "&", "t", "'", "s", "1990", "-", "1995"]
    assert dpr_tokens("...") == [".", ".", "."]  # one token per punctuation character
    assert dpr_tokens("“Quoted” — text") == ["“", "quoted", "”", "—", "text"]
    assert dpr_tokens("New\nYork\tCity") == ["new", "york", "city"]  # separators and controls split
    assert dpr_tokens("foo\u200bbar") == ["foo", "bar"]  # a format character (\p{C}) is no token
    assert dpr_tokens("") == []
    # NFD: the accent is a combining mark inside the word, whichever form the input had
    assert dpr_tokens("Beyonc\u00e9") == dpr_tokens("Beyonce\u0301") == ["beyonce\u0301"]
    assert dpr_tokens("Straße") == ["straße"]  # lowercased, not case-folded


@pytest.mark.parametrize(
    ("answers", "passage", "expected"),
    [
        # the cases of the issue: DPR keeps articles and punctuation
        (["The Beatles"], "Songs by Beatles in 1964.", False),
        (["U.S."], "born in the U.S in 1950", False),
        (["Rock 'n' roll"], "rock n roll music", False),
        (["AT&T"], "at t corporation", False),
        (["the"], "the cat", True),
        # and more
        (["The Beatles"], "Songs by the Beatles in 1964.", True),  # case ignored
        (["U.S."], "born in the U.S. in 1950", True),
        (["AT&T"], "AT&T Corporation", True),
        (["1990"], "the 1990-1995 season", True),  # punctuation separates tokens
        (["1995"], "the 1990-1995 season", True),
        (["Par"], "Paris is the capital", False),  # whole tokens only
        (["capital France"], "capital of France", False),  # contiguous only
        (["the capital of France"], "Paris is the capital of France.", True),
        (["London", "france"], "Paris is in France.", True),  # any answer will do
        (["$5 million"], "it cost $5 million", True),
        (["5 million"], "it cost $5 million", True),
        (["O'Neill"], "Eugene O’Neill wrote", False),  # curly and straight apostrophes differ
        (["new york"], "New\nYork City", True),
        (["Beyonc\u00e9"], unicodedata.normalize("NFD", "Beyoncé released Lemonade."), True),
        (["Beyonce"], "Beyoncé released Lemonade.", False),  # accents are kept
        (["STRASSE"], "die Straße", False),  # lower(), not casefold()
        (["3.14"], "pi is about 3.14159", False),  # "14" is not "14159"
        (["3.14"], "pi is about 3.14 or so", True),
        (["?"], "what? yes.", True),  # a punctuation answer is a token like any other
        ([], "anything", False),
        # an answer with no tokens matches everything, as in DPR
        ([""], "anything", True),
        (["  "], "", True),
    ],
)
def test_has_answer_matches_dpr(answers, passage, expected):
    assert has_answer(answers, passage) is expected


def test_regex_match_mode():
    passage = "The Beatle John Lennon was born in 1940."
    assert has_answer([r"beatles?"], passage, match="regex")  # case-insensitive search
    assert has_answer([r"19[34]\d"], passage, match="regex")
    assert not has_answer([r"^beatle"], passage, match="regex")
    assert not has_answer(["("], passage, match="regex")  # a broken pattern never matches
    assert regex_pattern_error("(") is not None
    assert regex_pattern_error(r"beatles?") is None
    with pytest.raises(ValueError, match="match type"):
        AnswerMatcher(["x"], match="fuzzy")


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
    assert accuracy_from_ranks([1, 8, 51, None], ks=(1, 5, 20, 100)) == {
        "top1": 0.25,
        "top5": 0.25,
        "top20": 0.5,
        "top100": 0.75,
    }


@pytest.mark.bad_input
def test_top_k_accuracy_bad_inputs():
    with pytest.raises(ValueError, match="answer lists"):
        top_k_accuracy([["a"]], [])
    with pytest.raises(TypeError, match="list of strings"):
        top_k_accuracy([["Paris"]], ["Paris"])
    with pytest.raises(ValueError, match="positive"):
        top_k_accuracy([["Paris"]], [["Paris"]], ks=(0,))
    with pytest.raises(ValueError, match="no questions"):
        accuracy_from_ranks([])


def _dpr_regex_rule(pattern: str, text: str) -> bool:
    """DPR's `regex_match` written out: `re`, NFD pattern and text, IGNORECASE + UNICODE + MULTILINE,
    `search`; a pattern that does not compile never matches."""
    import re
    import unicodedata

    try:
        compiled = re.compile(
            unicodedata.normalize("NFD", pattern), flags=re.IGNORECASE + re.UNICODE + re.MULTILINE
        )
    except re.error:
        return False
    return compiled.search(unicodedata.normalize("NFD", text)) is not None


@pytest.mark.parametrize(
    ("pattern", "text", "expected"),
    [
        (
            r"After the Fall|Finishing the Play",
            "Miller wrote after the fall in 1964.",
            True,
        ),  # alternation, case
        (r"After the Fall|Finishing the Play", "FINISHING THE PLAY", True),
        (r"After the Fall|Finishing the Play", "Death of a Salesman", False),
        (r"20\s?,?\s?320\s?f(ee|oo)t", "it rises 20,320 feet", True),  # \s? and optional comma
        (r"20\s?,?\s?320\s?f(ee|oo)t", "it rises 20 320foot", True),
        (r"20\s?,?\s?320\s?f(ee|oo)t", "it rises 20   320 feet", False),  # three spaces: two \s? take two
        (r"^\s*bears?\s*$", "Bears", True),  # anchors at the passage's start and end
        (r"^\s*bears?\s*$", "the bears", False),
        (r"Pétain", "Marshal PETAIN", False),  # NFD: é is e + a combining mark, PETAIN lacks it
        (r"Pétain", "marshal pétain", True),
        (r"\bUS\b", "the U.S. and us", True),
        (r"(unclosed", "(unclosed", False),  # does not compile: never matches, as in DPR
    ],
)
def test_regex_answers_follow_dprs_rule(pattern, text, expected):
    assert _dpr_regex_rule(pattern, text) is expected  # the hand-made expectation is DPR's
    assert has_answer([pattern], text, match="regex") is expected


@pytest.mark.parametrize("text", ["ΟΔΟΣ'Α ΟΔΟΣ", "İstanbul ǅemal ẞ Ⅻ Ⓐ", "Σ.Σ", "AΣ\u0301B"])
def test_lowercasing_first_gives_dprs_tokens(text):
    """dpr_tokens lowercases the whole text before splitting (faster); DPR lowercases each token."""
    import unicodedata

    from contriever.evaluation.qa import _DPR_TOKEN

    expected = [token.lower() for token in _DPR_TOKEN.findall(unicodedata.normalize("NFD", text))]
    assert dpr_tokens(text) == expected
