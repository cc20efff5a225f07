"""``bandwidth_allowance_exceeded``: a node's bandwidth allowance was exceeded while its pods
downloaded (model weights, typically), with the receive-side losses on those flows and what it
cost the model loads."""

from __future__ import annotations

from datetime import timedelta

from flowlens.analysis.context import Context
from flowlens.analysis.text import count
from flowlens.model.findings import Finding
from flowlens.model.queries import NodeSubject


def node_allowance(ctx: Context, node: str) -> tuple[int, int]:
    """(bw_in, bw_out) allowance-exceeded counts of a node over the window."""
    span = max(ctx.end - ctx.start, 1.0)
    series = ctx.store.timeseries(ctx.filter(), NodeSubject(node), timedelta(seconds=span))
    bw_in = sum(p.allowance.bw_in for p in series.points if p.allowance)
    bw_out = sum(p.allowance.bw_out for p in series.points if p.allowance)
    return bw_in, bw_out


def findings(ctx: Context) -> tuple[list[Finding], set[str]]:
    """The findings, and the nodes whose allowance explains their flows' losses."""
    out, nodes = [], set()
    for name, node in sorted(ctx.inventory.nodes.items()):
        bw_in, bw_out = node_allowance(ctx, name)
        if not bw_in and not bw_out:
            continue
        nodes.add(name)
        out.append(_finding(ctx, name, node.instance_type, node.zone, bw_in, bw_out))
    return out, nodes


def _finding(ctx: Context, node: str, instance_type: str, zone: str, bw_in: int, bw_out: int) -> Finding:
    downloads = [r for r in ctx.all_rows if r.client.node == node and r.bytes_to_client > 0]
    downloads.sort(key=lambda r: -(r.received_out_of_order + r.retransmitted_segments))
    top = downloads[:5]
    pods = sorted({r.client.pod for r in top if r.client.pod})
    loads = [e for e in ctx.events.between(ctx.start, ctx.end, "model_load") if e.node == node]
    gbps = ctx.bandwidth.of(instance_type)
    allowance_mbit = ctx.bandwidth.mbit(instance_type)
    impact: dict[str, object] = {}
    if loads:
        impact["model_loads"] = [{"pod": e.pod, "seconds": round(e.seconds, 1), "bytes": e.bytes} for e in loads]
        slowest = max(loads, key=lambda e: e.seconds)
        if allowance_mbit and slowest.bytes:
            floor = slowest.bytes * 8 / (allowance_mbit * 1e6)
            impact["seconds_at_allowance"] = round(floor, 1)
            impact["seconds_beyond_allowance"] = round(max(0.0, slowest.seconds - floor), 1)
    better = ctx.bandwidth.larger_types(instance_type)
    if better and loads and allowance_mbit:
        target, target_gbps = better[0]
        faster = max(e.bytes for e in loads) * 8 / (target_gbps * 1000 * 1e6)
        impact[f"seconds_on_{target}"] = round(faster, 1)
    recommendation = (f"The node's network allowance ({instance_type}: up to {gbps:g} Gbps) is the bottleneck: "
                      if gbps else "The node's network allowance is the bottleneck: ")
    if better:
        names = ", ".join(f"{t} ({g:g} Gbps)" for t, g in better[:2])
        recommendation += f"use a node type with more bandwidth ({names}), "
    recommendation += ("or stagger pod start-ups, cache the weights on the node, or read them with fewer "
                       "parallel streams so loads do not overrun the allowance together.")
    direction = "inbound" if bw_in >= bw_out else "outbound"
    return Finding(
        kind="bandwidth_allowance_exceeded", severity="critical" if loads else "warning",
        title=f"{node} exceeded its {direction} bandwidth allowance"
              + (f" while {count(len(loads), 'pod')} loaded model weights" if loads else ""),
        window=ctx.window,
        where={"nodes": [node], "zones": [zone] if zone else [], "pods": pods,
               "workloads": sorted({f"{r.client.namespace}/{r.client.workload}" for r in top if r.client.workload}),
               "peers": sorted({r.server.cloud_service or r.server.workload or r.server.ip for r in top})},
        evidence={"bw_in_allowance_exceeded": bw_in, "bw_out_allowance_exceeded": bw_out,
                  "instance_type": instance_type, "allowance_mbit_per_s": allowance_mbit,
                  "flows": [{"pod": r.client.pod, "peer": r.server.cloud_service or r.server.ip,
                             "category": r.category, "bytes_received": r.bytes_to_client,
                             "received_out_of_order": r.received_out_of_order,
                             "retransmitted_segments": r.retransmitted_segments} for r in top]},
        impact=impact, recommendation=recommendation,
    )
