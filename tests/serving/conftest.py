"""A tiny service: a dozen titled documents, a tiny random model saved to disk, its index."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import pytest

DOCS = {
    "scurvy": ("Scurvy", "Scurvy is a disease caused by a lack of vitamin C in the diet of sailors."),
    "rickets": ("Rickets", "Rickets comes from a lack of vitamin D; children's bones soften and bend."),
    "anemia": ("Anemia", "Iron deficiency anemia is the most common anemia; red blood cells are small."),
    "dense": ("", "Dense retrievers encode queries and documents into vectors compared by inner product."),
    "bm25": ("BM25", "BM25 ranks documents by term frequency, inverse document frequency and length."),
    "stem-cells": ("Stem cells", "Stem cells divide and differentiate into the cells of every tissue."),
    "insulin": ("Insulin", "Insulin lets cells take up glucose; diabetes follows when it is missing."),
    "malaria": ("Malaria", "Malaria is spread by mosquitoes carrying Plasmodium parasites."),
    "vaccine": ("Vaccines", "Vaccines train the immune system to recognise a pathogen before infection."),
    "unicode": ("Ünïcode 😀 title", "Emoji 😀 before the word vitamin shift code units but not code points."),
    "long": ("Long", " ".join(["filler"] * 200) + " the word mitochondria appears late " + "tail " * 50),
    "untitled": ("", "A document without a title about sleep and circadian rhythm."),
}


@pytest.fixture(scope="session")
def tiny_service(tmp_path_factory, tiny_encoder) -> dict[str, Path]:
    """{"data": BEIR folder, "model": tiny model folder, "index": its dense index folder}."""
    from contriever.cli.main import main

    root = tmp_path_factory.mktemp("tiny-service")
    data = root / "data"
    data.mkdir()
    (data / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": d, "title": t, "text": x}) + "\n" for d, (t, x) in DOCS.items()),
        encoding="utf-8",
    )
    model = tiny_encoder.save(root / "model")
    index = root / "index"
    assert main(["index", "--data", str(data), "--model", str(model), "--output", str(index)]) == 0
    return {"data": data, "model": model, "index": index}


@pytest.fixture(scope="session")
def searcher(tiny_service):
    from contriever.serving.server import ServeSources, load_searcher

    sources = ServeSources(index=str(tiny_service["index"]), data=str(tiny_service["data"]))
    return load_searcher(sources, show_progress=False)


def _make_client(searcher, **settings):
    from fastapi.testclient import TestClient

    from contriever.serving.app import ServeSettings, create_app

    return TestClient(create_app(searcher, ServeSettings(**settings)), raise_server_exceptions=False)


@pytest.fixture
def make_client():
    """`make_client(searcher, **settings)`: a TestClient over a fresh app; use it as a context manager."""
    return _make_client


@pytest.fixture
def docs() -> dict[str, tuple[str, str]]:
    return DOCS


@pytest.fixture
def client(searcher):
    with _make_client(searcher) as test_client:
        yield test_client


@contextmanager
def served(app):
    """`app` served by uvicorn on 127.0.0.1 (a free port) in a thread of this process; yields its URL."""
    import socket
    import threading
    import time

    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@pytest.fixture
def serve_app():
    """`with serve_app(app) as url:` the app on a real socket (see `served`)."""
    return served
