"""Running per-flow totals behind the exported series, bounded in number.

At most ``max_series`` flows get series of their own. Everything else of a namespace is
folded into one ``other`` remainder, so a sum over a namespace is always exact. A flow's own
series counts from the moment it was selected (what happened before stays in the remainder),
and when a flow loses its series (idle past the grace period, or displaced by a flow with more
loss) its totals move into the remainder: both stay monotonic, as counters must.

Flows are ranked as the reference product ranks them: loss first (retransmissions, timeouts,
failed connections), then bytes, over the last interval.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from flowlens.model.flows import FlowCounters, FlowKey

# RTT histogram bucket bounds in seconds: loopback and same-zone paths sit in the first few,
# cross-zone and internet paths in the middle, a struggling path at the top.
RTT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_RTT_BOUNDS_US = tuple(int(b * 1e6) for b in RTT_BUCKETS)

# A displaced flow must have held its series at least this many intervals, so that the
# selection does not churn every interval.
MIN_HOLD_INTERVALS = 3


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
class _Selected:
    totals: SeriesTotals
    last_active: float
    since_interval: int


class FlowSeries:
    """Per-flow and per-namespace-remainder totals, updated once per interval."""

    def __init__(self, max_series: int = 500, idle_grace: float = 300.0) -> None:
        self.max_series = max_series
        self.idle_grace = idle_grace
        self.selected: dict[FlowKey, _Selected] = {}
        self.other: dict[str, SeriesTotals] = {}
        self._interval = 0

    def update(self, now: float, flows: dict[FlowKey, FlowCounters],
               rtt_samples: dict[FlowKey, list[int]], active: dict[FlowKey, int]) -> None:
        self._interval += 1
        self._expire(now)
        self._select(flows)
        for key, counters in flows.items():
            samples = rtt_samples.get(key, [])
            chosen = self.selected.get(key)
            if chosen is not None:
                chosen.totals.add(counters, samples)
                if not counters.is_idle():
                    chosen.last_active = now
            else:
                self._remainder(key.netns).add(counters, samples)
        self._set_active(active)

    def _remainder(self, netns: str) -> SeriesTotals:
        totals = self.other.get(netns)
        if totals is None:
            totals = self.other[netns] = SeriesTotals()
        return totals

    def _expire(self, now: float) -> None:
        for key in [k for k, s in self.selected.items() if now - s.last_active > self.idle_grace]:
            self._fold(key)

    def _fold(self, key: FlowKey) -> None:
        self._remainder(key.netns).absorb(self.selected.pop(key).totals)

    def _select(self, flows: dict[FlowKey, FlowCounters]) -> None:
        def rank(key: FlowKey) -> tuple[int, int]:
            c = flows.get(key)
            return (c.loss_score(), c.total_bytes()) if c is not None else (0, 0)

        candidates = sorted((k for k, c in flows.items() if k not in self.selected and not c.is_idle()),
                            key=rank, reverse=True)
        free = self.max_series - len(self.selected)
        for key in candidates[:max(free, 0)]:
            self._take(key)
        candidates = candidates[max(free, 0):]
        if not candidates:
            return
        holders = sorted((k for k, s in self.selected.items()
                          if self._interval - s.since_interval >= MIN_HOLD_INTERVALS), key=rank)
        for candidate, holder in zip(candidates, holders, strict=False):
            if rank(candidate) <= rank(holder):
                break
            self._fold(holder)
            self._take(candidate)

    def _take(self, key: FlowKey) -> None:
        self.selected[key] = _Selected(SeriesTotals(), 0.0, self._interval)

    def _set_active(self, active: dict[FlowKey, int]) -> None:
        for chosen in self.selected.values():
            chosen.totals.active_sockets = 0
        for totals in self.other.values():
            totals.active_sockets = 0
        for key, count in active.items():
            chosen = self.selected.get(key)
            target = chosen.totals if chosen is not None else self._remainder(key.netns)
            target.active_sockets += count

    def namespace_total(self, netns: str) -> FlowCounters:
        """Everything counted in one namespace since start: own series plus remainder."""
        total = FlowCounters()
        total.add(self._remainder(netns).counters)
        for key, chosen in self.selected.items():
            if key.netns == netns:
                total.add(chosen.totals.counters)
        return total
