"""Files crafted to run code when loaded: what the loaders must refuse without running it."""

from __future__ import annotations

import pathlib


class Payload:
    """Unpickling this writes `marker`: proof that loading a file ran code from it."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.write_text, (self.marker, "code ran")
