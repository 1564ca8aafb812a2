"""What every route needs: the service's settings and its running parts, reached through `Depends`.

`ServeSettings` are the limits and switches of `contriever serve` (its `--help` names each);
`Service` holds the searcher, the dynamic batcher and the metrics of one application, stored on
`app.state.service`, so the routers (`routes/`) are plain functions with no closures.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from contriever.serving.batcher import DynamicBatcher
from contriever.serving.metrics import Metrics
from contriever.serving.searcher import Searcher


@dataclass
class ServeSettings:
    """Limits and switches of the service (`contriever serve --help` names each)."""

    max_batch_size: int = 64  # texts per dynamic batch (cut into passes of similar length)
    max_wait_ms: float = 2.0  # how long a batch waits for more requests
    batching: bool = True  # False: each request encoded on its own
    max_queue: int = 1024  # texts waiting for the model; beyond it requests get 429 + Retry-After
    max_k: int = 1000
    max_chars: int = 10_000  # per query or input text
    max_queries: int = 256  # per POST /search
    max_inputs: int = 2048  # per embeddings request (OpenAI's limit)
    max_body_bytes: int = 16 * 1024 * 1024
    cors_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] | None = None  # None: any Host header
    api_key: str | None = None  # every route but /health then needs `Authorization: Bearer <key>`
    index_name: str | None = None  # what the info metric and /info call the index


@dataclass
class Service:
    searcher: Searcher
    settings: ServeSettings
    batcher: DynamicBatcher
    metrics: Metrics
    started: float = field(default_factory=time.time)


def get_service(request: Request) -> Service:
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(get_service)]
