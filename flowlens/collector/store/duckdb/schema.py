"""The DuckDB store's tables: a star schema of flow keys and per-interval counters, plus rollups.

Agents send the same flow every interval, with ~30 text columns (addresses and enrichment)
that do not change between intervals. Storing them once per flow, in ``flow_keys`` under a
64-bit hash of all of them, and only numbers per interval, in ``flow_intervals``, is what
makes ingest fast (numbers append an order of magnitude faster than text) and rollups small
(grouped by one integer). The ``flows`` view joins them back into FLOW_SCHEMA's shape.

Times are UTC ``TIMESTAMP`` (no zone): no time-zone library is needed to read them back, and
bound parameters prune row groups by their min/max.
"""

from __future__ import annotations

import pyarrow as pa

from flowlens.model.records import FLOW_COLUMNS, FLOW_COUNTER_COLUMNS, NODE_COLUMNS

SCHEMA_VERSION = "2"  # 2: flow ids computed by flowlens (model.records.flow_id), not by DuckDB

COUNTERS = tuple(name for name, _ in FLOW_COUNTER_COLUMNS)
# Every flow column but the times and counters: one flow key, hashed into flow_id.
KEY_COLUMNS = tuple(name for name, _ in FLOW_COLUMNS if name not in ("time_start", "time_end") and name not in COUNTERS)
SUMMED = tuple(c for c in COUNTERS if c != "active_sockets")  # active_sockets is a gauge: rollups keep its max

NODE_KEY_COLUMNS = ("node", "zone", "instance_type", "iface")
NODE_COUNTERS = tuple(name for name, _ in NODE_COLUMNS if name not in ("time_start", "time_end", *NODE_KEY_COLUMNS))

# Per-interval mean RTT of one raw row; rollups keep the max of it as rtt_max_us.
RAW_RTT_MAX = "CASE WHEN rtt_samples > 0 THEN rtt_sum_us::DOUBLE / rtt_samples END"


def _sql_type(kind: pa.DataType) -> str:
    if pa.types.is_timestamp(kind):
        return "TIMESTAMP"
    if pa.types.is_string(kind):
        return "VARCHAR"
    if kind == pa.int32():
        return "INTEGER"
    if kind == pa.int64():
        return "BIGINT"
    raise TypeError(f"no DuckDB type for {kind}")


_FLOW_TYPES = dict(FLOW_COLUMNS)
_NODE_TYPES = dict(NODE_COLUMNS)


def _cols(names: tuple[str, ...], types: dict[str, pa.DataType]) -> str:
    return ", ".join(f"{name} {_sql_type(types[name])}" for name in names)


def _rollup_counters() -> str:
    return ", ".join([*(f"{c} BIGINT" for c in SUMMED), "active_sockets INTEGER", "rtt_max_us DOUBLE",
                      "intervals BIGINT"])


def ddl() -> list[str]:
    flow_rollup = f"(bucket TIMESTAMP NOT NULL, flow_id UBIGINT NOT NULL, {_rollup_counters()})"
    node_rollup = (f"(bucket TIMESTAMP NOT NULL, {_cols(NODE_KEY_COLUMNS, _NODE_TYPES)}, "
                   f"{', '.join(f'{c} BIGINT' for c in NODE_COUNTERS)}, intervals BIGINT)")
    view_list = ", ".join(f"k.{name}" if name in KEY_COLUMNS else f"i.{name}" for name, _ in FLOW_COLUMNS)
    return [
        "CREATE TABLE IF NOT EXISTS store_meta (key VARCHAR NOT NULL, value VARCHAR)",
        "CREATE TABLE IF NOT EXISTS store_state (name VARCHAR NOT NULL, value TIMESTAMP)",
        # No index: lookups give first_time too, which prunes row groups by min/max; an index
        # over millions of ids would cost memory for nothing.
        "CREATE TABLE IF NOT EXISTS reports (report_id VARCHAR NOT NULL, first_time TIMESTAMP NOT NULL, "
        "flow_rows INTEGER, node_rows INTEGER)",
        f"CREATE TABLE IF NOT EXISTS flow_keys (flow_id UBIGINT NOT NULL, first_seen TIMESTAMP, "
        f"{_cols(KEY_COLUMNS, _FLOW_TYPES)})",
        f"CREATE TABLE IF NOT EXISTS flow_intervals (time_start TIMESTAMP NOT NULL, time_end TIMESTAMP NOT NULL, "
        f"flow_id UBIGINT NOT NULL, {_cols(COUNTERS, _FLOW_TYPES)})",
        f"CREATE TABLE IF NOT EXISTS flows_1m {flow_rollup}",
        f"CREATE TABLE IF NOT EXISTS flows_1h {flow_rollup}",
        f"CREATE TABLE IF NOT EXISTS node_intervals ({_cols(tuple(_NODE_TYPES), _NODE_TYPES)})",
        f"CREATE TABLE IF NOT EXISTS nodes_1m {node_rollup}",
        f"CREATE TABLE IF NOT EXISTS nodes_1h {node_rollup}",
        f"CREATE OR REPLACE VIEW flows AS SELECT {view_list} FROM flow_intervals i JOIN flow_keys k USING (flow_id)",
    ]


STATE_NAMES = ("raw_horizon", "minute_horizon", "minute_watermark", "hour_horizon", "hour_watermark")

# The stored shape of a batch: FLOW_SCHEMA / NODE_SCHEMA with zone-less timestamps.
FLOW_STORE_SCHEMA = pa.schema([pa.field(n, pa.timestamp("ms") if pa.types.is_timestamp(t) else t)
                               for n, t in FLOW_COLUMNS])
NODE_STORE_SCHEMA = pa.schema([pa.field(n, pa.timestamp("ms") if pa.types.is_timestamp(t) else t)
                               for n, t in NODE_COLUMNS])
