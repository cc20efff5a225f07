"""Latency measurements as the collector's ``latency`` events (see
:mod:`flowlens.collector.events`): one per metric, a mean over some requests, of a pod or a
workload, so that the diagnosis can tell whether inference slowed down and why."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flowlens.signals.probe import ProbeSummary
from flowlens.signals.scrape import Reading

METRICS = ("ttft", "e2e", "itl", "queue")


@dataclass(frozen=True, slots=True)
class Target:
    """Whose latency it is: a workload, or a pod (namespace given), and its node when known."""

    namespace: str = ""
    workload: str = ""
    pod: str = ""
    node: str = ""


def latency_events(means: dict[str, tuple[float, int]], start: float, end: float,
                   target: Target) -> list[dict[str, Any]]:
    """One event per metric of ``means`` (metric → mean seconds, requests)."""
    return [{"kind": "latency", "namespace": target.namespace, "workload": target.workload, "pod": target.pod,
             "node": target.node, "start": start, "end": end, "metric": metric, "value_s": mean, "count": requests}
            for metric, (mean, requests) in sorted(means.items()) if metric in METRICS and requests > 0]


def from_probe(summary: ProbeSummary) -> dict[str, tuple[float, int]]:
    """A probe run's mean TTFT, end-to-end and inter-token latency over its successful requests."""
    ok = summary.requests - summary.failures
    return {metric: (stats["mean"], ok) for metric, stats in
            (("ttft", summary.ttft_s), ("e2e", summary.e2e_s), ("itl", summary.itl_s)) if stats}


def from_reading(reading: Reading) -> dict[str, tuple[float, int]]:
    """The means a scrape (or the difference of two) gives, for the metrics events carry."""
    return {name: (mean, int(reading.counts.get(name, 0))) for name in METRICS
            if (mean := reading.mean(name)) is not None}
