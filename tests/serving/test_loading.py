"""Loading what to serve, the missing-extra message, and the load generator's loopback rule."""

from __future__ import annotations

import importlib.util

import pytest

from contriever.serving import require_serve_extra
from contriever.serving.loadtest import require_loopback


def test_missing_serve_extra_names_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "uvicorn" else real(name))
    with pytest.raises(ImportError, match=r"uvicorn.*pip install 'contriever\[serve\]'"):
        require_serve_extra()


def test_cli_reports_the_missing_extra(monkeypatch, capsys):
    from contriever.cli.main import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "fastapi" else real(name))
    with pytest.raises(SystemExit, match=r"needs fastapi"):
        main(["serve", "--data", "nowhere"])


def test_load_searcher_says_what_is_missing(tiny_service):
    from contriever.serving.server import load_searcher

    with pytest.raises(ValueError, match="nothing to serve"):
        load_searcher()
    with pytest.raises(ValueError, match="at most one of --data"):
        load_searcher(data=str(tiny_service["data"]), corpus=str(tiny_service["data"] / "corpus.jsonl"))


def test_bm25_folder_is_built_once_then_loaded(tiny_service, tmp_path):
    from contriever.serving.server import load_searcher

    folder = tmp_path / "bm25"
    first = load_searcher(data=str(tiny_service["data"]), bm25=str(folder), show_progress=False)
    assert (folder / "bm25.json").is_file() and first.modes == ("bm25",)
    again = load_searcher(bm25=str(folder), data=str(tiny_service["data"]), show_progress=False)
    assert again.bm25_hits(["vitamin"], 3) == first.bm25_hits(["vitamin"], 3)


def test_load_generator_refuses_addresses_off_this_machine():
    assert require_loopback("http://127.0.0.1:8000") == ("127.0.0.1", 8000)
    assert require_loopback("http://[::1]:9000") == ("::1", 9000)
    for url in ("http://10.1.2.3:8000", "http://192.0.2.7", "https://127.0.0.1:8000"):
        with pytest.raises(ValueError):
            require_loopback(url)


def test_the_index_records_its_corpus_so_data_is_optional(tiny_service):
    from contriever.serving.server import load_searcher

    searcher = load_searcher(str(tiny_service["index"]), show_progress=False)
    assert searcher.modes == ("dense", "bm25", "hybrid")
    assert searcher.documents.get("scurvy")["title"] == "Scurvy"


def test_an_index_with_a_passage_store_serves_titles_and_bm25_from_it(tiny_service, tmp_path):
    """Sharded index folders keep their passages in `passages.sqlite` (row, id, doc_id, title, text,
    source, line); the service reads titles and snippets from it and builds BM25 from it."""
    import shutil
    import sqlite3

    from contriever.serving.server import load_searcher

    index = tmp_path / "index"
    shutil.copytree(tiny_service["index"], index)
    ids = (index / "ids.txt").read_text().splitlines()
    with sqlite3.connect(index / "passages.sqlite") as db:
        db.execute(
            "CREATE TABLE passages (row INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, doc_id TEXT NOT NULL, "
            "title TEXT NOT NULL, text TEXT NOT NULL, source TEXT NOT NULL, line INTEGER NOT NULL)"
        )
        db.executemany(
            "INSERT INTO passages VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (row, i, i, f"Stored {i}", f"stored text of {i} about zebrafish", "corpus", row + 1)
                for row, i in enumerate(ids)
            ],
        )
    searcher = load_searcher(str(index), show_progress=False)
    assert searcher.modes == ("dense", "bm25", "hybrid")
    assert searcher.documents.get("scurvy") == {
        "title": "Stored scurvy",
        "text": "stored text of scurvy about zebrafish",
    }
    assert len(searcher.bm25_hits(["zebrafish"], 100)[0]) == len(ids)
    described = searcher.describe("zebrafish", [("malaria", 1.0)])[0]
    assert described["title"] == "Stored malaria" and described["highlights"]
