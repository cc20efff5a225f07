"""Flows: the key the agent aggregates sockets under, and what it measures per interval."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import NamedTuple

CLIENT = "client"
SERVER = "server"


class FlowKey(NamedTuple):
    """(namespace, local IP, remote IP, server port, role): the client's ephemeral port is
    dropped, as in the reference product, so all connections between two endpoints and one
    service port form one flow."""

    netns: str
    local_ip: str
    remote_ip: str
    server_port: int
    role: str
    protocol: str = "tcp"


@dataclass(slots=True)
class FlowCounters:
    """Additive per-flow counters; the same type holds one interval or a running total.

    Fields are the vocabulary's flow counters (``model.vocabulary``) but the ``active_sockets``
    gauge, which the agent keeps per flow apart. Bytes are payload bytes: ``sent_bytes`` is data
    the peer acknowledged, ``received_bytes`` data received in order; SYN and FIN, which the
    kernel's RFC 4898 counters include, are taken out. ``rtt_sum_us``/``rtt_samples`` hold one
    smoothed-RTT sample per socket per interval it was alive in.
    """

    sent_bytes: int = 0
    received_bytes: int = 0
    sent_segments: int = 0
    received_segments: int = 0
    retransmitted_segments: int = 0
    retransmitted_bytes: int = 0
    rto: int = 0
    received_out_of_order: int = 0
    connection_attempts: int = 0
    connections_established: int = 0
    connections_failed: int = 0
    connections_refused: int = 0
    connections_timed_out: int = 0
    connections_reset: int = 0
    rtt_sum_us: int = 0
    rtt_samples: int = 0

    def add(self, other: FlowCounters) -> None:
        for name in ADDITIVE_FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def loss_score(self) -> int:
        """Ranking used to decide which flows get their own series: loss first, like the
        reference (retransmissions + 2 × timeouts + 4 × failed connections)."""
        return self.retransmitted_segments + 2 * self.rto + 4 * self.connections_failed

    def total_bytes(self) -> int:
        return self.sent_bytes + self.received_bytes

    def is_idle(self) -> bool:
        return not any(getattr(self, name) for name in ADDITIVE_FIELDS)



ADDITIVE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(FlowCounters))
