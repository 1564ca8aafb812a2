"""`contriever prepare`: tokenize raw text into memory-mapped token streams for pretraining."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from contriever.cli.argtypes import output_folder, positive_int
from contriever.cli.options import check_models


def cmd_prepare(args: argparse.Namespace) -> int:
    check_models(args.model)
    from contriever.data.prepare import DocumentSettings, prepare
    from contriever.model.locate import locate_model

    tokenizer = str(locate_model(args.model))
    documents = DocumentSettings(
        text_field=args.text_field,
        title_field=args.title_field,
        include_title=args.include_title,
        lowercase=args.lowercase,
        normalize_text=args.normalize_text,
    )
    prepare(
        [Path(p) for p in args.input], tokenizer, Path(args.output), documents=documents, workers=args.workers
    )
    return 0


def add_subcommand(sub, make_subcommand) -> None:
    p = make_subcommand(
        sub,
        "prepare",
        "tokenize raw text into memory-mapped token streams for pretraining",
        "contriever prepare --input ../shared/data/enwiki-2015-sample/part-00.jsonl.gz --output data/enwiki",
        cmd_prepare,
    )
    p.add_argument("--input", nargs="+", required=True, help="jsonl / txt files, gzip allowed")
    p.add_argument(
        "--model", default="default", help="model folder whose tokenizer to use, 'default' or 'multilingual'"
    )
    p.add_argument(
        "--output",
        type=output_folder,
        required=True,
        help="folder to write (tokens.bin, doc_offsets.npy, meta.json)",
    )
    p.add_argument("--text-field", default="text", help="JSON field holding a document's text")
    p.add_argument("--title-field", default="title", help="JSON field holding a document's title")
    p.add_argument("--include-title", action="store_true", help="prefix each document with its title")
    p.add_argument(
        "--workers", type=positive_int, default=max(1, (os.cpu_count() or 1)), help="tokenizing processes"
    )
    p.add_argument("--lowercase", action="store_true", help="lowercase the text before tokenizing")
    p.add_argument(
        "--normalize-text",
        action="store_true",
        help="apply the paper code's normalize_text table first (as for mContriever's training data)",
    )
