"""Enrichment: address history, owner references, cloud ranges, categories, report decoding."""

from __future__ import annotations

import gzip
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowlens.collector.enrich.cloud import CloudRanges
from flowlens.collector.enrich.enricher import Enricher
from flowlens.collector.enrich.inventory import AddressBook, AddressOwner, Inventory, workload_of
from flowlens.collector.ingest import IngestError, decode
from flowlens.model.report import Report, decode_report
from flowlens.web.auth import AuthError, check_bearer

T0 = 1_700_000_000.0


def iso(t: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def node(name: str, zone: str, ip: str, itype: str = "g5.2xlarge") -> dict:
    return {"kind": "Node", "metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": zone,
                                                                  "node.kubernetes.io/instance-type": itype}},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}]}}


def pod(name: str, ns: str, ip: str, node_name: str, owner: tuple[str, str] | None, start: float,
        host_network: bool = False, ports: tuple[int, ...] = ()) -> dict:
    meta = {"name": name, "namespace": ns, "uid": f"uid-{ns}-{name}", "creationTimestamp": iso(start)}
    if owner:
        meta["ownerReferences"] = [{"kind": owner[0], "name": owner[1], "controller": True}]
    return {"kind": "Pod", "metadata": meta,
            "spec": {"nodeName": node_name, "hostNetwork": host_network,
                     "containers": [{"ports": [{"containerPort": p} for p in ports]}]},
            "status": {"podIP": ip, "phase": "Running", "startTime": iso(start)}}


def test_an_address_goes_to_the_pod_that_held_it_at_the_time():
    book = AddressBook()
    first, second = AddressOwner("pod", "a"), AddressOwner("pod", "b")
    book.assign("10.0.0.5", first, T0)
    book.release("10.0.0.5", T0 + 100)
    book.assign("10.0.0.5", second, T0 + 200)
    assert book.at("10.0.0.5", T0 + 50) == first
    assert book.at("10.0.0.5", T0 + 250) == second
    assert book.at("10.0.0.5", T0 + 150) is None
    assert book.at("10.9.9.9", T0) is None


def test_inventory_reload_keeps_history_and_resolves_workloads():
    inv = Inventory()
    objects = [node("n1", "us-east-1a", "10.1.0.11"), node("n2", "us-east-1b", "10.2.0.11"),
               pod("web-7d9f8c6b5-abcde", "shop", "10.1.1.10", "n1", ("ReplicaSet", "web-7d9f8c6b5"), T0),
               pod("db-0", "shop", "10.1.1.11", "n1", ("StatefulSet", "db"), T0),
               pod("agent-x1", "kube-system", "10.2.0.11", "n2", ("DaemonSet", "agent"), T0, True, (9101,))]
    inv.replace_all(objects, T0 + 10)
    web = inv.endpoint("10.1.1.10", None, T0 + 20)
    assert (web.workload, web.workload_kind, web.zone, web.node) == ("web", "Deployment", "us-east-1a", "n1")
    assert inv.endpoint("10.1.1.11", None, T0 + 20).workload_kind == "StatefulSet"
    # Host-network pods are found by port on their node's address; other ports are the node.
    assert inv.endpoint("10.2.0.11", 9101, T0 + 20).workload == "agent"
    assert inv.endpoint("10.2.0.11", 22, T0 + 20).kind == "node"
    # The web pod goes away and a new pod gets its address.
    objects = [*objects[:2], pod("api-5c4d3b2a1-zzzzz", "shop", "10.1.1.10", "n2",
                                 ("ReplicaSet", "api-5c4d3b2a1"), T0 + 100)]
    inv.replace_all(objects, T0 + 90)
    assert inv.endpoint("10.1.1.10", None, T0 + 50).workload == "web"
    assert inv.endpoint("10.1.1.10", None, T0 + 150).workload == "api"


def test_owner_chain_through_replicasets_and_jobs():
    rs = {("ns", "web-abc123"): ("web", "Deployment"), ("ns", "backup-28000000"): ("backup", "CronJob")}
    assert workload_of(pod("p", "ns", "1.1.1.1", "n", ("ReplicaSet", "web-abc123"), T0), rs) == ("web", "Deployment")
    assert workload_of(pod("p", "ns", "1.1.1.1", "n", ("Job", "backup-28000000"), T0), rs) == ("backup", "CronJob")
    assert workload_of(pod("p", "ns", "1.1.1.1", "n", None, T0), rs) == ("p", "Pod")


RANGES = {"prefixes": [
    {"ip_prefix": "52.216.0.0/15", "region": "us-east-1", "service": "AMAZON"},
    {"ip_prefix": "52.216.0.0/15", "region": "us-east-1", "service": "S3"},
    {"ip_prefix": "3.218.180.0/22", "region": "us-east-1", "service": "DYNAMODB"},
    {"ip_prefix": "3.0.0.0/8", "region": "us-east-1", "service": "AMAZON"},
    {"ip_prefix": "13.32.0.0/15", "region": "GLOBAL", "service": "CLOUDFRONT"},
    {"ip_prefix": "35.180.0.0/16", "region": "eu-west-3", "service": "EC2"},
], "ipv6_prefixes": [{"ipv6_prefix": "2600:1f18::/33", "region": "us-east-1", "service": "S3"}]}


def test_cloud_ranges_pick_the_most_specific_named_service():
    ranges = CloudRanges(RANGES)
    assert ranges.owner("52.217.1.2").service == "S3"
    assert ranges.owner("3.218.181.1").service == "DYNAMODB"
    assert ranges.owner("3.5.5.5").service == "AMAZON"
    assert ranges.owner("2600:1f18::1").service == "S3"
    assert ranges.owner("8.8.8.8") is None


def report(flows: list[dict], node_name: str = "n1") -> Report:
    return decode_report(json.dumps({"schema_version": 1, "report_id": "r-000000001", "agent": {"node": node_name},
                                      "interval": {"start": T0 + 20, "end": T0 + 25}, "flows": flows}).encode())


def flow(remote: str, role: str = "client", port: int = 443, local: str = "10.1.1.10", **counters) -> dict:
    return {"netns": "x", "role": role, "local_ip": local, "remote_ip": remote, "server_port": port, **counters}


def test_categories_and_enriched_columns():
    inv = Inventory()
    inv.replace_all([node("n1", "us-east-1a", "10.1.0.11"), node("n2", "us-east-1b", "10.2.0.11"),
                     pod("web-7d9f8c6b5-abcde", "shop", "10.1.1.10", "n1", ("ReplicaSet", "web-7d9f8c6b5"), T0),
                     pod("db-0", "shop", "10.1.1.11", "n1", ("StatefulSet", "db"), T0),
                     pod("ui-6b5a4c3d2-qqqqq", "ui", "10.2.1.10", "n2", ("ReplicaSet", "ui-6b5a4c3d2"), T0),
                     {"kind": "Service", "metadata": {"name": "web-svc", "namespace": "shop"},
                      "spec": {"clusterIP": "10.96.0.10"}},
                     {"kind": "EndpointSlice", "metadata": {"labels": {"kubernetes.io/service-name": "web-svc"}},
                      "endpoints": [{"addresses": ["10.1.1.10"]}]}], T0)
    enricher = Enricher(inv, CloudRanges(RANGES), region="us-east-1", vpc_cidrs=[__import__("ipaddress")
                                                                                  .ip_network("172.31.0.0/16")])
    table = enricher.flows(report([
        flow("10.1.1.11", port=5432, sent_bytes=10),
        flow("10.2.1.10", port=8080),
        flow("52.216.10.10", received_bytes=1000),
        flow("3.218.180.5"),
        flow("35.180.1.1"),
        flow("13.32.0.1"),
        flow("172.31.4.4"),
        flow("8.8.8.8"),
        flow("10.2.1.10", role="server", port=8080, local="10.1.1.10", service_ip=None),
        {**flow("10.1.1.10", port=8080, local="10.2.1.10"), "service_ip": "10.96.0.10"},
    ])).to_pylist()
    assert [r["category"] for r in table] == ["INTRA_AZ", "INTER_AZ", "AMAZON_S3", "AMAZON_DYNAMODB", "INTER_REGION",
                                              "AMAZON_CLOUDFRONT", "INTER_VPC", "UNCLASSIFIED", "INTER_AZ",
                                              "INTER_AZ"]
    first = table[0]
    assert (first["local_workload"], first["local_workload_kind"], first["local_zone"]) == ("web", "Deployment",
                                                                                            "us-east-1a")
    assert (first["remote_workload"], first["remote_namespace"], first["sent_bytes"]) == ("db", "shop", 10)
    s3 = table[2]
    assert (s3["remote_cloud_service"], s3["remote_region"], s3["remote_pod"]) == ("S3", "us-east-1", None)
    via_service = table[9]
    assert (via_service["remote_service"], via_service["remote_workload"]) == ("web-svc", "web")
    assert via_service["service_ip"] == "10.96.0.10"


def test_ingest_refusals_say_why():
    good = {"schema_version": 1, "report_id": "abcdefgh", "agent": {"node": "n1"},
            "interval": {"start": T0, "end": T0 + 5}, "flows": []}  # 5 s
    assert decode(gzip.compress(json.dumps(good).encode()), "gzip").agent.node == "n1"
    with pytest.raises(IngestError, match="not valid gzip") as err:
        decode(b"not gzip", "gzip")
    assert err.value.status == 400
    with pytest.raises(IngestError, match="Content-Encoding"):
        decode(b"{}", "br")
    with pytest.raises(IngestError, match=r"flows\.0\.remote_ip") as err:
        decode(json.dumps({**good, "flows": [flow("999.1.1.1")]}).encode(), None)
    assert err.value.status == 422
    with pytest.raises(IngestError, match="sent_bytes"):
        decode(json.dumps({**good, "flows": [flow("1.1.1.1", sent_bytes=-5)]}).encode(), None)
    with pytest.raises(IngestError, match="over"):
        decode(gzip.compress(b" " * (129 << 20)), "gzip")
    whole = gzip.compress(json.dumps(good).encode())
    with pytest.raises(IngestError, match="truncated"):
        decode(whole[:-8], "gzip")  # no CRC and length trailer
    with pytest.raises(IngestError, match="follow the end"):
        decode(whole + b"garbage", "gzip")
    with pytest.raises(IngestError, match="more than an interval of 5 s can carry") as err:
        decode(json.dumps({**good, "flows": [flow("1.1.1.1", sent_bytes=2**62)]}).encode(), None)
    assert err.value.status == 422
    with pytest.raises(IngestError, match="interval: it lasts"):
        decode(json.dumps({**good, "interval": {"start": T0, "end": T0 - 5}}).encode(), None)
    with pytest.raises(AuthError, match="missing") as auth:
        check_bearer(None, frozenset({"s3cret"}))
    assert auth.value.status == 401
    with pytest.raises(AuthError, match="unknown token") as auth:
        check_bearer("Bearer nope", frozenset({"s3cret"}))
    assert auth.value.status == 403
    check_bearer("Bearer s3cret", frozenset({"s3cret"}))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048) | st.text(max_size=2048).map(str.encode))
def test_decode_never_crashes_on_garbage(body: bytes):
    try:
        decode(body, None)
    except IngestError as err:
        assert 400 <= err.status < 500
