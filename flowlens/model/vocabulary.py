"""Every counter flowlens measures, declared once: the one place to find where a counter is
born (``source``) and, by its ``name``, every place it is used.

A flow counter's ``name`` is its name everywhere: the agent's :class:`FlowCounters` field, the
report's field, the store's column, the query records' attribute. From these rows come the
report schema, the store's columns and rollups, the queries' sums, the agent's metric families
and the reference docs (``tests/test_vocabulary.py`` checks each layer against them).

``combine`` says how the two rows of a connection seen from both ends add up: ``owner``
counters (bytes, connection counts) are taken from one row only (the client's, or the server's
when the client has no agent: see ``model.views``), ``each`` counters (what each end does on its
own: segments it sent, its retransmissions, its timeouts, its RTT samples) from both.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


@dataclass(frozen=True, slots=True)
class Counter:
    name: str
    unit: str
    help: str
    source: str  # where the kernel gives it
    combine: str = "each"  # owner | each
    kind: str = "counter"  # counter | gauge (a gauge's rollup keeps its maximum)
    metric: str = ""  # the agent's family (flowlens_flow_...), "" when exported otherwise
    result: str = ""  # the ``result`` label value in flowlens_flow_connections_total


FLOW_COUNTERS: tuple[Counter, ...] = (
    Counter("sent_bytes", "bytes", "Payload bytes sent and acknowledged by the peer.",
            "tcpi_bytes_acked, less the SYN and our FIN", "owner", metric="flowlens_flow_sent_bytes_total"),
    Counter("received_bytes", "bytes", "Payload bytes received in order.",
            "tcpi_bytes_received, less the peer's FIN", "owner", metric="flowlens_flow_received_bytes_total"),
    Counter("sent_segments", "segments", "TCP segments sent, retransmissions included.", "tcpi_segs_out",
            metric="flowlens_flow_sent_segments_total"),
    Counter("received_segments", "segments", "TCP segments received.", "tcpi_segs_in",
            metric="flowlens_flow_received_segments_total"),
    Counter("retransmitted_segments", "segments", "TCP segments retransmitted.", "tcpi_total_retrans",
            metric="flowlens_flow_retransmitted_segments_total"),
    Counter("retransmitted_bytes", "bytes", "Bytes retransmitted.", "tcpi_bytes_retrans",
            metric="flowlens_flow_retransmitted_bytes_total"),
    Counter("rto", "timeouts", "Retransmission timeouts, SYN timeouts included (Linux 6.7+).", "tcpi_total_rto",
            metric="flowlens_flow_rto_total"),
    Counter("received_out_of_order", "segments",
            "Segments that arrived out of order: the receiver's view of the sender's losses.", "tcpi_rcv_ooopack",
            metric="flowlens_flow_received_out_of_order_segments_total"),
    Counter("connection_attempts", "connections", "Client connections attempted (connect()).",
            "a client socket's first sight", "owner", metric="flowlens_flow_connection_attempts_total"),
    Counter("connections_established", "connections", "Connections whose handshake completed.",
            "tcpi_delivered > 0", "owner", result="established"),
    Counter("connections_failed", "connections",
            "Client connections that never completed their handshake: refused or timed out.",
            "a client socket destroyed with tcpi_delivered = 0", "owner"),
    Counter("connections_refused", "connections",
            "Failed connections answered with a reset (nothing listening) or an ICMP error (a REJECT rule, "
            "as kube-proxy writes for a Service without endpoints; an unreachable host).",
            "a failed client socket with tcpi_segs_in > 0, or ended before its SYN was sent again",
            "owner", result="refused"),
    Counter("connections_timed_out", "connections",
            "Failed connections nothing answered (SYNs dropped: a NetworkPolicy, a security group, a dead host).",
            "a failed client socket with tcpi_segs_in = 0 whose SYN was sent again (tcpi_total_retrans > 0)",
            "owner", result="timed_out"),
    Counter("connections_reset", "connections", "Established connections ended by a reset instead of a close.",
            "a socket found in CLOSE after its handshake, still open in its process", "owner",
            metric="flowlens_flow_connection_resets_total"),
    Counter("active_sockets", "sockets", "Sockets of the flow open at the end of the interval.",
            "sockets in the last dump", "owner", kind="gauge"),
    Counter("rtt_sum_us", "microseconds", "Sum of smoothed-RTT samples, one per socket per interval.", "tcpi_rtt"),
    Counter("rtt_samples", "samples", "RTT samples in rtt_sum_us.", "tcpi_rtt"),
)
FLOW_COUNTER_NAMES: tuple[str, ...] = tuple(c.name for c in FLOW_COUNTERS)
FLOW_COUNTER = {c.name: c for c in FLOW_COUNTERS}
OWNED_COUNTERS = tuple(c.name for c in FLOW_COUNTERS if c.combine == "owner")
# Connection results as flowlens_flow_connections_total{result}; their sum is every attempt's end.
CONNECTION_RESULTS = tuple(c for c in FLOW_COUNTERS if c.result)

# The ENA driver's allowance statistics (ethtool -S), under the names the reference product exports.
ALLOWANCE_STATS: tuple[str, ...] = ("bw_in_allowance_exceeded", "bw_out_allowance_exceeded",
                                    "pps_allowance_exceeded", "conntrack_allowance_exceeded",
                                    "linklocal_allowance_exceeded")
NODE_COUNTERS: tuple[Counter, ...] = (
    *(Counter(stat, "packets", f"Packets queued or dropped because the instance's {stat.split('_allowance')[0]} "
              "allowance was exceeded.", f"ethtool -S {stat} (ENA)") for stat in ALLOWANCE_STATS),
    Counter("rx_bytes", "bytes", "Bytes received by the node's uplink.", "IFLA_STATS64 rx_bytes"),
    Counter("tx_bytes", "bytes", "Bytes sent by the node's uplink.", "IFLA_STATS64 tx_bytes"),
    Counter("tcp_retransmitted_segments", "segments", "TCP segments the node retransmitted.", "TcpRetransSegs"),
)
NODE_COUNTER_NAMES: tuple[str, ...] = tuple(c.name for c in NODE_COUNTERS)


class Category(StrEnum):
    """Where a flow goes, as the reference product names it (other AWS services as AMAZON_<NAME>)."""

    INTRA_AZ = "INTRA_AZ"
    INTER_AZ = "INTER_AZ"
    INTER_VPC = "INTER_VPC"
    INTER_REGION = "INTER_REGION"
    AMAZON_S3 = "AMAZON_S3"
    AMAZON_DYNAMODB = "AMAZON_DYNAMODB"
    UNCLASSIFIED = "UNCLASSIFIED"
    FLOWLENS = "FLOWLENS"  # flowlens's own traffic (agents to collector, scrapes): never a workload's


def aws_category(service: str) -> str:
    """An AWS service's category: the two the reference names, or AMAZON_<SERVICE>."""
    if service == "S3":
        return Category.AMAZON_S3
    if service == "DYNAMODB":
        return Category.AMAZON_DYNAMODB
    return f"AMAZON_{service}"
