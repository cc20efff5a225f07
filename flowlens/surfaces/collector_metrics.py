"""The collector's own ``/metrics``: what it ingested and refused, how long ingest takes, the
store's rows, size and maintenance, the inventory, and the HTTP layer's timeouts.

A scrape reads plain counters the collector keeps anyway; it never queries the store (a
scrape must stay cheap and never fail half-way).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector as PromCollector

from flowlens.collector.service import INGEST_BUCKETS, Collector
from flowlens.web.server import ServerStats


def _counter(name: str, help_text: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, help_text, value=value)


class CollectorMetrics(PromCollector):
    def __init__(self, collector: Collector, server: ServerStats) -> None:
        self.collector, self.server = collector, server

    def collect(self) -> Iterator[Metric]:
        stats, store = self.collector.stats, self.collector.store.stats
        reports = CounterMetricFamily("flowlens_collector_reports", "Reports received and decoded, by result.",
                                      labels=("result",))
        reports.add_metric(["stored"], stats.reports - stats.duplicates)
        reports.add_metric(["duplicate"], stats.duplicates)
        yield reports
        refused = CounterMetricFamily("flowlens_collector_reports_refused",
                                      "Reports refused, by HTTP status (401/403 token, 400 bad gzip, 413 too big, "
                                      "422 invalid or outside the time window, ...).", labels=("status",))
        for status, count in sorted(stats.refused_by_status.items()):
            refused.add_metric([str(status)], count)
        yield refused
        yield _counter("flowlens_collector_flow_rows", "Flow rows stored.", store.flow_rows)
        yield _counter("flowlens_collector_node_rows", "Node-counter rows stored.", store.node_rows)
        yield _counter("flowlens_collector_late_rows", "Rows that arrived after their minute was rolled up.",
                       store.late_rows)
        yield _counter("flowlens_collector_maintenance_failures",
                       "Rollup or retention steps that failed (logged and skipped; the others go on).",
                       store.maintenance_failures)
        latency = HistogramMetricFamily("flowlens_collector_ingest_seconds",
                                        "Time from a report's body read to its answer, accepted reports.")
        running, buckets = 0, []
        for bound, count in zip((*INGEST_BUCKETS, float("inf")), stats.latency_buckets, strict=True):
            running += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
        latency.add_metric([], buckets, stats.latency_sum)
        yield latency
        yield _counter("flowlens_collector_http_header_timeouts",
                       "Connections closed while waiting too long for a request's headers.",
                       self.server.header_timeouts)
        yield _counter("flowlens_collector_http_body_timeouts", "Requests whose body stopped coming.",
                       self.server.body_timeouts)
        yield _counter("flowlens_collector_http_client_disconnects",
                       "Clients gone before their request was answered.", self.server.disconnects)
        size = GaugeMetricFamily("flowlens_collector_store_bytes", "Size of the store's files on disk.")
        size.add_metric([], self._store_bytes())
        yield size
        failures = CounterMetricFamily("flowlens_collector_rule_failures",
                                       "Diagnosis rules that raised (the others answered; see the log).",
                                       labels=["rule"])
        for rule, count in sorted(self.collector.rule_failures.items()):
            failures.add_metric([rule], count)
        yield failures
        inventory = GaugeMetricFamily("flowlens_collector_inventory_version",
                                      "Times the inventory changed since start.")
        inventory.add_metric([], self.collector.inventory.version)
        yield inventory
        objects = GaugeMetricFamily("flowlens_collector_inventory_objects",
                                    "Kubernetes objects the inventory keeps, by kind.", labels=["kind"])
        for kind, count in self.collector.inventory.counts().items():
            objects.add_metric([kind], count)
        yield objects
        changed = self.collector.inventory.changed_at
        age = GaugeMetricFamily("flowlens_collector_inventory_age_seconds",
                                "Seconds since the inventory last changed (absent until it has).")
        if changed is not None:
            age.add_metric([], max(0.0, time.time() - changed))
        yield age

    def _store_bytes(self) -> int:
        path = self.collector.config.store
        if path in ("", ":memory:"):
            return 0
        total = 0
        for suffix in ("", ".wal"):
            with contextlib.suppress(OSError):
                total += os.stat(path + suffix).st_size
        return total
