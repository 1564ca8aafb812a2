"""`contriever evaluate-qa`: its arguments and its handler (the job is `contriever.evaluation.qa_eval`)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from contriever.cli.argtypes import non_negative_int, output_folder, positive_int
from contriever.cli.options import (
    add_ann_options,
    add_batch_size,
    add_no_cache,
    add_precision,
    check_models,
    search_settings,
)
from contriever.errors import UsageError

SUMMARY = (
    "top-k accuracy on open-domain QA questions (DPR's answer matching), several systems and question "
    "files at once, each with its ceiling on the corpus"
)
EXAMPLE = (
    "contriever evaluate-qa --questions ../shared/data/qa/*.jsonl "
    "--corpus ../shared/data/enwiki-2015-sample/part-0*.jsonl.gz --words 100 --model bm25 --output out/qa"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--questions",
        nargs="+",
        required=True,
        help='question files: .jsonl/.json (id, question, answers, optional "match": "regex") or DPR\'s '
        ".csv/.tsv (question<TAB>['answer', ...])",
    )
    p.add_argument("--index", help="index folder written by `contriever index` (its passages and vectors)")
    p.add_argument(
        "--corpus",
        nargs="+",
        help="corpus files (BEIR folder or corpus.jsonl[.gz], enwiki .jsonl.gz parts, DPR psgs_w100.tsv); "
        "with --index: the files it was built from (their passage ids must be the index's)",
    )
    p.add_argument(
        "--words",
        type=non_negative_int,
        default=0,
        help="split --corpus into passages of this many words, title carried, ids DOCID#N, as `contriever "
        "index --words` does (0: whole documents); with --index, the folder's own split is used",
    )
    p.add_argument(
        "--model",
        action="append",
        help="'default', a model folder, 'bm25' or 'hybrid:M' (repeat to compare); None: the index's "
        "model, or the default model",
    )
    _add_scoring_arguments(p)
    p.add_argument(
        "--bm25-index",
        help="folder to keep the BM25 index of these passages in: built and saved if absent, reused if present",
    )
    add_batch_size(p)
    add_no_cache(p)
    p.add_argument(
        "--output",
        type=output_folder,
        help="folder for metrics.json, SET/SYSTEM/results.jsonl and accuracy.png",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_scoring_arguments(p: argparse.ArgumentParser) -> None:
    """What is measured: the depths, the matching, which questions count."""
    p.add_argument(
        "--k", type=positive_int, action="append", help="accuracy at this depth (repeat); None: 1, 5, 20, 100"
    )
    p.add_argument(
        "--match",
        choices=("string", "regex"),
        help="match type of questions that name none (DPR's CSV files cannot: regex for curatedtrec-test.csv); "
        "None: string",
    )
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="skip and count bad questions (no answers, empty question, bad regex, repeated id) instead of "
        "stopping at the first",
    )
    p.add_argument(
        "--keep-bad-regex",
        action="store_true",
        help="keep a question whose regex answer does not compile, that pattern never matching (DPR's rule; "
        "CuratedTREC's test set has 3 such)",
    )
    p.add_argument(
        "--answerable-only",
        action="store_true",
        help="evaluate only the questions some passage of the corpus answers (for small corpus slices)",
    )


def run(args: argparse.Namespace) -> int:
    from contriever.cli.evaluate import output_names

    if not args.index and not args.corpus:
        raise UsageError("name the passages: --index IDX (a built index folder) or --corpus FILE...")
    if args.index and args.words:
        raise UsageError(f"--words: the index folder {args.index} already fixes how its corpus was split")
    models = args.model or []
    check_models(*models)
    output_names(models)  # refuses a system named twice
    from contriever.evaluation.qa_eval import evaluate_qa, format_accuracy

    settings, encoding, search = _settings(args)
    results = evaluate_qa(
        args.questions,
        corpus=args.corpus,
        models=models or None,
        output_dir=args.output,
        settings=settings,
        encoding=encoding,
        search=search,
    )
    where = args.index or " ".join(Path(c).name for c in args.corpus)
    print(format_accuracy(results, title=f"top-k accuracy (x100) on {where}"))
    for name, entry in results["sets"].items():
        if entry["skipped_bad"] or entry["bad_patterns_never_match"]:
            print(
                f"{name}: {entry['skipped_bad']} bad questions skipped, "
                f"{entry['bad_patterns_never_match']} regex answers that do not compile kept as never matching"
            )
    if args.output:
        print(f"wrote {args.output} (metrics.json, per-question results.jsonl, accuracy.png)")
    return 0


def _settings(args: argparse.Namespace):
    """`(QASettings, EncodingSettings, SearchSettings)` from the command's options."""
    from contriever.evaluation.qa_eval import PAPER_KS, QASettings
    from contriever.retrieval.settings import EncodingSettings

    ks = tuple(args.k or PAPER_KS)
    settings = QASettings(
        ks=ks,
        match=args.match,
        skip_bad=args.skip_bad,
        keep_bad_regex=args.keep_bad_regex,
        answerable_only=args.answerable_only,
        bm25_index=args.bm25_index,
        show_progress=not args.quiet,
        command=shlex.join(["contriever", *sys.argv[1:]]) if sys.argv[1:] else None,
    )
    encoding = EncodingSettings(
        precision=args.precision, words=args.words, batch_size=args.batch_size, use_cache=not args.no_cache
    )
    return settings, encoding, search_settings(args, k=max(ks))


def add_subcommand(sub, make_subcommand) -> None:
    p = make_subcommand(sub, "evaluate-qa", SUMMARY, EXAMPLE, run)
    add_arguments(p)
    add_precision(p)
    add_ann_options(p)
