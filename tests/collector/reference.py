"""A plain-Python reference for the store's queries, built only from the analysis rules.

It walks rows one by one with ``predicates.evaluate``, ``identity.map_node`` and the view and
ownership rules, so it shares the *meaning* with the store but none of its SQL, rollups or
storage. Tests compare the engine with it on random data.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from flowlens.model.identity import client_side, end_of, map_node
from flowlens.model.predicates import all_of, evaluate
from flowlens.model.queries import (
    END_GROUP_FIELDS,
    PER_FLOW,
    QUERY_COUNTERS,
    Edge,
    Endpoint,
    FlowFilter,
    FlowRow,
    MapLevel,
    View,
)
from flowlens.model.views import COUNTS_TRAFFIC, filter_predicate, view_predicate
from flowlens.model.vocabulary import OWNED_COUNTERS

SUMS = ("to_server", "to_client", *QUERY_COUNTERS)


def _selected(rows: list[dict[str, Any]], flt: FlowFilter, view: View | None = None) -> list[dict[str, Any]]:
    pred = all_of(filter_predicate(flt), view_predicate(view))
    return [r for r in rows if _in_range(r["time_start"], flt) and evaluate(pred, r)]


def _in_range(t: datetime, flt: FlowFilter) -> bool:
    return (flt.since is None or t >= flt.since) and (flt.until is None or t < flt.until)


def _oriented(row: dict[str, Any]) -> dict[str, int]:
    owner = evaluate(COUNTS_TRAFFIC, row)
    client = row["role"] == "client"
    return {
        "to_server": owner * (row["sent_bytes"] if client else row["received_bytes"]),
        "to_client": owner * (row["received_bytes"] if client else row["sent_bytes"]),
        **{name: (owner if name in OWNED_COUNTERS else 1) * row[name] for name in QUERY_COUNTERS},
    }


def _rtt(row: dict[str, Any]) -> float | None:
    return row["rtt_sum_us"] / row["rtt_samples"] if row["rtt_samples"] else None


def _max(a: Any, b: Any) -> Any:
    return b if a is None else a if b is None else max(a, b)


def service_map(rows: list[dict[str, Any]], flt: FlowFilter, level: MapLevel) -> set[Edge]:
    sums: dict[tuple, dict[str, int]] = defaultdict(lambda: dict.fromkeys(SUMS, 0))
    rtt_max: dict[tuple, float | None] = defaultdict(lambda: None)
    flows: dict[tuple, set] = defaultdict(set)
    for row in _selected(rows, flt):
        c, s = client_side(row)
        key = (map_node(level, end_of(row, c)), map_node(level, end_of(row, s)), row["category"])
        for name, value in _oriented(row).items():
            sums[key][name] += value
        rtt_max[key] = _max(rtt_max[key], _rtt(row))
        flows[key].add((row[f"{c}_ip"], row[f"{s}_ip"], row["server_port"]))
    return {Edge(src, dst, cat, sums[k]["to_server"], sums[k]["to_client"],
                 **{n: sums[k][n] for n in QUERY_COUNTERS}, rtt_max_us=rtt_max[k], flows=len(flows[k]))
            for k in sums for src, dst, cat in [k]}


ENDPOINT = END_GROUP_FIELDS


def _end(row: dict[str, Any], side: str, keep: frozenset[str]) -> tuple:
    return tuple(row[f"{side}_{n}"] if n in keep else ("" if n == "ip" else None) for n in ENDPOINT)


def flow_table(rows: list[dict[str, Any]], flt: FlowFilter, view: View | None,
               keep: frozenset[str] = PER_FLOW) -> list[FlowRow]:
    """One row per distinct kept fields; an address's Service (per flow) is the greatest seen."""
    per_flow = "ip" in keep
    sums: dict[tuple, dict[str, int]] = defaultdict(lambda: dict.fromkeys(SUMS, 0))
    extra: dict[tuple, list] = defaultdict(lambda: [None, None, None])  # client service, server service, rtt max
    for row in _selected(rows, flt, view):
        c, s = client_side(row)
        key = (_end(row, c, keep - {"service"} if per_flow else keep),
               _end(row, s, keep - {"service"} if per_flow else keep),
               row["server_port"] if "server_port" in keep else 0, row["category"])
        for name, value in _oriented(row).items():
            sums[key][name] += value
        e = extra[key]
        if per_flow:
            e[0], e[1] = _max(e[0], row[f"{c}_service"]), _max(e[1], row[f"{s}_service"])
        e[2] = _max(e[2], _rtt(row))
    out = []
    for k in sums:
        ce, se, port, cat = k
        client, server = dict(zip(ENDPOINT, ce, strict=True)), dict(zip(ENDPOINT, se, strict=True))
        if per_flow:
            client["service"], server["service"] = extra[k][0], extra[k][1]
        out.append(FlowRow(Endpoint(**client), Endpoint(**server), port, cat, sums[k]["to_server"],
                           sums[k]["to_client"], **{n: sums[k][n] for n in QUERY_COUNTERS}, rtt_max_us=extra[k][2]))
    return out
