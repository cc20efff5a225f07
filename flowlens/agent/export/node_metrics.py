"""The node's metric families, made of the sampling's readings (:mod:`flowlens.agent.sampling.node`):
interfaces, qdiscs, the TCP MIB, NIC allowances, and the reference product's pod family.
"""

from __future__ import annotations

from prometheus_client.core import Metric

from flowlens.agent.export.exporter import family
from flowlens.agent.sampling.node import NamespaceCounters, allowance_readings, pod_interfaces
from flowlens.kernel.ethtool import ENA_ALLOWANCE_STATS


def node_families(readings: list[NamespaceCounters], node: str, instance_id: str,
                  allowance_qdiscs: dict[str, tuple[str, str]]) -> list[Metric]:
    fams = {name: family(name) for name in _NODE_METRICS}
    host = next((r for r in readings if r.is_host), None)
    for reading in readings:
        _interfaces(fams, reading)
        _qdiscs(fams, reading)
        if reading.mib is not None:
            fams["flowlens_tcp_active_opens_total"].add_metric([reading.label], reading.mib.active_opens)
            fams["flowlens_tcp_passive_opens_total"].add_metric([reading.label], reading.mib.passive_opens)
            fams["flowlens_tcp_retransmitted_segments_total"].add_metric([reading.label], reading.mib.retrans_segs)
        if not reading.is_host:
            _pod_family(fams, reading, host, node, instance_id)
    if host is not None:
        _allowances(fams, host, node, instance_id, allowance_qdiscs)
    return list(fams.values())


_NODE_METRICS = (
    "flowlens_interface_receive_bytes_total", "flowlens_interface_transmit_bytes_total",
    "flowlens_interface_receive_packets_total", "flowlens_interface_transmit_packets_total",
    "flowlens_interface_receive_dropped_total", "flowlens_interface_transmit_dropped_total",
    "flowlens_qdisc_drops_total", "flowlens_qdisc_overlimits_total", "flowlens_qdisc_bytes_total",
    "flowlens_qdisc_packets_total", "flowlens_tcp_active_opens_total", "flowlens_tcp_passive_opens_total",
    "flowlens_tcp_retransmitted_segments_total", "flowlens_nic_allowance_exceeded_total",
    "ingress_bytes", "egress_bytes", "ingress_packets", "egress_packets", "ingress_flow", "egress_flow",
    *ENA_ALLOWANCE_STATS,
)


def _interfaces(fams: dict[str, Metric], reading: NamespaceCounters) -> None:
    for link in reading.links:
        labels = [reading.label, link.name, link.kind]
        fams["flowlens_interface_receive_bytes_total"].add_metric(labels, link.rx_bytes)
        fams["flowlens_interface_transmit_bytes_total"].add_metric(labels, link.tx_bytes)
        fams["flowlens_interface_receive_packets_total"].add_metric(labels, link.rx_packets)
        fams["flowlens_interface_transmit_packets_total"].add_metric(labels, link.tx_packets)
        fams["flowlens_interface_receive_dropped_total"].add_metric(labels, link.rx_dropped)
        fams["flowlens_interface_transmit_dropped_total"].add_metric(labels, link.tx_dropped)


def _qdiscs(fams: dict[str, Metric], reading: NamespaceCounters) -> None:
    names = {link.ifindex: link.name for link in reading.links}
    for q in reading.qdiscs:
        if q.kind == "noqueue":
            continue
        labels = [reading.label, names.get(q.ifindex, str(q.ifindex)), q.kind, q.handle, q.parent]
        fams["flowlens_qdisc_drops_total"].add_metric(labels, q.drops)
        fams["flowlens_qdisc_overlimits_total"].add_metric(labels, q.overlimits)
        fams["flowlens_qdisc_bytes_total"].add_metric(labels, q.bytes)
        fams["flowlens_qdisc_packets_total"].add_metric(labels, q.packets)


def _pod_family(fams: dict[str, Metric], reading: NamespaceCounters, host: NamespaceCounters | None,
                node: str, instance_id: str) -> None:
    for iface, link in pod_interfaces(reading, host):
        labels = [instance_id, iface, reading.label, "", node]
        fams["ingress_bytes"].add_metric(labels, link.rx_bytes)
        fams["egress_bytes"].add_metric(labels, link.tx_bytes)
        fams["ingress_packets"].add_metric(labels, link.rx_packets)
        fams["egress_packets"].add_metric(labels, link.tx_packets)
        if reading.mib is not None:
            fams["ingress_flow"].add_metric(labels, reading.mib.passive_opens)
            fams["egress_flow"].add_metric(labels, reading.mib.active_opens)


def _allowances(fams: dict[str, Metric], host: NamespaceCounters, node: str, instance_id: str,
                allowance_qdiscs: dict[str, tuple[str, str]]) -> None:
    for nic, driver, stat, value in allowance_readings(host, allowance_qdiscs):
        fams["flowlens_nic_allowance_exceeded_total"].add_metric([nic, driver, stat], value)
        fams[stat].add_metric([instance_id, nic, node], value)
