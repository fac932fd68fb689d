"""One Prometheus page for many replicas: each replica's samples, labelled ``replica="i"``.

Labelling rather than summing keeps gauges such as ``pio_kv_usage`` (a fraction) meaningful;
``sum by (...)`` in PromQL gives the cluster's totals.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families


class _Merged:
    def __init__(self, families: list[Metric]):
        self._families = families

    def collect(self):
        return self._families


def merge_replica_metrics(pages: dict[int, str], extra: CollectorRegistry | None = None) -> bytes:
    """The exposition text of ``pages`` (replica index -> its /metrics text) plus ``extra``'s metrics."""
    merged: dict[str, Metric] = {}
    for replica, text in sorted(pages.items()):
        for family in text_string_to_metric_families(text):
            out = merged.setdefault(family.name, Metric(family.name, family.documentation, family.type, family.unit))
            for sample in family.samples:
                out.samples.append(sample._replace(labels={**sample.labels, "replica": str(replica)}))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged(list(merged.values())))
    text = generate_latest(registry)
    return text + (generate_latest(extra) if extra is not None else b"")
