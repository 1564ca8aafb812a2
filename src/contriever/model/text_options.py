"""The text options a model applies before tokenizing, as one value (`Encoder.load`'s `text`).

Kept apart from `encoder.py` so that settings holding them (`retrieval/settings.py`) import no torch.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TextOptions:
    """The paper code's text options and the prompts; None (no prompts) keeps the model's own.

    `lowercase`, `normalize_text`: lowercasing and the `normalize_text` table (`contriever.data.normalize`).
    `prompts` (`{"query": ..., "passage": ...}`) replace the model's prompts name by name (an empty
    string or None removes one); one that contradicts a prompt the model records is refused
    (`UsageError`) unless `force_prompts`.
    """

    lowercase: bool | None = None
    normalize_text: bool | None = None
    prompts: dict[str, str | None] | None = None
    force_prompts: bool = False
