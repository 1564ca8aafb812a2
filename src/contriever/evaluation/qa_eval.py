"""The open-domain QA evaluation job behind `evaluate-qa`: question files + passages + systems -> top-k
accuracy, with each question set's ceiling on this corpus.

The paper's Table 1 (and DPR's): top-k accuracy, the share of questions with an answer in one of
their k best passages, matched with DPR's rule (`contriever.evaluation.qa`: the passage *text*, not
its title; `"match": "regex"` questions as CuratedTREC's patterns).

**Passages.** One corpus for every system, read once into memory:

- `search.index_path`: an index folder (`contriever index`): its passage store, or, when `corpus` is
  also given, the corpus it was built from, split as the folder records (`--words`). The corpus's
  passage ids must be the folder's, in order: a different corpus is refused before anything is
  searched;
- `corpus` alone: corpus files (`corpus.jsonl[.gz]` or a BEIR folder, DPR's `psgs_w100.tsv`, enwiki
  `.jsonl.gz` parts), split into passages of `encoding.words` words (0: whole documents), ids
  `DOCID#N`.

**Systems** (`models`, several in one run, as `evaluate` takes them), each one of the retrievers of
`contriever.retrieval.retrievers`, built once and shared: a dense model (`DenseRetriever` over the
index's vectors, or over the corpus encoded through the encode cache), `"bm25"` (`BM25Retriever`,
the project's settings: k1 0.9, b 0.4, Porter stemmer, English stop words; the index can be kept in
`bm25_index` and reused), and `"hybrid:M"` (`HybridRetriever`): reciprocal rank fusion (k 60) of
BM25's and M's top `max(ks)`, the very runs those two systems retrieve.

**Ceilings.** Before any search, every question file is checked against every passage
(`qa_ceiling.py`), with the same matching: the share of questions some passage answers bounds every
top-k. It is printed next to each accuracy and written in the metrics. `answerable_only` then keeps
only those questions (a small corpus slice answers few: its accuracies are then out of the
answerable ones, and say so).

**Output** (`output_dir`): `metrics.json` (every set x system, rewritten as each finishes), per set
and system `SET/SYSTEM/results.jsonl` (per question: id, answers, `hit_rank`, `hit_passage`: the
first answering passage among the retrieved, `corpus_passage`: the first in the corpus, and the
retrieved ids), and `accuracy.png`: accuracy against k for every system, the ceiling dashed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from contriever.data.questions import Question, QuestionStats, load_questions
from contriever.errors import DataError, UsageError
from contriever.evaluation.qa import AnswerMatcher, accuracy_from_ranks, prepare_passage, warn_empty_answers
from contriever.evaluation.qa_ceiling import ceiling, first_answering_passages
from contriever.io import atomic_write, write_json
from contriever.retrieval.retrievers import BM25Retriever, DenseRetriever, HybridRetriever, Retriever
from contriever.retrieval.runs import Run
from contriever.retrieval.settings import EncodingSettings, SearchSettings, merge_settings

PAPER_KS = (1, 5, 20, 100)
RRF_K = 60


@dataclass(frozen=True)
class QASettings:
    """What `evaluate_qa` measures and how it reads the questions; how the passages are encoded and
    the index searched are the `EncodingSettings` and `SearchSettings` values beside it."""

    ks: tuple[int, ...] = PAPER_KS  # the accuracy's depths (kept sorted, each once)
    match: str | None = None  # the match type of questions that name none (None: "string")
    skip_bad: bool = False  # skip and count bad questions instead of stopping at the first
    keep_bad_regex: bool = False  # a regex answer that does not compile never matches (DPR's rule)
    answerable_only: bool = False  # only the questions some passage of the corpus answers
    bm25_index: str | os.PathLike | None = None  # BM25 kept here: loaded if present, else built and saved
    show_progress: bool = True
    command: str | None = None  # the command line, recorded in the metrics

    def __post_init__(self):
        if not self.ks or any(k < 1 for k in self.ks):
            raise ValueError(f"ks must be positive ranks, got {tuple(self.ks)}")
        object.__setattr__(self, "ks", tuple(sorted(set(self.ks))))

    @property
    def depth(self) -> int:
        """The deepest k: how many passages each system retrieves."""
        return self.ks[-1]


@dataclass
class QuestionSet:
    """One question file: its questions and, once measured, each one's first answering passage."""

    path: Path
    name: str
    questions: list[Question]
    stats: QuestionStats
    corpus_passage: list[str | None] = field(default_factory=list)
    n_file: int = 0  # questions read, before answerable_only

    @property
    def ceiling(self) -> float:
        return ceiling(self.corpus_passage)


@dataclass
class Passages:
    """The corpus every system searches: ids, titles and texts in index order."""

    ids: list[str]
    titles: list[str]
    texts: list[str]
    source: str
    words: int = 0

    def __len__(self) -> int:
        return len(self.ids)

    def text_of(self) -> dict[str, str]:
        return dict(zip(self.ids, self.texts, strict=True))


def set_name(path: Path) -> str:
    """`nq-test` for `.../nq-test.jsonl[.gz]`; a folder's `questions.jsonl` takes the folder's name."""
    name = path.name
    for suffix in (".gz", ".jsonl", ".json", ".csv", ".tsv", ".txt"):
        name = name.removesuffix(suffix)
    return path.parent.name if name == "questions" else name


def load_question_sets(
    paths: Sequence[str | os.PathLike], *, skip_bad: bool = False, keep_bad_regex: bool = False, match=None
) -> list[QuestionSet]:
    sets = []
    for path in map(Path, paths):
        stats = QuestionStats()
        questions = load_questions(
            path, skip_bad=skip_bad, keep_bad_regex=keep_bad_regex, match=match or "string", stats=stats
        )
        warn_empty_answers(path, questions)
        sets.append(QuestionSet(path, set_name(path), questions, stats, n_file=len(questions)))
    names = [s.name for s in sets]
    repeated = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if repeated:
        raise UsageError(f"two question files are both named {repeated!r}: their results would collide")
    return sets


# ----- passages --------------------------------------------------------------------------------------------
def _corpus_paths(corpus) -> list[Path]:
    from contriever.data.beir import corpus_file

    paths = [corpus] if isinstance(corpus, (str, os.PathLike)) else list(corpus)
    return [corpus_file(p) if Path(p).is_dir() else Path(p) for p in paths]


def read_corpus(corpus, words: int = 0, *, show_progress: bool = True) -> Passages:
    """Corpus files split into passages of `words` words (0: whole), as `contriever index` splits them."""
    from contriever.data.passages import PassageSettings, iter_passages

    paths = _corpus_paths(corpus)
    ids, titles, texts = [], [], []
    bar = tqdm(desc="reading passages", unit="passage", disable=not show_progress, mininterval=1)
    for passage, _ in iter_passages(paths, PassageSettings(words)):
        ids.append(passage.id)
        titles.append(passage.title)
        texts.append(passage.text)
        bar.update()
    bar.close()
    if not ids:
        raise DataError(paths[0], "no passages in the corpus")
    return Passages(ids, titles, texts, ", ".join(map(str, paths)), words)


def read_store(store, *, show_progress: bool = True, block: int = 50_000) -> Passages:
    ids, titles, texts = [], [], []
    total = len(store)
    for start in tqdm(range(0, total, block), desc="reading passages", disable=not show_progress):
        for pid, title, text in store.range(start, min(start + block, total)):
            ids.append(pid)
            titles.append(title or "")
            texts.append(text)
    return Passages(ids, titles, texts, str(store.path))


def _index_ids(index) -> list[str]:
    source = getattr(index, "source", index)  # an ANN index searches its folder's shards
    return list(source.ids)


def check_same_ids(passages: Passages, index_ids: Sequence[str], index_path) -> None:
    """Refuse a corpus whose passages are not the index's (same ids, same order), naming the first
    difference: its rows would be matched against the wrong texts."""
    if len(passages.ids) != len(index_ids):
        raise DataError(
            passages.source,
            f"{len(passages.ids)} passages, but the index {index_path} holds {len(index_ids)}: "
            "pass the corpus (and --words) the index was built from",
        )
    for row, (ours, theirs) in enumerate(zip(passages.ids, index_ids, strict=True)):
        if ours != theirs:
            raise DataError(
                passages.source,
                f"passage {row} is {ours!r} but the index {index_path} has {theirs!r} there: "
                "pass the corpus (and --words) the index was built from",
            )


# ----- systems ---------------------------------------------------------------------------------------------
def parse_system(model: str) -> tuple[str, str | None]:
    from contriever.evaluation.beir_eval import parse_model

    return parse_model(model)


def system_names(systems: Sequence[str]) -> dict[str, str]:
    """A distinct folder name per system: `bm25`, the model path's tail, `hybrid-` + that tail; numbered
    when two tails coincide."""

    def slug(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "_", text.strip("/")).strip("_")[-50:] or "model"

    names = []
    for model in systems:
        kind, path = parse_system(model)
        names.append({"bm25": "bm25", "dense": slug(str(path)), "hybrid": f"hybrid-{slug(str(path))}"}[kind])
    return {
        model: f"{i + 1}-{name}" if names.count(name) > 1 else name
        for i, (model, name) in enumerate(zip(systems, names, strict=True))
    }


@dataclass
class _Remembered:
    """A retriever whose runs are kept: `hybrid:M` fuses the very runs `bm25` and `M` returned (or
    they reuse its), so each question set is searched once by each."""

    retriever: Retriever
    runs: dict = field(default_factory=dict)

    def retrieve(self, queries: dict[str, str], k: int) -> Run:
        key = (tuple(queries.values()), k)
        if key not in self.runs:
            self.runs[key] = self.retriever.retrieve(queries, k)
        return self.runs[key]


class _Retrievers:
    """Each system's retriever, built on first use from shared parts: one BM25 over the passages, one
    dense retriever a model (the index folder's vectors, or the corpus encoded through the cache)."""

    def __init__(self, passages: Passages, index, corpus, encoding: EncodingSettings, settings: QASettings):
        self.passages = passages
        self.index = index
        self.corpus = corpus
        self.encoding = encoding
        self.settings = settings
        self._bm25: _Remembered | None = None
        self._dense: dict[str, _Remembered] = {}
        self._temporary = []

    def for_system(self, system: str, depth: int) -> Retriever:
        kind, model = parse_system(system)
        if kind == "bm25":
            return self.bm25()
        if kind == "dense":
            return self.dense(model)
        return HybridRetriever(self.bm25(), self.dense(model), "rrf", depth=depth, rrf_k=RRF_K)

    def bm25(self) -> _Remembered:
        if self._bm25 is None:
            corpus = {
                pid: {"title": title, "text": text}
                for pid, title, text in zip(
                    self.passages.ids, self.passages.titles, self.passages.texts, strict=True
                )
            }
            # the query ids are positions (file ids may repeat across sets): never a passage's id to skip
            options = {"ignore_identical_ids": False, "show_progress": self.settings.show_progress}
            folder = self.settings.bm25_index
            retriever = (
                BM25Retriever.kept_in(folder, corpus, **options)
                if folder
                else BM25Retriever(corpus, **options)
            )
            self._bm25 = _Remembered(retriever)
        return self._bm25

    def dense(self, model: str | None) -> _Remembered:
        key = model or ""
        if key not in self._dense:
            index, encoder = self._dense_index(model)
            encoding = self.encoding
            retriever = DenseRetriever(
                encoder,
                index,
                batch_size=encoding.batch_size,
                precision=encoding.precision,
                ignore_identical_ids=False,
                show_progress=self.settings.show_progress,
            )
            self._dense[key] = _Remembered(retriever)
        return self._dense[key]

    def _dense_index(self, model: str | None):
        """`(index, encoder)`: the index folder's (evaluate_qa refused any model but its own), or the
        corpus encoded with `model` into the encode cache (its passages checked to be ours)."""
        from contriever.retrieval.retrieve import encoder_for_index

        encoding = self.encoding
        if self.index is not None:
            return self.index, encoder_for_index(self.index, None, encoding.device)
        from contriever.data.passages import PassageSettings
        from contriever.evaluation.beir_eval import _load_encoder
        from contriever.retrieval.encode import cached_index
        from contriever.retrieval.shards import open_index

        path = None if model == "default" else model
        encoder = _load_encoder(path, encoding.max_length, encoding.device, encoding.text_options())
        folder, _, temporary = cached_index(
            _corpus_paths(self.corpus),
            encoder,
            model=model,
            passages=PassageSettings(self.passages.words),
            batch_size=encoding.batch_size,
            precision=encoding.precision,
            show_progress=self.settings.show_progress,
            use_cache=encoding.use_cache,
        )
        if temporary is not None:
            self._temporary.append(temporary)
        index = open_index(folder)
        check_same_ids(self.passages, _index_ids(index), folder)
        return index, encoder

    def close(self) -> None:
        for temporary in self._temporary:
            temporary.cleanup()


def retrieve(retrievers: _Retrievers, system: str, questions: list[Question], depth: int) -> list[list[str]]:
    """Each question's `depth` best passage ids, best first, for one system: a dense run as the index
    ranked it (ties by row), BM25's and the fusion's by score, then id."""
    keys = [str(i) for i in range(len(questions))]  # file ids may repeat across sets: positions do not
    run = retrievers.for_system(system, depth).retrieve(
        dict(zip(keys, (q.question for q in questions), strict=True)), depth
    )
    if parse_system(system)[0] == "dense":
        return [list(run.get(key, {}))[:depth] for key in keys]
    ranked = (sorted(run.get(key, {}).items(), key=lambda item: (-item[1], item[0])) for key in keys)
    return [[doc for doc, _ in docs[:depth]] for docs in ranked]


# ----- matching and reports --------------------------------------------------------------------------------
def hit_ranks(
    questions: Sequence[Question],
    retrieved_ids: Sequence[Sequence[str]],
    texts: dict[str, str],
    match: str | None = None,
    show_progress: bool = True,
    prepared: dict[tuple[str, str], str] | None = None,
) -> list[int | None]:
    """The 1-based rank of each question's first passage holding an answer (None: none does), each
    question matched by its own match type (`match` overrides it). `prepared`: `{(match type, passage
    id): qa.prepare_passage(text, match type)}`, filled as passages are prepared (pass one to share it)."""
    ranks: list[int | None] = []
    prepared = {} if prepared is None else prepared
    for question, ids in tqdm(
        zip(questions, retrieved_ids, strict=True),
        total=len(questions),
        desc="matching answers",
        unit="question",
        disable=not show_progress,
    ):
        kind = match or question.match
        matcher = AnswerMatcher(question.answers, kind)
        rank = None
        for position, doc in enumerate(ids, start=1):
            key = (kind, doc)
            if key not in prepared:
                prepared[key] = prepare_passage(texts[doc], kind)
            if matcher.matches(prepared[key]):
                rank = position
                break
        ranks.append(rank)
    return ranks


def _accuracy_curve(ranks: Sequence[int | None], depth: int) -> list[float]:
    counts = [0] * (depth + 1)
    for rank in ranks:
        if rank is not None and rank <= depth:
            counts[rank] += 1
    curve, total = [], 0
    for k in range(1, depth + 1):
        total += counts[k]
        curve.append(total / len(ranks))
    return curve


def plot_accuracy(results: dict, png: Path) -> Path | None:
    """Accuracy against k (log scale) for every system, one panel per question set, ceilings dashed."""
    try:
        import matplotlib
    except ImportError:
        import logging

        logging.getLogger(__name__).warning(
            "matplotlib is not installed (pip install contriever[plot]): no plot"
        )
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = results["sets"]
    fig, axes = plt.subplots(1, len(sets), figsize=(4.2 * len(sets), 3.6), squeeze=False)
    for ax, (name, entry) in zip(axes[0], sets.items()):
        for system, metrics in entry["systems"].items():
            curve = metrics.get("curve")
            if curve:
                ax.plot(range(1, len(curve) + 1), [100 * v for v in curve], label=system)
        ax.axhline(100 * entry["ceiling"], color="grey", linestyle="--", label="ceiling (corpus)")
        ax.set_xscale("log")
        ax.set_xlabel("k (passages)")
        ax.set_ylabel("top-k accuracy (%)")
        ax.set_title(f"{name} ({entry['n_questions']} q.)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_write(png, "wb") as handle:
        fig.savefig(handle, format="png", dpi=110)
    plt.close(fig)
    return png


def _write_results(path: Path, qset: QuestionSet, retrieved: list[list[str]], ranks) -> None:
    with atomic_write(path) as handle:
        for number, (question, ids, rank) in enumerate(zip(qset.questions, retrieved, ranks, strict=True)):
            record = {
                "id": question.id,
                "question": question.question,
                "answers": question.answers,
                "match": question.match,
                "hit_rank": rank,
                "hit_passage": ids[rank - 1] if rank else None,
                "corpus_passage": qset.corpus_passage[number] if qset.corpus_passage else None,
                "retrieved": ids,
            }
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


# ----- the job ---------------------------------------------------------------------------------------------
def evaluate_qa(
    questions: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    corpus=None,
    models: str | Sequence[str] | None = None,
    output_dir: str | os.PathLike | None = None,
    settings: QASettings | None = None,
    encoding: EncodingSettings | None = None,
    search: SearchSettings | None = None,
    **options,
) -> dict:
    """Top-k accuracy of every system on every question file (see the module doc): load the questions
    and passages, measure the ceilings, build the retrievers, retrieve, score, write.

    Returns `{"sets": {name: {"n_questions", "ceiling", "n_answerable", "systems": {system: {"top1",
    ...}}}}, "meta"}`; a single question file and a single system also put that system's `top*` at the
    top level. `options` are the settings' fields by name (`ks=(1, 5), words=100, index_path=IDX,
    show_progress=False, ...`), laid over `settings` (`QASettings`), `encoding` (the corpus's passages,
    batch size, precision, the encode cache) and `search` (`index_path`: the index folder, `ann` and
    its parameters; `k` is set to the deepest of `ks`)."""
    started = time.perf_counter()
    settings, encoding, search = _merge_settings(settings, encoding, search, options)
    paths = [questions] if isinstance(questions, (str, os.PathLike)) else list(questions)
    if not paths:
        raise UsageError("no question files")
    if search.index_path is None and corpus is None:
        raise UsageError("name the passages: --index IDX (a built index folder) or --corpus FILE...")
    sets = load_question_sets(
        paths, skip_bad=settings.skip_bad, keep_bad_regex=settings.keep_bad_regex, match=settings.match
    )
    passages, index, corpus = _load_passages(corpus, encoding.words, search, settings.show_progress)
    systems = _systems(models, index, search.index_path)
    prepared, ceiling_s = _measure_ceilings(sets, passages, settings.show_progress)
    results: dict = {"sets": _set_entries(sets, settings.answerable_only)}
    results["meta"] = _meta(passages, systems, settings, search, ceiling_s)
    output = Path(output_dir) if output_dir is not None else None
    retrievers = _Retrievers(passages, index, corpus, encoding, settings)
    scoring = _Scoring(settings, search.k, passages.text_of(), prepared, results, output)
    try:
        folders = system_names(systems)
        for system in systems:
            for qset in sets:
                if qset.questions:
                    searching = time.perf_counter()
                    retrieved = retrieve(retrievers, system, qset.questions, search.k)
                    seconds = time.perf_counter() - searching
                    scoring.score(qset, system, retrieved, seconds, folders[system])
    finally:
        retrievers.close()
    results["meta"]["total_s"] = round(time.perf_counter() - started, 1)
    if output is not None:
        write_json(output / "metrics.json", results)
        plot_accuracy(results, output / "accuracy.png")
    if len(sets) == 1 and len(systems) == 1:
        only = results["sets"][sets[0].name]
        results.update({k: v for k, v in only["systems"][systems[0]].items() if k.startswith("top")})
        results.update(n_questions=only["n_questions"], ceiling=only["ceiling"])
    return results


def _merge_settings(
    settings: QASettings | None,
    encoding: EncodingSettings | None,
    search: SearchSettings | None,
    options: dict,
) -> tuple[QASettings, EncodingSettings, SearchSettings]:
    """The three settings values (defaults for None) with `options`, named as their fields, laid over
    them; the search's depth is the deepest k measured."""
    names = {f.name for f in dataclasses.fields(QASettings)}
    settings = dataclasses.replace(
        settings or QASettings(), **{k: v for k, v in options.items() if k in names}
    )
    encoding, search = merge_settings(encoding, search, {k: v for k, v in options.items() if k not in names})
    return settings, encoding, dataclasses.replace(search, k=settings.depth)


def _load_passages(corpus, words: int, search: SearchSettings, show_progress: bool):
    """`(passages, the index loaded for search or None, the corpus files or None)`. With an index
    folder: the corpus given, else its passage store, else the corpus it records, split as the folder
    was, and its ids checked to be the index's before anything is searched."""
    if search.index_path is None:
        return read_corpus(corpus, words, show_progress=show_progress), None, corpus
    from contriever.retrieval.index import load_for_search

    index, store = load_for_search(search.index_path, search)
    recorded = index.metadata
    words = int((recorded.get("passages") or {}).get("words") or 0)
    if corpus is None and store is None:
        corpus = recorded.get("corpus")
        if not corpus:
            raise DataError(
                search.index_path,
                "the index does not record its corpus: pass the corpus it was built from (--corpus)",
            )
    if corpus:
        passages = read_corpus(corpus, words, show_progress=show_progress)
    else:
        passages = read_store(store, show_progress=show_progress)
    check_same_ids(passages, _index_ids(index), search.index_path)  # before any search
    return passages, index, corpus


def _systems(models: str | Sequence[str] | None, index, index_path) -> list[str]:
    """The systems named (None: the index's model, else the default model); with an index folder,
    a dense model must be the one that made its vectors."""
    recorded = str(index.metadata.get("model") or "default") if index is not None else "default"
    systems = [models] if isinstance(models, str) else list(models or []) or [recorded]
    if index is not None:
        for name in systems:
            wanted = parse_system(name)[1]
            if wanted is not None and wanted != recorded:
                raise UsageError(
                    f"--model {name}: the index {index_path} holds {recorded}'s vectors; name that model "
                    "(or leave --index out and pass --corpus to encode the corpus with this one)"
                )
    return systems


def _measure_ceilings(sets: list[QuestionSet], passages: Passages, show_progress: bool):
    """Each question's first answering passage in the corpus (`corpus_passage`), one pass over the
    passages for every question file with the accuracy's own matching: `(prepared, seconds)`, where
    `prepared` holds every passage's DPR tokens for `hit_ranks`, made once here."""
    started = time.perf_counter()
    everything = [q for qset in sets for q in qset.questions]
    tokenized: list[str] = []  # every passage's joined DPR tokens
    first = first_answering_passages(
        everything,
        zip(passages.ids, passages.texts),
        total=len(passages),
        show_progress=show_progress,
        prepared=tokenized,
    )
    prepared = {("string", pid): joined for pid, joined in zip(passages.ids, tokenized, strict=True)}
    offset = 0
    for qset in sets:
        qset.corpus_passage = first[offset : offset + len(qset.questions)]
        offset += len(qset.questions)
    return prepared, time.perf_counter() - started


def _set_entries(sets: list[QuestionSet], answerable_only: bool) -> dict:
    """Each set's counts and ceilings; with `answerable_only`, its questions cut to the answerable."""
    entries = {}
    for qset in sets:
        entry = {
            "questions": str(qset.path),
            "n_file": qset.n_file,
            "skipped_bad": qset.stats.skipped,
            "bad_patterns_never_match": len(qset.stats.bad_patterns),
            "ceiling_all": qset.ceiling,
            "n_answerable": sum(p is not None for p in qset.corpus_passage),
        }
        if answerable_only:
            keep = [i for i, p in enumerate(qset.corpus_passage) if p is not None]
            qset.questions = [qset.questions[i] for i in keep]
            qset.corpus_passage = [qset.corpus_passage[i] for i in keep]
        entry.update(n_questions=len(qset.questions), ceiling=qset.ceiling if qset.questions else 0.0)
        entry["systems"] = {}
        entries[qset.name] = entry
    return entries


def _meta(passages: Passages, systems: list[str], settings: QASettings, search: SearchSettings, ceiling_s):
    return {
        "passages": len(passages),
        "corpus": passages.source,
        "words": passages.words,
        "index": str(search.index_path) if search.index_path is not None else None,
        "ann": search.ann,
        "ks": list(settings.ks),
        "answerable_only": settings.answerable_only,
        "systems": systems,
        "rrf_k": RRF_K,
        "ceiling_s": round(ceiling_s, 1),
        "command": settings.command,
        "host": {"python": platform.python_version(), "cpus": os.cpu_count()},
    }


@dataclass
class _Scoring:
    """Scores each system's retrieved passages on a question set into `results` (and `output`)."""

    settings: QASettings
    depth: int
    texts: dict[str, str]
    prepared: dict[tuple[str, str], str]  # passages prepared for matching, shared by every system
    results: dict
    output: Path | None

    def score(self, qset: QuestionSet, system: str, retrieved: list[list[str]], seconds: float, folder: str):
        settings = self.settings
        ranks = hit_ranks(
            qset.questions, retrieved, self.texts, settings.match, settings.show_progress, self.prepared
        )
        self.results["sets"][qset.name]["systems"][system] = {
            **accuracy_from_ranks(ranks, settings.ks),
            "retrieval_s": round(seconds, 2),
            "curve": _accuracy_curve(ranks, self.depth),
        }
        if self.output is not None:  # every result as it is made: a long run shows its progress
            _write_results(self.output / qset.name / folder / "results.jsonl", qset, retrieved, ranks)
            write_json(self.output / "metrics.json", self.results)


def format_accuracy(results: dict, title: str | None = None) -> str:
    """The paper's table: top-k accuracy x100 per system, with the set's ceiling on every row."""
    lines = [title] if title else []
    for name, entry in results["sets"].items():
        ks = results["meta"]["ks"]
        scope = "answerable questions only" if results["meta"].get("answerable_only") else "all questions"
        lines.append(
            f"{name}: {entry['n_questions']} questions ({scope}); ceiling {100 * entry['ceiling']:.1f} = the share "
            f"with an answering passage in this corpus ({results['meta']['passages']} passages)"
        )
        header = f"{'system':<28}" + "".join(f"{'top-' + str(k):>9}" for k in ks) + f"{'ceiling':>9}"
        lines.append(header)
        for system, metrics in entry["systems"].items():
            row = f"{system[-28:]:<28}" + "".join(f"{100 * metrics[f'top{k}']:9.1f}" for k in ks)
            lines.append(row + f"{100 * entry['ceiling']:9.1f}")
    return "\n".join(lines)
