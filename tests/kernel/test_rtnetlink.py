"""RouteNetlink against ``ip -s link`` and ``tc -s qdisc`` in real namespaces."""

from __future__ import annotations

import json
import socket
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import pytest

from flowlens.kernel.netlink import pack_attr
from flowlens.kernel.netns import entered
from flowlens.kernel.rtnetlink import (
    TC_STATS,
    TCA_KIND,
    TCA_STATS,
    TCA_STATS2,
    TCA_STATS_BASIC,
    TCA_STATS_PKT64,
    TCA_STATS_QUEUE,
    TCMSG,
    RouteNetlink,
    format_parent,
    parse_qdisc,
)
from flowlens.model.counters import LinkCounters, QdiscCounters
from tests.conftest import NsPair, ns_exec

pytestmark = pytest.mark.kernel

T = TypeVar("T")

# Ethernet + IPv4 + UDP headers: what veth counts on top of each datagram's payload.
UDP_FRAME_OVERHEAD = 14 + 20 + 8


def ns_path(name: str) -> str:
    return f"/run/netns/{name}"


def quiet(pair: NsPair) -> None:
    """Stop the traffic the kernel makes on its own (IPv6 ND/MLD, ARP) so counters stay put."""
    for ns in (pair.a, pair.b):
        ns_exec(ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
    mac = {ns: ip_json(ns, "link", "show", "veth0")[0]["address"] for ns in (pair.a, pair.b)}
    ns_exec(pair.a, "ip", "neigh", "replace", pair.ip_b, "lladdr", mac[pair.b], "dev", "veth0", "nud", "permanent")
    ns_exec(pair.b, "ip", "neigh", "replace", pair.ip_a, "lladdr", mac[pair.a], "dev", "veth0", "nud", "permanent")


def ip_json(ns: str, *args: str) -> list[dict]:
    return json.loads(ns_exec(ns, "ip", "-j", *args).stdout)


def stable(ours: Callable[[], T], theirs: Callable[[], T]) -> tuple[T, T]:
    """Our reading and the tool's, taken back to back with nothing changing around them."""
    for _ in range(10):
        first, tool, again = ours(), theirs(), ours()
        if first == again:
            return first, tool
        time.sleep(0.05)
    pytest.fail("counters kept moving while being compared")


@contextmanager
def route_netlink(ns: str) -> Iterator[RouteNetlink]:
    with entered(ns_path(ns)):
        reader = RouteNetlink()
    try:
        yield reader
    finally:
        reader.close()


@contextmanager
def udp_flow(pair: NsPair) -> Iterator[Callable[[int, int], None]]:
    """A sender in ``a`` and a bound receiver in ``b`` (so no ICMP unreachables muddy counts)."""
    with entered(ns_path(pair.a)):
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with entered(ns_path(pair.b)):
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.bind((pair.ip_b, 0))
    port = rx.getsockname()[1]

    def send(count: int, size: int) -> None:
        for _ in range(count):
            tx.sendto(b"x" * size, (pair.ip_b, port))

    try:
        yield send
    finally:
        tx.close()
        rx.close()


def links_from_ip(ns: str) -> list[LinkCounters]:
    rows = ip_json(ns, "-s", "-d", "link", "show")
    index_of = {row["ifname"]: row["ifindex"] for row in rows}
    found = []
    for row in rows:
        if "link_index" in row:
            peer = row["link_index"]
        elif "link" in row:
            peer = index_of[row["link"]]  # ip names a peer that lives in the same namespace
        else:
            peer = None
        rx, tx = row["stats64"]["rx"], row["stats64"]["tx"]
        found.append(LinkCounters(
            row["ifindex"], row["ifname"], row.get("linkinfo", {}).get("info_kind", ""), peer,
            rx["bytes"], tx["bytes"], rx["packets"], tx["packets"], rx["dropped"], tx["dropped"],
        ))
    return sorted(found)


def qdiscs_from_tc(ns: str) -> list[QdiscCounters]:
    index_of = {row["ifname"]: row["ifindex"] for row in ip_json(ns, "link", "show")}
    found = []
    for row in json.loads(ns_exec(ns, "tc", "-s", "-j", "qdisc", "show").stdout):
        if row.get("root"):
            parent = "root"
        elif row["parent"] == "ffff:fff1":
            parent = "ingress"
        else:
            parent = row["parent"]
        found.append(QdiscCounters(
            index_of[row["dev"]], row["kind"], row["handle"], parent, row["bytes"], row["packets"],
            row["drops"], row["overlimits"], row["requeues"], row["backlog"], row["qlen"],
        ))
    return sorted(found)


def by_name(links: list[LinkCounters]) -> dict[str, LinkCounters]:
    return {link.name: link for link in links}


def test_links_match_ip_after_known_traffic(ns_pair: NsPair) -> None:
    quiet(ns_pair)
    # A second veth pair inside ``a``: its peer shares the namespace and has another ifindex.
    ns_exec(ns_pair.a, "ip", "link", "add", "vA", "type", "veth", "peer", "name", "vB")
    count, size = 50, 300
    with route_netlink(ns_pair.a) as reader, udp_flow(ns_pair) as send:
        before = by_name(reader.links())["veth0"]
        send(count, size)
        after = by_name(reader.links())["veth0"]
        assert after.tx_packets - before.tx_packets == count
        assert after.tx_bytes - before.tx_bytes == count * (size + UDP_FRAME_OVERHEAD)

        ours, theirs = stable(lambda: sorted(reader.links()), lambda: links_from_ip(ns_pair.a))
        assert ours == theirs

    links = by_name(ours)
    assert set(links) == {"lo", "veth0", "vA", "vB"}  # the namespace's, not the host's
    assert links["lo"].kind == "" and links["lo"].peer_ifindex is None
    assert links["vA"].kind == "veth" and links["vA"].peer_ifindex == links["vB"].ifindex
    assert links["vB"].peer_ifindex == links["vA"].ifindex
    # Fresh namespaces give both ends of the pair the same ifindex; the peer is still reported.
    (peer,) = ip_json(ns_pair.b, "link", "show", "veth0")
    assert links["veth0"].peer_ifindex == peer["ifindex"]


def test_receiving_side_counts_the_traffic(ns_pair: NsPair) -> None:
    quiet(ns_pair)
    count, size = 20, 100
    with route_netlink(ns_pair.b) as reader, udp_flow(ns_pair) as send:
        before = by_name(reader.links())["veth0"]
        send(count, size)
        deadline = time.monotonic() + 2
        while by_name(reader.links())["veth0"].rx_packets - before.rx_packets < count:
            assert time.monotonic() < deadline, "the datagrams never showed up as received"
            time.sleep(0.01)
        after = by_name(reader.links())["veth0"]
        assert after.rx_packets - before.rx_packets == count
        assert after.rx_bytes - before.rx_bytes == count * (size + UDP_FRAME_OVERHEAD)
        ours, theirs = stable(lambda: sorted(reader.links()), lambda: links_from_ip(ns_pair.b))
        assert ours == theirs


def test_tbf_drops_match_tc(ns_pair: NsPair) -> None:
    quiet(ns_pair)
    ns_exec(ns_pair.a, "tc", "qdisc", "add", "dev", "veth0", "root", "tbf",
            "rate", "1mbit", "burst", "4kb", "latency", "5ms")
    ns_exec(ns_pair.a, "tc", "qdisc", "add", "dev", "veth0", "ingress")
    count, size = 200, 1000
    with route_netlink(ns_pair.a) as reader, udp_flow(ns_pair) as send:
        send(count, size)
        deadline = time.monotonic() + 3
        while any(q.backlog or q.qlen for q in reader.qdiscs()):
            assert time.monotonic() < deadline, "the tbf queue never drained"
            time.sleep(0.02)
        ours, theirs = stable(lambda: sorted(reader.qdiscs()), lambda: qdiscs_from_tc(ns_pair.a))
    assert ours == theirs

    veth0 = by_name(links_from_ip(ns_pair.a))["veth0"].ifindex
    (tbf,) = [q for q in ours if q.kind == "tbf"]
    assert (tbf.ifindex, tbf.parent) == (veth0, "root")
    assert tbf.handle.endswith(":") and tbf.handle != "0:"
    assert tbf.drops > 0 and tbf.overlimits > 0
    assert tbf.packets + tbf.drops == count  # every datagram was either sent or dropped
    assert tbf.bytes == tbf.packets * (size + UDP_FRAME_OVERHEAD)
    (ingress,) = [q for q in ours if q.kind == "ingress"]
    assert (ingress.ifindex, ingress.handle, ingress.parent) == (veth0, "ffff:", "ingress")


def test_reader_stays_in_its_namespace(ns_pair: NsPair) -> None:
    ns_exec(ns_pair.b, "ip", "link", "add", "only-in-b", "type", "veth", "peer", "name", "also-in-b")
    with route_netlink(ns_pair.a) as in_a, route_netlink(ns_pair.b) as in_b:
        assert {link.name for link in in_a.links()} == {"lo", "veth0"}
        assert {link.name for link in in_b.links()} == {"lo", "veth0", "only-in-b", "also-in-b"}


def _qdisc_message(*attrs: bytes) -> bytes:
    return TCMSG.pack(0, 3, 0x10000, 0xFFFFFFFF, 0) + b"".join(attrs)


def test_parse_qdisc_falls_back_to_tc_stats() -> None:
    legacy = TC_STATS.pack(12345, 67, 8, 9, 0, 0, 2, 3000) + b"\0" * 4
    data = _qdisc_message(pack_attr(TCA_KIND, b"tbf\0"), pack_attr(TCA_STATS, legacy))
    assert parse_qdisc(data, 0, len(data)) == QdiscCounters(
        ifindex=3, kind="tbf", handle="1:", parent="root", bytes=12345, packets=67, drops=8,
        overlimits=9, requeues=0, backlog=3000, qlen=2,
    )


def test_parse_qdisc_prefers_stats2_and_its_64_bit_packet_count() -> None:
    stats2 = (pack_attr(TCA_STATS_BASIC, struct.pack("=QI4x", 1 << 40, 0xFFFFFFFF))
              + pack_attr(TCA_STATS_QUEUE, struct.pack("=5I", 1, 2, 3, 4, 5))
              + pack_attr(TCA_STATS_PKT64, struct.pack("=Q", 1 << 33)))
    legacy = TC_STATS.pack(1, 1, 1, 1, 0, 0, 1, 1) + b"\0" * 4
    data = _qdisc_message(pack_attr(TCA_KIND, b"fq\0"), pack_attr(TCA_STATS, legacy),
                          pack_attr(TCA_STATS2 | 0x8000, stats2))
    assert parse_qdisc(data, 0, len(data)) == QdiscCounters(
        ifindex=3, kind="fq", handle="1:", parent="root", bytes=1 << 40, packets=1 << 33, drops=3,
        overlimits=5, requeues=4, backlog=2, qlen=1,
    )


def test_parse_qdisc_without_stats_is_skipped() -> None:
    data = _qdisc_message(pack_attr(TCA_KIND, b"noop\0"))
    assert parse_qdisc(data, 0, len(data)) is None


@pytest.mark.parametrize(("parent", "text"), [
    (0xFFFFFFFF, "root"), (0xFFFFFFF1, "ingress"), (0, "none"), (0x00010000, "1:"),
    (0x80010001, "8001:1"), (0x0000000A, ":a"),
])
def test_format_parent_like_tc(parent: int, text: str) -> None:
    assert format_parent(parent) == text
