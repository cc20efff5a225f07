"""Exact per-flow accounting from successive observations of one namespace's sockets.

Every socket is counted once over its whole life: while it lives, by difference from the
previous observation; when it is destroyed, from the final counters in the destroy event.
Sockets are tracked by their kernel cookie, which is never reused, so a new connection on a
reused 4-tuple starts from zero. Sockets already open when the agent starts are taken as a
baseline: only what happens after start is counted.

The kernel's byte counters are in sequence space: ``bytes_acked`` includes the SYN (client
side) and our FIN once acknowledged, ``bytes_received`` the peer's FIN once processed. They
are turned back into payload with what each observation tells. A dump reads a socket's state
a moment before its counters, so the state can lag them (a FIN processed in between is in the
counters, not in the state); each rule below holds whatever happened in that moment:

- sent: our FIN is in ``bytes_acked`` when the state says so (FIN_WAIT2), or when
  ``bytes_acked`` exceeds the data the socket ever sent (``bytes_sent - bytes_retrans``, which
  can only over-count); a destroy event with an empty write queue has had everything it wrote
  acknowledged, FIN included unless that bound says otherwise (when local qdisc drops make the
  bound useless, a graceful close is assumed);
- received: the peer's FIN is in ``bytes_received`` when the state says so (CLOSE_WAIT,
  LAST_ACK, CLOSING). Otherwise a FIN may have arrived between the state and the counters,
  so a dump that finds new bytes counts all but the last, which the next look settles: its
  state, read after this dump's counters, proves them FIN-free. A destroy event does not say
  whether the peer's FIN arrived; a socket that received bytes not yet settled is assumed to
  have received it. An orphaned active closer that received data after its last dump and
  never got the peer's FIN is then short by one byte.

So a live connection that is receiving may trail by one byte until the agent looks again, a
closed one is exact (but for the case above), and payload totals never go backwards.

Roles come from the kernel, not from port numbers: a socket is the server end of its
connection when its namespace had a listener on its local port (the kernel never hands out an
ephemeral port that a listener holds), as seen in the dumps and in listeners' own destroy
events. A socket first seen in a destroy event whose port matches no listener known yet may
belong to a listener born since the last dump, so it waits (parked) until the next dump has
shown the namespace's listeners. Listening and never-connected sockets are not connections.

The namespace's own TCP counters keep the accounting honest: every connection the kernel
opened (``TcpActiveOpens`` + ``TcpPassiveOpens``) must turn up as a socket here, in a dump or a
destroy event. What does not was lost (destroy events the kernel dropped for a socket never
dumped) and is exported as unattributed connections, with an estimate of their bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from flowlens.kernel.sock_diag import Entry
from flowlens.model.flows import CLIENT, SERVER, FlowCounters, FlowKey
from flowlens.model.sockets import CLOSE, CLOSE_WAIT, CLOSING, FIN_WAIT2, LAST_ACK, LISTEN, SYN_SENT, TcpSocket

_FIN_RECEIVED_STATES = frozenset((CLOSE_WAIT, LAST_ACK, CLOSING))
# Segment counters are u32 in tcp_info and total_rto u16: deltas are taken modulo their width.
_U32 = 0xFFFFFFFF
_U16 = 0xFFFF
_ZERO = TcpSocket(0, 0, "", 0, "", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
# A tracked socket that vanished from dumps for this many cycles without a destroy event
# has had its event lost.
MISSING_CYCLES_BEFORE_LOST = 3
# Destroyed sockets waiting for the next dump to tell their role; past this many they are
# decided with what is known, so memory stays bounded whatever the churn.
MAX_PARKED = 200_000


class _Track:
    """What the agent remembers about one live socket between observations."""

    __slots__ = ("attempt", "client", "established", "fin", "fingerprint", "key", "last", "missing", "raw_received",
                 "received", "reset", "resolving", "rtt", "rtt_epoch", "seen", "sent", "unsettled")

    def __init__(self, key: FlowKey, client: bool, last: TcpSocket | None, sent: int, received: int,
                 established: bool) -> None:
        self.key = key
        self.client = client
        self.last = last  # the previous observation; None means "all counters were zero"
        self.sent = sent
        self.received = received
        self.established = established
        self.fin = False
        self.reset = False
        self.raw_received = last.bytes_received if last is not None else 0
        self.unsettled = False  # the last byte counted as received may be the peer's FIN: held back
        self.missing = 0
        self.seen = 0
        self.fingerprint: tuple[int, ...] = ()
        self.rtt: list[int] = []
        self.rtt_epoch = -1
        self.attempt = False  # a connection attempt not yet counted
        self.resolving = False  # a ClusterIP whose NAT entry did not exist yet at first sight


class ListenerPorts:
    """The ports a namespace listens on: in its last dumps, or closed since (destroy events).

    A listener's port stays known for ``memory`` dumps after it was last seen, so that its
    children destroyed after it closed still find it."""

    def __init__(self, memory: int = 1) -> None:
        self.memory = memory
        self.cycle = 0
        self._seen: dict[int, int] = {}

    def next_scan(self) -> None:
        self.cycle += 1
        if self.cycle % 64 == 0:
            horizon = self.cycle - self.memory
            self._seen = {port: at for port, at in self._seen.items() if at >= horizon}

    def saw(self, port: int) -> None:
        self._seen[port] = self.cycle

    def __contains__(self, port: int) -> bool:
        at = self._seen.get(port)
        return at is not None and self.cycle - at <= self.memory

    def is_server(self, sock: TcpSocket) -> bool:
        return sock.state != SYN_SENT and sock.local_port in self


def is_connection(sock: TcpSocket) -> bool:
    """A socket with a peer: not a listener, nor a socket that never connected."""
    return sock.remote_port != 0 and sock.state != LISTEN


def _sent_payload(sock: TcpSocket, client: bool, final: bool) -> int:
    acked = sock.bytes_acked - (1 if client and sock.delivered else 0)
    written = sock.bytes_sent - sock.bytes_retrans  # data sent at least once: never less than acked data
    if not final:
        fin_acked = sock.state == FIN_WAIT2 or acked > written
    elif sock.write_queue or acked <= 0:
        fin_acked = False
    else:  # everything written was acknowledged: was a FIN among it?
        fin_acked = acked != written
    return max(0, acked - fin_acked)


def _received_payload(track: _Track, sock: TcpSocket, final: bool) -> int:
    """Payload received (see the module docstring), and whether its last byte is unsettled."""
    raw = sock.bytes_received
    if track.fin or (final and raw > 0 and (track.unsettled or raw != track.raw_received)):
        payload, track.unsettled = max(0, raw - 1), False
    elif final or raw == track.raw_received:
        payload, track.unsettled = raw, False
    else:  # new bytes, and maybe the peer's FIN among them: count all but the last for now
        payload, track.unsettled = raw - 1, True
    track.raw_received = raw
    return payload


class NamespaceAccountant:
    """Accumulates one namespace's per-flow deltas for the current interval."""

    def __init__(self, label: str, listeners: ListenerPorts | None = None,
                 resolve_service: Callable[[str, int, str, int], tuple[str, int] | None] | None = None) -> None:
        self.label = label
        self.listeners = listeners or ListenerPorts()
        # (client ip, port, service ip, port) → the backend a NATed connection reached, or None.
        self.resolve_service = resolve_service
        self.service_ips: dict[FlowKey, str] = {}
        self.tracks: dict[int, _Track] = {}
        self.interval: dict[FlowKey, FlowCounters] = {}
        self.rtt_samples: dict[FlowKey, list[int]] = {}
        self.active: dict[FlowKey, int] = {}  # live tracked sockets per flow
        self.parked: list[TcpSocket] = []  # destroyed, role not known until the next dump
        self.lost_events = 0
        self.opens = 0  # connections this namespace opened since start, as seen here (reconciliation)
        self.cycle = 0
        self.epoch = 0  # counts intervals, so tracks can cache their flow's RTT sample list

    # -- observations -------------------------------------------------------------------
    def observe_scan(self, entries: Iterable[Entry], parse: Callable[[bytes, int, int], TcpSocket | None],
                     baseline: bool = False) -> int:
        """Apply one full dump (see :meth:`SockDiag.scan`). A socket whose fingerprint is
        unchanged since the last look only gives an RTT sample; the others are decoded and
        counted. With ``baseline`` nothing is counted, only remembered. Sockets destroyed
        before the dump whose role was pending are decided once it is read."""
        tracks, listeners = self.tracks, self.listeners
        listeners.next_scan()
        waiting, self.parked = self.parked, []
        self.cycle += 1
        cycle, epoch, samples = self.cycle, self.epoch, self.rtt_samples
        count = 0
        for cookie, state, fingerprint, data, start, end in entries:
            if state == LISTEN:
                # The kernel dumps a family's listeners before its other sockets.
                listeners.saw(data[start + 4] << 8 | data[start + 5])  # idiag_sport, network order
                continue
            count += 1
            track = tracks.get(cookie)
            if track is not None and track.fingerprint == fingerprint and track.last is not None \
                    and track.last.state == state and not track.unsettled:
                track.seen = cycle
                track.missing = 0
                if fingerprint[0] and track.established:  # an RTT sample per socket per interval
                    if track.rtt_epoch != epoch:
                        track.rtt_epoch = epoch
                        track.rtt = samples.setdefault(track.key, [])
                    track.rtt.append(fingerprint[0])
                continue
            sock = parse(data, start, end)
            if sock is None or not is_connection(sock):
                continue
            if track is None:
                track = self._new_track(sock, baseline)
            track.seen = cycle
            track.fingerprint = fingerprint
            if state in _FIN_RECEIVED_STATES:
                track.fin = True
            elif state == CLOSE and track.established and not track.fin:
                # Closed without the peer's FIN while its process still holds it: a reset.
                track.reset = True
            self._apply(track, sock, final=False)
        if count < len(tracks):
            self._age_missing()
        self._settle(waiting)
        return count

    def observe_destroyed(self, sockets: Iterable[TcpSocket], baseline: bool = False) -> None:
        """Apply destroy events: final counters, then forget the socket."""
        listeners = self.listeners
        for sock in sockets:
            if not is_connection(sock):
                listeners.saw(sock.local_port)  # a listener closing: its children may follow
                continue
            track = self.tracks.get(sock.cookie)
            if track is not None:
                self._drop(sock.cookie)
                self._apply(track, sock, final=True)
            elif baseline:
                continue  # destroyed before the first dump: it predates the agent
            elif listeners.is_server(sock):
                self._settle((sock,))
            else:
                self.parked.append(sock)
                if len(self.parked) > MAX_PARKED:
                    self.flush_parked()

    def flush_parked(self) -> None:
        """Decide every parked socket's role with what is known now (the namespace is going,
        or too many are waiting)."""
        waiting, self.parked = self.parked, []
        self._settle(waiting)

    def _settle(self, destroyed: Iterable[TcpSocket]) -> None:
        """Count sockets seen only in their destroy event, their listeners now known."""
        for sock in destroyed:
            track = self._new_track(sock, False)
            self._drop(sock.cookie)
            self._apply(track, sock, final=True)

    # -- internals ----------------------------------------------------------------------
    def _new_track(self, sock: TcpSocket, baseline: bool) -> _Track:
        client = not self.listeners.is_server(sock)
        if client:
            key = self._client_key(sock)
        else:
            key = FlowKey(self.label, sock.local_ip, sock.remote_ip, sock.local_port, SERVER)
        if baseline:
            # What the socket moved before start is never counted, so its base may err high:
            # a FIN hidden in it only keeps the next count from rising, never makes it rise.
            fin = sock.state in _FIN_RECEIVED_STATES
            track = _Track(key, client, sock, _sent_payload(sock, client, False),
                           max(0, sock.bytes_received - fin), established=sock.delivered > 0)
            track.fin = fin
        else:
            track = _Track(key, client, None, 0, 0, established=False)
            track.attempt = client
            self.opens += 1
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

    def _apply(self, track: _Track, sock: TcpSocket, final: bool) -> None:
        if track.resolving:
            self._resolve_late(track, sock)
        c = self._counters(track.key)
        if track.attempt:
            c.connection_attempts += 1
            track.attempt = False
        last = track.last
        sent = _sent_payload(sock, track.client, final)
        received = max(track.received, _received_payload(track, sock, final))
        c.sent_bytes += max(0, sent - track.sent)
        c.received_bytes += received - track.received
        track.sent, track.received = max(sent, track.sent), received
        if last is None:
            last = _ZERO
        c.sent_segments += (sock.segs_out - last.segs_out) & _U32
        c.received_segments += (sock.segs_in - last.segs_in) & _U32
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
            # Refused: answered, by a reset (the one segment a refused SYN gets) or an ICMP error
            # (a REJECT rule, an unreachable host: the kernel ends the attempt before its SYN is
            # ever sent again). Timed out: never answered while its SYN was sent again.
            if sock.segs_in or not (sock.total_retrans or sock.total_rto):
                c.connections_refused += 1
            else:
                c.connections_timed_out += 1
        if final and track.reset:
            c.connections_reset += 1

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


