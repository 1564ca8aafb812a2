"""`contriever serve`: the HTTP server's command line (the server itself is contriever.serving)."""

from __future__ import annotations

import argparse

from contriever.cli.argtypes import non_negative_int, positive_int


def cmd_serve(args: argparse.Namespace) -> int:
    from contriever.serving.server import serve_command

    return serve_command(args)


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
        "--threads",
        type=positive_int,
        default=1,
        help="CPU threads of the model and FAISS (see `contriever.serving.server` for why 1)",
    )
    parser.add_argument("--max-k", type=positive_int, default=1000, help="largest k a request may ask for")
    parser.add_argument("--max-chars", type=positive_int, default=10_000, help="longest query or input text")
    parser.add_argument("--max-queries", type=positive_int, default=256, help="queries per POST /search")
    parser.add_argument("--max-inputs", type=positive_int, default=2048, help="texts per POST /v1/embeddings")
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


def add_subcommand(sub, make_subcommand) -> None:
    p = make_subcommand(
        sub,
        "serve",
        "search and embeddings over HTTP, with a page comparing retrievers",
        "contriever serve --index indexes/scifact --port 8000",
        cmd_serve,
    )
    add_arguments(p)
