"""The agent under stress, on the real kernel: high churn, odd port ranges, held replies.

Load comes from ``tests.churn`` processes inside the test's namespaces, which count every
connection and byte on both ends; the agent's totals must equal theirs exactly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from flowlens.agent.config import AgentConfig
from flowlens.agent.runtime import Agent, serve
from flowlens.agent.sampling.sampler import CycleResult, Sampler
from flowlens.model.flows import CLIENT, SERVER
from tests.agent.flowsum import keys, total
from tests.churn import finish, start_clients, start_servers
from tests.conftest import NsPair, ns_exec
from tests.integration.conftest import free_port
from tests.traffic import open_socket


@contextmanager
def running_agent(sampler: Sampler, interval: float, **config) -> Iterator[tuple[Agent, list[CycleResult]]]:
    """The real agent loop (destroy events read between cycles) in a thread; every cycle kept."""
    agent = Agent(AgentConfig(interval=interval, address="127.0.0.1", port=free_port(), **config), sampler)
    results: list[CycleResult] = []
    run_cycle = agent.run_cycle

    def recording() -> CycleResult:
        results.append(run_cycle())
        return results[-1]

    agent.run_cycle = recording  # type: ignore[method-assign]
    agent.start()
    loop = threading.Thread(target=agent.loop, daemon=True)
    loop.start()
    try:
        yield agent, results
    finally:
        agent.stop()
        loop.join(timeout=30)
        agent.close()


def wait_cycles(results: list[CycleResult], count: int, timeout: float = 60) -> None:
    """Wait until ``count`` more cycles have completed."""
    target = len(results) + count
    deadline = time.monotonic() + timeout
    while len(results) < target:
        assert time.monotonic() < deadline, "the agent stopped completing cycles"
        time.sleep(0.05)


def assert_exact(results: list[CycleResult], pair: NsPair, port: int, clients, servers) -> None:
    client, server = total(results, pair.a, CLIENT, port), total(results, pair.b, SERVER, port)
    assert clients.failed == servers.failed == 0
    assert clients.connections == servers.connections
    assert (client.connection_attempts, client.connections_established, client.connections_failed) == \
        (clients.connections, clients.connections, 0)
    assert (client.sent_bytes, client.received_bytes) == (clients.sent, clients.received)
    assert server.connections_established == servers.connections
    assert (server.received_bytes, server.sent_bytes) == (servers.received, servers.sent)


@pytest.mark.parametrize("interval", [5.0, 10.0])
def test_5000_connections_per_second_for_a_minute_are_counted_exactly(ns_pair: NsPair, interval: float):
    a, b, port = ns_pair.a, ns_pair.b, 8080
    # 300,000 connections from one address to one port: ephemeral ports are reused from
    # TIME_WAIT, as a busy client pod does.
    ns_exec(a, "sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65000")
    ns_exec(a, "sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1")
    servers = start_servers(b, port, workers=2)
    sampler = Sampler(only=(a, b))
    with running_agent(sampler, interval) as (_agent, results):
        started = time.monotonic()
        clients = finish(start_clients(a, ns_pair.ip_b, port, rate=5000, seconds=60, procs=3), timeout=300)
        elapsed = time.monotonic() - started
        wait_cycles(results, 2)
        server_tally = finish(servers, stop=True)
        unattributed = sampler.unattributed()
    print(f"\n{clients.connections} connections in {elapsed:.1f} s ({clients.connections / elapsed:.0f}/s), "
          f"interval {interval:g} s, {sampler.events_read} destroy events read between cycles")
    assert clients.connections == 300_000
    assert_exact(results, ns_pair, port, clients, server_tally)
    assert (sampler.lost_events, sampler.overflows, sampler.timeouts) == (0, 0, 0)
    assert unattributed[a] == unattributed[b] == (0, 0.0)
    assert keys(results, a) == {(a, ns_pair.ip_a, ns_pair.ip_b, port, CLIENT, "tcp")}
    assert keys(results, b) == {(b, ns_pair.ip_b, ns_pair.ip_a, port, SERVER, "tcp")}


def test_dropped_destroy_events_show_as_unattributed_connections_never_hidden(ns_pair: NsPair):
    """A buffer of a few notifications, read only at cycle time: the kernel must drop events,
    and what it drops shows in the reconciliation, to the connection."""
    a, b, port = ns_pair.a, ns_pair.b, 8081
    servers = start_servers(b, port, workers=1)
    sampler = Sampler(only=(a, b), event_buffer=4096, event_buffer_max=4096)
    sampler.start()
    results = []
    try:
        load = start_clients(a, ns_pair.ip_b, port, rate=2000, seconds=4)
        while any(p.poll() is None for p in load):
            time.sleep(1.0)
            results.append(sampler.cycle())
        clients = finish(load)
        for _ in range(4):  # a lost socket is given a whole interval to show up
            time.sleep(0.3)
            results.append(sampler.cycle())
        server_tally = finish(servers, stop=True)
        unattributed = sampler.unattributed()
    finally:
        sampler.close()
    assert sampler.overflows > 0, "the tiny buffer should have overflowed"
    client, server = total(results, a, CLIENT, port), total(results, b, SERVER, port)
    lost_a, bytes_a = unattributed[a]
    lost_b, _ = unattributed[b]
    assert lost_a > 0 and bytes_a > 0
    # Every connection is either counted or unattributed: the sum is the kernel's, exactly.
    assert client.connection_attempts + lost_a == clients.connections
    assert server.connections_established + lost_b == server_tally.connections
    assert client.sent_bytes < clients.sent, "the lost sockets' bytes are missing from the flows"


def test_many_open_connections_a_per_pod_port_range_and_port_50051_never_freeze_the_agent(ns_pair: NsPair):
    """The reproduction that froze the agent: ~240 connections held open in a client namespace
    whose ephemeral range is a pod's own (1024-19000), and new connections to port 50051."""
    a, b = ns_pair.a, ns_pair.b
    ns_exec(a, "sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 19000")
    ns_exec(a, "sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1")  # 60,000 connections through 18,000 ports
    held_servers = start_servers(b, 9000, workers=1)
    servers = start_servers(b, 50051, workers=2)
    held = []
    for _ in range(240):
        sock = open_socket(a)
        sock.connect((ns_pair.ip_b, 9000))
        held.append(sock)
    sampler = Sampler(only=(a, b), timeout=1.0)
    try:
        with running_agent(sampler, 1.0) as (agent, results):
            clients = finish(start_clients(a, ns_pair.ip_b, 50051, rate=1000, seconds=60, procs=2), timeout=300)
            wait_cycles(results, 2)
            assert agent.problem == ""
            server_tally = finish(servers, stop=True)
    finally:
        for sock in held:
            sock.close()
        finish(held_servers, stop=True)
    assert len(results) >= 60, "a cycle every interval"
    assert sampler.timeouts == 0 and not any(r.errors for r in results)
    assert max(r.collect_seconds for r in results) < 1.0
    assert_exact(results, ns_pair, 50051, clients, server_tally)
    assert {k.role for k in keys(results, a)} == {CLIENT}, "roles come from listeners, not port ranges"
    assert {k.server_port for k in keys(results, a)} == {9000, 50051}


def test_roles_follow_listeners_whatever_the_port_ranges(ns_pair: NsPair):
    """Server ports inside and outside each side's ephemeral range; clients in a pod's range."""
    a, b = ns_pair.a, ns_pair.b
    ns_exec(a, "sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 19000")
    ns_exec(b, "sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65000")
    servers = {port: start_servers(b, port, workers=1) for port in (2000, 50051)}
    sampler = Sampler(only=(a, b))
    sampler.start()
    try:
        load = {port: start_clients(a, ns_pair.ip_b, port, rate=500, seconds=2) for port in servers}
        results = []
        while any(p.poll() is None for procs in load.values() for p in procs):
            time.sleep(0.5)
            results.append(sampler.cycle())
        tallies = {port: finish(procs) for port, procs in load.items()}
        time.sleep(0.2)
        results.append(sampler.cycle())
        server_tallies = {port: finish(procs, stop=True) for port, procs in servers.items()}
    finally:
        sampler.close()
    for port in servers:
        assert_exact(results, ns_pair, port, tallies[port], server_tallies[port])
    assert keys(results, a) == {(a, ns_pair.ip_a, ns_pair.ip_b, port, CLIENT, "tcp") for port in servers}
    assert keys(results, b) == {(b, ns_pair.ip_b, ns_pair.ip_a, port, SERVER, "tcp") for port in servers}


def test_listeners_that_close_are_never_connections(netns: str):
    sampler = Sampler(only=(netns,))
    sampler.start()
    try:
        for port in (7001, 7002, 7003):
            listener = open_socket(netns)
            listener.bind(("0.0.0.0", port))
            listener.listen()
            if port == 7002:
                sampler.cycle()  # one seen in a dump before it closes
            listener.close()
        unconnected = open_socket(netns)
        unconnected.bind(("127.0.0.1", 7004))
        unconnected.close()
        time.sleep(0.1)
        results = [sampler.cycle(), sampler.cycle()]
    finally:
        sampler.close()
    assert keys(results, netns) == set(), "no phantom failed connection from 0.0.0.0 to 0.0.0.0:0"


class HeldSocket:
    """A netlink socket whose replies can be held back, as a kernel that does not answer."""

    def __init__(self, sock, hold: threading.Event) -> None:
        self._sock, self._hold = sock, hold

    def recv(self, size: int, flags: int = 0) -> bytes:
        deadline = time.monotonic() + (self._sock.gettimeout() or 0)
        while self._hold.is_set():
            if time.monotonic() > deadline:
                raise TimeoutError("held")
            time.sleep(0.01)
        return self._sock.recv(size, flags)

    def __getattr__(self, name: str):
        return getattr(self._sock, name)


def test_a_held_netlink_reply_makes_the_agent_unhealthy_until_it_recovers(netns: str):
    import socket as socketlib

    hold = threading.Event()

    def opener(protocol: int) -> HeldSocket:
        return HeldSocket(socketlib.socket(socketlib.AF_NETLINK, socketlib.SOCK_RAW | socketlib.SOCK_CLOEXEC,
                                           protocol), hold)

    sampler = Sampler(only=(netns,), timeout=3.0, dump_opener=opener)
    with running_agent(sampler, 0.3, watchdog=1.0) as (agent, results):
        http = serve(agent)
        health = f"http://127.0.0.1:{agent.config.port}/healthz"
        try:
            wait_cycles(results, 2)
            assert httpx.get(health).status_code == 200
            hold.set()  # the kernel stops answering dumps: a cycle gets stuck in recv()
            deadline = time.monotonic() + 10
            while (reply := httpx.get(health)).status_code == 200:
                assert time.monotonic() < deadline, "the watchdog never noticed"
                time.sleep(0.1)
            assert reply.status_code == 503 and "collection cycle stuck" in reply.text
            assert "polling network namespace" in reply.text
            while agent.sampler.timeouts == 0:  # the read times out: the namespace is abandoned
                assert time.monotonic() < deadline + 10
                time.sleep(0.1)
            hold.clear()
            wait_cycles(results, 2)
            assert httpx.get(health).text == "ok\n"
            metrics = httpx.get(f"http://127.0.0.1:{agent.config.port}/metrics").text
            assert "flowlens_agent_stalls_total 1.0" in metrics
            assert "flowlens_agent_healthy 1.0" in metrics
        finally:
            http.stop()
    assert agent.watchdog.stalls == 1
