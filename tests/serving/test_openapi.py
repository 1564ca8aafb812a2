"""The OpenAPI document is valid OpenAPI 3.1 (`openapi-spec-validator`) and says what the server
does: every answer below, good or bad, has its status declared for its route, and its body
validates against the schema declared for that status."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("fastapi", reason="the `serve` extra is not installed (pip install 'contriever[serve]')")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")
spec_validator = pytest.importorskip(
    "openapi_spec_validator", reason="openapi-spec-validator is not installed (the dev extra has it)"
)

EXCHANGES = [
    ("GET", "/search?q=vitamin&k=3", None),
    ("GET", "/search?q=vitamin&k=0", None),
    ("GET", "/search?q=vitamin&k=ten", None),
    ("GET", "/search?q=%00%ff", None),
    ("POST", "/search", {"queries": ["vitamin", "cells"], "k": 2, "mode": "hybrid"}),
    ("POST", "/search", {"queries": ["vitamin"], "k": True}),
    ("POST", "/search", b"{not json"),
    ("POST", "/v1/embeddings", {"input": ["a", "b"]}),
    ("POST", "/v1/embeddings", {"input": "a", "encoding_format": "base64"}),
    ("POST", "/v1/embeddings", {"input": [101, 102]}),
    ("POST", "/v1/embeddings", {"input": "a", "dimensions": 7}),
    ("POST", "/embeddings", {"input": "a"}),
    ("POST", "/embed", {"inputs": ["a", "b"]}),
    ("POST", "/embed", {"inputs": "word " * 600}),
    ("POST", "/rerank", {"query": "vitamin", "texts": ["a", "b"], "return_text": True}),
    ("POST", "/rerank", {"query": "vitamin", "texts": []}),
    ("GET", "/v1/models", None),
    ("GET", "/v1/models/nope", None),
    ("GET", "/health", None),
    ("GET", "/info", None),
    ("GET", "/metrics", None),
]


@pytest.fixture
def spec(client) -> dict:
    return client.get("/openapi.json").json()


def test_the_document_is_valid_openapi_3_1(spec):
    spec_validator.validate(spec)
    assert spec["openapi"].startswith("3.1")
    wanted = {"/search", "/v1/embeddings", "/embeddings", "/embed", "/rerank", "/v1/models", "/info"}
    assert wanted | {"/v1/models/{model_id}", "/health", "/metrics"} <= set(spec["paths"])


def test_token_arrays_are_not_declared_as_accepted(spec):
    schema = spec["components"]["schemas"]["EmbeddingRequest"]["properties"]["input"]
    assert "integer" not in str(schema)


def _operation(spec: dict, method: str, path: str) -> dict:
    for template, operations in spec["paths"].items():
        pattern = "^" + re.sub(r"\{[^}]+\}", "[^?]+", template) + "$"
        if re.match(pattern, path.split("?")[0]):
            return operations[method.lower()]
    raise AssertionError(f"{method} {path} is not in the OpenAPI document")


@pytest.mark.parametrize("method, path, body", EXCHANGES, ids=[f"{m} {p[:40]}" for m, p, _ in EXCHANGES])
def test_every_answer_is_declared_with_its_body(client, spec, method, path, body):
    import jsonschema

    if isinstance(body, bytes):
        response = client.request(method, path, content=body)
    else:
        response = client.request(method, path, json=body)
    operation = _operation(spec, method, path)
    status = str(response.status_code)
    assert status in operation["responses"], f"{method} {path} answered {status}, not declared"
    content = operation["responses"][status].get("content", {})
    if response.headers["content-type"].startswith("application/json"):
        schema = content["application/json"]["schema"]
        document = {**schema, "components": spec["components"]}  # so #/components/... refs resolve
        jsonschema.Draft202012Validator(document).validate(response.json())
    else:
        assert "text/plain" in content
