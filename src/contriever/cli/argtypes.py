"""argparse `type=` helpers: a count or size that cannot be right is refused while parsing.

argparse turns the `ArgumentTypeError` into `contriever CMD: error: argument --k: ...` and exit code 2,
before any data is read or any model loaded. Every count or size option of every command uses one of
these, so `--k 0`, `--batch-size 0` or `--n-keep -1` never reach the code that would misbehave on them.
Every `--output` is checked the same way: not a file where a folder is needed (or the reverse), and
somewhere a file can really be created, before minutes of encoding or training.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def positive_int(text: str) -> int:
    """An integer >= 1 (a count or size that must not be zero: `--k`, `--batch-size`, `--workers`)."""
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0 (a count that may be zero: `--skip-top`, `--n-keep`)."""
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def rank_range(text: str) -> str:
    """`START-END` with 0 <= START < END (the ranking slice `mine --range` draws from)."""
    from contriever.retrieval.mining import parse_rank_range

    try:
        parse_rank_range(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _writable_folder_problem(folder: Path) -> str | None:
    """Why files cannot be created under `folder` (created if missing), or None when they can.

    `os.access` alone trusts the permission bits (root ignores them, a read-only mount does not), so a
    real file is created and removed in the nearest folder that exists.
    """
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"no permission to write in {existing}"
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".contriever-write-test."):
            pass
    except OSError as error:
        return f"cannot write in {existing}: {error.strerror or error}"
    return None


def output_folder(text: str) -> str:
    """A folder to write into: not an existing file, and somewhere files can be created."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is an existing file; name a folder")
    problem = _writable_folder_problem(path)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def output_file(text: str) -> str:
    """A file to write: not an existing folder, in a folder where files can be created."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is an existing folder; name a file")
    problem = _writable_folder_problem(path.parent)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text
