"""TCP sockets from NETLINK_SOCK_DIAG: full dumps and socket-destroy notifications.

A dump asks the kernel for every TCP socket of one family in the namespace the netlink socket
was opened in, with ``tcp_info`` attached (``INET_DIAG_INFO``). The destroy multicast groups
deliver the same message, with final counters, when a socket is freed, so a connection that
opens and closes between two dumps is still seen. This is the agent's hot path: messages are
parsed in place with precompiled structs, and address text is cached.
"""

from __future__ import annotations

import errno
import socket
import struct
import time
from collections.abc import Iterator

from flowlens.kernel.netlink import (
    NETLINK_SOCK_DIAG,
    NLMSG_ERROR,
    REPLY_TIMEOUT,
    NetlinkSocket,
    Opener,
    open_netlink,
    raise_for_error,
    split_messages,
)
from flowlens.model.errors import NetlinkTimeout
from flowlens.model.sockets import (
    CLOSE,
    CLOSE_WAIT,
    CLOSING,
    ESTABLISHED,
    FIN_WAIT1,
    FIN_WAIT2,
    LAST_ACK,
    LISTEN,
    SYN_SENT,
    TcpSocket,
)

SOCK_DIAG_BY_FAMILY = 20
INET_DIAG_INFO = 2

# Multicast groups of NETLINK_SOCK_DIAG (SKNLGRP_*).
GROUP_INET_TCP_DESTROY = 1
GROUP_INET6_TCP_DESTROY = 3

# struct inet_diag_req_v2: family, protocol, ext, pad, states, then an empty inet_diag_sockid.
REQ_V2 = struct.Struct("=BBBxI48x")
# struct inet_diag_msg up to the inode: family, state, timer, retrans, sport, dport (network
# order), src[16], dst[16], interface, cookie[2], expires, rqueue, wqueue, uid, inode.
DIAG_MSG = struct.Struct("=BBBB2H16s16sIQIIIII")
DIAG_MSG_SIZE = DIAG_MSG.size  # 72

# struct tcp_info (include/uapi/linux/tcp.h), the fields flowlens reads, by offset.
TCPI_RTT = struct.Struct("=I")  # tcpi_rtt at 68, tcpi_total_retrans at 100
TCPI_CORE = struct.Struct("=68xI28xI16xQQII4xIII32xI4xQQ")
TCPI_CORE_SIZE = TCPI_CORE.size  # 216: present since Linux 5.x
TCPI_RCV_OOOPACK = struct.Struct("=224xI")
TCPI_RCV_OOOPACK_SIZE = 228  # Linux 5.4+
TCPI_TOTAL_RTO = struct.Struct("=240xH")
# What changes whenever a socket does anything: rtt, total_retrans, bytes_acked,
# bytes_received, segs_out, segs_in. An idle socket's fingerprint stays the same.
TCPI_FINGERPRINT = struct.Struct("=68xI28xI16xQQII")
# state and cookie of an inet_diag_msg, without decoding the rest.
DIAG_PEEK = struct.Struct("=xB42xQ")
TCPI_TOTAL_RTO_SIZE = 242  # Linux 6.7+

DUMPED_STATES = (ESTABLISHED, SYN_SENT, FIN_WAIT1, FIN_WAIT2, CLOSE, CLOSE_WAIT, LAST_ACK, LISTEN, CLOSING)
STATE_MASK = sum(1 << s for s in DUMPED_STATES)

_V4_MAPPED = b"\0" * 10 + b"\xff\xff"


class AddressCache:
    """Turns raw 16-byte diag addresses into text once per distinct address."""

    def __init__(self) -> None:
        self._text: dict[tuple[int, bytes], str] = {}

    def text(self, family: int, raw: bytes) -> str:
        key = (family, raw)
        cached = self._text.get(key)
        if cached is None:
            cached = self._text[key] = _format_address(family, raw)
            if len(self._text) > 65536:
                self._text.clear()
        return cached


def _format_address(family: int, raw: bytes) -> str:
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[:4])
    if raw[:12] == _V4_MAPPED:
        return socket.inet_ntop(socket.AF_INET, raw[12:16])
    return socket.inet_ntop(socket.AF_INET6, raw)


def parse_socket(data: bytes, start: int, end: int, addresses: AddressCache) -> TcpSocket | None:
    """Decode one SOCK_DIAG_BY_FAMILY message; ``None`` when it carries no ``tcp_info``."""
    (family, state, _timer, _retrans, sport, dport, src, dst, _ifindex, cookie,
     _expires, _rq, wqueue, _uid, _inode) = DIAG_MSG.unpack_from(data, start)
    offset = start + DIAG_MSG_SIZE
    while offset + 4 <= end:
        length = data[offset] | data[offset + 1] << 8
        if length < 4:
            return None
        if (data[offset + 2] | (data[offset + 3] & 0x3F) << 8) == INET_DIAG_INFO:
            return _with_info(data, offset + 4, length - 4, family, state, sport, dport, src, dst,
                              cookie, wqueue, addresses)
        offset += (length + 3) & ~3
    return None


def _with_info(data: bytes, at: int, size: int, family: int, state: int, sport: int, dport: int,
               src: bytes, dst: bytes, cookie: int, wqueue: int, addresses: AddressCache) -> TcpSocket | None:
    if size < TCPI_CORE_SIZE:
        return None
    (rtt, total_retrans, bytes_acked, bytes_received, segs_out, segs_in, _min_rtt,
     _data_segs_in, _data_segs_out, delivered, bytes_sent, bytes_retrans) = TCPI_CORE.unpack_from(data, at)
    total_rto = TCPI_TOTAL_RTO.unpack_from(data, at)[0] if size >= TCPI_TOTAL_RTO_SIZE else None
    ooo = TCPI_RCV_OOOPACK.unpack_from(data, at)[0] if size >= TCPI_RCV_OOOPACK_SIZE else 0
    return TcpSocket(
        cookie, state, addresses.text(family, src), socket.ntohs(sport), addresses.text(family, dst),
        socket.ntohs(dport), bytes_acked, bytes_received, bytes_sent, bytes_retrans, segs_out,
        segs_in, total_retrans, total_rto, rtt, delivered, wqueue, ooo,
    )


Entry = tuple[int, int, tuple[int, ...], bytes, int, int]
"""A dumped socket not yet decoded: (cookie, state, fingerprint, buffer, start, end)."""


def _info_offset(data: bytes, start: int, end: int) -> int:
    """Offset of the tcp_info payload from the message start, or 0 when absent or short."""
    offset = start + DIAG_MSG_SIZE
    while offset + 4 <= end:
        length = data[offset] | data[offset + 1] << 8
        if length < 4:
            return 0
        if (data[offset + 2] | (data[offset + 3] & 0x3F) << 8) == INET_DIAG_INFO:
            return offset + 4 - start if length - 4 >= TCPI_CORE_SIZE else 0
        offset += (length + 3) & ~3
    return 0


class SockDiag:
    """Dumps of the TCP sockets of the namespace this object was created in."""

    def __init__(self, timeout: float = REPLY_TIMEOUT, opener: Opener = open_netlink) -> None:
        self._nl = NetlinkSocket(NETLINK_SOCK_DIAG, timeout=timeout, opener=opener)
        self.addresses = AddressCache()

    def parse(self, data: bytes, start: int, end: int) -> TcpSocket | None:
        return parse_socket(data, start, end, self.addresses)

    def scan(self, states: int = STATE_MASK, deadline: float = 0.0) -> Iterator[Entry]:
        """Like :meth:`dump`, but each socket is only peeked at: cookie, state and a
        fingerprint of its counters. Decoding (:meth:`parse`) is left to the caller, who only
        needs it for sockets whose fingerprint changed; on a node full of idle keep-alive
        connections that is most of the work saved. Past ``deadline`` (``time.monotonic``),
        the dump is abandoned with :class:`NetlinkTimeout`."""
        peek, fingerprint = DIAG_PEEK.unpack_from, TCPI_FINGERPRINT.unpack_from
        clock = time.monotonic
        for family in (socket.AF_INET, socket.AF_INET6):
            payload = REQ_V2.pack(family, socket.IPPROTO_TCP, 1 << (INET_DIAG_INFO - 1), states)
            # The attributes before INET_DIAG_INFO are laid out alike for every socket of a dump:
            # find tcp_info once, then only check its attribute header is where it was.
            at, header = 0, b""
            for batch in self._nl.dump(SOCK_DIAG_BY_FAMILY, payload):
                if deadline and clock() > deadline:
                    raise NetlinkTimeout("the socket dump took longer than its cycle allows")
                for _kind, data, start, end in batch:
                    if not at or data[start + at - 4:start + at] != header:
                        at = _info_offset(data, start, end)
                        if not at:
                            continue
                        header = data[start + at - 4:start + at]
                    state, cookie = peek(data, start)
                    yield cookie, state, fingerprint(data, start + at), data, start, end

    def close(self) -> None:
        self._nl.close()

    def dump(self, states: int = STATE_MASK) -> Iterator[TcpSocket]:
        """Every TCP socket (IPv4 then IPv6) except TIME_WAIT and pending requests."""
        for family in (socket.AF_INET, socket.AF_INET6):
            payload = REQ_V2.pack(family, socket.IPPROTO_TCP, 1 << (INET_DIAG_INFO - 1), states)
            addresses = self.addresses
            for batch in self._nl.dump(SOCK_DIAG_BY_FAMILY, payload):
                for _kind, data, start, end in batch:
                    sock = parse_socket(data, start, end, addresses)
                    if sock is not None:
                        yield sock


class DestroyEvents:
    """Subscription to the TCP socket-destroy notifications of one namespace.

    ``drain()`` returns the sockets destroyed since the last call, each with its final
    counters. When the kernel had to drop notifications (``ENOBUFS``), ``lost`` is incremented
    and the caller must resynchronise from a dump.
    """

    def __init__(self, rcvbuf: int = 8 << 20, opener: Opener = open_netlink) -> None:
        # Non-blocking: an event socket is only read when it has something to read.
        self._nl = NetlinkSocket(NETLINK_SOCK_DIAG, groups=(GROUP_INET_TCP_DESTROY, GROUP_INET6_TCP_DESTROY),
                                 rcvbuf=rcvbuf, timeout=0.0, opener=opener)
        self.addresses = AddressCache()
        self.overflows = 0
        self.received = 0  # notifications read since the socket was opened

    @property
    def rcvbuf(self) -> int:
        return self._nl.rcvbuf

    def resize(self, rcvbuf: int) -> None:
        self._nl.set_rcvbuf(rcvbuf)

    def close(self) -> None:
        self._nl.close()

    def fileno(self) -> int:
        return self._nl.fileno()

    def drain(self) -> list[TcpSocket]:
        destroyed: list[TcpSocket] = []
        while True:
            try:
                for data in self._nl.drain():
                    self._parse(data, destroyed)
                return destroyed
            except OSError as err:
                if err.errno != errno.ENOBUFS:
                    raise
                # The kernel dropped notifications; what was queued before that is still
                # readable, so keep draining.
                self.overflows += 1

    def _parse(self, data: bytes, out: list[TcpSocket]) -> None:
        for kind, start, end, _seq in split_messages(data):
            if kind == NLMSG_ERROR:
                raise_for_error(data, start)
            elif kind == SOCK_DIAG_BY_FAMILY:
                self.received += 1
                sock = parse_socket(data, start, end, self.addresses)
                if sock is not None:
                    out.append(sock)
