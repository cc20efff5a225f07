"""Bounded per-flow series: exact namespace sums, monotonic counters, idle removal."""

from __future__ import annotations

from flowlens.agent.series import FlowSeries
from flowlens.model.flows import CLIENT, FlowCounters, FlowKey


def key(n: int, netns: str = "ns1") -> FlowKey:
    return FlowKey(netns, "10.0.0.1", f"10.0.1.{n}", 80, CLIENT)


def counters(sent: int = 0, retrans: int = 0) -> FlowCounters:
    return FlowCounters(sent_bytes=sent, retransmitted_segments=retrans)


def exported(series: FlowSeries) -> dict[tuple[str, str], int]:
    out = {(k.netns, k.remote_ip): s.totals.counters.sent_bytes for k, s in series.selected.items()}
    out.update({(netns, "other"): t.counters.sent_bytes for netns, t in series.other.items()})
    return out


def test_sums_stay_exact_and_counters_monotonic_under_the_bound():
    series = FlowSeries(max_series=2, idle_grace=100)
    truth = 0
    previous: dict[tuple[str, str], int] = {}
    for step in range(30):
        flows = {key(n): counters(sent=(step + 1) * n + 1, retrans=n if step % 7 == n else 0) for n in range(6)}
        truth += sum(c.sent_bytes for c in flows.values())
        series.update(float(step), flows, {}, {})
        now = exported(series)
        assert len(series.selected) <= 2
        assert sum(now.values()) == truth
        assert series.namespace_total("ns1").sent_bytes == truth
        for label, value in now.items():  # a series that disappeared and came back starts anew
            assert value >= previous.get(label, 0), f"{label} went backwards"
        previous = now


def test_flows_with_loss_win_the_series():
    series = FlowSeries(max_series=1, idle_grace=100)
    series.update(0.0, {key(1): counters(sent=10_000_000), key(2): counters(sent=10)}, {}, {})
    assert set(series.selected) == {key(1)}
    for step in range(1, 5):  # the big flow keeps its series for the minimum hold
        series.update(float(step), {key(1): counters(sent=1000), key(2): counters(sent=10, retrans=3)}, {}, {})
    assert set(series.selected) == {key(2)}
    assert series.namespace_total("ns1").sent_bytes == 10_000_010 + 4 * 1010


def test_idle_flows_lose_their_series_into_the_remainder():
    series = FlowSeries(max_series=10, idle_grace=30)
    series.update(0.0, {key(1): counters(sent=500)}, {}, {})
    series.update(20.0, {}, {}, {})
    assert key(1) in series.selected
    series.update(40.0, {}, {}, {})
    assert key(1) not in series.selected
    assert series.other["ns1"].counters.sent_bytes == 500


def test_zero_series_folds_everything_per_namespace():
    series = FlowSeries(max_series=0)
    series.update(0.0, {key(1): counters(sent=5), key(2, "ns2"): counters(sent=7)}, {}, {})
    assert exported(series) == {("ns1", "other"): 5, ("ns2", "other"): 7}
