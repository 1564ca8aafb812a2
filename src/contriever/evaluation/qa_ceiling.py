"""The ceiling of top-k accuracy on a corpus: which questions have an answering passage anywhere in it.

A question can only be answered at some k if one passage of the corpus holds one of its answers, so
the share of such questions bounds top-k accuracy for every k and every system. It is measured with
the very matching the accuracy uses (`contriever.evaluation.qa`: DPR's tokens, the passage text, not
its title), so "accuracy <= ceiling" holds exactly, and a question counted as a hit by any system is
counted as answerable here.

Checking every question against every passage would take hours (666k passages x 28k questions), so:

- string answers: each passage is tokenized once; each answer is filed under its token (one-token
  answers) or under one of its adjacent token pairs ("new york": pairs are far rarer in text than
  tokens), the one fewest answers share; a passage only checks the answers filed under its own
  tokens and pairs (a set intersection, in C), of those only the answers whose every token it holds
  (a subset test), each by one substring test on the joined tokens (exactly DPR's
  contiguous-sequence test, see `qa.py`); a question found answerable is dropped;
- regex answers (CuratedTREC): the passages' NFD texts are searched many at a time, joined by
  newlines; a match that spans two passages is never trusted: those passages are then searched one
  by one, so the result is the per-passage search's. A case-insensitive regex search is slow (about
  30 MB/s, slower for long alternations), so each pattern is split at its top-level `|`
  (`top_level_branches`; a search for `A|B` finds a match exactly when one for `A` or one for `B`
  does), each branch gets its *required literals* (`required_literals`: strings one of which every
  match contains, read from the parsed branch), and a chunk whose case-folded text holds none of a
  branch's literals is not searched with it; a branch with no such literals is searched everywhere.

`first_answering_passages(questions, passages)` returns, per question, the id of the first passage
(in corpus order) that answers it, or None.
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence

from tqdm.auto import tqdm

from contriever.data.questions import Question
from contriever.evaluation.qa import _compiled, dpr_tokens, joined_tokens

CHUNK_CHARS = 1 << 16  # NFD text searched at once by each regex answer
MIN_LITERAL = 2  # shorter required literals filter nothing


def _literals(items) -> list[str] | None:
    """Required literals of a parsed sequence: one of them occurs in every match (None: unknown)."""
    best: list[str] | None = None
    run: list[str] = []
    candidates: list[list[str]] = []
    for op, value in list(items) + [(None, None)]:
        if op is re._constants.LITERAL:
            run.append(chr(value))
            continue
        if len(run) >= MIN_LITERAL:
            candidates.append(["".join(run)])
        run = []
        found = _element_literals(op, value) if op is not None else None
        if found:
            candidates.append(found)
    for candidate in candidates:  # the most selective: the longest shortest literal
        if best is None or min(map(len, candidate)) > min(map(len, best)):
            best = candidate
    return best


def _element_literals(op, value) -> list[str] | None:
    constants = re._constants
    if op is constants.SUBPATTERN:
        return _literals(value[-1])
    if op is constants.BRANCH:
        branches = [_literals(branch) for branch in value[1]]
        if any(not branch for branch in branches):
            return None
        return [literal for branch in branches for literal in branch]
    if op in (constants.MAX_REPEAT, constants.MIN_REPEAT, getattr(constants, "POSSESSIVE_REPEAT", None)):
        return _literals(value[2]) if value[0] >= 1 else None
    if op is getattr(constants, "ATOMIC_GROUP", None):
        return _literals(value)
    return None


def top_level_branches(pattern: str) -> list[str]:
    """`pattern` split at its top-level `|` (outside groups and classes); the whole pattern when it
    holds a back-reference or an inline flag, whose meaning could change by splitting."""
    if re.search(r"\\[1-9]|\(\?[aiLmsux-]|\(\?P=|\\g<", pattern):
        return [pattern]
    branches, depth, class_from, start, i = [], 0, -1, 0, 0  # class_from: first index a "]" may close
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            i += 2
            continue
        if class_from >= 0:
            if char == "]" and i > class_from:
                class_from = -1
        elif char == "[":
            class_from = i + (2 if pattern[i + 1 : i + 2] == "^" else 1)
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "|" and depth == 0:
            branches.append(pattern[start:i])
            start = i + 1
        i += 1
    branches.append(pattern[start:])
    return branches if all(_compiled(branch) is not None for branch in branches) else [pattern]


def required_literals(pattern: str) -> list[str] | None:
    """Case-folded strings one of which every case-insensitive match of `pattern` contains (at least
    `MIN_LITERAL` characters each), or None when the pattern's form gives none. Read from Python's
    own parse of the NFD pattern; `None` whenever it cannot be parsed, so a filter built on it never
    drops a passage the search would match."""
    try:
        parsed = re._parser.parse(
            unicodedata.normalize("NFD", pattern), re.IGNORECASE | re.UNICODE | re.MULTILINE
        )
    except (re.error, ValueError, TypeError, OverflowError, RecursionError):
        return None
    found = _literals(parsed.data)
    return sorted({literal.casefold() for literal in found}) if found else None


def _grams(tokens: Sequence[str]) -> list[str]:
    """What an answer is filed under and a passage offers: its token itself when it has one token,
    else its adjacent token pairs ("new york"): pairs are far rarer in text than single tokens."""
    if len(tokens) == 1:
        return [tokens[0]]
    return [f"{a} {b}" for a, b in zip(tokens, tokens[1:])]


def _key(tokens: Sequence[str], counts: Counter) -> str:
    """The gram an answer is filed under: the one fewest answers hold (short lists), ties going to
    the longest (long ones are rare in text)."""
    return min(_grams(tokens), key=lambda gram: (counts[gram], -len(gram)))


class _StringAnswers:
    """The pending string answers, filed by key token."""

    def __init__(self, questions: Sequence[tuple[int, Question]]):
        self.by_key: dict[str, list[tuple[str, frozenset, int]]] = {}
        self.matches_everything: list[int] = []
        tokenized = [
            (number, dpr_tokens(answer)) for number, question in questions for answer in question.answers
        ]
        counts = Counter(gram for _, tokens in tokenized for gram in set(_grams(tokens)) if tokens)
        for number, tokens in tokenized:
            if not tokens:  # DPR: an answer without tokens matches every passage
                self.matches_everything.append(number)
                continue
            entry = (joined_tokens(tokens), frozenset(tokens), number)
            self.by_key.setdefault(_key(tokens, counts), []).append(entry)
        self.keys = set(self.by_key)

    def scan(self, tokens: list[str], found: dict[int, object], passage_id: str, joined: str | None) -> None:
        held = set(tokens)
        present = self.keys.intersection(held)
        present.update(self.keys.intersection([f"{a} {b}" for a, b in zip(tokens, tokens[1:])]))
        if not present:
            return
        joined = joined if joined is not None else joined_tokens(tokens)
        for key in present:
            entries = self.by_key[key]
            hits = [
                n for answer, needed, n in entries if needed <= held and n not in found and answer in joined
            ]
            if not hits:
                continue
            for number in hits:
                found[number] = passage_id
            remaining = [entry for entry in entries if entry[2] not in found]
            if remaining:
                self.by_key[key] = remaining
            else:
                del self.by_key[key]
                self.keys.discard(key)


class _RegexAnswers:
    """The pending regex answers, searched over chunks of passages."""

    def __init__(self, questions: Sequence[tuple[int, Question]]):
        self.patterns = [
            (number, compiled, required_literals(branch))
            for number, question in questions
            for answer in question.answers
            if _compiled(answer) is not None  # DPR: a pattern that does not compile never matches
            for branch in top_level_branches(answer)
            if (compiled := _compiled(branch)) is not None
        ]
        self.ids: list[str] = []
        self.texts: list[str] = []
        self.size = 0
        self._automaton = None
        self._automaton_for = -1  # how many patterns were pending when it was built

    def _present(self, folded: str):
        """The literals occurring in `folded`: one Aho-Corasick pass (pyahocorasick), else one `in`
        test per literal (the same answer, slower)."""
        literals = {lit for _, _, found in self.patterns if found for lit in found}
        try:
            import ahocorasick
        except ImportError:
            return {lit for lit in literals if lit in folded}
        if self._automaton is None or len(self.patterns) < 0.8 * self._automaton_for:
            automaton = ahocorasick.Automaton()
            for literal in literals:
                automaton.add_word(literal, literal)
            if literals:
                automaton.make_automaton()
            self._automaton, self._automaton_for = automaton, len(self.patterns)
        if not len(self._automaton):
            return set()
        return {literal for _, literal in self._automaton.iter(folded)}

    def add(self, passage_text: str, passage_id: str, found: dict[int, object]) -> None:
        if not self.patterns:
            return
        text = unicodedata.normalize("NFD", passage_text)
        self.ids.append(passage_id)
        self.texts.append(text)
        self.size += len(text) + 1
        if self.size >= CHUNK_CHARS:
            self.flush(found)

    def flush(self, found: dict[int, object]) -> None:
        if not self.texts:
            return
        chunk = "\n".join(self.texts)
        present = self._present(chunk.casefold())
        starts, position = [], 0
        for text in self.texts:
            starts.append(position)
            position += len(text) + 1
        for number, pattern, literals in self.patterns:
            if number in found or (literals is not None and present.isdisjoint(literals)):
                continue
            match = pattern.search(chunk)
            if match is None:
                continue
            first = bisect.bisect_right(starts, match.start()) - 1
            if match.end() <= starts[first] + len(self.texts[first]):  # inside one passage
                found[number] = self.ids[first]
                continue
            for passage_id, text in zip(self.ids, self.texts, strict=True):  # spans two: one by one
                if pattern.search(text) is not None:
                    found[number] = passage_id
                    break
        self.patterns = [entry for entry in self.patterns if entry[0] not in found]
        self.ids, self.texts, self.size = [], [], 0


def first_answering_passages(
    questions: Sequence[Question],
    passages: Iterable[tuple[str, str]],
    *,
    total: int | None = None,
    show_progress: bool = True,
    prepared: list[str] | None = None,
) -> list[str | None]:
    """For each question, the id of the first of `passages` (`(id, text)`, in order) holding an
    answer under its own match type (see the module doc), or None when no passage does.

    `prepared`, a list, receives every passage's joined DPR tokens (`qa.prepare_passage`), in order:
    the accuracy's matching then never tokenizes a passage again."""
    numbered = list(enumerate(questions))
    strings = _StringAnswers([(n, q) for n, q in numbered if q.match == "string"])
    regexes = _RegexAnswers([(n, q) for n, q in numbered if q.match == "regex"])
    found: dict[int, object] = {}
    first_id = None
    bar = tqdm(
        passages, total=total, desc="ceilings", unit="passage", disable=not show_progress, mininterval=1
    )
    for passage_id, text in bar:
        if first_id is None:
            first_id = passage_id
            for number in strings.matches_everything:
                found.setdefault(number, passage_id)
        joined = None
        if prepared is not None or strings.keys:
            tokens = dpr_tokens(text)
            if prepared is not None:
                joined = joined_tokens(tokens)
                prepared.append(joined)
            if strings.keys:
                strings.scan(tokens, found, passage_id, joined)
        regexes.add(text, passage_id, found)
        if prepared is None and not strings.keys and not regexes.patterns:
            break
    regexes.flush(found)
    return [found.get(number) for number in range(len(questions))]  # type: ignore[misc]


def ceiling(first_passages: Sequence[str | None]) -> float:
    """The share of questions with an answering passage somewhere in the corpus."""
    return sum(1 for p in first_passages if p is not None) / len(first_passages) if first_passages else 0.0
