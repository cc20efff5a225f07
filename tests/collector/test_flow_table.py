"""Flow table: the three views, every top-by ranking, limits and the row contents."""

from __future__ import annotations

import pytest

from flowlens.collector.store.duckdb import DuckDBStore
from flowlens.model.queries import Endpoint, FlowFilter, FlowRow, TopBy, View
from flowlens.model.views import order_key

# (client IP, server IP) of the scenario's six connections.
API1_DB = ("10.0.1.1", "10.0.2.1")
API2_DB = ("10.0.1.2", "10.0.2.1")
INFER_S3 = ("10.0.3.1", "52.216.0.1")
INFER_DDB = ("10.0.3.1", "3.218.0.1")
API1_DNS = ("10.0.1.1", "8.8.8.8")
VISITOR_API1 = ("203.0.113.9", "10.0.1.1")


def ends(rows: list[FlowRow]) -> list[tuple[str, str]]:
    return [(r.client.ip, r.server.ip) for r in rows]


@pytest.mark.parametrize(("view", "expected"), [
    (View.AWS, {INFER_S3, INFER_DDB}),
    (View.CLUSTER, {API1_DB, API2_DB}),
    (View.EXTERNAL, {API1_DNS, VISITOR_API1}),
    (None, {API1_DB, API2_DB, INFER_S3, INFER_DDB, API1_DNS, VISITOR_API1}),
])
def test_views(loaded: DuckDBStore, view: View | None, expected: set[tuple[str, str]]):
    rows = loaded.flow_table(FlowFilter(), view)
    assert set(ends(rows)) == expected
    assert len(rows) == len(expected), "both agents' rows of a connection make one flow row"


@pytest.mark.parametrize(("by", "expected"), [
    (TopBy.BYTES, [INFER_S3, VISITOR_API1, API2_DB, API1_DB, INFER_DDB, API1_DNS]),
    # 14 retransmissions each: the tie goes to the larger flow.
    (TopBy.RETRANSMISSIONS, [INFER_S3, API1_DB, API2_DB, VISITOR_API1, INFER_DDB, API1_DNS]),
    (TopBy.TIMEOUTS, [API1_DNS, API1_DB, INFER_S3, VISITOR_API1, API2_DB, INFER_DDB]),
    (TopBy.FAILED, [INFER_DDB, API1_DB, INFER_S3, VISITOR_API1, API2_DB, API1_DNS]),
    # Flows without an RTT sample come last.
    (TopBy.RTT, [INFER_S3, API1_DB, VISITOR_API1, API2_DB, INFER_DDB, API1_DNS]),
])
def test_top_by(loaded: DuckDBStore, by: TopBy, expected: list[tuple[str, str]]):
    rows = loaded.flow_table(FlowFilter(), by=by, limit=10)
    assert ends(rows) == expected
    assert sorted(rows, key=lambda r: order_key(r, by)) == rows, "the engine ranks as analysis.views says"
    assert ends(loaded.flow_table(FlowFilter(), by=by, limit=2)) == expected[:2]


def test_top_by_within_a_view(loaded: DuckDBStore):
    assert ends(loaded.flow_table(FlowFilter(), View.CLUSTER, TopBy.RETRANSMISSIONS)) == [API1_DB, API2_DB]
    assert ends(loaded.flow_table(FlowFilter(), View.AWS, TopBy.FAILED, limit=1)) == [INFER_DDB]


def test_a_row_merges_both_agents_reports(loaded: DuckDBStore):
    row = next(r for r in loaded.flow_table(FlowFilter(), View.CLUSTER) if ends([r]) == [API1_DB])
    assert row == FlowRow(
        client=Endpoint("10.0.1.1", "api-1", "shop", "api", "api", "n1", "a", None, "us-east-1"),
        server=Endpoint("10.0.2.1", "db-1", "shop", "db", "db", "n2", "b", None, "us-east-1"),
        server_port=5432, category="INTER_AZ", bytes_to_server=200, bytes_to_client=2000,
        retransmitted_segments=14, rto=2, received_out_of_order=2, connection_attempts=8, connections_failed=2,
        rtt_sum_us=18_000, rtt_samples=10, rtt_max_us=4000.0)
    s3 = next(r for r in loaded.flow_table(FlowFilter(), View.AWS) if ends([r]) == [INFER_S3])
    assert (s3.server.cloud_service, s3.server.region, s3.server.namespace) == ("S3", "us-east-1", None)


def test_filters_apply_to_the_table(loaded: DuckDBStore):
    assert set(ends(loaded.flow_table(FlowFilter(namespaces=("ml",))))) == {INFER_S3, INFER_DDB}
    assert ends(loaded.flow_table(FlowFilter(categories=("INTRA_AZ",)))) == [API2_DB]


def test_limit_is_checked(loaded: DuckDBStore):
    with pytest.raises(ValueError, match="limit"):
        loaded.flow_table(FlowFilter(), limit=0)
