"""Typed inputs and outputs of the flow-store queries: filter, service map, flow table, series.

These records cross the collector → analysis → surfaces boundaries, so they live in the model
layer: a surface or an analysis rule can build a ``FlowFilter`` and read a ``ServiceMap``
without importing any storage engine. Every record is frozen; counters are plain ints (sums
over the queried range), derived ratios are properties so that engines only return sums.

Direction: an edge and a flow row are oriented client → server (the side that opened the
connection towards the side listening on ``server_port``), whichever agent reported it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from flowlens.model.vocabulary import FLOW_COUNTERS


class MapLevel(StrEnum):
    """What one node of the service map stands for."""

    WORKLOAD = "workload"
    POD = "pod"
    ZONE = "zone"
    NAMESPACE = "namespace"


class View(StrEnum):
    """The three flow-table views of the reference console (see ``flowlens.model.views``)."""

    AWS = "aws"            # the remote end is a cloud service (S3, DynamoDB, ...)
    CLUSTER = "cluster"    # both ends in the cluster: east-west
    EXTERNAL = "external"  # the remote end is neither in the cluster nor a cloud service


class TopBy(StrEnum):
    """Ranking of the flow table (see ``flowlens.model.views.TOP_BY_ORDER``)."""

    BYTES = "bytes"
    RETRANSMISSIONS = "retransmissions"
    TIMEOUTS = "timeouts"
    FAILED = "failed"
    RTT = "rtt"


class NodeKind(StrEnum):
    """What a service-map node is; decided per end by ``flowlens.model.identity``."""

    POD = "pod"
    WORKLOAD = "workload"
    NAMESPACE = "namespace"
    ZONE = "zone"
    HOST = "host"          # a cluster node's own address (host network)
    CLOUD = "cloud"        # a cloud service in a region (from the provider's IP ranges)
    EXTERNAL = "external"  # anything else: internet, on-premises


def _utc(value: datetime | None, name: str) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got naive {value.isoformat()}")
    return value.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class FlowFilter:
    """The one filter shared by CLI flags, API queries and finding scopes.

    All given fields must match (AND); within a field any value may match (OR). ``since`` is
    inclusive and ``until`` exclusive, both compared with an interval's start time. Namespaces,
    nodes and workloads match either end of a flow. A workload is ``namespace/name`` or a bare
    ``name`` (any namespace). Empty tuples mean "no restriction".
    """

    since: datetime | None = None
    until: datetime | None = None
    namespaces: tuple[str, ...] = ()
    nodes: tuple[str, ...] = ()
    workloads: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Normalised once here so that every engine sees aware UTC datetimes and tuples.
        object.__setattr__(self, "since", _utc(self.since, "since"))
        object.__setattr__(self, "until", _utc(self.until, "until"))
        for name in ("namespaces", "nodes", "workloads", "categories"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise ValueError(f"empty time range: since {self.since.isoformat()} >= until {self.until.isoformat()}")


@dataclass(frozen=True, slots=True)
class MapNode:
    """One node of the service map. ``namespace`` is set for pods, workloads and namespaces;
    ``region`` for cloud services."""

    kind: NodeKind
    name: str
    namespace: str | None = None
    region: str | None = None

    @property
    def group(self) -> tuple[str, str]:
        """(group kind, group name) the map draws this node in: Kubernetes nodes by namespace."""
        if self.namespace is not None:
            return ("namespace", self.namespace)
        if self.kind is NodeKind.CLOUD:
            return ("cloud", self.region or "")
        return (str(self.kind), "")

    def sort_key(self) -> tuple[str, str, str, str]:
        return (self.kind, self.namespace or "", self.name, self.region or "")


# Counters of the query records besides their bytes (oriented): the vocabulary's, but the bytes
# and the active-sockets gauge.
QUERY_COUNTERS: tuple[str, ...] = tuple(c.name for c in FLOW_COUNTERS
                                        if c.name not in ("sent_bytes", "received_bytes", "active_sockets"))


@dataclass(frozen=True, slots=True)
class Edge:
    """Traffic from ``source`` (client side) to ``destination`` (server side) in one category.

    Byte and connection counters are counted once per connection even when agents on both
    ends reported it; segments, retransmissions, timeouts and RTT samples come from both ends
    (each end sends and retransmits its own data). ``flows`` counts distinct (client IP, server
    IP, server port). The counters after the bytes are the vocabulary's (``QUERY_COUNTERS``).
    """

    source: MapNode
    destination: MapNode
    category: str
    bytes_to_destination: int = 0
    bytes_to_source: int = 0
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
    rtt_max_us: float | None = None  # highest per-interval mean RTT seen on any of its flows
    flows: int = 0

    @property
    def total_bytes(self) -> int:
        return self.bytes_to_destination + self.bytes_to_source

    @property
    def rtt_mean_us(self) -> float | None:
        return self.rtt_sum_us / self.rtt_samples if self.rtt_samples else None

    @property
    def loss_rate(self) -> float:
        return loss_rate(self)


@dataclass(frozen=True, slots=True)
class MapGroup:
    """Nodes drawn together: one Kubernetes namespace, the cloud services of a region, hosts, ..."""

    kind: str
    name: str
    nodes: tuple[MapNode, ...]


@dataclass(frozen=True, slots=True)
class ServiceMap:
    level: MapLevel
    nodes: tuple[MapNode, ...]
    edges: tuple[Edge, ...]
    groups: tuple[MapGroup, ...]

    @staticmethod
    def from_edges(level: MapLevel, edges: list[Edge]) -> ServiceMap:
        """Builds nodes and groups from edges so that every engine groups the same way."""
        edges = sorted(edges, key=lambda e: (e.source.sort_key(), e.destination.sort_key(), e.category))
        nodes = sorted({n for e in edges for n in (e.source, e.destination)}, key=MapNode.sort_key)
        by_group: dict[tuple[str, str], list[MapNode]] = {}
        for node in nodes:
            by_group.setdefault(node.group, []).append(node)
        groups = tuple(MapGroup(kind, name, tuple(members)) for (kind, name), members in sorted(by_group.items()))
        return ServiceMap(level, tuple(nodes), tuple(edges), groups)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One end of a flow as enrichment described it; unknown fields are None."""

    ip: str
    pod: str | None = None
    namespace: str | None = None
    workload: str | None = None
    service: str | None = None
    node: str | None = None
    zone: str | None = None
    cloud_service: str | None = None
    region: str | None = None


# What a flow-table row can be grouped by: each end's fields, and the server's port. The
# default, all of them, is one row per flow; fewer fields sum the flows that share them (the
# others are None in the answer, "" for an address, 0 for the port), so a question about zones
# or workloads is answered over every flow, never over the top rows of a long table.
END_GROUP_FIELDS = ("ip", "pod", "namespace", "workload", "service", "node", "zone", "cloud_service", "region")
PER_FLOW: frozenset[str] = frozenset((*END_GROUP_FIELDS, "server_port"))


@dataclass(frozen=True, slots=True)
class FlowRow:
    """One flow of the flow table: (client, server, server port, category) over the range;
    counters as in :class:`Edge`."""

    client: Endpoint
    server: Endpoint
    server_port: int
    category: str
    bytes_to_server: int = 0
    bytes_to_client: int = 0
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
    rtt_max_us: float | None = None

    @property
    def total_bytes(self) -> int:
        return self.bytes_to_server + self.bytes_to_client

    @property
    def rtt_mean_us(self) -> float | None:
        return self.rtt_sum_us / self.rtt_samples if self.rtt_samples else None

    @property
    def loss_rate(self) -> float:
        return loss_rate(self)


def loss_rate(traffic: Edge | FlowRow) -> float:
    """Segments lost over segments sent, both ends together: a sender's retransmissions over
    its segments, and (for senders without an agent, such as S3) a receiver's out-of-order
    arrivals over its received segments. Never above 1."""
    lost = traffic.retransmitted_segments + traffic.received_out_of_order
    carried = traffic.sent_segments + traffic.received_segments
    return min(1.0, lost / carried) if carried else 0.0


@dataclass(frozen=True, slots=True)
class PodSubject:
    namespace: str
    pod: str


@dataclass(frozen=True, slots=True)
class NodeSubject:
    node: str


@dataclass(frozen=True, slots=True)
class EdgeSubject:
    """An edge of the service map at ``level``; ``category`` None means all categories."""

    source: MapNode
    destination: MapNode
    level: MapLevel
    category: str | None = None


Subject = PodSubject | NodeSubject | EdgeSubject


@dataclass(frozen=True, slots=True)
class Allowance:
    """ENA allowance-exceeded counts (packets shaped or dropped because a limit was hit)."""

    bw_in: int = 0
    bw_out: int = 0
    pps: int = 0
    conntrack: int = 0
    linklocal: int = 0

    @property
    def total(self) -> int:
        return self.bw_in + self.bw_out + self.pps + self.conntrack + self.linklocal


@dataclass(frozen=True, slots=True)
class TimePoint:
    """One bucket [time, time + step). ``bytes_out`` leaves the subject (for an edge: towards
    the destination). ``allowance`` is that of the subject's node(s); None for an edge."""

    time: datetime
    bytes_out: int = 0
    bytes_in: int = 0
    retransmitted_segments: int = 0
    received_out_of_order: int = 0
    allowance: Allowance | None = None


@dataclass(frozen=True, slots=True)
class TimeSeries:
    subject: Subject
    step: timedelta
    points: tuple[TimePoint, ...] = field(default_factory=tuple)
