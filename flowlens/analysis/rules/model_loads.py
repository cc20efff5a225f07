"""``slow_model_load``: every model load slower than its node and its history allow, explained.

A load is slow when its throughput (weights bytes over load seconds) is under half of what
its node's bandwidth allowance gives it (shared with the loads running on the node at the same
time) or under 60% of the earlier loads' median. Its cause, from the flows of the loading pod
during the load:

- the node's allowance was exceeded: ``bandwidth_allowance_exceeded`` says it (with the load);
- the remote (S3) was slow or lossy for every client: ``remote`` (see ``remote_degradation``);
- the pod's own path lost segments or its RTT rose well above the remote's usual: ``path``;
- none of these: the network delivered what was asked, so the pod itself (CPU, disk, the
  loader's parallelism) is the suspect: ``pod``.

One finding per cause, each load with its numbers: bytes, seconds, Mbit/s achieved and
possible, RTT against the baseline, and the seconds the slowness cost.
"""

from __future__ import annotations

import statistics

from flowlens.analysis.baseline import history_rtt
from flowlens.analysis.context import Context
from flowlens.analysis.localize import LOSS_RATE, path_of, remote_of
from flowlens.analysis.text import count
from flowlens.collector.events import Event
from flowlens.model.findings import Finding
from flowlens.model.queries import FlowRow

SLOW_SHARE = 0.5
HISTORY_SHARE = 0.6
RTT_FACTOR = 3.0

ADVICE = {
    "remote": ("The weights' source is slow for every client: check its health and throttling (S3 request "
               "rates, prefixes), read with more parallel ranged requests, or cache the weights in the cluster."),
    "path": ("The pod's path to the weights lost segments or slowed down while the other clients' did not: look "
             "at the node's network (its uplink, ENA statistics) and the path to the source."),
    "pod": ("The network delivered what the pod asked for: the loader itself (CPU, disk, too few parallel reads) "
            "is the bottleneck; give it more parallel ranged reads, faster local disk, or more CPU."),
}


def findings(ctx: Context, explained_nodes: set[str], remotes_degraded: set[str]) -> list[Finding]:
    loads = [e for e in ctx.events.between(ctx.start, ctx.end, "model_load") if e.bytes > 0 and e.seconds > 0]
    if not loads:
        return []
    history = [e.bytes * 8 / e.seconds / 1e6 for e in ctx.events.between(0, ctx.start, "model_load")
               if e.bytes > 0 and e.seconds > 0]
    typical = statistics.median(history) if history else None
    slow: dict[str, list[dict]] = {}
    for load in loads:
        possible = _possible_mbit(ctx, load, loads)
        achieved = load.bytes * 8 / load.seconds / 1e6
        too_slow = (possible is not None and achieved < SLOW_SHARE * possible) or \
            (typical is not None and achieved < HISTORY_SHARE * typical)
        if not too_slow or load.node in explained_nodes:
            continue  # fast enough, or the node's allowance finding tells it
        cause, detail = _cause(ctx, load, remotes_degraded)
        expected = load.bytes * 8 / (possible * 1e6) if possible else None
        slow.setdefault(cause, []).append({
            "pod": load.pod, "node": load.node, "bytes": load.bytes, "seconds": round(load.seconds, 1),
            "achieved_mbit_per_s": round(achieved, 1),
            "possible_mbit_per_s": round(possible, 1) if possible else None,
            "typical_mbit_per_s": round(typical, 1) if typical else None,
            "seconds_lost": round(load.seconds - expected, 1) if expected is not None else None, **detail})
    return [_finding(ctx, cause, items) for cause, items in sorted(slow.items())]


def _possible_mbit(ctx: Context, load: Event, loads: list[Event]) -> float | None:
    node = ctx.inventory.nodes.get(load.node)
    mbit = ctx.bandwidth.mbit(node.instance_type) if node else None
    if not mbit:
        return None
    sharing = sum(1 for other in loads if other.node == load.node and other.start < load.end and load.start < other.end)
    return mbit / max(sharing, 1)


def _cause(ctx: Context, load: Event, remotes_degraded: set[str]) -> tuple[str, dict]:
    flows = [r for r in ctx.rows_between(load.start, load.end)
             if r.client.pod == load.pod and r.bytes_to_client > 0]
    if not flows:
        return "pod", {"source": None}
    source = max(flows, key=lambda r: r.bytes_to_client)
    remote = remote_of(source.server)
    rtt = source.rtt_mean_us
    usual = _usual_rtt(ctx, load, source)
    detail = {"source": remote, "loss_rate": round(source.loss_rate, 4),
              "rtt_ms": round(rtt / 1000, 2) if rtt else None,
              "usual_rtt_ms": round(usual / 1000, 2) if usual else None}
    if remote in remotes_degraded:
        return "remote", detail
    if source.loss_rate >= LOSS_RATE or (rtt and usual and rtt >= RTT_FACTOR * usual):
        return "path", detail
    return "pod", detail


def _usual_rtt(ctx: Context, load: Event, source: FlowRow) -> float | None:
    """The path's RTT the hour before (:mod:`flowlens.analysis.baseline`), or, without history,
    the RTT other clients had to the same remote over the window."""
    path = path_of(source)
    if path is not None and (usual := history_rtt(ctx, path_of).get(path)) is not None:
        return usual
    others = [r for r in ctx.all_rows if remote_of(r.server) == remote_of(source.server)
              and r.client.pod != load.pod and r.rtt_mean_us]
    samples = sum(r.rtt_samples for r in others)
    return sum(r.rtt_sum_us for r in others) / samples if samples else None


def _finding(ctx: Context, cause: str, loads: list[dict]) -> Finding:
    pods = sorted({item["pod"] for item in loads})
    lost = sum(item["seconds_lost"] or 0 for item in loads)
    what = {"remote": "the weights' source was slow for every client", "path": "their network path degraded",
            "pod": "the network was not the bottleneck"}[cause]
    return Finding(
        kind="slow_model_load", severity="warning",
        title=f"{count(len(loads), 'model load')} slower than the node allows: {what}",
        window=ctx.window,
        where={"pods": pods, "nodes": sorted({item["node"] for item in loads}),
               "remotes": sorted({item["source"] for item in loads if item.get("source")})},
        evidence={"cause": cause, "loads": loads},
        impact={"seconds_lost": round(lost, 1)},
        recommendation=ADVICE[cause],
    )
