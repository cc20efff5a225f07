"""Rollups and retention of the DuckDB store, run by the writer inside its transaction.

``roll_up`` folds closed minutes of raw intervals into ``flows_1m``/``nodes_1m`` and closed
hours of those into ``flows_1h``/``nodes_1h``, summed per flow key (per node and interface),
and returns the moved watermarks. Sums saturate at the largest 64-bit integer instead of
failing: ingest bounds every counter to what an interval can carry, so a sum never gets
there honestly, and a row that somehow does must not stop every later rollup.
``late_bounds`` says which rollups rows arriving after their
minute was folded must also go to, so that rollups always equal their raw rows. ``expire``
cuts each tier at its retention, but never past what the next tier has summarised.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc

from flowlens.collector.store import Retention
from flowlens.collector.store.duckdb.exec import Cursor, aware, naive, run
from flowlens.collector.store.duckdb.schema import NODE_COUNTERS, NODE_KEY_COLUMNS, RAW_RTT_MAX, SUMMED
from flowlens.collector.store.tiers import GRANULARITY, HOUR, MINUTE, TierState, floor

TABLES = {("flows", MINUTE): "flows_1m", ("flows", HOUR): "flows_1h", ("nodes", MINUTE): "nodes_1m",
          ("nodes", HOUR): "nodes_1h"}


INT64_MAX = 2**63 - 1


def saturating_sum(column: str) -> str:
    return f"least(sum({column}), {INT64_MAX})"


def flow_rollup_sql(unit: str, source: str, time_col: str, raw: bool) -> str:
    """INSERT of [?, ?) of ``source`` into the ``unit`` flow rollup; ``raw``: source is raw rows."""
    sums = ", ".join(saturating_sum(c) for c in SUMMED)
    rtt = f"max({RAW_RTT_MAX})" if raw else "max(rtt_max_us)"
    intervals = "count(*)" if raw else "sum(intervals)"
    # Ordered by bucket so that each row group covers few buckets: time filters then prune well.
    return (f"INSERT INTO {TABLES['flows', unit]} SELECT date_trunc('{unit}', {time_col}) AS bucket, flow_id, "
            f"{sums}, max(active_sockets), {rtt}, {intervals} FROM {source} "
            f"WHERE {time_col} >= ? AND {time_col} < ? GROUP BY ALL ORDER BY bucket")


def node_rollup_sql(unit: str, source: str, time_col: str, raw: bool) -> str:
    keys = ", ".join(NODE_KEY_COLUMNS)
    sums = ", ".join(saturating_sum(c) for c in NODE_COUNTERS)
    intervals = "count(*)" if raw else "sum(intervals)"
    return (f"INSERT INTO {TABLES['nodes', unit]} SELECT date_trunc('{unit}', {time_col}) AS bucket, {keys}, "
            f"{sums}, {intervals} FROM {source} WHERE {time_col} >= ? AND {time_col} < ? GROUP BY ALL ORDER BY bucket")


def late_bounds(state: TierState, table: pa.Table) -> tuple[int, list[tuple[str, datetime]]]:
    """(rows older than the minute watermark, [(unit, watermark)] of the rollups they belong to)."""
    minute, hour = naive(state.minute_watermark), naive(state.hour_watermark)
    oldest = pc.min(table["time_start"]).as_py()
    if minute is None or oldest is None or oldest >= minute:
        return 0, []
    late = pc.sum(pc.less(table["time_start"], pa.scalar(minute, pa.timestamp("ms")))).as_py()
    bounds = [(MINUTE, minute)]
    if hour is not None and oldest < hour:
        bounds.append((HOUR, hour))
    return late, bounds


def roll_up(w: Cursor, state: TierState, now: datetime, delay: timedelta) -> TierState:
    minute = _fold(w, MINUTE, state.minute_watermark, floor(now - delay, GRANULARITY[MINUTE]))
    hour = _fold(w, HOUR, state.hour_watermark, floor(minute, GRANULARITY[HOUR]))
    return TierState(state.raw_horizon, state.minute_horizon, minute, state.hour_horizon, hour)


def targets(state: TierState, now: datetime, delay: timedelta) -> dict[str, datetime]:
    """How far each rollup tier should reach now (hours only as far as the minutes reached)."""
    minute = floor(now - delay, GRANULARITY[MINUTE])
    reached = min(minute, state.minute_watermark) if state.minute_watermark is not None else minute
    return {MINUTE: minute, HOUR: floor(reached, GRANULARITY[HOUR])}


def watermark(state: TierState, unit: str) -> datetime | None:
    return state.minute_watermark if unit == MINUTE else state.hour_watermark


def fold_one(w: Cursor, state: TierState, unit: str, bucket: datetime) -> TierState:
    """Fold exactly one bucket; the watermark moves past it."""
    end = bucket + GRANULARITY[unit]
    moved = _fold(w, unit, bucket, end)
    if unit == MINUTE:
        return TierState(state.raw_horizon, state.minute_horizon, moved, state.hour_horizon, state.hour_watermark)
    return TierState(state.raw_horizon, state.minute_horizon, state.minute_watermark, state.hour_horizon, moved)


def skip_one(state: TierState, unit: str, bucket: datetime) -> TierState:
    """Move the watermark past a bucket that cannot be folded (its raw rows stay readable)."""
    end = bucket + GRANULARITY[unit]
    if unit == MINUTE:
        return TierState(state.raw_horizon, state.minute_horizon, end, state.hour_horizon, state.hour_watermark)
    return TierState(state.raw_horizon, state.minute_horizon, state.minute_watermark, state.hour_horizon, end)


def _fold(w: Cursor, unit: str, watermark: datetime | None, target: datetime) -> datetime:
    """Fold [watermark, target) of the finer tier into ``unit`` rollups; the new watermark."""
    raw = unit == MINUTE
    flows, nodes, column = ("flow_intervals", "node_intervals", "time_start") if raw else \
        ("flows_1m", "nodes_1m", "bucket")
    if watermark is None:
        watermark = first_watermark(w, unit, target)
    if target <= watermark:
        return watermark
    run(w, flow_rollup_sql(unit, flows, column, raw), [watermark, target])
    run(w, node_rollup_sql(unit, nodes, column, raw), [watermark, target])
    return target


def first_watermark(w: Cursor, unit: str, target: datetime) -> datetime:
    """Where the first rollup of a tier starts: at its source's oldest row (nothing older to fold)."""
    flows, nodes, column = ("flow_intervals", "node_intervals", "time_start") if unit == MINUTE else \
        ("flows_1m", "nodes_1m", "bucket")
    first = run(w, f"SELECT least((SELECT min({column}) FROM {flows}), (SELECT min({column}) FROM {nodes}))")[0][0]
    return target if first is None else min(target, floor(aware(first), GRANULARITY[unit]))


def expire(w: Cursor, s: TierState, now: datetime, r: Retention) -> tuple[TierState, bool]:
    """Delete what each tier keeps no longer; True when flow keys were dropped too."""
    assert s.minute_watermark is not None and s.hour_watermark is not None, "roll up first"
    raw = _later(s.raw_horizon, min(floor(now - r.raw, GRANULARITY[MINUTE]), s.minute_watermark))
    minute = _later(s.minute_horizon, min(floor(now - r.minute, GRANULARITY[HOUR]), s.hour_watermark))
    hour = _later(s.hour_horizon, floor(now - r.hour, GRANULARITY[HOUR]))
    deleted = 0
    for table, column, cut in (("flow_intervals", "time_start", raw), ("node_intervals", "time_start", raw),
                               ("reports", "first_time", raw), ("flows_1m", "bucket", minute),
                               ("nodes_1m", "bucket", minute), ("flows_1h", "bucket", hour),
                               ("nodes_1h", "bucket", hour)):
        deleted += run(w, f"DELETE FROM {table} WHERE {column} < ?", [cut])[0][0]
    gone = 0
    if deleted:
        # A key is still used by an hour rollup, by a minute rollup not yet in an hour, or by a
        # raw interval not yet in a minute; older minute and raw rows are in those already.
        gone = run(w, "DELETE FROM flow_keys WHERE flow_id NOT IN (SELECT flow_id FROM flows_1h "
                      "UNION SELECT flow_id FROM flows_1m WHERE bucket >= ? "
                      "UNION SELECT flow_id FROM flow_intervals WHERE time_start >= ?)",
                   [s.hour_watermark, s.minute_watermark])[0][0]
    return TierState(raw, minute, s.minute_watermark, hour, s.hour_watermark), gone > 0


def _later(current: datetime | None, cut: datetime) -> datetime:
    return cut if current is None else max(current, cut)
