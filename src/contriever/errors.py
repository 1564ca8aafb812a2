"""Errors a user can act on: each names the file, the line and what is wrong."""

from __future__ import annotations

import os


class DataError(ValueError):
    """Bad input data. The message reads `FILE:LINE: what is wrong`."""

    def __init__(self, path: str | os.PathLike, message: str, line: int | None = None):
        self.path = str(path)
        self.line = line
        self.message = message
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")

    def __reduce__(self):
        # Rebuilt from its three parts, so it survives pickling (multiprocessing workers raise it).
        return type(self), (self.path, self.message, self.line)


class ConfigError(ValueError):
    """A configuration that cannot be right: unknown key, wrong type, impossible value."""


class UsageError(ValueError):
    """A request that cannot be carried out as given: an option value or a combination of inputs that
    cannot work (an unknown FAISS factory, a query model whose size differs from the index's)."""
