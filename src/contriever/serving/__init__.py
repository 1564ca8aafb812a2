"""`contriever serve`: search and embeddings over HTTP (FastAPI on uvicorn), with a comparison page.

- `batcher.py`: dynamic batching, concurrent requests encoded together on one model thread, a bounded queue;
- `searcher.py`: dense, BM25 and hybrid search through `contriever.retrieval.retrievers`'s retrievers,
  and the documents' titles and text;
- `snippets.py`: a snippet around the query's terms, with the matched spans to highlight;
- `app.py`: the FastAPI application, assembled from `routes/` (search, embeddings, page, ops);
- `service.py`: the settings and running parts every route reaches; `schemas.py`: request and
  response bodies; `checks.py`: value checks; `errors.py`: OpenAI-shaped errors;
- `guard.py`: the ASGI guard (API key, origin, host, body size and encoding, request metrics);
- `docs.py`: Swagger UI 5 at `/docs`, offline; `metrics.py`: Prometheus metrics;
- `page.html`: the page at `/` (dense, BM25 and hybrid side by side; no outside resources);
- `server.py`: loading an index folder and running uvicorn until Ctrl-C / SIGTERM;
- `loadtest.py`: a loopback-only load generator.

The web stack is the optional extra `serve` (`pip install 'contriever[serve]'`); `require_serve_extra`
says so plainly when it is missing.
"""

from __future__ import annotations

SERVE_PACKAGES = {
    "fastapi": "fastapi",
    "uvicorn": "uvicorn",
    "prometheus_client": "prometheus-client",
    "swagger_ui_bundle": "swagger-ui-bundle-v2",
}


def require_serve_extra() -> None:
    """Raise ImportError naming the missing packages and the install command, if any is missing."""
    import importlib.util

    missing = [
        package for module, package in SERVE_PACKAGES.items() if importlib.util.find_spec(module) is None
    ]
    if missing:
        raise ImportError(
            f"`contriever serve` needs {', '.join(missing)}, which are not installed. "
            "Install the serving extra: pip install 'contriever[serve]'"
        )
    from contriever.serving.docs import swagger_ui_folder

    swagger_ui_folder()  # ImportError if it is Swagger UI 4, which cannot read OpenAPI 3.1
