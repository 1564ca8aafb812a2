"""Operations: `GET /health` (liveness and what is loaded; open without the API key),
`GET /info` (the model and the limits, text-embeddings-inference's route) and `GET /metrics`
(Prometheus text format, `metrics.py`)."""

from __future__ import annotations

import time

from fastapi import APIRouter
from fastapi.responses import Response

from contriever.serving.errors import documented
from contriever.serving.schemas import Batching, Health, Info
from contriever.serving.service import Service, ServiceDep

router = APIRouter(tags=["operations"])


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("contriever")
    except PackageNotFoundError:
        return "unknown"


def model_dtype(service: Service) -> str | None:
    """The precision of the forward pass: float32, or bfloat16 where --precision resolves to bf16."""
    encoder = service.searcher.encoder
    if encoder is None:
        return None
    from contriever.model.encoder import resolve_precision

    return {"bf16": "bfloat16", "fp16": "float16"}.get(
        resolve_precision(service.searcher.precision, encoder.device), "float32"
    )


@router.get(
    "/health",
    summary="Liveness and what is loaded (no API key needed)",
    responses=documented(403),
    openapi_extra={"security": []},
)
async def health(service: ServiceDep) -> Health:
    searcher, settings, batcher = service.searcher, service.settings, service.batcher
    encoder = searcher.encoder
    return Health(
        status="ok" if batcher.running else "stopping",
        model=searcher.model_name if encoder is not None else None,
        documents=searcher.size,
        modes=list(searcher.modes),
        dim=encoder.dim if encoder is not None else None,
        batching=Batching(
            enabled=settings.batching,
            max_batch_size=settings.max_batch_size,
            max_wait_ms=settings.max_wait_ms,
            queued=batcher.queued,
            max_queue=settings.max_queue,
        ),
        uptime_s=round(time.time() - service.started, 1),
    )


@router.get(
    "/info", summary="The model and the service's limits (TEI's /info)", responses=documented(401, 403)
)
async def info(service: ServiceDep) -> Info:
    searcher, settings = service.searcher, service.settings
    encoder = searcher.encoder
    return Info(
        model_id=searcher.model_name if encoder is not None else None,
        model_dtype=model_dtype(service),
        model_type={"embedding": {"pooling": encoder.pooling}} if encoder is not None else {},
        dim=encoder.dim if encoder is not None else None,
        normalize=bool(encoder.normalize) if encoder is not None else None,
        max_input_length=encoder.max_length if encoder is not None else None,
        max_client_batch_size=settings.max_inputs,
        max_batch_size=settings.max_batch_size,
        max_queue=settings.max_queue,
        max_chars=settings.max_chars,
        max_k=settings.max_k,
        index=settings.index_name,
        documents=searcher.size,
        modes=list(searcher.modes),
        version=package_version(),
        auth=settings.api_key is not None,
    )


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {}}, "description": "Prometheus text format"},
        **documented(401, 403),
    },
)
async def prometheus(service: ServiceDep) -> Response:
    return Response(service.metrics.render(), media_type=service.metrics.content_type)
