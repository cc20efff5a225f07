"""``slow_inference``: inference latency (TTFT, end-to-end, inter-token, queue) that rose,
explained.

Latency comes from ``latency`` events (``flowlens probe --post``, ``flowlens signals --post``, a
scraper of vLLM, Triton or the runtime). For each pod or workload and metric, the window's mean
(weighted by requests) is slow when it is at least 1.5× the mean of the hour before and 100 ms
more. Its cause, from the other findings of the same diagnosis:

- ``network``: a finding about its traffic (its workload or pod named, or its node) says the
  network, a node, a remote, a block or the allowance is at fault; the finding is cited;
- ``workload``: none does, and its own flows were clean (their loss and RTT are the evidence):
  the server itself (queue, GPU, CPU) is the suspect, not the network.

Without history (no events the hour before) nothing is said: a baseline is needed to call
latency slow.
"""

from __future__ import annotations

from collections.abc import Iterable

from flowlens.analysis.baseline import HISTORY_SECONDS
from flowlens.analysis.context import Context
from flowlens.analysis.localize import lost, segments
from flowlens.analysis.text import count
from flowlens.collector.events import Event
from flowlens.model.findings import Finding
from flowlens.model.queries import FlowRow

SLOWER = 1.5
MIN_RISE_S = 0.1
# Findings that put the fault on the network's side of a workload's requests.
NETWORK_KINDS = ("network_degradation", "node_degradation", "remote_degradation", "workload_degradation",
                 "blocked_connections", "no_ready_endpoints", "bandwidth_allowance_exceeded")


def findings(ctx: Context, others: list[Finding]) -> list[Finding]:
    now = _means(ctx.events.between(ctx.start, ctx.end, "latency"))
    before = _means(ctx.events.between(ctx.start - HISTORY_SECONDS, ctx.start - 1e-6, "latency"))
    slow: dict[tuple[str, str], list[dict]] = {}
    for (target, metric), (value, requests, node) in sorted(now.items()):
        usual = before.get((target, metric))
        if usual is None or value < SLOWER * usual[0] or value - usual[0] < MIN_RISE_S:
            continue
        slow.setdefault((target, node), []).append({"metric": metric, "seconds": round(value, 3),
                                                    "usual_seconds": round(usual[0], 3), "requests": requests})
    return [_finding(ctx, target, node, metrics, others) for (target, node), metrics in sorted(slow.items())]


def _means(events: Iterable[Event]) -> dict[tuple[str, str], tuple[float, int, str]]:
    """(target, metric) → (mean seconds weighted by requests, requests, node); the target is
    ``namespace/workload``, or ``namespace/pod`` when no workload is named."""
    sums: dict[tuple[str, str], list] = {}
    for event in events:
        if event.value_s is None or event.metric is None:
            continue
        target = f"{event.namespace}/{event.workload or event.pod}"
        weight = max(event.count, 1)
        acc = sums.setdefault((target, event.metric), [0.0, 0, event.node])
        acc[0] += event.value_s * weight
        acc[1] += weight
    return {k: (total / n, n, node) for k, (total, n, node) in sums.items()}


def _touches(finding: Finding, target: str, node: str) -> bool:
    where = finding.where
    return target in (*where.get("workloads", []), *where.get("pods", [])) or (bool(node) and
                                                                               node in where.get("nodes", []))


def _finding(ctx: Context, target: str, node: str, metrics: list[dict], others: list[Finding]) -> Finding:
    related = [f for f in others if f.kind in NETWORK_KINDS and _touches(f, target, node)]
    worst = max(metrics, key=lambda m: m["seconds"] / max(m["usual_seconds"], 1e-9))
    said = f"{worst['metric']} {worst['seconds']:g} s against {worst['usual_seconds']:g} s the hour before"
    if related:
        cause = "network"
        because = "; ".join(f"{f.kind}: {f.title}" for f in related)
        title = f"Inference on {target} is slower ({said}): {because}"
        advice = "Follow the cited finding: the network side of this workload's requests is what slowed it."
        evidence = {"cause": cause, "metrics": metrics, "explained_by": [f.kind for f in related]}
    else:
        cause = "workload"
        rows = [r for r in ctx.all_rows if _is(r, target)]
        carried, gone = sum(segments(r) for r in rows), sum(lost(r) for r in rows)
        samples = sum(r.rtt_samples for r in rows)
        title = f"Inference on {target} is slower ({said}); its network was clean: the server itself is the suspect"
        advice = ("The requests' flows lost nothing notable and their RTT held: look at the server (queue length, "
                  "GPU and CPU use, batch size, replicas) before the network.")
        evidence = {"cause": cause, "metrics": metrics, "flows": len(rows),
                    "loss_rate": round(min(1.0, gone / carried), 5) if carried else 0.0,
                    "rtt_ms": round(sum(r.rtt_sum_us for r in rows) / samples / 1000, 2) if samples else None}
    where = {"workloads": [target], "nodes": [node] if node else []}
    return Finding("slow_inference", "warning", title, ctx.window, where, evidence,
                   {"requests": sum(m["requests"] for m in metrics),
                    "note": f"{count(len(metrics), 'latency metric')} above the usual"}, advice)


def _is(row: FlowRow, target: str) -> bool:
    namespace, name = target.split("/", 1)
    return any(end.namespace == namespace and name in (end.workload, end.pod) for end in (row.client, row.server))
