"""Minimal netlink transport: open a socket, send a request, walk the reply messages.

Only what flowlens needs: dump requests answered by multi-part replies that end in
``NLMSG_DONE``, ``NLMSG_ERROR`` decoding, multicast subscription and non-blocking reads of
event sockets. Payload layouts live with each family (:mod:`sock_diag`, :mod:`rtnetlink`).
Messages are handed out as ``(type, buffer, start, end)`` so that hot paths can parse in place
with precompiled :class:`struct.Struct` objects instead of copying.

A netlink socket answers one dump at a time: a second request sent while a dump is being read
makes the kernel refuse it or interleave answers, and a reader waiting for the wrong answer
waits forever. So a socket has at most one request in flight (a second is a programming error,
raised at once), a dump abandoned half-way is read to its end before the next request, and
every read has a timeout: the kernel answers in microseconds, so silence means something is
wrong, and the caller is told instead of blocked.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Callable, Iterator
from typing import Any

from flowlens.model.errors import NetlinkError, NetlinkTimeout, PrivilegeError

NLMSG_HDR = struct.Struct("=IHHII")
NLA_HDR = struct.Struct("=HH")
NLMSG_ERR = struct.Struct("=i")

NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSG_OVERRUN = 4

NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ROOT = 0x100
NLM_F_MATCH = 0x200
NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH

NETLINK_ROUTE = 0
NETLINK_SOCK_DIAG = 4
NETLINK_NETFILTER = 12

SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1

# The kernel never puts more than 32 KiB in one dump datagram; a bigger buffer costs nothing
# but lets event sockets drain several notifications per syscall.
RECV_SIZE = 1 << 16
# How long one read may wait for the kernel's answer to a request.
REPLY_TIMEOUT = 2.0

Message = tuple[int, bytes, int, int]


def align4(n: int) -> int:
    return (n + 3) & ~3


def iter_attrs(buf: bytes, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """Yield ``(type, payload_start, payload_end)`` for each netlink attribute in a range."""
    unpack = NLA_HDR.unpack_from
    while start + 4 <= end:
        length, kind = unpack(buf, start)
        if length < 4:
            return
        yield kind & 0x3FFF, start + 4, start + length
        start += (length + 3) & ~3


def attr_table(buf: bytes, start: int, end: int) -> dict[int, tuple[int, int]]:
    """Map attribute type to its payload range (last one wins, as the kernel never repeats)."""
    return {kind: (a, b) for kind, a, b in iter_attrs(buf, start, end)}


def pack_attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return NLA_HDR.pack(length, kind) + payload + b"\0" * (align4(length) - length)


def open_netlink(protocol: int) -> socket.socket:
    """The real socket; tests hand in another opener that replays recorded datagrams."""
    return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, protocol)


Opener = Callable[[int], Any]


class NetlinkSocket:
    """One netlink socket of one protocol, bound in the network namespace it was opened in."""

    def __init__(self, protocol: int, groups: tuple[int, ...] = (), rcvbuf: int = 0,
                 timeout: float = REPLY_TIMEOUT, opener: Opener = open_netlink) -> None:
        try:
            self.sock = opener(protocol)
        except PermissionError as err:
            raise PrivilegeError("cannot open a netlink socket: run as root or grant CAP_NET_ADMIN") from err
        self.sock.bind((0, 0))
        self.timeout = timeout
        self.sock.settimeout(timeout)
        self.rcvbuf = 0
        if rcvbuf:
            self.set_rcvbuf(rcvbuf)
        for group in groups:
            try:
                self.sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, group)
            except PermissionError as err:
                self.sock.close()
                raise PrivilegeError(
                    "cannot subscribe to socket-destroy events: run as root or grant CAP_NET_ADMIN"
                ) from err
        self._seq = 0
        self._in_flight = 0  # the sequence number of a request whose answer is not read yet

    def set_rcvbuf(self, size: int) -> None:
        try:  # SO_RCVBUFFORCE ignores rmem_max but needs CAP_NET_ADMIN.
            self.sock.setsockopt(socket.SOL_SOCKET, 33, size)
        except PermissionError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        self.rcvbuf = size

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def request(self, msg_type: int, payload: bytes, flags: int = NLM_F_REQUEST | NLM_F_DUMP) -> int:
        if self._in_flight:
            raise RuntimeError(f"netlink request sent while the answer to request {self._in_flight} is unread")
        self._seq += 1
        header = NLMSG_HDR.pack(NLMSG_HDR.size + len(payload), msg_type, flags, self._seq, 0)
        self.sock.send(header + payload)
        self._in_flight = self._seq
        return self._seq

    def receive(self) -> bytes:
        """One datagram of the answer to the request in flight, or :class:`NetlinkTimeout`."""
        try:
            return self.sock.recv(RECV_SIZE)
        except TimeoutError as err:
            raise NetlinkTimeout(f"the kernel did not answer a netlink request within {self.timeout:g} s",
                                 errno.ETIMEDOUT) from err

    def answered(self) -> None:
        """The request in flight has been answered in full; the socket takes a new one."""
        self._in_flight = 0

    def dump(self, msg_type: int, payload: bytes) -> Iterator[list[Message]]:
        """Send a dump request and yield its reply one datagram (a list of messages) at a time.

        Abandoning the iteration early is allowed: the rest of the reply is read and dropped
        before the socket takes its next request."""
        seq = self.request(msg_type, payload)
        done = False
        try:
            while not done:
                data = self.receive()
                batch: list[Message] = []
                for kind, start, end, msg_seq in split_messages(data):
                    if msg_seq != seq:
                        continue  # a late answer to an earlier, abandoned request
                    if kind == NLMSG_DONE:
                        done = True
                        break
                    if kind == NLMSG_ERROR:
                        done = True
                        raise_for_error(data, start)
                        break
                    batch.append((kind, data, start, end))
                if batch:
                    yield batch
        finally:
            if not done:
                self._finish(seq)
            self.answered()

    def _finish(self, seq: int) -> None:
        """Read an abandoned dump to its end, so its answers cannot be taken for the next one's."""
        try:
            while True:
                data = self.receive()
                for kind, _start, _end, msg_seq in split_messages(data):
                    if msg_seq == seq and kind in (NLMSG_DONE, NLMSG_ERROR):
                        return
        except (NetlinkTimeout, OSError):
            return  # nothing more is coming; later answers are skipped by their sequence number

    def drain(self) -> Iterator[bytes]:
        """Yield every datagram waiting on a (multicast) socket without blocking.

        Raises ``OSError(ENOBUFS)`` when the kernel dropped notifications because the receive
        buffer overflowed; the socket stays usable afterwards.
        """
        while True:
            try:
                data = self.sock.recv(RECV_SIZE, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            yield data


def split_messages(data: bytes) -> Iterator[tuple[int, int, int, int]]:
    """Yield ``(type, payload_start, payload_end, seq)`` for each message of a datagram."""
    offset, size = 0, len(data)
    unpack = NLMSG_HDR.unpack_from
    while offset + 16 <= size:
        length, kind, _flags, seq, _pid = unpack(data, offset)
        if length < 16:
            return
        yield kind, offset + 16, offset + length, seq
        offset += (length + 3) & ~3


def raise_for_error(data: bytes, start: int) -> None:
    (code,) = NLMSG_ERR.unpack_from(data, start)
    if code == 0:
        return  # an ACK
    err = -code
    if err in (errno.EPERM, errno.EACCES):
        raise PrivilegeError("the kernel refused a netlink request: run as root or grant CAP_NET_ADMIN")
    raise NetlinkError(f"netlink request failed: {os.strerror(err)}", err)
