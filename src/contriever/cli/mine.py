"""`contriever mine`: mine hard negatives for training queries into a training file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from contriever.cli.argtypes import non_negative_int, output_file, positive_int, rank_range
from contriever.cli.options import check_models


def cmd_mine(args: argparse.Namespace) -> int:
    check_models(args.model)
    from contriever.retrieval.mining import mine_beir

    stats = mine_beir(
        Path(args.data),
        model=args.model,
        output=Path(args.output),
        split=args.split,
        k=args.k,
        skip_top=args.skip_top,
        n_keep=args.n_keep,
        rank_range=args.range,
        sample=args.sample,
    )
    print(json.dumps(stats, indent=2, default=str))
    return 0


def add_subcommand(sub, make_subcommand) -> None:
    p = make_subcommand(
        sub,
        "mine",
        "mine hard negatives for training queries into a training file",
        "contriever mine --data ../shared/data/scifact --model bm25 --output hard_negatives.jsonl",
        cmd_mine,
    )
    p.add_argument("--data", required=True, help="BEIR folder with the qrels of SPLIT")
    p.add_argument("--model", required=True, help="model folder, 'default', 'multilingual' or 'bm25'")
    p.add_argument("--output", type=output_file, required=True, help="training file to write (.jsonl)")
    p.add_argument("--split", default="train", help="qrels split whose queries to mine for")
    p.add_argument("--k", type=positive_int, default=100, help="documents retrieved per query")
    p.add_argument(
        "--skip-top",
        type=non_negative_int,
        default=0,
        help="skip this many top-ranked non-positive candidates",
    )
    p.add_argument("--n-keep", type=positive_int, default=30, help="hard negatives kept per query")
    p.add_argument(
        "--range",
        type=rank_range,
        help="draw from the ranking slice START-END only, e.g. 10-100 (0-based, end excluded)",
    )
    p.add_argument(
        "--sample", action="store_true", help="keep a random n-keep of the candidates instead of the top ones"
    )
