"""Minute and hour rollups answer exactly what raw intervals answer, and queries do read them."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pyarrow as pa
import pytest

from flowlens.collector.store.duckdb import DuckDBStore
from flowlens.collector.store.tiers import HOUR, MINUTE, RAW, plan
from flowlens.model.queries import EdgeSubject, FlowFilter, MapLevel, NodeSubject, PodSubject, TopBy, View
from tests.collector.random_rows import random_rows
from tests.collector.rows import STEP, T0, flows_table, node_row, nodes_table

M, H = timedelta(minutes=1), timedelta(hours=1)
DURATION = 2 * H + 30 * M  # 10:00 to 12:30
ROWS = random_rows(seed=3, start=T0, duration=DURATION, flows=16, active=0.4)
RANGES = [
    FlowFilter(),
    FlowFilter(since=T0 + 7 * M + timedelta(seconds=32), until=T0 + 2 * H + 29 * M + timedelta(seconds=10)),
    FlowFilter(since=T0 + 59 * M + timedelta(seconds=55), until=T0 + H + timedelta(seconds=5)),
    FlowFilter(since=T0 + H, until=T0 + 2 * H),
    FlowFilter(since=T0 + 30 * M, namespaces=("a",), categories=("INTRA_AZ", "INTER_AZ", "UNCLASSIFIED")),
]
STEPS = [STEP, timedelta(seconds=7), M, 5 * M, H]


def node_rows() -> list[dict[str, Any]]:
    rng, rows, t = random.Random(5), [], T0
    while t < T0 + DURATION:
        rows += [node_row(t, n, pps_allowance_exceeded=rng.choice([0, 0, 3]),
                          bw_out_allowance_exceeded=rng.randrange(3)) for n in ("n1", "n2", "n3")]
        t += STEP
    return rows


def minutes() -> list[tuple[pa.Table, pa.Table]]:
    """(flows, nodes) of each minute, built once for every store filled here."""
    if not _MINUTES:
        flows, nodes = defaultdict(list), defaultdict(list)
        for rows, by in ((ROWS, flows), (node_rows(), nodes)):
            for r in rows:
                by[(r["time_start"] - T0) // M].append(r)
        _MINUTES.extend((flows_table(flows[m]), nodes_table(nodes[m])) for m in range(int(DURATION / M)))
    return _MINUTES


_MINUTES: list[tuple[pa.Table, pa.Table]] = []


def fill(store: DuckDBStore) -> None:
    """As in production: one report per minute, rollups run now and then as minutes close."""
    for m, (flows, nodes) in enumerate(minutes()):
        store.append_report(f"m{m}", flows, nodes)
        if m % 7 == 6 or m == len(minutes()) - 1:
            store.roll_up(T0 + (m + 1) * M)


@pytest.fixture(scope="module")
def rolled() -> Iterator[DuckDBStore]:
    with DuckDBStore() as store:
        fill(store)
        yield store


def both_ways(store: DuckDBStore, query: Callable[[], Any]) -> tuple[Any, Any]:
    store.read_rollups = True
    try:
        with_rollups = query()
        store.read_rollups = False
        return with_rollups, query()
    finally:
        store.read_rollups = True


def test_rollups_are_built_and_smaller(rolled: DuckDBStore):
    state = rolled.tier_state()
    assert (state.minute_watermark, state.hour_watermark) == (T0 + 2 * H + 28 * M, T0 + 2 * H)
    rows = rolled.table_rows()
    assert rows["flow_intervals"] == len(ROWS)
    assert 0 < rows["flows_1h"] < rows["flows_1m"] < rows["flow_intervals"]
    assert 0 < rows["nodes_1h"] < rows["nodes_1m"] < rows["node_intervals"]
    tiers = {p.tier for p in plan(RANGES[1].since, RANGES[1].until, state)}
    assert tiers == {RAW, MINUTE, HOUR}


@pytest.mark.parametrize("flt", RANGES)
@pytest.mark.parametrize("level", list(MapLevel))
def test_service_map_equals_raw(rolled: DuckDBStore, flt: FlowFilter, level: MapLevel):
    with_rollups, raw = both_ways(rolled, lambda: rolled.service_map(flt, level))
    assert raw.edges
    assert with_rollups == raw


@pytest.mark.parametrize("flt", RANGES[:3])
@pytest.mark.parametrize("view", [None, *View])
@pytest.mark.parametrize("by", list(TopBy))
def test_flow_table_equals_raw(rolled: DuckDBStore, flt: FlowFilter, view: View | None, by: TopBy):
    with_rollups, raw = both_ways(rolled, lambda: rolled.flow_table(flt, view, by, limit=50))
    assert with_rollups == raw


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("flt", RANGES[:2])
def test_series_equal_raw(rolled: DuckDBStore, step: timedelta, flt: FlowFilter):
    edge = rolled.service_map(FlowFilter(), MapLevel.WORKLOAD).edges[0]
    for subject in (PodSubject("a", "web-1"), NodeSubject("n1"),
                    EdgeSubject(edge.source, edge.destination, MapLevel.WORKLOAD)):
        with_rollups, raw = both_ways(rolled, lambda s=subject: rolled.timeseries(flt, s, step))
        assert any(p.bytes_out for p in raw.points)
        assert with_rollups == raw


def test_queries_read_the_rollups_not_raw_rows():
    """With the raw rows of the whole minutes of a range removed behind the store's back,
    answers from rollups stay the same while raw answers lose them: rollups are what is read."""
    with DuckDBStore() as store:
        fill(store)
        flt = RANGES[1]
        before = store.service_map(flt)
        store._writer.execute("DELETE FROM flow_intervals WHERE time_start >= ? AND time_start < ?",
                              [(T0 + 8 * M).replace(tzinfo=None), (T0 + 2 * H).replace(tzinfo=None)]).fetchall()
        with_rollups, raw = both_ways(store, lambda: store.service_map(flt))
        assert with_rollups == before
        assert raw != before


def test_late_rows_reach_the_rollups():
    with DuckDBStore() as store:
        fill(store)
        hour = FlowFilter(since=T0, until=T0 + H)
        before = store.service_map(hour)
        late = random_rows(seed=99, start=T0 + 30 * M, duration=timedelta(seconds=20), flows=4, active=1.0)
        assert store.append_report("late", flows_table(late))
        assert store.stats.late_rows == len(late)
        with_rollups, raw = both_ways(store, lambda: store.service_map(hour))
        assert with_rollups == raw != before
        minute = FlowFilter(since=T0 + 30 * M, until=T0 + 31 * M)
        assert both_ways(store, lambda: store.flow_table(minute, limit=100))[0] == store.flow_table(minute, limit=100)


def test_rolling_up_again_changes_nothing(rolled: DuckDBStore):
    rows = rolled.table_rows()
    rolled.roll_up(T0 + DURATION)
    assert rolled.table_rows() == rows
