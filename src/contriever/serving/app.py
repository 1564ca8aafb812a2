"""The FastAPI application: search, OpenAI-compatible embeddings, health, metrics and the page.

| endpoint | what |
|---|---|
| `GET /` | the comparison page (`page.html`): dense, BM25 and hybrid side by side |
| `GET /search?q=...&k=10&mode=dense` | one query: hits with id, score, title, snippet; time taken |
| `POST /search` `{"queries": [...], "k": 10, "mode": "hybrid"}` | a batch of queries |
| `POST /v1/embeddings` `{"input": "text" or [...], "model": ...}` | OpenAI's embeddings API |
| `GET /v1/models` | OpenAI's model list (the one model served) |
| `GET /health` | liveness and what is loaded |
| `GET /metrics` | Prometheus text format (`metrics.py`) |
| `GET /docs`, `GET /openapi.json` | OpenAPI documentation |

Every error is JSON in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, with a 4xx
status for anything the client can fix (400 malformed JSON or non-UTF-8 body, 403 cross-origin,
404, 405, 413 body too large, 422 a value out of range) and 503 while shutting down. A failing
request never stops the server. No endpoint takes a path: nothing a request says is opened, read or
written on disk.

Cross-origin requests (a browser page from another origin) are refused with 403 unless their origin
is listed in `cors_origins` (`--cors-origin`); `allowed_hosts` refuses requests whose Host header names
another host, so a web page cannot reach a server on 127.0.0.1 through a DNS name of its own.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Literal

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from contriever.serving.batcher import DynamicBatcher, ShuttingDown
from contriever.serving.metrics import Metrics
from contriever.serving.searcher import MODES, EncodeJob, Searcher

log = logging.getLogger("contriever.serve")

PAGE_HEADERS = {
    # the page may load nothing from anywhere else: no CDN, no font, no analytics
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
KNOWN_PATHS = (
    "/",
    "/search",
    "/v1/embeddings",
    "/v1/models",
    "/health",
    "/metrics",
    "/docs",
    "/openapi.json",
)


DOCS_ASSETS = {  # fixed routes, fixed files: no request names a path
    "/docs-assets/swagger-ui-bundle.js": ("swagger-ui-bundle.js", "text/javascript"),
    "/docs-assets/swagger-ui.css": ("swagger-ui.css", "text/css"),
    "/docs-assets/favicon-32x32.png": ("favicon-32x32.png", "image/png"),
}


def add_offline_docs(app: FastAPI) -> None:
    """Swagger UI at `/docs` from the files the `swagger-ui-bundle` package installs (FastAPI's own
    `/docs` loads them from a CDN): the API documentation works with no internet, like the page."""
    from pathlib import Path

    from fastapi.openapi.docs import get_swagger_ui_html
    from swagger_ui_bundle import swagger_ui_path

    def asset_route(file: Path, media_type: str):
        content = file.read_bytes()  # once, at start: a request never touches the disk

        async def asset() -> Response:
            return Response(content, media_type=media_type, headers={"Cache-Control": "max-age=86400"})

        return asset

    for route, (name, media_type) in DOCS_ASSETS.items():
        app.get(route, include_in_schema=False)(asset_route(Path(swagger_ui_path) / name, media_type))
    js, css, icon = DOCS_ASSETS

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url,
            title="contriever API",
            swagger_js_url=js,
            swagger_css_url=css,
            swagger_favicon_url=icon,
        )


@dataclass
class ServeSettings:
    """Limits and switches of the service (`contriever serve --help` names each)."""

    max_batch_size: int = 64  # texts per dynamic batch (cut into passes of similar length)
    max_wait_ms: float = 2.0  # how long a batch waits for more requests
    batching: bool = True  # False: each request encoded on its own
    max_k: int = 1000
    max_chars: int = 10_000  # per query or input text
    max_queries: int = 256  # per POST /search
    max_inputs: int = 2048  # per POST /v1/embeddings (OpenAI's limit)
    max_body_bytes: int = 16 * 1024 * 1024
    cors_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] | None = None  # None: any Host header


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param = status, message, param


def error_response(status: int, message: str, param: str | None = None, headers: dict | None = None):
    kind = "invalid_request_error" if status < 500 else "server_error"
    body = {"error": {"message": message, "type": kind, "param": param, "code": status}}
    return JSONResponse(body, status_code=status, headers=headers)


# ----- request and response bodies ------------------------------------------------------------------
class SearchBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    queries: list[str] = Field(description="the queries, each a non-empty string")
    k: int = Field(10, description="documents per query (1 to the server's --max-k, 1000 by default)")
    mode: str = Field("dense", description="dense, bm25 or hybrid")


class Hit(BaseModel):
    id: str
    score: float
    title: str
    snippet: str
    highlights: list[list[int]] = Field(description="[start, end) spans of the snippet matching the query")
    title_highlights: list[list[int]]


class SearchResult(BaseModel):
    query: str
    mode: str
    k: int
    hits: list[Hit]
    took_ms: float


class SearchBatchResult(BaseModel):
    mode: str
    k: int
    results: list[SearchResult]
    took_ms: float


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # OpenAI clients send fields such as `user`
    input: str | list[str] | list[int] | list[list[int]]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None


# ----- the guard: size, encoding, origin and host checks, metrics --------------------------------------
class Guard:
    """Pure ASGI middleware in front of the app. Counts every answer in the metrics, refuses
    cross-origin requests and foreign Host headers, reads request bodies up to `max_body_bytes`,
    refuses ones that are not UTF-8, and hands POST bodies to FastAPI as JSON whatever their
    Content-Type (so `curl -d '{...}'` works)."""

    def __init__(self, app, *, settings: ServeSettings, metrics: Metrics):
        self.app = app
        self.settings = settings
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500
        method = scope["method"]

        async def send_counted(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._handle(scope, receive, send_counted)
        finally:
            route = scope.get("route")
            path = scope.get("path", "")
            endpoint = getattr(route, "path", None) or (path if path in KNOWN_PATHS else "other")
            self.metrics.observe_request(endpoint, method, status, time.perf_counter() - start)

    async def _handle(self, scope, receive, send):
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}
        problem = self._refusal(scope, headers)
        if problem is not None:
            return await error_response(*problem)(scope, receive, send)
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.settings.max_body_bytes:
            return await self._too_large(scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.settings.max_body_bytes:
                return await self._too_large(scope, receive, send)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as error:
            message = (
                f"the request body is not valid UTF-8 (byte 0x{body[error.start]:02x} at offset {error.start}); "
                "send JSON encoded as UTF-8"
            )
            return await error_response(400, message)(scope, receive, send)
        scope["headers"] = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-type"] + [
            (b"content-type", b"application/json")
        ]
        delivered = False

        async def replay():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    async def _too_large(self, scope, receive, send):
        limit = self.settings.max_body_bytes
        message = f"the request body is larger than {limit:,} bytes; send fewer or shorter texts per request"
        return await error_response(413, message, headers={"Connection": "close"})(scope, receive, send)

    def _refusal(self, scope, headers: dict[str, str]) -> tuple[int, str] | None:
        host = headers.get("host", "")
        allowed = self.settings.allowed_hosts
        if allowed is not None and _hostname(host) not in allowed:
            return 403, f"requests for host {host!r} are refused; this server answers to {', '.join(allowed)}"
        origin = headers.get("origin")
        if origin is None or origin == f"{scope.get('scheme', 'http')}://{host}":
            return None  # not cross-origin
        if origin in self.settings.cors_origins or "*" in self.settings.cors_origins:
            return None
        return 403, (
            f"cross-origin request from {origin} refused; start the server with --cors-origin {origin} "
            "to allow pages from that origin"
        )


def _hostname(host: str) -> str:
    if host.startswith("["):  # [::1]:8000
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


# ----- validation helpers --------------------------------------------------------------------------
def _check_texts(texts: list[str], name: str, limit: int, max_chars: int, limit_flag: str) -> None:
    if not texts:
        raise ApiError(422, f"{name} is empty: send at least one text", name)
    if len(texts) > limit:
        raise ApiError(
            422, f"{name} holds {len(texts):,} texts; the limit is {limit:,} per request ({limit_flag})", name
        )
    for position, text in enumerate(texts):
        where = name if len(texts) == 1 else f"{name}[{position}]"
        if not text.strip():
            raise ApiError(422, f"{where} is empty: send the text to search for or embed", where)
        if len(text) > max_chars:
            raise ApiError(
                422,
                f"{where} is {len(text):,} characters long; the limit is {max_chars:,} (--max-chars)",
                where,
            )


def _check_k(k: int, settings: ServeSettings) -> None:
    if not 1 <= k <= settings.max_k:
        raise ApiError(422, f"k must be between 1 and {settings.max_k:,}, got {k}", "k")


def _check_mode(mode: str, searcher: Searcher) -> None:
    if mode not in MODES:
        raise ApiError(422, f"unknown mode {mode!r}; choose one of {', '.join(MODES)}", "mode")
    if mode not in searcher.modes:
        need = "an index (--index)" if mode == "dense" else "a corpus (--data or --corpus) for BM25"
        raise ApiError(422, f"mode {mode!r} is not available: the server was started without {need}", "mode")


def _validation_message(error: RequestValidationError) -> tuple[int, str, str | None]:
    first = error.errors()[0]
    if first.get("type") == "json_invalid":
        reason = (first.get("ctx") or {}).get("error", "not valid JSON")
        return 400, f"the request body is not valid JSON ({reason})", None
    where = [str(part) for part in first.get("loc", ()) if part not in ("body", "query")]
    param = ".".join(where) or None
    if first.get("type") == "missing" and not where:
        return 400, "the request needs a JSON body", None
    value = first.get("input")
    shown = f" (got {value!r})" if isinstance(value, int | float | str) and len(repr(value)) <= 40 else ""
    return 422, f"{param or 'body'}: {first.get('msg', 'invalid value')}{shown}", param


# ----- the application -------------------------------------------------------------------------------
def create_app(searcher: Searcher, settings: ServeSettings | None = None) -> FastAPI:
    settings = settings or ServeSettings()
    metrics = Metrics()
    metrics.documents.set(searcher.size)
    batcher = DynamicBatcher(
        searcher.encode_batch,
        max_batch_size=settings.max_batch_size,
        max_wait_ms=settings.max_wait_ms,
        enabled=settings.batching,
        on_batch=metrics.observe_batch,
    )
    metrics.watch_queue(lambda: batcher.queued)
    page = resources.files("contriever.serving").joinpath("page.html").read_text(encoding="utf-8")
    started = time.time()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        log.info("ready: %s documents, modes %s", searcher.size, ", ".join(searcher.modes))
        try:
            yield
        finally:
            await batcher.stop()

    app = FastAPI(
        title="contriever",
        summary="Dense, BM25 and hybrid search, and OpenAI-compatible embeddings",
        version="1",
        lifespan=lifespan,
        docs_url=None,  # served below from installed files, not from a CDN
        redoc_url=None,
    )
    add_offline_docs(app)
    app.state.searcher, app.state.settings, app.state.metrics, app.state.batcher = (
        searcher,
        settings,
        metrics,
        batcher,
    )

    # ----- errors -----
    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError):
        return error_response(error.status, error.message, error.param)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError):
        return error_response(*_validation_message(error))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        message = error.detail if isinstance(error.detail, str) else str(error.detail)
        if error.status_code == 404:
            message = f"no endpoint {request.url.path}; see /docs for the API"
        elif error.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}; see /docs"
        return error_response(error.status_code, message, headers=getattr(error, "headers", None))

    @app.exception_handler(ShuttingDown)
    async def shutting_down(request: Request, error: ShuttingDown):
        return error_response(503, str(error))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception):
        log.exception("error answering %s %s", request.method, request.url.path)
        return error_response(500, f"internal error ({type(error).__name__}); the server log has the details")

    # ----- search -----
    async def search_many(queries: list[str], k: int, mode: str) -> list[SearchResult]:
        start = time.perf_counter()
        depth = k if mode == "dense" else max(k, searcher.hybrid_depth)
        dense = lexical = None
        work = []
        if mode in ("dense", "hybrid"):
            work.append(batcher.submit([EncodeJob(query, depth) for query in queries]))
        if mode in ("bm25", "hybrid"):
            work.append(asyncio.to_thread(searcher.bm25_hits, queries, depth))
        done = await asyncio.gather(*work)
        if mode in ("dense", "hybrid"):
            dense = [encoded.hits for encoded in done[0]]
        if mode in ("bm25", "hybrid"):
            lexical = done[-1]
        if mode == "dense":
            hits = dense
        elif mode == "bm25":
            hits = lexical
        else:
            hits = [searcher.fuse(d, b, k) for d, b in zip(dense, lexical)]
        if len(queries) * k > 200:
            described = await asyncio.to_thread(
                lambda: [searcher.describe(q, h) for q, h in zip(queries, hits)]
            )
        else:
            described = [searcher.describe(q, h) for q, h in zip(queries, hits)]
        took = round((time.perf_counter() - start) * 1000, 3)
        return [
            SearchResult(query=q, mode=mode, k=k, hits=[Hit(**hit) for hit in h], took_ms=took)
            for q, h in zip(queries, described)
        ]

    @app.get("/search", response_model=SearchResult, summary="Search with one query")
    async def search_get(
        q: Annotated[str, Query(description="the query")],
        k: Annotated[int, Query(description="documents to return (1 to --max-k)")] = 10,
        mode: Annotated[str, Query(description="dense, bm25 or hybrid")] = "dense",
    ) -> SearchResult:
        _check_texts([q], "q", 1, settings.max_chars, "")
        _check_k(k, settings)
        _check_mode(mode, searcher)
        return (await search_many([q], k, mode))[0]

    @app.post("/search", response_model=SearchBatchResult, summary="Search with a batch of queries")
    async def search_post(body: SearchBatch) -> SearchBatchResult:
        start = time.perf_counter()
        _check_texts(body.queries, "queries", settings.max_queries, settings.max_chars, "--max-queries")
        _check_k(body.k, settings)
        _check_mode(body.mode, searcher)
        results = await search_many(body.queries, body.k, body.mode)
        took = round((time.perf_counter() - start) * 1000, 3)
        return SearchBatchResult(mode=body.mode, k=body.k, results=results, took_ms=took)

    # ----- embeddings (OpenAI's API) -----
    @app.post("/v1/embeddings", summary="Embed texts (OpenAI-compatible)")
    async def embeddings(body: EmbeddingRequest) -> dict:
        if searcher.encoder is None:
            raise ApiError(422, "no model is loaded: start the server with --index or --model", "model")
        texts = [body.input] if isinstance(body.input, str) else body.input
        if any(not isinstance(text, str) for text in texts):
            raise ApiError(
                422, "input must be a string or a list of strings; token arrays are not accepted", "input"
            )
        _check_texts(texts, "input", settings.max_inputs, settings.max_chars, "--max-inputs")
        dim = searcher.encoder.dim
        if body.dimensions is not None and body.dimensions != dim:
            raise ApiError(
                422,
                f"this model makes {dim}-dim embeddings; dimensions={body.dimensions} is not supported",
                "dimensions",
            )
        encoded = await batcher.submit([EncodeJob(text) for text in texts])
        data = []
        for position, item in enumerate(encoded):
            vector = item.vector.astype("<f4")
            value = (
                base64.b64encode(vector.tobytes()).decode()
                if body.encoding_format == "base64"
                else vector.tolist()
            )
            data.append({"object": "embedding", "index": position, "embedding": value})
        tokens = sum(item.tokens for item in encoded)
        return {
            "object": "list",
            "data": data,
            "model": searcher.model_name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    @app.get("/v1/models", summary="The model served (OpenAI-compatible)")
    async def models() -> dict:
        entry = {
            "id": searcher.model_name,
            "object": "model",
            "created": int(started),
            "owned_by": "contriever",
        }
        return {"object": "list", "data": [entry] if searcher.encoder is not None else []}

    # ----- operations -----
    @app.get("/health", summary="Liveness and what is loaded")
    async def health() -> dict:
        return {
            "status": "ok" if batcher.running else "stopping",
            "model": searcher.model_name if searcher.encoder is not None else None,
            "documents": searcher.size,
            "modes": list(searcher.modes),
            "dim": searcher.encoder.dim if searcher.encoder is not None else None,
            "batching": {
                "enabled": settings.batching,
                "max_batch_size": settings.max_batch_size,
                "max_wait_ms": settings.max_wait_ms,
                "queued": batcher.queued,
            },
            "uptime_s": round(time.time() - started, 1),
        }

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index_page() -> HTMLResponse:
        return HTMLResponse(page, headers=PAGE_HEADERS)

    app = _with_cors(app, settings)
    return app


def _with_cors(app: FastAPI, settings: ServeSettings) -> FastAPI:
    if settings.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
        )
    app.add_middleware(Guard, settings=settings, metrics=app.state.metrics)
    return app
