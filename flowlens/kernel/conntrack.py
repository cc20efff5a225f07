"""Where a connection really went: NAT targets from the connection tracking table (ctnetlink).

In Kubernetes a client connects to a ClusterIP; kube-proxy's DNAT in the node's namespace
rewrites the destination to a backend pod, and only conntrack remembers which one. The client
socket knows ``(src, sport, ClusterIP, port)``, the connection's *original* tuple; the entry's
*reply* tuple is what the backend sends back, so its source is the backend actually reached.

A :class:`Conntrack` answers for the namespace its socket was opened in, like the other readers,
so the agent opens it once in the node's namespace, where kube-proxy's rules run. ``lookup`` is
one ``IPCTNL_MSG_CT_GET`` request and one reply on a reused socket; ``dump_nat`` walks the table
once to resolve many sockets together. Layouts mirror ``include/uapi/linux/netfilter/
nfnetlink{,_conntrack}.h``. Integers inside ctnetlink attributes are big-endian (ports, status);
attribute headers are host order, as everywhere in netlink.
"""

from __future__ import annotations

import errno
import socket
import struct
from typing import Any, NamedTuple

from flowlens.kernel.netlink import (
    NETLINK_NETFILTER,
    NLM_F_REQUEST,
    NLMSG_ERROR,
    NetlinkSocket,
    Opener,
    error_code,
    iter_attrs,
    malformed,
    open_netlink,
    pack_attr,
    raise_for_error,
    split_messages,
)
from flowlens.model.errors import NetlinkError


class NatTarget(NamedTuple):
    """Where a connection's packets were delivered after DNAT: the backend's address and port."""

    ip: str
    port: int


class NatEntry(NamedTuple):
    """One DNATed connection: its original tuple, as the client sees it, and where it went."""

    protocol: int
    src: str
    sport: int
    dst: str
    dport: int
    target: NatTarget


NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_NEW = 0
IPCTNL_MSG_CT_GET = 1
CT_GET = NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_GET
CT_NEW = NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_NEW  # what entries are answered as
NFNETLINK_V0 = 0
NLA_F_NESTED = 1 << 15

# struct nfgenmsg
NFGENMSG = struct.Struct(
    "="
    "B"  # nfgen_family: AF_INET, AF_INET6, or AF_UNSPEC (dumps only: every family)
    "B"  # version: NFNETLINK_V0
    "H"  # res_id (big-endian): 0
)

# enum ctattr_type
CTA_TUPLE_ORIG = 1
CTA_TUPLE_REPLY = 2
CTA_STATUS = 3
# enum ctattr_tuple
CTA_TUPLE_IP = 1
CTA_TUPLE_PROTO = 2
# enum ctattr_ip
CTA_IP_V4_SRC = 1
CTA_IP_V4_DST = 2
CTA_IP_V6_SRC = 3
CTA_IP_V6_DST = 4
# enum ctattr_l4proto
CTA_PROTO_NUM = 1
CTA_PROTO_SRC_PORT = 2
CTA_PROTO_DST_PORT = 3
# enum ip_conntrack_status
IPS_DST_NAT = 1 << 5

# The CT_GET payload asking for the entry of one original tuple, attribute by attribute:
# a (length, type) header each, values padded to 4 bytes. ``{n}`` is the address size.
_QUERY_LAYOUT = (
    "="
    "BBH"  # struct nfgenmsg
    "HH"  # CTA_TUPLE_ORIG, nested:
    "HH"  # . CTA_TUPLE_IP, nested:
    "HH{n}s"  # . . CTA_IP_V4_SRC / CTA_IP_V6_SRC
    "HH{n}s"  # . . CTA_IP_V4_DST / CTA_IP_V6_DST
    "HH"  # . CTA_TUPLE_PROTO, nested:
    "HHB3x"  # . . CTA_PROTO_NUM (u8)
    "HHH2x"  # . . CTA_PROTO_SRC_PORT (be16)
    "HHH2x"  # . . CTA_PROTO_DST_PORT (be16)
)
_PROTO_LEN = 4 + 8 + 8 + 8  # CTA_TUPLE_PROTO with its three members, as sent and answered


class _Layout:
    """How one address family's port tuples are laid out, in requests and in the kernel's answers.

    ``pack`` fills in a precompiled CT_GET payload. The kernel encodes every tuple of a port
    protocol the same way (``ctnetlink_dump_tuples``): an entry's CTA_TUPLE_ORIG is byte for
    byte what a request for it holds, and its CTA_TUPLE_REPLY, which follows, is laid out alike.
    Where an entry's tuple headers are the expected ones (``orig_head``, ``reply_head``: the
    tuple's header and its CTA_TUPLE_IP's), ``tuple`` reads a tuple in place.
    """

    def __init__(self, family: int, addr_size: int, src_attr: int) -> None:
        ip_len = 4 + 2 * (4 + addr_size)
        self.tuple_len = tuple_len = 4 + ip_len + _PROTO_LEN
        self._struct = struct.Struct(_QUERY_LAYOUT.format(n=addr_size))
        self._head = (family, NFNETLINK_V0, 0, tuple_len, CTA_TUPLE_ORIG | NLA_F_NESTED,
                      ip_len, CTA_TUPLE_IP | NLA_F_NESTED, 4 + addr_size, src_attr)
        self._dst = (4 + addr_size, src_attr + 1)
        self._proto = (_PROTO_LEN, CTA_TUPLE_PROTO | NLA_F_NESTED, 5, CTA_PROTO_NUM)
        self.orig_head = struct.pack("=HHHH", tuple_len, CTA_TUPLE_ORIG | NLA_F_NESTED,
                                     ip_len, CTA_TUPLE_IP | NLA_F_NESTED)
        self.reply_head = struct.pack("=HHHH", tuple_len, CTA_TUPLE_REPLY | NLA_F_NESTED,
                                      ip_len, CTA_TUPLE_IP | NLA_F_NESTED)
        # A tuple from its attribute header on, the values only: (src, dst, protocol, sport, dport).
        self.tuple = struct.Struct(
            ">"
            "12x"  # the tuple's, CTA_TUPLE_IP's and the source address's headers
            f"{addr_size}s"  # source address
            "4x"  # header
            f"{addr_size}s"  # destination address
            "8x"  # CTA_TUPLE_PROTO's and CTA_PROTO_NUM's headers
            "B7x"  # protocol, padding, CTA_PROTO_SRC_PORT's header
            "H6x"  # source port, padding, CTA_PROTO_DST_PORT's header
            "H2x"  # destination port, padding
        )
        assert self.tuple.size == tuple_len

    def pack(self, src: bytes, dst: bytes, protocol: int, sport: int, dport: int) -> bytes:
        return self._struct.pack(
            *self._head, src, *self._dst, dst, *self._proto, protocol,
            6, CTA_PROTO_SRC_PORT, socket.htons(sport), 6, CTA_PROTO_DST_PORT, socket.htons(dport),
        )


_LAYOUTS = {
    socket.AF_INET: _Layout(socket.AF_INET, 4, CTA_IP_V4_SRC),
    socket.AF_INET6: _Layout(socket.AF_INET6, 16, CTA_IP_V6_SRC),
}

# Protocols whose conntrack tuples are made of ports (ICMP's are id, type and code).
PORT_PROTOCOLS = frozenset({
    socket.IPPROTO_TCP, socket.IPPROTO_UDP, 33, 132, 136,  # DCCP, SCTP, UDP-Lite
})

_V4_MAPPED = b"\0" * 10 + b"\xff\xff"

# Dump only entries with IPS_DST_NAT set (CTA_STATUS alone: the mask defaults to the value).
# Kernels before 6.0 ignore CTA_STATUS in dumps; the tuples are checked here either way.
_DNAT_ONLY = pack_attr(CTA_STATUS, struct.pack(">I", IPS_DST_NAT))

Tuple = tuple[int, bytes, int, bytes, int]
"""A conntrack tuple not yet decoded: (protocol, src, sport, dst, dport), addresses raw."""


def _address(text: str) -> tuple[int, bytes]:
    """``(family, raw)`` of an address; an IPv4-mapped IPv6 one is IPv4, as conntrack tracks it."""
    try:
        if ":" in text:
            raw = socket.inet_pton(socket.AF_INET6, text)
            if raw[:12] == _V4_MAPPED:
                return socket.AF_INET, raw[12:]
            return socket.AF_INET6, raw
        return socket.AF_INET, socket.inet_pton(socket.AF_INET, text)
    except OSError:
        raise ValueError(f"not an IP address: {text!r}") from None


def parse_tuple(data: bytes, start: int, end: int) -> Tuple:
    """Decode the members of a CTA_TUPLE_ORIG or CTA_TUPLE_REPLY attribute."""
    protocol = sport = dport = 0
    src = dst = b""
    for kind, a, b in iter_attrs(data, start, end):
        if kind == CTA_TUPLE_IP:
            for ip_kind, x, y in iter_attrs(data, a, b):
                if ip_kind in (CTA_IP_V4_SRC, CTA_IP_V6_SRC):
                    src = _sized(data, x, y, 4 if ip_kind == CTA_IP_V4_SRC else 16)
                elif ip_kind in (CTA_IP_V4_DST, CTA_IP_V6_DST):
                    dst = _sized(data, x, y, 4 if ip_kind == CTA_IP_V4_DST else 16)
        elif kind == CTA_TUPLE_PROTO:
            for proto_kind, x, y in iter_attrs(data, a, b):
                if proto_kind == CTA_PROTO_NUM:
                    protocol = _sized(data, x, y, 1)[0]
                elif proto_kind == CTA_PROTO_SRC_PORT:
                    sport = int.from_bytes(_sized(data, x, y, 2), "big")
                elif proto_kind == CTA_PROTO_DST_PORT:
                    dport = int.from_bytes(_sized(data, x, y, 2), "big")
    return protocol, src, sport, dst, dport


def _sized(data: bytes, start: int, end: int, size: int) -> bytes:
    """An attribute's payload of a fixed size; a shorter one is malformed."""
    if end - start < size:
        raise malformed(f"a conntrack attribute of {end - start} bytes where {size} were due")
    return data[start:start + size]


def parse_entry(data: bytes, start: int, end: int) -> tuple[Tuple, Tuple] | None:
    """The original and reply tuples of one CT_NEW message; ``None`` when one is missing."""
    if end - start < NFGENMSG.size:
        raise malformed(f"a conntrack message of {end - start} bytes, shorter than struct nfgenmsg")
    layout = _LAYOUTS.get(data[start])  # nfgen_family
    if layout is not None:
        at = start + NFGENMSG.size
        reply_at = at + layout.tuple_len
        if (reply_at + layout.tuple_len <= end and data[at:at + 8] == layout.orig_head
                and data[reply_at:reply_at + 8] == layout.reply_head):
            src, dst, protocol, sport, dport = layout.tuple.unpack_from(data, at)
            r_src, r_dst, r_protocol, r_sport, r_dport = layout.tuple.unpack_from(data, reply_at)
            return (protocol, src, sport, dst, dport), (r_protocol, r_src, r_sport, r_dst, r_dport)
    return parse_attrs(data, start, end)


def parse_attrs(data: bytes, start: int, end: int) -> tuple[Tuple, Tuple] | None:
    """:func:`parse_entry` the long way, attribute by attribute, whatever the layout."""
    orig = reply = None
    for kind, a, b in iter_attrs(data, start + NFGENMSG.size, end):
        if kind == CTA_TUPLE_ORIG:
            orig = parse_tuple(data, a, b)
        elif kind == CTA_TUPLE_REPLY:
            reply = parse_tuple(data, a, b)
            break  # the kernel puts the reply tuple right after the original one
    if orig is None or reply is None:
        return None
    return orig, reply


class Conntrack:
    """Lookups in the conntrack table of the namespace this object was created in.

    Not thread-safe: one request is in flight on the socket at a time.
    """

    def __init__(self, opener: Opener = open_netlink) -> None:
        self._nl = NetlinkSocket(NETLINK_NETFILTER, opener=opener)
        self._text: dict[bytes, str] = {}
        # Whether dumps ask the kernel to filter on the DNAT status bit; switched off for good
        # should a kernel reject the attribute rather than ignore it.
        self._kernel_filter = True

    def close(self) -> None:
        self._nl.close()

    def fileno(self) -> int:
        return self._nl.fileno()

    def lookup(self, protocol: int, src: str, sport: int, dst: str, dport: int) -> NatTarget | None:
        """Where the connection whose original tuple this is was DNATed to.

        ``None`` when conntrack has no entry for the tuple (in this namespace's default zone)
        or when the entry was not DNATed. Entries outlive their sockets by the protocol's
        timeout (two minutes in TCP's TIME_WAIT), so a just-closed connection still resolves.
        """
        if protocol not in PORT_PROTOCOLS:
            raise ValueError(f"protocol {protocol} has no ports to look up")
        family, src_raw = _address(src)
        dst_family, dst_raw = _address(dst)
        if family != dst_family:
            raise ValueError(f"{src} and {dst} are not of the same address family")
        layout = _LAYOUTS[family]
        payload = layout.pack(src_raw, dst_raw, protocol, sport, dport)
        nl = self._nl
        seq = nl.request(CT_GET, payload, NLM_F_REQUEST)
        try:
            return self._answer(seq, layout, payload, protocol, src_raw, sport, dst_raw, dport)
        finally:
            nl.answered()

    def _answer(self, seq: int, layout: Any, payload: bytes, protocol: int, src_raw: bytes, sport: int,
                dst_raw: bytes, dport: int) -> NatTarget | None:
        while True:
            data = self._nl.receive()
            for kind, start, end, msg_seq in split_messages(data):
                if msg_seq != seq:
                    continue  # a late answer to an earlier, abandoned request
                if kind == NLMSG_ERROR:
                    if error_code(data, start, end) == errno.ENOENT:
                        return None
                    raise_for_error(data, start, end)
                    return None  # an ACK, which nothing asked for: no entry came
                if kind != CT_NEW:
                    continue
                if end - start < NFGENMSG.size:
                    raise malformed(f"a conntrack message of {end - start} bytes, shorter than struct nfgenmsg")
                at = start + NFGENMSG.size
                reply_at = at + layout.tuple_len
                if (data[at:reply_at] == payload[NFGENMSG.size:] and reply_at + layout.tuple_len <= end
                        and data[reply_at:reply_at + 8] == layout.reply_head):
                    # The usual answer: the entry's original tuple is, byte for byte, the one
                    # asked for, and its reply tuple is laid out alike.
                    raw, _dst, _protocol, port, _dport = layout.tuple.unpack_from(data, reply_at)
                else:
                    tuples = parse_attrs(data, start, end)
                    if tuples is None:
                        raise NetlinkError("conntrack answered with an entry lacking its tuples")
                    orig, reply = tuples
                    # The kernel finds entries by either direction's tuple: an entry whose
                    # *reply* is the tuple asked for is a connection the other way round.
                    if orig != (protocol, src_raw, sport, dst_raw, dport):
                        return None
                    raw, port = reply[1], reply[2]
                if raw == dst_raw and port == dport:
                    return None  # not DNATed
                return NatTarget(self._address_text(raw), port)

    def dump_nat(self, protocol: int = socket.IPPROTO_TCP) -> list[NatEntry]:
        """Every DNATed entry of one protocol, IPv4 and IPv6: original tuple and reply source.

        One dump of the whole table. The kernel walks every bucket of the conntrack hash, which
        all namespaces share, whatever this namespace holds: a fixed cost of about 35 ns per
        bucket (``net.netfilter.nf_conntrack_buckets``) on top of the entries returned.
        """
        if self._kernel_filter:
            try:
                return self._dump_nat(protocol, _DNAT_ONLY)
            except NetlinkError as err:
                if err.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                    raise
                self._kernel_filter = False
        return self._dump_nat(protocol, b"")

    def _dump_nat(self, protocol: int, filters: bytes) -> list[NatEntry]:
        entries: list[NatEntry] = []
        text = self._address_text
        # AF_UNSPEC: both families in one walk of the table. (Per-family dumps would walk it
        # twice, and CTA_FILTER, which could select the protocol, needs a family.)
        for batch in self._nl.dump(CT_GET, NFGENMSG.pack(socket.AF_UNSPEC, NFNETLINK_V0, 0) + filters):
            for kind, data, start, end in batch:
                if kind != CT_NEW:
                    continue
                tuples = parse_entry(data, start, end)
                if tuples is None:
                    continue
                orig, reply = tuples
                if orig[0] != protocol or (reply[1] == orig[3] and reply[2] == orig[4]):
                    continue
                entries.append(NatEntry(protocol, text(orig[1]), orig[2], text(orig[3]), orig[4],
                                        NatTarget(text(reply[1]), reply[2])))
        return entries

    def _address_text(self, raw: bytes) -> str:
        cached = self._text.get(raw)
        if cached is None:
            family = socket.AF_INET if len(raw) == 4 else socket.AF_INET6
            cached = self._text[raw] = socket.inet_ntop(family, raw)
            if len(self._text) > 65536:
                self._text.clear()
        return cached
