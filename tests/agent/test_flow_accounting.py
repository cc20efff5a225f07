"""The agent's per-flow numbers against real sockets and real traffic between namespaces."""

from __future__ import annotations

import re
import socket
import threading
import time

import pytest

from flowlens.agent.sampling.sampler import CycleResult, Sampler
from flowlens.model.flows import CLIENT, SERVER
from tests.agent.flowsum import keys, total
from tests.conftest import NsPair, ns_exec
from tests.traffic import Server, connect_result, open_socket, request


def tcp_mib(ns: str, field: str) -> int:
    text = ns_exec(ns, "cat", "/proc/net/snmp").stdout
    header, values = [line.split() for line in text.splitlines() if line.startswith("Tcp:")]
    return int(values[header.index(field)])


def cycle_while(sampler: Sampler, busy: threading.Thread, every: float) -> list[CycleResult]:
    results = []
    while busy.is_alive():
        time.sleep(every)
        results.append(sampler.cycle())
    busy.join()
    time.sleep(0.1)
    results.append(sampler.cycle())
    return results


@pytest.fixture
def sampler():
    s = Sampler()
    s.start()
    yield s
    s.close()


def test_long_shaped_transfer_is_exact_on_both_ends_and_retransmissions_match_the_mib(ns_pair: NsPair):
    a, b = ns_pair.a, ns_pair.b
    # A tight tbf makes the sender overrun the shaper: real drops, real retransmissions.
    ns_exec(a, "tc", "qdisc", "add", "dev", "veth0", "root", "tbf", "rate", "20mbit", "burst", "16kb",
            "limit", "24kb")
    server = Server(b, ns_pair.ip_b, 5201, reply=1000).start()
    retrans_before = tcp_mib(a, "RetransSegs"), tcp_mib(b, "RetransSegs")
    sampler = Sampler()
    sampler.start()
    try:
        payload, replies = 3_000_000, []
        transfer = threading.Thread(target=lambda: replies.append(request(a, ns_pair.ip_b, 5201, payload)))
        transfer.start()
        results = cycle_while(sampler, transfer, every=0.25)
    finally:
        sampler.close()
        server.stop()
    assert replies == [1000] and server.received == [payload]
    busy = [r for r in results if total([r], a, CLIENT).sent_bytes > 0]
    assert len(busy) >= 3, "the transfer should span several intervals"

    client, srv = total(results, a, CLIENT, 5201), total(results, b, SERVER, 5201)
    assert (client.sent_bytes, client.received_bytes) == (payload, 1000)
    assert (srv.received_bytes, srv.sent_bytes) == (payload, 1000)
    assert (client.connection_attempts, client.connections_established, client.connections_failed) == (1, 1, 0)
    assert srv.connections_established == 1

    retrans_delta = tcp_mib(a, "RetransSegs") - retrans_before[0], tcp_mib(b, "RetransSegs") - retrans_before[1]
    assert retrans_delta[0] > 0, "the shaper should have caused retransmissions"
    assert total(results, a).retransmitted_segments == retrans_delta[0]
    assert total(results, b).retransmitted_segments == retrans_delta[1]
    assert srv.received_out_of_order > 0, "the receiver saw the gaps the shaper's drops left"


def test_200_short_connections_between_two_polls_are_each_counted(ns_pair: NsPair, sampler: Sampler):
    a, b = ns_pair.a, ns_pair.b
    server = Server(b, ns_pair.ip_b, 8080, reply=100).start()
    try:
        replies = [request(a, ns_pair.ip_b, 8080, 1000 + i) for i in range(200)]
        deadline = time.time() + 5
        while len(server.received) < 200 and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)
        result = sampler.cycle()
    finally:
        server.stop()
    sent = sum(1000 + i for i in range(200))
    assert replies == [100] * 200
    client, srv = total([result], a, CLIENT, 8080), total([result], b, SERVER, 8080)
    assert (client.sent_bytes, client.received_bytes) == (sent, 200 * 100)
    assert (srv.received_bytes, srv.sent_bytes) == (sent, 200 * 100)
    assert (client.connection_attempts, client.connections_established, client.connections_failed) == (200, 200, 0)
    assert srv.connections_established == 200
    assert result.active_sockets == {} or all(k.netns not in (a, b) for k in result.active_sockets)


def test_refused_and_blackholed_connections_are_failed(ns_pair: NsPair, sampler: Sampler):
    a, b = ns_pair.a, ns_pair.b
    ns_exec(b, "iptables", "-A", "INPUT", "-p", "tcp", "--dport", "5999", "-j", "DROP")
    # What kube-proxy writes for a Service without endpoints: an ICMP error, no reset.
    ns_exec(b, "iptables", "-A", "INPUT", "-p", "tcp", "--dport", "5997", "-j", "REJECT", "--reject-with",
            "icmp-port-unreachable")
    server = Server(b, ns_pair.ip_b, 6000).start()
    try:
        assert connect_result(a, ns_pair.ip_b, 5998, timeout=2) == "refused"
        assert connect_result(a, ns_pair.ip_b, 5997, timeout=2) == "refused"
        assert connect_result(a, ns_pair.ip_b, 5999, timeout=1.5) == "timeout"
        assert connect_result(a, ns_pair.ip_b, 6000, timeout=2) == "established"
        time.sleep(0.1)
        result = sampler.cycle()
    finally:
        server.stop()
    refused = total([result], a, CLIENT, 5998)
    rejected = total([result], a, CLIENT, 5997)
    dropped = total([result], a, CLIENT, 5999)
    ok = total([result], a, CLIENT, 6000)
    assert (refused.connection_attempts, refused.connections_established, refused.connections_failed) == (1, 0, 1)
    assert (dropped.connection_attempts, dropped.connections_established, dropped.connections_failed) == (1, 0, 1)
    assert dropped.retransmitted_segments >= 1, "the SYN was retransmitted before the timeout"
    # Told apart per connection: a reset came back, or nothing did.
    assert (refused.connections_refused, refused.connections_timed_out) == (1, 0)
    assert (rejected.connection_attempts, rejected.connections_refused, rejected.connections_timed_out) == (1, 1, 0)
    assert (dropped.connections_refused, dropped.connections_timed_out) == (0, 1)
    assert (ok.connections_established, ok.connections_failed) == (1, 0)
    assert refused.sent_bytes == dropped.sent_bytes == 0


def test_restart_mid_transfer_counts_exactly_what_follows(ns_pair: NsPair):
    a, b = ns_pair.a, ns_pair.b
    server = Server(b, ns_pair.ip_b, 7000, reply=0).start()
    first = Sampler()
    first.start()
    sock = open_socket(a)
    try:
        sock.connect((ns_pair.ip_b, 7000))
        sock.sendall(b"x" * 250_000)
        time.sleep(0.2)  # let it be acknowledged
        # A receiving socket's last byte is settled by the next look (see accounting).
        before = [first.cycle(), first.cycle()]
        first.close()  # the agent stops in the middle of the connection

        second = Sampler()
        second.start()
        sock.sendall(b"y" * 123_457)
        sock.shutdown(socket.SHUT_WR)
        sock.recv(1)  # the server's FIN: everything was received
        sock.close()
        time.sleep(0.2)
        after = second.cycle()
        second.close()
    finally:
        server.stop()
    assert total(before, a, CLIENT, 7000).sent_bytes == 250_000
    assert total(before[:1], b, SERVER, 7000).received_bytes == 249_999, "the last byte waits for the next look"
    assert total(before, b, SERVER, 7000).received_bytes == 250_000
    client, srv = total([after], a, CLIENT, 7000), total([after], b, SERVER, 7000)
    assert client.sent_bytes == 123_457
    assert srv.received_bytes == 123_457
    assert client.connection_attempts == client.connections_established == 0, "opened before the restart"


def test_ipv6_and_v4_mapped_addresses(netns: str, sampler: Sampler):
    server = Server(netns, "::", 9000, reply=10, family=socket.AF_INET6).start()
    try:
        assert request(netns, "::1", 9000, 111, family=socket.AF_INET6) == 10
        assert request(netns, "127.0.0.1", 9000, 222) == 10  # reaches the v6 socket as ::ffff:127.0.0.1
        time.sleep(0.1)
        result = sampler.cycle()
    finally:
        server.stop()
    flows = {(k.local_ip, k.remote_ip, k.role): c for k, c in result.flows.items() if k.netns == netns}
    assert flows[("::1", "::1", SERVER)].received_bytes == 111
    assert flows[("::1", "::1", CLIENT)].sent_bytes == 111
    assert flows[("127.0.0.1", "127.0.0.1", SERVER)].received_bytes == 222
    assert not any(re.match(r"::ffff:", ip) for ip, _, _ in flows)
    assert keys([result], netns) == {k for k in result.flows if k.netns == netns}
