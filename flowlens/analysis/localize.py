"""Where degraded traffic comes from: the smallest element every degraded flow shares.

A flow is *degraded* in a time bucket when its own losses stand out (a few segments lost, at a
rate of at least 1%) or its retransmission timer fired more than once; a cause is only reported
when its degraded flows together lost significantly (:func:`significant`: at least 10 segments
at 1% or more, or 3 timeouts), so a handful of stray retransmissions never counts, while a fault
on a quiet flow still shows within two report intervals. Each flow touches *elements*: its cluster ends' pods,
workloads, nodes and zones, the zone pair (or zone → service) it crosses, and, outside the
cluster, the remote service or host.

An element explains the degradation when it carries (nearly) all of the degraded flows, most
of its own flows are degraded, and clearly more of them than of the rest of the traffic: a
node whose every flow loses while the other nodes are clean. Among elements that qualify, the
one with the highest share of degraded flows wins (shares count only flows large enough to
have shown losses); on a tie the order of :data:`PRIORITY` decides (a node before a pod on it,
since a pod whose only peer is one node cannot be told from that node). When no element
carries nearly all (two faults at once), elements carrying a part (a fifth) compete the same
way, and what the winner leaves is explained again. Degraded flows left unexplained by any narrower element, spread
over several nodes, are the network's; and when the network alone explains every degraded flow
that several narrow causes would split, the one cause wins (:func:`explain`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Set
from dataclasses import dataclass, field

from flowlens.model.queries import Endpoint, FlowRow

# One flow degraded in one bucket...
FLOW_LOST = 3
FLOW_LOSS_RATE = 0.01
FLOW_RTO = 2
MIN_SEGMENTS = 50
# ...and the degraded flows of a cause, together, significantly so.
MIN_LOST = 10
LOSS_RATE = 0.01
MIN_RTO = 3
# A clean flow counts as evidence of a clean path up to this size at most (see judged()).
MAX_JUDGED = 2000
# An element explains when it carries this share of the degraded flows' losses (or, when none
# does, as with two faults at once, a part of them)...
COVERAGE = 0.8
PART = 0.2
ALL = 0.999
# ...this share of its own flows is degraded (a service or the network must fail most of the
# clients it serves; a node or a pod may well also carry clean flows)...
SHARE = {"node": 0.5, "pod": 0.5, "remote": 0.6, "workload": 0.8, "zone": 0.8, "path": 0.8, "network": 0.8}
# ...that share exceeds the rest of the traffic's by this much (the rest being at least this
# many flows large enough to have shown losses)...
CONTRAST = 0.3
MIN_COMPARED = 2
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
    """Losses that stand out, or repeated timeouts, on this flow itself."""
    return (lost(row) >= FLOW_LOST and row.loss_rate >= FLOW_LOSS_RATE) or row.rto >= FLOW_RTO


def significant(rows: Iterable[FlowRow]) -> bool:
    """Whether degraded flow rows, together, lost too much to be chance."""
    rows = list(rows)
    gone, carried = sum(lost(row) for row in rows), sum(segments(row) for row in rows)
    return (gone >= MIN_LOST and carried > 0 and gone / carried >= LOSS_RATE) or sum(row.rto for row in rows) >= MIN_RTO


def path_of(row: FlowRow) -> str | None:
    """A zone pair inside the cluster; between the cluster and a cloud service or the internet,
    that crossing (all zones reach a service alike, so the service names it)."""
    inside, outside = (row.client, row.server) if row.client.zone else (row.server, row.client)
    zone = inside.zone
    if not zone:
        return None
    if outside.cloud_service:
        return f"{zone} → {outside.cloud_service} ({outside.region or 'unknown region'})" if inside is row.client \
            else f"{outside.cloud_service} ({outside.region or 'unknown region'}) → {zone}"
    if outside.zone:
        return " ↔ ".join(sorted({zone, outside.zone})) if outside.zone != zone else f"{zone} (intra-zone)"
    if outside.service and outside is row.server:
        return None  # a ClusterIP nobody answered behind: a Service matter, not a path
    return f"{zone} → internet" if inside is row.client else f"internet → {zone}"


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
        else:  # a service or host outside, whichever side called
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
    def independent(self) -> bool:
        """Whether its degraded flows come from at least two nodes and two pods."""
        return len(self.nodes) >= 2 and len(self.pods) >= 2

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


def localize(rows: Iterable[FlowRow], bad_keys: set[tuple] | None = None,
             slow_keys: Set[tuple] = frozenset()) -> list[Cause]:
    """The causes of the degraded flows among ``rows`` (those of ``bad_keys`` when given, else
    those :func:`degraded` finds; ``slow_keys`` those of them found slow rather than lossy),
    narrowest first; flows no element explains are left out (see :func:`network_cause`)."""
    traffic = _Traffic(list(rows), bad_keys, slow_keys)
    causes: list[Cause] = []
    remaining = traffic.bad
    while remaining:
        cause = traffic.best(remaining, COVERAGE) or traffic.best(remaining, PART)
        if cause is None:
            break
        causes.append(cause)
        remaining = [row for row in remaining if cause.element not in traffic.touched[id(row)]]
    return causes


class _Traffic:
    """The flows that say something (:func:`judged`), the degraded ones among them, and the
    elements each touches."""

    def __init__(self, rows: list[FlowRow], bad_keys: set[tuple] | None, slow_keys: Set[tuple]) -> None:
        self.bad = [row for row in rows if (key(row) in bad_keys if bad_keys is not None else degraded(row))]
        self.rows = judged(rows, self.bad, slow_keys)
        self.touched = {id(row): elements(row) for row in self.rows}

    def best(self, remaining: list[FlowRow], least: float) -> Cause | None:
        """The element that best explains ``remaining``, carrying at least ``least`` of its losses."""
        return _best(self.rows, self.bad, remaining, self.touched, least)


def judged(rows: list[FlowRow], bad: list[FlowRow], slow_keys: Set[tuple] = frozenset()) -> list[FlowRow]:
    """The flows that say something about their path: the degraded ones, those that carried
    enough segments to have lost :data:`FLOW_LOST` at the lossy flows' loss rate, and, when some
    degraded flows were slow (``slow_keys``), those whose RTT was measured. A flow too small to
    be found degraded at that rate is no evidence of a clean path, and counting it as clean
    would dilute every element it touches."""
    bad_ids = {id(row) for row in bad}
    lossy = [row for row in bad if key(row) not in slow_keys]
    carried, gone = sum(segments(row) for row in lossy), sum(lost(row) for row in lossy)
    enough = MIN_SEGMENTS if not gone else min(MAX_JUDGED, max(MIN_SEGMENTS, FLOW_LOST * carried / gone))
    timed = any(key(row) in slow_keys for row in bad)
    return [row for row in rows if id(row) in bad_ids or segments(row) >= enough
            or (timed and row.rtt_samples > 0 and segments(row) >= MIN_SEGMENTS)]


def _best(rows: list[FlowRow], bad: list[FlowRow], remaining: list[FlowRow],
          touched: dict[int, frozenset[Element]], least: float) -> Cause | None:
    total = sum(_weight(row) for row in remaining)
    candidates = {e for row in remaining for e in touched[id(row)]}
    bad_ids = {id(row) for row in bad}
    found = []
    for element in candidates:
        mine = [row for row in remaining if element in touched[id(row)]]
        coverage = sum(_weight(row) for row in mine) / total
        if coverage < least:
            continue
        carried = [row for row in rows if element in touched[id(row)]]
        share = sum(id(row) in bad_ids for row in carried) / len(carried)
        others = [row for row in rows if element not in touched[id(row)]]
        if len(others) < MIN_COMPARED:
            continue  # nothing clean to set it against: it cannot be told from the network
        rest = sum(id(row) in bad_ids for row in others) / len(others)
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


def network_cause(rows: Iterable[FlowRow], explained: Iterable[Cause], bad_keys: set[tuple],
                  strict: bool = False, slow_keys: Set[tuple] = frozenset()) -> Cause | None:
    """The degraded flows no narrower element explains, on the paths they cross: the network's
    when they span independent ends (at least two nodes and two pods; see
    :attr:`Cause.independent`). ``strict``: only then, and only when the network is as clear a
    suspect as any element must be (most of the flows on its paths degraded, far more than
    elsewhere)."""
    rows = list(rows)
    covered = {id(row) for cause in explained for row in cause.flows}
    left = [row for row in rows if key(row) in bad_keys and id(row) not in covered]
    rows = judged(rows, [row for row in rows if key(row) in bad_keys], slow_keys)
    nodes, pods = _ends(left)
    if not left or (strict and (len(nodes) < 2 or len(pods) < 2)):
        return None
    paths = {p for row in left if (p := path_of(row))}
    carried = [row for row in rows if path_of(row) in paths]
    share = len(left) / len(carried) if carried else 1.0
    others = [row for row in rows if path_of(row) not in paths]
    rest = sum(key(row) in bad_keys for row in others) / len(others) if others else 0.0
    if strict and (share < SHARE["network"] or share - rest < CONTRAST):
        return None
    return Cause(Element("path", ", ".join(sorted(paths))), left, 1.0, share, rest, nodes, pods)


def explain(rows: Iterable[FlowRow], bad_keys: set[tuple], keep: Callable[[Cause], bool] = lambda cause: True,
            slow_keys: Set[tuple] = frozenset()) -> list[Cause]:
    """The fewest causes that explain the degraded flows: the narrowest elements (and the network
    for what they leave), unless one element alone explains all of them (a zone whose nodes each
    look as bad as the zone), or the network alone does (a router that drops a share of
    everything through it). ``slow_keys``: the degraded flows found slow rather than lossy.
    ``keep`` says which causes are worth reporting (their losses
    significant): the others are dropped first, so a stray degraded flow never turns one cause
    into the whole network."""
    rows = list(rows)
    causes = localize(rows, bad_keys, slow_keys)
    leftover = network_cause(rows, causes, bad_keys, slow_keys=slow_keys)
    narrow = [cause for cause in [*causes, *([leftover] if leftover else [])] if keep(cause)]
    if len(narrow) > 1:
        kept = {key(row) for cause in narrow for row in cause.flows}
        traffic = _Traffic(rows, kept, slow_keys)
        for one in (traffic.best(traffic.bad, ALL), network_cause(rows, [], kept, True, slow_keys)):
            if one is not None and keep(one):
                return [one]
    return narrow
