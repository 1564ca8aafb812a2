"""The passage store: every passage of an index by row, on disk (SQLite), read a few rows at a time.

`passages.sqlite` in an index folder has one table,

    passages(row INTEGER PRIMARY KEY, id TEXT UNIQUE, doc_id TEXT, title TEXT, text TEXT,
             source TEXT, line INTEGER)

where `row` is the passage's row in the index (0, 1, ...), `source`/`line` where its document was
read. `search` shows a hit's title and a snippet from it without the corpus in memory; the store is
also how the encoder reads its shards back (a row range), and the UNIQUE id is how duplicate ids are
found in constant memory, with both lines named.

The store is built in a temporary file beside its target and renamed into place when complete; its
checksum is taken then (one read of a file still in the page cache) and recorded in index.json. On
open, its header is checked (a file that is not SQLite is refused naming it, not a `DatabaseError`
later), and any SQLite error while reading becomes a one-line `DataError` naming the file.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from contriever.data.passages import Document, Passage
from contriever.errors import DataError
from contriever.io import as_disk_full, file_checksum, remember_checksum

SQLITE_HEADER = b"SQLite format 3\x00"

SCHEMA = """
CREATE TABLE passages (
    row INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, doc_id TEXT NOT NULL,
    title TEXT NOT NULL, text TEXT NOT NULL, source TEXT NOT NULL, line INTEGER NOT NULL
)
"""


def write_store(
    path: str | os.PathLike, passages: Iterable[tuple[Passage, Document]], batch: int = 10_000
) -> int:
    """Write `(passage, document)` pairs in row order to a new store at `path`; return the count.

    A duplicate passage id raises `DataError` naming both lines. Nothing is left at `path` unless the
    whole store was written.
    """
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    connection = sqlite3.connect(tmp)
    count = 0
    try:
        connection.execute("PRAGMA journal_mode = OFF")
        connection.execute("PRAGMA synchronous = OFF")
        connection.execute(SCHEMA)
        pending: list[tuple] = []

        def flush() -> None:
            try:
                connection.executemany("INSERT INTO passages VALUES (?, ?, ?, ?, ?, ?, ?)", pending)
            except sqlite3.IntegrityError:
                _raise_duplicate(connection, pending)
            pending.clear()

        for passage, doc in passages:
            pending.append(
                (count, passage.id, passage.doc_id, passage.title, passage.text, doc.path, doc.line)
            )
            count += 1
            if len(pending) >= batch:
                flush()
        flush()
        connection.commit()
        connection.close()
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        checksum = file_checksum(tmp)
        os.replace(tmp, target)
        remember_checksum(target, checksum)
    except BaseException as error:
        connection.close()
        written = tmp.stat().st_size if tmp.exists() else 0
        tmp.unlink(missing_ok=True)
        full = as_disk_full(error, target, written)  # one clear line instead of "disk I/O error"
        if full is not None:
            raise full from None
        raise
    return count


def _raise_duplicate(connection: sqlite3.Connection, pending: list[tuple]) -> None:
    seen: dict[str, tuple] = {}
    for row in pending:
        passage_id = row[1]
        earlier = connection.execute(
            "SELECT source, line FROM passages WHERE id = ?", (passage_id,)
        ).fetchone()
        earlier = seen.get(passage_id) or earlier
        if earlier is not None and tuple(earlier) != (row[5], row[6]):  # (executemany kept the rows before)
            raise DataError(
                row[5], f"duplicate id {passage_id!r} (first seen in {earlier[0]} line {earlier[1]})", row[6]
            )
        seen[passage_id] = (row[5], row[6])
    raise DataError(pending[0][5], "duplicate passage id")  # not reached: the insert failed for one


class PassageStore:
    """Read passages by row from a `passages.sqlite` (see the module docstring)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(self.path, "no passage store here")
        with open(self.path, "rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
        if header != SQLITE_HEADER:
            raise DataError(
                self.path, "not a passage store (not an SQLite database): damaged; rebuild the index"
            )
        # read-only; check_same_thread off so a web server's worker threads can share it
        self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        self._execute("SELECT row, id, doc_id, title, text FROM passages LIMIT 1").fetchall()

    def _execute(self, query: str, parameters=()):
        try:
            return self._db.execute(query, parameters)
        except sqlite3.DatabaseError as error:  # a damaged file: "file is not a database", "malformed"
            raise DataError(
                self.path, f"cannot read the passage store ({error}): damaged; rebuild the index"
            ) from None

    def __len__(self) -> int:
        return int(self._execute("SELECT COUNT(*) FROM passages").fetchone()[0])

    def get(self, rows) -> list[dict]:
        """`{"row", "id", "doc_id", "title", "text"}` for each of `rows`, in the order given."""
        rows = [int(r) for r in np.asarray(rows, dtype=np.int64).ravel()]
        found: dict[int, dict] = {}
        for start in range(0, len(rows), 500):
            part = rows[start : start + 500]
            query = f"SELECT row, id, doc_id, title, text FROM passages WHERE row IN ({','.join('?' * len(part))})"
            for row, pid, doc_id, title, text in self._execute(query, part).fetchall():
                found[row] = {"row": row, "id": pid, "doc_id": doc_id, "title": title, "text": text}
        missing = [r for r in rows if r not in found]
        if missing:
            raise DataError(self.path, f"has no passage at row {missing[0]}")
        return [found[r] for r in rows]

    def texts_by_id(self, ids) -> dict[str, str]:
        """`{id: text}` for passage `ids` (each must be in the store)."""
        wanted = list(dict.fromkeys(str(i) for i in ids))
        found: dict[str, str] = {}
        for start in range(0, len(wanted), 500):
            part = wanted[start : start + 500]
            query = f"SELECT id, text FROM passages WHERE id IN ({','.join('?' * len(part))})"
            found.update(self._execute(query, part).fetchall())
        missing = [i for i in wanted if i not in found]
        if missing:
            raise DataError(self.path, f"has no passage with id {missing[0]!r}")
        return found

    def range(self, start: int, stop: int) -> list[tuple[str, str, str]]:
        """`(id, title, text)` of rows `start .. stop-1`, in row order."""
        query = "SELECT id, title, text FROM passages WHERE row >= ? AND row < ? ORDER BY row"
        return self._execute(query, (start, stop)).fetchall()

    def close(self) -> None:
        self._db.close()
