"""SQL text of the DuckDB store, generated from the analysis rules; no connection here.

Every query has the same shape: ``f`` sums counters per flow key over the tier pieces of the
time range (one integer key, so it is cheap even over raw intervals), ``k`` picks the keys that
pass the filter and view and turns each into client/server form (``c_*``/``s_*`` columns, the
``owner`` flag of ``flowlens.model.views.COUNTS_TRAFFIC``), and the outer query groups the
join by what the answer is about (map nodes, flow rows, series buckets). User values are
always bound parameters; the only literals are this module's own constants.
"""

from __future__ import annotations

from typing import Any

from flowlens.collector.store.duckdb.schema import KEY_COLUMNS, NODE_COUNTERS, RAW_RTT_MAX
from flowlens.collector.store.tiers import HOUR, MINUTE, RAW, Piece
from flowlens.model.identity import END_CLASSES, END_FIELDS, NODE_RULES, Const, NodeRule
from flowlens.model.predicates import TRUE, All, Any_, Eq, In, IsNull, Not, Pred, columns
from flowlens.model.queries import END_GROUP_FIELDS, PER_FLOW, QUERY_COUNTERS, MapLevel, TopBy
from flowlens.model.views import COUNTS_TRAFFIC, TOP_BY_ORDER
from flowlens.model.vocabulary import ALLOWANCE_STATS, OWNED_COUNTERS

Params = list[Any]

FACT_COUNTERS = ("sent_bytes", "received_bytes", *QUERY_COUNTERS)
_FLOW_TABLES = {RAW: ("flow_intervals", "time_start"), MINUTE: ("flows_1m", "bucket"), HOUR: ("flows_1h", "bucket")}
_NODE_TABLES = {RAW: ("node_intervals", "time_start"), MINUTE: ("nodes_1m", "bucket"), HOUR: ("nodes_1h", "bucket")}
_KEYS = frozenset(KEY_COLUMNS)

# What a joined (flow key, sums) row adds, oriented client → server: bytes and connection
# counts only from the row that owns them (see COUNTS_TRAFFIC).
ORIENTED = {
    "to_server": "CASE WHEN owner THEN CASE WHEN is_client THEN sent_bytes ELSE received_bytes END ELSE 0 END",
    "to_client": "CASE WHEN owner THEN CASE WHEN is_client THEN received_bytes ELSE sent_bytes END ELSE 0 END",
    **{f"owned_{name}": f"CASE WHEN owner THEN {name} ELSE 0 END" for name in QUERY_COUNTERS
       if name in OWNED_COUNTERS},
}


def counter_sums() -> str:
    """The query records' counters, each summed from the rows that count it (``combine``)."""
    return ", ".join(f"sum(owned_{name}) AS {name}" if name in OWNED_COUNTERS else f"sum({name}) AS {name}"
                     for name in QUERY_COUNTERS)


def lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def compile_pred(pred: Pred) -> tuple[str, Params]:
    """Two-valued SQL (never NULL), so that NOT means what ``predicates.evaluate`` means."""
    unknown = columns(pred) - _KEYS
    if unknown:
        raise ValueError(f"predicate reads columns that are not flow-key columns: {sorted(unknown)}")
    return _compile(pred)


def _compile(pred: Pred) -> tuple[str, Params]:
    match pred:
        case IsNull(column):
            return f"({column} IS NULL)", []
        case Eq(column, value):
            if value is None:
                raise ValueError("Eq(column, None): use IsNull")
            return f"({column} IS NOT DISTINCT FROM ?)", [value]
        case In(column, values):
            if not values:
                return "FALSE", []
            return f"coalesce({column} IN ({', '.join('?' * len(values))}), FALSE)", list(values)
        case Not(operand):
            text, params = _compile(operand)
            return f"(NOT {text})", params
        case All(operands) | Any_(operands):
            if not operands:
                return ("TRUE" if isinstance(pred, All) else "FALSE"), []
            parts = [_compile(p) for p in operands]
            joiner = " AND " if isinstance(pred, All) else " OR "
            return "(" + joiner.join(t for t, _ in parts) + ")", [v for _, ps in parts for v in ps]
    raise TypeError(f"not a predicate: {pred!r}")


def fact_source(pieces: list[Piece]) -> tuple[str, Params]:
    """(flow_id, t, counters, rtt_max_us) rows of every piece; raw rows look like 1-interval rollups."""
    cols = ", ".join(FACT_COUNTERS)
    selects, params = [], []
    for piece in pieces:
        table, time_col = _FLOW_TABLES[piece.tier]
        rtt = RAW_RTT_MAX if piece.tier == RAW else "rtt_max_us"
        selects.append(f"SELECT flow_id, {time_col} AS t, {cols}, {rtt} AS rtt_max_us FROM {table} "
                       f"WHERE {time_col} >= ? AND {time_col} < ?")
        params += [piece.start, piece.end]
    if not selects:
        selects.append(f"SELECT flow_id, time_start AS t, {cols}, {RAW_RTT_MAX} AS rtt_max_us "
                       "FROM flow_intervals WHERE FALSE")
    return " UNION ALL ".join(selects), params


def node_source(pieces: list[Piece]) -> tuple[str, Params]:
    cols = ", ".join(NODE_COUNTERS)
    selects, params = [], []
    for piece in pieces:
        table, time_col = _NODE_TABLES[piece.tier]
        selects.append(f"SELECT node, {time_col} AS t, {cols} FROM {table} WHERE {time_col} >= ? AND {time_col} < ?")
        params += [piece.start, piece.end]
    if not selects:
        selects.append(f"SELECT node, time_start AS t, {cols} FROM node_intervals WHERE FALSE")
    return " UNION ALL ".join(selects), params


def _canonical() -> str:
    parts = []
    for name in END_FIELDS:
        parts.append(f"CASE WHEN role = 'client' THEN local_{name} ELSE remote_{name} END AS c_{name}")
        parts.append(f"CASE WHEN role = 'client' THEN remote_{name} ELSE local_{name} END AS s_{name}")
    return ", ".join(parts)


def keys_cte(pred: Pred) -> tuple[str, Params]:
    """Flow keys passing ``pred``, in client/server form, with the ``owner`` flag."""
    owner, owner_params = compile_pred(COUNTS_TRAFFIC)
    where, where_params = compile_pred(pred)
    sql = (f"SELECT flow_id, node, category, server_port, role = 'client' AS is_client, {owner} AS owner, "
           f"{_canonical()} FROM flow_keys WHERE {where}")
    return sql, owner_params + where_params


def sums_cte(source: str, pred: Pred, bucket_ms: int | None = None) -> str:
    """Counters summed per flow key (and per bucket of ``bucket_ms`` when given)."""
    sums = ", ".join(f"sum({c}) AS {c}" for c in FACT_COUNTERS)
    bucket = f"(epoch_ms(t) // {int(bucket_ms)}) * {int(bucket_ms)} AS b, " if bucket_ms else ""
    # A semi-join first when the filter is narrow: only the chosen keys' rows get summed.
    narrow = " WHERE flow_id IN (SELECT flow_id FROM k)" if pred != TRUE else ""
    return (f"SELECT flow_id, {bucket}{sums}, max(rtt_max_us) AS rtt_max_us FROM ({source}) s{narrow} "
            f"GROUP BY ALL")


def joined(pred: Pred, pieces: list[Piece], bucket_ms: int | None = None) -> tuple[str, Params]:
    """``WITH k, f, j``: j is one row per (flow key[, bucket]) with oriented counters."""
    keys, key_params = keys_cte(pred)
    source, source_params = fact_source(pieces)
    oriented = ", ".join(f"{expr} AS {name}" for name, expr in ORIENTED.items())
    sql = (f"WITH k AS ({keys}), f AS ({sums_cte(source, pred, bucket_ms)}), "
           f"j AS (SELECT k.*, f.* EXCLUDE (flow_id), {oriented} FROM f JOIN k USING (flow_id)) ")
    return sql, key_params + source_params


def node_exprs(level: MapLevel, prefix: str) -> tuple[str, str, str, str]:
    """SQL for (kind, name, namespace, region) of the map node of the ``prefix`` end."""
    rules = NODE_RULES[MapLevel(level)]

    def case(part: Any) -> str:
        whens, other = [], "NULL"
        for cls, required in END_CLASSES:
            expr = part(rules[cls])
            if required is None:
                other = expr
            else:
                whens.append(f"WHEN {prefix}{required} IS NOT NULL THEN {expr}")
        return f"CASE {' '.join(whens)} ELSE {other} END"

    def name(rule: NodeRule) -> str:
        parts = [lit(p.value) if isinstance(p, Const) else f"{prefix}{p}" for p in rule.name]
        return parts[0] if len(parts) == 1 else f"coalesce({', '.join(parts)})"

    return (case(lambda r: lit(str(r.kind))), case(name),
            case(lambda r: f"{prefix}{r.namespace}" if r.namespace else "NULL"),
            case(lambda r: f"{prefix}{r.region}" if r.region else "NULL"))


def service_map_sql(pred: Pred, pieces: list[Piece], level: MapLevel) -> tuple[str, Params]:
    head, params = joined(pred, pieces)
    src, dst = node_exprs(level, "c_"), node_exprs(level, "s_")
    names = ("kind", "name", "namespace", "region")
    ends = [f"{expr} AS {side}_{n}" for side, exprs in (("source", src), ("destination", dst))
            for expr, n in zip(exprs, names, strict=True)]
    sql = (f"{head}SELECT {', '.join(ends)}, category, sum(to_server) AS bytes_to_destination, "
           f"sum(to_client) AS bytes_to_source, {counter_sums()}, max(rtt_max_us) AS rtt_max_us, "
           "count(DISTINCT (c_ip, s_ip, server_port)) AS flows FROM j GROUP BY ALL")
    return sql, params


def flow_table_sql(pred: Pred, pieces: list[Piece], by: TopBy, limit: int,
                   keep: frozenset[str] = PER_FLOW) -> tuple[str, Params]:
    """Rows grouped by the ``keep`` fields of each end (and the port), by category always."""
    head, params = joined(pred, pieces)
    per_flow = "ip" in keep  # an address's Service is whichever its flows reached: not a dimension
    grouped = [n for n in END_GROUP_FIELDS if n in keep and not (per_flow and n == "service")]
    group = [f"{p}{name}" for p in ("c_", "s_") for name in grouped]
    group += ["server_port"] if "server_port" in keep else []
    group.append("category")
    fixed = [f"{'max(' + p + name + ')' if per_flow and name == 'service' else _blank(name)} AS {p}{name}"
             for p in ("c_", "s_") for name in END_GROUP_FIELDS if name not in grouped]
    fixed += [] if "server_port" in keep else ["0 AS server_port"]
    order = [f"{name} DESC NULLS LAST" for name in TOP_BY_ORDER[TopBy(by)]]
    order += [f"{col} ASC NULLS FIRST" for col in group]  # a stable answer among equals
    sql = (f"{head}SELECT * FROM (SELECT {', '.join(group + fixed)}, "
           "sum(to_server) AS bytes_to_server, sum(to_client) AS bytes_to_client, "
           f"{counter_sums()}, max(rtt_max_us) AS rtt_max_us, sum(to_server) + sum(to_client) AS total_bytes, "
           "sum(rtt_sum_us)::DOUBLE / nullif(sum(rtt_samples), 0) AS rtt_mean_us "
           f"FROM j GROUP BY {', '.join(group)}) ORDER BY {', '.join(order)} LIMIT {int(limit)}")
    return sql, params


def _blank(name: str) -> str:
    return "''" if name == "ip" else "NULL"


def local_series_sql(pred: Pred, pieces: list[Piece], bucket_ms: int) -> tuple[str, Params]:
    """A pod's or a node's own rows (it is the local end): sent is out, received is in."""
    head, params = joined(pred, pieces, bucket_ms)
    sql = (f"{head}SELECT b, node, sum(sent_bytes), sum(received_bytes), sum(retransmitted_segments), "
           "sum(received_out_of_order) FROM j GROUP BY b, node ORDER BY b")
    return sql, params


def edge_series_sql(pred: Pred, pieces: list[Piece], bucket_ms: int, level: MapLevel,
                    ends: tuple[tuple[Any, ...], tuple[Any, ...]]) -> tuple[str, Params]:
    head, params = joined(pred, pieces, bucket_ms)
    match, match_params = [], []
    for exprs, values in zip((node_exprs(level, "c_"), node_exprs(level, "s_")), ends, strict=True):
        for expr, value in zip(exprs, values, strict=True):
            match.append(f"({expr}) IS NOT DISTINCT FROM ?")
            match_params.append(value)
    sql = (f"{head}SELECT b, sum(to_server), sum(to_client), sum(retransmitted_segments), "
           f"sum(received_out_of_order) FROM j WHERE {' AND '.join(match)} GROUP BY b ORDER BY b")
    return sql, params + match_params


def allowance_sql(pieces: list[Piece], bucket_ms: int, nodes: list[str]) -> tuple[str, Params]:
    source, params = node_source(pieces)
    allowance = ALLOWANCE_STATS
    sql = (f"SELECT (epoch_ms(t) // {int(bucket_ms)}) * {int(bucket_ms)} AS b, "
           f"{', '.join(f'sum({c})' for c in allowance)} FROM ({source}) s "
           f"WHERE node IN ({', '.join('?' * len(nodes))}) GROUP BY b ORDER BY b")
    return sql, params + list(nodes)
