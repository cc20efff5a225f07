"""The collector as one object: inventory source, enrichment, store, and the ingest path.

Surfaces (the HTTP API, the CLI) hold one :class:`Collector`; nothing here knows about HTTP.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowlens.collector.enrich.cloud import CloudRanges
from flowlens.collector.enrich.enricher import Enricher, parse_cidrs
from flowlens.collector.enrich.inventory import Inventory
from flowlens.collector.events import EventLog
from flowlens.collector.ingest import check_token, decode
from flowlens.collector.inventory_sources import FileSource, KubernetesSource
from flowlens.collector.store import FlowStore

log = logging.getLogger(__name__)


@dataclass(slots=True)
class CollectorConfig:
    address: str = "127.0.0.1"
    port: int = 9102
    store: str = "flowlens.duckdb"
    tokens: tuple[str, ...] = ()
    inventory_file: str = ""
    kubernetes: bool = False
    kubeconfig: str = ""
    ip_ranges: str = ""
    region: str = ""
    vpc_cidrs: str = ""
    bandwidth_scale: float = 1.0  # the lab runs its bandwidths 100x below AWS's
    rollup_every: float = 30.0
    retention_every: float = 3600.0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class IngestStats:
    reports: int = 0
    duplicates: int = 0
    refused: int = 0
    flows: int = 0


class Collector:
    def __init__(self, config: CollectorConfig, store: FlowStore) -> None:
        self.config = config
        self.store = store
        self.inventory = Inventory()
        cloud = CloudRanges.load(config.ip_ranges) if config.ip_ranges else None
        self.enricher = Enricher(self.inventory, cloud, config.region, parse_cidrs(config.vpc_cidrs))
        self.tokens = frozenset(config.tokens)
        self.events = EventLog(Path(config.store + ".events.jsonl") if config.store not in ("", ":memory:") else None)
        self.stats = IngestStats()
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
                log.warning("store maintenance failed: %s", err)

    def ingest(self, body: bytes, encoding: str | None, authorization: str | None) -> dict[str, Any]:
        """Check, decode, enrich and store one report; raises IngestError (4xx) when refused."""
        try:
            check_token(authorization, self.tokens)
            report = decode(body, encoding)
        except Exception:
            self.stats.refused += 1
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
