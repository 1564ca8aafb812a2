"""The `contriever` command: one function per subcommand, heavy imports inside each.

contriever evaluate --data DIR [--split test] [--model PATH|default|bm25|hybrid:PATH ...] [--output DIR]
contriever index    --data DIR | --corpus FILE [--model M] --output IDX [--index-factory Flat]
contriever search   --index IDX [--k 10] "query" ...          (or one query a line on stdin)
contriever evaluate-qa --questions FILE --index IDX [--corpus FILE]   (top-1/5/20/100 accuracy, DPR matching)
contriever prepare  --input FILE... [--model M] --output DIR
contriever pretrain --config FILE [--set key=value ...] --output DIR
contriever mine     --data DIR --model M|bm25 --output FILE [--range 10-100] [--sample]
contriever finetune --config FILE [--set key=value ...] --output DIR
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

DEFAULT_DATA_ENV = "CONTRIEVER_DATA"


def _data_dir(value: str | None) -> Path:
    """--data, else $CONTRIEVER_DATA; a clear message when neither names a BEIR folder."""
    value = value or os.environ.get(DEFAULT_DATA_ENV)
    if not value:
        raise SystemExit(
            "error: no dataset named. Pass --data DIR, a BEIR folder with corpus.jsonl[.gz], queries.jsonl "
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
        if name and name.lower() not in ("default", "bm25", "hybrid"):
            locate_model(name)


def _slug(model: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", model.strip("/")).strip("_")[-60:] or "model"


# ----- evaluate ----------------------------------------------------------------------------------------
def cmd_evaluate(args: argparse.Namespace) -> int:
    from contriever.evaluation.beir_eval import evaluate_beir, format_table

    data = _data_dir(args.data)
    models = args.model or ["default"]
    _check_models(*models)
    results = {}
    for model in models:
        if args.output is None:
            output = None
        elif len(models) == 1:
            output = Path(args.output)
        else:
            output = Path(args.output) / _slug(model)
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
        )
    print(format_table(results, title=f"{data.name} ({args.split})"))
    if args.output:
        print(f"wrote {args.output}")
    return 0


# ----- index and search --------------------------------------------------------------------------------
def cmd_index(args: argparse.Namespace) -> int:
    from contriever.data.beir import load_corpus, load_corpus_file
    from contriever.model.encoder import Encoder
    from contriever.retrieval.index import DenseIndex

    _check_models(args.model)
    if bool(args.data) == bool(args.corpus):
        raise SystemExit(
            "error: pass exactly one of --data DIR (a BEIR folder) or --corpus FILE (a corpus.jsonl[.gz])"
        )
    corpus = load_corpus(Path(args.data)) if args.data else load_corpus_file(Path(args.corpus))
    encoder = Encoder.load(None if args.model == "default" else args.model, max_length=args.max_length)
    embeddings = encoder.encode_corpus(list(corpus.values()), batch_size=args.batch_size)
    index = DenseIndex.build(
        embeddings,
        list(corpus.keys()),
        factory=args.index_factory,
        metadata={
            "model": (
                str(Path(args.model).resolve())
                if args.model != "default" and Path(args.model).exists()
                else args.model  # "default" or a Hub id
            ),
            "pooling": encoder.pooling,
            "normalize": encoder.normalize,
            "max_length": encoder.max_length,
            "corpus": str(Path(args.data or args.corpus).resolve()),  # where evaluate-qa reads passages
        },
    )
    index.save(args.output)
    print(f"indexed {len(corpus)} documents into {args.output} ({args.index_factory})")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from contriever.retrieval.index import DenseIndex
    from contriever.retrieval.retrieve import encoder_for_index

    _check_models(args.model)
    queries = args.queries or [line.strip() for line in sys.stdin if line.strip()]
    if not queries:
        raise SystemExit("error: no queries: pass them as arguments or one a line on standard input")
    index = DenseIndex.load(args.index)
    encoder = encoder_for_index(index, args.model)
    vectors = encoder.encode_queries(queries, show_progress=False)
    scores, ids = index.search(vectors, args.k, show_progress=False)
    for query, row_scores, row_ids in zip(queries, scores, ids):
        if args.json:
            print(
                json.dumps(
                    {
                        "query": query,
                        "results": [{"id": d, "score": float(s)} for d, s in zip(row_ids, row_scores)],
                    }
                )
            )
        else:
            print(f"# {query}")
            for rank, (doc_id, score) in enumerate(zip(row_ids, row_scores), start=1):
                print(f"{rank:>3}  {score:9.4f}  {doc_id}")
    return 0


def cmd_evaluate_qa(args: argparse.Namespace) -> int:
    _check_models(args.model)
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
    )
    print(format_accuracy(metrics, title=f"{Path(args.questions).name} on {args.index}"))
    if args.output:
        print(f"wrote {args.output}")
    return 0


# ----- training ----------------------------------------------------------------------------------------
def cmd_prepare(args: argparse.Namespace) -> int:
    _check_models(args.model)
    from contriever.data.prepare import prepare
    from contriever.model.encoder import default_model_path

    tokenizer = args.model if args.model not in (None, "default") else str(default_model_path())
    prepare(
        [Path(p) for p in args.input],
        tokenizer,
        Path(args.output),
        text_field=args.text_field,
        title_field=args.title_field,
        include_title=args.include_title,
        workers=args.workers,
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


# ----- parser ------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="contriever", description="Contriever: dense retrieval with contrastive learning."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("evaluate", help="evaluate models and BM25 on a BEIR dataset")
    p.add_argument("--data", help=f"BEIR folder (default: ${DEFAULT_DATA_ENV})")
    p.add_argument("--split", default="test")
    p.add_argument(
        "--model",
        action="append",
        help="model folder, 'default', 'bm25' or 'hybrid:PATH' (repeat to compare; default: the default model)",
    )
    p.add_argument(
        "--output", help="folder for metrics.json and run.trec (one subfolder per model when several)"
    )
    p.add_argument("--k", type=int, default=1000, help="documents retrieved per query")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument(
        "--index-factory", default="Flat", help="FAISS index_factory string, e.g. HNSW32 or IVF1024,PQ32"
    )
    p.add_argument("--max-length", type=int, help="token limit (default: the model's own, else 512)")
    p.add_argument(
        "--precision",
        choices=("auto", "bf16", "fp16", "fp32"),
        default="auto",
        help="encoding precision (auto: bf16 autocast where the hardware runs it fast)",
    )
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("index", help="encode a corpus into a searchable FAISS index")
    p.add_argument("--data", help="BEIR folder")
    p.add_argument("--corpus", help="corpus file (.jsonl or .jsonl.gz with _id, title, text)")
    p.add_argument("--model", default="default")
    p.add_argument("--output", required=True)
    p.add_argument("--index-factory", default="Flat")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--max-length", type=int)
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("search", help="search an index")
    p.add_argument("--index", required=True)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--model", help="override the model recorded in the index")
    p.add_argument("--json", action="store_true", help="one JSON object per query")
    p.add_argument("queries", nargs="*")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser(
        "evaluate-qa", help="top-k accuracy of an index on open-domain QA questions (DPR's answer matching)"
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
        "default: the one the index records",
    )
    p.add_argument("--model", help="override the model recorded in the index")
    p.add_argument(
        "--k", type=int, action="append", help="accuracy at this depth (repeat; default: 1, 5, 20, 100)"
    )
    p.add_argument(
        "--match",
        choices=("string", "regex"),
        default="string",
        help="DPR's answer matching: token sequences (string) or answers as regexes (CuratedTREC)",
    )
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--precision", choices=("auto", "bf16", "fp16", "fp32"), default="auto")
    p.add_argument("--output", help="folder for metrics.json and results.jsonl")
    p.set_defaults(func=cmd_evaluate_qa)

    p = sub.add_parser("prepare", help="tokenize raw text into memory-mapped token streams")
    p.add_argument("--input", nargs="+", required=True, help="jsonl / txt files, gzip allowed")
    p.add_argument("--model", default="default", help="model folder whose tokenizer to use")
    p.add_argument("--output", required=True)
    p.add_argument("--text-field", default="text")
    p.add_argument("--title-field", default="title")
    p.add_argument("--include-title", action="store_true", help="prefix each document with its title")
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 1)))
    p.set_defaults(func=cmd_prepare)

    for name, func, text in (
        ("pretrain", cmd_pretrain, "unsupervised contrastive pretraining"),
        ("finetune", cmd_finetune, "supervised / few-shot fine-tuning"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--config", help="TOML config (see configs/)")
        p.add_argument(
            "--set", action="append", metavar="KEY=VALUE", help="override a config key, e.g. train.steps=100"
        )
        p.add_argument("--output", required=True)
        if name == "finetune":
            p.add_argument(
                "--rounds",
                type=int,
                choices=(1, 2),
                default=2,
                help="2: random negatives, mine, hard negatives",
            )
        p.set_defaults(func=func)

    p = sub.add_parser("mine", help="mine hard negatives for training queries")
    p.add_argument("--data", required=True, help="BEIR folder with train qrels")
    p.add_argument("--model", required=True, help="model folder, 'default' or 'bm25'")
    p.add_argument("--output", required=True, help="training file to write (.jsonl)")
    p.add_argument("--split", default="train")
    p.add_argument("--k", type=int, default=100)
    p.add_argument(
        "--skip-top", type=int, default=0, help="skip this many top-ranked non-positive candidates"
    )
    p.add_argument("--n-keep", type=int, default=30, help="hard negatives kept per query")
    p.add_argument(
        "--range", help="draw from the ranking slice START-END only, e.g. 10-100 (0-based, end excluded)"
    )
    p.add_argument(
        "--sample", action="store_true", help="keep a random n-keep of the candidates instead of the top ones"
    )
    p.set_defaults(func=cmd_mine)
    return parser


def main(argv: list[str] | None = None) -> int:
    from contriever.errors import ConfigError, DataError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (DataError, ConfigError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
