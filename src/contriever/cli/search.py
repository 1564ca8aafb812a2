"""`contriever search`: search an index folder with queries from the arguments or standard input."""

from __future__ import annotations

import argparse
import json
import sys

from contriever.cli.argtypes import positive_int
from contriever.cli.options import add_ann_options, check_models, search_settings
from contriever.errors import UsageError


def cmd_search(args: argparse.Namespace) -> int:
    from contriever.retrieval.index import load_for_search
    from contriever.retrieval.retrieve import encoder_for_index

    check_models(args.model)
    queries = [_utf8_argument(query) for query in args.queries] or _stdin_queries()
    if not queries:
        raise UsageError("no queries: pass them as arguments or one a line on standard input")
    empty = [i for i, query in enumerate(queries, start=1) if not query.strip()]
    if empty:
        raise UsageError(
            f"query {empty[0]} is empty ({len(empty)} empty in all): an empty query matches nothing"
        )
    index, store = load_for_search(args.index, search_settings(args))
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
        _print_table(query, results)
    return 0


def _print_table(query: str, results: list[dict]) -> None:
    print(f"# {query}")
    for rank, result in enumerate(results, start=1):
        print(
            f"{rank:>3}  {result['score']:9.4f}  {result['id']}"
            + (f"  {result['title']}" if result.get("title") else "")
        )
        if "text" in result:
            print(f"     {_snippet(result['text'])}")


def _snippet(text: str, width: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3].rsplit(" ", 1)[0] + "..."


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


def add_subcommand(sub, make_subcommand) -> None:
    p = make_subcommand(
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
    add_ann_options(p)
    p.add_argument("queries", nargs="*", help="query texts; none: read them from standard input")
