"""Service map: exact edge sums, one count per connection, grouping, levels and filters."""

from __future__ import annotations

from flowlens.collector.store.duckdb import DuckDBStore
from flowlens.model.queries import Edge, FlowFilter, MapLevel, MapNode, NodeKind, ServiceMap
from tests.collector.conftest import API1, API2, DB1
from tests.collector.rows import STEP, T0, both, flow, flows_table, host

API = MapNode(NodeKind.WORKLOAD, "api", "shop")
DB = MapNode(NodeKind.WORKLOAD, "db", "shop")
INFER = MapNode(NodeKind.WORKLOAD, "infer", "ml")
S3 = MapNode(NodeKind.CLOUD, "S3", region="us-east-1")
DDB = MapNode(NodeKind.CLOUD, "DYNAMODB", region="us-east-1")
DNS = MapNode(NodeKind.EXTERNAL, "8.8.8.8")
VISITOR = MapNode(NodeKind.EXTERNAL, "203.0.113.9")


def edge(m: ServiceMap, source: MapNode, destination: MapNode, category: str) -> Edge:
    found = [e for e in m.edges if (e.source, e.destination, e.category) == (source, destination, category)]
    assert len(found) == 1, f"{source} → {destination} {category}: {found}"
    return found[0]


def pairs(m: ServiceMap) -> set[tuple[str, str, str]]:
    return {(e.source.name, e.destination.name, e.category) for e in m.edges}


def test_an_edge_counts_each_connection_once_and_both_ends_losses(loaded: DuckDBStore):
    e = edge(loaded.service_map(FlowFilter()), API, DB, "INTER_AZ")
    # Both agents reported each interval: bytes once, from the client's row.
    assert (e.bytes_to_destination, e.bytes_to_source) == (200, 2000)
    # Each end retransmits its own data: 2 + 5 per interval.
    assert e.retransmitted_segments == 14
    assert (e.rto, e.received_out_of_order) == (2, 2)
    assert (e.connection_attempts, e.connections_failed) == (8, 2)
    # RTT samples of both ends: client 3000/3 twice, server 4000/2 then 8000/2.
    assert (e.rtt_sum_us, e.rtt_samples) == (18_000, 10)
    assert e.rtt_mean_us == 1800.0
    assert e.rtt_max_us == 4000.0
    assert e.flows == 1


def test_edges_to_cloud_services_and_external_peers(loaded: DuckDBStore):
    m = loaded.service_map(FlowFilter())
    s3 = edge(m, INFER, S3, "AMAZON_S3")
    assert (s3.bytes_to_destination, s3.bytes_to_source, s3.retransmitted_segments) == (100, 2_000_000, 14)
    assert (s3.rtt_mean_us, s3.rtt_max_us) == (10_000.0, 10_000.0)
    ddb = edge(m, INFER, DDB, "AMAZON_DYNAMODB")
    assert (ddb.total_bytes, ddb.connection_attempts, ddb.connections_failed) == (1800, 6, 4)
    assert ddb.rtt_mean_us is None and ddb.rtt_max_us is None
    out = edge(m, API, DNS, "UNCLASSIFIED")
    assert (out.bytes_to_destination, out.bytes_to_source, out.rto) == (20, 40, 6)
    # Inbound from the internet: only api-1's agent saw it (as server); it points visitor → api.
    inbound = edge(m, VISITOR, API, "UNCLASSIFIED")
    assert (inbound.bytes_to_destination, inbound.bytes_to_source) == (800, 10_000)
    assert len(m.edges) == 6


def test_all_namespaces_at_once_grouped_by_namespace(loaded: DuckDBStore):
    m = loaded.service_map(FlowFilter())
    groups = {(g.kind, g.name): {n.name for n in g.nodes} for g in m.groups}
    assert groups == {
        ("namespace", "shop"): {"api", "db"},
        ("namespace", "ml"): {"infer"},
        ("cloud", "us-east-1"): {"S3", "DYNAMODB"},
        ("external", ""): {"8.8.8.8", "203.0.113.9"},
    }
    assert set(m.nodes) == {API, DB, INFER, S3, DDB, DNS, VISITOR}


def test_levels(loaded: DuckDBStore):
    pod = loaded.service_map(FlowFilter(), MapLevel.POD)
    assert edge(pod, MapNode(NodeKind.POD, "api-1", "shop"), MapNode(NodeKind.POD, "db-1", "shop"),
                "INTER_AZ").bytes_to_destination == 200
    assert edge(pod, MapNode(NodeKind.POD, "api-2", "shop"), MapNode(NodeKind.POD, "db-1", "shop"),
                "INTRA_AZ").bytes_to_destination == 400

    ns = loaded.service_map(FlowFilter(), MapLevel.NAMESPACE)
    shop = MapNode(NodeKind.NAMESPACE, "shop", "shop")
    outside = MapNode(NodeKind.EXTERNAL, "external")  # the overview folds every external address into one
    assert pairs(ns) == {("shop", "shop", "INTER_AZ"), ("shop", "shop", "INTRA_AZ"), ("ml", "S3", "AMAZON_S3"),
                         ("ml", "DYNAMODB", "AMAZON_DYNAMODB"), ("shop", "external", "UNCLASSIFIED"),
                         ("external", "shop", "UNCLASSIFIED")}
    assert edge(ns, outside, shop, "UNCLASSIFIED").bytes_to_source == 10_000

    zone = loaded.service_map(FlowFilter(), MapLevel.ZONE)
    a, b = MapNode(NodeKind.ZONE, "a"), MapNode(NodeKind.ZONE, "b")
    assert edge(zone, a, b, "INTER_AZ").retransmitted_segments == 14
    assert edge(zone, b, b, "INTRA_AZ").bytes_to_source == 4000
    assert edge(zone, a, S3, "AMAZON_S3").bytes_to_source == 2_000_000


def test_namespace_filter_matches_either_end(loaded: DuckDBStore):
    assert pairs(loaded.service_map(FlowFilter(namespaces=("ml",)))) == {
        ("infer", "S3", "AMAZON_S3"), ("infer", "DYNAMODB", "AMAZON_DYNAMODB")}
    assert pairs(loaded.service_map(FlowFilter(namespaces=("shop",)))) == {
        ("api", "db", "INTER_AZ"), ("api", "db", "INTRA_AZ"), ("api", "8.8.8.8", "UNCLASSIFIED"),
        ("203.0.113.9", "api", "UNCLASSIFIED")}
    assert loaded.service_map(FlowFilter(namespaces=("nowhere",))).edges == ()


def test_category_node_and_workload_filters(loaded: DuckDBStore):
    assert pairs(loaded.service_map(FlowFilter(categories=("INTER_AZ", "AMAZON_S3")))) == {
        ("api", "db", "INTER_AZ"), ("infer", "S3", "AMAZON_S3")}
    assert pairs(loaded.service_map(FlowFilter(nodes=("n3",)))) == {
        ("infer", "S3", "AMAZON_S3"), ("infer", "DYNAMODB", "AMAZON_DYNAMODB")}
    by_db = {("api", "db", "INTER_AZ"), ("api", "db", "INTRA_AZ")}
    assert pairs(loaded.service_map(FlowFilter(workloads=("shop/db",)))) == by_db
    assert pairs(loaded.service_map(FlowFilter(workloads=("db",)))) == by_db
    assert loaded.service_map(FlowFilter(workloads=("ml/db",))).edges == ()
    # Fields combine with AND.
    assert pairs(loaded.service_map(FlowFilter(workloads=("db",), categories=("INTRA_AZ",)))) == {
        ("api", "db", "INTRA_AZ")}


def test_time_range_since_inclusive_until_exclusive(loaded: DuckDBStore):
    first = edge(loaded.service_map(FlowFilter(since=T0, until=T0 + STEP)), API, DB, "INTER_AZ")
    assert (first.bytes_to_destination, first.rtt_max_us, first.rtt_sum_us) == (100, 2000.0, 7000)
    second = edge(loaded.service_map(FlowFilter(since=T0 + STEP)), API, DB, "INTER_AZ")
    assert (second.bytes_to_destination, second.rtt_max_us, second.rtt_sum_us) == (100, 4000.0, 11_000)
    assert loaded.service_map(FlowFilter(until=T0)).edges == ()


def test_flows_are_distinct_client_server_port_triples(store: DuckDBStore):
    rows = []
    for t in (T0, T0 + STEP, T0 + 2 * STEP):
        rows += both(t, API1, DB1, 5432, to_server=1, to_client=1)
        rows += both(t, API2, DB1, 5432, to_server=1, to_client=1)
        rows += both(t, API2, DB1, 6432, to_server=1, to_client=1)
    store.append_report("r", flows_table(rows))
    e = edge(store.service_map(FlowFilter()), API, DB, "INTRA_AZ")
    assert (e.flows, e.bytes_to_destination) == (3, 9)


def test_a_host_network_end_is_its_node(store: DuckDBStore):
    node = host("n1", "a", "192.168.0.1")
    store.append_report("r", flows_table([flow(T0, node, DB1, 5432, sent_bytes=9, received_bytes=1)]))
    e = edge(store.service_map(FlowFilter()), MapNode(NodeKind.HOST, "n1"), DB, "INTRA_AZ")
    assert e.total_bytes == 10
    assert store.service_map(FlowFilter(), MapLevel.ZONE).edges[0].source == MapNode(NodeKind.ZONE, "a")
