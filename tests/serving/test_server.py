"""`contriever serve` as a real process on 127.0.0.1: concurrent load with bad requests mixed in,
a 100,000-character GET, and a clean stop on SIGTERM and on Ctrl-C (SIGINT)."""

from __future__ import annotations

import http.client
import json
import re
import signal
import threading
from urllib.parse import quote, urlsplit

import pytest

pytest.importorskip("fastapi", reason="the `serve` extra is not installed (pip install 'contriever[serve]')")
pytest.importorskip("uvicorn", reason="the `serve` extra is not installed (pip install 'contriever[serve]')")

from contriever.serving.loadtest import Request, ServerProcess, run_load  # noqa: E402


def _get(url: str, target: str) -> tuple[int, dict | str]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        connection.request("GET", target)
        response = connection.getresponse()
        body = response.read().decode()
        kind = response.getheader("content-type", "")
        return response.status, json.loads(body) if kind.startswith("application/json") else body
    finally:
        connection.close()


def _metric(text: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.MULTILINE)
    assert found, f"{name} not in /metrics"
    return float(found.group(1))


def test_concurrent_load_with_bad_requests_mixed_in_then_sigterm(tiny_service):
    """A short version of benchmarks/serve_load.py: 4 clients, 240 requests over every endpoint,
    each answered as expected; concurrent encodes share forward passes; SIGTERM stops it cleanly."""
    args = ["--index", str(tiny_service["index"]), "--data", str(tiny_service["data"]), "--max-wait-ms", "5"]
    with ServerProcess(args, ready_timeout=300) as server:
        good = [
            Request("GET", "/search", {"q": "vitamin deficiency", "k": 5}),
            Request("GET", "/search", {"q": "how do cells divide", "mode": "hybrid"}),
            Request("GET", "/search", {"q": "mosquito", "mode": "bm25"}),
            Request("POST", "/search", body={"queries": ["insulin", "vaccines"], "k": 3}),
            Request("POST", "/v1/embeddings", body={"input": ["a text", "another text"]}),
        ]
        result = run_load(server.url, good, clients=4, total=200, max_seconds=240, server_pid=server.pid)
        assert result.requests == 200 and result.errors == 0, result.failures[:5]

        bad = [
            Request("GET", "/search", {"q": "vitamin", "k": 0}),
            Request("GET", "/search", {"q": "vitamin", "mode": "fuzzy"}),
            Request("POST", "/search", body={"queries": ["x"] * 10_000}),
            Request("POST", "/v1/embeddings", body={"input": ""}),
        ]
        mixed = [request for pair in zip(good, bad) for request in pair]
        outcome = run_load(server.url, mixed, clients=4, total=40, expect=(200, 422), max_seconds=240)
        assert outcome.errors == 0 and outcome.statuses[422] == 20 and outcome.statuses[200] == 20

        status, health = _get(server.url, "/health")
        assert status == 200 and health["status"] == "ok"
        status, metrics = _get(server.url, "/metrics")
        batches = _metric(metrics, "contriever_encode_batch_size_count")
        texts = _metric(metrics, "contriever_encode_batch_size_sum")
        assert texts >= 200  # every dense search and embedding went through the model
        assert batches < texts  # some forward passes carried several requests' texts
        assert 'contriever_http_errors_total{endpoint="/search",status="422"} 15.0' in metrics

        long_query = quote("x" * 100_000)
        status, body = _get(server.url, f"/search?q={long_query}")
        assert status == 422 and "100,000 characters" in body["error"]["message"]
        assert _get(server.url, "/health")[0] == 200

        assert server.stop(signal.SIGTERM) == 0
    assert "stopped" in "".join(server.log)


def test_ctrl_c_stops_cleanly_with_requests_in_flight(tiny_service):
    args = ["--index", str(tiny_service["index"]), "--data", str(tiny_service["data"])]
    with ServerProcess(args, ready_timeout=300) as server:
        load = threading.Thread(
            target=run_load,
            args=(server.url, [Request("GET", "/search", {"q": "vitamin"})]),
            kwargs={"clients": 2, "total": 100_000, "max_seconds": 30, "expect": (200, 503)},
        )
        load.start()
        assert _get(server.url, "/health")[0] == 200
        assert server.stop(signal.SIGINT) == 0
        load.join(60)
    log = "".join(server.log)
    assert "stopped" in log and "Traceback" not in log


def test_a_taken_port_is_a_clear_error(tiny_service):
    import socket
    import subprocess
    import sys

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "contriever.cli.main",
                "serve",
                "--data",
                str(tiny_service["data"]),
                "--port",
                str(port),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode != 0 and f"cannot listen on 127.0.0.1:{port}" in done.stderr
