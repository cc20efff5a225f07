"""Bounded per-flow series: what Prometheus computes from them is exact, with no jumps.

``Scraper`` reads the exported series the way Prometheus does: a counter's increase over a
window is the sum, over series, of each series' last value minus its first value in the window
(a series that appears counts from its first sample, so it must appear at zero; one that
disappears counts up to its last sample, so its final value must have been read; a value
lower than the one before is a counter reset, counted from zero).
"""

from __future__ import annotations

from itertools import pairwise

from flowlens.agent.export.series import SCRAPES_TO_SETTLE, FlowSeries
from flowlens.model.flows import CLIENT, FlowCounters, FlowKey


def key(n: int, netns: str = "ns1") -> FlowKey:
    return FlowKey(netns, "10.0.0.1", f"10.0.1.{n}", 80, CLIENT)


def counters(sent: int = 0, retrans: int = 0) -> FlowCounters:
    return FlowCounters(sent_bytes=sent, retransmitted_segments=retrans)


def label(owner: FlowKey | str) -> tuple[str, str]:
    return (owner, "other") if isinstance(owner, str) else (owner.netns, owner.remote_ip)


class Scraper:
    """A Prometheus of one: samples of every series, and increases the way it computes them."""

    def __init__(self) -> None:
        self.scrapes = 0
        self.history: list[dict[tuple[str, str], int]] = []

    def scrape(self, series: FlowSeries) -> dict[tuple[str, str], int]:
        self.scrapes += 1
        sample = {label(owner): t.counters.sent_bytes for owner, t in series.exported()}
        self.history.append(sample)
        return sample

    def increase(self, first: int, last: int) -> int:
        """Sum of per-series increases between two scrapes, as ``sum(increase(...))`` sees it."""
        total = 0
        window = self.history[first:last + 1]
        for name in {n for sample in window for n in sample}:
            values = [sample[name] for sample in window if name in sample]
            total += sum(b - a if b >= a else b for a, b in pairwise(values))
        return total


def test_every_byte_shows_once_with_no_series_born_with_a_value_under_folds_and_births():
    series = FlowSeries(max_series=2, idle_grace=100)
    prom = Scraper()
    moved = 0
    series.watch(["ns1"], 0.0, prom.scrapes)  # the agent exports a namespace's zero remainder at once
    prom.scrape(series)
    for step in range(40):
        # Six flows compete for two series; loss moves around so flows are displaced often.
        flows = {key(n): counters(sent=(step + 1) * n + 1, retrans=n if step % 7 == n else 0) for n in range(6)}
        moved += sum(c.sent_bytes for c in flows.values())
        series.update(float(step), flows, {}, {}, prom.scrapes)
        assert len(series.selected) <= 2 and len(series.retired) <= 2
        prom.scrape(series)
    for step in range(40, 43):  # quiet scrapes: what was held back shows
        series.update(float(step), {}, {}, {}, prom.scrapes)
        prom.scrape(series)
    assert prom.increase(0, len(prom.history) - 1) == moved, "every byte once, none lost, none twice"
    seen: set[tuple[str, str]] = set()
    for before, sample in zip(prom.history, prom.history[1:], strict=False):
        for name, value in sample.items():
            if name not in before:
                assert value == 0, f"{name} born with a value: Prometheus would lose it"
            seen.add(name)
    assert len(seen) > 3, "the selection should have changed"


def test_a_displaced_flow_never_makes_the_remainder_jump():
    series = FlowSeries(max_series=1, idle_grace=1000)
    prom = Scraper()
    series.watch(["ns1"], 0.0)
    series.update(0.0, {key(1): counters(sent=50_000_000)}, {}, {}, prom.scrapes)
    for step in range(1, 8):  # born at zero, then counting once read twice
        prom.scrape(series)
        series.update(float(step), {key(1): counters(sent=50_000_000), key(2): counters(sent=100)}, {}, {},
                      prom.scrapes)
    assert series.selected[key(1)].totals.counters.sent_bytes > 0
    before = prom.scrape(series)
    # key(2) starts losing segments and takes key(1)'s series (it has held it long enough).
    series.update(8.0, {key(1): counters(sent=100), key(2): counters(sent=100, retrans=5)}, {}, {}, prom.scrapes)
    assert key(2) in series.selected and key(1) in series.retired
    after = prom.scrape(series)
    assert after[("ns1", "other")] - before[("ns1", "other")] == 100, "only key(1)'s bytes from now on, no past"
    assert after[("ns1", "10.0.1.2")] == 0, "the new series is born at zero, its first bytes held back"
    frozen = series.retired[key(1)].totals.counters.sent_bytes
    assert after[("ns1", "10.0.1.1")] == frozen, "the displaced series is still exported, frozen"
    for step in range(9, 9 + SCRAPES_TO_SETTLE):  # kept until read twice more, then gone
        series.update(float(step), {key(1): counters(sent=100)}, {}, {}, prom.scrapes)
        assert prom.scrape(series).get(("ns1", "10.0.1.1"), frozen) == frozen
    assert key(1) not in series.retired


def test_without_scrapers_series_settle_after_the_linger_time():
    series = FlowSeries(max_series=1, idle_grace=1000, linger=30)
    series.watch(["ns1"], -100.0)
    series.update(0.0, {key(1): counters(sent=10)}, {}, {})
    series.update(10.0, {key(1): counters(sent=10)}, {}, {})
    assert series.selected[key(1)].totals.counters.sent_bytes == 0, "born at zero, waiting to be read"
    series.update(30.0, {key(1): counters(sent=10)}, {}, {})
    assert series.selected[key(1)].totals.counters.sent_bytes == 30, "what it held back, then what came"
    assert series.other["ns1"].counters.sent_bytes == 0


def test_idle_flows_lose_their_series_without_moving_their_past():
    series = FlowSeries(max_series=10, idle_grace=30, linger=0)
    series.watch(["ns1"], -1.0)
    series.update(0.0, {key(1): counters(sent=500)}, {}, {})
    series.update(1.0, {key(1): counters(sent=700)}, {}, {})
    assert series.selected[key(1)].totals.counters.sent_bytes == 1200
    series.update(20.0, {}, {}, {})
    assert key(1) in series.selected
    series.update(40.0, {}, {}, {})
    assert key(1) not in series.selected and key(1) not in series.retired
    assert series.other["ns1"].counters.sent_bytes == 0, "its past never moves to the remainder"


def test_a_namespace_seen_first_with_traffic_shows_it_once_its_zero_was_read():
    series = FlowSeries(max_series=0)
    series.update(0.0, {key(1): counters(sent=5)}, {}, {}, scrapes=0)
    assert series.other["ns1"].counters.sent_bytes == 0
    series.update(5.0, {key(1): counters(sent=6)}, {}, {}, scrapes=2)
    assert series.other["ns1"].counters.sent_bytes == 11


def test_zero_series_folds_everything_per_namespace():
    series = FlowSeries(max_series=0, linger=0)
    series.watch(["ns1", "ns2"], -1.0)
    series.update(0.0, {key(1): counters(sent=5), key(2, "ns2"): counters(sent=7)}, {}, {})
    assert {label(o): t.counters.sent_bytes for o, t in series.exported()} == {("ns1", "other"): 5,
                                                                              ("ns2", "other"): 7}
