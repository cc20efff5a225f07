"""Agents on real traffic report to a real collector, which enriches from an inventory file:
the service map, the views and the categories, without the lab."""

from __future__ import annotations

import json
import time

from flowlens.agent.config import AgentConfig
from flowlens.agent.runtime import Agent
from flowlens.agent.sampling.sampler import Sampler
from flowlens.model.queries import FlowFilter, MapLevel, TopBy, View
from tests.conftest import NsPair
from tests.integration.conftest import RunningCollector, node, pod, write_inventory
from tests.traffic import Server, request


def test_service_map_and_views_from_real_traffic(ns_pair: NsPair, files):
    folder, inventory, ranges = files
    # a = the client pod in zone a; b = a "web" pod in zone b, and its address also plays S3 on port 9000.
    write_inventory(inventory, [
        node("node-a", "us-east-1a", "192.0.2.1"), node("node-b", "us-east-1b", "192.0.2.2"),
        pod("client-5f6b7c8d9-aaaaa", "ui", ns_pair.ip_a, "node-a", "client-5f6b7c8d9"),
        pod("web-7d9f8c6b5-bbbbb", "shop", ns_pair.ip_b, "node-b", "web-7d9f8c6b5"),
    ])
    collector = RunningCollector(folder, inventory, ranges).start()
    agent = Agent(AgentConfig(interval=1.0, node="node-a", collector=collector.url, spool_dir=str(folder / "spool")),
                  Sampler(only=(ns_pair.a, ns_pair.b)))
    agent.start()
    server = Server(ns_pair.b, ns_pair.ip_b, 8080, reply=2000).start()
    try:
        for _ in range(5):
            assert request(ns_pair.a, ns_pair.ip_b, 8080, 10_000) == 2000
        time.sleep(0.2)
        agent.run_cycle()
        agent.reporter.flush()
        flt = FlowFilter()
        smap = collector.collector.store.service_map(flt, MapLevel.WORKLOAD)
        edges = {(e.source.name, e.destination.name): e for e in smap.edges}
        edge = edges[("client", "web")]
        assert (edge.bytes_to_destination, edge.bytes_to_source) == (50_000, 10_000)
        assert edge.category == "INTER_AZ"
        assert edge.connection_attempts == 5 and edge.connections_failed == 0
        assert {g.name for g in smap.groups} >= {"ui", "shop"}
        cluster = collector.collector.store.flow_table(flt, View.CLUSTER, TopBy.BYTES, 10)
        assert cluster and cluster[0].client.workload == "client" and cluster[0].server.workload == "web"
        assert collector.collector.store.flow_table(flt, View.AWS, TopBy.BYTES, 10) == []
    finally:
        server.stop()
        agent.close()
        collector.stop()


def test_cloud_service_flows_land_in_the_aws_view(ns_pair: NsPair, files):
    folder, inventory, ranges = files
    ranges.write_text(json.dumps({"prefixes": [{"ip_prefix": f"{ns_pair.ip_b}/32", "region": "us-east-1",
                                                "service": "S3"}]}))
    write_inventory(inventory, [node("node-a", "us-east-1a", "192.0.2.1"),
                                pod("loader-5f6b7c8d9-aaaaa", "ml", ns_pair.ip_a, "node-a", "loader-5f6b7c8d9")])
    collector = RunningCollector(folder, inventory, ranges).start()
    agent = Agent(AgentConfig(interval=1.0, node="node-a", collector=collector.url, spool_dir=str(folder / "spool")),
                  Sampler(only=(ns_pair.a,)))
    agent.start()
    weights = 3_000_000
    server = Server(ns_pair.b, ns_pair.ip_b, 9000, reply=weights).start()
    try:
        assert request(ns_pair.a, ns_pair.ip_b, 9000, 300) == weights
        time.sleep(0.2)
        agent.run_cycle()
        agent.reporter.flush()
        rows = collector.collector.store.flow_table(FlowFilter(), View.AWS, TopBy.BYTES, 10)
        assert len(rows) == 1
        row = rows[0]
        assert (row.server.cloud_service, row.category, row.bytes_to_client) == ("S3", "AMAZON_S3", weights)
        assert row.client.workload == "loader"
    finally:
        server.stop()
        agent.close()
        collector.stop()


def test_a_connection_between_two_watched_namespaces_counts_once_without_an_inventory(ns_pair: NsPair, files):
    """`flowlens up` on a host: no Kubernetes, both ends watched by the same agent."""
    folder, inventory, ranges = files
    collector = RunningCollector(folder, inventory, ranges).start()
    agent = Agent(AgentConfig(interval=1.0, node="laptop", collector=collector.url, spool_dir=str(folder / "spool")),
                  Sampler(only=(ns_pair.a, ns_pair.b)))
    agent.start()
    server = Server(ns_pair.b, ns_pair.ip_b, 8080, reply=2000).start()
    try:
        for _ in range(5):
            assert request(ns_pair.a, ns_pair.ip_b, 8080, 10_000) == 2000
        time.sleep(0.2)
        agent.run_cycle()
        agent.reporter.flush()
        store, flt = collector.collector.store, FlowFilter()
        rows = store.flow_table(flt, View.CLUSTER, TopBy.BYTES, 10)
        assert [(r.bytes_to_server, r.bytes_to_client, r.connection_attempts) for r in rows] == [(50_000, 10_000, 5)]
        assert rows[0].retransmitted_segments == 0
        edges = store.service_map(flt, MapLevel.WORKLOAD).edges
        assert sum(e.bytes_to_destination for e in edges) == 50_000
        assert sum(e.bytes_to_source for e in edges) == 10_000
    finally:
        server.stop()
        agent.close()
        collector.stop()
