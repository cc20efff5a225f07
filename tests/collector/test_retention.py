"""Retention: each tier loses what is older than its setting, never what the next tier lacks."""

from __future__ import annotations

from datetime import timedelta

from flowlens.collector.store import Retention
from flowlens.collector.store.duckdb import DuckDBStore
from flowlens.model.queries import FlowFilter
from tests.collector.conftest import API1, API2, DB1, INFER, S3
from tests.collector.rows import STEP, T0, both, flow, flows_table, node_row, nodes_table

M, H, D = timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)
DAY0 = FlowFilter(since=T0, until=T0 + H)
DAY8 = FlowFilter(since=T0 + 8 * D, until=T0 + 8 * D + H)


def traffic(start, client, bytes_up: int) -> list[dict]:
    rows = []
    for i in range(24):  # two minutes
        t = start + i * STEP
        rows += both(t, client, DB1, 5432, to_server=bytes_up, to_client=1)
        rows.append(flow(t, INFER, S3, 443, category="AMAZON_S3", sent_bytes=1, received_bytes=bytes_up))
    return rows


def make_store() -> DuckDBStore:
    store = DuckDBStore(retention=Retention(raw=7 * D, minute=30 * D, hour=400 * D))
    # Day 0: api-1 → db-1; day 8: api-2 → db-1; infer → S3 on both days.
    nodes = nodes_table([node_row(T0, "n1", pps_allowance_exceeded=1)])
    assert store.append_report("d0", flows_table(traffic(T0, API1, 10)), nodes)
    assert store.append_report("d8", flows_table(traffic(T0 + 8 * D, API2, 20)))
    return store


def test_raw_intervals_go_after_7_days_rollups_answer_instead():
    with make_store() as store:
        day0, day8 = store.service_map(DAY0), store.service_map(DAY8)
        store.apply_retention(T0 + 8 * D + 3 * H)
        rows = store.table_rows()
        assert rows["flow_intervals"] == 3 * 24, "only day 8's raw rows are left"
        assert rows["node_intervals"] == 0 and rows["nodes_1m"] == 1
        assert rows["reports"] == 1, "report ids go with the raw rows they vouch for"
        assert store.service_map(DAY0) == day0, "from minute and hour rollups"
        assert store.service_map(DAY8) == day8
        # Seconds before the raw horizon no longer exist: the range widens to the minute.
        assert store.service_map(FlowFilter(since=T0 + 7 * timedelta(seconds=1), until=T0 + H)) == day0


def test_minutes_go_after_30_days_and_hours_after_400():
    with make_store() as store:
        day0, day8 = store.service_map(DAY0), store.service_map(DAY8)
        store.apply_retention(T0 + 31 * D)
        rows = store.table_rows()
        assert rows["flow_intervals"] == 0
        assert rows["flows_1m"] == 3 * 2, "day 8: three flows, two minutes"
        assert store.service_map(DAY0) == day0, "from hour rollups"
        assert store.service_map(DAY8) == day8
        store.apply_retention(T0 + 401 * D)
        assert store.service_map(DAY0).edges == ()
        assert store.service_map(DAY8) == day8
        rows = store.table_rows()
        assert (rows["flows_1m"], rows["flows_1h"]) == (0, 3)
        # api-1's keys were only used on day 0: gone. infer → S3 is still used by day 8.
        assert rows["flow_keys"] == 3


def test_nothing_recent_is_touched():
    with make_store() as store:
        before = store.table_rows()
        store.apply_retention(T0 + 8 * D + 5 * M)  # day 0 is older than 7 days, day 8 is minutes old
        after = store.table_rows()
        assert after["flow_intervals"] == before["flow_intervals"] - 3 * 24
        assert store.service_map(DAY8).edges[0].bytes_to_destination == 24


def test_a_report_older_than_raw_retention_is_refused():
    with make_store() as store:
        store.apply_retention(T0 + 8 * D + 3 * H)
        before = store.service_map(DAY0)
        assert not store.append_report("d0", flows_table(traffic(T0, API1, 10))), "a retry of day 0 after its id went"
        assert not store.append_report("new", flows_table(traffic(T0 + M, API1, 10)))
        assert store.stats.reports_expired == 2
        assert store.service_map(DAY0) == before
        assert store.append_report("fresh", flows_table(traffic(T0 + 8 * D + H, API1, 10)))


def test_retention_first_rolls_up_what_it_would_delete():
    with DuckDBStore() as store:
        store.append_report("r", flows_table(traffic(T0, API1, 10)))
        day0 = store.service_map(DAY0)
        store.apply_retention(T0 + 9 * D)  # no roll_up was ever called
        assert store.table_rows()["flow_intervals"] == 0
        assert store.service_map(DAY0) == day0
