"""Prometheus metrics of one app, in its own registry (two apps in one process never collide)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServeMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, queue_depth=lambda: 0):
        self.registry = CollectorRegistry()
        self.requests = Counter("vipr_serve_requests", "HTTP requests by endpoint and status code",
                                ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("vipr_serve_request_seconds", "HTTP request latency in seconds", ["endpoint"],
                                 buckets=_LATENCY_BUCKETS_S, registry=self.registry)
        self.batch_size = Histogram("vipr_serve_batch_size", "rows per model call", buckets=_BATCH_BUCKETS,
                                    registry=self.registry)
        self.queue_depth = Gauge("vipr_serve_queue_depth", "requests waiting for the model",
                                 registry=self.registry)
        self.queue_depth.set_function(queue_depth)

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint=endpoint, status=str(status)).inc()
        self.latency.labels(endpoint=endpoint).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
