"""Degraded traffic, located: ``node_degradation``, ``remote_degradation``,
``workload_degradation``, ``network_degradation``, and the network health indicator.

Detection looks at short buckets of the window (:meth:`Context.buckets`), so a fault shows
as soon as two report intervals have it, whatever the window; the window only sets what the
answer covers. In each bucket the degraded flows are located (:mod:`flowlens.analysis.localize`)
after setting aside what other findings already explain: flows of nodes whose bandwidth
allowance was exceeded (``bandwidth_allowance_exceeded``) and flows between workloads whose
connections time out (``blocked_connections``). One finding per cause, over all the buckets
where it showed, lists the paths and workloads it affects.

The network health indicator, per path (a zone pair, or a zone to a cloud service or the
internet) and per window, is **1** when a ``network_degradation`` finding covers the path: its
degraded flows span at least two nodes and two pods, and no narrower element (a node, a pod, a
workload, a remote service) explains them; else **0**. The overall indicator is 1 when any
path is 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flowlens.analysis.context import Context
from flowlens.analysis.localize import Cause, degraded, localize, lost, network_cause, path_of, segments
from flowlens.analysis.text import count
from flowlens.model.findings import Finding, PathHealth
from flowlens.model.queries import FlowRow

KIND = {"node": "node_degradation", "remote": "remote_degradation", "pod": "workload_degradation",
        "workload": "workload_degradation", "zone": "network_degradation", "path": "network_degradation"}


@dataclass
class _Seen:
    """One cause over the buckets it showed in."""

    cause: Cause
    buckets: list[tuple[float, float]] = field(default_factory=list)
    lost: int = 0
    segments: int = 0
    rto: int = 0
    flows: dict[tuple, FlowRow] = field(default_factory=dict)
    nodes: set[str] = field(default_factory=set)
    pods: set[str] = field(default_factory=set)

    def add(self, cause: Cause, bucket: tuple[float, float]) -> None:
        if cause.strength > self.cause.strength:
            self.cause = cause
        self.buckets.append(bucket)
        for row in cause.flows:
            self.lost += lost(row)
            self.segments += segments(row)
            self.rto += row.rto
            self.flows[(row.client.ip, row.server.ip, row.server_port)] = row
        self.nodes |= cause.nodes
        self.pods |= cause.pods


def evaluate(ctx: Context, explained_nodes: set[str], blocked: set[tuple[str, str]]) -> tuple[list[PathHealth],
                                                                                               list[Finding]]:
    """Findings of located degradation, and the health of every path seen in the window."""
    seen: dict[tuple[str, str], _Seen] = {}
    for bucket in ctx.buckets():
        rows = [row for row in ctx.rows_between(*bucket) if not _explained(row, explained_nodes, blocked)]
        causes = localize(rows)
        leftover = network_cause(rows, causes)
        for cause in [*causes, *([leftover] if leftover else [])]:
            key = (KIND[cause.element.kind], cause.element.name)
            seen.setdefault(key, _Seen(cause)).add(cause, bucket)
    findings = [_finding(ctx, kind, item) for (kind, _), item in sorted(seen.items())]
    broken = {p for f in findings if f.kind == "network_degradation" and f.evidence["independent"]
              for p in f.where["paths"]}
    paths = {p for row in ctx.all_rows if (p := path_of(row))}
    health = [PathHealth(p, int(p in broken), _path_evidence(ctx, p)) for p in sorted(paths)]
    return health, findings


def _explained(row: FlowRow, nodes: set[str], blocked: set[tuple[str, str]]) -> bool:
    if any(end.node in nodes for end in (row.client, row.server) if end.zone):
        return True
    pair = (f"{row.client.namespace}/{row.client.workload}", f"{row.server.namespace}/{row.server.workload}")
    return pair in blocked


def _path_evidence(ctx: Context, path: str) -> dict:
    rows = [row for row in ctx.all_rows if path_of(row) == path]
    carried, gone = sum(segments(r) for r in rows), sum(lost(r) for r in rows)
    return {"segments": carried, "lost_segments": gone, "loss_rate": round(min(1.0, gone / carried), 5)
            if carried else 0.0, "rto": sum(r.rto for r in rows), "flows": len(rows),
            "degraded_flows": sum(degraded(r) for r in rows)}


def _finding(ctx: Context, kind: str, seen: _Seen) -> Finding:
    cause, element = seen.cause, seen.cause.element
    paths = sorted({p for row in seen.flows.values() if (p := path_of(row))})
    workloads = sorted({f"{e.namespace}/{e.workload}" for row in seen.flows.values()
                        for e in (row.client, row.server) if e.workload})
    independent = len(seen.nodes) >= 2 and len(seen.pods) >= 2
    evidence = {
        "suspect": str(element), "strength": cause.strength,
        "degraded_share": round(cause.share, 3), "rest_degraded_share": round(cause.rest, 3),
        "coverage": round(cause.coverage, 3), "lost_segments": seen.lost, "segments": seen.segments,
        "loss_rate": round(min(1.0, seen.lost / seen.segments), 5) if seen.segments else 0.0,
        "rto": seen.rto, "degraded_flows": len(seen.flows), "nodes": sorted(seen.nodes),
        "first_seen": min(b[0] for b in seen.buckets), "last_seen": max(b[1] for b in seen.buckets),
        "independent": independent,
    }
    where = {"paths": paths, "workloads": workloads, "nodes": sorted(seen.nodes)}
    flows = count(len(seen.flows), "degraded flow")
    loss = f"{evidence['loss_rate']:.1%} of segments lost"
    if kind == "node_degradation":
        return Finding(kind, "warning", f"Node {element.name} loses traffic: {flows}, {loss}", ctx.window,
                       where, evidence, {"paths": paths},
                       "Only this node's traffic degrades while other nodes' is clean: look at the node (its "
                       "network interface and uplink, its ENA statistics, its load) and move its pods if it "
                       "persists; the network between zones is not the suspect.")
    if kind == "remote_degradation":
        return Finding(kind, "warning", f"{element.name} is slow or lossy for every client: {flows}, {loss}",
                       ctx.window, {**where, "remotes": [element.name]}, evidence, {"paths": paths},
                       "Every client of this service sees it degrade, from every node: the far side (the "
                       "service, its endpoint, or the way out to it) is the suspect, not the cluster. Check the "
                       "service's health and throttling (on AWS: the Health Dashboard, S3 request rates); "
                       "retry with backoff and spread reads.")
    if kind == "workload_degradation":
        return Finding(kind, "warning", f"Losses concentrate on {element}: {flows}, {loss}", ctx.window,
                       where, evidence, {},
                       "Only this workload's traffic degrades, on every node it runs on: look at the workload "
                       "(its load, its pods' CPU and memory, its connection handling) before the network.")
    severity = "critical" if independent else "warning"
    title = (f"The network ({element.name}) degrades traffic of {count(len(workloads), 'workload')} on "
             f"{count(len(seen.nodes), 'node')}: {loss}")
    return Finding(kind, severity, title, ctx.window, where, evidence,
                   {"note": "retransmissions and timeouts add latency to every request on these paths"},
                   "The problem is on the network between these ends, not in one workload, node or service: "
                   "check the path's routers, firewalls and links (on AWS, the Health Dashboard for the zones); "
                   "move latency-sensitive traffic off the path (same-zone routing) until it recovers."
                   if independent else
                   "Degraded flows on this path come from too few ends to tell the network from one node "
                   "or pod: watch whether other nodes' traffic on the path degrades too.")
