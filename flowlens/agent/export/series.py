"""Running per-flow totals behind the exported series, bounded in number.

At most ``max_series`` flows get series of their own. Everything else of a namespace goes to
one ``other`` remainder, so what a namespace moved is always the sum of its series'
increases: ``sum by (netns) (increase(...[w]))`` is exact over any window ``w``. For that,
no series ever jumps and no increase is ever lost between two scrapes:

- every series (a flow's own, a namespace's remainder) is born at zero; what it counts before
  scrapers have read that zero (two scrapes, or ``linger`` seconds) is held back, then added
  at once: Prometheus sees the zero, then the increase, never a series born with a value;
- a flow that loses its series to a flow with more loss keeps it, frozen, until scrapers have
  read its final value (two scrapes, or ``linger`` seconds), and only what it moves from then
  on goes to the remainder: the remainder never absorbs a flow's past;
- a flow idle past the grace period has long had its final value read: its series just ends.

Flows are ranked as the reference product ranks them: loss first (retransmissions, timeouts,
failed connections), then bytes, over the last interval.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field

from flowlens.model.flows import FlowCounters, FlowKey

# RTT histogram bucket bounds in seconds: loopback and same-zone paths sit in the first few,
# cross-zone and internet paths in the middle, a struggling path at the top.
RTT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_RTT_BOUNDS_US = tuple(int(b * 1e6) for b in RTT_BUCKETS)

# A displaced flow must have held its series at least this many intervals, so that the
# selection does not churn every interval.
MIN_HOLD_INTERVALS = 3
# Scrapes that must read a series' first zero (or its final value) before it counts (or ends).
SCRAPES_TO_SETTLE = 2
# ...or seconds, when scrapes are rarer than that (or there are none).
SERIES_LINGER = 120.0


@dataclass(slots=True)
class SeriesTotals:
    """Monotonic totals of one exported series (a flow, or a namespace's remainder)."""

    counters: FlowCounters = field(default_factory=FlowCounters)
    rtt_buckets: list[int] = field(default_factory=lambda: [0] * (len(RTT_BUCKETS) + 1))
    rtt_sum_seconds: float = 0.0
    active_sockets: int = 0

    def add(self, counters: FlowCounters, rtt_samples_us: list[int]) -> None:
        self.counters.add(counters)
        buckets = self.rtt_buckets
        for sample in rtt_samples_us:
            buckets[bisect.bisect_left(_RTT_BOUNDS_US, sample)] += 1
        self.rtt_sum_seconds += sum(rtt_samples_us) / 1e6

    def absorb(self, other: SeriesTotals) -> None:
        self.counters.add(other.counters)
        for i, n in enumerate(other.rtt_buckets):
            self.rtt_buckets[i] += n
        self.rtt_sum_seconds += other.rtt_sum_seconds


@dataclass(slots=True)
class _Series:
    """An exported series. Born at zero: what it counts until scrapers have read that zero waits
    in ``pending`` (not exported), added once they have."""

    born_scrapes: int  # scrapes done when its zero was published
    born_at: float
    born_interval: int
    totals: SeriesTotals = field(default_factory=SeriesTotals)
    pending: SeriesTotals | None = field(default_factory=SeriesTotals)

    def target(self) -> SeriesTotals:
        """Where this interval's counts go."""
        return self.pending if self.pending is not None else self.totals


@dataclass(slots=True)
class _Selected(_Series):
    last_active: float = 0.0


@dataclass(slots=True)
class _Retired:
    totals: SeriesTotals
    frozen_scrapes: int
    frozen_at: float


class FlowSeries:
    """Per-flow and per-namespace-remainder totals, updated once per interval."""

    def __init__(self, max_series: int = 500, idle_grace: float = 300.0, linger: float = SERIES_LINGER) -> None:
        self.max_series = max_series
        self.idle_grace = idle_grace
        self.linger = linger
        self.selected: dict[FlowKey, _Selected] = {}
        self.retired: dict[FlowKey, _Retired] = {}  # exported, frozen, until read
        self._remainders: dict[str, _Series] = {}
        self._interval = 0
        self._scrapes = 0
        self._now = 0.0

    @property
    def other(self) -> dict[str, SeriesTotals]:
        """Each namespace's remainder as exported."""
        return {netns: r.totals for netns, r in self._remainders.items()}

    def watch(self, namespaces: Iterable[str], now: float, scrapes: int = 0) -> None:
        """Export a zero remainder for each namespace before any of its traffic comes."""
        self._scrapes, self._now = scrapes, now
        for netns in namespaces:
            self._remainder(netns)

    def update(self, now: float, flows: dict[FlowKey, FlowCounters],
               rtt_samples: dict[FlowKey, list[int]], active: dict[FlowKey, int], scrapes: int = 0) -> None:
        """Add one interval. ``scrapes`` is how many times the exported series were read so far."""
        self._interval += 1
        self._scrapes, self._now = scrapes, now
        self._release(now)
        for series in (*self._remainders.values(), *self.selected.values()):
            self._settle(series, now)
        self._expire(now)
        self._select(flows, now)
        for key, counters in flows.items():
            samples = rtt_samples.get(key, [])
            chosen = self.selected.get(key)
            if chosen is not None:
                if not counters.is_idle():
                    chosen.last_active = now
                chosen.target().add(counters, samples)
            else:
                self._remainder(key.netns).add(counters, samples)
        self._set_active(active)

    def _settled(self, scrapes_then: int, then: float, now: float) -> bool:
        return self._scrapes - scrapes_then >= SCRAPES_TO_SETTLE or now - then >= self.linger

    def _settle(self, series: _Series, now: float) -> None:
        if series.pending is not None and series.born_interval < self._interval \
                and self._settled(series.born_scrapes, series.born_at, now):
            series.totals.absorb(series.pending)
            series.totals.active_sockets = series.pending.active_sockets
            series.pending = None

    def _remainder(self, netns: str) -> SeriesTotals:
        """Where the namespace's unselected traffic goes now."""
        remainder = self._remainders.get(netns)
        if remainder is None:
            remainder = self._remainders[netns] = _Series(self._scrapes, self._now, self._interval)
        return remainder.target()

    def _release(self, now: float) -> None:
        for key in [k for k, r in self.retired.items() if self._settled(r.frozen_scrapes, r.frozen_at, now)]:
            del self.retired[key]

    def _expire(self, now: float) -> None:
        for key in [k for k, s in self.selected.items() if now - s.last_active > self.idle_grace]:
            del self.selected[key]  # unchanged for the whole grace period: every scraper has its value

    def _retire(self, key: FlowKey, now: float) -> None:
        chosen = self.selected.pop(key)
        totals = chosen.totals
        if chosen.pending is not None:  # born at zero and already read: what it held shows now
            totals.absorb(chosen.pending)
        totals.active_sockets = 0  # its open sockets count in the remainder from now on
        self.retired[key] = _Retired(totals, self._scrapes, now)

    def _select(self, flows: dict[FlowKey, FlowCounters], now: float) -> None:
        def rank(key: FlowKey) -> tuple[int, int]:
            c = flows.get(key)
            return (c.loss_score(), c.total_bytes()) if c is not None else (0, 0)

        candidates = sorted((k for k, c in flows.items()
                             if k not in self.selected and k not in self.retired and not c.is_idle()),
                            key=rank, reverse=True)
        free = self.max_series - len(self.selected)
        for key in candidates[:max(free, 0)]:
            self._take(key, now)
        candidates = candidates[max(free, 0):]
        if not candidates:
            return
        holders = sorted((k for k, s in self.selected.items()
                          if self._interval - s.born_interval >= MIN_HOLD_INTERVALS), key=rank)
        for candidate, holder in zip(candidates, holders, strict=False):
            # Frozen series wait to be read; at most as many as there are own series.
            if rank(candidate) <= rank(holder) or len(self.retired) >= self.max_series:
                break
            self._retire(holder, now)
            self._take(candidate, now)

    def _take(self, key: FlowKey, now: float) -> None:
        self.selected[key] = _Selected(self._scrapes, now, self._interval, last_active=now)

    def _set_active(self, active: dict[FlowKey, int]) -> None:
        for series in (*self.selected.values(), *self._remainders.values()):
            series.totals.active_sockets = 0
            if series.pending is not None:
                series.pending.active_sockets = 0
        for key, count in active.items():
            chosen = self.selected.get(key)
            target = chosen.target() if chosen is not None else self._remainder(key.netns)
            target.active_sockets += count

    def exported(self) -> list[tuple[FlowKey | str, SeriesTotals]]:
        """Every series to export: own (flow key), retired (flow key), remainder (namespace)."""
        rows: list[tuple[FlowKey | str, SeriesTotals]] = [(k, c.totals) for k, c in self.selected.items()]
        rows += [(k, r.totals) for k, r in self.retired.items()]
        rows += [(netns, r.totals) for netns, r in self._remainders.items()]
        return rows
