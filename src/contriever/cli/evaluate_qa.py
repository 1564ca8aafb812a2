"""`contriever evaluate-qa`: top-k answer accuracy of an index on open-domain QA questions."""

from __future__ import annotations

import argparse
from pathlib import Path

from contriever.cli.argtypes import output_folder, positive_int
from contriever.cli.options import add_ann_options, add_batch_size, add_precision, check_models


def cmd_evaluate_qa(args: argparse.Namespace) -> int:
    check_models(args.model)
    from contriever.evaluation.qa_eval import evaluate_qa, format_accuracy

    metrics = evaluate_qa(
        args.questions,
        args.index,
        args.corpus,
        model=args.model,
        ks=args.k or [1, 5, 20, 100],
        match=args.match,
        batch_size=args.batch_size,
        precision=args.precision,
        output_dir=args.output,
        ann=args.ann,
        nprobe=args.nprobe,
        ef_search=args.ef_search,
        rerank=args.rerank,
    )
    print(format_accuracy(metrics, title=f"{Path(args.questions).name} on {args.index}"))
    if args.output:
        print(f"wrote {args.output}")
    return 0


def add_subcommand(sub, make_subcommand) -> None:
    p = make_subcommand(
        sub,
        "evaluate-qa",
        "top-k accuracy of an index on open-domain QA questions (DPR's answer matching)",
        "contriever evaluate-qa --questions nq-test.csv --index indexes/wiki --output out/nq",
        cmd_evaluate_qa,
    )
    p.add_argument(
        "--questions",
        required=True,
        help="DPR question file: .csv/.tsv (question<TAB>['answer', ...]) or .jsonl/.json (question, answers)",
    )
    p.add_argument("--index", required=True, help="index folder written by `contriever index`")
    p.add_argument(
        "--corpus",
        help="the corpus the index was built from (BEIR folder, corpus.jsonl[.gz] or DPR psgs_w100.tsv[.gz]); "
        "None: the one the index records",
    )
    p.add_argument("--model", help="model to encode the questions; None: the one the index records")
    p.add_argument(
        "--k", type=positive_int, action="append", help="accuracy at this depth (repeat); None: 1, 5, 20, 100"
    )
    p.add_argument(
        "--match",
        choices=("string", "regex"),
        default="string",
        help="DPR's answer matching: token sequences (string) or answers as regexes (CuratedTREC)",
    )
    add_batch_size(p, "questions")
    add_precision(p)
    p.add_argument("--output", type=output_folder, help="folder for metrics.json and results.jsonl")
    add_ann_options(p)
