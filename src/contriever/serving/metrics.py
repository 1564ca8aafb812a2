"""Prometheus metrics of the service (text format at `/metrics`), in a registry of its own.

- `contriever_http_requests_total{endpoint, method, status}`: requests answered;
- `contriever_http_errors_total{endpoint, status}`: those answered with a 4xx or 5xx;
- `contriever_http_request_duration_seconds{endpoint}`: latency histogram;
- `contriever_encode_batch_size`: texts per call of the model (the dynamic batches);
- `contriever_encode_batch_duration_seconds`: time of each such call (forward pass and index search);
- `contriever_encode_queue_texts`: texts waiting for the model now;
- `contriever_documents`: documents the service searches;
- `contriever_service_info{model, index, modes, version, precision}`: what is served (always 1);
- `process_*` (resident memory, CPU seconds, open files, ...), `python_info`, `python_gc_*`: what
  `prometheus_client` gives a process by default.

`endpoint` is the route's path template (`/search`), or `other` for paths the app does not serve,
so a client probing random paths cannot grow the number of series.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):  # the default registry's
            self.registry.register(collector)
        self.info = Info("contriever_service", "What the service serves", registry=self.registry)
        self.requests = Counter(
            "contriever_http_requests",
            "HTTP requests answered",
            ["endpoint", "method", "status"],
            registry=self.registry,
        )
        self.errors = Counter(
            "contriever_http_errors",
            "HTTP requests answered with a 4xx or 5xx status",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "contriever_http_request_duration_seconds",
            "Time from request to response",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "contriever_encode_batch_size",
            "Texts encoded together in one call of the model",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "contriever_encode_batch_duration_seconds",
            "Time of one call of the model (forward pass and dense search)",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue = Gauge(
            "contriever_encode_queue_texts", "Texts waiting for the model", registry=self.registry
        )
        self.documents = Gauge(
            "contriever_documents", "Documents the service searches", registry=self.registry
        )

    def describe(self, **labels: str) -> None:
        self.info.info({name: str(value) for name, value in labels.items()})

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, method, str(status)).inc()
        if status >= 400:
            self.errors.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)

    def watch_queue(self, queued: Callable[[], int]) -> None:
        self.queue.set_function(queued)

    def render(self) -> bytes:
        return generate_latest(self.registry)
