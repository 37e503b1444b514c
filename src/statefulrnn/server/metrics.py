"""Prometheus metrics. Under `statefulrnn serve --workers N` (PROMETHEUS_MULTIPROC_DIR set before the
workers start) every worker writes its samples to that directory and a scrape of any worker reports the
sum over all of them; otherwise the samples are this process's own."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import values as _values
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

__all__ = ["CONTENT_TYPE_LATEST", "Metrics", "multiprocess"]


def multiprocess() -> bool:
    """Whether prometheus-client was imported with PROMETHEUS_MULTIPROC_DIR set (samples go to files)."""
    return _values.ValueClass is not _values.MutexValue


class Metrics:
    def __init__(self) -> None:
        self.multiprocess = multiprocess()
        # In multiprocess mode the samples are read back from the files by MultiProcessCollector at each
        # scrape; registering them too would report this worker's share twice.
        r = None if self.multiprocess else CollectorRegistry()
        self.registry = r
        self.requests = Counter("statefulrnn_requests", "HTTP requests", ["method", "route", "status"], registry=r)
        self.latency = Histogram(
            "statefulrnn_request_seconds",
            "HTTP request latency",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
            registry=r,
        )
        self.batch = Histogram(
            "statefulrnn_batch_size",
            "step requests per fused model call",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=r,
        )
        self.steps = Counter("statefulrnn_steps", "time steps applied to streams", registry=r)
        self.replays = Counter("statefulrnn_replays", "retried step requests answered from stored outputs", registry=r)
        self.conflicts = Counter("statefulrnn_seq_conflicts", "step requests refused for their seq", registry=r)
        self.generations = Gauge(
            "statefulrnn_generations_active", "generate requests running", registry=r, multiprocess_mode="livesum"
        )
        self.refused = Counter(
            "statefulrnn_generations_refused", "generate requests refused (429): all slots were busy", registry=r
        )

    def record(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def render(self, store: tuple[int, Mapping[str, int]] | None) -> bytes:
        """Prometheus text: this process's (or all workers') samples, then the store's `(count, stats)`
        when it answered in time (`statefulrnn_store_up` says whether it did)."""
        registry = self.registry
        if registry is None:
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
        extra = CollectorRegistry()
        extra.register(_StoreSnapshot(store))
        return generate_latest(registry) + generate_latest(extra)


class _StoreSnapshot:
    def __init__(self, store: tuple[int, Mapping[str, int]] | None) -> None:
        self.store = store

    def collect(self):
        yield GaugeMetricFamily(
            "statefulrnn_store_up", "1 if the state store answered this scrape", value=int(self.store is not None)
        )
        if self.store is None:
            return
        count, stats = self.store
        yield GaugeMetricFamily("statefulrnn_streams", "streams held by the state store", value=count)
        for name, value in stats.items():
            yield CounterMetricFamily(f"statefulrnn_store_{name}", f"state store {name}", value=value)
