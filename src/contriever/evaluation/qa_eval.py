"""The open-domain QA evaluation job behind `evaluate-qa`: question files + passages + systems -> top-k
accuracy, with each question set's ceiling on this corpus.

The paper's Table 1 (and DPR's): top-k accuracy, the share of questions with an answer in one of
their k best passages, matched with DPR's rule (`contriever.evaluation.qa`: the passage *text*, not
its title; `"match": "regex"` questions as CuratedTREC's patterns).

**Passages.** One corpus for every system, read once into memory:

- `index`: an index folder (`contriever index`): its passage store, or, when `corpus` is also given,
  the corpus it was built from, split as the folder records (`--words`). The corpus's passage ids
  must be the folder's, in order: a different corpus is refused before anything is searched;
- `corpus` alone: corpus files (`corpus.jsonl[.gz]` or a BEIR folder, DPR's `psgs_w100.tsv`, enwiki
  `.jsonl.gz` parts), split into passages of `words` words (0: whole documents), ids `DOCID#N`.

**Systems** (`models`, several in one run, as `evaluate` takes them): a dense model (the index's
vectors, or the corpus encoded through the encode cache), `"bm25"` (bm25s, the project's settings:
k1 0.9, b 0.4, Porter stemmer, English stop words; the index can be kept in `bm25_index` and
reused), and `"hybrid:M"`: reciprocal rank fusion (k 60) of BM25's and M's top `max(ks)`.

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

PAPER_KS = (1, 5, 20, 100)
RRF_K = 60


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


class _Retrievers:
    """Builds each retriever once (BM25 over the passages, the dense index and its encoder)."""

    def __init__(self, passages: Passages, index, index_path, options: dict):
        self.passages = passages
        self.index = index
        self.index_path = index_path
        self.options = options
        self._bm25 = None
        self._dense: dict[str, tuple] = {}
        self._temporary = []
        self.ranked: dict[tuple, list] = {}  # (system, question list, depth) -> ranked lists

    def bm25(self):
        if self._bm25 is None:
            from contriever.retrieval.bm25 import build_bm25, load_bm25, save_bm25

            folder = self.options.get("bm25_index")
            if folder and Path(folder, "bm25.json").is_file():
                self._bm25 = load_bm25(folder)
                if self._bm25.doc_ids != self.passages.ids:
                    raise DataError(folder, "this BM25 index holds other passages than the corpus: delete it")
            else:
                corpus = {
                    pid: {"title": title, "text": text}
                    for pid, title, text in zip(
                        self.passages.ids, self.passages.titles, self.passages.texts, strict=True
                    )
                }
                self._bm25 = build_bm25(corpus, show_progress=self.options["show_progress"])
                if folder:
                    save_bm25(self._bm25, folder)
        return self._bm25

    def dense(self, model: str | None):
        """`(index, encoder)`: the index folder's (model None or the folder's), or the corpus encoded."""
        key = model or ""
        if key in self._dense:
            return self._dense[key]
        from contriever.retrieval.retrieve import encoder_for_index

        if self.index is not None:  # its own model (evaluate_qa refused any other)
            self._dense[key] = (self.index, encoder_for_index(self.index, None))
            return self._dense[key]
        from contriever.data.passages import PassageSettings
        from contriever.evaluation.beir_eval import _load_encoder
        from contriever.retrieval.encode import cached_index
        from contriever.retrieval.shards import open_index

        corpus = self.options.get("corpus")
        if corpus is None:
            raise UsageError(f"--model {model} needs --index or --corpus")
        encoder = _load_encoder(None if model == "default" else model, None, None)
        folder, _, temporary = cached_index(
            _corpus_paths(corpus),
            encoder,
            model=model,
            passages=PassageSettings(self.passages.words),
            batch_size=self.options["batch_size"],
            precision=self.options["precision"],
            show_progress=self.options["show_progress"],
            use_cache=self.options["use_cache"],
        )
        if temporary is not None:
            self._temporary.append(temporary)
        index = open_index(folder)
        check_same_ids(self.passages, _index_ids(index), folder)
        self._dense[key] = (index, encoder)
        return self._dense[key]

    def close(self) -> None:
        for temporary in self._temporary:
            temporary.cleanup()


def _dense_ranked(retrievers: _Retrievers, model: str | None, questions: list[Question], depth: int, options):
    key = (model, id(questions), depth)  # dense and hybrid:M of one run encode the questions once
    if key not in retrievers.ranked:
        retrievers.ranked[key] = _dense_search(retrievers, model, questions, depth, options)
    return retrievers.ranked[key]


def _dense_search(retrievers: _Retrievers, model: str | None, questions: list[Question], depth: int, options):
    index, encoder = retrievers.dense(model)
    vectors = encoder.encode_queries(
        [q.question for q in questions],
        batch_size=options["batch_size"],
        precision=options["precision"],
        show_progress=options["show_progress"],
    )
    scores, ids = index.search(vectors, depth, show_progress=options["show_progress"])
    return [
        [(doc, float(score)) for doc, score in zip(row_ids, row_scores, strict=True) if doc is not None]
        for row_ids, row_scores in zip(ids, scores, strict=True)
    ]


def _bm25_ranked(retrievers: _Retrievers, questions: list[Question], depth: int, options):
    key = ("bm25", id(questions), depth)
    if key not in retrievers.ranked:
        retrievers.ranked[key] = _bm25_search(retrievers, questions, depth, options)
    return retrievers.ranked[key]


def _bm25_search(retrievers: _Retrievers, questions: list[Question], depth: int, options):
    from contriever.retrieval.bm25 import bm25_search

    keys = [str(i) for i in range(len(questions))]  # file ids may repeat across sets: positions do not
    run = bm25_search(
        retrievers.bm25(),
        dict(zip(keys, (q.question for q in questions), strict=True)),
        depth,
        ignore_identical_ids=False,
        show_progress=options["show_progress"],
    )
    return [sorted(run.get(key, {}).items(), key=lambda item: (-item[1], item[0])) for key in keys]


def _rrf(lists: Sequence[Sequence[tuple[str, float]]], depth: int) -> list[tuple[str, float]]:
    from contriever.retrieval.hybrid import reciprocal_rank_fusion

    runs = [{"q": dict(ranked)} for ranked in lists]
    fused = reciprocal_rank_fusion(runs, k=RRF_K, top_k=depth)["q"]
    return sorted(fused.items(), key=lambda item: (-item[1], item[0]))


def retrieve(retrievers: _Retrievers, model: str, questions: list[Question], depth: int, options):
    """Each question's `depth` best `(passage id, score)`, best first, for one system."""
    system, path = parse_system(model)
    if system == "bm25":
        return _bm25_ranked(retrievers, questions, depth, options)
    if system == "dense":
        return _dense_ranked(retrievers, path, questions, depth, options)
    sparse = _bm25_ranked(retrievers, questions, depth, options)
    dense = _dense_ranked(retrievers, path, questions, depth, options)
    return [_rrf([s, d], depth) for s, d in zip(sparse, dense, strict=True)]


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


def _write_results(path: Path, qset: QuestionSet, ranked, ranks, depth: int) -> None:
    with atomic_write(path) as handle:
        for number, (question, docs, rank) in enumerate(zip(qset.questions, ranked, ranks, strict=True)):
            ids = [doc for doc, _ in docs[:depth]]
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
    index: str | os.PathLike | None = None,
    corpus=None,
    *,
    models: Sequence[str] | None = None,
    model: str | None = None,
    words: int = 0,
    ks: Sequence[int] = PAPER_KS,
    match: str | None = None,
    batch_size: int | None = None,
    precision: str = "auto",
    output_dir: str | os.PathLike | None = None,
    show_progress: bool = True,
    skip_bad: bool = False,
    keep_bad_regex: bool = False,
    answerable_only: bool = False,
    bm25_index: str | os.PathLike | None = None,
    use_cache: bool = True,
    ann: str | None = None,
    nprobe: int | None = None,
    ef_search: int | None = None,
    rerank: int | None = None,
    command: str | None = None,
) -> dict:
    """Top-k accuracy of every system on every question file (see the module doc):
    `{"sets": {name: {"n_questions", "ceiling", "n_answerable", "systems": {system: {"top1", ...}}}}, "meta"}`.
    A single question file and a single system also put that system's `top*` at the top level."""
    started = time.perf_counter()
    if not ks or any(k < 1 for k in ks):
        raise ValueError(f"ks must be positive ranks, got {tuple(ks)}")
    ks = sorted(set(ks))
    depth = max(ks)
    paths = [questions] if isinstance(questions, (str, os.PathLike)) else list(questions)
    if not paths:
        raise UsageError("no question files")
    if model is not None and models:
        raise UsageError("pass model or models, not both")
    if index is None and corpus is None:
        raise UsageError("name the passages: --index IDX (a built index folder) or --corpus FILE...")
    sets = load_question_sets(paths, skip_bad=skip_bad, keep_bad_regex=keep_bad_regex, match=match)

    loaded_index = None
    if index is not None:
        from contriever.retrieval.index import load_for_search

        loaded_index, store = load_for_search(index, ann, nprobe=nprobe, ef_search=ef_search, rerank=rerank)
        recorded = loaded_index.metadata
        words = int((recorded.get("passages") or {}).get("words") or 0)
        if corpus is None and store is None:
            corpus = recorded.get("corpus")
            if not corpus:
                raise DataError(
                    index,
                    "the index does not record its corpus: pass the corpus it was built from (--corpus)",
                )
        passages = read_corpus(corpus, words, show_progress=show_progress) if corpus else read_store(store)
        check_same_ids(passages, _index_ids(loaded_index), index)  # before any search
        default_models = [str(recorded.get("model") or "default")]
    else:
        passages = read_corpus(corpus, words, show_progress=show_progress)
        default_models = ["default"]
    systems = list(models) if models else ([model] if model else default_models)
    if loaded_index is not None:
        recorded_model = str(loaded_index.metadata.get("model") or "default")
        for name in systems:
            wanted = parse_system(name)[1]
            if wanted is not None and wanted != recorded_model:
                raise UsageError(
                    f"--model {name}: the index {index} holds {recorded_model}'s vectors; name that model "
                    "(or leave --index out and pass --corpus to encode the corpus with this one)"
                )

    # ceilings: one pass over the corpus for every question file, the accuracy's own matching
    ceiling_started = time.perf_counter()
    everything = [q for qset in sets for q in qset.questions]
    tokenized: list[str] = []  # every passage's joined DPR tokens, made once here for all the matching
    first = first_answering_passages(
        everything,
        zip(passages.ids, passages.texts),
        total=len(passages),
        show_progress=show_progress,
        prepared=tokenized,
    )
    prepared = {("string", pid): joined for pid, joined in zip(passages.ids, tokenized, strict=True)}
    del tokenized
    offset = 0
    for qset in sets:
        qset.corpus_passage = first[offset : offset + len(qset.questions)]
        offset += len(qset.questions)
    ceiling_s = time.perf_counter() - ceiling_started
    results: dict = {"sets": {}, "meta": {}}
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
        results["sets"][qset.name] = entry
    results["meta"] = {
        "passages": len(passages),
        "corpus": passages.source,
        "words": passages.words,
        "index": str(index) if index is not None else None,
        "ann": ann,
        "ks": ks,
        "answerable_only": answerable_only,
        "systems": systems,
        "rrf_k": RRF_K,
        "ceiling_s": round(ceiling_s, 1),
        "command": command,
        "host": {"python": platform.python_version(), "cpus": os.cpu_count()},
    }
    output = Path(output_dir) if output_dir is not None else None
    options = {
        "batch_size": batch_size,
        "precision": precision,
        "show_progress": show_progress,
        "use_cache": use_cache,
        "bm25_index": bm25_index,
        "corpus": corpus,
    }
    retrievers = _Retrievers(passages, loaded_index, index, options)
    texts = passages.text_of()
    folders = system_names(systems)
    try:
        for system in systems:
            for qset in sets:
                if not qset.questions:
                    continue
                searching = time.perf_counter()
                ranked = retrieve(retrievers, system, qset.questions, depth, options)
                search_s = time.perf_counter() - searching
                retrieved = [[doc for doc, _ in docs[:depth]] for docs in ranked]
                ranks = hit_ranks(qset.questions, retrieved, texts, match, show_progress, prepared)
                metrics = {
                    **accuracy_from_ranks(ranks, ks),
                    "retrieval_s": round(search_s, 2),
                    "curve": _accuracy_curve(ranks, depth),
                }
                results["sets"][qset.name]["systems"][system] = metrics
                if output is not None:
                    _write_results(
                        output / qset.name / folders[system] / "results.jsonl", qset, ranked, ranks, depth
                    )
                    write_json(output / "metrics.json", results)
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
