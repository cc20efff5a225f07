"""Node-level counters read from the kernel: interfaces, qdiscs, the TCP MIB."""

from __future__ import annotations

from typing import NamedTuple


class LinkCounters(NamedTuple):
    """One network interface's counters (IFLA_STATS64) in one namespace.

    ``peer_ifindex`` is the ifindex of a veth's other end (in whatever namespace it lives),
    from IFLA_LINK; ``None`` for interfaces without a peer.
    """

    ifindex: int
    name: str
    kind: str
    peer_ifindex: int | None
    rx_bytes: int
    tx_bytes: int
    rx_packets: int
    tx_packets: int
    rx_dropped: int
    tx_dropped: int


class QdiscCounters(NamedTuple):
    """One queueing discipline's counters (TCA_STATS2) on one interface."""

    ifindex: int
    kind: str
    handle: str
    parent: str
    bytes: int
    packets: int
    drops: int
    overlimits: int
    requeues: int
    backlog: int
    qlen: int


class TcpMib(NamedTuple):
    """The ``Tcp:`` line of /proc/net/snmp for one namespace."""

    active_opens: int
    passive_opens: int
    attempt_fails: int
    estab_resets: int
    in_segs: int
    out_segs: int
    retrans_segs: int
    in_errs: int
    out_rsts: int
