"""Record the netlink datagrams that tests/kernel/test_recorded.py replays without root.

Run as root, from the repository root, whenever the fixtures need renewing:

    sudo .venv/bin/python tests/kernel/record_fixtures.py [--out tests/kernel/fixtures]

Each scenario builds what it needs in network namespaces of its own (TCP connections over
loopback, a veth pair, iptables DNAT, qdiscs), drives the flowlens reader through a recording
opener that notes every datagram sent and received, and writes one JSON file:

    {"scenario": ..., "kernel": "<uname -r>", "protocol": <netlink protocol>,
     "exchanges": [{"request": "<base64>", "replies": ["<base64>", ...]}, ...],
     "events": ["<base64>", ...],        # datagrams read with no request (multicast)
     "expected": {...}}

What a test should find in those datagrams (``expected``) is taken from an independent source
at the same moment: ``ss -tinHeaO`` for sockets, ``conntrack -L`` for NAT entries, ``ip -s -d
-j link`` and ``tc -s -j qdisc`` for counters, and the byte counts and addresses of the
connections this script made itself; never from the flowlens parser. Snapshots are taken before
and after each recording and the recording is redone until both agree, so the counters did not
move in between. Everything created is removed at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import platform
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from flowlens.kernel.conntrack import Conntrack
from flowlens.kernel.netlink import NETLINK_ROUTE, NETLINK_SOCK_DIAG, NLM_F_REQUEST, NetlinkSocket, open_netlink
from flowlens.kernel.netns import entered
from flowlens.kernel.rtnetlink import IFINFOMSG, RTM_GETLINK, RouteNetlink
from flowlens.kernel.sock_diag import REQ_V2, SOCK_DIAG_BY_FAMILY, DestroyEvents, SockDiag
from flowlens.model.errors import NetlinkError

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
PREFIX = f"flrec-{uuid.uuid4().hex[:6]}"

# ss state names -> the kernel's TCP state numbers (include/net/tcp_states.h).
SS_STATES = {"ESTAB": 1, "SYN-SENT": 2, "SYN-RECV": 3, "FIN-WAIT-1": 4, "FIN-WAIT-2": 5, "TIME-WAIT": 6,
             "UNCONN": 7, "CLOSE-WAIT": 8, "LAST-ACK": 9, "LISTEN": 10, "CLOSING": 11}
TCP_CLOSE = 7
# offsetof(struct tcp_info, tcpi_total_rto) (Linux 6.7+), read from getsockopt(TCP_INFO): a
# second path to the counter, as ss 6.1 does not print it.
TCPI_TOTAL_RTO_OFFSET = 240


def sh(*args: str, check: bool = True) -> str:
    return subprocess.run(args, check=check, capture_output=True, text=True).stdout


def ns_sh(ns: str, *args: str, check: bool = True) -> str:
    return sh("ip", "netns", "exec", ns, *args, check=check)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --- recording ---------------------------------------------------------------------------------


class Recording:
    """An opener (see flowlens.kernel.netlink.Opener) whose sockets are real netlink sockets
    that note each datagram: a request starts an exchange, what is read goes to the last one
    (or, before any request, to ``events``)."""

    def __init__(self) -> None:
        self.protocol = -1
        self.exchanges: list[dict[str, Any]] = []
        self.events: list[str] = []

    def __call__(self, protocol: int) -> _RecordingSocket:
        self.protocol = protocol
        return _RecordingSocket(open_netlink(protocol), self)

    def clear(self) -> None:
        self.exchanges.clear()
        self.events.clear()


class _RecordingSocket:
    def __init__(self, sock: socket.socket, recording: Recording) -> None:
        self._sock, self._recording = sock, recording

    def send(self, data: bytes, flags: int = 0) -> int:
        self._recording.exchanges.append({"request": b64(data), "replies": []})
        return self._sock.send(data, flags)

    def recv(self, size: int, flags: int = 0) -> bytes:
        data = self._sock.recv(size, flags)
        if self._recording.exchanges:
            self._recording.exchanges[-1]["replies"].append(b64(data))
        else:
            self._recording.events.append(b64(data))
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def fixture(scenario: str, about: str, recording: Recording, expected: Any) -> dict[str, Any]:
    return {"scenario": scenario, "about": about, "kernel": platform.release(), "protocol": recording.protocol,
            "exchanges": list(recording.exchanges), "events": list(recording.events), "expected": expected}


def settled(snapshot: Callable[[], Any], record: Callable[[], None], attempts: int = 8) -> Any:
    """Run ``record`` between two equal snapshots (the state did not move while it ran);
    return that snapshot."""
    for _ in range(attempts):
        before = snapshot()
        record()
        after = snapshot()
        if before == after:
            return after
        time.sleep(0.5)
    raise SystemExit("the counters kept moving while recording: is something else using these namespaces?")


# --- namespaces and traffic --------------------------------------------------------------------


class Namespaces:
    """Network namespaces made for one run; all deleted (their links, rules, conntrack entries
    and qdiscs with them) by :meth:`cleanup`."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.sockets: list[socket.socket] = []

    def add(self, label: str) -> str:
        name = f"{PREFIX}-{label}"
        sh("ip", "netns", "add", name)
        self.names.append(name)
        # No IPv6 autoconfiguration, router solicitations or MLD reports: links stay quiet.
        for key in ("all", "default"):
            ns_sh(name, "sysctl", "-qw", f"net.ipv6.conf.{key}.accept_dad=0")
        ns_sh(name, "ip", "link", "set", "lo", "up")
        return name

    def socket(self, ns: str, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM) -> socket.socket:
        with entered(f"/run/netns/{ns}"):
            sock = socket.socket(family, kind)
        self.sockets.append(sock)
        return sock

    def cleanup(self) -> None:
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.close()
        for name in self.names:
            for pid in sh("ip", "netns", "pids", name, check=False).split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), 9)
            sh("ip", "netns", "del", name, check=False)
        leftover = [n for n in sh("ip", "netns", "list").split() if n.startswith(PREFIX)]
        if leftover:
            print(f"warning: namespaces left behind: {leftover}", file=sys.stderr)


def listen(spaces: Namespaces, ns: str, family: int, address: str, port: int) -> socket.socket:
    sock = spaces.socket(ns, family)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind((address, port))
    sock.listen(128)
    return sock


def connect(spaces: Namespaces, ns: str, family: int, server: socket.socket, address: str,
            port: int) -> tuple[socket.socket, socket.socket]:
    client = spaces.socket(ns, family)
    client.connect((address, port))
    accepted, _ = server.accept()
    spaces.sockets.append(accepted)
    return client, accepted


def transfer(sender: socket.socket, receiver: socket.socket, count: int) -> None:
    """Send ``count`` bytes one way and read them all on the other end."""
    thread = threading.Thread(target=sender.sendall, args=(b"x" * count,))
    thread.start()
    got = 0
    while got < count:
        chunk = receiver.recv(1 << 16)
        if not chunk:
            raise SystemExit("connection closed during a transfer")
        got += len(chunk)
    thread.join()


def text_address(text: str, family: int) -> str:
    """An address the way flowlens writes it: IPv4-mapped IPv6 as IPv4, wildcards spelt out."""
    text = text.strip("[]")
    if text == "*":
        return "0.0.0.0" if family == socket.AF_INET else "::"
    if text.startswith("::ffff:") and "." in text:
        return text[len("::ffff:"):]
    return text


def split_endpoint(text: str, family: int) -> tuple[str, int]:
    address, _, port = text.rpartition(":")
    return text_address(address, family), 0 if port == "*" else int(port)


# --- sock_diag ----------------------------------------------------------------------------------


def ss_sockets(ns: str, totals: dict[tuple[str, int, str, int], int | None]) -> list[dict[str, Any]]:
    """Every TCP socket of a namespace as ``ss -tinHeaO`` shows it, IPv4 then IPv6 (the order
    of the kernel's dumps), as TcpSocket fields. ``total_rto`` comes from ``totals``."""
    found = []
    for family, flag in ((socket.AF_INET, "-4"), (socket.AF_INET6, "-6")):
        for line in ns_sh(ns, "ss", flag, "-tinHeaO").splitlines():
            fields = line.split()
            if not fields or fields[0] in ("TIME-WAIT", "SYN-RECV"):
                continue  # not dumped by flowlens
            state, _recv_q, send_q, local, peer, *rest = fields
            values: dict[str, str] = {}
            for token in rest:
                key, sep, value = token.partition(":")
                if sep and key not in values:
                    values[key] = value
            local_ip, local_port = split_endpoint(local, family)
            remote_ip, remote_port = split_endpoint(peer, family)
            rtt = values.get("rtt", "0/0").split("/")[0]
            retrans = values.get("retrans", "0/0").split("/")
            found.append({
                "cookie": int(values["sk"], 16),
                "state": SS_STATES[state],
                "local_ip": local_ip,
                "local_port": local_port,
                "remote_ip": remote_ip,
                "remote_port": remote_port,
                "bytes_acked": int(values.get("bytes_acked", 0)),
                "bytes_received": int(values.get("bytes_received", 0)),
                "bytes_sent": int(values.get("bytes_sent", 0)),
                "bytes_retrans": int(values.get("bytes_retrans", 0)),
                "segs_out": int(values.get("segs_out", 0)),
                "segs_in": int(values.get("segs_in", 0)),
                "total_retrans": int(retrans[1]),
                "total_rto": totals.get((local_ip, local_port, remote_ip, remote_port)),
                "rtt_us": round(float(rtt) * 1000),
                "delivered": int(values.get("delivered", 0)),
                "write_queue": int(send_q),
                "rcv_ooopack": int(values.get("rcv_ooopack", 0)),
                "unacked": int(values.get("unacked", 0)),
                "recv_q": int(_recv_q),
            })
    return found


def total_rto(sock: socket.socket) -> int | None:
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 512)
    if len(info) < TCPI_TOTAL_RTO_OFFSET + 2:
        return None
    return struct.unpack_from("=H", info, TCPI_TOTAL_RTO_OFFSET)[0]


def endpoint_key(sock: socket.socket) -> tuple[str, int, str, int]:
    family = sock.family
    local = sock.getsockname()
    try:
        peer = sock.getpeername()
    except OSError:
        peer = ("0.0.0.0" if family == socket.AF_INET else "::", 0)
    return text_address(local[0], family), local[1], text_address(peer[0], family), peer[1]


def quiet(ns: str, totals: dict[tuple[str, int, str, int], int | None], timeout: float = 30.0) -> None:
    """Wait until every socket's data is read and acknowledged and its counters stand still."""
    deadline = time.monotonic() + timeout
    last: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        now = ss_sockets(ns, totals)
        busy = any(s["unacked"] or s["recv_q"] or (s["write_queue"] and s["state"] != 10) for s in now)
        if not busy and now == last:
            return
        last = now
        time.sleep(0.5)
    raise SystemExit("the sockets did not settle")


def record_sock_diag(spaces: Namespaces) -> dict[str, Any]:
    ns = spaces.add("diag")
    # Ethernet-sized segments, not 64 KiB ones, so that random drops hit some of many packets.
    ns_sh(ns, "ip", "link", "set", "lo", "mtu", "1500")
    ns_sh(ns, "ethtool", "-K", "lo", "tso", "off", "gso", "off")
    l4 = listen(spaces, ns, socket.AF_INET, "127.0.0.1", 5000)
    l6 = listen(spaces, ns, socket.AF_INET6, "::1", 5001)
    dual = listen(spaces, ns, socket.AF_INET6, "::", 5002)  # IPv4 clients appear IPv4-mapped
    # (client, server, bytes client -> server, bytes server -> client)
    plan = [
        (*connect(spaces, ns, socket.AF_INET, l4, "127.0.0.1", 5000), 1000, 300_000),
        (*connect(spaces, ns, socket.AF_INET6, l6, "::1", 5001), 5000, 70),
        (*connect(spaces, ns, socket.AF_INET, dual, "127.0.0.1", 5002), 123, 456),
    ]
    for client, server, up, down in plan:
        transfer(client, server, up)
        transfer(server, client, down)
    # One over a lossy loopback: retransmissions, out-of-order arrivals, maybe timeouts.
    lossy = connect(spaces, ns, socket.AF_INET, l4, "127.0.0.1", 5000)
    drop = ("INPUT", "-i", "lo", "-m", "statistic", "--mode", "random", "--probability", "0.04", "-j", "DROP")
    ns_sh(ns, "iptables", "-A", *drop)
    try:
        transfer(lossy[0], lossy[1], 400_000)
        transfer(lossy[1], lossy[0], 200_000)
    finally:
        ns_sh(ns, "iptables", "-D", *drop)
    # Idle ones, enough for a dump of several datagrams.
    idle = [connect(spaces, ns, socket.AF_INET, l4, "127.0.0.1", 5000) for _ in range(36)]
    for client, server in idle:
        transfer(client, server, 10)
        transfer(server, client, 20)

    held = [l4, l6, dual, lossy[0], lossy[1]] + [s for c, srv, _u, _d in plan for s in (c, srv)]
    held += [s for pair in idle for s in pair]

    def totals() -> dict[tuple[str, int, str, int], int | None]:
        return {endpoint_key(s): total_rto(s) for s in held}

    quiet(ns, totals())
    recording = Recording()

    def snapshot() -> list[dict[str, Any]]:
        return ss_sockets(ns, totals())

    def record() -> None:
        recording.clear()
        with entered(f"/run/netns/{ns}"):
            diag = SockDiag(opener=recording)
        try:
            for _ in diag.dump():
                pass
        finally:
            diag.close()

    sockets = settled(snapshot, record)
    for sock in sockets:
        del sock["unacked"], sock["recv_q"]
    lossy_port = lossy[0].getsockname()[1]
    lossy_client = next(s for s in sockets if s["local_port"] == lossy_port)
    if not lossy_client["total_retrans"]:
        print("note: the lossy connection saw no retransmission this time", file=sys.stderr)
    return fixture(
        "sock_diag_dump",
        "SockDiag.dump() of a namespace holding 3 listeners (127.0.0.1, ::1, dual-stack ::) and 41 "
        "connections, one of them over a lossy loopback; expected: ss -tinHeaO at the same moment "
        "(total_rto: getsockopt(TCP_INFO)), in dump order",
        recording, {"sockets": sockets},
    )


def record_destroy(spaces: Namespaces) -> dict[str, Any]:
    ns = spaces.add("destroy")
    recording = Recording()
    with entered(f"/run/netns/{ns}"):
        events = DestroyEvents(rcvbuf=1 << 20, opener=recording)
    try:
        l4 = listen(spaces, ns, socket.AF_INET, "127.0.0.1", 6000)
        l6 = listen(spaces, ns, socket.AF_INET6, "::1", 6001)
        plan = [  # (client, server, bytes client -> server, bytes server -> client, reset)
            (*connect(spaces, ns, socket.AF_INET, l4, "127.0.0.1", 6000), 1111, 2222, False),
            (*connect(spaces, ns, socket.AF_INET6, l6, "::1", 6001), 3333, 4444, False),
            (*connect(spaces, ns, socket.AF_INET, l4, "127.0.0.1", 6000), 555, 0, True),
        ]
        expected = []
        for client, server, up, down, _reset in plan:
            transfer(client, server, up)
            if down:
                transfer(server, client, down)
        cookies = {(s["local_ip"], s["local_port"], s["remote_ip"], s["remote_port"]): s["cookie"]
                   for s in ss_sockets(ns, {})}
        for client, server, up, down, reset in plan:
            # tcpi_bytes_received counts sequence space received in order, and a FIN takes one:
            # each end of a graceful close receives the other's FIN; a reset sends none.
            fin = 0 if reset else 1
            for sock, sent, received in ((client, up, down + fin), (server, down, up + fin)):
                key = endpoint_key(sock)
                entry = {"cookie": cookies[key], "local_ip": key[0], "local_port": key[1], "remote_ip": key[2],
                         "remote_port": key[3], "bytes_sent": sent, "bytes_received": received,
                         "state": TCP_CLOSE, "reset": reset}
                if reset and sock is client:
                    # close() with SO_LINGER 0 goes through tcp_disconnect(), which clears the
                    # source address (not bound by the application), the destination port and
                    # the counters before the socket is freed: so the notification says.
                    wildcard = "0.0.0.0" if sock.family == socket.AF_INET else "::"
                    entry.update(local_ip=wildcard, remote_port=0, bytes_sent=0, bytes_received=0)
                expected.append(entry)
            if reset:  # an abortive close: RST, no FIN
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                client.close()
                with contextlib.suppress(ConnectionResetError):
                    server.recv(10)
                server.close()
            else:
                client.close()
                assert server.recv(10) == b""
                server.close()
        for listener in (l4, l6):
            key = endpoint_key(listener)
            expected.append({"cookie": cookies[key], "local_ip": key[0], "local_port": key[1],
                             "remote_ip": key[2], "remote_port": key[3], "bytes_sent": 0,
                             "bytes_received": 0, "state": TCP_CLOSE, "reset": False})
            listener.close()
        deadline = time.monotonic() + 10
        drained: list[Any] = []
        while len(drained) < len(expected) and time.monotonic() < deadline:
            time.sleep(0.2)
            drained += events.drain()
        if len(drained) != len(expected):
            raise SystemExit(f"{len(drained)} destroy notifications came, {len(expected)} were due")
    finally:
        events.close()
    return fixture(
        "destroy_events",
        "DestroyEvents.drain() after 3 connections closed (one reset) and 2 listeners closed; expected: "
        "cookies from ss -tinHeaO before the close, addresses from getsockname/getpeername, the data bytes "
        "sent each way (bytes_received: plus 1 for the FIN received in a graceful close), TCP_CLOSE; the "
        "reset client as tcp_disconnect() leaves it (no source address, destination port or counters)",
        recording, {"sockets": expected},
    )


# --- conntrack ----------------------------------------------------------------------------------

CLIENT4, SERVER4, SERVICE4 = "10.77.0.1", "10.77.0.2", "10.96.0.10"
CLIENT6, SERVER6, SERVICE6 = "fd77::1", "fd77::2", "fd00:96::10"


def conntrack_entries(ns: str) -> list[dict[str, Any]]:
    """``conntrack -L`` of a namespace, both families: original and reply tuples."""
    entries = []
    for family in ("ipv4", "ipv6"):
        for line in ns_sh(ns, "conntrack", "-L", "-f", family).splitlines():
            fields = line.split()
            pairs = [f.split("=", 1) for f in fields if "=" in f]
            srcs = [v for k, v in pairs if k == "src"]
            dsts = [v for k, v in pairs if k == "dst"]
            sports = [int(v) for k, v in pairs if k == "sport"]
            dports = [int(v) for k, v in pairs if k == "dport"]
            if len(srcs) < 2 or len(sports) < 2:
                continue  # not a port protocol
            entries.append({"protocol": int(fields[1]),
                            "orig": [srcs[0], sports[0], dsts[0], dports[0]],
                            "reply": [srcs[1], sports[1], dsts[1], dports[1]]})
    return sorted(entries, key=json.dumps)


def conntrack_answer(entries: list[dict[str, Any]], protocol: int, src: str, sport: int, dst: str,
                     dport: int) -> list[Any] | None:
    """What ``lookup`` should say, from conntrack -L: the reply source of the entry with this
    original tuple when it was DNATed."""
    for entry in entries:
        if entry["protocol"] == protocol and entry["orig"] == [src, sport, dst, dport]:
            reply_src, reply_sport = entry["reply"][0], entry["reply"][1]
            return None if (reply_src, reply_sport) == (dst, dport) else [reply_src, reply_sport]
    return None


def record_conntrack(spaces: Namespaces) -> dict[str, Any]:
    client_ns, server_ns = spaces.add("ct-client"), spaces.add("ct-server")
    sh("ip", "link", "add", "veth0", "netns", client_ns, "type", "veth", "peer", "name", "veth0", "netns", server_ns)
    for ns, v4, v6 in ((client_ns, CLIENT4, CLIENT6), (server_ns, SERVER4, SERVER6)):
        ns_sh(ns, "ip", "addr", "add", f"{v4}/24", "dev", "veth0")
        ns_sh(ns, "ip", "addr", "add", f"{v6}/64", "dev", "veth0", "nodad")
        ns_sh(ns, "ip", "link", "set", "veth0", "up")
    ns_sh(client_ns, "ip", "route", "add", "10.96.0.0/12", "dev", "veth0")
    ns_sh(client_ns, "ip", "-6", "route", "add", "fd00:96::/64", "dev", "veth0")
    for tool, service, target in (("iptables", SERVICE4, f"{SERVER4}:9090"),
                                  ("ip6tables", SERVICE6, f"[{SERVER6}]:9090")):
        ns_sh(client_ns, tool, "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", service, "--dport", "80",
              "-j", "DNAT", "--to-destination", target)
    ns_sh(client_ns, "iptables", "-t", "nat", "-A", "OUTPUT", "-p", "udp", "-d", SERVICE4, "--dport", "53",
          "-j", "DNAT", "--to-destination", f"{SERVER4}:5353")
    server4 = listen(spaces, server_ns, socket.AF_INET, "0.0.0.0", 9090)
    server6 = listen(spaces, server_ns, socket.AF_INET6, SERVER6, 9090)
    udp_server = spaces.socket(server_ns, socket.AF_INET, socket.SOCK_DGRAM)
    udp_server.bind((SERVER4, 5353))

    nat4 = connect(spaces, client_ns, socket.AF_INET, server4, SERVICE4, 80)
    nat6 = connect(spaces, client_ns, socket.AF_INET6, server6, SERVICE6, 80)
    direct = connect(spaces, client_ns, socket.AF_INET, server4, SERVER4, 9090)
    for client, server in (nat4, nat6, direct):
        transfer(client, server, 100)
    udp = spaces.socket(client_ns, socket.AF_INET, socket.SOCK_DGRAM)
    udp.sendto(b"q" * 40, (SERVICE4, 53))
    udp_server.recv(100)

    sport4, sport6, sport_direct = nat4[0].getsockname()[1], nat6[0].getsockname()[1], direct[0].getsockname()[1]
    udp_sport = udp.getsockname()[1]
    tcp, udp_proto = socket.IPPROTO_TCP, socket.IPPROTO_UDP
    lookups = [  # (what it is, protocol, src, sport, dst, dport, the answer the topology implies)
        ("DNATed IPv4 connection", tcp, CLIENT4, sport4, SERVICE4, 80, [SERVER4, 9090]),
        ("DNATed IPv6 connection", tcp, CLIENT6, sport6, SERVICE6, 80, [SERVER6, 9090]),
        ("direct connection, not DNATed", tcp, CLIENT4, sport_direct, SERVER4, 9090, None),
        ("no such entry (ENOENT)", tcp, CLIENT4, 1, SERVER4, 2, None),
        ("the reply direction of a DNATed connection", tcp, SERVER4, 9090, CLIENT4, sport4, None),
        ("DNATed UDP flow", udp_proto, CLIENT4, udp_sport, SERVICE4, 53, [SERVER4, 5353]),
    ]
    recording = Recording()
    expected: dict[str, Any] = {}

    def record() -> None:
        recording.clear()
        with entered(f"/run/netns/{client_ns}"):
            ct = Conntrack(opener=recording)
        try:
            for _what, *query, _answer in lookups:
                ct.lookup(*query)
            ct.dump_nat(tcp)
            ct.dump_nat(udp_proto)
        finally:
            ct.close()

    entries = settled(lambda: conntrack_entries(client_ns), record)
    expected["lookups"] = []
    for what, protocol, src, sport, dst, dport, implied in lookups:
        answer = conntrack_answer(entries, protocol, src, sport, dst, dport)
        if answer != implied:
            raise SystemExit(f"conntrack -L says {answer} for the {what}, the topology {implied}")
        expected["lookups"].append({"what": what, "query": [protocol, src, sport, dst, dport], "target": answer})
    expected["dump_nat"] = {
        str(protocol): sorted(
            [[protocol, *e["orig"], e["reply"][0], e["reply"][1]] for e in entries
             if e["protocol"] == protocol and e["reply"][:2] != e["orig"][2:]],
            key=json.dumps)
        for protocol in (tcp, udp_proto)
    }
    if len(expected["dump_nat"][str(tcp)]) != 2 or len(expected["dump_nat"][str(udp_proto)]) != 1:
        raise SystemExit(f"unexpected NAT entries in conntrack -L: {expected['dump_nat']}")
    return fixture(
        "conntrack",
        "Conntrack.lookup() of 6 tuples, then dump_nat(TCP) and dump_nat(UDP), in a client namespace whose "
        "OUTPUT chain DNATs a service address (IPv4, IPv6, UDP) to a server namespace; expected: conntrack -L "
        "(dump_nat entries as [protocol, src, sport, dst, dport, target ip, target port])",
        recording, expected,
    )


# --- rtnetlink ----------------------------------------------------------------------------------


def ip_links(ns: str) -> list[dict[str, Any]]:
    links = json.loads(ns_sh(ns, "ip", "-s", "-d", "-j", "link", "show"))
    by_name = {link["ifname"]: link["ifindex"] for link in links}
    out = []
    for link in links:
        stats = link["stats64"]
        if "link_index" in link:
            peer = link["link_index"]
        elif link.get("link"):
            peer = by_name[link["link"]]
        else:
            peer = None
        out.append({
            "ifindex": link["ifindex"], "name": link["ifname"], "kind": link.get("linkinfo", {}).get("info_kind", ""),
            "peer_ifindex": peer, "rx_bytes": stats["rx"]["bytes"], "tx_bytes": stats["tx"]["bytes"],
            "rx_packets": stats["rx"]["packets"], "tx_packets": stats["tx"]["packets"],
            "rx_dropped": stats["rx"]["dropped"], "tx_dropped": stats["tx"]["dropped"],
        })
    return out


def tc_qdiscs(ns: str) -> list[dict[str, Any]]:
    by_name = {link["ifname"]: link["ifindex"] for link in json.loads(ns_sh(ns, "ip", "-j", "link", "show"))}
    out = []
    for q in json.loads(ns_sh(ns, "tc", "-s", "-j", "qdisc", "show")):
        if q.get("root"):
            parent = "root"
        elif q.get("parent") == "ffff:fff1":
            parent = "ingress"  # flowlens names tc's ffff:fff1
        else:
            parent = q["parent"]
        out.append({
            "ifindex": by_name[q["dev"]], "kind": q["kind"], "handle": q["handle"], "parent": parent,
            "bytes": q["bytes"], "packets": q["packets"], "drops": q["drops"], "overlimits": q["overlimits"],
            "requeues": q["requeues"], "backlog": q["backlog"], "qlen": q["qlen"],
        })
    return out


def record_rtnetlink(spaces: Namespaces) -> dict[str, Any]:
    a, b = spaces.add("rt-a"), spaces.add("rt-b")
    for ns in (a, b):
        for key in ("all", "default"):
            ns_sh(ns, "sysctl", "-qw", f"net.ipv6.conf.{key}.disable_ipv6=1")
    sh("ip", "link", "add", "veth0", "netns", a, "type", "veth", "peer", "name", "veth0", "netns", b)
    ns_sh(a, "ip", "link", "add", "br0", "type", "bridge")
    ns_sh(a, "ip", "link", "add", "inner0", "type", "veth", "peer", "name", "inner1")  # both ends here
    for ns, ip in ((a, "10.78.0.1"), (b, "10.78.0.2")):
        ns_sh(ns, "ip", "addr", "add", f"{ip}/24", "dev", "veth0")
        ns_sh(ns, "ip", "link", "set", "veth0", "up")
    for name in ("br0", "inner0", "inner1"):
        ns_sh(a, "ip", "link", "set", name, "up")
    ns_sh(a, "tc", "qdisc", "add", "dev", "veth0", "root", "handle", "1:", "htb", "default", "10")
    ns_sh(a, "tc", "class", "add", "dev", "veth0", "parent", "1:", "classid", "1:10", "htb", "rate", "100mbit")
    ns_sh(a, "tc", "qdisc", "add", "dev", "veth0", "parent", "1:10", "handle", "10:", "pfifo")
    ns_sh(a, "tc", "qdisc", "add", "dev", "veth0", "ingress")
    # UDP both ways, more one way than the other, through the qdiscs of veth0 in ``a``.
    far = spaces.socket(b, socket.AF_INET, socket.SOCK_DGRAM)
    far.bind(("10.78.0.2", 7000))
    near = spaces.socket(a, socket.AF_INET, socket.SOCK_DGRAM)
    near.bind(("10.78.0.1", 7000))
    for size in (1000, 1000, 1000, 100, 200, 300):
        near.sendto(b"u" * size, ("10.78.0.2", 7000))
        far.recv(2000)
    for size in (500, 50):
        far.sendto(b"d" * size, ("10.78.0.1", 7000))
        near.recv(2000)
    time.sleep(0.5)

    recording = Recording()

    def snapshot() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        return ip_links(a), tc_qdiscs(a)

    def record() -> None:
        recording.clear()
        with entered(f"/run/netns/{a}"):
            route = RouteNetlink(opener=recording)
        try:
            route.links()
            route.qdiscs()
        finally:
            route.close()

    links, qdiscs = settled(snapshot, record)
    if not any(q["bytes"] for q in qdiscs) or not any(link["tx_bytes"] for link in links):
        raise SystemExit("no traffic went through the qdiscs")
    return fixture(
        "rtnetlink",
        "RouteNetlink.links() then qdiscs() in a namespace with lo, a bridge, a veth pair with both ends in it "
        "and a veth whose peer is in another namespace (htb root, pfifo leaf, ingress), after UDP traffic "
        "both ways; expected: ip -s -d -j link and tc -s -j qdisc (parent ffff:fff1 written 'ingress', as "
        "flowlens does)",
        recording, {"links": links, "qdiscs": qdiscs},
    )


# --- errors -------------------------------------------------------------------------------------


def record_errors(spaces: Namespaces) -> dict[str, Any]:
    ns = spaces.add("err")
    exchanges, expected = [], []
    recording = Recording()
    with entered(f"/run/netns/{ns}"):
        diag = NetlinkSocket(NETLINK_SOCK_DIAG, opener=recording)
    try:
        # net/core/sock_diag.c: a family at or above AF_MAX is EINVAL.
        with contextlib.suppress(NetlinkError):
            list(diag.dump(SOCK_DIAG_BY_FAMILY, REQ_V2.pack(200, socket.IPPROTO_TCP, 0, 0)))
    finally:
        diag.close()
    exchanges.append({"protocol": NETLINK_SOCK_DIAG, **recording.exchanges[0]})
    expected.append({"what": "sock_diag dump of family 200", "errno": "EINVAL"})
    recording = Recording()
    with entered(f"/run/netns/{ns}"):
        route = NetlinkSocket(NETLINK_ROUTE, opener=recording)
    try:
        # net/core/rtnetlink.c: RTM_GETLINK of an ifindex that does not exist is ENODEV.
        route.request(RTM_GETLINK, IFINFOMSG.pack(socket.AF_UNSPEC, 0, 9999, 0, 0), NLM_F_REQUEST)
        route.receive()
        route.answered()
    finally:
        route.close()
    exchanges.append({"protocol": NETLINK_ROUTE, **recording.exchanges[0]})
    expected.append({"what": "RTM_GETLINK of ifindex 9999", "errno": "ENODEV"})
    recording.exchanges[:] = exchanges
    data = fixture("errors", "NLMSG_ERROR answers of the kernel, one per exchange (each names its netlink "
                   "protocol); expected: the errno the kernel sources give", recording, expected)
    data["protocol"] = None  # each exchange has its own
    return data


# --- main ---------------------------------------------------------------------------------------

SCENARIOS: dict[str, Callable[[Namespaces], dict[str, Any]]] = {
    "sock_diag_dump": record_sock_diag,
    "destroy_events": record_destroy,
    "conntrack": record_conntrack,
    "rtnetlink": record_rtnetlink,
    "errors": record_errors,
}


def to_json(value: Any, depth: int = 0) -> str:
    """JSON with one datagram, socket or entry a line: readable, and diffs stay small."""
    pad = " " * depth
    if isinstance(value, dict) and depth < 2:
        items = [f'{pad} {json.dumps(k)}: {to_json(v, depth + 1).lstrip()}' for k, v in value.items()]
        return pad + "{\n" + ",\n".join(items) + "\n" + pad + "}" + ("\n" if not depth else "")
    if isinstance(value, list) and value and depth < 3:
        items = [to_json(v, depth + 1) for v in value]
        return pad + "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return pad + json.dumps(value)


@contextlib.contextmanager
def namespaces() -> Iterator[Namespaces]:
    spaces = Namespaces()
    try:
        yield spaces
    finally:
        spaces.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=FIXTURES, help="where to write the JSON files")
    parser.add_argument("scenarios", nargs="*", default=list(SCENARIOS), help="which to record (default: all)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: recording needs network namespaces and netlink")
    os.makedirs(args.out, exist_ok=True)
    for name in args.scenarios:
        with namespaces() as spaces:
            data = SCENARIOS[name](spaces)
        path = os.path.join(args.out, f"{name}.json")
        with open(path, "w") as f:
            f.write(to_json(data))
        print(f"{path}: {len(data['exchanges'])} exchanges, {len(data['events'])} events, "
              f"{os.path.getsize(path) // 1024} KiB")


if __name__ == "__main__":
    main()
