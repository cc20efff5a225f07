"""Exact per-flow accounting from successive observations of one namespace's sockets.

Every socket is counted once over its whole life: while it lives, by difference from the
previous observation; when it is destroyed, from the final counters in the destroy event.
Sockets are tracked by their kernel cookie, which is never reused, so a new connection on a
reused 4-tuple starts from zero. Sockets already open when the agent starts are taken as a
baseline: only what happens after start is counted.

The kernel's byte counters are in sequence space: ``bytes_acked`` includes the SYN (client
side) and our FIN once acknowledged, ``bytes_received`` the peer's FIN once processed. They
are turned back into payload with what each observation tells:

- a dumped socket's state says whether our FIN was acknowledged (FIN_WAIT2) and whether the
  peer's FIN arrived (CLOSE_WAIT, LAST_ACK, CLOSING);
- a destroy event has a write queue: when it is empty, our FIN was acknowledged if
  ``bytes_acked`` exceeds the data the socket ever sent (``bytes_sent - bytes_retrans``,
  which can only over-count). When local qdisc drops make that bound useless, a graceful
  close (FIN acknowledged) is assumed.
- a destroy event does not say whether the peer's FIN arrived; a socket that received data
  is assumed to have received it (the peer's FIN normally ends a connection). An orphaned
  active closer that received data after its last dump is then short by one byte.

Payload totals never go backwards, so an assumption can only ever cost that one byte.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from flowlens.kernel.sock_diag import Entry
from flowlens.model.flows import CLIENT, SERVER, FlowCounters, FlowKey
from flowlens.model.sockets import CLOSE_WAIT, CLOSING, FIN_WAIT2, LAST_ACK, LISTEN, SYN_SENT, TcpSocket

_FIN_RECEIVED_STATES = frozenset((CLOSE_WAIT, LAST_ACK, CLOSING))
# Segment counters are u32 in tcp_info and total_rto u16: deltas are taken modulo their width.
_U32 = 0xFFFFFFFF
_U16 = 0xFFFF
_ZERO = TcpSocket(0, 0, "", 0, "", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
# A tracked socket that vanished from dumps for this many cycles without a destroy event
# has had its event lost.
MISSING_CYCLES_BEFORE_LOST = 3


class _Track:
    """What the agent remembers about one live socket between observations."""

    __slots__ = ("attempt", "client", "established", "fin", "fingerprint", "key", "last", "missing", "received",
                 "resolving", "rtt", "rtt_epoch", "seen", "sent")

    def __init__(self, key: FlowKey, client: bool, last: TcpSocket | None, sent: int, received: int,
                 established: bool) -> None:
        self.key = key
        self.client = client
        self.last = last  # the previous observation; None means "all counters were zero"
        self.sent = sent
        self.received = received
        self.established = established
        self.fin = False
        self.missing = 0
        self.seen = 0
        self.fingerprint: tuple[int, ...] = ()
        self.rtt: list[int] = []
        self.rtt_epoch = -1
        self.attempt = False  # a connection attempt not yet counted
        self.resolving = False  # a ClusterIP whose NAT entry did not exist yet at first sight


@dataclass(slots=True)
class RoleResolver:
    """Decides whether a socket is the client or the server end of its connection.

    A socket whose local port has a listener in its namespace is a server; otherwise the
    ephemeral port range decides; failing that, the lower port is the server's.
    """

    ephemeral: tuple[int, int] = (32768, 60999)
    listeners: set[int] = field(default_factory=set)
    # Re-reads the namespace's listening ports; used once per batch when a socket that was
    # never dumped cannot be told apart by its ports alone.
    refresh: Callable[[], set[int]] | None = None
    refreshed: bool = False

    def is_client(self, sock: TcpSocket) -> bool:
        if sock.state == SYN_SENT:
            return True
        if sock.local_port in self.listeners:
            return False
        if sock.remote_port in self.listeners and sock.remote_ip == sock.local_ip:
            return True  # a connection to a listener of this very namespace
        lo, hi = self.ephemeral
        local_eph = lo <= sock.local_port <= hi
        remote_eph = lo <= sock.remote_port <= hi
        if local_eph != remote_eph:
            return local_eph
        if self.refresh is not None and not self.refreshed:
            self.refreshed = True
            self.listeners |= self.refresh()
            if sock.local_port in self.listeners:
                return False
            if sock.remote_port in self.listeners and sock.remote_ip == sock.local_ip:
                return True
        return sock.local_port > sock.remote_port


def _sent_payload(sock: TcpSocket, client: bool, final: bool) -> int:
    acked = sock.bytes_acked - (1 if client and sock.delivered else 0)
    if not final:
        fin_acked = sock.state == FIN_WAIT2
    elif sock.write_queue or acked <= 0:
        fin_acked = False
    else:  # everything written was acknowledged: was a FIN among it?
        fin_acked = acked != sock.bytes_sent - sock.bytes_retrans
    return max(0, acked - fin_acked)


class NamespaceAccountant:
    """Accumulates one namespace's per-flow deltas for the current interval."""

    def __init__(self, label: str, roles: RoleResolver | None = None,
                 resolve_service: Callable[[str, int, str, int], tuple[str, int] | None] | None = None) -> None:
        self.label = label
        self.roles = roles or RoleResolver()
        # (client ip, port, service ip, port) → the backend a NATed connection reached, or None.
        self.resolve_service = resolve_service
        self.service_ips: dict[FlowKey, str] = {}
        self.tracks: dict[int, _Track] = {}
        self.interval: dict[FlowKey, FlowCounters] = {}
        self.rtt_samples: dict[FlowKey, list[int]] = {}
        self.active: dict[FlowKey, int] = {}  # live tracked sockets per flow
        self.lost_events = 0
        self.cycle = 0
        self.epoch = 0  # counts intervals, so tracks can cache their flow's RTT sample list

    # -- observations -------------------------------------------------------------------
    def observe_scan(self, entries: Iterable[Entry], parse: Callable[[bytes, int, int], TcpSocket | None],
                     baseline: bool = False) -> int:
        """Apply one full dump (see :meth:`SockDiag.scan`). A socket whose fingerprint is
        unchanged since the last look only gives an RTT sample; the others are decoded and
        counted. With ``baseline`` nothing is counted, only remembered."""
        tracks, listeners = self.tracks, self.roles.listeners
        listeners.clear()
        self.roles.refreshed = False
        self.cycle += 1
        cycle, epoch, samples = self.cycle, self.epoch, self.rtt_samples
        count = 0
        for cookie, state, fingerprint, data, start, end in entries:
            if state == LISTEN:
                listener = parse(data, start, end)
                if listener is not None:
                    listeners.add(listener.local_port)
                continue
            count += 1
            track = tracks.get(cookie)
            if track is not None and track.fingerprint == fingerprint and track.last is not None \
                    and track.last.state == state:
                track.seen = cycle
                track.missing = 0
                if fingerprint[0] and track.established:  # an RTT sample per socket per interval
                    if track.rtt_epoch != epoch:
                        track.rtt_epoch = epoch
                        track.rtt = samples.setdefault(track.key, [])
                    track.rtt.append(fingerprint[0])
                continue
            sock = parse(data, start, end)
            if sock is None:
                continue
            if track is None:
                track = self._new_track(sock, baseline)
            track.seen = cycle
            track.fingerprint = fingerprint
            if state in _FIN_RECEIVED_STATES:
                track.fin = True
            self._apply(track, sock, final=False)
        if count < len(tracks):
            self._age_missing()
        return count

    def observe_destroyed(self, sockets: Iterable[TcpSocket], baseline: bool = False) -> None:
        """Apply destroy events: final counters, then forget the socket."""
        self.roles.refreshed = False
        for sock in sockets:
            if sock.state == LISTEN:
                continue
            track = self.tracks.get(sock.cookie)
            if track is None:
                if baseline:
                    continue  # destroyed before the first dump: it predates the agent
                track = self._new_track(sock, False)
            self._drop(sock.cookie)
            self._apply(track, sock, final=True)

    # -- internals ----------------------------------------------------------------------
    def _new_track(self, sock: TcpSocket, baseline: bool) -> _Track:
        client = self.roles.is_client(sock)
        if client:
            key = self._client_key(sock)
        else:
            key = FlowKey(self.label, sock.local_ip, sock.remote_ip, sock.local_port, SERVER)
        if baseline:
            track = _Track(key, client, sock, _sent_payload(sock, client, False),
                           self._received_payload(sock, False, False), established=sock.delivered > 0)
        else:
            track = _Track(key, client, None, 0, 0, established=False)
            track.attempt = client
        # A SYN still waiting for its first hop has no conntrack entry yet: resolve it later.
        track.resolving = (client and sock.state == SYN_SENT and key.remote_ip == sock.remote_ip
                           and self.resolve_service is not None)
        self.tracks[sock.cookie] = track
        self._count_active(key, 1)
        return track

    def _client_key(self, sock: TcpSocket) -> FlowKey:
        """A client's flow goes to the peer it actually reached: a ClusterIP is resolved to the
        backend through conntrack, and the ClusterIP is kept beside the flow."""
        if self.resolve_service is not None:
            target = self.resolve_service(sock.local_ip, sock.local_port, sock.remote_ip, sock.remote_port)
            if target is not None:
                key = FlowKey(self.label, sock.local_ip, target[0], target[1], CLIENT)
                self.service_ips[key] = sock.remote_ip
                return key
        return FlowKey(self.label, sock.local_ip, sock.remote_ip, sock.remote_port, CLIENT)

    def _resolve_late(self, track: _Track, sock: TcpSocket) -> None:
        key = self._client_key(sock)
        if key != track.key:
            self._count_active(track.key, -1)
            self._count_active(key, 1)
            track.key, track.rtt_epoch = key, -1
            track.resolving = False
        elif sock.state != SYN_SENT:
            track.resolving = False  # past the handshake and still not NATed: it is not

    def _count_active(self, key: FlowKey, change: int) -> None:
        left = self.active.get(key, 0) + change
        if left > 0:
            self.active[key] = left
        else:
            self.active.pop(key, None)

    def _drop(self, cookie: int) -> None:
        self._count_active(self.tracks.pop(cookie).key, -1)

    def _counters(self, key: FlowKey) -> FlowCounters:
        counters = self.interval.get(key)
        if counters is None:
            counters = self.interval[key] = FlowCounters()
        return counters

    @staticmethod
    def _received_payload(sock: TcpSocket, fin: bool, final: bool) -> int:
        if fin or (final and sock.bytes_received > 0):
            return max(0, sock.bytes_received - 1)
        return sock.bytes_received

    def _apply(self, track: _Track, sock: TcpSocket, final: bool) -> None:
        if track.resolving:
            self._resolve_late(track, sock)
        c = self._counters(track.key)
        if track.attempt:
            c.connections_attempted += 1
            track.attempt = False
        last = track.last
        sent = _sent_payload(sock, track.client, final)
        received = max(track.received, self._received_payload(sock, track.fin, final))
        c.sent_bytes += max(0, sent - track.sent)
        c.received_bytes += received - track.received
        track.sent, track.received = max(sent, track.sent), received
        if last is None:
            last = _ZERO
        c.segs_out += (sock.segs_out - last.segs_out) & _U32
        c.segs_in += (sock.segs_in - last.segs_in) & _U32
        c.data_segs_out += (sock.data_segs_out - last.data_segs_out) & _U32
        c.data_segs_in += (sock.data_segs_in - last.data_segs_in) & _U32
        c.retransmitted_segments += (sock.total_retrans - last.total_retrans) & _U32
        c.retransmitted_bytes += max(0, sock.bytes_retrans - last.bytes_retrans)
        c.rto += ((sock.total_rto or 0) - (last.total_rto or 0)) & _U16
        c.received_out_of_order += (sock.rcv_ooopack - last.rcv_ooopack) & _U32
        if not final or track.last is None:
            self._sample_rtt(track.key, sock)
        track.last = sock
        track.missing = 0
        if not track.established and sock.delivered > 0:
            track.established = True
            c.connections_established += 1
        elif final and track.client and not track.established:
            c.connections_failed += 1

    def _sample_rtt(self, key: FlowKey, sock: TcpSocket) -> None:
        if sock.rtt_us and sock.delivered:
            self.rtt_samples.setdefault(key, []).append(sock.rtt_us)

    def _age_missing(self) -> None:
        cycle = self.cycle
        lost = [cookie for cookie, track in self.tracks.items() if track.seen != cycle
                and _bump_missing(track) >= MISSING_CYCLES_BEFORE_LOST]
        for cookie in lost:
            self._drop(cookie)
        self.lost_events += len(lost)

    def take_interval(self) -> tuple[dict[FlowKey, FlowCounters], dict[FlowKey, list[int]]]:
        """Hand over the interval's counters and RTT samples and start a new interval."""
        interval, samples = self.interval, self.rtt_samples
        self.interval, self.rtt_samples = {}, {}
        self.epoch += 1
        for key, rtts in samples.items():
            counters = interval.get(key)
            if counters is None:
                counters = interval[key] = FlowCounters()
            counters.rtt_sum_us += sum(rtts)
            counters.rtt_samples += len(rtts)
        return interval, samples


def _bump_missing(track: _Track) -> int:
    track.missing += 1
    return track.missing


