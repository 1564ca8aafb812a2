"""`--api-key`: every route but /health refuses a missing or wrong key with 401. The bounded queue:
a burst beyond it gets 429s with Retry-After, never a timeout, and the server answers normally after."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter

import pytest

pytest.importorskip("fastapi", reason="the `serve` extra is not installed (pip install 'contriever[serve]')")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")

KEY = "s3cret-key"


@pytest.fixture
def keyed(searcher, make_client):
    with make_client(searcher, api_key=KEY) as client:
        yield client


def _every_route(client) -> list[tuple[str, str, dict | None]]:
    """(method, path, body) of every route in the OpenAPI document, plus the page, docs and assets."""
    bodies = {
        "/search": {"queries": ["vitamin"]},
        "/v1/embeddings": {"input": "x"},
        "/embeddings": {"input": "x"},
        "/embed": {"inputs": "x"},
        "/rerank": {"query": "x", "texts": ["a"]},
    }
    spec = client.get("/openapi.json", headers={"Authorization": f"Bearer {KEY}"}).json()
    routes = []
    for path, operations in spec["paths"].items():
        concrete = path.replace("{model_id}", client.get("/health").json()["model"])
        concrete += "?q=vitamin" if path == "/search" else ""
        for method in operations:
            routes.append((method.upper(), concrete, bodies.get(path) if method == "post" else None))
    extra = ["/", "/docs", "/openapi.json", "/favicon.ico", "/docs-assets/swagger-ui.css", "/no/such/path"]
    return routes + [("GET", path, None) for path in extra]


@pytest.mark.bad_input
def test_every_route_but_health_needs_the_key(keyed):
    routes = _every_route(keyed)
    assert len(routes) >= 16
    wrong = {"Authorization": "Bearer not-the-key"}
    for method, path, body in routes:
        for headers in ({}, wrong, {"Authorization": KEY}, {"Authorization": f"Basic {KEY}"}):
            response = keyed.request(method, path, json=body, headers=headers)
            if path == "/health":
                assert response.status_code == 200
                continue
            assert response.status_code == 401, (method, path, headers, response.status_code)
            assert response.headers["www-authenticate"] == "Bearer"
            assert response.json()["error"]["code"] == "invalid_api_key"
        good = keyed.request(method, path, json=body, headers={"Authorization": f"Bearer {KEY}"})
        assert good.status_code == (404 if path == "/no/such/path" else 200), (method, path, good.text)


def test_the_document_declares_the_bearer_scheme(keyed):
    spec = keyed.get("/openapi.json", headers={"Authorization": f"Bearer {KEY}"}).json()
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert spec["security"] == [{"bearer": []}] and spec["paths"]["/health"]["get"]["security"] == []


class SlowSearcher:
    """The real searcher with each model call made slow, so a burst fills the queue."""

    def __init__(self, searcher, seconds: float):
        self._searcher, self._seconds = searcher, seconds

    def encode_batch(self, jobs):
        time.sleep(self._seconds)
        return self._searcher.encode_batch(jobs)

    def __getattr__(self, name):
        return getattr(self._searcher, name)


def _post(url: str, body: dict, timeout: float) -> tuple[int, str | None]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (loopback)
            return response.status, None
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Retry-After")


@pytest.mark.parametrize("batching", [True, False], ids=["batching", "no-batching"])
def test_a_burst_beyond_the_queue_gets_429_with_retry_after_not_timeouts(searcher, serve_app, batching):
    from contriever.serving.app import ServeSettings, create_app

    settings = ServeSettings(max_queue=4, max_batch_size=2, batching=batching)
    app = create_app(SlowSearcher(searcher, 0.05), settings)
    outcomes: list[tuple[int, str | None]] = []
    lock = threading.Lock()
    with serve_app(app) as url:

        def client():
            for _ in range(3):
                outcome = _post(url + "v1/embeddings", {"input": ["vitamin deficiency"]}, timeout=30)
                with lock:
                    outcomes.append(outcome)

        threads = [threading.Thread(target=client) for _ in range(24)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        statuses = Counter(status for status, _ in outcomes)
        assert len(outcomes) == 72 and set(statuses) <= {200, 429}, statuses  # no timeout, no 5xx
        assert statuses[429] > 0 and statuses[200] > 0, statuses
        assert all(retry is not None and int(retry) >= 1 for status, retry in outcomes if status == 429)
        assert _post(url + "v1/embeddings", {"input": "after the burst"}, timeout=30) == (200, None)
