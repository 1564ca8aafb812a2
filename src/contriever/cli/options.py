"""What several subcommands share: the help format, the subcommand helper and the option groups
(text options, passages, ANN search, precision), and the checks run before any slow import."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from contriever.cli.argtypes import non_negative_int, positive_int
from contriever.errors import UsageError

DEFAULT_DATA_ENV = "CONTRIEVER_DATA"
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
PRECISION_HELP = "encoding precision (auto: bf16 autocast where the hardware runs it fast, else fp32)"
BATCH_HELP = (
    "texts encoded at a time (default: batches of as many padded tokens as this device runs best, "
    "measured once and kept in the encode cache)"
)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every argument's help shows its default; descriptions and examples keep their line breaks."""


def make_subcommand(sub, name: str, summary: str, example: str, func) -> argparse.ArgumentParser:
    """A subcommand with a one-line description, an example, and defaults shown in its help."""
    parser = sub.add_parser(
        name,
        help=summary,
        description=summary,
        epilog=f"example:\n  {example}",
        formatter_class=HelpFormatter,
    )
    parser.set_defaults(func=func)
    return parser


def data_dir(value: str | None) -> Path:
    """--data, else $CONTRIEVER_DATA; a clear message when neither names a BEIR folder."""
    value = value or os.environ.get(DEFAULT_DATA_ENV)
    if not value:
        raise UsageError(
            "no dataset named. Pass --data DIR, a BEIR folder with corpus.jsonl[.gz], queries.jsonl "
            f"and qrels/<split>.tsv (for example SciFact from the BEIR release), or set ${DEFAULT_DATA_ENV}."
        )
    return Path(value)


def check_models(*names: str | None) -> None:
    """Fail at once on a model path that does not exist, before the slow imports (torch, transformers).

    Hub ids pass (they are resolved when the model loads); see `contriever.model.locate`.
    """
    from contriever.model.locate import locate_model

    for name in names:
        name = str(name or "").strip()
        if name.lower().startswith("hybrid:"):
            name = name.split(":", 1)[1].strip()
            if not name:
                raise UsageError("--model hybrid: names no model; pass hybrid:PATH, hybrid:default or hybrid")
        if name and name.lower() not in ("default", "bm25", "hybrid"):
            locate_model(name)


def text_options(args: argparse.Namespace) -> dict:
    """--lowercase / --normalize-text / --query-prompt / --passage-prompt / --force-prompts as
    `TextOptions` fields (None: the model's own setting)."""
    prompts = {"query": args.query_prompt, "passage": args.passage_prompt}
    return {
        "lowercase": args.lowercase,
        "normalize_text": args.normalize_text,
        "prompts": {name: text for name, text in prompts.items() if text is not None} or None,
        "force_prompts": args.force_prompts,
    }


def add_text_options(parser: argparse.ArgumentParser, what: str) -> None:
    for flag, text in (
        ("--lowercase", "lowercase"),
        ("--normalize-text", "apply the paper code's normalize_text table (quotes, dashes, ...) to"),
    ):
        parser.add_argument(
            flag,
            action=argparse.BooleanOptionalAction,
            default=None,
            help=f"{text} {what} before tokenizing (default: the model's own setting, off)",
        )
    for kind in ("query", "passage"):
        parser.add_argument(
            f"--{kind}-prompt",
            default=None,
            metavar="TEXT",
            help=f"text put before every {kind} (default: the model's own prompt, from its "
            f"config_sentence_transformers.json; multilingual: '{kind}: '); '' for none",
        )
    parser.add_argument(
        "--force-prompts",
        action="store_true",
        help="use --query-prompt/--passage-prompt even where the model records other prompts",
    )


def add_passage_arguments(p: argparse.ArgumentParser, evaluate: bool = False) -> None:
    what = "and score each document by its best passage (max over passages)" if evaluate else "(ids DOCID#N)"
    p.add_argument(
        "--words",
        type=non_negative_int,
        default=0,
        help=f"split documents into passages of this many words, the title carried on each, {what}; "
        "0 keeps documents whole, truncated by the model (the paper's Wikipedia setting: 100)",
    )
    p.add_argument("--overlap", type=non_negative_int, default=0, help="words shared by consecutive passages")


def add_ann_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ann", metavar="NAME", help="search the approximate index IDX/ann/NAME (see ann-build)")
    p.add_argument("--nprobe", type=positive_int, help="IVF lists searched per query (with --ann); None: 32")
    p.add_argument("--ef-search", type=positive_int, help="HNSW candidate list size (with --ann); None: 128")
    p.add_argument(
        "--rerank",
        type=positive_int,
        metavar="N",
        help="re-score the approximate index's top N (or --k, if more) exactly from the folder's fp16 "
        "shards (with --ann; for PQ/SQ indexes, which rank by compressed vectors)",
    )


def add_precision(p: argparse.ArgumentParser) -> None:
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)


def add_batch_size(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", type=positive_int, help=BATCH_HELP)


def add_no_cache(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-cache", action="store_true", help="encode the corpus again (do not use the encode cache)"
    )


def add_max_length(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-length", type=positive_int, help="token limit; None: the model's own, else 512")


def encoding_settings(args: argparse.Namespace):
    """The encoding options a command was given, as one `EncodingSettings` value."""
    from contriever.retrieval.settings import EncodingSettings

    return EncodingSettings(
        max_length=args.max_length,
        **text_options(args),
        precision=args.precision,
        words=args.words,
        overlap=args.overlap,
        batch_size=args.batch_size,
        index_factory=args.index_factory,
        use_cache=not args.no_cache,
    )


def search_settings(args: argparse.Namespace, k: int | None = None):
    """The search options a command was given (`--k`, `--index`, `--ann` and its parameters); `k`
    stands for `--k` where that flag is not one depth (evaluate-qa's, repeated: the deepest)."""
    from contriever.retrieval.settings import SearchSettings

    return SearchSettings(k=args.k if k is None else k, index_path=args.index, **ann_options(args))


def ann_options(args: argparse.Namespace) -> dict:
    """`--ann` and its parameters (`add_ann_options`), named as `SearchSettings`' fields."""
    return {"ann": args.ann, "nprobe": args.nprobe, "ef_search": args.ef_search, "rerank": args.rerank}
