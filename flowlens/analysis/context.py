"""What a diagnosis looks at: the store, the inventory, the events, and one time window."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property

from flowlens.collector.enrich.inventory import Inventory
from flowlens.collector.events import EventLog
from flowlens.collector.store import FlowStore
from flowlens.model.queries import FlowFilter, FlowRow, TopBy, View


@dataclass
class Context:
    store: FlowStore
    inventory: Inventory
    events: EventLog
    start: float
    end: float
    # Lab bandwidths are real ones divided by this (the lab runs 100× slower than AWS).
    bandwidth_scale: float = 1.0
    cost_per_gb_each_way: float = 0.01
    notes: list[str] = field(default_factory=list)

    @property
    def window(self) -> tuple[float, float]:
        return (self.start, self.end)

    def filter(self, **kwargs: object) -> FlowFilter:
        return FlowFilter(since=datetime.fromtimestamp(self.start, UTC), until=datetime.fromtimestamp(self.end, UTC),
                          **kwargs)  # type: ignore[arg-type]

    @cached_property
    def cluster_rows(self) -> list[FlowRow]:
        return self.store.flow_table(self.filter(), View.CLUSTER, TopBy.BYTES, 3000)

    @cached_property
    def aws_rows(self) -> list[FlowRow]:
        return self.store.flow_table(self.filter(), View.AWS, TopBy.BYTES, 3000)

    @cached_property
    def all_rows(self) -> list[FlowRow]:
        return self.store.flow_table(self.filter(), None, TopBy.BYTES, 3000)
