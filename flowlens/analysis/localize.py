"""Where degraded traffic comes from: the smallest element every degraded flow shares.

A flow is *degraded* in a time bucket when its own losses are significant (enough segments
lost, at a rate of at least 1%) or its retransmission timer fired repeatedly: a handful of
stray retransmissions never counts. Each flow touches *elements*: its cluster ends' pods,
workloads, nodes and zones, the zone pair (or zone → service) it crosses, and, outside the
cluster, the remote service or host.

An element explains the degradation when it carries (nearly) all of the degraded flows, most
of its own flows are degraded, and clearly more of them than of the rest of the traffic: a
node whose every flow loses while the other nodes are clean. Among elements that qualify, the
one with the highest share of degraded flows wins; on a tie the order of :data:`PRIORITY`
decides (a node before a pod on it, since a pod whose only peer is one node cannot be told
from that node). Degraded flows left unexplained by any narrower element, spread over several
nodes, are the network's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from flowlens.model.queries import Endpoint, FlowRow

# Significance of one flow's degradation in one bucket.
MIN_LOST = 10
MIN_SEGMENTS = 100
LOSS_RATE = 0.01
MIN_RTO = 3
# An element explains when it carries this share of the degraded flows' losses...
COVERAGE = 0.8
# ...this share of its own flows is degraded (a service or the network must fail most of the
# clients it serves; a node or a pod may well also carry clean flows)...
SHARE = {"node": 0.5, "pod": 0.5, "remote": 0.8, "workload": 0.8, "zone": 0.8, "path": 0.8, "network": 0.8}
# ...that share exceeds the rest of the traffic's by this much...
CONTRAST = 0.3
# ...and, for what many ends share, the degraded flows come from independent ends: several
# pods (several nodes too, for the network), or one pod's trouble would pass for theirs.
MIN_PODS = {"remote": 2, "workload": 2, "zone": 2, "path": 2, "network": 2}
MIN_NODES = {"zone": 2, "path": 2, "network": 2}
PRIORITY = ("node", "pod", "remote", "workload", "zone", "path", "network")
# Every flow that leaves its zone (to another zone, a cloud service, the internet) crosses this.
CROSSING = "between zones and out of the cluster"


@dataclass(frozen=True, slots=True, order=True)
class Element:
    kind: str  # node | pod | remote | workload | zone | path
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.name}"


def key(row: FlowRow) -> tuple:
    """One flow, the same in every bucket of a window."""
    return (row.client.ip, row.server.ip, row.server_port, row.category)


def lost(row: FlowRow) -> int:
    return row.retransmitted_segments + row.received_out_of_order


def segments(row: FlowRow) -> int:
    return row.sent_segments + row.received_segments


def degraded(row: FlowRow) -> bool:
    """Significant losses or repeated timeouts on this flow itself."""
    lossy = lost(row) >= MIN_LOST and segments(row) >= MIN_SEGMENTS and row.loss_rate >= LOSS_RATE
    return lossy or row.rto >= MIN_RTO


def path_of(row: FlowRow) -> str | None:
    """A zone pair inside the cluster; outside it, the service (all zones reach it alike)."""
    zone = row.client.zone
    if not zone:
        return None
    if row.server.cloud_service:
        return f"{zone} → {row.server.cloud_service} ({row.server.region or 'unknown region'})"
    if row.server.zone:
        return " ↔ ".join(sorted({zone, row.server.zone})) if row.server.zone != zone else f"{zone} (intra-zone)"
    if row.server.service:
        return None  # a ClusterIP nobody answered behind: a Service matter, not a path
    return f"{zone} → internet"


def remote_of(end: Endpoint) -> str:
    if end.cloud_service:
        return f"{end.cloud_service} ({end.region or 'unknown region'})"
    return end.ip


def elements(row: FlowRow) -> frozenset[Element]:
    out = set()
    for end in (row.client, row.server):
        if end.zone:  # a cluster end
            if end.pod:
                out.add(Element("pod", f"{end.namespace}/{end.pod}"))
            if end.workload:
                out.add(Element("workload", f"{end.namespace}/{end.workload}"))
            if end.node:
                out.add(Element("node", end.node))
            out.add(Element("zone", end.zone))
        elif end is row.server:
            out.add(Element("remote", remote_of(end)))
    path = path_of(row)
    if path:
        out.add(Element("path", path))
        if "(intra-zone)" not in path:
            out.add(Element("network", CROSSING))
    return frozenset(out)


@dataclass
class Cause:
    """An element that explains degraded flows, with the comparison that makes it the suspect."""

    element: Element
    flows: list[FlowRow]  # its degraded flows
    coverage: float  # share of the degraded flows' losses it carries
    share: float  # share of its flows that are degraded
    rest: float  # share of the other flows that are degraded
    nodes: set[str] = field(default_factory=set)
    pods: set[str] = field(default_factory=set)

    @property
    def strength(self) -> float:
        """How clearly the data points at it: 0 (barely) to 1 (nothing else degraded)."""
        return round(self.coverage * max(0.0, self.share - self.rest), 2)

    @property
    def paths(self) -> list[str]:
        return sorted({p for row in self.flows if (p := path_of(row))})

    @property
    def workloads(self) -> list[str]:
        return sorted({f"{e.namespace}/{e.workload}" for row in self.flows for e in (row.client, row.server)
                       if e.workload})


def _weight(row: FlowRow) -> int:
    return max(lost(row), row.rto, 1)


def localize(rows: Iterable[FlowRow], bad_keys: set[tuple] | None = None) -> list[Cause]:
    """The causes of the degraded flows among ``rows`` (those of ``bad_keys`` when given, else
    those :func:`degraded` finds), narrowest first; flows no element explains are left out
    (see :func:`network_cause` for them)."""
    rows = list(rows)
    touched = {id(row): elements(row) for row in rows}
    bad = [row for row in rows if (key(row) in bad_keys if bad_keys is not None else degraded(row))]
    causes: list[Cause] = []
    remaining = bad
    while remaining:
        cause = _best(rows, bad, remaining, touched)
        if cause is None:
            break
        causes.append(cause)
        remaining = [row for row in remaining if cause.element not in touched[id(row)]]
    return causes


def _best(rows: list[FlowRow], bad: list[FlowRow], remaining: list[FlowRow],
          touched: dict[int, frozenset[Element]]) -> Cause | None:
    total = sum(_weight(row) for row in remaining)
    candidates = {e for row in remaining for e in touched[id(row)]}
    bad_ids = {id(row) for row in bad}
    found = []
    for element in candidates:
        mine = [row for row in remaining if element in touched[id(row)]]
        coverage = sum(_weight(row) for row in mine) / total
        if coverage < COVERAGE:
            continue
        carried = [row for row in rows if element in touched[id(row)]]
        share = sum(id(row) in bad_ids for row in carried) / len(carried)
        others = [row for row in rows if element not in touched[id(row)]]
        rest = sum(id(row) in bad_ids for row in others) / len(others) if others else 0.0
        nodes, pods = _ends(mine)
        if share >= SHARE[element.kind] and share - rest >= CONTRAST and \
                len(pods) >= MIN_PODS.get(element.kind, 0) and len(nodes) >= MIN_NODES.get(element.kind, 0):
            found.append(Cause(element, mine, coverage, share, rest, nodes, pods))
    if not found:
        return None
    return min(found, key=lambda c: (-round(c.share, 2), PRIORITY.index(c.element.kind), -c.coverage,
                                     c.element.name))


def _ends(rows: list[FlowRow]) -> tuple[set[str], set[str]]:
    nodes = {e.node for row in rows for e in (row.client, row.server) if e.zone and e.node}
    pods = {f"{e.namespace}/{e.pod}" for row in rows for e in (row.client, row.server) if e.zone and e.pod}
    return nodes, pods


def network_cause(rows: Iterable[FlowRow], explained: Iterable[Cause], bad_keys: set[tuple]) -> Cause | None:
    """The degraded flows no narrower element explains, when they span independent ends (at
    least two nodes and two pods): the network between them."""
    rows = list(rows)
    covered = {id(row) for cause in explained for row in cause.flows}
    left = [row for row in rows if key(row) in bad_keys and id(row) not in covered]
    nodes, pods = _ends(left)
    if len(nodes) < 2 or len(pods) < 2:
        return None
    paths = {p for row in left if (p := path_of(row))}
    carried = [row for row in rows if path_of(row) in paths]
    share = len(left) / len(carried) if carried else 1.0
    others = [row for row in rows if path_of(row) not in paths]
    rest = sum(key(row) in bad_keys for row in others) / len(others) if others else 0.0
    return Cause(Element("path", ", ".join(sorted(paths))), left, 1.0, share, rest, nodes, pods)
