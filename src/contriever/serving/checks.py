"""Checks of a request's values that the schema cannot express; each failure is a 422 `ApiError`
naming the element (`queries[1]`) and the limit or flag involved."""

from __future__ import annotations

from contriever.serving.errors import ApiError
from contriever.serving.searcher import MODES, Searcher
from contriever.serving.service import ServeSettings


def check_texts(
    texts: list[str], name: str, limit: int, max_chars: int, limit_flag: str = "", single: bool = False
) -> None:
    """`single`: the request sent one text, not a list, so errors name it `q`, not `q[0]`."""
    if not texts:
        raise ApiError(422, f"{name} is empty: send at least one text", name)
    if len(texts) > limit:
        raise ApiError(
            422, f"{name} holds {len(texts):,} texts; the limit is {limit:,} per request ({limit_flag})", name
        )
    for position, text in enumerate(texts):
        where = name if single else f"{name}[{position}]"
        if not text.strip():
            raise ApiError(422, f"{where} is empty: send the text to search for or embed", where)
        if len(text) > max_chars:
            raise ApiError(
                422,
                f"{where} is {len(text):,} characters long; the limit is {max_chars:,} (--max-chars)",
                where,
            )
        if "\x00" in text:
            raise ApiError(422, f"{where} holds a NUL character (U+0000); send text without it", where)


def check_k(k: int, settings: ServeSettings) -> None:
    if not 1 <= k <= settings.max_k:
        raise ApiError(422, f"k must be between 1 and {settings.max_k:,}, got {k}", "k")


def check_mode(mode: str, searcher: Searcher) -> None:
    if mode not in MODES:
        raise ApiError(422, f"unknown mode {mode!r}; choose one of {', '.join(MODES)}", "mode")
    if mode not in searcher.modes:
        need = "an index (--index)" if mode == "dense" else "a corpus (--data or --corpus) for BM25"
        raise ApiError(422, f"mode {mode!r} is not available: the server was started without {need}", "mode")


def check_model(searcher: Searcher) -> None:
    if searcher.encoder is None:
        raise ApiError(422, "no model is loaded: start the server with --index or --model", "model")


def check_dimensions(dimensions: int | None, searcher: Searcher) -> None:
    dim = searcher.encoder.dim
    if dimensions is not None and dimensions != dim:
        raise ApiError(
            422,
            f"this model makes {dim}-dim embeddings and was not trained to be cut shorter; "
            f"dimensions={dimensions} is not supported (omit it or send {dim})",
            "dimensions",
        )
