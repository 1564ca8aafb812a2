"""How a document becomes the one string an encoder or BM25 reads. Plain Python: no torch here.

A BEIR document is `{"title", "text"}` (maybe with `"_id"`); training files may also give a
document as a plain string, its text.
"""

from __future__ import annotations


def document_text(doc: dict | str) -> str:
    """`title + " " + text` (just the text when untitled), as BEIR and sentence-transformers join them."""
    if isinstance(doc, str):
        return doc
    title = (doc.get("title") or "").strip()
    text = doc.get("text") or ""
    return f"{title} {text}" if title else text
