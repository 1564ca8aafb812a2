"""The FastAPI application: the routers of `routes/` behind the guard (`guard.py`).

| endpoint | what |
|---|---|
| `GET /` | the comparison page (`page.html`): dense, BM25 and hybrid side by side |
| `GET /search?q=...&k=10&mode=dense` | one query: at most k hits with id, score, title, snippet; time taken |
| `POST /search` `{"queries": [...], "k": 10, "mode": "hybrid"}` | a batch of queries |
| `POST /v1/embeddings`, `POST /embeddings` `{"input": "text" or [...]}` | OpenAI's embeddings API |
| `GET /v1/models`, `GET /v1/models/{id}` | OpenAI's model list and card (the one model served) |
| `POST /embed` `{"inputs": ..., "normalize", "truncate"}` | text-embeddings-inference's embeddings |
| `POST /rerank` `{"query", "texts"}` | TEI's rerank, scored by the bi-encoder (not a cross-encoder) |
| `GET /info` | the model, its precision and the service's limits (TEI's route) |
| `GET /health` | liveness and what is loaded (open without the API key) |
| `GET /metrics` | Prometheus text format (`metrics.py`) |
| `GET /docs`, `GET /openapi.json` | OpenAPI 3.1 documentation, offline (`docs.py`) |

Every error is JSON in OpenAI's shape (`errors.py` lists the statuses). A failing request never stops
the server. The only path parameter is a model id, compared with the served model's name: nothing a
request says is opened, read or written on disk.

Cross-origin requests (a browser page from another origin) are refused with 403 unless their origin
is listed in `cors_origins` (`--cors-origin`); `allowed_hosts` refuses requests whose Host header names
another host, so a web page cannot reach a server on 127.0.0.1 through a DNS name of its own; with
`api_key` every route but `/health` needs `Authorization: Bearer <key>`; the model's queue is bounded
(`max_queue` texts), and a request that would overfill it gets 429 with `Retry-After`.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI

from contriever.serving.batcher import DynamicBatcher
from contriever.serving.docs import docs_router
from contriever.serving.errors import install_error_handlers
from contriever.serving.guard import Guard
from contriever.serving.metrics import Metrics
from contriever.serving.routes import embeddings, ops, page, search
from contriever.serving.routes.ops import model_dtype, package_version
from contriever.serving.searcher import Searcher
from contriever.serving.service import ServeSettings, Service

__all__ = ["ServeSettings", "create_app"]

log = logging.getLogger("contriever.serve")


def create_app(searcher: Searcher, settings: ServeSettings | None = None) -> FastAPI:
    settings = settings or ServeSettings()
    service = _service(searcher, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await service.batcher.start()
        log.info("ready: %s documents, modes %s", searcher.size, ", ".join(searcher.modes) or "none")
        try:
            yield
        finally:
            await service.batcher.stop()

    app = FastAPI(
        title="contriever",
        summary="Dense, BM25 and hybrid search; OpenAI-, infinity- and TEI-compatible embeddings",
        version=package_version(),
        lifespan=lifespan,
        docs_url=None,  # served by docs.py from installed files, not from a CDN
        redoc_url=None,
    )
    app.state.service = service
    install_error_handlers(app)
    routers = (search.router, embeddings.router, ops.router, page.router, docs_router(app))
    for router in routers:
        app.include_router(router)
    if settings.api_key:
        _document_bearer_auth(app)
    # paths a refused request is counted under in the metrics (others are "other", so a client probing
    # random paths cannot grow the number of series); a path with a parameter is counted as "other"
    known = tuple(route.path for router in routers for route in router.routes if "{" not in route.path)
    known += (app.openapi_url,)
    if settings.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
        )
    app.add_middleware(Guard, settings=settings, metrics=service.metrics, known_paths=known)
    return app


def _service(searcher: Searcher, settings: ServeSettings) -> Service:
    metrics = Metrics()
    metrics.documents.set(searcher.size)
    batcher = DynamicBatcher(
        searcher.encode_batch,
        max_batch_size=settings.max_batch_size,
        max_wait_ms=settings.max_wait_ms,
        enabled=settings.batching,
        on_batch=metrics.observe_batch,
        max_queued=settings.max_queue,
    )
    metrics.watch_queue(lambda: batcher.queued)
    service = Service(searcher, settings, batcher, metrics)
    metrics.describe(
        model=searcher.model_name if searcher.encoder is not None else "none",
        index=settings.index_name or "none",
        modes=",".join(searcher.modes) or "none",
        version=package_version(),
        precision=model_dtype(service) or "none",
    )
    return service


def _document_bearer_auth(app: FastAPI) -> None:
    """Declare the bearer key in the OpenAPI document, so /docs's Authorize button sends it."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = generate()
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer", "description": "the server's --api-key"}
            }
            schema["security"] = [{"bearer": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
