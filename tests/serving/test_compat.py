"""The routes of the tools `serve` replaces, through FastAPI's TestClient: OpenAI's and infinity's
embeddings paths, text-embeddings-inference's /embed, /rerank and /info, the model card, the
Prometheus metrics as `prometheus_client`'s own parser reads them."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the `serve` extra is not installed (pip install 'contriever[serve]')")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")

TEXTS = ["a query about scurvy", "another, longer text about vitamin C deficiency in sailors"]


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_infinity_path_equals_openai_path(client):
    openai = client.post("/v1/embeddings", json={"input": TEXTS}).json()
    infinity = client.post("/embeddings", json={"input": TEXTS}).json()
    assert infinity == openai


def test_tei_embed_normalizes_by_default_and_honours_normalize_false(client, searcher):
    raw = searcher.encoder.encode(TEXTS, show_progress=False)
    assert not searcher.encoder.normalize  # the tiny model makes dot-product vectors
    normalized = np.array(client.post("/embed", json={"inputs": TEXTS}).json(), dtype=np.float32)
    np.testing.assert_allclose(normalized, _unit(raw), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(normalized, axis=1), 1.0, rtol=1e-5)
    plain = client.post("/embed", json={"inputs": TEXTS[0], "normalize": False}).json()
    np.testing.assert_allclose(plain, raw[:1], rtol=1e-4, atol=1e-5)


@pytest.mark.bad_input
def test_tei_normalize_false_is_refused_for_a_normalizing_model(client, searcher, monkeypatch):
    monkeypatch.setattr(searcher.encoder, "normalize", True)
    response = client.post("/embed", json={"inputs": "x", "normalize": False})
    assert response.status_code == 422 and response.json()["error"]["param"] == "normalize"
    assert client.post("/embed", json={"inputs": "x"}).status_code == 200


@pytest.mark.bad_input
def test_tei_truncate_false_refuses_a_long_text_and_true_cuts_it(client, searcher):
    long_text = "vitamin " * (searcher.encoder.max_length + 50)
    refused = client.post("/embed", json={"inputs": ["short", long_text]})
    assert refused.status_code == 413
    error = refused.json()["error"]
    assert error["param"] == "inputs[1]" and f"{searcher.encoder.max_length} tokens" in error["message"]
    cut = client.post("/embed", json={"inputs": [long_text], "truncate": True})
    assert cut.status_code == 200
    expected = _unit(searcher.encoder.encode([long_text], show_progress=False))
    np.testing.assert_allclose(cut.json(), expected, rtol=1e-4, atol=1e-5)
    exact = "vitamin " * (searcher.encoder.max_length - 2)  # with [CLS] and [SEP]: exactly the limit
    assert client.post("/embed", json={"inputs": exact}).status_code == 200


def test_tei_rerank_orders_by_the_bi_encoder_similarity(client, searcher):
    query, texts = "vitamin deficiency", ["mosquitoes spread malaria", "scurvy and vitamin C", "sleep"]
    ranks = client.post("/rerank", json={"query": query, "texts": texts, "return_text": True}).json()
    vectors = _unit(searcher.encoder.encode([query, *texts], show_progress=False))
    cosine = vectors[1:] @ vectors[0]
    assert [rank["index"] for rank in ranks] == list(np.argsort(-cosine, kind="stable"))
    np.testing.assert_allclose([rank["score"] for rank in ranks], np.sort(cosine)[::-1], rtol=1e-4, atol=1e-5)
    assert [rank["text"] for rank in ranks] == [texts[rank["index"]] for rank in ranks]
    raw = client.post("/rerank", json={"query": query, "texts": texts, "raw_scores": True}).json()
    plain = searcher.encoder.encode([query, *texts], show_progress=False)
    expected = {i: float(plain[i + 1] @ plain[0]) for i in range(len(texts))}
    assert {rank["index"]: pytest.approx(rank["score"], rel=1e-4) for rank in raw} == expected
    assert all(rank["text"] is None for rank in raw)


def test_info_says_model_precision_and_limits(client, searcher):
    info = client.get("/info").json()
    assert info["model_id"] == searcher.model_name and info["dim"] == 32
    assert info["model_type"] == {"embedding": {"pooling": "mean"}}
    assert info["model_dtype"] in ("float32", "bfloat16") and info["normalize"] is False
    assert info["max_input_length"] == searcher.encoder.max_length and info["max_client_batch_size"] == 2048
    assert (
        info["max_queue"] == 1024 and info["auth"] is False and info["modes"] == ["dense", "bm25", "hybrid"]
    )


def test_precision_fp32_is_reported_and_used(searcher, make_client, monkeypatch):
    import dataclasses

    monkeypatch.setattr(searcher, "settings", dataclasses.replace(searcher.settings, precision="fp32"))
    with make_client(searcher) as client:
        assert client.get("/info").json()["model_dtype"] == "float32"
        got = client.post("/v1/embeddings", json={"input": TEXTS}).json()["data"]
    expected = searcher.encoder.encode(TEXTS, show_progress=False, precision="fp32")
    np.testing.assert_allclose([item["embedding"] for item in got], expected, rtol=1e-5, atol=1e-6)


def test_model_card_by_id(client, searcher):
    card = client.get(f"/v1/models/{searcher.model_name}").json()
    assert card["id"] == searcher.model_name and card["object"] == "model"
    missing = client.get("/v1/models/text-embedding-3-small")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"


def test_metrics_parse_and_carry_process_and_info_metrics(client, searcher):
    from prometheus_client.parser import text_string_to_metric_families

    client.post("/v1/embeddings", json={"input": "x"})
    families = {family.name: family for family in text_string_to_metric_families(client.get("/metrics").text)}
    for name in ("process_resident_memory_bytes", "process_cpu_seconds", "process_open_fds", "python_info"):
        assert name in families, name
    info = families["contriever_service_info"].samples[0]
    assert info.labels["model"] == searcher.model_name and info.labels["modes"] == "dense,bm25,hybrid"
    assert families["process_resident_memory_bytes"].samples[0].value > 10_000_000
