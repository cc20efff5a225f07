"""The agent's /metrics: every metric flowlens exports, described in one table.

Values are true counters that only ever grow (never per-scrape deltas, which break as soon as
two scrapers read the same agent). After each cycle the exporter freezes a snapshot of metric
families; a scrape only serialises that snapshot, so it is cheap, never fails half-way, and
every scraper between two cycles reads identical values.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    UnknownMetricFamily,
)
from prometheus_client.registry import Collector

from flowlens.agent.export.series import RTT_BUCKETS, FlowSeries, SeriesTotals
from flowlens.model.flows import FlowKey
from flowlens.model.vocabulary import ALLOWANCE_STATS, CONNECTION_RESULTS, FLOW_COUNTERS

FLOW_LABELS = ("netns", "local_ip", "remote_ip", "server_port", "role")
OTHER = "other"


@dataclass(frozen=True, slots=True)
class MetricSpec:
    name: str
    kind: str  # counter | gauge | histogram | untyped
    labels: tuple[str, ...]
    help: str


def _flow(name: str, kind: str, help_text: str, extra: tuple[str, ...] = ()) -> MetricSpec:
    return MetricSpec(name, kind, FLOW_LABELS + extra, help_text)


_REF_IFACE = ("instance_id", "iface", "pod", "namespace", "node")
_REF_ENA = ("instance_id", "eni", "node")

# The one table of exported metrics; docs/metrics.md is generated from it.
METRICS: tuple[MetricSpec, ...] = (
    *(_flow(c.metric, "counter", f"{c.help} ({c.source})") for c in FLOW_COUNTERS if c.metric),
    _flow("flowlens_flow_connections_total", "counter",
          "Connections by how they ended: "
          + "; ".join(f"{c.result}: {c.help[0].lower()}{c.help[1:].rstrip('.')}" for c in CONNECTION_RESULTS)
          + ". Attempts = refused + timed_out + the attempts established.", ("result",)),
    _flow("flowlens_flow_rtt_seconds", "histogram",
          "Smoothed RTT, one sample per socket per interval it was alive in."),
    _flow("flowlens_flow_active_sockets", "gauge", "Sockets of the flow open at the end of the last cycle."),
    MetricSpec("flowlens_agent_collect_seconds", "histogram", (), "Wall time of one collection cycle."),
    MetricSpec("flowlens_agent_collect_cpu_seconds_total", "counter", (), "CPU time spent in collection cycles."),
    MetricSpec("flowlens_agent_sockets", "gauge", (), "TCP sockets seen in the last cycle, all namespaces."),
    MetricSpec("flowlens_agent_namespaces", "gauge", (), "Network namespaces watched."),
    MetricSpec("flowlens_agent_namespace_errors", "gauge", (),
               "Network namespaces found but not readable (see the agent log)."),
    MetricSpec("flowlens_agent_events_lost_total", "counter", (),
               "Sockets whose destroy event was lost: their counters after their last dump are missing."),
    MetricSpec("flowlens_agent_event_overflows_total", "counter", (),
               "Times the kernel dropped socket-destroy events (ENOBUFS); the agent resynchronises."),
    MetricSpec("flowlens_agent_destroy_events_total", "counter", (),
               "Socket-destroy events read between cycles (each is one socket's final counters)."),
    MetricSpec("flowlens_agent_unattributed_connections_total", "counter", ("netns",),
               "Connections the namespace's kernel opened (TcpActiveOpens + TcpPassiveOpens) that never "
               "reached the agent, in a dump or a destroy event: their counters are missing from the flows."),
    MetricSpec("flowlens_agent_unattributed_estimated_bytes_total", "counter", ("netns",),
               "Estimate of the payload bytes of the unattributed connections: their number times the "
               "namespace's mean bytes per counted connection."),
    MetricSpec("flowlens_agent_namespace_timeouts_total", "counter", (),
               "Namespace polls abandoned because the kernel did not answer in time (the namespace is "
               "counted again from the next cycle)."),
    MetricSpec("flowlens_agent_stalls_total", "counter", (),
               "Times the watchdog found the agent stuck, without cycles, or abandoning namespaces."),
    MetricSpec("flowlens_agent_healthy", "gauge", (), "1 while /healthz answers ok, 0 while it reports a problem."),
    MetricSpec("flowlens_agent_reports_sent_total", "counter", (), "Reports the collector took (duplicates included)."),
    MetricSpec("flowlens_agent_reports_refused_total", "counter", ("status",),
               "Reports the collector refused, by HTTP status: they stay in the spool and are sent again."),
    MetricSpec("flowlens_agent_report_failures_total", "counter", (),
               "Attempts that found the collector unreachable or failing (5xx)."),
    MetricSpec("flowlens_agent_spool_reports", "gauge", (), "Reports waiting in the spool."),
    MetricSpec("flowlens_agent_spool_bytes", "gauge", (), "Bytes of the reports waiting in the spool."),
    MetricSpec("flowlens_agent_spool_dropped_total", "counter", (),
               "Undelivered reports dropped, oldest first, to keep the spool under its bound."),
    MetricSpec("flowlens_agent_service_lookups_total", "counter", ("result",),
               "Conntrack lookups of connections to a ClusterIP, by result: resolved (to the backend reached) "
               "or unresolved (no NAT entry, or conntrack failed: the flow keeps the ClusterIP)."),
    MetricSpec("flowlens_agent_flow_series", "gauge", (), "Flows that have series of their own."),
    MetricSpec("flowlens_agent_cycles_total", "counter", (), "Collection cycles completed."),
    MetricSpec("flowlens_interface_receive_bytes_total", "counter", ("netns", "iface", "kind"),
               "Bytes received by an interface (IFLA_STATS64)."),
    MetricSpec("flowlens_interface_transmit_bytes_total", "counter", ("netns", "iface", "kind"),
               "Bytes transmitted by an interface."),
    MetricSpec("flowlens_interface_receive_packets_total", "counter", ("netns", "iface", "kind"),
               "Packets received by an interface."),
    MetricSpec("flowlens_interface_transmit_packets_total", "counter", ("netns", "iface", "kind"),
               "Packets transmitted by an interface."),
    MetricSpec("flowlens_interface_receive_dropped_total", "counter", ("netns", "iface", "kind"),
               "Packets dropped on receive by an interface."),
    MetricSpec("flowlens_interface_transmit_dropped_total", "counter", ("netns", "iface", "kind"),
               "Packets dropped on transmit by an interface."),
    MetricSpec("flowlens_qdisc_drops_total", "counter", ("netns", "iface", "qdisc", "handle", "parent"),
               "Packets dropped by a queueing discipline (a shaper's drops)."),
    MetricSpec("flowlens_qdisc_overlimits_total", "counter", ("netns", "iface", "qdisc", "handle", "parent"),
               "Times a queueing discipline was over its limit (throttled)."),
    MetricSpec("flowlens_qdisc_bytes_total", "counter", ("netns", "iface", "qdisc", "handle", "parent"),
               "Bytes sent through a queueing discipline."),
    MetricSpec("flowlens_qdisc_packets_total", "counter", ("netns", "iface", "qdisc", "handle", "parent"),
               "Packets sent through a queueing discipline."),
    MetricSpec("flowlens_tcp_active_opens_total", "counter", ("netns",),
               "TCP active opens of a namespace (TcpActiveOpens)."),
    MetricSpec("flowlens_tcp_passive_opens_total", "counter", ("netns",),
               "TCP passive opens of a namespace (TcpPassiveOpens)."),
    MetricSpec("flowlens_tcp_retransmitted_segments_total", "counter", ("netns",),
               "TCP segments retransmitted in a namespace (TcpRetransSegs), counted since agent start."),
    MetricSpec("flowlens_nic_allowance_exceeded_total", "counter", ("iface", "driver", "allowance"),
               "ENA allowance-exceeded statistics (ethtool -S) of a NIC."),
    MetricSpec("ingress_bytes", "untyped", _REF_IFACE,
               "Reference-compatible: bytes received by a pod (its host-side veth's transmit), a counter."),
    MetricSpec("egress_bytes", "untyped", _REF_IFACE, "Reference-compatible: bytes sent by a pod, a counter."),
    MetricSpec("ingress_packets", "untyped", _REF_IFACE, "Reference-compatible: packets received by a pod."),
    MetricSpec("egress_packets", "untyped", _REF_IFACE, "Reference-compatible: packets sent by a pod."),
    MetricSpec("ingress_flow", "untyped", _REF_IFACE,
               "Reference-compatible: TCP connections accepted in the pod's namespace (TcpPassiveOpens)."),
    MetricSpec("egress_flow", "untyped", _REF_IFACE,
               "Reference-compatible: TCP connections opened from the pod's namespace (TcpActiveOpens)."),
    *(MetricSpec(name, "untyped", _REF_ENA, f"Reference-compatible: ENA {name} statistic, a counter.")
      for name in ALLOWANCE_STATS),
)
SPECS = {spec.name: spec for spec in METRICS}

_FAMILY_TYPES = {"counter": CounterMetricFamily, "gauge": GaugeMetricFamily,
                 "histogram": HistogramMetricFamily, "untyped": UnknownMetricFamily}


def family(name: str) -> Metric:
    spec = SPECS[name]
    return _FAMILY_TYPES[spec.kind](name, spec.help, labels=spec.labels)


def flow_labels(key: FlowKey) -> list[str]:
    return [key.netns, key.local_ip, key.remote_ip, str(key.server_port), key.role]


def remainder_labels(netns: str) -> list[str]:
    return [netns, "", OTHER, "", ""]


def _rtt_buckets(totals: SeriesTotals) -> list[tuple[str, float]]:
    out, running = [], 0
    for bound, n in zip((*RTT_BUCKETS, float("inf")), totals.rtt_buckets, strict=True):
        running += n
        out.append(("+Inf" if bound == float("inf") else repr(bound), running))
    return out


def flow_families(series: FlowSeries) -> list[Metric]:
    """The per-flow families, own series first, then each namespace's remainder."""
    fams = {spec.name: family(spec.name) for spec in METRICS if spec.labels[:5] == FLOW_LABELS}
    counters = [(c.name, fams[c.metric]) for c in FLOW_COUNTERS if c.metric]
    connections = fams["flowlens_flow_connections_total"]
    for owner, totals in series.exported():
        labels = remainder_labels(owner) if isinstance(owner, str) else flow_labels(owner)
        c = totals.counters
        for name, fam in counters:
            fam.add_metric(labels, getattr(c, name))
        for result in CONNECTION_RESULTS:
            connections.add_metric([*labels, result.result], getattr(c, result.name))
        fams["flowlens_flow_rtt_seconds"].add_metric(labels, _rtt_buckets(totals), totals.rtt_sum_seconds)
        fams["flowlens_flow_active_sockets"].add_metric(labels, totals.active_sockets)
    return list(fams.values())


class SnapshotCollector(Collector):
    """A prometheus_client collector that serves the last frozen snapshot."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._families: list[Metric] = []
        self.scrapes = 0  # how many times the snapshot was read: series settle on it

    def publish(self, families: Iterable[Metric]) -> None:
        frozen = list(families)
        with self._lock:
            self._families = frozen

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            families = self._families
            self.scrapes += 1
        return iter(families)


def metrics_markdown() -> str:
    """The metrics reference (docs/metrics.md), generated from :data:`METRICS`."""
    lines = ["# flowlens agent metrics", "",
             "Generated from `flowlens/agent/export/exporter.py` (`flowlens metrics-doc`); do not edit by hand.", "",
             "| metric | type | labels | meaning |", "|---|---|---|---|"]
    for spec in METRICS:
        labels = ", ".join(f"`{label}`" for label in spec.labels) or "—"
        lines.append(f"| `{spec.name}` | {spec.kind} | {labels} | {spec.help} |")
    return "\n".join(lines) + "\n"
