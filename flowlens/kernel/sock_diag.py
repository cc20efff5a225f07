"""TCP sockets from NETLINK_SOCK_DIAG: full dumps and socket-destroy notifications.

A dump asks the kernel for every TCP socket of one family in the namespace the netlink socket
was opened in, with ``tcp_info`` attached (``INET_DIAG_INFO``). The destroy multicast groups
deliver the same message, with final counters, when a socket is freed, so a connection that
opens and closes between two dumps is still seen. This is the agent's hot path: messages are
parsed in place with precompiled structs, and address text is cached.
"""

from __future__ import annotations

import errno
import functools
import socket
import struct
import sys
import time
from collections.abc import Iterator

from flowlens.kernel.netlink import (
    NETLINK_SOCK_DIAG,
    NLMSG_ERROR,
    REPLY_TIMEOUT,
    NetlinkSocket,
    Opener,
    iter_attrs,
    malformed,
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

# struct tcp_info (include/uapi/linux/tcp.h), member by member in declaration order: (name, C
# type). Offsets follow from the order and C's natural alignment (:func:`tcp_info_offsets`).
# The kernel appends members over the years and sends as much of the struct as it knows, so
# INET_DIAG_INFO's length says which are there. A bitfield pair is one __u8 here, named after both.
TCP_INFO_FIELDS: tuple[tuple[str, str], ...] = (
    ("tcpi_state", "__u8"),
    ("tcpi_ca_state", "__u8"),
    ("tcpi_retransmits", "__u8"),
    ("tcpi_probes", "__u8"),
    ("tcpi_backoff", "__u8"),
    ("tcpi_options", "__u8"),
    ("tcpi_snd_wscale:4,tcpi_rcv_wscale:4", "__u8"),
    ("tcpi_delivery_rate_app_limited:1,tcpi_fastopen_client_fail:2", "__u8"),
    ("tcpi_rto", "__u32"),
    ("tcpi_ato", "__u32"),
    ("tcpi_snd_mss", "__u32"),
    ("tcpi_rcv_mss", "__u32"),
    ("tcpi_unacked", "__u32"),
    ("tcpi_sacked", "__u32"),
    ("tcpi_lost", "__u32"),
    ("tcpi_retrans", "__u32"),
    ("tcpi_fackets", "__u32"),
    ("tcpi_last_data_sent", "__u32"),
    ("tcpi_last_ack_sent", "__u32"),
    ("tcpi_last_data_recv", "__u32"),
    ("tcpi_last_ack_recv", "__u32"),
    ("tcpi_pmtu", "__u32"),
    ("tcpi_rcv_ssthresh", "__u32"),
    ("tcpi_rtt", "__u32"),
    ("tcpi_rttvar", "__u32"),
    ("tcpi_snd_ssthresh", "__u32"),
    ("tcpi_snd_cwnd", "__u32"),
    ("tcpi_advmss", "__u32"),
    ("tcpi_reordering", "__u32"),
    ("tcpi_rcv_rtt", "__u32"),
    ("tcpi_rcv_space", "__u32"),
    ("tcpi_total_retrans", "__u32"),
    ("tcpi_pacing_rate", "__u64"),
    ("tcpi_max_pacing_rate", "__u64"),
    ("tcpi_bytes_acked", "__u64"),  # Linux 4.1
    ("tcpi_bytes_received", "__u64"),
    ("tcpi_segs_out", "__u32"),  # 4.2
    ("tcpi_segs_in", "__u32"),
    ("tcpi_notsent_bytes", "__u32"),  # 4.6
    ("tcpi_min_rtt", "__u32"),
    ("tcpi_data_segs_in", "__u32"),
    ("tcpi_data_segs_out", "__u32"),
    ("tcpi_delivery_rate", "__u64"),  # 4.9
    ("tcpi_busy_time", "__u64"),  # 4.10
    ("tcpi_rwnd_limited", "__u64"),
    ("tcpi_sndbuf_limited", "__u64"),
    ("tcpi_delivered", "__u32"),  # 4.18
    ("tcpi_delivered_ce", "__u32"),
    ("tcpi_bytes_sent", "__u64"),  # 4.19
    ("tcpi_bytes_retrans", "__u64"),
    ("tcpi_dsack_dups", "__u32"),
    ("tcpi_reord_seen", "__u32"),
    ("tcpi_rcv_ooopack", "__u32"),  # 5.4
    ("tcpi_snd_wnd", "__u32"),
    ("tcpi_rcv_wnd", "__u32"),  # 6.2
    ("tcpi_rehash", "__u32"),
    ("tcpi_total_rto", "__u16"),  # 6.7
    ("tcpi_total_rto_recoveries", "__u16"),
    ("tcpi_total_rto_time", "__u32"),
    ("tcpi_received_ce", "__u32"),  # 6.18
    ("tcpi_delivered_e1_bytes", "__u32"),
    ("tcpi_delivered_e0_bytes", "__u32"),
    ("tcpi_delivered_ce_bytes", "__u32"),
    ("tcpi_received_e1_bytes", "__u32"),
    ("tcpi_received_e0_bytes", "__u32"),
    ("tcpi_received_ce_bytes", "__u32"),
    ("tcpi_accecn_fail_mode", "__u16"),
    ("tcpi_accecn_opt_seen", "__u16"),
)
_C_TYPES = {"__u8": "B", "__u16": "H", "__u32": "I", "__u64": "Q"}  # their sizes are their alignments


def tcp_info_offsets() -> dict[str, tuple[int, str]]:
    """Each member's ``(offset, struct format character)``, laid out as C lays out the struct."""
    offsets: dict[str, tuple[int, str]] = {}
    offset = 0
    for name, ctype in TCP_INFO_FIELDS:
        code = _C_TYPES[ctype]
        size = struct.calcsize(code)
        offset = (offset + size - 1) & -size
        offsets[name] = (offset, code)
        offset += size
    return offsets


def tcp_info_struct(*names: str) -> struct.Struct:
    """A struct reading ``names`` (in table order) from the start of a tcp_info, the other
    members skipped; its size is where the last of them ends."""
    members = tcp_info_offsets()
    fmt, at = "=", 0
    for offset, code in sorted(members[name] for name in names):
        if offset > at:
            fmt += f"{offset - at}x"
        fmt += code
        at = offset + struct.calcsize(code)
    return struct.Struct(fmt)


# What a TcpSocket is made of, in table order. Each struct reads what one generation of kernels
# sends; the newest members of the list are missing from older ones.
_CORE = ("tcpi_rtt", "tcpi_total_retrans", "tcpi_bytes_acked", "tcpi_bytes_received", "tcpi_segs_out",
         "tcpi_segs_in", "tcpi_delivered", "tcpi_bytes_sent", "tcpi_bytes_retrans")
TCPI_CORE = tcp_info_struct(*_CORE)  # Linux 4.19+
TCPI_OOO = tcp_info_struct(*_CORE, "tcpi_rcv_ooopack")  # 5.4+
TCPI_FULL = tcp_info_struct(*_CORE, "tcpi_rcv_ooopack", "tcpi_total_rto")  # 6.7+
TCPI_CORE_SIZE = TCPI_CORE.size
# What changes whenever a socket does anything: rtt, total_retrans, bytes_acked,
# bytes_received, segs_out, segs_in. An idle socket's fingerprint stays the same.
TCPI_FINGERPRINT = tcp_info_struct("tcpi_rtt", "tcpi_total_retrans", "tcpi_bytes_acked",
                                   "tcpi_bytes_received", "tcpi_segs_out", "tcpi_segs_in")
# state and cookie of an inet_diag_msg, without decoding the rest.
DIAG_PEEK = struct.Struct("=xB42xQ")
_U32 = struct.Struct("=I")


@functools.lru_cache(maxsize=16)
def _peek_struct(at: int) -> struct.Struct:
    """State and cookie, the u32 attribute header before a tcp_info at ``at``, and the
    fingerprint, in one struct (see InfoLayout). A kernel puts tcp_info at one or two offsets
    (IPv4, IPv6), so there are one or two of these."""
    return struct.Struct(f"{DIAG_PEEK.format}{at - 4 - DIAG_PEEK.size}xI{TCPI_FINGERPRINT.format[1:]}")

DUMPED_STATES = (ESTABLISHED, SYN_SENT, FIN_WAIT1, FIN_WAIT2, CLOSE, CLOSE_WAIT, LAST_ACK, LISTEN, CLOSING)
STATE_MASK = sum(1 << s for s in DUMPED_STATES)

_V4_MAPPED = b"\0" * 10 + b"\xff\xff"
_ntohs = socket.ntohs


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


class InfoLayout:
    """Where ``tcp_info`` sits in the messages of a dump, and how much of it the kernel sends.

    The attributes before INET_DIAG_INFO are laid out alike for every socket of a dump (of one
    family): :meth:`locate` walks them once, and later messages are only checked to be long
    enough (``need``) and to have the same INET_DIAG_INFO header (length and type: ``tag`` as a
    u32, ``header`` as bytes) at the same place. ``peek`` then reads, in one unpack, what a scan
    needs: state, cookie, that header, and the fingerprint.
    """

    __slots__ = ("at", "header", "info", "missing", "need", "peek", "tag")

    def __init__(self) -> None:
        self.at = 0  # offset of tcp_info from the start of the message; 0: no layout yet
        self.need = sys.maxsize  # the message length that holds INET_DIAG_INFO whole
        self.header = b""  # INET_DIAG_INFO's attribute header, just before ``at``
        self.tag = -1  # the same as a u32
        self.peek = DIAG_PEEK.unpack_from  # (state, cookie, tag, *fingerprint)
        self.info = TCPI_CORE.unpack_from  # reads the TcpSocket members this kernel sends
        self.missing: tuple[int | None, ...] = ()  # and stands in for the others

    def locate(self, data: bytes, start: int, end: int) -> int:
        """Walk a message's attributes for INET_DIAG_INFO and remember where it was; 0 when the
        message has none or a ``tcp_info`` too old to hold the core counters (Linux < 4.19)."""
        if end - start < DIAG_MSG_SIZE:
            raise malformed(f"a sock_diag message of {end - start} bytes, shorter than struct inet_diag_msg")
        for kind, a, b in iter_attrs(data, start + DIAG_MSG_SIZE, end):
            if kind == INET_DIAG_INFO:
                size = b - a
                if size < TCPI_CORE_SIZE:
                    return 0
                at = a - start
                self.at, self.need, self.header = at, b - start, data[a - 4:a]
                (self.tag,) = _U32.unpack_from(data, a - 4)
                self.peek = _peek_struct(at).unpack_from
                if size >= TCPI_FULL.size:
                    self.info, self.missing = TCPI_FULL.unpack_from, ()
                elif size >= TCPI_OOO.size:
                    self.info, self.missing = TCPI_OOO.unpack_from, (None,)
                else:
                    self.info, self.missing = TCPI_CORE.unpack_from, (0, None)
                return at
        return 0

    def parse(self, data: bytes, start: int, end: int, addresses: AddressCache) -> TcpSocket | None:
        """Decode one SOCK_DIAG_BY_FAMILY message; ``None`` when it carries no ``tcp_info``."""
        at = self.at
        if end - start < self.need or data[start + at - 4:start + at] != self.header:
            at = self.locate(data, start, end)
            if not at:
                return None
        (family, state, _timer, _retrans, sport, dport, src, dst, _ifindex, cookie,
         _expires, _rq, wqueue, _uid, _inode) = DIAG_MSG.unpack_from(data, start)
        info = self.info(data, start + at)
        if self.missing:
            info += self.missing
        (rtt, total_retrans, bytes_acked, bytes_received, segs_out, segs_in, delivered, bytes_sent,
         bytes_retrans, ooo, total_rto) = info
        text = addresses.text
        return TcpSocket(
            cookie, state, text(family, src), _ntohs(sport), text(family, dst), _ntohs(dport),
            bytes_acked, bytes_received, bytes_sent, bytes_retrans, segs_out, segs_in, total_retrans,
            total_rto, rtt, delivered, wqueue, ooo,
        )


def parse_socket(data: bytes, start: int, end: int, addresses: AddressCache) -> TcpSocket | None:
    """Decode one SOCK_DIAG_BY_FAMILY message on its own; ``None`` when it carries no ``tcp_info``."""
    return InfoLayout().parse(data, start, end, addresses)


Entry = tuple[int, int, tuple[int, ...], bytes, int, int]
"""A dumped socket not yet decoded: (cookie, state, fingerprint, buffer, start, end)."""


class SockDiag:
    """Dumps of the TCP sockets of the namespace this object was created in."""

    def __init__(self, timeout: float = REPLY_TIMEOUT, opener: Opener = open_netlink) -> None:
        self._nl = NetlinkSocket(NETLINK_SOCK_DIAG, timeout=timeout, opener=opener)
        self.addresses = AddressCache()
        # Shared by scan() and parse(): parse() decodes the message scan() just located.
        self._layout = InfoLayout()

    def parse(self, data: bytes, start: int, end: int) -> TcpSocket | None:
        return self._layout.parse(data, start, end, self.addresses)

    def scan(self, states: int = STATE_MASK, deadline: float = 0.0) -> Iterator[Entry]:
        """Like :meth:`dump`, but each socket is only peeked at: cookie, state and a
        fingerprint of its counters. Decoding (:meth:`parse`) is left to the caller, who only
        needs it for sockets whose fingerprint changed; on a node full of idle keep-alive
        connections that is most of the work saved. Past ``deadline`` (``time.monotonic``),
        the dump is abandoned with :class:`NetlinkTimeout`."""
        clock = time.monotonic
        layout = self._layout
        locate = layout.locate
        for family in (socket.AF_INET, socket.AF_INET6):
            payload = REQ_V2.pack(family, socket.IPPROTO_TCP, 1 << (INET_DIAG_INFO - 1), states)
            need, tag, peek = layout.need, layout.tag, layout.peek
            for batch in self._nl.dump(SOCK_DIAG_BY_FAMILY, payload):
                if deadline and clock() > deadline:
                    raise NetlinkTimeout("the socket dump took longer than its cycle allows")
                for _kind, data, start, end in batch:
                    if end - start >= need:
                        values = peek(data, start)
                        if values[2] == tag:  # laid out as the last one: no need to walk its attributes
                            yield values[1], values[0], values[3:], data, start, end
                            continue
                    if locate(data, start, end):
                        need, tag, peek = layout.need, layout.tag, layout.peek
                        values = peek(data, start)
                        yield values[1], values[0], values[3:], data, start, end

    def close(self) -> None:
        self._nl.close()

    def dump(self, states: int = STATE_MASK) -> Iterator[TcpSocket]:
        """Every TCP socket (IPv4 then IPv6) except TIME_WAIT and pending requests."""
        for family in (socket.AF_INET, socket.AF_INET6):
            payload = REQ_V2.pack(family, socket.IPPROTO_TCP, 1 << (INET_DIAG_INFO - 1), states)
            parse = self.parse
            for batch in self._nl.dump(SOCK_DIAG_BY_FAMILY, payload):
                for _kind, data, start, end in batch:
                    sock = parse(data, start, end)
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
        self._layout = InfoLayout()
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
                raise_for_error(data, start, end)
            elif kind == SOCK_DIAG_BY_FAMILY:
                self.received += 1
                sock = self._layout.parse(data, start, end, self.addresses)
                if sock is not None:
                    out.append(sock)
