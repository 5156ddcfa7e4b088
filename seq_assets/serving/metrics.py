"""Prometheus metrics of the serving API: latency, requests and errors per feature and tenant,
freshness lag per source."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from seq_assets.serving.service import SequenceService


class Metrics:
    def __init__(self, service: SequenceService):
        self.registry = CollectorRegistry()
        buckets = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
        self.latency = Histogram("seq_request_latency_seconds", "Request latency", ["endpoint", "feature", "tenant"],
                                 buckets=buckets, registry=self.registry)
        self.requests = Counter("seq_requests_total", "Requests", ["endpoint", "feature", "tenant", "status"],
                                registry=self.registry)
        self.errors = Counter("seq_request_errors_total", "Requests answered with an error", ["endpoint", "feature", "tenant", "status"],
                              registry=self.registry)
        self.freshness = Gauge("seq_freshness_lag_seconds", "Seconds since the newest event seen, per source",
                               ["source"], registry=self.registry)
        self.tail_records = Gauge("seq_stream_tail_records", "Records read by the serving stream tail",
                                  registry=self.registry)
        self.service = service

    def render(self) -> bytes:
        for source, lag in self.service.freshness().items():
            self.freshness.labels(source).set(lag if lag is not None else float("nan"))
        if self.service.tail is not None:
            self.tail_records.set(self.service.tail.records)
        return generate_latest(self.registry)
