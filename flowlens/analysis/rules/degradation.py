"""The network health indicator and ``network_degradation`` / ``workload_degradation``.

flowlens defines the indicator openly, per path and per window:

- a *path* is a pair of availability zones for flows inside the cluster, or a cloud service
  (S3, SQS, ... in a region) or the internet for flows leaving it;
- a path is *degraded* when its loss rate (retransmitted plus out-of-order segments over the
  segments it carried, estimated from bytes) is at least 1% and three times the previous
  window's (over at least 200 segments and 5 losses), or when it has retransmission timeouts
  (5 or more, or any on at least 200 segments), or when more than 10% of its connections
  failed silently;
- its health is **1** when the degradation spans independent ends — flows of at least two
  workloads (two pods, for a path to a cloud service or the internet) on at least two nodes,
  with no single pod common to all of them — and the
  allowance-exceeded counters of the nodes involved stayed at zero (otherwise the nodes' own
  limits explain it); else **0**;
- the overall indicator is 1 when any path is 1.

Degradation confined to one workload (or one node) is a ``workload_degradation`` finding: the
network is not the suspect.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flowlens.analysis.context import Context
from flowlens.analysis.rules.bandwidth_allowance import node_allowance
from flowlens.model.findings import Finding, PathHealth
from flowlens.model.queries import FlowRow, TopBy

MSS = 1448
LOSS_RATE = 0.01
# Loss on a trickle (a few segments) says nothing about a path.
MIN_SEGMENTS = 200
MIN_LOST = 5
BASELINE_FACTOR = 3.0
FAILED_SHARE = 0.1


@dataclass
class PathStats:
    segments: float = 0.0
    lost: int = 0
    rto: int = 0
    attempts: int = 0
    failed: int = 0
    workloads: set[str] = field(default_factory=set)
    nodes: set[str] = field(default_factory=set)
    degraded_flows: list[set[str]] = field(default_factory=list)  # the cluster ends (pods or IPs) of each
    pods: set[str] = field(default_factory=set)

    @property
    def common_end(self) -> str | None:
        """An end every degraded flow shares: then one pod, not the network, is the suspect."""
        if not self.degraded_flows:
            return None
        shared = set.intersection(*self.degraded_flows)
        return min(shared) if shared else None

    @property
    def loss_rate(self) -> float:
        return self.lost / self.segments if self.segments else 0.0


def path_of(row: FlowRow) -> str | None:
    """A zone pair inside the cluster; outside it, the service (all zones reach it alike)."""
    zone = row.client.zone
    if not zone:
        return None
    if row.server.cloud_service:
        return f"→ {row.server.cloud_service} ({row.server.region or 'unknown region'})"
    if row.server.service and not row.server.zone:
        return None  # a ClusterIP nobody answered behind: a Service matter, not a path
    if row.server.zone:
        return " ↔ ".join(sorted({zone, row.server.zone})) if row.server.zone != zone else f"{zone} (intra-zone)"
    return "→ internet"


def gather(rows: list[FlowRow]) -> dict[str, PathStats]:
    paths: dict[str, PathStats] = {}
    for row in rows:
        path = path_of(row)
        if path is None:
            continue
        stats = paths.setdefault(path, PathStats())
        stats.segments += row.total_bytes / MSS + 2 * row.connection_attempts
        stats.lost += row.retransmitted_segments + row.received_out_of_order
        stats.rto += row.rto
        stats.attempts += row.connection_attempts
        # A refused connection is an answer from the far end; only silent failures are the path's.
        silent_failures = row.connections_failed if (row.rto or row.retransmitted_segments) else 0
        stats.failed += silent_failures
        if row.retransmitted_segments or row.received_out_of_order or row.rto or silent_failures:
            # A cloud service or internet host is by nature the shared end of its path: only
            # cluster ends can make the degradation one pod's own.
            cluster_ends = [end for end in (row.client, row.server) if end.zone]
            stats.degraded_flows.append({end.pod or end.ip for end in cluster_ends})
            stats.pods.update(end.pod for end in cluster_ends if end.pod)
            for end in (row.client, row.server):
                if end.workload:
                    stats.workloads.add(f"{end.namespace}/{end.workload}")
                if end.node:
                    stats.nodes.add(end.node)
    return paths


def evaluate(ctx: Context) -> tuple[list[PathHealth], list[Finding]]:
    current = gather(ctx.all_rows)
    span = ctx.end - ctx.start
    before = Context(ctx.store, ctx.inventory, ctx.events, ctx.start - span, ctx.start, ctx.bandwidth_scale)
    baseline = gather(before.store.flow_table(before.filter(), None, TopBy.BYTES, 3000))
    health, found = [], []
    allowance_cache: dict[str, int] = {}
    for path, stats in sorted(current.items()):
        base = baseline.get(path)
        lossy = (stats.segments >= MIN_SEGMENTS and stats.lost >= MIN_LOST and stats.loss_rate >= LOSS_RATE
                 and stats.loss_rate >= BASELINE_FACTOR * (base.loss_rate if base else 0))
        failing = stats.attempts and stats.failed / stats.attempts > FAILED_SHARE
        timeouts = stats.rto >= MIN_LOST or (stats.rto and stats.segments >= MIN_SEGMENTS)
        degraded = bool(lossy or timeouts or failing)
        explained = [n for n in sorted(stats.nodes) if _exceeded(ctx, n, allowance_cache)]
        leaves_cluster = path.startswith("→")
        spread = len(stats.pods) >= 2 if leaves_cluster else len(stats.workloads) >= 2
        independent = spread and len(stats.nodes) >= 2 and stats.common_end is None
        value = int(degraded and independent and not explained)
        evidence = {"loss_rate": round(stats.loss_rate, 5), "baseline_loss_rate": round(base.loss_rate, 5) if base
                    else None, "lost_segments": stats.lost, "segments": round(stats.segments),
                    "rto": stats.rto, "connection_attempts": stats.attempts, "connections_failed": stats.failed,
                    "workloads": sorted(stats.workloads), "nodes": sorted(stats.nodes),
                    "nodes_over_allowance": explained, "degraded": degraded,
                    "degraded_flows": len(stats.degraded_flows), "common_end": stats.common_end}
        health.append(PathHealth(path, value, evidence))
        if value:
            found.append(_network(ctx, path, evidence))
        elif degraded and not explained and stats.workloads and stats.common_end is not None:
            found.append(_workload(ctx, path, evidence))
    return health, found


def _exceeded(ctx: Context, node: str, cache: dict[str, int]) -> int:
    if node not in cache:
        cache[node] = sum(node_allowance(ctx, node)) if node in ctx.inventory.nodes else 0
    return cache[node]


def _network(ctx: Context, path: str, evidence: dict) -> Finding:
    return Finding(
        kind="network_degradation", severity="critical",
        title=f"The network path {path} is degrading traffic of {len(evidence['workloads'])} workloads on "
              f"{len(evidence['nodes'])} nodes",
        window=ctx.window, where={"paths": [path], "workloads": evidence["workloads"], "nodes": evidence["nodes"]},
        evidence=evidence,
        impact={"note": "retransmissions and timeouts add latency to every request on this path"},
        recommendation=("The problem is on the network between these ends, not in one workload or node: check "
                        "the path's routers, firewalls and links (on AWS, the AWS Health Dashboard for the zones); "
                        "move latency-sensitive traffic off the path (same-zone routing) until it recovers."),
    )


def _workload(ctx: Context, path: str, evidence: dict) -> Finding:
    return Finding(
        kind="workload_degradation", severity="warning",
        title=f"Losses on {path} all involve {evidence['common_end'] or ', '.join(evidence['workloads'])}",
        window=ctx.window, where={"paths": [path], "workloads": evidence["workloads"], "nodes": evidence["nodes"]},
        evidence=evidence, impact={},
        recommendation=("Only one workload or node is affected: look at that workload (its load, its pods' "
                        "resources, its node) before the network."),
    )
