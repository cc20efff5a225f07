"""A bounded load generator of short TCP connections, counted exactly on both ends.

Run as a script inside a network namespace (``ip netns exec NS python -m tests.churn ...``):

- ``serve PORT``: accepts connections, reads an 8-byte header (request size, reply size),
  reads the request to the client's FIN, answers the reply, closes. Each worker process
  accepts on its own ``SO_REUSEPORT`` listener.
- ``connect HOST PORT RATE SECONDS``: opens ``RATE`` connections per second for ``SECONDS``,
  each with random request and reply sizes (a seeded generator), sends the request,
  half-closes, reads the reply to EOF, closes.

Both print one JSON line when they stop: connections and payload bytes each way, so a test can
compare the agent's counters with what the two ends really moved, to the byte. Every byte a
client sends is acknowledged and every FIN seen before it closes, so the kernel's counters are
final on both ends. Loads are bounded in count and time and stay in the namespaces a test made.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import selectors
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

HEADER = struct.Struct("!II")  # request bytes after the header, reply bytes


@dataclass
class Tally:
    connections: int = 0
    failed: int = 0
    sent: int = 0
    received: int = 0

    def add(self, other: Tally) -> None:
        self.connections += other.connections
        self.failed += other.failed
        self.sent += other.sent
        self.received += other.received


# -- server ---------------------------------------------------------------------------------
class _Conn:
    __slots__ = ("header", "need", "received", "reply", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.header = b""
        self.received = 0
        self.reply = 0


def serve(port: int, address: str, stop_after: float) -> Tally:
    """One worker: an event loop over its own listener, until SIGTERM or ``stop_after``."""
    tally = Tally()
    listener = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listener.bind((address, port))
    listener.listen(4096)
    listener.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, None)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    deadline = time.monotonic() + stop_after
    print("ready", flush=True)
    while not stopping and time.monotonic() < deadline:
        for key, _ in sel.select(0.2):
            if key.data is None:
                _accept(listener, sel)
            else:
                _read(key.data, sel, tally)
    listener.close()
    for key in list(sel.get_map().values()):
        if key.data is not None:
            key.data.sock.close()
    return tally


def _accept(listener: socket.socket, sel: selectors.BaseSelector) -> None:
    while True:
        try:
            sock, _ = listener.accept()
        except BlockingIOError:
            return
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ, _Conn(sock))


def _read(conn: _Conn, sel: selectors.BaseSelector, tally: Tally) -> None:
    try:
        data = conn.sock.recv(1 << 16)
    except BlockingIOError:
        return
    except OSError:
        data = b""
        tally.failed += 1
    if data:
        conn.received += len(data)
        if len(conn.header) < HEADER.size:
            conn.header += data[:HEADER.size - len(conn.header)]
            if len(conn.header) == HEADER.size:
                conn.reply = HEADER.unpack(conn.header)[1]
        return
    sel.unregister(conn.sock)
    conn.sock.setblocking(True)
    conn.sock.settimeout(10)
    try:
        if conn.reply:
            conn.sock.sendall(b"r" * conn.reply)
        tally.connections += 1
        tally.received += conn.received
        tally.sent += conn.reply
    except OSError:
        tally.failed += 1
    finally:
        conn.sock.close()


# -- client ---------------------------------------------------------------------------------
def connect(host: str, port: int, rate: float, seconds: float, seed: int, max_request: int,
            max_reply: int) -> Tally:
    """Open ``rate`` connections per second for ``seconds``, paced, each counted exactly."""
    rng = random.Random(seed)
    tally = Tally()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    start = time.monotonic()
    total = int(rate * seconds)
    for n in range(total):
        due = start + n / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        request, reply = rng.randint(0, max_request), rng.randint(0, max_reply)
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(10)
        try:
            sock.connect((host, port))
            sock.sendall(HEADER.pack(request, reply) + b"q" * request)
            sock.shutdown(socket.SHUT_WR)
            got = 0
            while data := sock.recv(1 << 16):
                got += len(data)
        except OSError:
            tally.failed += 1
            continue
        finally:
            sock.close()
        tally.connections += 1
        tally.sent += HEADER.size + request
        tally.received += got
    return tally


# -- driving it from a test ------------------------------------------------------------------
PYTHON = sys.executable
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _spawn(ns: str, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.Popen(["ip", "netns", "exec", ns, PYTHON, "-m", "tests.churn", *args],
                            stdout=subprocess.PIPE, text=True, env=env)


def start_servers(ns: str, port: int, workers: int = 2) -> list[subprocess.Popen[str]]:
    """Server workers sharing a port (SO_REUSEPORT), ready when this returns."""
    procs = [_spawn(ns, "serve", str(port)) for _ in range(workers)]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return procs


def start_clients(ns: str, host: str, port: int, rate: float, seconds: float, procs: int = 1,
                  seed: int = 0) -> list[subprocess.Popen[str]]:
    return [_spawn(ns, "connect", host, str(port), str(rate / procs), str(seconds), "--seed", str(seed + i))
            for i in range(procs)]


def finish(procs: list[subprocess.Popen[str]], stop: bool = False, timeout: float = 120) -> Tally:
    """Wait for (or, with ``stop``, stop) load processes and add up what they counted."""
    total = Tally()
    for proc in procs:
        if stop:
            proc.terminate()
        out, _ = proc.communicate(timeout=timeout)
        line = json.loads(out.strip().splitlines()[-1])
        total.add(Tally(line["connections"], line["failed"], line["sent"], line["received"]))
    return total


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="churn")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve")
    s.add_argument("port", type=int)
    s.add_argument("--address", default="0.0.0.0")
    s.add_argument("--stop-after", type=float, default=600.0)
    c = sub.add_parser("connect")
    c.add_argument("host")
    c.add_argument("port", type=int)
    c.add_argument("rate", type=float)
    c.add_argument("seconds", type=float)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--max-request", type=int, default=2000)
    c.add_argument("--max-reply", type=int, default=2000)
    args = parser.parse_args(argv)
    if args.command == "serve":
        tally = serve(args.port, args.address, args.stop_after)
    else:
        tally = connect(args.host, args.port, args.rate, args.seconds, args.seed, args.max_request,
                        args.max_reply)
    print(json.dumps({"pid": os.getpid(), **asdict(tally)}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
