"""Ceilings: which questions some passage of the corpus answers, with the accuracy's own matching."""

from __future__ import annotations

import random

import pytest

from contriever.data.questions import Question
from contriever.evaluation import qa_ceiling
from contriever.evaluation.qa import has_answer
from contriever.evaluation.qa_ceiling import (
    ceiling,
    first_answering_passages,
    required_literals,
    top_level_branches,
)

PASSAGES = [  # (id, title, text): DPR matches the text only
    ("p0", "The Beatles", "A band from Liverpool, formed in 1960."),
    ("p1", "Apollo 11", "Apollo 11 landed on the Moon on 20 July 1969 ; Armstrong stepped out."),
    ("p2", "United States", "The U.S. has fifty states. New York City is its largest city."),
    ("p3", "Mount McKinley", "Denali rises 20,310 feet (6,190 m) above sea level."),
]
QUESTIONS = [
    Question("q0", "who landed on the moon", ["Neil Armstrong", "Armstrong"]),  # p1 (second alias)
    Question("q1", "band from liverpool", ["The Beatles"]),  # only in p0's title: not answerable
    Question("q2", "largest us city", ["New York City"]),  # p2
    Question("q3", "what country", ["U.S"]),  # tokens u . s: "U.S." is u . s . -> p2 holds u . s
    Question("q4", "moon landing year", ["1970"]),  # nowhere
    Question("q5", "how tall is mckinley", [r"20\s?,?\s?3[12]0\s?f(ee|oo)t"], "regex"),  # p3
    Question("q6", "how tall, metres", [r"6,?194\s*m|6,?168\s*m"], "regex"),  # nowhere
    Question("q7", "the band's city", [r"LIVERPOOL|Manchester"], "regex"),  # p0, case-insensitive
    Question("q8", "new york?", ["york city is"]),  # p2, across a token boundary it does not break
]


def _passages():
    return [(pid, text) for pid, _, text in PASSAGES]


def test_ceilings_on_a_tiny_corpus_computed_by_hand():
    first = first_answering_passages(QUESTIONS, _passages(), show_progress=False)
    assert first == ["p1", None, "p2", "p2", None, "p3", None, "p0", "p2"]
    assert ceiling(first) == pytest.approx(6 / 9)


def test_an_answer_only_in_the_title_is_not_answerable():
    question = Question("t", "band", ["The Beatles"])
    assert first_answering_passages([question], _passages(), show_progress=False) == [None]
    titled = [(pid, f"{title} {text}") for pid, title, text in PASSAGES]  # were titles matched, it would be
    assert first_answering_passages([question], titled, show_progress=False) == ["p0"]


def test_an_answer_without_tokens_matches_the_first_passage_as_in_dpr():
    assert first_answering_passages([Question("e", "?", [" "])], _passages(), show_progress=False) == ["p0"]


def _brute_force(questions, passages):
    return [
        next((pid for pid, text in passages if has_answer(q.answers, text, q.match)), None) for q in questions
    ]


@pytest.mark.parametrize("seed", range(4))
def test_the_fast_ceilings_equal_matching_every_passage(seed, monkeypatch):
    """Random passages and answers over a tiny vocabulary (so many match, many not, some only across
    passage boundaries); chunks of ~60 characters put many regex matches across two passages."""
    monkeypatch.setattr(qa_ceiling, "CHUNK_CHARS", 60)
    rng = random.Random(seed)
    vocab = ["the", "a", "new", "york", "city", "u", ".", "s", "1969", "moon", "Moon", "é", "e\u0301", "-"]
    passages = [(f"p{i}", " ".join(rng.choices(vocab, k=rng.randint(0, 12)))) for i in range(60)]
    questions = []
    for i in range(80):
        if rng.random() < 0.3:
            a, b = rng.choice(vocab), rng.choice(vocab)
            pattern = rng.choice(
                [f"{a}\\s?{b}", f"{a}|{b}x", f"^{a}", f"{b}$", f"({a}|{b})\\s+{a}", f"{a}.*{b}"]
            )
            questions.append(
                Question(f"r{i}", "?", [pattern.replace(".", "\\.", 1) if a == "." else pattern], "regex")
            )
        else:
            answers = [" ".join(rng.choices(vocab, k=rng.randint(1, 3))) for _ in range(rng.randint(1, 3))]
            questions.append(Question(f"s{i}", "?", answers))
    assert first_answering_passages(questions, passages, show_progress=False) == _brute_force(
        questions, passages
    )


def test_a_regex_match_across_two_passages_does_not_count(monkeypatch):
    monkeypatch.setattr(qa_ceiling, "CHUNK_CHARS", 1000)  # both passages in one chunk
    passages = [("a", "it ends with foo"), ("b", "bar begins this one")]
    question = Question("x", "?", [r"foo\s+bar"], "regex")
    assert first_answering_passages([question], passages, show_progress=False) == [None]


@pytest.mark.parametrize(
    ("pattern", "branches"),
    [
        (r"a|b(c|d)|[|x]|e\|f", ["a", "b(c|d)", "[|x]", r"e\|f"]),
        (r"[]|]x|y", ["[]|]x", "y"]),
        (r"[^]|]z|w", ["[^]|]z", "w"]),
        (r"(a)|\1", [r"(a)|\1"]),  # a back-reference: kept whole
        ("plain", ["plain"]),
    ],
)
def test_top_level_branches(pattern, branches):
    assert top_level_branches(pattern) == branches


def test_required_literals():
    assert required_literals(r"Mc?Kinley") == ["kinley"]
    assert required_literals(r"(San\s+Jose\s+)?Mercury\s+News") == ["mercury"]
    assert required_literals(r"20\s?,?\s?(32|40)0\s?f(ee|oo)t") == ["20"]
    assert required_literals(r"(Grapes|Mice)\s+of") == ["grapes", "mice"]
    assert required_literals(r"a|bc") is None  # one branch has no literal of 2 characters
    assert required_literals(r"x*yz?") is None
    assert required_literals("(unclosed") is None


def test_without_pyahocorasick_the_same_answer(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ahocorasick(name, *args, **kwargs):
        if name == "ahocorasick":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ahocorasick)
    monkeypatch.setattr(qa_ceiling, "CHUNK_CHARS", 40)
    first = first_answering_passages(QUESTIONS, _passages(), show_progress=False)
    assert first == ["p1", None, "p2", "p2", None, "p3", None, "p0", "p2"]


def test_prepared_passages_are_what_the_matching_reads():
    from contriever.evaluation.qa import prepare_passage

    prepared: list[str] = []
    first = first_answering_passages(QUESTIONS, _passages(), show_progress=False, prepared=prepared)
    assert first == first_answering_passages(QUESTIONS, _passages(), show_progress=False)
    assert prepared == [
        prepare_passage(text) for _, text in _passages()
    ]  # every passage, even after all are found
