"""The DuckDB store's queries: plan the tiers, run the SQL of ``sql``, build typed answers.

Each function runs inside the caller's read transaction (``cursor``, with the ``state`` read
in it), so tier watermarks and table contents are of the same moment.
"""

from __future__ import annotations

from datetime import timedelta

from flowlens.collector.store.duckdb import sql as q
from flowlens.collector.store.duckdb.exec import Cursor, run, run_named
from flowlens.collector.store.tiers import EARLIEST, LATEST, Piece, TierState, plan, step_for
from flowlens.model.predicates import Eq, Pred, all_of
from flowlens.model.queries import (
    END_GROUP_FIELDS,
    PER_FLOW,
    QUERY_COUNTERS,
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
    rows = run_named(cur, *q.service_map_sql(filter_predicate(flt), pieces(flt, state, rollups), level))
    edges = [Edge(_end_node(r, "source"), _end_node(r, "destination"), r["category"],
                  **_counters(r, ("bytes_to_destination", "bytes_to_source", *QUERY_COUNTERS, "flows")),
                  rtt_max_us=r["rtt_max_us"]) for r in rows]
    return ServiceMap.from_edges(level, edges)


def _counters(row: dict, names: tuple[str, ...]) -> dict[str, int]:
    return {name: int(row[name]) for name in names}


def _end_node(row: dict, side: str) -> MapNode:
    return MapNode(NodeKind(row[f"{side}_kind"]), row[f"{side}_name"], row[f"{side}_namespace"],
                   row[f"{side}_region"])


def flow_table(cur: Cursor, state: TierState, flt: FlowFilter, view: View | None, by: TopBy, limit: int,
               rollups: bool, keep: frozenset[str] = PER_FLOW) -> list[FlowRow]:
    if not 0 < limit <= MAX_LIMIT:
        raise ValueError(f"limit must be 1..{MAX_LIMIT}, got {limit}")
    pred = all_of(filter_predicate(flt), view_predicate(view))
    unknown = set(keep) - PER_FLOW
    if unknown:
        raise ValueError(f"flow rows cannot be grouped by {sorted(unknown)}: choose among {sorted(PER_FLOW)}")
    rows = run_named(cur, *q.flow_table_sql(pred, pieces(flt, state, rollups), by, limit, keep))
    return [FlowRow(_endpoint(r, "c_"), _endpoint(r, "s_"), r["server_port"], r["category"],
                    **_counters(r, ("bytes_to_server", "bytes_to_client", *QUERY_COUNTERS)),
                    rtt_max_us=r["rtt_max_us"]) for r in rows]


def _endpoint(row: dict, prefix: str) -> Endpoint:
    return Endpoint(**{name: row[prefix + name] for name in END_GROUP_FIELDS})


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
