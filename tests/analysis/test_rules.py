"""Each finding rule and the health indicator on stored data with known numbers."""

from __future__ import annotations

from datetime import timedelta

import pyarrow as pa
import pytest

from flowlens.analysis.diagnose import diagnose
from flowlens.collector.duckdb_store import DuckDBStore
from flowlens.collector.enrich.inventory import Inventory
from flowlens.collector.events import EventIn, EventLog
from flowlens.model.records import FLOW_SCHEMA, NODE_SCHEMA
from tests.collector.rows import T0, cloud, flow, pod

NOW = (T0 + timedelta(minutes=10)).timestamp()
WINDOW = 300.0

UI_A = pod("ui-1", "ui", "client-ui", "node-b", "us-east-1b", "10.2.1.11")
UI_B = pod("ui-2", "ui", "client-ui", "node-b", "us-east-1b", "10.2.1.12")
RT_A = pod("rt-1", "sdruntime", "sdruntime", "node-a1", "us-east-1a", "10.1.1.11", service="sdruntime-service")
RT_B = pod("rt-2", "sdruntime", "sdruntime", "node-a2", "us-east-1a", "10.1.2.11", service="sdruntime-service")
RT_LOCAL = pod("rt-3", "sdruntime", "sdruntime", "node-b", "us-east-1b", "10.2.1.20", service="sdruntime-service")
S3 = cloud("S3", "10.9.0.10")


def inventory(topology_aware: bool = False) -> Inventory:
    inv = Inventory()
    nodes = [("node-a1", "us-east-1a", "g5.2xlarge", "10.1.0.11"), ("node-a2", "us-east-1a", "g5.2xlarge", "10.1.0.12"),
             ("node-b", "us-east-1b", "m5.xlarge", "10.2.0.11")]
    objects = [{"kind": "Node", "metadata": {"name": n, "labels": {"topology.kubernetes.io/zone": z,
                                                                  "node.kubernetes.io/instance-type": t}},
                "status": {"addresses": [{"type": "InternalIP", "address": ip}]}} for n, z, t, ip in nodes]
    annotations = {"service.kubernetes.io/topology-mode": "Auto"} if topology_aware else {}
    objects.append({"kind": "Service", "metadata": {"name": "sdruntime-service", "namespace": "sdruntime",
                                                    "annotations": annotations}, "spec": {"clusterIP": "10.96.0.10"}})
    inv.replace_all(objects, NOW - 3600)
    return inv


def at(minutes_before_now: float):
    return T0 + timedelta(minutes=10) - timedelta(minutes=minutes_before_now)


def store_with(rows: list[dict], nodes: list[dict] | None = None) -> DuckDBStore:
    store = DuckDBStore(":memory:")
    store.append_report("test-report-1", pa.Table.from_pylist(rows, schema=FLOW_SCHEMA),
                        pa.Table.from_pylist(nodes or [], schema=NODE_SCHEMA))
    return store


def node_row(node: str, bw_in: int, minutes_before: float = 2) -> dict:
    t = at(minutes_before)
    return {"time_start": t, "time_end": t + timedelta(seconds=5), "node": node, "zone": "us-east-1a",
            "instance_type": "g5.2xlarge", "iface": "eth0", "bw_in_allowance_exceeded": bw_in,
            "bw_out_allowance_exceeded": 0, "pps_allowance_exceeded": 0, "conntrack_allowance_exceeded": 0,
            "linklocal_allowance_exceeded": 0, "rx_bytes": 0, "tx_bytes": 0, "tcp_retransmitted_segments": 0}


def healthy_traffic(minutes_before: float = 2) -> list[dict]:
    """client-ui → sdruntime within zone b, clean."""
    return [flow(at(minutes_before), UI_A, RT_LOCAL, 8080, sent_bytes=5000, received_bytes=500_000,
                 connection_attempts=5, connections_established=5)]


def kinds(store, inv=None, events=None) -> list[str]:
    result = diagnose(store, inv or inventory(), events or EventLog(), WINDOW, now=NOW, bandwidth_scale=100)
    return sorted(f.kind for f in result.findings)


def test_no_fault_no_finding_and_health_zero():
    store = store_with(healthy_traffic())
    result = diagnose(store, inventory(), EventLog(), WINDOW, now=NOW)
    assert result.findings == () and result.health == 0


def test_allowance_exceeded_during_model_load():
    rows = [*healthy_traffic(), flow(at(2), RT_A, S3, 4566, category="AMAZON_S3", sent_bytes=2000,
                                     received_bytes=268_435_456, received_out_of_order=4000, connection_attempts=64,
                                     connections_established=64)]
    events = EventLog()
    events.add([EventIn(kind="model_load", pod="rt-1", namespace="sdruntime", node="node-a1", start=NOW - 150,
                        end=NOW - 126, bytes=268_435_456)])
    result = diagnose(store_with(rows, [node_row("node-a1", 1311)]), inventory(), events, WINDOW, now=NOW,
                      bandwidth_scale=100)
    assert [f.kind for f in result.findings] == ["bandwidth_allowance_exceeded"]
    finding = result.findings[0]
    assert finding.where["nodes"] == ["node-a1"] and finding.where["pods"] == ["rt-1"]
    assert finding.evidence["bw_in_allowance_exceeded"] == 1311
    assert finding.evidence["flows"][0]["received_out_of_order"] == 4000
    assert finding.impact["seconds_at_allowance"] == pytest.approx(21.5, abs=0.1)  # 256 MiB at 100 Mbit/s
    assert finding.impact["seconds_on_g5.4xlarge"] == pytest.approx(8.6, abs=0.1)
    assert "g5.4xlarge" in finding.recommendation
    assert result.health == 0, "the node's own allowance explains the losses"


def test_cross_zone_then_topology_aware_routing_confirmed():
    rows = [flow(at(2), UI_A, RT_A, 8080, category="INTER_AZ", sent_bytes=4000, received_bytes=400_000,
                 connection_attempts=4, connections_established=4)]
    assert kinds(store_with(rows)) == ["cross_zone_traffic"]
    finding = diagnose(store_with(rows), inventory(), EventLog(), WINDOW, now=NOW).findings[0]
    assert finding.evidence["inter_az_share"] == 1.0 and finding.evidence["inter_az_bytes"] == 404_000
    assert "topology-aware routing" in finding.recommendation
    assert kinds(store_with(healthy_traffic()), inventory(topology_aware=True)) == ["topology_aware_routing_effective"]


def test_dropped_syns_are_blocked_connections_and_refusals_are_no_endpoints():
    dropped = [flow(at(2), UI_A, RT_A, 8080, category="INTER_AZ", connection_attempts=3, connections_failed=3,
                    retransmitted_segments=6, rto=6)]
    blocked = diagnose(store_with(dropped), inventory(), EventLog(), WINDOW, now=NOW)
    assert "blocked_connections" in [f.kind for f in blocked.findings]
    finding = next(f for f in blocked.findings if f.kind == "blocked_connections")
    assert finding.where["workloads"] == ["ui/client-ui", "sdruntime/sdruntime"]
    assert finding.evidence["failed"] == 3
    service_only = {**RT_A, "pod": None, "workload": None, "node": None, "zone": None, "ip": "10.96.0.10"}
    refused = [*healthy_traffic(), flow(at(2), UI_A, service_only, 8080, category="UNCLASSIFIED",
                                        connection_attempts=4, connections_failed=4)]
    assert kinds(store_with(refused)) == ["no_ready_endpoints"]


def test_loss_across_workloads_and_nodes_is_the_network():
    lossy = [flow(at(2), UI_A, RT_A, 8080, category="INTER_AZ", sent_bytes=100_000, received_bytes=10_000_000,
                  retransmitted_segments=150, received_out_of_order=200, connection_attempts=10,
                  connections_established=10),
             flow(at(2), UI_B, RT_B, 8080, category="INTER_AZ", sent_bytes=100_000, received_bytes=10_000_000,
                  retransmitted_segments=120, received_out_of_order=220, connection_attempts=10,
                  connections_established=10)]
    result = diagnose(store_with(lossy), inventory(), EventLog(), WINDOW, now=NOW)
    assert result.health == 1
    assert "network_degradation" in [f.kind for f in result.findings]
    path = next(p for p in result.paths if p.health)
    assert path.path == "us-east-1a ↔ us-east-1b"
    # The same losses on one node that exceeded its allowance are that node's own doing.
    explained = diagnose(store_with(lossy, [node_row("node-a1", 50)]), inventory(), EventLog(), WINDOW, now=NOW)
    assert explained.health == 0


def test_loss_confined_to_one_workload_is_not_the_network():
    lossy = [*healthy_traffic(), flow(at(2), UI_A, RT_A, 8080, category="INTER_AZ", sent_bytes=100_000,
                                      received_bytes=10_000_000, retransmitted_segments=300, connection_attempts=1,
                                      connections_established=1)]
    result = diagnose(store_with(lossy), inventory(), EventLog(), WINDOW, now=NOW)
    assert result.health == 0
    assert "workload_degradation" in [f.kind for f in result.findings] or result.findings
