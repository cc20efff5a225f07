"""The store agrees with the plain-Python reference on random data, at every level and view."""

from __future__ import annotations

from datetime import timedelta

import pytest

from flowlens.collector.store.duckdb import DuckDBStore
from flowlens.model.queries import FlowFilter, MapLevel, TopBy, View
from tests.collector import reference
from tests.collector.random_rows import random_rows
from tests.collector.rows import T0, flows_table

ROWS = random_rows(seed=11, start=T0, duration=timedelta(minutes=12), flows=24)
FILTERS = [
    FlowFilter(),
    FlowFilter(namespaces=("b",)),
    FlowFilter(nodes=("n2",), categories=("INTER_AZ", "UNCLASSIFIED")),
    FlowFilter(workloads=("a/web", "db")),
    FlowFilter(since=T0 + timedelta(seconds=95), until=T0 + timedelta(minutes=7, seconds=20)),
]


@pytest.fixture(scope="module", params=["raw", "rollups"])
def store(request: pytest.FixtureRequest):
    with DuckDBStore() as s:
        s.append_report("all", flows_table(ROWS))
        if request.param == "rollups":
            s.roll_up(T0 + timedelta(minutes=10))  # minutes up to 10:08 rolled up, the rest raw
            assert s.table_rows()["flows_1m"] > 0
        yield s


@pytest.mark.parametrize("level", list(MapLevel))
@pytest.mark.parametrize("flt", FILTERS)
def test_service_map(store: DuckDBStore, level: MapLevel, flt: FlowFilter):
    expected = reference.service_map(ROWS, flt, level)
    assert expected, "the filter selects something"
    assert set(store.service_map(flt, level).edges) == expected


@pytest.mark.parametrize("view", [None, *View])
@pytest.mark.parametrize("flt", FILTERS[:3])
def test_flow_table(store: DuckDBStore, view: View | None, flt: FlowFilter):
    got = store.flow_table(flt, view, TopBy.BYTES, limit=10_000)
    expected = reference.flow_table(ROWS, flt, view)
    assert sorted(got, key=repr) == sorted(expected, key=repr)


GROUPINGS = [frozenset({"zone", "cloud_service", "region", "service"}), frozenset({"namespace", "workload"}),
             frozenset({"node", "server_port"}), frozenset({"ip"}), frozenset()]


@pytest.mark.parametrize("keep", GROUPINGS, ids=lambda k: "+".join(sorted(k)) or "nothing")
@pytest.mark.parametrize("view", [None, View.CLUSTER])
def test_flow_table_grouped(store: DuckDBStore, view: View | None, keep: frozenset[str]):
    got = store.flow_table(FILTERS[0], view, TopBy.BYTES, limit=10_000, keep=keep)
    expected = reference.flow_table(ROWS, FILTERS[0], view, keep)
    assert sorted(got, key=repr) == sorted(expected, key=repr)
    per_flow = reference.flow_table(ROWS, FILTERS[0], view)
    assert sum(r.total_bytes for r in got) == sum(r.total_bytes for r in per_flow), "every flow summed once"
    assert len(got) <= len(per_flow)


def test_flow_table_refuses_an_unknown_grouping(store: DuckDBStore):
    with pytest.raises(ValueError, match=r"cannot be grouped by \['colour'\]"):
        store.flow_table(FILTERS[0], keep=frozenset({"colour"}))
