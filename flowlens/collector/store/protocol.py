"""The flow store interface every storage engine implements, and its settings.

Callers: the ingest endpoint (many threads, one agent report of a few thousand rows every
5 s per node) calls ``append_report``; query endpoints call ``service_map``, ``flow_table``
and ``timeseries``; a maintenance loop calls ``roll_up`` and ``apply_retention``. An engine
must allow all of these from several threads at once.

Idempotency: an agent retries a report until it gets an answer, so ``append_report`` stores
the report id in the same transaction as its rows and answers False for an id it already
holds: a retried report is never counted twice, and a report is never half stored. Report
ids are kept as long as raw intervals; a report older than that is refused (False), because
it can no longer be told apart from one already stored and rolled up.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable

import pyarrow as pa

from flowlens.model.errors import FlowlensError
from flowlens.model.queries import (
    PER_FLOW,
    FlowFilter,
    FlowRow,
    MapLevel,
    ServiceMap,
    Subject,
    TimeSeries,
    TopBy,
    View,
)


class StoreError(FlowlensError):
    """A batch does not fit the stored-record schema, or the store cannot be opened."""


@dataclass(frozen=True, slots=True)
class Retention:
    """How long each tier is kept. Rollups must be kept at least as long as what they summarise."""

    raw: timedelta = timedelta(days=7)
    minute: timedelta = timedelta(days=30)
    hour: timedelta = timedelta(days=400)
    # A minute is rolled up this long after it ends, so that most late reports land before it;
    # later ones are still added to the rollups (exactly), just at a higher cost.
    rollup_delay: timedelta = timedelta(minutes=2)

    def __post_init__(self) -> None:
        if not (timedelta(0) < self.raw <= self.minute <= self.hour):
            raise ValueError("retention must satisfy 0 < raw <= minute <= hour")


@dataclass(frozen=True, slots=True)
class ReportBatch:
    """One agent report, enriched: rows in FLOW_SCHEMA and NODE_SCHEMA (either may be empty)."""

    report_id: str
    flows: pa.Table
    nodes: pa.Table | None = None


@dataclass(slots=True)
class StoreStats:
    """Counters of the write path (exported by the collector as metrics)."""

    reports_stored: int = 0
    reports_duplicate: int = 0
    reports_expired: int = 0  # older than raw retention: refused
    flow_rows: int = 0
    node_rows: int = 0
    new_flow_keys: int = 0
    late_rows: int = 0        # arrived after their minute was rolled up
    maintenance_failures: int = 0  # rollup or retention steps that failed (logged, skipped)


@runtime_checkable
class FlowStore(Protocol):
    stats: StoreStats

    def append_report(self, report_id: str, flows: pa.Table, nodes: pa.Table | None = None) -> bool:
        """Store one report atomically; False when its id is already stored (or it expired)."""
        ...

    def append_reports(self, reports: list[ReportBatch]) -> list[bool]:
        """Several reports in one transaction (group commit); one answer per report, in order."""
        ...

    def service_map(self, flt: FlowFilter, level: MapLevel = MapLevel.WORKLOAD) -> ServiceMap: ...

    def flow_table(self, flt: FlowFilter, view: View | None = None, by: TopBy = TopBy.BYTES,
                   limit: int = 100, keep: frozenset[str] = PER_FLOW) -> list[FlowRow]:
        """The top ``limit`` rows by ``by``, grouped by the ``keep`` fields (see PER_FLOW)."""
        ...

    def timeseries(self, flt: FlowFilter, subject: Subject, step: timedelta) -> TimeSeries: ...

    def roll_up(self, now: datetime | float | None = None) -> None:
        """Fold closed minutes and hours into the rollup tiers."""
        ...

    def apply_retention(self, now: datetime | float | None = None) -> None:
        """Roll up, then delete what each tier keeps no longer."""
        ...

    def close(self) -> None: ...
