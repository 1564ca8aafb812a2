"""`contriever serve`: the HTTP server's command line (the server itself is contriever.serving)."""

from __future__ import annotations

import argparse


def cmd_serve(args: argparse.Namespace) -> int:
    from contriever.serving.server import serve_command

    return serve_command(args)


def add_subcommand(sub, make_subcommand) -> None:
    from contriever.serving.server import add_arguments as add_serve_arguments

    p = make_subcommand(
        sub,
        "serve",
        "search and embeddings over HTTP, with a page comparing retrievers",
        "contriever serve --index indexes/scifact --port 8000",
        cmd_serve,
    )
    add_serve_arguments(p)
