"""Node counters: interfaces, qdiscs and the TCP MIB of each namespace, NIC allowances.

Read once per cycle next to the flows. Pod interfaces are attributed to their namespace by
pairing veth ends (each end names the other's ifindex). The reference product's metric
family is produced from the same readings: a pod's ``ingress_bytes`` is what its veth
received, its ``ingress_flow`` its namespace's passive TCP opens. ``bw_*_allowance_exceeded``
come from ENA's ethtool statistics or, where a node has no ENA (the lab, a test bench), from
the drops of a shaper qdisc named in ``allowance_qdiscs``. The metric families made of these
readings are :mod:`flowlens.agent.export.node_metrics`'s.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from flowlens.kernel.ethtool import ENA_ALLOWANCE_STATS, EthtoolStats, allowance_exceeded
from flowlens.kernel.rtnetlink import RouteNetlink
from flowlens.kernel.snmp import TcpMibReader
from flowlens.model.counters import LinkCounters, QdiscCounters, TcpMib
from flowlens.model.errors import ConfigError, FlowlensError

log = logging.getLogger(__name__)


@dataclass(slots=True)
class NamespaceCounters:
    label: str
    is_host: bool
    links: list[LinkCounters] = field(default_factory=list)
    qdiscs: list[QdiscCounters] = field(default_factory=list)
    mib: TcpMib | None = None
    nics: dict[str, tuple[str, dict[str, int]]] = field(default_factory=dict)  # iface -> (driver, stats)


class NodeReaders:
    """The counter readers of one namespace; construct them inside it."""

    def __init__(self, is_host: bool) -> None:
        self.route = RouteNetlink()
        self.mib = TcpMibReader()
        self.ethtool = EthtoolStats() if is_host else None

    def read(self, label: str, is_host: bool) -> NamespaceCounters:
        out = NamespaceCounters(label, is_host)
        out.links = self.route.links()
        out.qdiscs = self.route.qdiscs()
        out.mib = self.mib.read()
        if self.ethtool is not None:
            for link in out.links:
                if link.kind or link.name == "lo":
                    continue  # virtual devices have no allowance statistics
                stats = allowance_exceeded(self.ethtool.stats(link.name))
                if stats:
                    out.nics[link.name] = (self.ethtool.driver(link.name), stats)
        return out

    def close(self) -> None:
        self.route.close()
        self.mib.close()
        if self.ethtool is not None:
            self.ethtool.close()


def parse_allowance_qdiscs(spec: str) -> dict[str, tuple[str, str]]:
    """``"bw_in_allowance_exceeded=ifb0:eth0,bw_out_allowance_exceeded=eth0"`` → {stat: (shaper, nic)}.

    The shaper is the interface whose root qdisc drops; the NIC, the uplink the statistic is
    reported for (an ingress shaper sits on an ifb, but the allowance belongs to the uplink).
    """
    out: dict[str, tuple[str, str]] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        stat, _, target = item.partition("=")
        shaper, _, nic = target.partition(":")
        if stat not in ENA_ALLOWANCE_STATS or not shaper:
            raise ConfigError(f"allowance-qdiscs entry {item!r} must be STAT=IFACE[:NIC] with STAT one of "
                              + ", ".join(ENA_ALLOWANCE_STATS))
        out[stat] = (shaper, nic or shaper)
    return out


def pod_interfaces(reading: NamespaceCounters, host: NamespaceCounters | None) -> list[tuple[str, LinkCounters]]:
    """A pod namespace's veths, each with the name of its host-side end when that is known."""
    host_ends = {} if host is None else {link.ifindex: link for link in host.links if link.kind == "veth"}
    out = []
    for link in reading.links:
        if link.kind != "veth":
            continue
        peer = host_ends.get(link.peer_ifindex or -1)
        out.append((peer.name if peer is not None and peer.peer_ifindex == link.ifindex else link.name, link))
    return out


def allowance_readings(host: NamespaceCounters, allowance_qdiscs: dict[str, tuple[str, str]]
                       ) -> list[tuple[str, str, str, int]]:
    """(nic, driver, statistic, cumulative value): ENA's statistics, or the shapers standing in for them."""
    out = [(iface, driver, stat, value) for iface, (driver, stats) in sorted(host.nics.items())
           for stat, value in stats.items()]
    by_name = {link.name: link.ifindex for link in host.links}
    for stat, (shaper, nic) in allowance_qdiscs.items():
        roots = [q for q in host.qdiscs if q.ifindex == by_name.get(shaper) and q.parent == "root"]
        if roots:
            out.append((nic, "qdisc", stat, roots[0].drops))
    return out


def safe_read(readers: NodeReaders, label: str, is_host: bool) -> NamespaceCounters | None:
    """One namespace's counters, or None (logged) when they cannot be read this cycle."""
    try:
        return readers.read(label, is_host)
    except (OSError, FlowlensError) as err:
        log.warning("reading node counters of %s failed: %s", label, err)
        return None
