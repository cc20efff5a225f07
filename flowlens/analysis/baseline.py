"""What each path's round-trip time usually is, so that a path that slows down can be told.

A path's usual RTT is its mean over the hour before the window; a path new in the window (no
history) takes its quietest bucket in the window instead. A flow is *slow* in a bucket when its
RTT there is several times the usual and higher by more than any delayed acknowledgement could
make it: a request's acknowledgement can wait for the answer up to 40 ms (Linux's delayed-ACK
timer), so a busy server alone raises its clients' RTT by up to that much; a queue at a
throttled far side, a congested link or a lossy path raise it further.
"""

from __future__ import annotations

from collections.abc import Callable

from flowlens.analysis.context import PATH_FIELDS, Context
from flowlens.model.queries import FlowRow

HISTORY_SECONDS = 3600.0
RTT_FACTOR = 4.0
RTT_RISE_US = 50_000.0  # above the 40 ms delayed-ACK ceiling
MIN_SAMPLES = 1  # one sample is already a smoothed RTT: many ACKs


def history_rtt(ctx: Context, path: Callable[[FlowRow], str | None]) -> dict[str, float]:
    """Each path's mean RTT in microseconds over the hour before the window, the path of a flow
    given by ``path``."""
    return _means(ctx.grouped(PATH_FIELDS, max(0.0, ctx.start - HISTORY_SECONDS), ctx.start), path)


def usual_rtt(ctx: Context, path: Callable[[FlowRow], str | None]) -> dict[str, float]:
    """Each path's usual RTT in microseconds: its history, or its quietest bucket in the window."""
    usual = history_rtt(ctx, path)
    quietest: dict[str, float] = {}
    for bucket in ctx.buckets():
        # The buckets' own flows, which detection reads anyway (cached): no second query each.
        for name, mean in _means(ctx.rows_between(*bucket), path).items():
            quietest[name] = min(mean, quietest.get(name, mean))
    return {**quietest, **usual}


def _means(rows: list[FlowRow], path: Callable[[FlowRow], str | None]) -> dict[str, float]:
    sums: dict[str, list[float]] = {}
    for row in rows:
        name = path(row)
        if name and row.rtt_samples:
            acc = sums.setdefault(name, [0.0, 0.0])
            acc[0] += row.rtt_sum_us
            acc[1] += row.rtt_samples
    return {name: total / samples for name, (total, samples) in sums.items()}


def slow(row: FlowRow, usual: float | None) -> bool:
    """Whether the flow's RTT in this bucket is far above its path's usual."""
    rtt = row.rtt_mean_us
    if usual is None or rtt is None or row.rtt_samples < MIN_SAMPLES:
        return False
    return rtt >= RTT_FACTOR * usual and rtt - usual >= RTT_RISE_US
