"""What the kernel layer reports about one TCP socket at one instant."""

from __future__ import annotations

from typing import NamedTuple

# TCP states as the kernel numbers them (include/net/tcp_states.h).
ESTABLISHED, SYN_SENT, SYN_RECV, FIN_WAIT1, FIN_WAIT2, TIME_WAIT = 1, 2, 3, 4, 5, 6
CLOSE, CLOSE_WAIT, LAST_ACK, LISTEN, CLOSING = 7, 8, 9, 10, 11

STATE_NAMES = {
    ESTABLISHED: "ESTABLISHED", SYN_SENT: "SYN_SENT", SYN_RECV: "SYN_RECV",
    FIN_WAIT1: "FIN_WAIT1", FIN_WAIT2: "FIN_WAIT2", TIME_WAIT: "TIME_WAIT", CLOSE: "CLOSE",
    CLOSE_WAIT: "CLOSE_WAIT", LAST_ACK: "LAST_ACK", LISTEN: "LISTEN", CLOSING: "CLOSING",
}


class TcpSocket(NamedTuple):
    """One TCP socket's identity and its cumulative counters since it was created.

    Addresses are text (IPv4-mapped IPv6 addresses are given as IPv4). Byte counters are the
    kernel's RFC 4898 counters: ``bytes_acked`` is what the peer acknowledged, which the agent
    reports as bytes sent. ``delivered`` is the count of segments the peer acknowledged,
    SYN included, so it is zero exactly when a connection never completed its handshake.
    ``total_rto`` is ``None`` on kernels older than 6.7, which do not report it.
    ``rcv_ooopack`` counts packets that arrived out of order: on a download, the receiver's
    trace of the sender's losses (the retransmissions themselves are the sender's to count).
    ``write_queue`` is written but unacknowledged sequence space (data, and our FIN once queued).
    """

    cookie: int
    state: int
    local_ip: str
    local_port: int
    remote_ip: str
    remote_port: int
    bytes_acked: int
    bytes_received: int
    bytes_sent: int
    bytes_retrans: int
    segs_out: int
    segs_in: int
    total_retrans: int
    total_rto: int | None
    rtt_us: int
    delivered: int
    write_queue: int = 0
    rcv_ooopack: int = 0
