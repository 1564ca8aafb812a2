"""The `contriever` command: one function per subcommand, heavy imports inside each.

contriever evaluate --data DIR [--split test] [--model PATH|default|bm25|hybrid:PATH ...] [--output DIR]
contriever index    --data DIR | --corpus FILE... [--model M] --output IDX [--words 100] [--shard I/N]
contriever search   --index IDX [--k 10] [--ann NAME --nprobe N --ef-search N --rerank N] "query" ...  (or stdin)
contriever ann-build --index IDX --factory "IVF4096,PQ48" [--name NAME] [--train-size N] [--in-memory]
contriever evaluate-qa --questions FILE... --index IDX | --corpus FILE... [--model M|bm25|hybrid:M ...]
contriever cache    [--clear]                                  (the encode cache)
contriever verify   FOLDER...                                  (sizes and checksums of any folder we write)
contriever prepare  --input FILE... [--model M] --output DIR
contriever pretrain --config FILE [--set key=value ...] --output DIR
contriever mine     --data DIR --model M|bm25 --output FILE [--range 10-100] [--sample]
contriever finetune --config FILE [--set key=value ...] --output DIR
contriever serve    --index IDX [--data DIR | --corpus FILE] [--host 127.0.0.1] [--port 8000]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import traceback
from pathlib import Path

from contriever.cli.argtypes import (
    non_negative_int,
    output_file,
    output_folder,
    positive_int,
    rank_range,
)
from contriever.cli.verify import add_subcommand as add_verify
from contriever.errors import UsageError

DEFAULT_DATA_ENV = "CONTRIEVER_DATA"
DEBUG_ENV = "CONTRIEVER_DEBUG"
PACKAGE_DIR = Path(__file__).resolve().parents[1]


def _data_dir(value: str | None) -> Path:
    """--data, else $CONTRIEVER_DATA; a clear message when neither names a BEIR folder."""
    value = value or os.environ.get(DEFAULT_DATA_ENV)
    if not value:
        raise UsageError(
            "no dataset named. Pass --data DIR, a BEIR folder with corpus.jsonl[.gz], queries.jsonl "
            f"and qrels/<split>.tsv (for example SciFact from the BEIR release), or set ${DEFAULT_DATA_ENV}."
        )
    return Path(value)


def _check_models(*names: str | None) -> None:
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


def _text_options(args: argparse.Namespace) -> dict:
    """--lowercase / --normalize-text / --query-prompt / --passage-prompt / --force-prompts as
    Encoder.load arguments (None: the model's own setting)."""
    prompts = {"query": args.query_prompt, "passage": args.passage_prompt}
    return {
        "lowercase": args.lowercase,
        "normalize_text": args.normalize_text,
        "prompts": {name: text for name, text in prompts.items() if text is not None} or None,
        "force_prompts": args.force_prompts,
    }


def _add_text_options(parser: argparse.ArgumentParser, what: str) -> None:
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


def _slug(model: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", model.strip("/")).strip("_")[-60:] or "model"


def _output_names(models: list[str]) -> dict[str, str]:
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


# ----- evaluate ----------------------------------------------------------------------------------------
def cmd_evaluate(args: argparse.Namespace) -> int:
    from contriever.evaluation.beir_eval import evaluate_beir, format_table

    data = _data_dir(args.data)
    if args.index:
        _refuse_encoding_options(args)
    models = args.model or ([_recorded_model(args.index)] if args.index else ["default"])
    _check_models(*models)
    names = _output_names(models)
    results = {}
    for model in models:
        if args.output is None:
            output = None
        elif len(models) == 1:
            output = Path(args.output)
        else:
            output = Path(args.output) / names[model]
        results[model] = evaluate_beir(
            data,
            split=args.split,
            model=model,
            output_dir=output,
            k=args.k,
            batch_size=args.batch_size,
            index_factory=args.index_factory,
            max_length=args.max_length,
            precision=args.precision,
            words=args.words,
            overlap=args.overlap,
            use_cache=not args.no_cache,
            **_text_options(args),
            index_path=args.index,
            ann=args.ann,
            nprobe=args.nprobe,
            ef_search=args.ef_search,
            rerank=args.rerank,
        )
    searched = f" on {args.index}" + (f" ({args.ann})" if args.ann else "") if args.index else ""
    print(format_table(results, title=f"{data.name} ({args.split}){searched}"))
    if args.output:
        folders = "" if len(models) == 1 else " (" + ", ".join(f"{m} -> {names[m]}" for m in models) + ")"
        print(f"wrote {args.output}{folders}")
    return 0


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


# ----- index and search --------------------------------------------------------------------------------
def cmd_index(args: argparse.Namespace) -> int:
    from contriever.data.beir import corpus_file
    from contriever.data.passages import PassageSettings
    from contriever.model.encoder import Encoder
    from contriever.retrieval.encode import build_index, resolve_part
    from contriever.retrieval.index import check_factory

    _check_models(args.model)
    inputs = [corpus_file(args.data)] if args.data else [Path(p) for p in args.corpus]
    part = resolve_part(args.shard)
    encoder = Encoder.load(args.model, max_length=args.max_length, **_text_options(args))
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


def _snippet(text: str, width: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3].rsplit(" ", 1)[0] + "..."


def cmd_search(args: argparse.Namespace) -> int:
    from contriever.retrieval.index import load_for_search
    from contriever.retrieval.retrieve import encoder_for_index

    _check_models(args.model)
    queries = [_utf8_argument(query) for query in args.queries] or _stdin_queries()
    if not queries:
        raise UsageError("no queries: pass them as arguments or one a line on standard input")
    empty = [i for i, query in enumerate(queries, start=1) if not query.strip()]
    if empty:
        raise UsageError(
            f"query {empty[0]} is empty ({len(empty)} empty in all): an empty query matches nothing"
        )
    index, store = load_for_search(
        args.index, args.ann, nprobe=args.nprobe, ef_search=args.ef_search, rerank=args.rerank
    )
    encoder = encoder_for_index(index, args.model)
    vectors = encoder.encode_queries(queries, show_progress=False)
    scores, rows = index.search_rows(vectors, args.k)
    for query, row_scores, row_rows in zip(queries, scores, rows):
        found = [int(r) for r in row_rows if r >= 0]
        ids = index.ids_for(found)
        passages = store.get(found) if store is not None else [{} for _ in found]
        results = [
            {"id": i, "score": float(s), **({"title": p["title"], "text": p["text"]} if p else {})}
            for i, s, p in zip(ids, row_scores, passages)
        ]
        if args.json:
            print(json.dumps({"query": query, "results": results}))
            continue
        print(f"# {query}")
        for rank, result in enumerate(results, start=1):
            print(
                f"{rank:>3}  {result['score']:9.4f}  {result['id']}"
                + (f"  {result['title']}" if result.get("title") else "")
            )
            if "text" in result:
                print(f"     {_snippet(result['text'])}")
    return 0


def _stdin_queries() -> list[str]:
    """Non-blank lines of standard input, each decoded as UTF-8 on its own: a bad byte is a one-line
    error naming the line and column (not a tokenizer TypeError on an undecodable string)."""
    from contriever.errors import DataError

    queries = []
    if getattr(sys.stdin, "buffer", None) is None:  # a text stream (tests, embedding): already decoded
        return [_utf8_argument(line.strip()) for line in sys.stdin if line.strip()]
    for number, raw in enumerate(sys.stdin.buffer, start=1):
        try:
            line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as error:
            raise DataError(
                "<stdin>",
                f"not UTF-8 text (byte 0x{raw[error.start]:02x} at column {error.start + 1})",
                number,
            ) from None
        if line.strip():
            queries.append(line.strip())
    return queries


def _utf8_argument(text: str) -> str:
    """A query argument; bytes the locale could not decode (kept as surrogates) are refused."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise UsageError(f"query {text!r} is not UTF-8 text (at character {error.start + 1})") from None
    return text


def cmd_ann_build(args: argparse.Namespace) -> int:
    from contriever.retrieval.ann import AnnIndex, build_ann

    try:
        path = build_ann(
            args.index,
            args.factory,
            name=args.name,
            train_size=args.train_size,
            seed=args.seed,
            on_disk=not args.in_memory,
        )
    except ValueError as error:  # a bad factory, too few vectors, a PQ not dividing dim: exit code 2
        raise UsageError(str(error)) from None
    info, sizes = (index := AnnIndex.load(args.index, path.name)).info, index.sizes()
    print(
        f"built {args.factory} over {info['count']} vectors in {info['build_s']:.1f} s: {path} "
        f"(in RAM: {sizes['header'] / 2**20:.1f} MiB; lists on disk: {sizes['lists'] / 2**20:.1f} MiB). "
        f"Search it with `contriever search --index {args.index} --ann {path.name}`"
    )
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    import shutil

    from contriever.retrieval.encode import cache_dir

    root = cache_dir()
    if root is None:
        print("the encode cache is off ($CONTRIEVER_CACHE=off)")
        return 0
    entries = sorted((root / "encodings").glob("*")) if (root / "encodings").is_dir() else []
    queries = sorted((root / "queries").glob("*.npy")) if (root / "queries").is_dir() else []
    total = 0
    for entry in entries:
        size = sum(f.stat().st_size for f in entry.rglob("*") if f.is_file())
        total += size
        try:
            settings = json.loads((entry / "encoding.json").read_text())["settings"]
            what = f"{settings['model']}  {Path(settings['input_files'][0]['path']).name}  words={settings['passages']['words']}"
        except (OSError, ValueError, KeyError, IndexError):
            what = "(no plan)"
        print(f"{size / 2**20:9.1f} MiB  {entry.name}  {what}")
    print(f"{total / 2**20:9.1f} MiB in {len(entries)} encodings under {root / 'encodings'}")
    query_bytes = sum(path.stat().st_size for path in queries)
    print(f"{query_bytes / 2**20:9.1f} MiB in {len(queries)} query sets under {root / 'queries'}")
    if args.clear and (entries or queries):
        for folder in ("encodings", "queries"):
            shutil.rmtree(root / folder, ignore_errors=True)
        print("cleared")
    return 0


# ----- training ----------------------------------------------------------------------------------------
def cmd_prepare(args: argparse.Namespace) -> int:
    _check_models(args.model)
    from contriever.data.prepare import prepare
    from contriever.model.locate import locate_model

    tokenizer = str(locate_model(args.model))
    prepare(
        [Path(p) for p in args.input],
        tokenizer,
        Path(args.output),
        text_field=args.text_field,
        title_field=args.title_field,
        include_title=args.include_title,
        workers=args.workers,
        lowercase=args.lowercase,
        normalize_text=args.normalize_text,
    )
    return 0


def _train(args: argparse.Namespace, task: str) -> int:
    from contriever.training.config import load_config

    config = load_config(args.config, [f"task={task}", *(args.set or [])] if task else args.set)
    if task == "finetune":
        from contriever.training.finetune import run_finetune

        final = run_finetune(config, args.output, rounds=args.rounds)
    else:
        from contriever.training.trainer import train

        final = train(config, args.output)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one line, not one per process
        print(f"model: {final}")
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    return _train(args, "pretrain")


def cmd_finetune(args: argparse.Namespace) -> int:
    return _train(args, "finetune")


def cmd_mine(args: argparse.Namespace) -> int:
    _check_models(args.model)
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


def cmd_serve(args: argparse.Namespace) -> int:
    from contriever.cli.serve import serve_command

    return serve_command(args)


# ----- parser ------------------------------------------------------------------------------------------
class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every argument's help shows its default; descriptions and examples keep their line breaks."""


PRECISIONS = ("auto", "bf16", "fp16", "fp32")
PRECISION_HELP = "encoding precision (auto: bf16 autocast where the hardware runs it fast, else fp32)"
BATCH_HELP = (
    "texts encoded at a time (default: batches of as many padded tokens as this device runs best, "
    "measured once and kept in the encode cache)"
)


def _subcommand(sub, name: str, summary: str, example: str, func) -> argparse.ArgumentParser:
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


def _add_passage_arguments(p: argparse.ArgumentParser, evaluate: bool = False) -> None:
    what = "and score each document by its best passage (max over passages)" if evaluate else "(ids DOCID#N)"
    p.add_argument(
        "--words",
        type=non_negative_int,
        default=0,
        help=f"split documents into passages of this many words, the title carried on each, {what}; "
        "0 keeps documents whole, truncated by the model (the paper's Wikipedia setting: 100)",
    )
    p.add_argument("--overlap", type=non_negative_int, default=0, help="words shared by consecutive passages")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="contriever",
        description="Contriever: dense retrieval with contrastive learning. `contriever COMMAND -h` for each.",
        formatter_class=HelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_evaluate(sub)
    _add_index_and_search(sub)
    _add_evaluate_qa(sub)
    _add_training(sub)
    _add_serve(sub)
    add_verify(sub, _subcommand)
    debug_help = f"show the traceback of an internal error (also ${DEBUG_ENV}=1)"
    parser.add_argument("--debug", action="store_true", help=debug_help)
    for subparser in sub.choices.values():  # accepted after the subcommand too
        subparser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help)
    return parser


def _add_ann_options(p: argparse.ArgumentParser) -> None:
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


def _add_evaluate(sub) -> None:
    p = _subcommand(
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
    p.add_argument("--batch-size", type=positive_int, help=BATCH_HELP)
    p.add_argument(
        "--index-factory", default="Flat", help="FAISS index_factory string, e.g. HNSW32 or IVF1024,PQ32"
    )
    p.add_argument("--max-length", type=positive_int, help="token limit; None: the model's own, else 512")
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
    _add_passage_arguments(p, evaluate=True)
    p.add_argument(
        "--no-cache", action="store_true", help="encode the corpus again (do not use the encode cache)"
    )
    _add_text_options(p, "queries and documents")
    p.add_argument(
        "--index",
        help="evaluate this index folder (`contriever index`; its corpus may hold more than the BEIR "
        "folder's, e.g. distractors) instead of encoding the corpus; the model is the folder's",
    )
    _add_ann_options(p)


def _add_index_and_search(sub) -> None:
    p = _subcommand(
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
    p.add_argument("--batch-size", type=positive_int, help=BATCH_HELP)
    p.add_argument("--max-length", type=positive_int, help="token limit; None: the model's own, else 512")
    _add_passage_arguments(p)
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
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
    p.add_argument(
        "--no-cache", action="store_true", help="neither reuse nor keep vectors in the encode cache"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_text_options(p, "documents (and, when searching, queries)")

    p = _subcommand(
        sub,
        "cache",
        "list (or --clear) the encode cache ($CONTRIEVER_CACHE, ~/.cache/contriever)",
        "contriever cache --clear",
        cmd_cache,
    )
    p.add_argument("--clear", action="store_true", help="delete every cached encoding")

    p = _subcommand(
        sub,
        "search",
        "search an index with queries given as arguments or one a line on standard input",
        'contriever search --index indexes/scifact --k 5 "does vitamin D prevent fractures"',
        cmd_search,
    )
    p.add_argument("--index", required=True, help="index folder written by `contriever index`")
    p.add_argument("--k", type=positive_int, default=10, help="results per query")
    p.add_argument("--model", help="model to encode the queries; None: the one the index records")
    p.add_argument("--json", action="store_true", help="one JSON object per query instead of a table")
    _add_ann_options(p)
    p.add_argument("queries", nargs="*", help="query texts; none: read them from standard input")

    p = _subcommand(
        sub,
        "ann-build",
        "build an approximate FAISS index (HNSW, IVF, IVF-PQ, OPQ) from an index folder's shards",
        'contriever ann-build --index indexes/scifact --factory "IVF256,PQ48"',
        cmd_ann_build,
    )
    p.add_argument("--index", required=True, help="index folder made by `contriever index`")
    p.add_argument(
        "--factory", required=True, help='FAISS index_factory string, e.g. "HNSW32", "OPQ48,IVF4096,PQ48"'
    )
    p.add_argument("--name", help="folder name under IDX/ann/; None: from the factory, e.g. IVF4096_PQ48")
    p.add_argument(
        "--train-size", type=positive_int, help="rows sampled for training; None: ~64 per IVF list"
    )
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the training sample")
    p.add_argument(
        "--in-memory", action="store_true", help="IVF lists inside index.faiss, read into RAM (else on disk)"
    )


def _add_evaluate_qa(sub) -> None:
    from contriever.cli import evaluate_qa

    p = _subcommand(sub, "evaluate-qa", evaluate_qa.SUMMARY, evaluate_qa.EXAMPLE, evaluate_qa.run)
    evaluate_qa.add_arguments(p)
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
    _add_ann_options(p)


def _add_training(sub) -> None:
    p = _subcommand(
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

    for name, func, summary, example in (
        (
            "pretrain",
            cmd_pretrain,
            "unsupervised contrastive pretraining on prepared token streams",
            "contriever pretrain --config configs/cpu-small.toml --output runs/cpu-small",
        ),
        (
            "finetune",
            cmd_finetune,
            "supervised / few-shot fine-tuning on labelled queries (two rounds: random, then mined negatives)",
            "contriever finetune --config configs/fewshot-scifact.toml --rounds 1 --output runs/fewshot",
        ),
    ):
        p = _subcommand(sub, name, summary, example, func)
        p.add_argument("--config", help="TOML config (see configs/); None: the task's defaults")
        p.add_argument(
            "--set", action="append", metavar="KEY=VALUE", help="override a config key, e.g. train.steps=100"
        )
        p.add_argument(
            "--output",
            type=output_folder,
            required=True,
            help="training folder (rerun the command to resume)",
        )
        if name == "finetune":
            p.add_argument(
                "--rounds",
                type=int,
                choices=(1, 2),
                default=2,
                help="1: train once; 2: random negatives, mine with that model, train again with hard ones",
            )

    p = _subcommand(
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


def _add_serve(sub) -> None:
    from contriever.cli.serve import add_arguments as add_serve_arguments

    p = _subcommand(
        sub,
        "serve",
        "search and embeddings over HTTP, with a page comparing retrievers",
        "contriever serve --index indexes/scifact --port 8000",
        cmd_serve,
    )
    add_serve_arguments(p)


def _one_line(error: BaseException) -> str:
    """The error as one line: `FILE: reason` for an OS error, else its message with lines joined."""
    if isinstance(error, OSError) and error.strerror:
        where = " -> ".join(str(f) for f in (error.filename, error.filename2) if f is not None)
        text = f"{where}: {error.strerror}" if where else error.strerror
    else:
        text = str(error) or type(error).__name__
    return " ".join(text.split())


def _user_facing(error: BaseException) -> bool:
    """Whether `error` reports a problem the user can fix rather than a bug of ours.

    Our own error types and OS errors (a missing file, a full disk, no permission) are; so is a
    ValueError raised by contriever's own code, which raises it only on purpose, to refuse an argument
    ("temperature must be positive"). A ValueError from deep inside numpy or torch is not.
    """
    from contriever.errors import ConfigError, DataError
    from contriever.retrieval.shards import FolderLockedError

    if isinstance(error, (DataError, ConfigError, UsageError, OSError, FolderLockedError)):
        return True
    if type(error) is ValueError and error.__traceback__ is not None:
        frames = traceback.extract_tb(error.__traceback__)
        return Path(frames[-1].filename).resolve().is_relative_to(PACKAGE_DIR)
    return False


def _close_progress_bars() -> None:
    """End any progress bar a failed command left open, so its error is a line of its own."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand. Bad input, a bad option or a file problem is one line on stderr and exit
    code 2; a bug of ours is one line and exit code 1, with the traceback under `--debug` (or
    $CONTRIEVER_DEBUG=1); Ctrl-C is exit code 130."""
    from contriever.io import ignore_file_size_signal

    args = build_parser().parse_args(argv)
    ignore_file_size_signal()  # a file-size limit then fails the write (DiskFullError), not the process
    debug = args.debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if not _user_facing(error):
            if debug:
                raise
            print(
                f"error: internal error ({type(error).__name__}: {_one_line(error)}). This is a bug in "
                "contriever: run the command again with --debug to see the traceback, and report it.",
                file=sys.stderr,
            )
            return 1
        _close_progress_bars()
        if debug:
            traceback.print_exc()
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
