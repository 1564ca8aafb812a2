"""Embeddings, in the shapes the tools this replaces answer:

- `POST /v1/embeddings` and `POST /embeddings`: OpenAI's API (infinity serves both paths); texts
  longer than the model's max length are cut, as sentence-transformers and infinity do;
- `GET /v1/models`, `GET /v1/models/{model_id}`: OpenAI's model list and card;
- `POST /embed`: text-embeddings-inference's (`inputs`, `normalize`, `truncate`), a list of vectors;
  `truncate=false` (TEI's default) refuses a text over the max length with a 413 instead of cutting it;
  `normalize=false` is refused for a model that normalizes its own vectors;
- `POST /rerank`: TEI's (`query`, `texts`) ranked by the bi-encoder's similarity of query and text
  vectors. It is not a cross-encoder: the scores are the retrieval model's, not a relevance classifier's.

All of them go through the dynamic batcher, so they share forward passes with each other and with
dense search.
"""

from __future__ import annotations

import asyncio
import base64

import numpy as np
from fastapi import APIRouter

from contriever.serving.checks import check_dimensions, check_model, check_texts
from contriever.serving.errors import COMMON_ERRORS, ApiError, documented
from contriever.serving.schemas import (
    Embedding,
    EmbeddingList,
    EmbeddingRequest,
    EmbedRequest,
    ModelCard,
    ModelList,
    Rank,
    RerankRequest,
    Usage,
)
from contriever.serving.searcher import EncodeJob
from contriever.serving.service import Service, ServiceDep

router = APIRouter(tags=["embeddings"], responses=documented(*COMMON_ERRORS, 429, 503))


def _texts(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


def _token_counts(encoder, texts: list[str], at_most: int) -> list[int]:
    """Tokens of each text (special tokens included, counted up to `at_most`), after the model's
    text options. Not `encoder.tokenize`: it cuts at the position table, so it never sees a text
    longer than the model can read, which is what this must find."""
    from contriever.data.normalize import transform_text

    if encoder.lowercase or encoder.normalize_text:
        texts = [
            transform_text(t, lowercase=encoder.lowercase, normalize=encoder.normalize_text) for t in texts
        ]
    ids = encoder.tokenizer(texts, add_special_tokens=True, truncation=True, max_length=at_most)["input_ids"]
    return [len(row) for row in ids]


async def _check_lengths(service: Service, texts: list[str], name: str, single: bool) -> None:
    """413 naming the first text longer than the model's max length (for `truncate=false`)."""
    encoder = service.searcher.encoder
    limit = encoder.max_length
    counts = await asyncio.to_thread(_token_counts, encoder, texts, limit + 1)
    for position, count in enumerate(counts):
        if count > limit:
            where = name if single else f"{name}[{position}]"
            raise ApiError(
                413,
                f"{where} is longer than the model's {limit} tokens; send truncate=true to cut it, or a shorter text",
                where,
                "input_too_long",
            )


async def _vectors(service: Service, texts: list[str]) -> tuple[np.ndarray, int]:
    encoded = await service.batcher.submit([EncodeJob(text) for text in texts])
    return np.stack([item.vector for item in encoded]).astype(np.float32), sum(
        item.tokens for item in encoded
    )


def _normalized(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


@router.post("/v1/embeddings", summary="Embed texts (OpenAI's API)")
async def openai_embeddings(service: ServiceDep, body: EmbeddingRequest) -> EmbeddingList:
    settings, searcher = service.settings, service.searcher
    check_model(searcher)
    texts = _texts(body.input)
    check_texts(
        texts, "input", settings.max_inputs, settings.max_chars, "--max-inputs", isinstance(body.input, str)
    )
    check_dimensions(body.dimensions, searcher)
    vectors, tokens = await _vectors(service, texts)
    data = []
    for position, vector in enumerate(vectors.astype("<f4")):
        value = (
            base64.b64encode(vector.tobytes()).decode()
            if body.encoding_format == "base64"
            else vector.tolist()
        )
        data.append(Embedding(index=position, embedding=value))
    return EmbeddingList(
        data=data, model=searcher.model_name, usage=Usage(prompt_tokens=tokens, total_tokens=tokens)
    )


router.post("/embeddings", summary="Embed texts (OpenAI's API, infinity's path)")(openai_embeddings)


def _card(service: Service) -> ModelCard:
    return ModelCard(id=service.searcher.model_name, created=int(service.started), owned_by="contriever")


@router.get("/v1/models", summary="The model served (OpenAI's API)")
async def models(service: ServiceDep) -> ModelList:
    return ModelList(data=[_card(service)] if service.searcher.encoder is not None else [])


@router.get("/v1/models/{model_id:path}", summary="One model (OpenAI's API)", responses=documented(404))
async def model(service: ServiceDep, model_id: str) -> ModelCard:
    """The model's card if `model_id` is the model served (compared as a name, never opened)."""
    if service.searcher.encoder is None or model_id != service.searcher.model_name:
        raise ApiError(
            404,
            f"no model {model_id!r}; this server has {service.searcher.model_name!r} (see /v1/models)",
            "model",
            "model_not_found",
        )
    return _card(service)


@router.post("/embed", summary="Embed texts (text-embeddings-inference's API)", responses=documented(413))
async def tei_embed(service: ServiceDep, body: EmbedRequest) -> list[list[float]]:
    settings, searcher = service.settings, service.searcher
    check_model(searcher)
    texts, single = _texts(body.inputs), isinstance(body.inputs, str)
    check_texts(texts, "inputs", settings.max_inputs, settings.max_chars, "--max-inputs", single)
    check_dimensions(body.dimensions, searcher)
    if not body.normalize and searcher.encoder.normalize:
        raise ApiError(
            422,
            "normalize=false cannot be honoured: this model normalizes its vectors itself; omit normalize",
            "normalize",
        )
    if not body.truncate:
        await _check_lengths(service, texts, "inputs", single)
    vectors, _ = await _vectors(service, texts)
    return (_normalized(vectors) if body.normalize else vectors).tolist()


@router.post(
    "/rerank",
    summary="Rank texts by similarity to a query (TEI's API; bi-encoder, not a cross-encoder)",
    responses=documented(413),
)
async def tei_rerank(service: ServiceDep, body: RerankRequest) -> list[Rank]:
    """Each text's score is the similarity of its vector to the query's, from the retrieval model:
    cosine, or with `raw_scores` the inner product of the vectors as the model makes them. A
    cross-encoder reads query and text together and usually ranks better; this is the bi-encoder's
    ranking, which is what dense search returns."""
    settings, searcher = service.settings, service.searcher
    check_model(searcher)
    check_texts([body.query], "query", 1, settings.max_chars, single=True)
    check_texts(body.texts, "texts", settings.max_inputs, settings.max_chars, "--max-inputs")
    if not body.truncate:
        await _check_lengths(service, [body.query], "query", True)
        await _check_lengths(service, body.texts, "texts", False)
    vectors, _ = await _vectors(service, [body.query, *body.texts])
    if not body.raw_scores:
        vectors = _normalized(vectors)
    scores = vectors[1:] @ vectors[0]
    order = np.argsort(-scores, kind="stable")
    return [
        Rank(index=int(i), score=float(scores[i]), text=body.texts[i] if body.return_text else None)
        for i in order
    ]
