"""What a diagnosis looks at: the store, the inventory, the events, and one time window.

Rules read flows through here, never straight from the store: flowlens's own traffic (agents'
reports, scrapes: category FLOWLENS) is left out, queries are cached for the diagnosis, and a
cap on rows (the flows with the most losses first) is said in the answer's notes when hit.
Detection works on short buckets of the window (:meth:`buckets`), so a fault shows within two
report intervals whatever the window's length.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property

from flowlens.collector.enrich.inventory import Inventory
from flowlens.collector.events import EventLog
from flowlens.collector.store import FlowStore
from flowlens.model.bandwidth import BandwidthTable, default_table
from flowlens.model.queries import PER_FLOW, FlowFilter, FlowRow, TopBy, View
from flowlens.model.vocabulary import Category

MAX_ROWS = 20_000  # flows read per query, the lossiest first
MAX_GROUPS = 100_000  # rows of a grouped query (zones, workloads): far more than any cluster has
# What a path (a zone pair, a zone and a cloud service or the internet) is made of: rows grouped
# by these fields are the paths' totals over every flow (see ``localize.path_of``).
PATH_FIELDS = frozenset({"zone", "cloud_service", "region", "service"})
BUCKET_SECONDS = 10.0  # detection granularity: two report intervals at the default 5 s
RECENT_SECONDS = 60.0  # the last minute of a window is always looked at in buckets that short
MAX_BUCKETS = 24  # the rest of it in at most this many


@dataclass
class Context:
    store: FlowStore
    inventory: Inventory
    events: EventLog
    start: float
    end: float
    bandwidth: BandwidthTable = field(default_factory=default_table)
    cost_per_gb_each_way: float = 0.01
    notes: list[str] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)  # rules that raised, by name
    _rows: dict[tuple[frozenset[str], float, float, str | None], list[FlowRow]] = field(default_factory=dict)

    @property
    def window(self) -> tuple[float, float]:
        return (self.start, self.end)

    def filter(self, start: float | None = None, end: float | None = None, **kwargs: object) -> FlowFilter:
        return FlowFilter(since=datetime.fromtimestamp(self.start if start is None else start, UTC),
                          until=datetime.fromtimestamp(self.end if end is None else end, UTC),
                          **kwargs)  # type: ignore[arg-type]

    def rows_between(self, start: float, end: float, view: View | None = None) -> list[FlowRow]:
        """Flows of [start, end) of a view (all by default), without flowlens's own."""
        return self._read(PER_FLOW, start, end, view, TopBy.RETRANSMISSIONS, MAX_ROWS,
                          f"more than {MAX_ROWS} flows between {start:.0f} and {end:.0f}: the {MAX_ROWS} "
                          "with the most losses were read")

    def grouped(self, keep: frozenset[str], start: float | None = None, end: float | None = None,
                view: View | None = None) -> list[FlowRow]:
        """Every flow of [start, end) (the window by default), summed by the ``keep`` fields of
        each end: totals over all the data, whatever the number of flows."""
        start, end = self.start if start is None else start, self.end if end is None else end
        return self._read(keep, start, end, view, TopBy.BYTES, MAX_GROUPS,
                          f"more than {MAX_GROUPS} groups of flows by {', '.join(sorted(keep))}: the "
                          f"{MAX_GROUPS} with the most bytes were read")

    def _read(self, keep: frozenset[str], start: float, end: float, view: View | None, by: TopBy, cap: int,
              capped: str) -> list[FlowRow]:
        """One flow-table query, cached for the diagnosis, without flowlens's own flows; ``capped``
        goes in the notes when the answer hit its cap."""
        key = (keep, start, end, view)
        if key not in self._rows:
            rows = self.store.flow_table(self.filter(start, end), view, by, cap, keep)
            if len(rows) == cap:
                self.notes.append(capped)
            self._rows[key] = [row for row in rows if row.category != Category.FLOWLENS]
        return self._rows[key]

    def buckets(self) -> list[tuple[float, float]]:
        """The window cut in buckets: its last minute in BUCKET_SECONDS ones (a fault that just
        started shows within two report intervals, however long the window), the rest in at
        most MAX_BUCKETS (a past fault shows too, less finely)."""
        edges, t = [], self.end
        recent = max(self.start, self.end - RECENT_SECONDS)
        while t > recent + 1e-6:
            edges.append((max(recent, t - BUCKET_SECONDS), t))
            t -= BUCKET_SECONDS
        size = max(BUCKET_SECONDS, (recent - self.start) / MAX_BUCKETS)
        t = recent
        while t > self.start + 1e-6:
            edges.append((max(self.start, t - size), t))
            t -= size
        return sorted(edges)

    @cached_property
    def all_rows(self) -> list[FlowRow]:
        return self.rows_between(self.start, self.end)
