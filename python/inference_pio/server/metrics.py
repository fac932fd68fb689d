"""Prometheus metrics of one server: requests, tokens, latency, and the engine's live queue/KV figures."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _EngineCollector:
    """Reads the engine's stats at scrape time (nothing to keep in sync)."""

    def __init__(self, stats: Callable[[], dict]):
        self._stats = stats

    def collect(self):
        stats = self._stats()
        for key, help_text in (("waiting", "requests waiting for admission"),
                               ("running", "requests being generated"),
                               ("kv_blocks_used", "KV-cache blocks in use"),
                               ("kv_blocks_total", "KV-cache blocks in all"),
                               ("kv_usage", "fraction of KV-cache blocks in use")):
            if key in stats:
                yield GaugeMetricFamily(f"pio_{key}", help_text, value=float(stats[key]))
        for key, help_text in (("prefix_cache_queries", "prompt tokens looked up in the prefix cache"),
                               ("prefix_cache_hits", "prompt tokens found in the prefix cache (not computed)")):
            if key in stats:  # exposed as pio_<key>_total
                yield CounterMetricFamily(f"pio_{key}", help_text, value=float(stats[key]))
        if "prefix_cache_blocks" in stats:
            yield GaugeMetricFamily("pio_prefix_cache_blocks", "KV-cache blocks cached for prefix reuse",
                                    value=float(stats["prefix_cache_blocks"]))


class ServerMetrics:
    def __init__(self, engine_stats: Callable[[], dict] | None = None):
        self.registry = CollectorRegistry()
        self.requests = Counter("pio_requests", "HTTP requests by endpoint and status", ["endpoint", "status"],
                                registry=self.registry)
        self.prompt_tokens = Counter("pio_prompt_tokens", "prompt tokens processed", registry=self.registry)
        self.completion_tokens = Counter("pio_completion_tokens", "tokens generated", registry=self.registry)
        self.latency = Histogram("pio_request_latency_seconds", "request latency by endpoint", ["endpoint"],
                                 registry=self.registry,
                                 buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, float("inf")))
        self.cancelled = Counter("pio_requests_cancelled", "requests whose client went away", registry=self.registry)
        if engine_stats is not None:
            self.registry.register(_EngineCollector(engine_stats))

    def render(self) -> bytes:
        return generate_latest(self.registry)
