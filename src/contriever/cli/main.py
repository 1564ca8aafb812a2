"""The `contriever` command: the parser made of one module per subcommand, and the error handling.

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

Each subcommand lives in its own module (cli/evaluate.py, cli/index.py, ...), its parser next to its
handler, heavy imports inside the handler; the option groups they share are cli/options.py.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

from contriever.cli import (
    ann_build,
    cache,
    evaluate,
    evaluate_qa,
    index,
    mine,
    prepare,
    search,
    serve,
    train,
    verify,
)
from contriever.cli.options import HelpFormatter, make_subcommand
from contriever.errors import UsageError

DEBUG_ENV = "CONTRIEVER_DEBUG"
PACKAGE_DIR = Path(__file__).resolve().parents[1]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="contriever",
        description="Contriever: dense retrieval with contrastive learning. `contriever COMMAND -h` for each.",
        formatter_class=HelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (evaluate, index, cache, search, ann_build, evaluate_qa, prepare):
        module.add_subcommand(sub, make_subcommand)
    train.add_subcommands(sub, make_subcommand)
    for module in (mine, serve, verify):
        module.add_subcommand(sub, make_subcommand)
    debug_help = f"show the traceback of an internal error (also ${DEBUG_ENV}=1)"
    parser.add_argument("--debug", action="store_true", help=debug_help)
    for subparser in sub.choices.values():  # accepted after the subcommand too
        subparser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help)
    return parser


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

    if isinstance(error, (DataError, ConfigError, UsageError, OSError)):  # FolderLockedError is an OSError
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
