"""Interface and qdisc counters from NETLINK_ROUTE dumps (what ``ip -s link`` and ``tc -s qdisc`` show).

A :class:`RouteNetlink` answers for the network namespace its socket was opened in, whichever
namespace the calling thread is in later. Replies are parsed in place with precompiled structs
that mirror the C layouts of ``include/uapi/linux/{rtnetlink,if_link,pkt_sched,gen_stats}.h``.
"""

from __future__ import annotations

import socket
import struct

from flowlens.kernel.netlink import (
    NETLINK_ROUTE,
    NetlinkSocket,
    Opener,
    attr_table,
    iter_attrs,
    malformed,
    open_netlink,
)
from flowlens.model.counters import LinkCounters, QdiscCounters

RTM_NEWLINK = 16
RTM_GETLINK = 18
RTM_NEWQDISC = 36
RTM_GETQDISC = 38

# struct ifinfomsg
IFINFOMSG = struct.Struct(
    "="
    "B"  # ifi_family
    "x"  # __ifi_pad
    "H"  # ifi_type
    "i"  # ifi_index
    "I"  # ifi_flags
    "I"  # ifi_change
)

# enum ifla / ifla_info attributes
IFLA_IFNAME = 3
IFLA_LINK = 5
IFLA_LINKINFO = 18
IFLA_STATS64 = 23
IFLA_LINK_NETNSID = 37
IFLA_INFO_KIND = 1

# struct rtnl_link_stats64, the leading fields every kernel has sent since 2.6.35; later kernels
# append more (rx_nohandler, rx_otherhost_dropped, ...), which are not read.
RTNL_LINK_STATS64 = struct.Struct(
    "="
    "Q"  # rx_packets
    "Q"  # tx_packets
    "Q"  # rx_bytes
    "Q"  # tx_bytes
    "Q"  # rx_errors
    "Q"  # tx_errors
    "Q"  # rx_dropped
    "Q"  # tx_dropped
)

# struct tcmsg
TCMSG = struct.Struct(
    "="
    "B"  # tcm_family
    "x"  # tcm__pad1
    "2x"  # tcm__pad2
    "i"  # tcm_ifindex
    "I"  # tcm_handle
    "I"  # tcm_parent
    "I"  # tcm_info
)

# enum tca / tca_stats attributes
TCA_KIND = 1
TCA_STATS = 3
TCA_STATS2 = 7
TCA_STATS_BASIC = 1
TCA_STATS_QUEUE = 3
TCA_STATS_PKT64 = 8

# struct gnet_stats_basic (16 bytes with its tail padding)
GNET_STATS_BASIC = struct.Struct(
    "="
    "Q"  # bytes
    "I"  # packets
)
# struct gnet_stats_queue
GNET_STATS_QUEUE = struct.Struct(
    "="
    "I"  # qlen
    "I"  # backlog
    "I"  # drops
    "I"  # requeues
    "I"  # overlimits
)
# struct tc_stats (the pre-2.6.16 TCA_STATS layout; it has no requeues)
TC_STATS = struct.Struct(
    "="
    "Q"  # bytes
    "I"  # packets
    "I"  # drops
    "I"  # overlimits
    "I"  # bps
    "I"  # pps
    "I"  # qlen
    "I"  # backlog
)
U64 = struct.Struct("=Q")
U32 = struct.Struct("=I")

TC_H_UNSPEC = 0
TC_H_ROOT = 0xFFFFFFFF
TC_H_INGRESS = 0xFFFFFFF1


def parse_link(data: bytes, start: int, end: int) -> LinkCounters | None:
    """Decode one RTM_NEWLINK message; ``None`` when it lacks a name or IFLA_STATS64."""
    if end - start < IFINFOMSG.size:
        raise malformed(f"an RTM_NEWLINK message of {end - start} bytes, shorter than struct ifinfomsg")
    _family, _type, ifindex, _flags, _change = IFINFOMSG.unpack_from(data, start)
    attrs = attr_table(data, start + IFINFOMSG.size, end)
    name_at = attrs.get(IFLA_IFNAME)
    stats_at = attrs.get(IFLA_STATS64)
    if name_at is None or stats_at is None or stats_at[1] - stats_at[0] < RTNL_LINK_STATS64.size:
        return None
    (rx_packets, tx_packets, rx_bytes, tx_bytes, _rx_errors, _tx_errors, rx_dropped,
     tx_dropped) = RTNL_LINK_STATS64.unpack_from(data, stats_at[0])
    return LinkCounters(
        ifindex, _cstring(data, *name_at), _link_kind(data, attrs), _peer_ifindex(data, attrs, ifindex),
        rx_bytes, tx_bytes, rx_packets, tx_packets, rx_dropped, tx_dropped,
    )


def _link_kind(data: bytes, attrs: dict[int, tuple[int, int]]) -> str:
    info_at = attrs.get(IFLA_LINKINFO)
    if info_at is None:
        return ""
    for kind, a, b in iter_attrs(data, *info_at):
        if kind == IFLA_INFO_KIND:
            return _cstring(data, a, b)
    return ""


def _peer_ifindex(data: bytes, attrs: dict[int, tuple[int, int]], ifindex: int) -> int | None:
    link_at = attrs.get(IFLA_LINK)
    if link_at is None or link_at[1] - link_at[0] < U32.size:
        return None
    (link,) = U32.unpack_from(data, link_at[0])
    # Recent kernels also send IFLA_LINK when it equals the device's own ifindex if
    # the peer lives in another namespace (IFLA_LINK_NETNSID present): a veth pair split across
    # two fresh namespaces typically has ifindex 2 at both ends. 0 is what tunnels without a
    # lower device report.
    if link == 0 or (link == ifindex and IFLA_LINK_NETNSID not in attrs):
        return None
    return link


def parse_qdisc(data: bytes, start: int, end: int) -> QdiscCounters | None:
    """Decode one RTM_NEWQDISC message; ``None`` when it carries neither stats attribute."""
    if end - start < TCMSG.size:
        raise malformed(f"an RTM_NEWQDISC message of {end - start} bytes, shorter than struct tcmsg")
    _family, ifindex, handle, parent, _info = TCMSG.unpack_from(data, start)
    attrs = attr_table(data, start + TCMSG.size, end)
    kind_at = attrs.get(TCA_KIND)
    kind = _cstring(data, *kind_at) if kind_at else ""
    stats2_at = attrs.get(TCA_STATS2)
    if stats2_at is not None:
        nbytes = packets = qlen = backlog = drops = requeues = overlimits = 0
        packets64: int | None = None
        for sub, a, b in iter_attrs(data, *stats2_at):
            if sub == TCA_STATS_BASIC and b - a >= GNET_STATS_BASIC.size:
                nbytes, packets = GNET_STATS_BASIC.unpack_from(data, a)
            elif sub == TCA_STATS_QUEUE and b - a >= GNET_STATS_QUEUE.size:
                qlen, backlog, drops, requeues, overlimits = GNET_STATS_QUEUE.unpack_from(data, a)
            elif sub == TCA_STATS_PKT64 and b - a >= U64.size:
                # Sent only once the packet count no longer fits the u32 of BASIC.
                (packets64,) = U64.unpack_from(data, a)
        if packets64 is not None:
            packets = packets64
    else:
        stats_at = attrs.get(TCA_STATS)
        if stats_at is None or stats_at[1] - stats_at[0] < TC_STATS.size:
            return None
        (nbytes, packets, drops, overlimits, _bps, _pps, qlen,
         backlog) = TC_STATS.unpack_from(data, stats_at[0])
        requeues = 0
    return QdiscCounters(
        ifindex, kind, format_handle(handle), format_parent(parent), nbytes, packets, drops,
        overlimits, requeues, backlog, qlen,
    )


def format_handle(handle: int) -> str:
    """A qdisc handle the way ``tc qdisc show`` prints it: the major number only ("1:", "0:")."""
    return f"{handle >> 16:x}:"


def format_parent(parent: int) -> str:
    """A qdisc parent: "root", "ingress", "none", else ``tc``'s classid text ("1:10", "8001:1").

    ``tc`` itself prints the ingress/clsact parent as "ffff:fff1"; a name reads better in labels.
    """
    if parent == TC_H_ROOT:
        return "root"
    if parent == TC_H_INGRESS:
        return "ingress"
    if parent == TC_H_UNSPEC:
        return "none"
    major, minor = parent >> 16, parent & 0xFFFF
    if major == 0:
        return f":{minor:x}"
    if minor == 0:
        return f"{major:x}:"
    return f"{major:x}:{minor:x}"


def _cstring(data: bytes, start: int, end: int) -> str:
    nul = data.find(b"\0", start, end)
    return data[start:end if nul < 0 else nul].decode("utf-8", "replace")


class RouteNetlink:
    """Link and qdisc dumps of the namespace this object was created in.

    The socket holds a reference on that namespace: after ``ip netns del`` it goes on answering
    for a namespace nobody can enter any more, so close readers of namespaces that vanished.
    """

    def __init__(self, opener: Opener = open_netlink) -> None:
        self._nl = NetlinkSocket(NETLINK_ROUTE, opener=opener)

    def close(self) -> None:
        self._nl.close()

    def links(self) -> list[LinkCounters]:
        """Every interface of the namespace with its IFLA_STATS64 counters."""
        found: list[LinkCounters] = []
        payload = IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        for batch in self._nl.dump(RTM_GETLINK, payload):
            for kind, data, start, end in batch:
                if kind == RTM_NEWLINK:
                    link = parse_link(data, start, end)
                    if link is not None:
                        found.append(link)
        return found

    def qdiscs(self) -> list[QdiscCounters]:
        """Every qdisc ``tc qdisc show`` would list (hidden default children excluded)."""
        found: list[QdiscCounters] = []
        payload = TCMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        for batch in self._nl.dump(RTM_GETQDISC, payload):
            for kind, data, start, end in batch:
                if kind == RTM_NEWQDISC:
                    qdisc = parse_qdisc(data, start, end)
                    if qdisc is not None:
                        found.append(qdisc)
        return found
