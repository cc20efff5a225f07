"""The collector as one object: inventory source, enrichment, store, and the ingest path.

Surfaces (the HTTP API, the CLI) hold one :class:`Collector`; nothing here knows about HTTP.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowlens.collector.config import CollectorConfig
from flowlens.collector.enrich.cloud import CloudRanges
from flowlens.collector.enrich.enricher import Enricher, parse_cidrs
from flowlens.collector.enrich.inventory import Inventory
from flowlens.collector.events import EventLog
from flowlens.collector.ingest import IngestError, TimeWindow, decode
from flowlens.collector.inventory_sources import FileSource, KubernetesSource
from flowlens.collector.store import FlowStore
from flowlens.model.bandwidth import load_table
from flowlens.web.auth import TokenSet

log = logging.getLogger(__name__)

INGEST_WORKERS = 2
ENV_TOKENS = "FLOWLENS_COLLECTOR_TOKENS"  # comma-separated writers' tokens
ENV_READ_TOKENS = "FLOWLENS_COLLECTOR_READ_TOKENS"


INGEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(slots=True)
class IngestStats:
    reports: int = 0
    duplicates: int = 0
    refused: int = 0
    flows: int = 0
    refused_by_status: dict[int, int] = field(default_factory=dict)
    latency_buckets: list[int] = field(default_factory=lambda: [0] * (len(INGEST_BUCKETS) + 1))
    latency_sum: float = 0.0

    def refuse(self, status: int) -> None:
        self.refused += 1
        self.refused_by_status[status] = self.refused_by_status.get(status, 0) + 1

    def observe(self, seconds: float) -> None:
        """One accepted report's time through the HTTP path (body read to answer)."""
        index = next((i for i, bound in enumerate(INGEST_BUCKETS) if seconds <= bound), len(INGEST_BUCKETS))
        self.latency_buckets[index] += 1
        self.latency_sum += seconds


def token_sets(config: CollectorConfig) -> tuple[TokenSet, TokenSet]:
    """(writers', readers') tokens; readers default to the writers' when none are given."""
    writers = TokenSet(config.token_files, ENV_TOKENS, config.tokens, "collector token")
    readers = TokenSet(config.read_token_files, ENV_READ_TOKENS, config.read_tokens, "read token")
    return writers, (readers if (readers.files or readers) else writers)


def check_tokens(config: CollectorConfig) -> None:
    """Raise ConfigError now for a token file that cannot be read, before anything starts."""
    token_sets(config)


class Collector:
    def __init__(self, config: CollectorConfig, store: FlowStore) -> None:
        self.config = config
        self.store = store
        self.inventory = Inventory()
        self.bandwidth = load_table(config.instance_bandwidth)
        self.rule_failures: Counter[str] = Counter()  # diagnosis rules that raised, by name
        cloud = CloudRanges.load(config.ip_ranges) if config.ip_ranges else None
        self.enricher = Enricher(self.inventory, cloud, config.region, parse_cidrs(config.vpc_cidrs))
        self.write_tokens, self.read_tokens = token_sets(config)
        self.window = TimeWindow(config.max_report_age or store.retention.raw.total_seconds(), config.max_clock_skew)
        self.events = EventLog(Path(config.store + ".events.jsonl") if config.store not in ("", ":memory:") else None)
        self.stats = IngestStats()
        # Decoding and enrichment are Python (one core's worth, whatever the threads): more of
        # them at once only trade the GIL, and each holds a decoded report in memory, so two at
        # a time bounds memory too; the store's group commit takes the rest concurrently.
        self._working = threading.BoundedSemaphore(INGEST_WORKERS)
        self._sources: list[Any] = []
        self._stop = threading.Event()

    def start(self) -> None:
        if self.config.inventory_file:
            source = FileSource(Path(self.config.inventory_file), self.inventory)
            source.start()
            self._sources.append(source)
        if self.config.kubernetes:
            kube = KubernetesSource(self.inventory, self.config.kubeconfig or None)
            kube.start()
            self._sources.append(kube)
        threading.Thread(target=self._maintain, name="store-maintenance", daemon=True).start()

    def _maintain(self) -> None:
        """Roll closed minutes up often; apply retention now and then."""
        last_retention = time.monotonic()
        while not self._stop.wait(self.config.rollup_every):
            try:
                if time.monotonic() - last_retention >= self.config.retention_every:
                    self.store.apply_retention(time.time())
                    last_retention = time.monotonic()
                else:
                    self.store.roll_up(time.time())
            except Exception as err:  # maintenance must never stop the collector
                self.store.stats.maintenance_failures += 1
                log.warning("store maintenance failed: %s", err)

    def ingest(self, body: bytes, encoding: str | None) -> dict[str, Any]:
        """Decode, check, enrich and store one report (its sender already authenticated);
        raises IngestError (4xx) when refused."""
        with self._working:
            try:
                report = decode(body, encoding)
                self.window.check(report, time.time())
            except IngestError as err:
                self.stats.refuse(err.status)
                raise
            flows = self.enricher.flows(report)
            nodes = self.enricher.nodes(report)
        stored = self.store.append_report(report.report_id, flows, nodes)
        self.stats.reports += 1
        if stored:
            self.stats.flows += flows.num_rows
        else:
            self.stats.duplicates += 1
        return {"report_id": report.report_id, "flows": flows.num_rows, "duplicate": not stored}

    def close(self) -> None:
        self._stop.set()
        for source in self._sources:
            source.stop()
        self.store.close()
