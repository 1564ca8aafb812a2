"""Clients nobody here wrote, against a live server: the `openai` SDK, LangChain's
`OpenAIEmbeddings` and LlamaIndex's `OpenAILikeEmbedding`, configured as the README says. Each is
skipped, saying so, where its package is not installed."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the `serve` extra is not installed (pip install 'contriever[serve]')")
pytest.importorskip("uvicorn", reason="the `serve` extra is not installed (pip install 'contriever[serve]')")

KEY = "client-test-key"
TEXTS = ["scurvy and vitamin C", "mosquitoes carry malaria"]


@pytest.fixture
def live(searcher, serve_app):
    """(base URL of the OpenAI-compatible API, model name) of a live server that needs KEY."""
    from contriever.serving.app import ServeSettings, create_app

    with serve_app(create_app(searcher, ServeSettings(api_key=KEY))) as url:
        yield url + "v1", searcher.model_name


def _expected(searcher, texts):
    """The server's own vectors for `texts` (its query batches, its precision): what a client must
    receive intact."""
    return searcher.embed(texts)[0]


def test_openai_sdk(live, searcher):
    openai = pytest.importorskip("openai", reason="the openai package is not installed")
    base_url, model = live
    client = openai.OpenAI(base_url=base_url, api_key=KEY, max_retries=0)
    got = client.embeddings.create(model=model, input=TEXTS)
    np.testing.assert_allclose(
        [d.embedding for d in got.data], _expected(searcher, TEXTS), rtol=1e-4, atol=1e-5
    )
    assert [m.id for m in client.models.list()] == [model]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=base_url, api_key="wrong", max_retries=0).embeddings.create(
            model=model, input="x"
        )
    with pytest.raises(openai.UnprocessableEntityError, match="check_embedding_ctx_length=False"):
        client.embeddings.create(model=model, input=[[101, 2000, 102]])


def test_langchain_openai_embeddings(live, searcher):
    langchain_openai = pytest.importorskip("langchain_openai", reason="langchain-openai is not installed")
    base_url, model = live
    # the README's snippet: check_embedding_ctx_length=False sends the texts, not tiktoken's token ids
    embeddings = langchain_openai.OpenAIEmbeddings(
        model=model, base_url=base_url, api_key=KEY, check_embedding_ctx_length=False
    )
    documents = embeddings.embed_documents(TEXTS)
    query = embeddings.embed_query("vitamin deficiency")
    np.testing.assert_allclose(documents, _expected(searcher, TEXTS), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(query, _expected(searcher, ["vitamin deficiency"])[0], rtol=1e-4, atol=1e-5)


def test_llamaindex_openai_like_embedding(live, searcher):
    openai_like = pytest.importorskip(
        "llama_index.embeddings.openai_like", reason="llama-index-embeddings-openai-like is not installed"
    )
    base_url, model = live
    embed_model = openai_like.OpenAILikeEmbedding(model_name=model, api_base=base_url, api_key=KEY)
    documents = embed_model.get_text_embedding_batch(TEXTS)
    query = embed_model.get_query_embedding("vitamin deficiency")
    np.testing.assert_allclose(documents, _expected(searcher, TEXTS), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(query, _expected(searcher, ["vitamin deficiency"])[0], rtol=1e-4, atol=1e-5)
