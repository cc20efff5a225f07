"""Degraded traffic, located: ``node_degradation``, ``remote_degradation``,
``workload_degradation``, ``network_degradation``, and the network health indicator.

Detection looks at short buckets of the window (:meth:`Context.buckets`): a flow is degraded
when it was in any bucket, lossy (:func:`flowlens.analysis.localize.degraded`) or slow (its RTT
far above its path's usual, :mod:`flowlens.analysis.baseline`), so a fault shows as soon as two
report intervals have it, whatever the window; the window only sets what the answer covers.
A cause is reported when its degraded flows together lost significantly, or were slow in at
least two flow-buckets. The degraded flows are then located
(:mod:`flowlens.analysis.localize`) against all the window's traffic, after setting aside what
other findings already explain: flows of nodes whose bandwidth allowance was exceeded
(``bandwidth_allowance_exceeded``) and flows between workloads whose connections time out
(``blocked_connections``). One finding per cause lists the paths and workloads it affects.

The network health indicator, per path (a zone pair, or a zone to a cloud service or the
internet) and per window, is **1** when a ``network_degradation`` finding covers the path: its
degraded flows span at least two nodes and two pods, and no narrower element (a node, a pod, a
workload, a remote service) explains them; else **0**. Each finding carries the numbers of
each of its paths (``evidence.per_path``). The overall indicator is 1 when any
path is 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flowlens.analysis.baseline import slow, usual_rtt
from flowlens.analysis.context import PATH_FIELDS, Context
from flowlens.analysis.localize import Cause, degraded, explain, key, lost, path_of, segments, significant
from flowlens.analysis.text import count
from flowlens.model.findings import Finding, PathHealth
from flowlens.model.queries import FlowRow

MIN_SLOW = 2  # slow flow-buckets that make a cause without losses worth reporting

KIND = {"node": "node_degradation", "remote": "remote_degradation", "pod": "workload_degradation",
        "workload": "workload_degradation", "zone": "network_degradation", "path": "network_degradation",
        "network": "network_degradation"}


@dataclass
class Detected:
    """What the buckets of the window showed: each degraded flow's rows in the buckets it
    degraded in, in how many of them it was slow (RTT far above its path's usual), and which
    flows were lossy in any."""

    usual_rtt: dict[str, float]
    rows: dict[tuple, list[FlowRow]] = field(default_factory=dict)
    slow: dict[tuple, int] = field(default_factory=dict)
    when: dict[tuple, list[float]] = field(default_factory=dict)
    lossy: set[tuple] = field(default_factory=set)

    def add(self, row: FlowRow, bucket: tuple[float, float]) -> None:
        is_lossy, is_slow = degraded(row), slow(row, self.usual_rtt.get(path_of(row) or ""))
        if not (is_lossy or is_slow):
            return
        self.rows.setdefault(key(row), []).append(row)
        self.when.setdefault(key(row), []).extend(bucket)
        self.slow[key(row)] = self.slow.get(key(row), 0) + is_slow
        if is_lossy:
            self.lossy.add(key(row))

    @property
    def slow_only(self) -> set[tuple]:
        """Flows found slow and never lossy."""
        return {k for k, n in self.slow.items() if n and k not in self.lossy}

    def significant(self, cause: Cause) -> bool:
        """Enough losses on its flows together, or slow flows in enough buckets."""
        keys = [key(row) for row in cause.flows]
        return significant(r for k in keys for r in self.rows.get(k, ())) or \
            sum(self.slow.get(k, 0) for k in keys) >= MIN_SLOW


def evaluate(ctx: Context, explained_nodes: set[str], blocked: set[tuple[str, str]]) -> tuple[list[PathHealth],
                                                                                               list[Finding]]:
    """Findings of located degradation, and the health of every path seen in the window."""
    detected = Detected(usual_rtt(ctx, path_of))
    for bucket in ctx.buckets():
        for row in ctx.rows_between(*bucket):
            detected.add(row, bucket)
    rows = [row for row in ctx.all_rows if not _explained(row, explained_nodes, blocked)]
    causes = explain(rows, set(detected.rows), detected.significant, detected.slow_only)
    findings = [_finding(ctx, cause, detected) for cause in causes]
    broken = {p for f in findings if f.kind == "network_degradation" and f.evidence["independent"]
              for p in f.where["paths"]}
    totals, flows = _by_path(ctx.grouped(PATH_FIELDS)), _by_path(ctx.all_rows)
    health = [PathHealth(p, int(p in broken), _path_evidence(p, totals[p], flows.get(p, []), detected))
              for p in sorted(totals)]
    return health, findings


def _explained(row: FlowRow, nodes: set[str], blocked: set[tuple[str, str]]) -> bool:
    if any(end.node in nodes for end in (row.client, row.server) if end.zone):
        return True
    client = f"{row.client.namespace}/{row.client.workload}"
    # A blocked pair is named by the server's workload, or by its Service when the block kept
    # the connection from ever reaching a backend.
    return any((client, f"{row.server.namespace}/{name}") in blocked
               for name in (row.server.workload, row.server.service) if name)


def _by_path(rows: list[FlowRow]) -> dict[str, list[FlowRow]]:
    out: dict[str, list[FlowRow]] = {}
    for row in rows:
        if path := path_of(row):
            out.setdefault(path, []).append(row)
    return out


def _path_evidence(path: str, totals: list[FlowRow], flows: list[FlowRow], detected: Detected) -> dict:
    """The path's numbers over every flow (``totals``: its rows grouped by PATH_FIELDS); its
    flows and degraded flows counted among the flows read one by one (``flows``)."""
    return {**_numbers(totals, detected.usual_rtt.get(path)), "flows": len(flows),
            "degraded_flows": sum(key(r) in detected.rows for r in flows)}


def _symptom(evidence: dict) -> str:
    """The losses, and the RTT when flows slowed down, in words."""
    parts = [f"{evidence['loss_rate']:.1%} of segments lost"]
    if evidence["slow_flows"] and evidence["rtt_ms"] is not None and evidence["usual_rtt_ms"] is not None:
        parts.append(f"RTT {evidence['rtt_ms']:g} ms against {evidence['usual_rtt_ms']:g} ms usually")
    return ", ".join(parts)


def _numbers(rows: list[FlowRow], usual: float | None) -> dict:
    """Losses, timeouts and RTT of some flows over the window, the RTT against ``usual``."""
    carried, gone = sum(segments(r) for r in rows), sum(lost(r) for r in rows)
    samples = sum(r.rtt_samples for r in rows)
    return {"segments": carried, "lost_segments": gone,
            "loss_rate": round(min(1.0, gone / carried), 5) if carried else 0.0, "rto": sum(r.rto for r in rows),
            "rtt_ms": round(sum(r.rtt_sum_us for r in rows) / samples / 1000, 2) if samples else None,
            "usual_rtt_ms": round(usual / 1000, 2) if usual is not None else None}


def _finding(ctx: Context, cause: Cause, detected: Detected) -> Finding:
    element, kind = cause.element, KIND[cause.element.kind]
    times = [t for row in cause.flows for t in detected.when.get(key(row), ())]
    independent = cause.independent
    paths, workloads = cause.paths, cause.workloads
    usual = min((detected.usual_rtt[p] for p in paths if p in detected.usual_rtt), default=None)
    evidence = {
        "suspect": str(element), "strength": cause.strength,
        "degraded_share": round(cause.share, 3), "rest_degraded_share": round(cause.rest, 3),
        "coverage": round(cause.coverage, 3), **_numbers(cause.flows, usual),
        "slow_flows": sum(detected.slow.get(key(row), 0) > 0 for row in cause.flows),
        "degraded_flows": len(cause.flows), "nodes": sorted(cause.nodes),
        "first_seen": min(times, default=ctx.start), "last_seen": max(times, default=ctx.end),
        "independent": independent,
        "per_path": {p: _numbers([r for r in cause.flows if path_of(r) == p], detected.usual_rtt.get(p))
                     for p in paths},
    }
    where = {"paths": paths, "workloads": workloads, "nodes": sorted(cause.nodes)}
    flows = count(len(cause.flows), "degraded flow")
    loss = _symptom(evidence)
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
             f"{count(len(cause.nodes), 'node')}: {loss}")
    return Finding(kind, severity, title, ctx.window, where, evidence,
                   {"note": "retransmissions and timeouts add latency to every request on these paths"},
                   "The problem is on the network between these ends, not in one workload, node or service: "
                   "check the path's routers, firewalls and links (on AWS, the Health Dashboard for the zones); "
                   "move latency-sensitive traffic off the path (same-zone routing) until it recovers."
                   if independent else
                   "Degraded flows on this path come from too few ends to tell the network from one node "
                   "or pod: watch whether other nodes' traffic on the path degrades too.")
