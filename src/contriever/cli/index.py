"""`contriever index`: encode a corpus into an index folder, shard by shard (resumable, in parts)."""

from __future__ import annotations

import argparse
from pathlib import Path

from contriever.cli.argtypes import output_folder, positive_int
from contriever.cli.options import (
    add_batch_size,
    add_max_length,
    add_passage_arguments,
    add_precision,
    add_text_options,
    check_models,
    text_options,
)


def cmd_index(args: argparse.Namespace) -> int:
    from contriever.data.beir import corpus_file
    from contriever.data.passages import PassageSettings
    from contriever.model.encoder import Encoder
    from contriever.model.text_options import TextOptions
    from contriever.retrieval.encode import build_index, resolve_part
    from contriever.retrieval.index import check_factory

    check_models(args.model)
    inputs = [corpus_file(args.data)] if args.data else [Path(p) for p in args.corpus]
    part = resolve_part(args.shard)
    encoder = Encoder.load(args.model, max_length=args.max_length, text=TextOptions(**text_options(args)))
    check_factory(encoder.dim, args.index_factory)  # an invalid string fails now, not after encoding
    summary = build_index(
        inputs,
        encoder,
        args.output,
        model=args.model,
        passages=PassageSettings(args.words, args.overlap),
        shard_rows=args.shard_size,
        batch_size=args.batch_size,
        precision=args.precision,
        skip_bad=args.skip_bad,
        part=part,
        use_cache=not args.no_cache,
        show_progress=not args.quiet,
    )
    read = summary.get("read") or {}
    skipped = f"; skipped {read.get('empty', 0)} empty and {read.get('bad', 0)} bad documents" if read else ""
    where = f"part {part[0]}/{part[1]}: " if part[1] > 1 else ""
    done = (
        f"{summary.get('encoded', 0)} shards encoded, {summary.get('from_cache', 0)} from the cache, "
        f"{summary.get('already_done', 0)} already done"
    )
    if summary["complete"]:
        if not is_flat_factory(args.index_factory) and part[0] == 0:
            from contriever.retrieval.index import add_faiss_index

            add_faiss_index(args.output, args.index_factory)
        print(f"{where}indexed {summary['passages']} passages into {args.output} ({done}{skipped})")
    else:
        missing = summary["missing_shards"]
        print(
            f"{where}{done}; {len(missing)} shards of other parts still missing (e.g. {missing[:5]}): "
            "the last part to finish writes index.json"
        )
    return 0


def is_flat_factory(factory: str) -> bool:
    return factory.replace(" ", "") == "Flat"


def add_subcommand(sub, make_subcommand) -> None:
    p = make_subcommand(
        sub,
        "index",
        "encode a corpus into an index folder, shard by shard (resumable; torchrun or --shard I/N for many processes)",
        "contriever index --data ../shared/data/scifact --output indexes/scifact",
        cmd_index,
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="BEIR folder whose corpus to index")
    source.add_argument(
        "--corpus",
        nargs="+",
        help="corpus files: .jsonl[.gz] (_id or id, title, text), DPR .tsv (id, text, title) or plain text",
    )
    p.add_argument("--model", default="default", help="model folder, 'default', 'multilingual' or a Hub id")
    p.add_argument("--output", type=output_folder, required=True, help="index folder to write")
    p.add_argument("--index-factory", default="Flat", help="FAISS index_factory string, e.g. HNSW32")
    add_batch_size(p)
    add_max_length(p)
    add_passage_arguments(p)
    p.add_argument(
        "--shard-size",
        type=positive_int,
        default=10_000,
        help="passages per shard (a kill loses at most one)",
    )
    p.add_argument(
        "--shard", metavar="I/N", help="encode only part I of N (job arrays); torchrun sets it itself"
    )
    p.add_argument(
        "--skip-bad", action="store_true", help="skip and count bad corpus lines instead of stopping"
    )
    add_precision(p)
    p.add_argument(
        "--no-cache", action="store_true", help="neither reuse nor keep vectors in the encode cache"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_text_options(p, "documents (and, when searching, queries)")
