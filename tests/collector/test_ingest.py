"""The write path: idempotent reports, atomicity, validation, concurrency, a file that persists."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from flowlens.collector.store import FlowStore, ReportBatch, StoreError
from flowlens.collector.store.duckdb import DuckDBStore
from flowlens.model.queries import FlowFilter, PodSubject
from flowlens.model.records import FLOW_SCHEMA
from tests.collector.conftest import API1, DB1, scenario_nodes, scenario_rows
from tests.collector.rows import STEP, T0, both, flows_table, nodes_table


def report(i: int, up: int = 100) -> pa.Table:
    """Interval i of api-1 → db-1, both ends reporting."""
    return flows_table(both(T0 + i * STEP, API1, DB1, 5432, to_server=up, to_client=1))


def total_up(store: DuckDBStore) -> int:
    return sum(e.bytes_to_destination for e in store.service_map(FlowFilter()).edges)


def test_it_is_a_flow_store(store: DuckDBStore):
    assert isinstance(store, FlowStore)


def test_a_retried_report_is_counted_once(store: DuckDBStore):
    assert store.append_report("node-1/7", report(0))
    assert not store.append_report("node-1/7", report(0))
    assert total_up(store) == 100
    assert (store.stats.reports_stored, store.stats.reports_duplicate) == (1, 1)
    assert store.table_rows()["flow_intervals"] == 2


def test_another_id_is_another_report(store: DuckDBStore):
    assert store.append_report("node-1/7", report(0))
    assert store.append_report("node-1/8", report(0))
    assert total_up(store) == 200


def test_an_id_reused_for_another_interval_is_another_report(store: DuckDBStore):
    """An agent that restarts its sequence numbers reuses ids, but never for the same interval."""
    assert store.append_report("node-1/1", report(0))
    assert store.append_report("node-1/1", report(1))
    assert total_up(store) == 200


def test_duplicates_inside_one_group_commit(store: DuckDBStore):
    answers = store.append_reports([ReportBatch("a", report(0)), ReportBatch("a", report(0)),
                                    ReportBatch("b", report(1)), ReportBatch("empty", flows_table([]))])
    assert answers == [True, False, True, True]
    assert total_up(store) == 200


def test_node_rows_are_deduplicated_with_their_report(store: DuckDBStore):
    for _ in range(2):
        store.append_report("r", flows_table(scenario_rows()), nodes_table(scenario_nodes()))
    series = store.timeseries(FlowFilter(), PodSubject("shop", "api-1"), STEP)
    assert series.points[0].allowance.pps == 3
    assert store.table_rows()["node_intervals"] == len(scenario_nodes())


def test_a_failed_append_stores_nothing_and_can_be_retried(store: DuckDBStore, monkeypatch: pytest.MonkeyPatch):
    def broken(*_: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(store, "_insert_nodes", broken)
    with pytest.raises(OSError, match="disk full"):
        store.append_report("r", flows_table(scenario_rows()), nodes_table(scenario_nodes()))
    assert set(store.table_rows().values()) == {0}, "the report id, keys and intervals were all rolled back"
    monkeypatch.undo()
    assert store.append_report("r", flows_table(scenario_rows()), nodes_table(scenario_nodes()))
    assert store.table_rows()["flow_keys"] == len({(r["role"], r["local_ip"], r["remote_ip"]) for r in scenario_rows()})


def test_concurrent_retries_store_once(store: DuckDBStore):
    answers: list[bool] = []
    barrier = threading.Barrier(8)

    def send() -> None:
        barrier.wait()
        answers.append(store.append_report("same", report(0)))

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(answers) == [False] * 7 + [True]
    assert total_up(store) == 100


def test_concurrent_ingest_and_queries(store: DuckDBStore):
    errors: list[BaseException] = []

    def send(first: int) -> None:
        try:
            for i in range(first, 200, 4):
                assert store.append_report(f"r{i}", report(i))
        except BaseException as err:
            errors.append(err)

    def read() -> None:
        try:
            for _ in range(30):
                store.service_map(FlowFilter())
                store.flow_table(FlowFilter(), limit=5)
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=send, args=(k,)) for k in range(4)] + [threading.Thread(target=read)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert total_up(store) == 200 * 100
    assert store.table_rows()["flow_keys"] == 2


def test_rows_that_do_not_fit_the_schema_are_refused(store: DuckDBStore):
    good = report(0)
    with pytest.raises(StoreError, match="lack columns category"):
        store.append_report("r", good.drop_columns(["category"]))
    bad_type = good.set_column(good.schema.get_field_index("sent_bytes"), "sent_bytes", pa.array(["x", "y"]))
    with pytest.raises(StoreError, match="do not fit"):
        store.append_report("r", bad_type)
    no_time = good.set_column(0, "time_start", pa.nulls(2, FLOW_SCHEMA.field("time_start").type))
    with pytest.raises(StoreError, match="no time_start"):
        store.append_report("r", no_time)
    assert set(store.table_rows().values()) == {0}
    assert store.append_report("r", good), "a refused report left no id behind"


def test_columns_in_any_order_and_other_time_units(store: DuckDBStore):
    table = report(0)
    reordered = table.select(list(reversed(table.column_names)))
    micro = reordered.set_column(reordered.schema.get_field_index("time_end"), "time_end",
                                 reordered["time_end"].cast(pa.timestamp("us", tz="UTC")))
    assert store.append_report("r", micro)
    assert total_up(store) == 100


def test_a_file_store_survives_close_and_reopen(tmp_path: Path):
    path = tmp_path / "flows.duckdb"
    with DuckDBStore(path) as store:
        store.append_report("r1", flows_table(scenario_rows()), nodes_table(scenario_nodes()))
        store.roll_up(T0 + timedelta(minutes=10))
        before, state, rows = store.service_map(FlowFilter()), store.tier_state(), store.table_rows()
    with DuckDBStore(path) as store:
        assert store.service_map(FlowFilter()) == before
        assert store.tier_state() == state
        assert store.table_rows() == rows
        assert not store.append_report("r1", flows_table(scenario_rows())), "report ids persist"
        # Keys already stored are known after reopening: no second copy of them.
        assert store.append_report("r2", flows_table(scenario_rows()))
        assert store.table_rows()["flow_keys"] == rows["flow_keys"]


def test_a_store_of_another_schema_version_is_refused(tmp_path: Path):
    path = tmp_path / "flows.duckdb"
    with DuckDBStore(path) as store:
        store._writer.execute("UPDATE store_meta SET value = '0' WHERE key = 'schema_version'").fetchall()
    with pytest.raises(StoreError, match="schema 0"):
        DuckDBStore(path)


def test_a_closed_store_refuses_work(store: DuckDBStore):
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.append_report("r", report(0))
    with pytest.raises(StoreError, match="closed"):
        store.service_map(FlowFilter())
