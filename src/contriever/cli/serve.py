"""`contriever serve`: its options and its handler (the service itself is `contriever.serving`).

Module-level imports are the standard library only, so `contriever --help` stays fast and works
without the `serve` extra.
"""

from __future__ import annotations

import argparse
import os
import sys

from contriever.cli.argtypes import non_negative_int, positive_int

API_KEY_ENV = "CONTRIEVER_API_KEY"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--index", help="dense index folder written by `contriever index`")
    parser.add_argument(
        "--ann", metavar="NAME", help="serve the index's approximate index IDX/ann/NAME (see ann-build)"
    )
    parser.add_argument("--nprobe", type=positive_int, help="IVF lists searched per query (with --ann)")
    parser.add_argument("--ef-search", type=positive_int, help="HNSW candidate list size (with --ann)")
    parser.add_argument(
        "--rerank",
        type=positive_int,
        metavar="N",
        help="re-score the approximate index's top N (or k, if more) exactly from the fp16 shards (with --ann)",
    )
    parser.add_argument(
        "--data",
        help="BEIR folder whose corpus gives titles, snippets and BM25; None: the index's corpus",
    )
    parser.add_argument("--corpus", help="corpus file (.jsonl[.gz] with _id, title, text) instead of --data")
    parser.add_argument(
        "--bm25", help="BM25 folder: loaded if it exists, else built from the corpus and saved"
    )
    parser.add_argument("--no-bm25", action="store_true", help="serve dense search only")
    parser.add_argument("--model", help="model folder or 'default'; None: the index's model")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1: this machine only)")
    parser.add_argument("--port", type=non_negative_int, default=8000, help="port (0: any free port)")
    parser.add_argument(
        "--max-batch-size",
        type=positive_int,
        default=64,
        help="most texts encoded together in one dynamic batch",
    )
    parser.add_argument("--max-wait-ms", type=float, default=2.0, help="longest wait for a batch to fill")
    parser.add_argument("--no-batching", action="store_true", help="encode each request on its own")
    parser.add_argument(
        "--max-queue",
        type=positive_int,
        default=1024,
        help="texts waiting for the model before new requests get 429 with Retry-After",
    )
    parser.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="forward-pass precision; auto: bf16 where the CPU/GPU computes it natively, else fp32",
    )
    parser.add_argument(
        "--api-key",
        metavar="KEY",
        help=f"require `Authorization: Bearer KEY` on every route but /health (else ${API_KEY_ENV}); "
        "set it before binding beyond 127.0.0.1",
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=1,
        help="CPU threads of the model and FAISS (see `contriever.serving.server` for why 1)",
    )
    parser.add_argument("--max-k", type=positive_int, default=1000, help="largest k a request may ask for")
    parser.add_argument("--max-chars", type=positive_int, default=10_000, help="longest query or input text")
    parser.add_argument("--max-queries", type=positive_int, default=256, help="queries per POST /search")
    parser.add_argument("--max-inputs", type=positive_int, default=2048, help="texts per embeddings request")
    parser.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="allow browser pages from ORIGIN (e.g. http://localhost:3000; '*' for any); repeatable",
    )
    parser.add_argument(
        "--log-level", default="info", choices=("debug", "info", "warning", "error"), help="uvicorn log level"
    )
    parser.add_argument("--access-log", action="store_true", help="log every request")


def serve_command(args: argparse.Namespace) -> int:
    from contriever.serving import require_serve_extra

    try:
        require_serve_extra()
    except ImportError as error:
        raise SystemExit(f"error: {error}") from None
    from contriever.serving.app import create_app
    from contriever.serving.server import bind, configure_logging, load_searcher, run, set_threads

    configure_logging(args.log_level)
    sock = bind(args.host, args.port)  # before loading: a taken port fails in a second, not a minute
    set_threads(args.threads)
    try:
        searcher = load_searcher(
            sources_from_args(args),
            precision=args.precision,
            show_progress=args.log_level == "debug",  # bm25s's bars; the log says what is built
        )
    except ValueError as error:  # DataError, UsageError: one line, exit code 2 (a missing index folder)
        from contriever.errors import UsageError

        raise UsageError(str(error)) from None
    settings = settings_from_args(args)
    app = create_app(searcher, settings)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(
        f"serving {searcher.size:,} documents ({', '.join(searcher.modes) or 'embeddings only'}) on "
        f"http://{shown}:{port}/  (API docs: /docs; Ctrl-C to stop)",
        file=sys.stderr,
        flush=True,
    )
    run(app, sock, log_level=args.log_level, access_log=args.access_log)
    print("stopped", file=sys.stderr, flush=True)
    return 0


def sources_from_args(args: argparse.Namespace):
    """What to serve (`ServeSources`) from the parsed options."""
    from contriever.cli.options import ann_options
    from contriever.retrieval.settings import SearchSettings
    from contriever.serving.server import ServeSources

    return ServeSources(
        index=args.index,
        data=args.data,
        corpus=args.corpus,
        bm25=args.bm25,
        no_bm25=args.no_bm25,
        model=args.model,
        search=SearchSettings(**ann_options(args)),
    )


def settings_from_args(args: argparse.Namespace):
    """The service's `ServeSettings` from the parsed options (the API key from $CONTRIEVER_API_KEY
    when --api-key is not given: read here, not as a default, so --help never shows it)."""
    from contriever.serving.server import allowed_hosts
    from contriever.serving.service import ServeSettings

    return ServeSettings(
        max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms,
        batching=not args.no_batching,
        max_queue=args.max_queue,
        api_key=args.api_key or os.environ.get(API_KEY_ENV) or None,
        index_name=args.index,
        max_k=args.max_k,
        max_chars=args.max_chars,
        max_queries=args.max_queries,
        max_inputs=args.max_inputs,
        cors_origins=tuple(args.cors_origin),
        allowed_hosts=allowed_hosts(args.host),
    )


def add_subcommand(sub, make_subcommand) -> None:
    p = make_subcommand(
        sub,
        "serve",
        "search and embeddings over HTTP, with a page comparing retrievers",
        "contriever serve --index indexes/scifact --port 8000",
        serve_command,
    )
    add_arguments(p)
