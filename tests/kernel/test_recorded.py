"""The netlink readers on datagrams recorded from a real kernel: no root, no kernel needed.

``tests/kernel/record_fixtures.py`` recorded what the kernel answered each reader's requests,
with the values an independent source (ss, conntrack -L, ip, tc, the byte counts sent) gave
at the same moment; these tests replay the datagrams through a fake socket opener and compare.
Then the same readers on broken datagrams: each must raise a clear ``NetlinkError``, never hang.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import socket
import struct
import subprocess
from collections.abc import Iterator

import pytest

from flowlens.kernel.conntrack import CT_NEW, Conntrack, NatEntry, NatTarget, parse_attrs, parse_entry
from flowlens.kernel.netlink import (
    NETLINK_ADD_MEMBERSHIP,
    NETLINK_ROUTE,
    NETLINK_SOCK_DIAG,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    SOL_NETLINK,
    NetlinkSocket,
    attr_table,
    iter_attrs,
    pack_attr,
    raise_for_error,
    split_messages,
)
from flowlens.kernel.rtnetlink import IFINFOMSG, RTM_GETLINK, RTM_NEWLINK, RouteNetlink
from flowlens.kernel.sock_diag import (
    DIAG_MSG_SIZE,
    GROUP_INET6_TCP_DESTROY,
    GROUP_INET_TCP_DESTROY,
    INET_DIAG_INFO,
    REQ_V2,
    SOCK_DIAG_BY_FAMILY,
    TCPI_CORE,
    TCPI_FINGERPRINT,
    TCPI_FULL,
    TCPI_OOO,
    DestroyEvents,
    SockDiag,
    tcp_info_offsets,
)
from flowlens.model.counters import LinkCounters, QdiscCounters
from flowlens.model.errors import NetlinkError, NetlinkTimeout, PrivilegeError
from flowlens.model.sockets import TcpSocket
from tests.kernel.replay import Exchange, Replay, load, message, messages

TCP, UDP = socket.IPPROTO_TCP, socket.IPPROTO_UDP


@pytest.fixture(autouse=True)
def no_hang() -> Iterator[None]:
    """Whatever the input, a reader answers within seconds: a loop or a wait fails the test."""
    def stuck(_signum: int, _frame: object) -> None:
        raise AssertionError("still running after 10 s: a loop or a wait that never ends")

    previous = signal.signal(signal.SIGALRM, stuck)
    signal.setitimer(signal.ITIMER_REAL, 10)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def fingerprint(expected: dict[str, int]) -> tuple[int, ...]:
    return tuple(expected[k] for k in ("rtt_us", "total_retrans", "bytes_acked", "bytes_received", "segs_out",
                                       "segs_in"))


def malformed(err: pytest.ExceptionInfo[NetlinkError]) -> bool:
    return err.value.errno == errno.EBADMSG and str(err.value).startswith("malformed netlink reply: ")


# --- sock_diag: dumps ---------------------------------------------------------------------------

DIAG = load("sock_diag_dump")
SOCKETS = DIAG["expected"]["sockets"]
# The IPv6 dump's sockets, IPv4 clients of the dual-stack listener included, come after the IPv4 one's.
IPV6_SOCKETS = SOCKETS[sum(kind == SOCK_DIAG_BY_FAMILY for datagram in DIAG["exchanges"][0]["replies"]
                           for _offset, _length, kind in messages(datagram)):]


def test_the_recording_is_what_these_tests_need():
    v4, _v6 = DIAG["exchanges"]
    assert len(v4["replies"]) > 2, "an IPv4 dump of several datagrams"
    states = {s["state"] for s in SOCKETS}
    assert states == {1, 10}
    assert any(s["total_retrans"] and s["bytes_retrans"] for s in SOCKETS), "a connection that retransmitted"
    assert any(s["rcv_ooopack"] for s in SOCKETS), "a connection that received out of order"
    assert {s["local_ip"] for s in SOCKETS} == {"127.0.0.1", "::", "::1"}


def test_a_dump_reads_every_socket_as_ss_showed_it():
    replay = Replay(DIAG["exchanges"])
    diag = SockDiag(opener=replay)
    found = list(diag.dump())
    diag.close()
    assert [s._asdict() for s in found] == SOCKETS
    assert replay.used_up
    sock = replay.sockets[0]
    assert sock.protocol == NETLINK_SOCK_DIAG and sock.bound == (0, 0) and sock.closed


def test_an_ipv4_client_of_a_dual_stack_listener_is_ipv4():
    # The server end is an AF_INET6 socket holding ::ffff:127.0.0.1.
    mapped = [s for s in SOCKETS if s["local_port"] == 5002 and s["state"] == 1]
    assert mapped and all(s["local_ip"] == s["remote_ip"] == "127.0.0.1" for s in mapped)
    found = {s.cookie: s for s in SockDiag(opener=Replay(DIAG["exchanges"])).dump()}
    for s in mapped:
        assert found[s["cookie"]].local_ip == "127.0.0.1"


def test_a_scan_peeks_at_each_socket_and_parses_on_demand():
    diag = SockDiag(opener=Replay(DIAG["exchanges"]))
    entries = list(diag.scan())
    assert [(cookie, state) for cookie, state, *_ in entries] == [(s["cookie"], s["state"]) for s in SOCKETS]
    for (_cookie, _state, fp, data, start, end), expected in zip(entries, SOCKETS, strict=True):
        assert fp == fingerprint(expected)
        assert diag.parse(data, start, end) == TcpSocket(**expected)


def test_parsing_while_scanning_reads_the_message_just_scanned():
    diag = SockDiag(opener=Replay(DIAG["exchanges"]))
    parsed = [diag.parse(data, start, end) for _cookie, _state, _fp, data, start, end in diag.scan()]
    assert [s._asdict() for s in parsed] == SOCKETS


def test_an_abandoned_dump_is_read_to_its_end_before_the_next():
    v4, v6 = DIAG["exchanges"]
    replay = Replay([v4, v4, v6])
    diag = SockDiag(opener=replay)
    scan = diag.scan()
    next(scan)
    scan.close()  # the rest of the IPv4 answer is read and dropped
    assert [s._asdict() for s in diag.dump()] == SOCKETS
    assert replay.used_up


def test_a_dump_past_its_deadline_stops():
    diag = SockDiag(opener=Replay(DIAG["exchanges"]))
    with pytest.raises(NetlinkTimeout, match="longer than its cycle"):
        list(diag.scan(deadline=1e-9))


def test_a_dump_whose_end_never_comes_times_out():
    v4, _v6 = DIAG["exchanges"]
    cut = Exchange(v4["request"], v4["replies"][:-1])  # NLMSG_DONE never arrives
    diag = SockDiag(opener=Replay([cut]))
    with pytest.raises(NetlinkTimeout, match="did not answer"):
        list(diag.dump())


# --- sock_diag: destroy notifications -----------------------------------------------------------

DESTROY = load("destroy_events")


def test_destroy_notifications_carry_the_final_counters():
    replay = Replay(events=DESTROY["events"])
    events = DestroyEvents(opener=replay)
    destroyed = events.drain()
    assert events.received == len(DESTROY["expected"]["sockets"]) == len(destroyed)
    found = {s.cookie: s for s in destroyed}
    for expected in DESTROY["expected"]["sockets"]:
        sock = found[expected["cookie"]]
        assert (sock.local_ip, sock.local_port, sock.remote_ip, sock.remote_port) == (
            expected["local_ip"], expected["local_port"], expected["remote_ip"], expected["remote_port"])
        assert (sock.bytes_sent, sock.bytes_received, sock.state) == (
            expected["bytes_sent"], expected["bytes_received"], expected["state"])
    assert events.drain() == []  # nothing more: the socket is non-blocking
    joined = [(level, option, value) for level, option, value in replay.sockets[0].options if level == SOL_NETLINK]
    assert joined == [(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, GROUP_INET_TCP_DESTROY),
                      (SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, GROUP_INET6_TCP_DESTROY)]
    assert replay.sockets[0].timeout == 0.0


def test_dropped_notifications_are_counted_and_the_rest_still_read():
    datagrams = DESTROY["events"]
    half = len(datagrams) // 2
    events = DestroyEvents(opener=Replay(events=[*datagrams[:half], OSError(errno.ENOBUFS, "No buffer space"),
                                                 *datagrams[half:]]))
    assert len(events.drain()) == len(DESTROY["expected"]["sockets"])
    assert events.overflows == 1


def test_a_notification_error_is_raised():
    events = DestroyEvents(opener=Replay(events=[error_message(errno.EINVAL)]))
    with pytest.raises(NetlinkError) as err:
        events.drain()
    assert err.value.errno == errno.EINVAL


# --- conntrack ----------------------------------------------------------------------------------

CT = load("conntrack")
LOOKUPS = CT["expected"]["lookups"]


@pytest.mark.parametrize("index", range(len(LOOKUPS)), ids=[lookup["what"] for lookup in LOOKUPS])
def test_conntrack_lookups_find_what_conntrack_listed(index: int):
    lookup = LOOKUPS[index]
    ct = Conntrack(opener=Replay([CT["exchanges"][index]]))
    target = lookup["target"]
    assert ct.lookup(*lookup["query"]) == (NatTarget(*target) if target else None)


def test_conntrack_lookups_in_a_row_on_one_socket():
    ct = Conntrack(opener=Replay(CT["exchanges"][:len(LOOKUPS)]))
    for lookup in LOOKUPS:
        target = lookup["target"]
        assert ct.lookup(*lookup["query"]) == (NatTarget(*target) if target else None)


def test_dump_nat_lists_the_entries_conntrack_listed():
    ct = Conntrack(opener=Replay(CT["exchanges"][len(LOOKUPS):]))
    for protocol in (TCP, UDP):
        entries = ct.dump_nat(protocol)
        assert all(isinstance(e, NatEntry) for e in entries)
        as_lists = sorted(([e.protocol, e.src, e.sport, e.dst, e.dport, *e.target] for e in entries), key=str)
        assert as_lists == sorted(CT["expected"]["dump_nat"][str(protocol)], key=str)


def test_conntrack_entries_read_the_long_way_agree():
    """The tuples of every recorded entry, read in place and attribute by attribute."""
    count = 0
    for exchange in CT["exchanges"]:
        for datagram in exchange["replies"]:
            for kind, start, end, _seq in split_messages(datagram):
                if kind == CT_NEW:
                    assert parse_entry(datagram, start, end) == parse_attrs(datagram, start, end) is not None
                    count += 1
    assert count >= 6


# --- rtnetlink ----------------------------------------------------------------------------------

RT = load("rtnetlink")


def test_links_are_what_ip_showed():
    route = RouteNetlink(opener=Replay(RT["exchanges"][:1]))
    assert route.links() == [LinkCounters(**link) for link in RT["expected"]["links"]]


def test_qdiscs_are_what_tc_showed():
    route = RouteNetlink(opener=Replay(RT["exchanges"][1:]))
    assert route.qdiscs() == [QdiscCounters(**q) for q in RT["expected"]["qdiscs"]]


def test_the_rtnetlink_recording_covers_each_kind_of_link():
    links = {link["name"]: link for link in RT["expected"]["links"]}
    assert links["veth0"]["peer_ifindex"] == links["veth0"]["ifindex"]  # its peer, in another namespace
    assert links["inner0"]["peer_ifindex"] == links["inner1"]["ifindex"]
    assert links["lo"]["peer_ifindex"] is None and links["br0"]["peer_ifindex"] is None
    assert links["veth0"]["tx_bytes"] > links["veth0"]["rx_bytes"] > 0


# --- errors the kernel sent ---------------------------------------------------------------------

ERRORS = load("errors")


def test_a_dump_answered_with_an_error_raises_it_and_the_socket_goes_on():
    exchange = ERRORS["exchanges"][0]
    assert exchange["protocol"] == NETLINK_SOCK_DIAG and ERRORS["expected"][0]["errno"] == "EINVAL"
    replay = Replay([exchange, exchange])
    nl = NetlinkSocket(NETLINK_SOCK_DIAG, opener=replay)
    for _ in range(2):  # no reading on after the error: the next request is answered at once
        with pytest.raises(NetlinkError) as err:
            list(nl.dump(SOCK_DIAG_BY_FAMILY, REQ_V2.pack(200, TCP, 0, 0)))
        assert err.value.errno == errno.EINVAL and "Invalid argument" in str(err.value)
    assert replay.used_up


def test_a_request_answered_with_an_error():
    exchange = ERRORS["exchanges"][1]
    assert exchange["protocol"] == NETLINK_ROUTE and ERRORS["expected"][1]["errno"] == "ENODEV"
    nl = NetlinkSocket(NETLINK_ROUTE, opener=Replay([exchange]))
    nl.request(RTM_GETLINK, IFINFOMSG.pack(socket.AF_UNSPEC, 0, 9999, 0, 0), NLM_F_REQUEST)
    data = nl.receive()
    ((kind, start, end, _seq),) = split_messages(data)
    assert kind == NLMSG_ERROR
    with pytest.raises(NetlinkError) as err:
        raise_for_error(data, start, end)
    assert err.value.errno == errno.ENODEV


# --- broken datagrams ---------------------------------------------------------------------------


def error_message(code: int, size: int = 4, seq: int = 0) -> bytes:
    return message(NLMSG_ERROR, struct.pack("=i", -code)[:size] + bytes(16)[:max(0, size - 4)], seq=seq)


def with_replies(exchange: dict, replies: list) -> Exchange:
    return Exchange(exchange["request"], replies)


def first_dump_datagram() -> bytes:
    return DIAG["exchanges"][0]["replies"][0]


@pytest.mark.parametrize("cut", ["inside a message", "inside a header", "just after a header"])
def test_a_truncated_datagram_is_malformed(cut: str):
    data = first_dump_datagram()
    (_offset0, _length0, _kind0), (offset, length, _kind) = messages(data)[:2]
    size = {"inside a message": offset + length // 2, "inside a header": offset + 7,
            "just after a header": offset + 16}[cut]
    diag = SockDiag(opener=Replay([with_replies(DIAG["exchanges"][0], [data[:size]])]))
    with pytest.raises(NetlinkError) as err:
        list(diag.dump())
    assert malformed(err)
    assert not isinstance(err.value, NetlinkTimeout)


def test_a_truncated_notification_is_malformed():
    data = DESTROY["events"][0]
    events = DestroyEvents(opener=Replay(events=[data[:len(data) - 20]]))
    with pytest.raises(NetlinkError) as err:
        events.drain()
    assert malformed(err)


def info_header_at(data: bytes, offset: int) -> int:
    """Where, in the datagram, the INET_DIAG_INFO header of the message at ``offset`` is."""
    at = offset + 16 + DIAG_MSG_SIZE
    while True:
        length, kind = struct.unpack_from("=HH", data, at)
        if kind & 0x3FFF == INET_DIAG_INFO:
            return at
        at += (length + 3) & ~3


@pytest.mark.parametrize("which", [0, 5])
@pytest.mark.parametrize("read", ["dump", "scan"])
def test_an_attribute_running_past_its_message_is_malformed(which: int, read: str):
    data = bytearray(first_dump_datagram())
    offset, length, _kind = messages(bytes(data))[which]
    at = info_header_at(bytes(data), offset)
    struct.pack_into("=H", data, at, offset + length - at + 4)  # 4 bytes longer than what is left
    diag = SockDiag(opener=Replay([with_replies(DIAG["exchanges"][0], [bytes(data)])]))
    with pytest.raises(NetlinkError) as err:
        list(diag.dump() if read == "dump" else diag.scan())
    assert malformed(err)


@pytest.mark.parametrize("length", [0, 3])
def test_an_attribute_shorter_than_its_header_is_malformed(length: int):
    data = bytearray(first_dump_datagram())
    offset, _length, _kind = messages(bytes(data))[0]
    struct.pack_into("=H", data, offset + 16 + DIAG_MSG_SIZE, length)
    diag = SockDiag(opener=Replay([with_replies(DIAG["exchanges"][0], [bytes(data)])]))
    with pytest.raises(NetlinkError) as err:
        list(diag.dump())
    assert malformed(err)


@pytest.mark.parametrize("length", [0, 15])
def test_a_message_shorter_than_its_header_is_malformed(length: int):
    data = bytearray(first_dump_datagram())
    offset, _length, _kind = messages(bytes(data))[1]
    struct.pack_into("=I", data, offset, length)
    diag = SockDiag(opener=Replay([with_replies(DIAG["exchanges"][0], [bytes(data)])]))
    with pytest.raises(NetlinkError) as err:
        list(diag.dump())
    assert malformed(err)


def test_a_sock_diag_message_shorter_than_inet_diag_msg_is_malformed():
    diag = SockDiag(opener=Replay([with_replies(DIAG["exchanges"][0], [message(SOCK_DIAG_BY_FAMILY, bytes(40))])]))
    with pytest.raises(NetlinkError) as err:
        list(diag.dump())
    assert malformed(err)


def test_a_socket_without_tcp_info_is_skipped():
    data = first_dump_datagram()
    offset, _length, _kind = messages(data)[0]
    bare = message(SOCK_DIAG_BY_FAMILY, data[offset + 16:offset + 16 + DIAG_MSG_SIZE])
    v4, v6 = DIAG["exchanges"]
    assert IPV6_SOCKETS and len(IPV6_SOCKETS) < len(SOCKETS)
    diag = SockDiag(opener=Replay([with_replies(v4, [bare, message(NLMSG_DONE, bytes(4))]), v6]))
    assert [s.cookie for s in diag.dump()] == [s["cookie"] for s in IPV6_SOCKETS]


@pytest.mark.parametrize(("code", "raised"), [(errno.EINVAL, NetlinkError), (errno.ENOENT, NetlinkError),
                                             (errno.EPERM, PrivilegeError), (errno.EACCES, PrivilegeError)])
def test_an_error_message_raises_its_errno(code: int, raised: type):
    diag = SockDiag(opener=Replay([with_replies(DIAG["exchanges"][0], [error_message(code)])]))
    with pytest.raises(raised) as err:
        list(diag.dump())
    if raised is NetlinkError:
        assert err.value.errno == code and os.strerror(code) in str(err.value)


def test_an_error_after_some_sockets_raises():
    data = first_dump_datagram()
    diag = SockDiag(opener=Replay([with_replies(DIAG["exchanges"][0], [data, error_message(errno.EINTR)])]))
    with pytest.raises(NetlinkError) as err:
        list(diag.dump())
    assert err.value.errno == errno.EINTR


@pytest.mark.parametrize("size", [0, 2])
def test_an_error_message_without_its_code_is_malformed(size: int):
    diag = SockDiag(opener=Replay([with_replies(DIAG["exchanges"][0], [error_message(errno.EINVAL, size)])]))
    with pytest.raises(NetlinkError) as err:
        list(diag.dump())
    assert malformed(err)


def test_an_ack_ends_a_dump():
    diag = SockDiag(opener=Replay([with_replies(DIAG["exchanges"][0], [error_message(0)]), DIAG["exchanges"][1]]))
    assert [s._asdict() for s in diag.dump()] == IPV6_SOCKETS


def test_conntrack_enoent_is_no_entry_and_other_errors_raise():
    request = CT["exchanges"][0]
    assert Conntrack(opener=Replay([with_replies(request, [error_message(errno.ENOENT)])])).lookup(
        *LOOKUPS[0]["query"]) is None
    with pytest.raises(NetlinkError) as err:
        Conntrack(opener=Replay([with_replies(request, [error_message(errno.EINVAL)])])).lookup(*LOOKUPS[0]["query"])
    assert err.value.errno == errno.EINVAL
    with pytest.raises(NetlinkError) as err:
        Conntrack(opener=Replay([with_replies(request, [error_message(errno.ENOENT, 2)])])).lookup(
            *LOOKUPS[0]["query"])
    assert malformed(err)


def test_a_conntrack_attribute_running_past_its_message_is_malformed():
    data = bytearray(CT["exchanges"][0]["replies"][0])
    ((offset, length, kind),) = messages(bytes(data))
    assert kind == CT_NEW
    struct.pack_into("=H", data, offset + 16 + 4, length)  # CTA_TUPLE_ORIG, longer than the message
    ct = Conntrack(opener=Replay([with_replies(CT["exchanges"][0], [bytes(data)])]))
    with pytest.raises(NetlinkError) as err:
        ct.lookup(*LOOKUPS[0]["query"])
    assert malformed(err)


def test_a_conntrack_address_of_the_wrong_size_is_malformed():
    # The lookup's answer, read the long way, with the original source address 2 bytes short.
    data = bytearray(CT["exchanges"][0]["replies"][0])
    offset = messages(bytes(data))[0][0] + 16 + 4  # past the nfgenmsg: CTA_TUPLE_ORIG
    struct.pack_into("=H", data, offset + 8, 6)  # CTA_IP_V4_SRC: 2 bytes of payload
    ct = Conntrack(opener=Replay([with_replies(CT["exchanges"][0], [bytes(data)])]))
    with pytest.raises(NetlinkError) as err:
        ct.lookup(*LOOKUPS[0]["query"])
    assert malformed(err)


def test_a_link_attribute_running_past_its_message_is_malformed():
    data = bytearray(RT["exchanges"][0]["replies"][0])
    offset, length, kind = messages(bytes(data))[0]
    assert kind == RTM_NEWLINK
    first_attr = offset + 16 + IFINFOMSG.size
    struct.pack_into("=H", data, first_attr, offset + length - first_attr + 8)
    route = RouteNetlink(opener=Replay([with_replies(RT["exchanges"][0], [bytes(data)])]))
    with pytest.raises(NetlinkError) as err:
        route.links()
    assert malformed(err)


def test_a_link_message_shorter_than_ifinfomsg_is_malformed():
    route = RouteNetlink(opener=Replay([with_replies(RT["exchanges"][0], [message(RTM_NEWLINK, bytes(8))])]))
    with pytest.raises(NetlinkError) as err:
        route.links()
    assert malformed(err)


# --- the attribute decoder ----------------------------------------------------------------------


def test_nested_attributes_are_decoded_by_the_same_function():
    inner = pack_attr(1, b"\x0a\x00\x00\x01") + pack_attr(2, b"abc")
    buf = pack_attr(7, b"xy") + pack_attr(3 | 1 << 15, inner)  # NLA_F_NESTED
    outer = attr_table(buf, 0, len(buf))
    assert set(outer) == {7, 3}
    a, b = outer[3]
    assert [(kind, buf[x:y]) for kind, x, y in iter_attrs(buf, a, b)] == [(1, b"\x0a\x00\x00\x01"), (2, b"abc")]
    assert buf[slice(*outer[7])] == b"xy"


def test_padding_after_the_last_attribute_is_not_an_attribute():
    buf = pack_attr(1, b"a") + b"\0\0"
    assert [kind for kind, _a, _b in iter_attrs(buf, 0, len(buf))] == [1]


# --- struct tcp_info ----------------------------------------------------------------------------


def test_the_tcp_info_table_matches_what_the_kernel_sends():
    offsets = tcp_info_offsets()
    ends = {offset + struct.calcsize(code) for offset, code in offsets.values()}
    # The recording kernel sent a whole struct tcp_info of its generation: one that ends where a
    # member of the table ends (280 bytes, the whole table, from Linux 6.18).
    data = first_dump_datagram()
    at = info_header_at(data, messages(data)[0][0])
    size = struct.unpack_from("=H", data, at)[0] - 4
    assert size in ends and size >= TCPI_FULL.size
    assert max(ends) == 280
    assert (TCPI_CORE.size, TCPI_OOO.size, TCPI_FULL.size) == (216, 228, 242)
    assert TCPI_FINGERPRINT.format == "=68xI28xI16xQQII"
    assert offsets["tcpi_total_rto"] == (240, "H") and offsets["tcpi_bytes_acked"] == (120, "Q")


def test_the_tcp_info_table_matches_the_c_header(tmp_path):
    """Offsets from the table against a C compiler's, for every member the system header has."""
    header = "/usr/include/linux/tcp.h"
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None or not os.path.exists(header):
        pytest.skip("needs a C compiler and linux/tcp.h")
    with open(header) as f:
        text = f.read()
    body = text[text.index("struct tcp_info {"):]
    body = body[:body.index("};")].replace(" ", "").replace("\t", "")
    members = [(name, offset) for name, (offset, _code) in tcp_info_offsets().items()
               if ":" not in name and f"{name};" in body]
    assert len(members) > 50
    program = "#include <stdio.h>\n#include <stddef.h>\n#include <linux/tcp.h>\nint main(void) {\n"
    program += "".join(f'    printf("%zu\\n", offsetof(struct tcp_info, {name}));\n' for name, _ in members)
    program += "    return 0;\n}\n"
    binary = tmp_path / "offsets"
    build = subprocess.run([compiler, "-x", "c", "-o", str(binary), "-"], input=program, capture_output=True,
                           text=True)
    if build.returncode:
        pytest.skip(f"the C compiler failed: {build.stderr[:200]}")
    offsets = subprocess.run([str(binary)], capture_output=True, text=True, check=True).stdout.split()
    assert dict(zip([name for name, _ in members], map(int, offsets), strict=True)) == dict(members)
