"""Small file helpers: every write goes to a temporary file beside the target, then is renamed in."""

from __future__ import annotations

import codecs
import gzip
import json
import os
import shutil
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file beside `path`; on success it replaces `path` in one rename."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600; give it an ordinary file's mode
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty staging folder beside `path`; on success it replaces `path` (kept on failure).

    The old folder is renamed aside, the new one renamed in, then the old one deleted: a crash leaves
    either the old folder or the new one under `path`, never a half-written one.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    staging.chmod(0o777 & ~_umask())  # mkdtemp makes it private; the result is an ordinary folder
    try:
        yield staging
        swap_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def swap_into_place(staging: Path, target: Path) -> None:
    """Replace the folder `target` by `staging` (two renames; the old one removed afterwards)."""
    if target.exists():
        backup = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
        backup.rmdir()
        target.rename(backup)
        staging.rename(target)
        shutil.rmtree(backup, ignore_errors=True)
    else:
        staging.rename(target)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike, obj) -> None:
    with atomic_write(path) as handle:
        json.dump(obj, handle, indent=2, sort_keys=False)
        handle.write("\n")


def open_text(path: str | os.PathLike) -> IO[str]:
    """Open a UTF-8 text file for reading, gzip-compressed when its name ends in .gz.

    A byte-order mark at the start (Windows tools write one) is dropped.
    """
    path = Path(path)
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig")
    return open(path, encoding="utf-8-sig")


def numbered_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """`(line number from 1, line)` of a UTF-8 text file (gzip when .gz), line ends kept.

    A byte-order mark at the start is dropped. Each line is decoded on its own, so bytes that are not
    UTF-8 raise a `DataError` naming their own line and column (a text-mode reader decodes ahead in
    blocks and blames an earlier line); so does a truncated or corrupt gzip, at the line it cut.
    """
    from contriever.errors import DataError

    path = Path(path)
    try:
        handle = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # noqa: SIM115
    except FileNotFoundError:
        raise DataError(path, "no such file") from None
    except IsADirectoryError:
        raise DataError(path, "is a folder, expected a file") from None
    with handle:
        number = 0
        try:
            for number, raw in enumerate(handle, start=1):
                if number == 1 and raw.startswith(codecs.BOM_UTF8):
                    raw = raw[len(codecs.BOM_UTF8) :]
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as error:
                    raise DataError(
                        path,
                        f"not UTF-8 text (byte 0x{raw[error.start]:02x} at column {error.start + 1}); "
                        "save the file as UTF-8",
                        number,
                    ) from None
                yield number, line
        except (OSError, EOFError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
            hint = ": is it a truncated or corrupt gzip?" if path.suffix == ".gz" else ""
            raise DataError(path, f"cannot read the file ({error}){hint}", number + 1) from None
