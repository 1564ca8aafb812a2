"""Settings as values: how vectors are made (`EncodingSettings`) and how an index is searched
(`SearchSettings`), each one frozen dataclass passed as one argument instead of a dozen keywords.

A new encoding option is one field here (and its flag in cli/options.py), not a parameter threaded
through every layer. The index folder and the encode cache record what they were made with
(`contriever.retrieval.encode`'s plan, from the encoder and these settings).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from contriever.data.passages import PassageSettings
from contriever.model.text_options import TextOptions


@dataclass(frozen=True)
class EncodingSettings:
    """What makes a corpus's vectors besides the model: text options (None: the model's own), token
    limit, passages, precision; and how the encoding runs (batch size, FAISS factory, the cache)."""

    max_length: int | None = None
    lowercase: bool | None = None
    normalize_text: bool | None = None
    prompts: dict[str, str] | None = None  # {"query": ..., "passage": ...}; None: the model's own
    force_prompts: bool = False  # use `prompts` even where the model records others
    precision: str = "auto"
    words: int = 0
    overlap: int = 0
    batch_size: int | None = None  # None: batches by token budget (contriever.model.batching)
    index_factory: str = "Flat"
    use_cache: bool = True
    device: str | None = None  # None: cuda when there is one, else cpu

    @property
    def passages(self) -> PassageSettings:
        return PassageSettings(self.words, self.overlap)

    def text_options(self) -> TextOptions:
        """The text options, as `Encoder.load`'s `text` value."""
        return TextOptions(self.lowercase, self.normalize_text, self.prompts, self.force_prompts)


@dataclass(frozen=True)
class SearchSettings:
    """How deep and how an index folder is searched: exact from its shards, or its approximate index
    `ann/<ann>` (of the folder `index_path`) with `nprobe` / `ef_search` overriding the recorded parameters and its top `rerank`
    candidates re-scored exactly."""

    k: int = 1000
    index_path: str | os.PathLike | None = None  # an index folder searched instead of encoding the corpus
    ann: str | None = None
    nprobe: int | None = None
    ef_search: int | None = None
    rerank: int | None = None

    @property
    def approximate(self) -> dict:
        """The approximate index's parameters (`load_for_search`'s keywords)."""
        return {"nprobe": self.nprobe, "ef_search": self.ef_search, "rerank": self.rerank}

    def __post_init__(self):
        if self.k < 1:
            raise ValueError(f"k must be at least 1, got {self.k}")


def merge_settings(
    encoding: EncodingSettings | None, search: SearchSettings | None, options: dict
) -> tuple[EncodingSettings, SearchSettings]:
    """`encoding` and `search` (defaults for None) with `options`, named as their fields, laid over
    them: what a function that takes settings values accepts from a caller passing keywords."""
    encoding_names = {f.name for f in dataclasses.fields(EncodingSettings)}
    search_names = {f.name for f in dataclasses.fields(SearchSettings)}
    unknown = sorted(set(options) - encoding_names - search_names)
    if unknown:
        raise TypeError(f"unexpected keyword argument(s): {', '.join(unknown)}")
    encoding = dataclasses.replace(
        encoding or EncodingSettings(), **{k: v for k, v in options.items() if k in encoding_names}
    )
    search = dataclasses.replace(
        search or SearchSettings(), **{k: v for k, v in options.items() if k in search_names}
    )
    return encoding, search
