"""`contriever evaluate`: score models and BM25 on a BEIR dataset (one subfolder per system)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from contriever.cli.argtypes import output_folder, positive_int
from contriever.cli.options import (
    DEFAULT_DATA_ENV,
    add_ann_options,
    add_batch_size,
    add_max_length,
    add_no_cache,
    add_passage_arguments,
    add_precision,
    add_text_options,
    check_models,
    data_dir,
    encoding_settings,
    search_settings,
)
from contriever.errors import UsageError


def cmd_evaluate(args: argparse.Namespace) -> int:
    from contriever.evaluation.beir_eval import evaluate_beir, format_table

    data = data_dir(args.data)
    if args.index:
        _refuse_encoding_options(args)
    models = args.model or ([_recorded_model(args.index)] if args.index else ["default"])
    check_models(*models)
    names = output_names(models)
    results = {}
    for model in models:
        if args.output is None:
            output = None
        elif len(models) == 1:
            output = Path(args.output)
        else:
            output = Path(args.output) / names[model]
        results[model] = evaluate_beir(
            data, args.split, model, output, encoding=encoding_settings(args), search=search_settings(args)
        )
    searched = f" on {args.index}" + (f" ({args.ann})" if args.ann else "") if args.index else ""
    print(format_table(results, title=f"{data.name} ({args.split}){searched}"))
    if args.output:
        folders = "" if len(models) == 1 else " (" + ", ".join(f"{m} -> {names[m]}" for m in models) + ")"
        print(f"wrote {args.output}{folders}")
    return 0


def _slug(model: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", model.strip("/")).strip("_")[-60:] or "model"


def output_names(models: list[str]) -> dict[str, str]:
    """A distinct subfolder name per system: its slug, numbered when two slugs coincide (model paths
    that end alike), so no system's metrics overwrite another's. A system named twice is an error."""
    repeated = next((m for i, m in enumerate(models) if m in models[:i]), None)
    if repeated is not None:
        raise UsageError(f"--model {repeated} is given twice")
    slugs = [_slug(model) for model in models]
    names = {}
    for i, (model, slug) in enumerate(zip(models, slugs)):
        names[model] = f"{i + 1}-{slug}" if slugs.count(slug) > 1 else slug
    return names


def _recorded_model(folder: str) -> str:
    """The model an index folder was built with (evaluate --index without --model)."""
    from contriever.retrieval.shards import open_index

    return open_index(folder).metadata.get("model", "default")


def _refuse_encoding_options(args: argparse.Namespace) -> None:
    """evaluate --index: the options that say how to encode the corpus are the folder's already."""
    given = [
        flag
        for flag, value in (
            ("--words", args.words),
            ("--overlap", args.overlap),
            ("--max-length", args.max_length),
            ("--no-cache", args.no_cache),
            ("--lowercase/--no-lowercase", args.lowercase is not None),
            ("--normalize-text/--no-normalize-text", args.normalize_text is not None),
            (
                "--query-prompt/--passage-prompt",
                args.query_prompt is not None or args.passage_prompt is not None,
            ),
            ("--index-factory", args.index_factory.replace(" ", "") != "Flat"),
        )
        if value
    ]
    if given:
        raise UsageError(
            f"{', '.join(given)}: the index folder {args.index} already fixes how its corpus was encoded "
            "(use --ann NAME for an approximate index of it)"
        )


def add_subcommand(sub, make_subcommand) -> None:
    p = make_subcommand(
        sub,
        "evaluate",
        "evaluate models and BM25 on a BEIR dataset (nDCG@10, R@100, MRR@10, R@1000)",
        "contriever evaluate --data ../shared/data/scifact --model default --model bm25 --output out/scifact",
        cmd_evaluate,
    )
    p.add_argument("--data", help=f"BEIR folder; None: ${DEFAULT_DATA_ENV}")
    p.add_argument("--split", default="test", help="qrels split to evaluate (qrels/SPLIT.tsv)")
    p.add_argument(
        "--model",
        action="append",
        help="model folder, 'default', 'multilingual' (multilingual-e5-small, retrieval-tuned), 'bm25' or 'hybrid:PATH' (repeat to compare); None: the default model",
    )
    p.add_argument(
        "--output",
        type=output_folder,
        help="folder for metrics.json and run.trec (one subfolder per model when several)",
    )
    p.add_argument("--k", type=positive_int, default=1000, help="documents retrieved per query")
    add_batch_size(p)
    p.add_argument(
        "--index-factory", default="Flat", help="FAISS index_factory string, e.g. HNSW32 or IVF1024,PQ32"
    )
    add_max_length(p)
    add_precision(p)
    add_passage_arguments(p, evaluate=True)
    add_no_cache(p)
    add_text_options(p, "queries and documents")
    p.add_argument(
        "--index",
        help="evaluate this index folder (`contriever index`; its corpus may hold more than the BEIR "
        "folder's, e.g. distractors) instead of encoding the corpus; the model is the folder's",
    )
    add_ann_options(p)
