"""Each finding rule and the health indicator on stored data with known numbers.

The cluster: zone a has runtime nodes a1 and a2, zone b has UI nodes b1 and b2 and a runtime
pod on b1; S3 answers from outside. Each test stores the flows of one situation and checks what
the diagnosis must say, and what it must not.
"""

from __future__ import annotations

from datetime import timedelta

import pyarrow as pa
import pytest

from flowlens.analysis.diagnose import diagnose
from flowlens.collector.enrich.inventory import Inventory
from flowlens.collector.events import EventIn, EventLog
from flowlens.collector.store.duckdb import DuckDBStore
from flowlens.model.bandwidth import BandwidthTable, default_table
from flowlens.model.records import FLOW_SCHEMA, NODE_SCHEMA
from tests.collector.rows import T0, cloud, external, flow, pod

NOW = (T0 + timedelta(minutes=10)).timestamp()
WINDOW = 300.0

UI_A = pod("ui-1", "ui", "client-ui", "node-b1", "us-east-1b", "10.2.1.11")
UI_B = pod("ui-2", "ui", "client-ui", "node-b2", "us-east-1b", "10.2.2.11")
RT_A = pod("rt-1", "sdruntime", "sdruntime", "node-a1", "us-east-1a", "10.1.1.11", service="sdruntime-service")
RT_B = pod("rt-2", "sdruntime", "sdruntime", "node-a2", "us-east-1a", "10.1.2.11", service="sdruntime-service")
RT_LOCAL = pod("rt-3", "sdruntime", "sdruntime", "node-b1", "us-east-1b", "10.2.1.20", service="sdruntime-service")
S3 = cloud("S3", "10.9.0.10")
SQS = cloud("SQS", "10.9.0.11")
NODES = [("node-a1", "us-east-1a", "g5.2xlarge", "10.1.0.11"), ("node-a2", "us-east-1a", "g5.2xlarge", "10.1.0.12"),
         ("node-b1", "us-east-1b", "m5.xlarge", "10.2.0.11"), ("node-b2", "us-east-1b", "m5.xlarge", "10.2.0.12")]


def inventory(topology_aware: bool = False) -> Inventory:
    inv = Inventory()
    objects = [{"kind": "Node", "metadata": {"name": n, "labels": {"topology.kubernetes.io/zone": z,
                                                                  "node.kubernetes.io/instance-type": t}},
                "status": {"addresses": [{"type": "InternalIP", "address": ip}]}} for n, z, t, ip in NODES]
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


def traffic(client: dict, server: dict, port: int, *, lost: int = 0, rto: int = 0, minutes_before: float = 2,
            category: str = "INTRA_AZ", **counters: int) -> dict:
    """One interval of client → server: 1,000 segments each way, ``lost`` of them retransmitted."""
    base = dict(sent_bytes=100_000, received_bytes=1_000_000, sent_segments=1000, received_segments=1000,
                connection_attempts=2, connections_established=2, rtt_sum_us=2000, rtt_samples=2)
    return flow(at(minutes_before), client, server, port, category=category,
                **{**base, "retransmitted_segments": lost, "rto": rto, **counters})


def clean_cluster(minutes_before: float = 2) -> list[dict]:
    """Every pair talks, cleanly: the comparison every suspect is measured against."""
    return [traffic(UI_A, RT_LOCAL, 8080, minutes_before=minutes_before),
            traffic(UI_B, RT_LOCAL, 8080, minutes_before=minutes_before),
            traffic(UI_A, RT_A, 8080, category="INTER_AZ", minutes_before=minutes_before),
            traffic(UI_B, RT_B, 8080, category="INTER_AZ", minutes_before=minutes_before),
            traffic(RT_A, S3, 443, category="AMAZON_S3", minutes_before=minutes_before),
            traffic(RT_B, S3, 443, category="AMAZON_S3", minutes_before=minutes_before),
            traffic(RT_A, SQS, 443, category="AMAZON_SQS", minutes_before=minutes_before),
            traffic(RT_B, SQS, 443, category="AMAZON_SQS", minutes_before=minutes_before)]


def replace(rows: list[dict], *changed: dict) -> list[dict]:
    """The rows with those of the same (client, server, port) swapped for ``changed``."""
    def key(row: dict) -> tuple:
        return row["local_ip"], row["remote_ip"], row["server_port"]
    swapped = {key(row): row for row in changed}
    return [swapped.get(key(row), row) for row in rows] + [r for r in changed if key(r) not in {key(x) for x in rows}]


def run(rows: list[dict], nodes: list[dict] | None = None, events: EventLog | None = None,
        window: float = WINDOW):
    return diagnose(store_with(rows, nodes), inventory(), events or EventLog(), window, now=NOW,
                    bandwidth=BandwidthTable({t: g / 100 for t, g in default_table().gbps.items()}))


def kinds(result) -> list[str]:
    return sorted(f.kind for f in result.findings)


def test_no_fault_no_finding_and_health_zero():
    result = run(clean_cluster())
    assert kinds(result) == ["cross_zone_traffic"] and result.health == 0


def test_a_few_stray_retransmissions_are_not_a_fault():
    result = run(replace(clean_cluster(), traffic(UI_A, RT_A, 8080, lost=4, category="INTER_AZ"),
                         traffic(RT_B, S3, 443, lost=3, rto=1, category="AMAZON_S3")))
    assert kinds(result) == ["cross_zone_traffic"] and result.health == 0


def test_loss_on_one_node_is_that_node_not_the_network():
    """Every flow of node a1 loses 5%, to every peer; the other nodes are clean."""
    rows = replace(clean_cluster(), traffic(UI_A, RT_A, 8080, lost=50, category="INTER_AZ"),
                   traffic(RT_A, S3, 443, lost=50, category="AMAZON_S3"),
                   traffic(RT_A, SQS, 443, lost=50, category="AMAZON_SQS"))
    result = run(rows)
    assert result.health == 0
    found = [f for f in result.findings if f.kind.endswith("degradation")]
    assert [(f.kind, f.evidence["suspect"]) for f in found] == [("node_degradation", "node node-a1")], \
        "one finding for one cause"
    assert set(found[0].where["paths"]) == {"us-east-1a ↔ us-east-1b", "us-east-1a → S3 (us-east-1)",
                                            "us-east-1a → SQS (us-east-1)"}
    assert found[0].evidence["loss_rate"] == pytest.approx(150 / 6000)


def test_a_node_whose_only_peer_is_one_pod_is_still_the_node():
    """ui pods on b1 and b2 both call rt-1 on node a1, which loses; rt-1's other traffic is clean."""
    rows = replace(clean_cluster(), traffic(UI_A, RT_A, 8080, lost=60, category="INTER_AZ"),
                   traffic(UI_B, RT_A, 8080, lost=60, category="INTER_AZ"),
                   traffic(RT_A, S3, 443, lost=60, category="AMAZON_S3"))
    found = [f for f in run(rows).findings if f.kind.endswith("degradation")]
    assert [f.evidence["suspect"] for f in found] == ["node node-a1"]


def test_a_node_with_many_small_clean_flows_is_still_the_node():
    """Node b1 loses on every flow big enough to show it (to the runtime pod beside it, in its
    own zone); its dozens of small flows (health checks, DNS) carry too few segments to say
    anything and must not make the zone's own network look worse than the node."""
    small = [traffic(UI_A, pod(f"probe-{i}", "ops", "probe", "node-b1", "us-east-1b", f"10.2.1.{100 + i}"), 9000,
                     sent_segments=4, received_segments=4) for i in range(30)]
    rows = replace(clean_cluster(), traffic(UI_A, RT_LOCAL, 8080, lost=60), traffic(UI_B, RT_LOCAL, 8080, lost=50),
                   traffic(UI_A, RT_A, 8080, lost=60, category="INTER_AZ"), *small)
    found = [f for f in run(rows).findings if f.kind.endswith("degradation")]
    assert [(f.kind, f.evidence["suspect"]) for f in found] == [("node_degradation", "node node-b1")]


def test_a_router_dropping_everything_through_it_is_one_network_finding():
    """Every flow between nodes loses (intra-zone ones too: they cross the router); only the flow
    inside node b1 is clean. Each node alone looks as bad as the network, but one cause, the
    network, explains all of them."""
    rows = [traffic(UI_A, RT_LOCAL, 8080), traffic(UI_B, RT_LOCAL, 8080, lost=40),
            traffic(UI_A, RT_A, 8080, lost=60, category="INTER_AZ"),
            traffic(UI_B, RT_B, 8080, lost=50, category="INTER_AZ"),
            traffic(RT_A, S3, 443, lost=90, category="AMAZON_S3"),
            traffic(RT_B, S3, 443, lost=70, category="AMAZON_S3"),
            traffic(RT_A, SQS, 443, lost=30, category="AMAZON_SQS"),
            traffic(RT_B, SQS, 443, lost=20, category="AMAZON_SQS")]
    result = run(rows)
    found = [f for f in result.findings if f.kind.endswith("degradation")]
    assert [(f.kind, f.severity) for f in found] == [("network_degradation", "critical")]
    assert found[0].evidence["degraded_flows"] == 7 and result.health == 1


def test_a_router_under_the_only_busy_workload_is_still_the_network():
    """Only sdruntime talks across the router (the UI calls it, it calls S3 and SQS) and every
    one of those flows loses; the requests coming in from outside to the UI lose too. The
    workload explains its own flows, but nothing clean beside it says the network is fine, and
    the incoming requests cross the same router: the network."""
    api = external("10.9.0.50")
    rows = [traffic(UI_B, RT_LOCAL, 8080, lost=40), traffic(RT_A, S3, 443, lost=90, category="AMAZON_S3"),
            traffic(RT_LOCAL, S3, 443, lost=70, category="AMAZON_S3"),
            traffic(RT_A, SQS, 443, lost=30, category="AMAZON_SQS"),
            traffic(api, UI_B, 8000, lost=30, category="UNCLASSIFIED", seen_by="server"),
            traffic(api, UI_A, 8000, lost=25, category="UNCLASSIFIED", seen_by="server")]
    result = run(rows)
    found = [f for f in result.findings if f.kind.endswith("degradation")]
    assert [(f.kind, f.severity) for f in found] == [("network_degradation", "critical")]
    assert "internet → us-east-1b" in found[0].where["paths"] and result.health == 1
    # Without the incoming requests there is nothing to compare the workload with: still the network.
    found = [f for f in run(rows[:4]).findings if f.kind.endswith("degradation")]
    assert [f.kind for f in found] == ["network_degradation"]


def test_a_lossy_cluster_of_one_node_is_reported_without_blaming_the_network():
    """Everything runs on node b1 and loses: nothing to compare it with, so a warning that says
    so, and health 0."""
    rows = [traffic(UI_A, S3, 443, lost=60, category="AMAZON_S3"), traffic(RT_LOCAL, S3, 443, lost=50,
                                                                             category="AMAZON_S3")]
    result = run(rows)
    found = [f for f in result.findings if f.kind.endswith("degradation")]
    assert [(f.kind, f.severity, f.evidence["independent"]) for f in found] == [("network_degradation", "warning",
                                                                                  False)]
    assert result.health == 0


def test_loss_on_a_whole_zone_is_that_zone():
    """Everything in or out of zone b loses, on both its nodes; zone a's own traffic is clean.
    Node b1 alone carries most of the losses and looks as bad as the zone, but only the zone
    explains b2's too: one finding, on the zone."""
    rows = [traffic(UI_A, RT_A, 8080, lost=60, category="INTER_AZ"), traffic(RT_LOCAL, S3, 443, lost=90,
                                                                             category="AMAZON_S3"),
            traffic(UI_B, RT_LOCAL, 8080, lost=40), traffic(UI_B, RT_B, 8080, lost=30, category="INTER_AZ"),
            traffic(RT_A, S3, 443, category="AMAZON_S3"), traffic(RT_B, S3, 443, category="AMAZON_S3"),
            traffic(RT_A, SQS, 443, category="AMAZON_SQS"), traffic(RT_B, SQS, 443, category="AMAZON_SQS")]
    result = run(rows)
    found = [f for f in result.findings if f.kind.endswith("degradation")]
    assert [(f.kind, f.evidence["suspect"], f.severity) for f in found] == [
        ("network_degradation", "zone us-east-1b", "critical")]
    assert found[0].evidence["degraded_flows"] == 4 and result.health == 1


def test_two_lossy_nodes_at_once_are_two_nodes_not_the_network():
    """Nodes a1 and b2 both lose on every flow; a2 and b1 talk cleanly on the same paths."""
    rows = replace(clean_cluster(), traffic(UI_A, RT_A, 8080, lost=50, category="INTER_AZ"),
                   traffic(RT_A, S3, 443, lost=50, category="AMAZON_S3"),
                   traffic(RT_A, SQS, 443, lost=50, category="AMAZON_SQS"),
                   traffic(UI_B, RT_LOCAL, 8080, lost=40), traffic(UI_B, RT_B, 8080, lost=40, category="INTER_AZ"))
    result = run(rows)
    found = [f for f in result.findings if f.kind.endswith("degradation")]
    assert sorted(f.evidence["suspect"] for f in found) == ["node node-a1", "node node-b2"]
    assert result.health == 0


def test_a_slow_remote_is_the_remote():
    rows = replace(clean_cluster(), traffic(RT_A, S3, 443, lost=80, category="AMAZON_S3"),
                   traffic(RT_B, S3, 443, lost=90, category="AMAZON_S3"))
    result = run(rows)
    found = [f for f in result.findings if f.kind.endswith("degradation")]
    assert [(f.kind, f.evidence["suspect"]) for f in found] == [("remote_degradation", "remote S3 (us-east-1)")]
    assert result.health == 0


def test_a_throttled_remote_is_found_by_its_rtt_against_the_hour_before():
    """S3 answers both runtime pods 60 ms late, where it answered in 0.2 ms the hour before;
    nothing is lost. The other services and the cluster are as fast as ever."""
    before = [replace(clean_cluster(minutes_before=m), *(
        traffic(rt, S3, 443, category="AMAZON_S3", minutes_before=m, rtt_sum_us=400, rtt_samples=2)
        for rt in (RT_A, RT_B))) for m in (40, 20)]
    now = [traffic(rt, S3, 443, category="AMAZON_S3", rtt_sum_us=120_000, rtt_samples=2) for rt in (RT_A, RT_B)]
    rows = [*before[0], *before[1], *replace(clean_cluster(), *now)]
    result = run(rows)
    found = [f for f in result.findings if f.kind.endswith("degradation")]
    assert [(f.kind, f.evidence["suspect"]) for f in found] == [("remote_degradation", "remote S3 (us-east-1)")]
    assert (found[0].evidence["rtt_ms"], found[0].evidence["usual_rtt_ms"], found[0].evidence["slow_flows"]) == \
        (60.0, 0.2, 2)
    assert "RTT 60 ms against 0.2 ms usually" in found[0].title and result.health == 0


def test_a_throttled_remote_under_a_bulk_download_is_the_remote_not_its_clients_nodes():
    """What the lab shows when S3 is throttled while a new pod downloads its weights: the
    download's own RTT hardly moves (its requests go out one at a time), the two other runtime
    pods' small S3 calls, one in each zone, wait 200 ms behind it; their SQS calls, of a few dozen segments each,
    stay fast. Neither node is the suspect: S3 is."""
    loader = pod("rt-new", "sdruntime", "sdruntime", "node-b2", "us-east-1b", "10.2.2.30")
    small = dict(sent_segments=40, received_segments=40, rtt_samples=2)
    before = [traffic(rt, S3, 443, category="AMAZON_S3", minutes_before=30, rtt_sum_us=400, rtt_samples=2)
              for rt in (RT_A, RT_LOCAL)]
    rows = [*before, traffic(RT_A, S3, 443, category="AMAZON_S3", rtt_sum_us=400_000, rtt_samples=2),
            traffic(RT_LOCAL, S3, 443, category="AMAZON_S3", rtt_sum_us=420_000, rtt_samples=2),
            traffic(loader, S3, 443, category="AMAZON_S3", rtt_sum_us=10_000, rtt_samples=2,
                    received_segments=8000),
            *(traffic(rt, SQS, 443, category="AMAZON_SQS", rtt_sum_us=80, **small)
              for rt in (RT_A, RT_LOCAL, loader))]
    found = [f for f in run(rows).findings if f.kind.endswith("degradation")]
    assert [(f.kind, f.evidence["suspect"]) for f in found] == [("remote_degradation", "remote S3 (us-east-1)")]
    assert found[0].evidence["degraded_share"] == pytest.approx(2 / 3, abs=0.001)


def test_a_busy_server_within_delayed_ack_time_is_not_a_slow_path():
    """The runtime answers 30 ms later than it used to (a busy pod: requests' ACKs ride on the
    late answers): not the network's doing, so no finding."""
    before = replace(clean_cluster(minutes_before=30), *(
        traffic(ui, rt, 8080, category=c, minutes_before=30, rtt_sum_us=400, rtt_samples=2)
        for ui, rt, c in ((UI_A, RT_LOCAL, "INTRA_AZ"), (UI_B, RT_LOCAL, "INTRA_AZ"))))
    now = [traffic(ui, RT_LOCAL, 8080, rtt_sum_us=60_000, rtt_samples=2) for ui in (UI_A, UI_B)]
    result = run([*before, *replace(clean_cluster(), *now)])
    assert not [f for f in result.findings if f.kind.endswith("degradation")]


def test_loss_between_zones_on_independent_nodes_is_the_network():
    rows = replace(clean_cluster(), traffic(UI_A, RT_A, 8080, lost=60, category="INTER_AZ"),
                   traffic(UI_B, RT_B, 8080, lost=70, category="INTER_AZ"))
    result = run(rows)
    assert result.health == 1
    found = [f for f in result.findings if f.kind.endswith("degradation")]
    assert [(f.kind, f.severity) for f in found] == [("network_degradation", "critical")]
    assert found[0].where["paths"] == ["us-east-1a ↔ us-east-1b"]
    assert found[0].title.startswith("The network (us-east-1a ↔ us-east-1b) degrades traffic of 2 workloads on 4 nodes")
    assert next(p for p in result.paths if p.health).path == "us-east-1a ↔ us-east-1b"
    # The same losses on a node that exceeded its allowance are that node's own doing.
    explained = run(rows, [node_row("node-a1", 50), node_row("node-a2", 40)])
    assert explained.health == 0 and "network_degradation" not in kinds(explained)


def test_a_stray_lossy_flow_elsewhere_is_not_folded_into_the_fault():
    """Loss between the zones, and one S3 flow with 6 lost segments of 600: that flow alone is no
    fault, and must not widen the zone pair's finding to the whole network."""
    rows = replace(clean_cluster(), traffic(UI_A, RT_A, 8080, lost=60, category="INTER_AZ"),
                   traffic(UI_B, RT_B, 8080, lost=70, category="INTER_AZ"),
                   traffic(RT_B, S3, 443, lost=6, sent_segments=300, received_segments=300, category="AMAZON_S3"))
    found = [f for f in run(rows).findings if f.kind.endswith("degradation")]
    assert [(f.kind, f.where["paths"]) for f in found] == [("network_degradation", ["us-east-1a ↔ us-east-1b"])]


def test_loss_on_one_workload_everywhere_is_the_workload():
    rows = replace(clean_cluster(), traffic(UI_A, RT_A, 8080, lost=60, category="INTER_AZ"),
                   traffic(UI_B, RT_B, 8080, lost=60, category="INTER_AZ"),
                   traffic(UI_A, RT_LOCAL, 8080, lost=60), traffic(UI_B, RT_LOCAL, 8080, lost=60))
    result = run(rows)
    found = [f for f in result.findings if f.kind.endswith("degradation")]
    assert [(f.kind, f.evidence["suspect"]) for f in found] == [("workload_degradation", "workload ui/client-ui")]
    assert result.health == 0


def test_timeouts_are_blocked_connections_and_their_losses_are_the_block():
    blocked = replace(clean_cluster(), traffic(UI_A, RT_A, 8080, lost=40, rto=6, category="INTER_AZ",
                                               connection_attempts=5, connections_established=1,
                                               connections_failed=4, connections_timed_out=4))
    result = run(blocked)
    assert kinds(result) == ["blocked_connections", "cross_zone_traffic"], "one finding for the block"
    finding = next(f for f in result.findings if f.kind == "blocked_connections")
    assert finding.where["workloads"] == ["ui/client-ui", "sdruntime/sdruntime"]
    assert (finding.evidence["timed_out"], finding.evidence["attempts"]) == (4, 11), "all attempts of the pair"


def test_refusals_at_a_cold_start_are_never_a_block():
    """38 refused at once, plus a retransmission on the same flow: no endpoints, not a block."""
    service_only = {**RT_A, "pod": None, "workload": None, "node": None, "zone": None, "ip": "10.96.0.10"}
    rows = [*clean_cluster(), flow(at(2), UI_A, service_only, 8080, category="UNCLASSIFIED", connection_attempts=40,
                                   connections_established=2, connections_failed=38, connections_refused=38,
                                   retransmitted_segments=1, sent_segments=90, received_segments=80)]
    result = run(rows)
    assert "no_ready_endpoints" in kinds(result) and "blocked_connections" not in kinds(result)
    assert next(f for f in result.findings if f.kind == "no_ready_endpoints").evidence["refused"] == 38


def test_flowlens_own_traffic_is_never_a_workloads_loss():
    rows = [*clean_cluster(), traffic(RT_A, {**S3, "cloud_service": None, "region": None, "ip": "10.1.0.1"}, 9102,
                                      lost=300, rto=5, category="FLOWLENS")]
    assert kinds(run(rows)) == ["cross_zone_traffic"]


def test_a_fault_in_the_last_seconds_of_a_long_window_is_found():
    """An hour of clean traffic, then ten seconds of node a1 losing everything."""
    rows = [row for minutes in range(59, 0, -1) for row in clean_cluster(minutes)]
    t = at(0.15)  # the last ten seconds
    rows += [flow(t, UI_A, RT_A, 8080, category="INTER_AZ", sent_segments=500, received_segments=500,
                  retransmitted_segments=40, sent_bytes=1000, received_bytes=1000),
             flow(t, RT_A, S3, 443, category="AMAZON_S3", sent_segments=500, received_segments=500,
                  retransmitted_segments=40, sent_bytes=1000, received_bytes=1000)]
    result = run(rows, window=3600)
    found = [f for f in result.findings if f.kind.endswith("degradation")]
    assert [f.evidence["suspect"] for f in found] == ["node node-a1"]


def test_loss_rates_are_bounded_by_one():
    rows = replace(clean_cluster(), traffic(UI_A, RT_A, 8080, lost=5000, rto=9, category="INTER_AZ",
                                            sent_segments=100, received_segments=100))
    result = run(rows)
    assert all(f.evidence.get("loss_rate", 0) <= 1 for f in result.findings)
    assert all(p.evidence["loss_rate"] <= 1 for p in result.paths)


def test_allowance_exceeded_during_model_load():
    rows = [*clean_cluster(), flow(at(2), RT_A, S3, 4566, category="AMAZON_S3", sent_bytes=2000,
                                   received_bytes=268_435_456, received_out_of_order=4000, received_segments=185_000,
                                   sent_segments=3000, connection_attempts=64, connections_established=64)]
    events = EventLog()
    events.add([EventIn(kind="model_load", pod="rt-1", namespace="sdruntime", node="node-a1", start=NOW - 150,
                        end=NOW - 126, bytes=268_435_456)])
    result = run(rows, [node_row("node-a1", 1311)], events)
    assert kinds(result) == ["bandwidth_allowance_exceeded", "cross_zone_traffic"]
    finding = next(f for f in result.findings if f.kind == "bandwidth_allowance_exceeded")
    assert finding.where["nodes"] == ["node-a1"] and finding.where["pods"] == ["rt-1"]
    assert finding.evidence["bw_in_allowance_exceeded"] == 1311
    assert finding.evidence["flows"][0]["received_out_of_order"] == 4000
    assert finding.impact["seconds_at_allowance"] == pytest.approx(21.5, abs=0.1)  # 256 MiB at 100 Mbit/s
    assert finding.impact["seconds_on_g5.4xlarge"] == pytest.approx(8.6, abs=0.1)
    assert "g5.4xlarge" in finding.recommendation
    assert result.health == 0, "the node's own allowance explains the losses"


@pytest.mark.parametrize(("s3_lost", "other_lost", "rtt_us", "cause"), [
    (0, 0, 1000, "pod"),  # the network delivered: the loader is slow
    (3000, 0, 1000, "path"),  # only this pod's S3 flow loses
    (3000, 3000, 1000, "remote"),  # every client's S3 flow loses
    (0, 0, 9000, "path"),  # its RTT is nine times the others'
])
def test_every_slow_model_load_is_explained(s3_lost: int, other_lost: int, rtt_us: int, cause: str):
    """256 MiB in 87 s where the node allows 100 Mbit/s (21.5 s): slow; the flows say why."""
    load = dict(sent_bytes=2000, received_bytes=268_435_456, sent_segments=3000, received_segments=185_000,
                connection_attempts=16, connections_established=16)
    rows = replace(clean_cluster(), flow(at(2), RT_A, S3, 443, category="AMAZON_S3", received_out_of_order=s3_lost,
                                         rtt_sum_us=rtt_us * 10, rtt_samples=10, **load),
                   flow(at(2), RT_B, S3, 443, category="AMAZON_S3", received_out_of_order=other_lost,
                        rtt_sum_us=10_000, rtt_samples=10, **load))
    events = EventLog()
    events.add([EventIn(kind="model_load", pod="rt-1", namespace="sdruntime", node="node-a1", start=NOW - 200,
                        end=NOW - 113, bytes=268_435_456)])
    result = run(rows, events=events)
    slow = [f for f in result.findings if f.kind == "slow_model_load"]
    assert [f.evidence["cause"] for f in slow] == [cause]
    item = slow[0].evidence["loads"][0]
    assert (item["pod"], item["seconds"], item["possible_mbit_per_s"]) == ("rt-1", 87.0, 100.0)
    assert item["achieved_mbit_per_s"] == pytest.approx(24.7, abs=0.1)
    assert item["seconds_lost"] == pytest.approx(87 - 21.5, abs=0.1)
    assert result.health == 0


def latency(value_s: float, minutes_before: float, *, workload: str = "sdruntime", metric: str = "e2e",
            requests: int = 20, node: str = "node-a1") -> EventIn:
    end = at(minutes_before).timestamp()
    return EventIn(kind="latency", namespace="sdruntime", workload=workload, node=node, start=end - 60, end=end,
                   metric=metric, value_s=value_s, count=requests)


@pytest.mark.parametrize(("lost_on_a1", "cause"), [(0, "workload"), (50, "network")])
def test_slower_inference_is_explained_by_the_network_or_not(lost_on_a1: int, cause: str):
    """End-to-end latency went from 2.0 s (the hour before) to 3.5 s. With node a1 losing on
    every flow, the node's finding is the cause; with every flow clean, the server is."""
    events = EventLog()
    events.add([latency(2.0, 40), latency(2.1, 30, requests=10), latency(3.5, 2), latency(0.9, 2, metric="ttft"),
                latency(0.85, 30, metric="ttft")])
    rows = clean_cluster()
    if lost_on_a1:
        rows = replace(rows, traffic(UI_A, RT_A, 8080, lost=50, category="INTER_AZ"),
                       traffic(RT_A, S3, 443, lost=50, category="AMAZON_S3"),
                       traffic(RT_A, SQS, 443, lost=50, category="AMAZON_SQS"))
    slow = [f for f in run(rows, events=events).findings if f.kind == "slow_inference"]
    assert [f.evidence["cause"] for f in slow] == [cause]
    assert slow[0].evidence["metrics"] == [{"metric": "e2e", "seconds": 3.5, "usual_seconds": 2.033,
                                            "requests": 20}]  # (2.0×20 + 2.1×10) / 30; TTFT held
    if cause == "network":
        assert slow[0].evidence["explained_by"] == ["node_degradation"]
    else:
        assert slow[0].evidence["loss_rate"] == 0.0 and "server itself" in slow[0].title


def test_latency_without_history_or_within_the_usual_says_nothing():
    events = EventLog()
    events.add([latency(3.5, 2), latency(0.5, 2, workload="other"), latency(0.45, 30, workload="other")])
    assert not [f for f in run(clean_cluster(), events=events).findings if f.kind == "slow_inference"]


def test_totals_are_over_every_flow_when_flows_are_read_one_by_one_only_in_part(monkeypatch):
    """More flows than the diagnosis reads one by one: zone totals, the inter-AZ share and the
    paths' numbers still sum every flow (the store groups them), and the answer says what was cut."""
    from flowlens.analysis import context
    monkeypatch.setattr(context, "MAX_ROWS", 5)
    clients = [pod(f"ui-{i}", "ui", "client-ui", "node-b1", "us-east-1b", f"10.2.1.{100 + i}") for i in range(30)]
    rows = [traffic(c, RT_A, 8080, category="INTER_AZ") for c in clients]
    result = run(rows)
    cross = next(f for f in result.findings if f.kind == "cross_zone_traffic")
    assert cross.evidence["inter_az_bytes"] == cross.evidence["total_bytes"] == 30 * 1_100_000
    path = next(p for p in result.paths if p.path == "us-east-1a ↔ us-east-1b")
    assert (path.evidence["segments"], path.evidence["lost_segments"], path.evidence["rto"]) == (30 * 2000, 0, 0)
    assert path.evidence["flows"] == 5, "flows counted among those read one by one"
    assert any(note.startswith("more than 5 flows between") for note in result.notes)
