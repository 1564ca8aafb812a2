"""The HTTP API through FastAPI's TestClient: search in three modes, embeddings, health, metrics,
the page, and every bad request answered with a 4xx JSON error while the server keeps serving."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the `serve` extra is not installed (pip install 'contriever[serve]')")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")


# ----- search ------------------------------------------------------------------------------------------
def test_dense_search_matches_the_index_searched_directly(client, searcher, docs):
    body = client.get("/search", params={"q": "vitamin deficiency in sailors", "k": 5}).json()
    assert body["mode"] == "dense" and body["k"] == 5 and body["took_ms"] > 0
    vector = searcher.encoder.encode_queries(["vitamin deficiency in sailors"], show_progress=False)
    scores, ids = searcher.dense.index.search(vector, 5, show_progress=False)
    assert [hit["id"] for hit in body["hits"]] == ids[0]
    np.testing.assert_allclose([hit["score"] for hit in body["hits"]], scores[0], rtol=1e-4, atol=1e-5)
    for hit in body["hits"]:
        title, text = docs[hit["id"]]
        assert hit["title"] == title
        assert hit["snippet"].replace("\u2026", "").strip() in " ".join(text.split())


def test_bm25_search_finds_and_highlights_the_terms(client):
    body = client.get("/search", params={"q": "vitamin deficiency", "mode": "bm25", "k": 10}).json()
    ids = [hit["id"] for hit in body["hits"]]
    assert set(ids[:2]) == {"scurvy", "rickets"} or "anemia" in ids[:3]
    assert set(ids) <= {"scurvy", "rickets", "anemia", "unicode"}  # only documents sharing a term
    scores = [hit["score"] for hit in body["hits"]]
    assert scores == sorted(scores, reverse=True) and all(s > 0 for s in scores)
    for hit in body["hits"]:
        marked = [hit["snippet"][a:b].lower() for a, b in hit["highlights"]]
        assert marked and set(marked) <= {"vitamin", "deficiency"}


def test_hybrid_fuses_dense_and_bm25(client, searcher):
    query = "cells divide"
    k = 4
    hybrid = client.get("/search", params={"q": query, "mode": "hybrid", "k": k}).json()["hits"]
    dense = client.get("/search", params={"q": query, "mode": "dense", "k": 100}).json()["hits"]
    bm25 = client.get("/search", params={"q": query, "mode": "bm25", "k": 100}).json()["hits"]
    from contriever.retrieval.hybrid import reciprocal_rank_fusion

    runs = [{"q": {h["id"]: h["score"] for h in found}} for found in (bm25, dense)]
    expected = list(reciprocal_rank_fusion(runs, k=60, top_k=k)["q"].items())
    assert [(h["id"], pytest.approx(h["score"])) for h in hybrid] == expected
    assert hybrid[0]["id"] == "stem-cells"  # BM25's clear winner survives the fusion at rank 1 or 2
    assert len(hybrid) == k


def test_post_batch_equals_one_get_per_query(client):
    queries = ["vitamin deficiency", "mosquito parasites", "how do vaccines work"]
    body = client.post("/search", json={"queries": queries, "k": 3, "mode": "hybrid"}).json()
    assert [result["query"] for result in body["results"]] == queries
    for query, result in zip(queries, body["results"]):
        alone = client.get("/search", params={"q": query, "k": 3, "mode": "hybrid"}).json()
        assert [h["id"] for h in result["hits"]] == [h["id"] for h in alone["hits"]]


def test_unicode_highlights_count_code_points(client):
    hit = next(
        h
        for h in client.get("/search", params={"q": "vitamin emoji", "mode": "bm25"}).json()["hits"]
        if h["id"] == "unicode"
    )
    assert [hit["snippet"][a:b] for a, b in hit["highlights"]] == ["Emoji", "vitamin"]


def test_a_mode_the_server_lacks_is_a_clear_422(searcher, make_client):
    from contriever.serving.searcher import Searcher, SearcherSettings

    dense_only = Searcher(
        searcher.encoder, searcher.dense.index, None, searcher.documents, SearcherSettings(model_name="tiny")
    )
    with make_client(dense_only) as client:
        response = client.get("/search", params={"q": "x", "mode": "bm25"})
        assert response.status_code == 422
        assert "not available" in response.json()["error"]["message"]
        assert client.get("/health").json()["modes"] == ["dense"]


# ----- embeddings ------------------------------------------------------------------------------------
def test_embeddings_follow_openai_and_equal_the_encoder(client, searcher):
    texts = ["a query about scurvy", "another, longer text about vitamin C deficiency in sailors"]
    body = client.post("/v1/embeddings", json={"input": texts, "model": "anything"}).json()
    assert body["object"] == "list" and body["model"] == searcher.model_name
    assert [item["index"] for item in body["data"]] == [0, 1]
    assert all(item["object"] == "embedding" for item in body["data"])
    got = np.array([item["embedding"] for item in body["data"]], dtype=np.float32)
    expected = searcher.encoder.encode(texts, show_progress=False)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    tokens = sum(len(ids) for ids in searcher.encoder.tokenize(texts))
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}

    one = client.post("/v1/embeddings", json={"input": texts[0]}).json()
    assert len(one["data"]) == 1
    np.testing.assert_allclose(one["data"][0]["embedding"], expected[0], rtol=1e-4, atol=1e-5)

    packed = client.post("/v1/embeddings", json={"input": texts, "encoding_format": "base64"}).json()
    decoded = np.stack(
        [np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4") for item in packed["data"]]
    )
    np.testing.assert_allclose(decoded, got, rtol=1e-6)

    models = client.get("/v1/models").json()
    assert models["data"][0]["id"] == searcher.model_name


# ----- operations --------------------------------------------------------------------------------------
def test_health_says_what_is_loaded(client, docs):
    body = client.get("/health").json()
    assert body["status"] == "ok" and body["documents"] == len(docs)
    assert body["modes"] == ["dense", "bm25", "hybrid"] and body["dim"] == 32
    assert body["batching"]["enabled"] is True


def test_metrics_count_requests_errors_latency_and_batches(client):
    client.get("/search", params={"q": "vitamin"})
    client.get("/search", params={"q": "vitamin", "k": 0})
    client.get("/no/such/path")
    text = client.get("/metrics").text
    assert 'contriever_http_requests_total{endpoint="/search",method="GET",status="200"} 1.0' in text
    assert 'contriever_http_errors_total{endpoint="/search",status="422"} 1.0' in text
    assert 'contriever_http_errors_total{endpoint="other",status="404"} 1.0' in text
    assert 'contriever_http_request_duration_seconds_bucket{endpoint="/search",le="+Inf"} 2.0' in text
    assert "contriever_encode_batch_size_count 1.0" in text
    assert "contriever_documents 12.0" in text


def test_the_page_is_served_self_contained(client):
    response = client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    page = response.text
    assert "http://" not in page and "https://" not in page and "//cdn" not in page
    for mode in ("dense", "bm25", "hybrid"):
        assert f'data-mode="{mode}"' in page


def test_docs_are_served_offline_with_a_swagger_ui_that_reads_openapi_3_1(client):
    assert client.get("/openapi.json").json()["openapi"].startswith("3.1")
    docs = client.get("/docs")
    assert docs.status_code == 200 and "cdn" not in docs.text and "https://" not in docs.text
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):  # from the installed package: no internet
        assert f"/docs-assets/{asset}" in docs.text
        response = client.get(f"/docs-assets/{asset}")
        assert response.status_code == 200 and len(response.content) > 100_000
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml")


def test_the_only_path_parameter_is_a_model_id(client):
    """Nothing in a request names a file: the one templated path is the model card, whose id is
    compared with the served model's name."""
    paths = client.get("/openapi.json").json()["paths"]
    assert [path for path in paths if "{" in path] == ["/v1/models/{model_id}"]


# ----- k in every mode ----------------------------------------------------------------------------------
MANY_TERMS = "vitamin cells diabetes mosquitoes vaccines"


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
@pytest.mark.parametrize("k", [1, 2, 5, 12, 20])
def test_every_mode_returns_at_most_k_hits(client, searcher, docs, mode, k):
    """k is honoured in every mode, by GET and POST (BM25 once returned its 100 candidates)."""
    got = client.get("/search", params={"q": MANY_TERMS, "mode": mode, "k": k}).json()
    posted = client.post("/search", json={"queries": [MANY_TERMS], "mode": mode, "k": k}).json()
    ids = [hit["id"] for hit in got["hits"]]
    assert got["k"] == k and ids == [hit["id"] for hit in posted["results"][0]["hits"]]
    matching = list(searcher.bm25.retrieve({"q": MANY_TERMS}, 1000)["q"])
    assert 5 < len(matching) < len(docs)  # the query is a real test of the cut-off
    expected = {"dense": min(k, len(docs)), "bm25": min(k, len(matching)), "hybrid": min(k, len(docs))}
    assert len(ids) == expected[mode] and len(set(ids)) == len(ids)
    if mode == "bm25":
        assert ids == matching[:k]


# ----- bad requests ------------------------------------------------------------------------------------
LONG = "x" * 100_000
LONG_URL = "x" * 20_000  # httpx refuses URLs over 64 KiB; test_server.py sends the 100,000 by GET
BAD_REQUESTS = [
    ("empty q", "GET", "/search?q=", None, 422),
    ("blank q", "GET", "/search?q=%20%20", None, 422),
    ("missing q", "GET", "/search", None, 400),
    ("k zero", "GET", "/search?q=vitamin&k=0", None, 422),
    ("k negative", "GET", "/search?q=vitamin&k=-3", None, 422),
    ("k above 1000", "GET", "/search?q=vitamin&k=1001", None, 422),
    ("k not a number", "GET", "/search?q=vitamin&k=ten", None, 400),
    ("unknown mode", "GET", "/search?q=vitamin&mode=fuzzy", None, 422),
    ("20,000-char GET query", "GET", f"/search?q={LONG_URL}", None, 422),
    ("malformed JSON", "POST", "/search", b'{"queries": ["vitamin"', 400),
    ("not UTF-8", "POST", "/search", b'{"queries": ["vitamin \xff\xfe"]}', 400),
    ("latin-1 JSON", "POST", "/v1/embeddings", '{"input": "caf\u00e9"}'.encode("latin-1"), 400),
    ("empty body", "POST", "/search", b"", 400),
    ("JSON not an object", "POST", "/search", b"[1, 2]", 400),
    ("queries a string", "POST", "/search", {"queries": "vitamin"}, 400),
    ("no queries", "POST", "/search", {"queries": []}, 422),
    ("empty query in batch", "POST", "/search", {"queries": ["vitamin", ""]}, 422),
    ("100,000-char POST query", "POST", "/search", {"queries": [LONG]}, 422),
    ("10,000 queries", "POST", "/search", {"queries": ["vitamin"] * 10_000}, 422),
    ("k zero in batch", "POST", "/search", {"queries": ["vitamin"], "k": 0}, 422),
    ("k above 1000 in batch", "POST", "/search", {"queries": ["vitamin"], "k": 5000}, 422),
    ("unknown mode in batch", "POST", "/search", {"queries": ["vitamin"], "mode": "sparse"}, 422),
    ("unknown field", "POST", "/search", {"queries": ["vitamin"], "path": "/etc/passwd"}, 400),
    ("empty input", "POST", "/v1/embeddings", {"input": ""}, 422),
    ("input list empty", "POST", "/v1/embeddings", {"input": []}, 422),
    ("token arrays", "POST", "/v1/embeddings", {"input": [101, 2000, 102]}, 422),
    ("input not text", "POST", "/v1/embeddings", {"input": {"file": "/etc/passwd"}}, 400),
    ("100,000-char input", "POST", "/v1/embeddings", {"input": LONG}, 422),
    ("10,000 inputs", "POST", "/v1/embeddings", {"input": ["vitamin"] * 10_000}, 422),
    ("wrong dimensions", "POST", "/v1/embeddings", {"input": "vitamin", "dimensions": 7}, 422),
    ("unknown encoding", "POST", "/v1/embeddings", {"input": "vitamin", "encoding_format": "hex"}, 400),
    ("k true in batch", "POST", "/search", {"queries": ["vitamin"], "k": True}, 400),
    ("k a string in batch", "POST", "/search", {"queries": ["vitamin"], "k": "10"}, 400),
    ("k a float in batch", "POST", "/search", {"queries": ["vitamin"], "k": 2.5}, 400),
    ("NUL in q", "GET", "/search?q=vita%00min", None, 422),
    ("q not UTF-8", "GET", "/search?q=%00%ff", None, 400),
    ("q latin-1", "GET", "/search?q=caf%e9", None, 400),
    ("NUL in input", "POST", "/v1/embeddings", {"input": ["ok", "a\u0000b"]}, 422),
    ("a number among the inputs", "POST", "/v1/embeddings", {"input": ["ok", 5]}, 400),
    ("token arrays in a list", "POST", "/v1/embeddings", {"input": [[101, 2000, 102]]}, 422),
    ("dimensions true", "POST", "/v1/embeddings", {"input": "vitamin", "dimensions": True}, 400),
    ("embed: empty inputs", "POST", "/embed", {"inputs": []}, 422),
    ("embed: unknown field", "POST", "/embed", {"inputs": "x", "prompt_name": "query"}, 400),
    ("embed: left truncation", "POST", "/embed", {"inputs": "x", "truncation_direction": "Left"}, 400),
    ("embed: normalize a string", "POST", "/embed", {"inputs": "x", "normalize": "no"}, 400),
    ("embed: too long, truncate=false", "POST", "/embed", {"inputs": "word " * 600}, 413),
    ("embed: wrong dimensions", "POST", "/embed", {"inputs": "x", "dimensions": 8}, 422),
    ("rerank: no texts", "POST", "/rerank", {"query": "x", "texts": []}, 422),
    ("rerank: empty query", "POST", "/rerank", {"query": " ", "texts": ["a"]}, 422),
    ("rerank: texts a string", "POST", "/rerank", {"query": "x", "texts": "a"}, 400),
    ("another model", "GET", "/v1/models/gpt-4", None, 404),
    ("unknown path", "GET", "/etc/passwd", None, 404),
    ("wrong method", "DELETE", "/search", None, 405),
    ("GET embeddings", "GET", "/v1/embeddings", None, 405),
]


@pytest.mark.bad_input
@pytest.mark.parametrize(
    "method, path, body, status", [case[1:] for case in BAD_REQUESTS], ids=[case[0] for case in BAD_REQUESTS]
)
def test_bad_request_gets_a_4xx_json_error_and_the_server_goes_on(client, method, path, body, status):
    if isinstance(body, bytes):
        response = client.request(method, path, content=body, headers={"Content-Type": "application/json"})
    else:
        response = client.request(method, path, json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert isinstance(error["code"], str) and error["code"] and error["type"] == "invalid_request_error"
    assert isinstance(error["message"], str) and 10 < len(error["message"]) < 400  # says what, briefly
    assert client.get("/health").status_code == 200
    assert client.get("/search", params={"q": "vitamin", "k": 2}).status_code == 200


def test_error_messages_say_what_is_wrong(client):
    def message(response):
        return response.json()["error"]["message"]

    assert "between 1 and 1,000" in message(client.get("/search", params={"q": "x", "k": 0}))
    assert "dense, bm25, hybrid" in message(client.get("/search", params={"q": "x", "mode": "fuzzy"}))
    assert "20,000 characters" in message(client.get("/search", params={"q": LONG_URL}))
    assert "10,000 texts" in message(client.post("/search", json={"queries": ["x"] * 10_000}))
    assert "queries[1] is empty" in message(client.post("/search", json={"queries": ["x", " "]}))
    assert "not valid JSON" in message(
        client.post("/search", content=b"{", headers={"Content-Type": "application/json"})
    )
    assert "UTF-8" in message(client.post("/search", content=b'{"queries": ["\xff"]}'))
    assert "UTF-8" in message(client.get("/search?q=%00%ff"))
    assert "NUL" in message(client.get("/search?q=a%00"))


@pytest.mark.bad_input
def test_errors_name_the_element_as_a_client_writes_it(client):
    def error(response):
        return response.json()["error"]

    assert error(client.post("/v1/embeddings", json={"input": ["ok", 5]}))["param"] == "input[1]"
    assert error(client.post("/v1/embeddings", json={"input": ["ok", " "]}))["param"] == "input[1]"
    assert error(client.post("/v1/embeddings", json={"input": " "}))["param"] == "input"
    assert error(client.post("/search", json={"queries": ["a", 3]}))["param"] == "queries[1]"
    assert error(client.post("/search", json={"queries": ["a"], "k": True}))["param"] == "k"
    assert error(client.get("/search", params={"q": "x", "k": "ten"}))["param"] == "k"
    unknown = error(client.post("/search", json={"queries": ["a"], "path": "/etc/passwd"}))
    assert unknown["param"] == "path" and unknown["code"] == "unknown_field"
    tokens = client.post("/v1/embeddings", json={"input": [[101, 2000, 102]]})
    assert tokens.status_code == 422
    assert "check_embedding_ctx_length=False" in error(tokens)["message"]
    assert error(tokens)["code"] == "token_ids_not_supported"


def test_a_body_over_the_limit_is_413(searcher, make_client):
    with make_client(searcher, max_body_bytes=1000) as client:
        response = client.post("/v1/embeddings", json={"input": ["word " * 100] * 5})
        assert response.status_code == 413 and "1,000 bytes" in response.json()["error"]["message"]
        assert client.post("/v1/embeddings", json={"input": "small"}).status_code == 200


def test_json_is_read_whatever_the_content_type(client):
    """`curl -d '{...}'` sends application/x-www-form-urlencoded; the body is JSON all the same."""
    response = client.post(
        "/search",
        content=json.dumps({"queries": ["vitamin"]}),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200


# ----- cross-origin and host checks --------------------------------------------------------------------
def test_cross_origin_requests_are_refused_by_default(client):
    response = client.get("/search", params={"q": "vitamin"}, headers={"Origin": "http://evil.example"})
    assert response.status_code == 403 and "--cors-origin" in response.json()["error"]["message"]
    assert "access-control-allow-origin" not in response.headers
    post = client.post("/v1/embeddings", json={"input": "x"}, headers={"Origin": "http://evil.example"})
    assert post.status_code == 403
    same = client.post("/v1/embeddings", json={"input": "x"}, headers={"Origin": "http://testserver"})
    assert same.status_code == 200  # the page's own requests


def test_cross_origin_allowed_when_enabled(searcher, make_client):
    with make_client(searcher, cors_origins=("http://app.example",)) as client:
        ok = client.get("/search", params={"q": "vitamin"}, headers={"Origin": "http://app.example"})
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "http://app.example"
        preflight = client.options(
            "/v1/embeddings",
            headers={
                "Origin": "http://app.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type",
            },
        )
        assert preflight.status_code == 200
        other = client.get("/search", params={"q": "vitamin"}, headers={"Origin": "http://evil.example"})
        assert other.status_code == 403


def test_foreign_host_headers_are_refused_when_bound_to_loopback(searcher):
    from fastapi.testclient import TestClient

    from contriever.serving.app import ServeSettings, create_app
    from contriever.serving.server import LOOPBACK_HOSTS

    app = create_app(searcher, ServeSettings(allowed_hosts=LOOPBACK_HOSTS))
    with TestClient(app, base_url="http://rebound.example:8000") as client:
        response = client.get("/health")
        assert response.status_code == 403 and "rebound.example" in response.json()["error"]["message"]
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        assert client.get("/health").status_code == 200
    with TestClient(app, base_url="http://localhost:8000") as client:
        assert client.get("/health").status_code == 200


def test_forward_passes_of_a_few_texts_give_the_vectors_of_one_pass(searcher):
    """A dynamic batch is cut into length-sorted passes of 32 on a CPU (packed inference; 8 without
    it): same vectors, input order kept."""
    from contriever.serving.searcher import PACKED_CPU_FORWARD_BATCH

    lengths = (1, 30, 2, 17, 5, 9, 40, 3, 11, 25, 7, 1, 60, 4, 8, 13, 2) * 2 + (33, 6)
    texts = [("vitamin " * n).strip() for n in lengths]
    assert searcher.forward_batch == PACKED_CPU_FORWARD_BATCH < len(texts)
    passes, tokens = searcher.embed(texts)
    one_pass = searcher.encoder.encode(texts, batch_size=len(texts), show_progress=False)
    np.testing.assert_allclose(passes, one_pass, rtol=1e-4, atol=1e-5)
    assert tokens == [len(ids) for ids in searcher.encoder.tokenize(texts)]
