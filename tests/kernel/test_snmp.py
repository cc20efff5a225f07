"""TcpMibReader against /proc/net/snmp in real namespaces, and parse_tcp_mib on crafted text."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import pytest

from flowlens.kernel.netns import entered
from flowlens.kernel.snmp import MibParseError, TcpMibReader, parse_tcp_mib
from flowlens.model.counters import TcpMib
from flowlens.model.errors import FlowlensError
from tests.conftest import NsPair, ns_exec, sh

SAMPLE = """\
Ip: Forwarding DefaultTTL InReceives InHdrErrors
Ip: 1 64 1000 0
Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab \
InSegs OutSegs RetransSegs InErrs OutRsts InCsumErrors
Tcp: 1 200 120000 -1 11 12 13 14 2 15 16 17 18 19 0
Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
Udp: 5 0 0 5 0 0 0 0 0
"""
SAMPLE_MIB = TcpMib(active_opens=11, passive_opens=12, attempt_fails=13, estab_resets=14, in_segs=15,
                    out_segs=16, retrans_segs=17, in_errs=18, out_rsts=19)


def proc_tcp_mib(ns: str) -> TcpMib:
    """The Tcp: lines as the namespace's own ``cat`` sees them, decoded independently of flowlens."""
    text = ns_exec(ns, "cat", "/proc/net/snmp").stdout
    header, values = (line.split()[1:] for line in text.splitlines() if line.split()[0] == "Tcp:")
    row = dict(zip(header, values, strict=True))
    return TcpMib(*(int(row[name]) for name in (
        "ActiveOpens", "PassiveOpens", "AttemptFails", "EstabResets", "InSegs", "OutSegs",
        "RetransSegs", "InErrs", "OutRsts")))


def connect_many(ns: str, count: int) -> None:
    """``count`` full TCP connect/accept/close cycles over loopback inside ``ns``."""
    with entered(f"/run/netns/{ns}"):
        listener = socket.create_server(("127.0.0.1", 0))
        try:
            for _ in range(count):
                client = socket.create_connection(listener.getsockname())
                server, _ = listener.accept()
                client.sendall(b"ping")
                assert server.recv(4) == b"ping"
                client.close()
                server.close()
        finally:
            listener.close()


def stable(read: Callable[[], TcpMib], ns: str) -> tuple[TcpMib, TcpMib]:
    """Our reading and /proc's, taken back to back while no segment moves (delayed ACKs settle)."""
    for _ in range(20):
        first, tool, again = read(), proc_tcp_mib(ns), read()
        if first == again:
            return first, tool
        time.sleep(0.05)
    pytest.fail("the TCP MIB kept moving while being compared")


def open_reader_in_thread(ns: str) -> TcpMibReader:
    """Open a reader from a worker thread, so /proc/self (the main thread) would be the wrong answer."""
    box: list[TcpMibReader] = []

    def work() -> None:
        with entered(f"/run/netns/{ns}"):
            box.append(TcpMibReader())

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    return box[0]


@pytest.mark.kernel
def test_reader_matches_proc_after_connections(netns: str) -> None:
    with entered(f"/run/netns/{netns}"):
        reader = TcpMibReader()
    try:
        before = reader.read()
        connect_many(netns, 5)
        ours, theirs = stable(reader.read, netns)
        assert ours == theirs
        assert ours.active_opens - before.active_opens == 5
        assert ours.passive_opens - before.passive_opens == 5
        assert ours.in_segs > before.in_segs and ours.out_segs > before.out_segs
    finally:
        reader.close()


@pytest.mark.kernel
def test_reader_sees_only_its_own_namespace(ns_pair: NsPair) -> None:
    reader_a = open_reader_in_thread(ns_pair.a)
    reader_b = open_reader_in_thread(ns_pair.b)
    try:
        a_before, b_before = reader_a.read(), reader_b.read()
        connect_many(ns_pair.b, 3)
        a_after, a_proc = stable(reader_a.read, ns_pair.a)
        b_after, b_proc = stable(reader_b.read, ns_pair.b)
        assert a_after == a_proc == a_before  # nothing happened in a
        assert b_after == b_proc
        assert b_after.active_opens - b_before.active_opens == 3
        assert b_after.passive_opens - b_before.passive_opens == 3
    finally:
        reader_a.close()
        reader_b.close()


@pytest.mark.kernel
def test_reader_keeps_its_namespace_alive(netns: str) -> None:
    with entered(f"/run/netns/{netns}"):
        reader = TcpMibReader()
    try:
        connect_many(netns, 2)
        ours, _ = stable(reader.read, netns)
        sh("ip", "netns", "del", netns)
        # The open file holds a reference to the namespace: it still answers, with its numbers.
        assert reader.read() == ours
    finally:
        reader.close()


def test_parse_sample() -> None:
    assert parse_tcp_mib(SAMPLE) == SAMPLE_MIB


def test_parse_reads_columns_by_name() -> None:
    text = ("Tcp: OutRsts InErrs RetransSegs OutSegs InSegs EstabResets AttemptFails PassiveOpens "
            "ActiveOpens NewCounter\nTcp: 9 8 7 6 5 4 3 2 1 77\n")
    assert parse_tcp_mib(text) == TcpMib(1, 2, 3, 4, 5, 6, 7, 8, 9)


def test_parse_ignores_tcpext_lines() -> None:
    assert parse_tcp_mib(SAMPLE + "TcpExt: SyncookiesSent\nTcpExt: 4\n") == SAMPLE_MIB


@pytest.mark.parametrize(("text", "message"), [
    ("", "found 0 lines"),
    ("Ip: Forwarding\nIp: 1\n", "found 0 lines"),
    ("Tcp: ActiveOpens PassiveOpens\n", "found 1 lines"),
    (SAMPLE + SAMPLE, "found 4 lines"),
    ("Tcp: ActiveOpens PassiveOpens\nTcp: 1\n", "2 columns but the values line has 1"),
    (SAMPLE.replace("RetransSegs", "Retrans"), "lack the RetransSegs column"),
    (SAMPLE.replace(" 17 18 ", " x17 18 "), "RetransSegs is 'x17', not an integer"),
])
def test_parse_rejects_malformed_text(text: str, message: str) -> None:
    with pytest.raises(MibParseError, match=message) as caught:
        parse_tcp_mib(text)
    assert isinstance(caught.value, FlowlensError)
