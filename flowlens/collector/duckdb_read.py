"""The DuckDB store's queries: plan the tiers, run the SQL of ``duckdb_sql``, build typed answers.

Each function runs inside the caller's read transaction (``cursor``, with the ``state`` read
in it), so tier watermarks and table contents are of the same moment.
"""

from __future__ import annotations

from datetime import timedelta

from flowlens.collector import duckdb_sql as q
from flowlens.collector.duckdb_exec import Cursor, run
from flowlens.collector.tiers import EARLIEST, LATEST, Piece, TierState, plan, step_for
from flowlens.model.predicates import Eq, Pred, all_of
from flowlens.model.queries import (
    Allowance,
    Edge,
    EdgeSubject,
    Endpoint,
    FlowFilter,
    FlowRow,
    MapLevel,
    MapNode,
    NodeKind,
    NodeSubject,
    PodSubject,
    ServiceMap,
    Subject,
    TimePoint,
    TimeSeries,
    TopBy,
    View,
)
from flowlens.model.views import filter_predicate, view_predicate

MAX_POINTS = 100_000
MAX_LIMIT = 100_000


def pieces(flt: FlowFilter, state: TierState, rollups: bool, step: timedelta | None = None) -> list[Piece]:
    return plan(flt.since or EARLIEST, flt.until or LATEST, state, step, rollups)


def service_map(cur: Cursor, state: TierState, flt: FlowFilter, level: MapLevel, rollups: bool) -> ServiceMap:
    rows = run(cur, *q.service_map_sql(filter_predicate(flt), pieces(flt, state, rollups), level))
    edges = [Edge(_node(r[0:4]), _node(r[4:8]), r[8], *(int(v) for v in r[9:18]), r[18], int(r[19])) for r in rows]
    return ServiceMap.from_edges(level, edges)


def flow_table(cur: Cursor, state: TierState, flt: FlowFilter, view: View | None, by: TopBy, limit: int,
               rollups: bool) -> list[FlowRow]:
    if not 0 < limit <= MAX_LIMIT:
        raise ValueError(f"limit must be 1..{MAX_LIMIT}, got {limit}")
    pred = all_of(filter_predicate(flt), view_predicate(view))
    rows = run(cur, *q.flow_table_sql(pred, pieces(flt, state, rollups), by, limit))
    n = len(q.ENDPOINT_FIELDS)
    return [FlowRow(Endpoint(**dict(zip(q.ENDPOINT_FIELDS, r[:n], strict=True)), service=r[2 * n + 2]),
                    Endpoint(**dict(zip(q.ENDPOINT_FIELDS, r[n:2 * n], strict=True)), service=r[2 * n + 3]),
                    r[2 * n], r[2 * n + 1], *(int(v) for v in r[2 * n + 4:2 * n + 13]), r[2 * n + 13])
            for r in rows]


def timeseries(cur: Cursor, state: TierState, flt: FlowFilter, subject: Subject, step: timedelta,
               rollups: bool) -> TimeSeries:
    if step <= timedelta(0) or step % timedelta(milliseconds=1):
        raise ValueError(f"step must be a positive whole number of milliseconds, got {step}")
    if rollups:
        step = step_for(step, flt.since or EARLIEST, state)
    parts = pieces(flt, state, rollups, step)
    step_ms = step // timedelta(milliseconds=1)
    base = filter_predicate(flt)
    flows: dict[int, list[int]] = {}
    nodes: set[str] | None = None  # the nodes whose allowance counts: none for an edge
    if isinstance(subject, EdgeSubject):
        pred = all_of(base, Eq("category", subject.category)) if subject.category else base
        ends = tuple((str(n.kind), n.name, n.namespace, n.region) for n in (subject.source, subject.destination))
        for b, *values in run(cur, *q.edge_series_sql(pred, parts, step_ms, subject.level, ends)):
            flows[b] = [int(v) for v in values]
    else:
        nodes = {subject.node} if isinstance(subject, NodeSubject) else set()
        for b, node, *values in run(cur, *q.local_series_sql(_local(base, subject), parts, step_ms)):
            nodes.add(node)  # a pod's allowance is that of the node(s) it ran on
            flows[b] = [a + int(v) for a, v in zip(flows.get(b, [0, 0, 0, 0]), values, strict=True)]
    allowance: dict[int, Allowance] = {}
    if nodes:
        for b, *values in run(cur, *q.allowance_sql(parts, step_ms, sorted(nodes))):
            allowance[b] = Allowance(*(int(v) for v in values))
    return TimeSeries(subject, step, _points(flt, step_ms, flows, allowance, nodes is not None))


def _node(parts: tuple) -> MapNode:
    return MapNode(NodeKind(parts[0]), parts[1], parts[2], parts[3])


def _local(base: Pred, subject: PodSubject | NodeSubject) -> Pred:
    if isinstance(subject, PodSubject):
        return all_of(base, Eq("local_namespace", subject.namespace), Eq("local_pod", subject.pod))
    return all_of(base, Eq("node", subject.node))


def _points(flt: FlowFilter, step_ms: int, flows: dict[int, list[int]], allowance: dict[int, Allowance],
            with_allowance: bool) -> tuple[TimePoint, ...]:
    """Every bucket of the range, empty ones as zeros (a gap in traffic is a value, not a hole)."""
    known = [*flows, *allowance]
    first = _ms(flt.since) // step_ms * step_ms if flt.since else min(known, default=None)
    end = _ms(flt.until) if flt.until else max(known, default=-1) + step_ms
    if first is None or end <= first:
        return ()
    if (end - first) // step_ms > MAX_POINTS:
        raise ValueError(f"{(end - first) // step_ms} points: more than {MAX_POINTS}; use a longer step")
    points = []
    for b in range(first, end, step_ms):
        out, into, retransmitted, ooo = flows.get(b, (0, 0, 0, 0))
        points.append(TimePoint(EARLIEST + timedelta(milliseconds=b), out, into, retransmitted, ooo,
                                allowance.get(b, Allowance()) if with_allowance else None))
    return tuple(points)


def _ms(t) -> int:
    return (t - EARLIEST) // timedelta(milliseconds=1)
