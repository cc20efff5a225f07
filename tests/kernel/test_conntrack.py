"""Conntrack against real DNAT in namespaces laid out like a Kubernetes node, and ``conntrack -L``.

The main topology is kube-proxy's: a client pod namespace and a backend pod namespace, each
joined by a veth pair to a node namespace that routes between them and DNATs the ClusterIP in
PREROUTING. The client socket only knows the ClusterIP; the node's conntrack knows the backend.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from flowlens.kernel.conntrack import NFGENMSG, Conntrack, NatEntry, NatTarget, parse_attrs, parse_entry
from flowlens.kernel.netlink import Message, pack_attr
from flowlens.kernel.netns import entered
from tests.conftest import NsPair, delete_namespace, make_namespace, ns_exec
from tests.traffic import Server, ns_path, open_socket, request

pytestmark = pytest.mark.kernel

TCP, UDP = socket.IPPROTO_TCP, socket.IPPROTO_UDP
SERVICE_PORT, BACKEND_PORT = 8080, 9090


@dataclass(frozen=True)
class Stack:
    """One address family's addresses in the node topology."""

    family: int
    cluster_ip: str
    client_ip: str
    backend_ip: str
    node_client_ip: str
    node_backend_ip: str
    prefix: int

    @property
    def iptables(self) -> str:
        return "iptables" if self.family == socket.AF_INET else "ip6tables"

    def bracket(self, ip: str) -> str:
        return ip if self.family == socket.AF_INET else f"[{ip}]"


V4 = Stack(socket.AF_INET, "10.96.0.10", "10.244.1.2", "10.244.2.2", "10.244.1.1", "10.244.2.1", 24)
V6 = Stack(socket.AF_INET6, "fd00:96::10", "fd00:1::2", "fd00:2::2", "fd00:1::1", "fd00:2::1", 64)


@dataclass
class KubeNode:
    node: str
    client: str
    backend: str


def _ns_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")


@pytest.fixture
def kube_node() -> Iterator[KubeNode]:
    """client --veth-- node --veth-- backend; the node forwards and DNATs the ClusterIPs."""
    _ns_root()
    names: list[str] = []
    try:
        for _ in range(3):
            names.append(make_namespace("flct"))
            # Without DAD on the link-local addresses too, IPv6 neighbours take ~2 s to answer.
            ns_exec(names[-1], "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")
        node, client, backend = names
        for pod, peer in ((client, "vclient"), (backend, "vbackend")):
            ns_exec(node, "ip", "link", "add", peer, "type", "veth", "peer", "name", "eth0", "netns", pod)
            ns_exec(node, "ip", "link", "set", peer, "up")
            ns_exec(pod, "ip", "link", "set", "eth0", "up")
        ns_exec(node, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
        for stack in (V4, V6):
            for pod, peer, pod_ip, gateway in ((client, "vclient", stack.client_ip, stack.node_client_ip),
                                                (backend, "vbackend", stack.backend_ip, stack.node_backend_ip)):
                extra = ("nodad",) if stack is V6 else ()
                ns_exec(node, "ip", "addr", "add", f"{gateway}/{stack.prefix}", "dev", peer, *extra)
                ns_exec(pod, "ip", "addr", "add", f"{pod_ip}/{stack.prefix}", "dev", "eth0", *extra)
                ns_exec(pod, "ip", "-6" if stack is V6 else "-4", "route", "add", "default", "via", gateway)
            for proto in ("tcp", "udp"):
                # What kube-proxy (iptables mode) does, minus its chains: DNAT before routing.
                ns_exec(node, stack.iptables, "-t", "nat", "-A", "PREROUTING", "-d", stack.cluster_ip,
                        "-p", proto, "--dport", str(SERVICE_PORT), "-j", "DNAT",
                        "--to-destination", f"{stack.bracket(stack.backend_ip)}:{BACKEND_PORT}")
        yield KubeNode(node, client, backend)
    finally:
        for name in names:
            delete_namespace(name)


@contextlib.contextmanager
def conntrack_in(ns: str) -> Iterator[Conntrack]:
    with entered(ns_path(ns)):
        ct = Conntrack()
    try:
        yield ct
    finally:
        ct.close()


@contextlib.contextmanager
def serving(ns: str, address: str, port: int, family: int) -> Iterator[Server]:
    server = Server(ns, address, port, family=family).start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def connected(ns: str, address: str, port: int, family: int) -> Iterator[tuple[str, int]]:
    """An open TCP connection from ``ns``; yields the client socket's own (ip, port)."""
    sock = open_socket(ns, family)
    try:
        sock.connect((address, port))
        yield sock.getsockname()[:2]
    finally:
        sock.close()


@dataclass(frozen=True)
class Listed:
    """One line of ``conntrack -L``: protocol, state (TCP only) and both tuples."""

    protocol: str
    state: str
    orig: tuple[str, int, str, int]  # src, sport, dst, dport
    reply: tuple[str, int, str, int]


def conntrack_list(ns: str, family: int = socket.AF_INET) -> list[Listed]:
    out = ns_exec(ns, "conntrack", "-L", "-f", "ipv4" if family == socket.AF_INET else "ipv6").stdout
    found = []
    for line in out.splitlines():
        words = line.split()
        pairs = [w.split("=", 1) for w in words if w.split("=", 1)[0] in ("src", "dst", "sport", "dport")]
        if len(pairs) < 8:
            continue
        orig, reply = dict(pairs[:4]), dict(pairs[4:8])
        state = words[3] if words[0] == "tcp" else ""
        found.append(Listed(words[0], state, *(
            (t["src"], int(t["sport"]), t["dst"], int(t["dport"])) for t in (orig, reply)
        )))
    return found


def listed(ns: str, family: int, src: str, sport: int) -> Listed:
    (entry,) = [e for e in conntrack_list(ns, family) if e.orig[:2] == (src, sport)]
    return entry


@pytest.mark.parametrize("stack", [V4, V6], ids=["ipv4", "ipv6"])
def test_lookup_finds_the_backend_behind_a_cluster_ip(kube_node: KubeNode, stack: Stack) -> None:
    with serving(kube_node.backend, stack.backend_ip, BACKEND_PORT, stack.family), \
            conntrack_in(kube_node.node) as ct, \
            connected(kube_node.client, stack.cluster_ip, SERVICE_PORT, stack.family) as (ip, port):
        assert ip == stack.client_ip
        target = ct.lookup(TCP, ip, port, stack.cluster_ip, SERVICE_PORT)
        assert target == NatTarget(stack.backend_ip, BACKEND_PORT)
        # conntrack(8) sees the same entry, the backend as the reply's source.
        entry = listed(kube_node.node, stack.family, ip, port)
        assert entry.orig == (ip, port, stack.cluster_ip, SERVICE_PORT)
        assert entry.reply[:2] == target
        assert entry.state == "ESTABLISHED"
        # The socket reused: a second lookup answers the same.
        assert ct.lookup(TCP, ip, port, stack.cluster_ip, SERVICE_PORT) == target


def test_ipv4_mapped_addresses_are_looked_up_as_ipv4(kube_node: KubeNode) -> None:
    with serving(kube_node.backend, V4.backend_ip, BACKEND_PORT, socket.AF_INET), \
            conntrack_in(kube_node.node) as ct, \
            connected(kube_node.client, V4.cluster_ip, SERVICE_PORT, socket.AF_INET) as (ip, port):
        mapped = ct.lookup(TCP, f"::ffff:{ip}", port, f"::ffff:{V4.cluster_ip}", SERVICE_PORT)
        assert mapped == NatTarget(V4.backend_ip, BACKEND_PORT)


def test_lookup_in_the_client_namespace_after_output_dnat(ns_pair: NsPair) -> None:
    """DNAT of locally generated traffic (OUTPUT): the conntrack entry is the client's own."""
    ns_exec(ns_pair.a, "ip", "route", "add", "10.96.0.0/12", "dev", "veth0")
    ns_exec(ns_pair.a, "iptables", "-t", "nat", "-A", "OUTPUT", "-d", V4.cluster_ip, "-p", "tcp",
            "--dport", str(SERVICE_PORT), "-j", "DNAT", "--to-destination", f"{ns_pair.ip_b}:{BACKEND_PORT}")
    with serving(ns_pair.b, ns_pair.ip_b, BACKEND_PORT, socket.AF_INET), conntrack_in(ns_pair.a) as ct, \
            connected(ns_pair.a, V4.cluster_ip, SERVICE_PORT, socket.AF_INET) as (ip, port):
        assert ct.lookup(TCP, ip, port, V4.cluster_ip, SERVICE_PORT) == NatTarget(ns_pair.ip_b, BACKEND_PORT)
        assert listed(ns_pair.a, socket.AF_INET, ip, port).reply[:2] == (ns_pair.ip_b, BACKEND_PORT)
    # The backend's namespace tracked nothing it would call NAT.
    with conntrack_in(ns_pair.b) as ct:
        assert ct.lookup(TCP, ip, port, V4.cluster_ip, SERVICE_PORT) is None


@pytest.mark.parametrize("stack", [V4, V6], ids=["ipv4", "ipv6"])
def test_a_closed_connection_still_resolves(kube_node: KubeNode, stack: Stack) -> None:
    seen: list[tuple[str, int]] = []
    with serving(kube_node.backend, stack.backend_ip, BACKEND_PORT, stack.family) as server, \
            conntrack_in(kube_node.node) as ct:
        request(kube_node.client, stack.cluster_ip, SERVICE_PORT, 1000, stack.family,
                on_connected=lambda sock: seen.append(sock.getsockname()[:2]))
        ((ip, port),) = seen
        deadline = time.monotonic() + 2
        while listed(kube_node.node, stack.family, ip, port).state != "TIME_WAIT":
            assert time.monotonic() < deadline, "the conntrack entry never reached TIME_WAIT"
            time.sleep(0.02)
        assert server.received == [1000]
        assert ct.lookup(TCP, ip, port, stack.cluster_ip, SERVICE_PORT) == NatTarget(stack.backend_ip, BACKEND_PORT)


@pytest.mark.parametrize("stack", [V4, V6], ids=["ipv4", "ipv6"])
def test_a_connection_that_was_not_dnated_gives_none(kube_node: KubeNode, stack: Stack) -> None:
    with serving(kube_node.backend, stack.backend_ip, BACKEND_PORT, stack.family), \
            conntrack_in(kube_node.node) as ct, \
            connected(kube_node.client, stack.backend_ip, BACKEND_PORT, stack.family) as (ip, port):
        # The node tracks the connection; only its reply comes from where it was sent.
        entry = listed(kube_node.node, stack.family, ip, port)
        assert entry.orig == (ip, port, stack.backend_ip, BACKEND_PORT)
        assert entry.reply[:2] == (stack.backend_ip, BACKEND_PORT)
        assert ct.lookup(TCP, ip, port, stack.backend_ip, BACKEND_PORT) is None


@pytest.mark.parametrize("stack", [V4, V6], ids=["ipv4", "ipv6"])
def test_an_unknown_tuple_gives_none(kube_node: KubeNode, stack: Stack) -> None:
    with serving(kube_node.backend, stack.backend_ip, BACKEND_PORT, stack.family), \
            conntrack_in(kube_node.node) as ct, \
            connected(kube_node.client, stack.cluster_ip, SERVICE_PORT, stack.family) as (ip, port):
        assert ct.lookup(TCP, ip, port, stack.cluster_ip, SERVICE_PORT) is not None
        other_port = port + 1 if port < 65535 else port - 1
        assert ct.lookup(TCP, ip, other_port, stack.cluster_ip, SERVICE_PORT) is None
        assert ct.lookup(TCP, ip, port, stack.cluster_ip, SERVICE_PORT + 1) is None
        assert ct.lookup(UDP, ip, port, stack.cluster_ip, SERVICE_PORT) is None
        # The client's namespace has no conntrack entry at all (nothing there needs one).
        with conntrack_in(kube_node.client) as client_ct:
            assert client_ct.lookup(TCP, ip, port, stack.cluster_ip, SERVICE_PORT) is None


def test_an_entry_found_by_its_reply_tuple_is_not_a_nat_target(kube_node: KubeNode) -> None:
    """The kernel finds an entry by either direction's tuple. Here the tuple asked for is the
    reply of a connection made the other way (backend to client), whose reply source is not
    the destination asked for: it must not read as a DNAT."""
    with serving(kube_node.client, V4.client_ip, 7000, socket.AF_INET), conntrack_in(kube_node.node) as ct, \
            connected(kube_node.backend, V4.client_ip, 7000, socket.AF_INET) as (ip, port):
        assert listed(kube_node.node, socket.AF_INET, ip, port).reply == (V4.client_ip, 7000, ip, port)
        assert ct.lookup(TCP, V4.client_ip, 7000, ip, port) is None
        assert ct.lookup(TCP, ip, port, V4.client_ip, 7000) is None  # the real tuple: not NATed


def counting_datagrams(ct: Conntrack) -> list[int]:
    """Make ``ct`` record how many messages each datagram of its dumps carried."""
    datagrams: list[int] = []
    dump = ct._nl.dump

    def counting(*args: Any) -> Iterator[list[Message]]:
        for batch in dump(*args):
            datagrams.append(len(batch))
            yield batch

    ct._nl.dump = counting  # type: ignore[method-assign]
    return datagrams


def kernel_at_least(major: int, minor: int) -> bool:
    release = tuple(int(part) for part in re.findall(r"\d+", os.uname().release)[:2])
    return release >= (major, minor)


def udp_to_cluster_ip(kube_node: KubeNode) -> tuple[str, int]:
    with entered(ns_path(kube_node.client)):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.connect((V4.cluster_ip, SERVICE_PORT))  # binds the source address, to read it back
        sock.send(b"query")
        return sock.getsockname()[:2]


@pytest.mark.parametrize("kernel_filter", [True, False], ids=["kernel-filtered", "unfiltered"])
def test_dump_nat_lists_the_dnated_entries(kube_node: KubeNode, kernel_filter: bool) -> None:
    """Both ways of dumping: asking the kernel for DNATed entries only (6.0+), and the whole
    table filtered here, which is what older kernels, ignoring the request, give."""
    with serving(kube_node.backend, V4.backend_ip, BACKEND_PORT, socket.AF_INET), \
            serving(kube_node.backend, V6.backend_ip, BACKEND_PORT, socket.AF_INET6), \
            conntrack_in(kube_node.node) as ct, \
            connected(kube_node.client, V4.cluster_ip, SERVICE_PORT, socket.AF_INET) as (ip4, port4), \
            connected(kube_node.client, V6.cluster_ip, SERVICE_PORT, socket.AF_INET6) as (ip6, port6), \
            connected(kube_node.client, V4.backend_ip, BACKEND_PORT, socket.AF_INET) as (ip, direct_port):
        udp_ip, udp_port = udp_to_cluster_ip(kube_node)
        ct._kernel_filter = kernel_filter
        datagrams = counting_datagrams(ct)
        tcp = ct.dump_nat()
        udp = ct.dump_nat(UDP)
        listed_tcp = [e for family in (socket.AF_INET, socket.AF_INET6)
                      for e in conntrack_list(kube_node.node, family) if e.protocol == "tcp"]

    assert sorted(tcp) == sorted([
        NatEntry(TCP, ip4, port4, V4.cluster_ip, SERVICE_PORT, NatTarget(V4.backend_ip, BACKEND_PORT)),
        NatEntry(TCP, ip6, port6, V6.cluster_ip, SERVICE_PORT, NatTarget(V6.backend_ip, BACKEND_PORT)),
    ])
    assert udp == [NatEntry(UDP, udp_ip, udp_port, V4.cluster_ip, SERVICE_PORT, NatTarget(V4.backend_ip, BACKEND_PORT))]
    if kernel_filter and kernel_at_least(6, 0):
        # The kernel sent the three DNATed entries, of every protocol, twice: nothing else.
        assert sum(datagrams) == 2 * 3
    else:
        assert sum(datagrams) > 2 * 3  # the direct connection's entry came too
    # conntrack(8) lists the direct connection too; of its entries, the DNATed ones are ours.
    assert (ip, direct_port) in [e.orig[:2] for e in listed_tcp]
    assert sorted((e.orig, e.reply[:2]) for e in listed_tcp if e.reply[:2] != e.orig[2:]) == sorted(
        ((n.src, n.sport, n.dst, n.dport), n.target) for n in tcp
    )


def test_dump_nat_of_a_thousand_entries_spans_many_datagrams(ns_pair: NsPair) -> None:
    ns_exec(ns_pair.a, "ip", "route", "add", "10.96.0.0/12", "dev", "veth0")
    ns_exec(ns_pair.a, "iptables", "-t", "nat", "-A", "OUTPUT", "-d", V4.cluster_ip, "-p", "tcp",
            "--dport", str(SERVICE_PORT), "-j", "DNAT", "--to-destination", f"{ns_pair.ip_b}:{BACKEND_PORT}")
    count = 1000
    with entered(ns_path(ns_pair.b)):
        listener = socket.socket()
    clients: list[socket.socket] = []
    try:
        listener.bind((ns_pair.ip_b, BACKEND_PORT))
        listener.listen(2 * count)  # never accepted: the handshakes complete in the backlog
        for _ in range(count):
            clients.append(open_socket(ns_pair.a))
            clients[-1].connect((V4.cluster_ip, SERVICE_PORT))
        ports = {sock.getsockname()[1] for sock in clients}
        with conntrack_in(ns_pair.a) as ct:
            datagrams = counting_datagrams(ct)
            entries = ct.dump_nat()
    finally:
        for sock in clients:
            sock.close()
        listener.close()
    assert len(datagrams) > 1 and sum(datagrams) == count
    assert len(entries) == count
    assert {e.sport for e in entries} == ports
    assert {(e.src, e.dst, e.dport, e.target) for e in entries} == {
        (ns_pair.ip_a, V4.cluster_ip, SERVICE_PORT, NatTarget(ns_pair.ip_b, BACKEND_PORT))
    }


def test_without_cap_net_admin_lookups_raise_privilege_error(netns: str) -> None:
    """A process without CAP_NET_ADMIN may open the socket; the kernel refuses the request."""
    code = (
        "import sys\n"
        "from flowlens.kernel.conntrack import Conntrack\n"
        "from flowlens.model.errors import PrivilegeError\n"
        "ct = Conntrack()\n"
        "for call in (lambda: ct.lookup(6, '10.0.0.1', 1, '10.0.0.2', 2), ct.dump_nat):\n"
        "    try:\n"
        "        call()\n"
        "    except PrivilegeError as err:\n"
        "        print('PrivilegeError', err)\n"
    )
    out = subprocess.run(
        ["ip", "netns", "exec", netns, "setpriv", "--inh-caps=-net_admin", "--bounding-set=-net_admin",
         sys.executable, "-c", code],
        check=True, capture_output=True, text=True,
    ).stdout
    assert out.count("PrivilegeError") == 2, out
    # With the capability the same calls succeed.
    with conntrack_in(netns) as ct:
        assert ct.lookup(TCP, "10.0.0.1", 1, "10.0.0.2", 2) is None
        assert ct.dump_nat() == []


def test_lookup_rejects_what_it_cannot_ask() -> None:
    ct = Conntrack()
    try:
        with pytest.raises(ValueError, match="same address family"):
            ct.lookup(TCP, "10.0.0.1", 1, "fd00::1", 2)
        with pytest.raises(ValueError, match="no ports"):
            ct.lookup(socket.IPPROTO_ICMP, "10.0.0.1", 0, "10.0.0.2", 0)
        with pytest.raises(ValueError, match="not an IP address"):
            ct.lookup(TCP, "my-service", 1, "10.0.0.2", 2)
    finally:
        ct.close()


def tuple_attr(kind: int, src: str, sport: int, dst: str, dport: int, zone: int = 0) -> bytes:
    """A CTA_TUPLE_ORIG (1) or CTA_TUPLE_REPLY (2) as ctnetlink_dump_tuples lays it out."""
    nested = 1 << 15
    family = socket.AF_INET6 if ":" in src else socket.AF_INET
    ip_attrs = (1, 2) if family == socket.AF_INET else (3, 4)
    ip = pack_attr(ip_attrs[0], socket.inet_pton(family, src)) + pack_attr(ip_attrs[1], socket.inet_pton(family, dst))
    ports = pack_attr(2, sport.to_bytes(2, "big")) + pack_attr(3, dport.to_bytes(2, "big"))
    body = pack_attr(1 | nested, ip) + pack_attr(2 | nested, pack_attr(1, bytes([TCP])) + ports)
    if zone:
        body += pack_attr(3, zone.to_bytes(2, "big"))  # CTA_TUPLE_ZONE: the entry is in a zone
    return pack_attr(kind | nested, body)


@pytest.mark.parametrize(("client", "service", "backend"), [
    ("10.0.0.1", "10.96.0.10", "10.0.0.9"), ("fd00::1", "fd00:96::10", "fd00::9"),
], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("zone", [0, 7], ids=["usual-layout", "zoned"])
def test_parse_entry_reads_both_tuples(client: str, service: str, backend: str, zone: int) -> None:
    """In place when the tuples are laid out as usual, attribute by attribute otherwise
    (here a zone inside the original tuple); the answers agree, attributes around are skipped."""
    family = socket.AF_INET6 if ":" in client else socket.AF_INET
    message = (
        NFGENMSG.pack(family, 0, 0)
        + tuple_attr(1, client, 40000, service, 80, zone)
        + tuple_attr(2, backend, 8080, client, 40000)
        + pack_attr(3, (0x1A8).to_bytes(4, "big"))  # CTA_STATUS
    )
    raw = {ip: socket.inet_pton(family, ip) for ip in (client, service, backend)}
    expected = ((TCP, raw[client], 40000, raw[service], 80), (TCP, raw[backend], 8080, raw[client], 40000))
    assert parse_entry(message, 0, len(message)) == expected
    assert parse_attrs(message, 0, len(message)) == expected


def test_parse_entry_without_a_reply_tuple_gives_none() -> None:
    message = NFGENMSG.pack(socket.AF_INET, 0, 0) + tuple_attr(1, "10.0.0.1", 1, "10.0.0.2", 2)
    assert parse_entry(message, 0, len(message)) is None
