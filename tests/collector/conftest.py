"""A small cluster with known traffic, stored in an in-memory DuckDB store."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from flowlens.collector.store.duckdb import DuckDBStore
from tests.collector.rows import STEP, T0, both, cloud, external, flow, flows_table, node_row, nodes_table, pod

API1 = pod("api-1", "shop", "api", "n1", "a", "10.0.1.1", service="api")
API2 = pod("api-2", "shop", "api", "n2", "b", "10.0.1.2", service="api")
DB1 = pod("db-1", "shop", "db", "n2", "b", "10.0.2.1", service="db")
INFER = pod("infer-1", "ml", "infer", "n3", "a", "10.0.3.1")
S3 = cloud("S3", "52.216.0.1")
DDB = cloud("DYNAMODB", "3.218.0.1")
DNS = external("8.8.8.8")
VISITOR = external("203.0.113.9")


@pytest.fixture
def store() -> Iterator[DuckDBStore]:
    with DuckDBStore(":memory:") as s:
        yield s


def scenario_rows() -> list[dict[str, Any]]:
    """Two intervals (T0, T0 + 5 s) of known traffic; the tests assert sums of these numbers."""
    rows: list[dict[str, Any]] = []
    for i, t in enumerate((T0, T0 + STEP)):
        # api-1 → db-1, across zones, both agents report. Per interval: 100 B up, 1000 B down;
        # the client retransmits 2 and times out once, the server retransmits 5.
        rows += both(t, API1, DB1, 5432, to_server=100, to_client=1000, category="INTER_AZ",
                     client_counters={"retransmitted_segments": 2, "rto": 1, "rtt_sum_us": 3000, "rtt_samples": 3,
                                      "connection_attempts": 4, "connections_failed": 1,
                                      "received_out_of_order": 1},
                     server_counters={"retransmitted_segments": 5, "rtt_sum_us": 4000 * (i + 1), "rtt_samples": 2})
        # api-2 → db-1 in zone b.
        rows += both(t, API2, DB1, 5432, to_server=200, to_client=2000, category="INTRA_AZ",
                     server_counters={"retransmitted_segments": 1})
        # infer-1 reads from S3 and DynamoDB (only the client side has an agent).
        rows.append(flow(t, INFER, S3, 443, category="AMAZON_S3", sent_bytes=50, received_bytes=1_000_000,
                         retransmitted_segments=7, rtt_sum_us=40_000, rtt_samples=4))
        rows.append(flow(t, INFER, DDB, 443, category="AMAZON_DYNAMODB", sent_bytes=300, received_bytes=600,
                         connection_attempts=3, connections_failed=2))
        # api-1 calls out to the internet, and a visitor calls api-1.
        rows.append(flow(t, API1, DNS, 443, category="UNCLASSIFIED", sent_bytes=10, received_bytes=20, rto=3))
        rows.append(flow(t, VISITOR, API1, 443, seen_by="server", category="UNCLASSIFIED", sent_bytes=5000,
                         received_bytes=400))
    return rows


def scenario_nodes() -> list[dict[str, Any]]:
    return [node_row(T0, "n1", pps_allowance_exceeded=3), node_row(T0 + STEP, "n1", bw_in_allowance_exceeded=2),
            node_row(T0, "n2", zone="b", bw_out_allowance_exceeded=4), node_row(T0, "n3")]


@pytest.fixture
def loaded(store: DuckDBStore) -> DuckDBStore:
    assert store.append_report("scenario", flows_table(scenario_rows()), nodes_table(scenario_nodes()))
    return store
