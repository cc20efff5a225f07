"""The lab's kernel networking, services, faults and inventory, against the real namespaces."""

from __future__ import annotations

import json
import re
import socket
import time

from flowlens_lab import cluster, inventory, lab, teardown
from flowlens_lab import state as lab_state
from flowlens_lab.shell import in_ns
from tests.lab.conftest import http_server


def curl(ns: str, url: str, timeout: float = 2.0) -> str:
    return in_ns(ns, "curl", "-s", "-m", str(timeout), "-o", "/dev/null", "-w", "%{http_code}", url, check=False)


def wait_listening(pod: dict, port: int = 8080) -> None:
    deadline = time.time() + 10
    while time.time() < deadline:
        if f":{port} " in in_ns(pod["ns"], "ss", "-tlnH"):
            return
        time.sleep(0.1)
    raise AssertionError(f"{pod['name']} never listened on {port}")


def test_inventory_matches_the_real_namespaces_and_addresses(mini_lab):
    a, b = mini_lab["a"], mini_lab["b"]
    web = cluster.add_pod("shop", "web", a["name"], [http_server()], {}, ready=True)
    client = cluster.add_pod("ui", "client", b["name"], [], {}, ready=True)
    items = json.loads(inventory.inventory_path().read_text())["items"]
    by_kind: dict[str, list] = {}
    for item in items:
        by_kind.setdefault(item["kind"], []).append(item)
    nodes = {n["metadata"]["name"]: n for n in by_kind["Node"]}
    assert nodes[a["name"]]["metadata"]["labels"]["topology.kubernetes.io/zone"] == "us-east-1a"
    assert nodes[b["name"]]["metadata"]["labels"]["node.kubernetes.io/instance-type"] == "g5.4xlarge"
    for node in by_kind["Node"]:
        ip = node["status"]["addresses"][0]["address"]
        ns = next(n["ns"] for n in lab_state.read()["nodes"].values() if n["name"] == node["metadata"]["name"])
        assert f"inet {ip}/24" in in_ns(ns, "ip", "-4", "addr", "show", "eth0")
    pods = {p["metadata"]["name"]: p for p in by_kind["Pod"]}
    assert set(pods) == {web["name"], client["name"]}
    for pod in (web, client):
        obj = pods[pod["name"]]
        assert f"inet {obj['status']['podIP']}/32" in in_ns(pod["ns"], "ip", "-4", "addr", "show", "eth0")
        assert obj["spec"]["nodeName"] == pod["node"]
        owner = obj["metadata"]["ownerReferences"][0]
        assert owner["kind"] == "ReplicaSet" and owner["name"] == f"{pod['workload']}-{pod['template_hash']}"
    rs = {r["metadata"]["name"]: r for r in by_kind["ReplicaSet"]}
    assert rs[f"web-{web['template_hash']}"]["metadata"]["ownerReferences"][0]["kind"] == "Deployment"
    eps = by_kind["EndpointSlice"][0]
    assert eps["metadata"]["labels"]["kubernetes.io/service-name"] == "web"
    assert [e["addresses"] for e in eps["endpoints"]] == [[web["ip"]]]

    cluster.remove_pod(web["name"])
    items = json.loads(inventory.inventory_path().read_text())["items"]
    assert web["name"] not in {i["metadata"]["name"] for i in items if i["kind"] == "Pod"}
    assert web["ns"] not in in_ns(a["ns"], "ip", "netns", "list", check=False)


def test_cluster_ip_reaches_backends_and_topology_aware_routing_keeps_them_local(mini_lab):
    a, b = mini_lab["a"], mini_lab["b"]
    far = cluster.add_pod("shop", "web", a["name"], [http_server()], {}, ready=True)
    client = cluster.add_pod("ui", "client", b["name"], [], {}, ready=True)
    wait_listening(far)
    assert curl(client["ns"], "http://10.96.0.20:80/") == "200"
    near = cluster.add_pod("shop", "web", b["name"], [http_server()], {}, ready=True)
    wait_listening(near)
    lab.set_topology_aware(True)
    rules = in_ns(b["ns"], "iptables", "-t", "nat", "-S")
    assert f"--to-destination {near['ip']}:8080" in rules and far["ip"] not in rules
    in_ns(b["ns"], "conntrack", "-F", check=False)  # forget the connections made before
    assert all(curl(client["ns"], "http://10.96.0.20:80/") == "200" for _ in range(5))
    conntrack = in_ns(b["ns"], "conntrack", "-L", "-p", "tcp", "--orig-dst", "10.96.0.20", check=False)
    assert set(re.findall(r"dport=80 src=(\S+)", conntrack)) == {near["ip"]}, "the reply came from the near pod"
    lab.set_topology_aware(False)
    rules = in_ns(b["ns"], "iptables", "-t", "nat", "-S")
    assert far["ip"] in rules and near["ip"] in rules


def test_no_ready_backend_is_rejected_like_kube_proxy(mini_lab):
    client = cluster.add_pod("ui", "client", mini_lab["b"]["name"], [], {}, ready=True)
    sock = socket.socket()
    assert curl(client["ns"], "http://10.96.0.20:80/", timeout=2) == "000"
    assert "REJECT" in in_ns(mini_lab["b"]["ns"], "iptables", "-S", "KUBE-SERVICES")
    sock.close()


def test_blocked_port_and_clear(mini_lab):
    web = cluster.add_pod("shop", "web", mini_lab["a"]["name"], [http_server()], {}, ready=True)
    client = cluster.add_pod("ui", "client", mini_lab["b"]["name"], [], {}, ready=True)
    wait_listening(web)
    lab.fault_block("ui", "shop/web", 8080)
    assert curl(client["ns"], "http://10.96.0.20:80/", timeout=1.5) == "000"
    assert lab.clear_faults("block") == ["block:ui->shop/web:8080"]
    assert curl(client["ns"], "http://10.96.0.20:80/") == "200"


def test_loss_on_the_zone_router_drops_packets(mini_lab):
    web = cluster.add_pod("shop", "web", mini_lab["a"]["name"], [http_server()], {}, ready=True)
    client = cluster.add_pod("ui", "client", mini_lab["b"]["name"], [], {}, ready=True)
    wait_listening(web)
    lab.fault_loss(30, ("us-east-1a", "us-east-1b"))
    for _ in range(5):
        curl(client["ns"], f"http://{web['ip']}:8080/", timeout=3)
    counters = in_ns("fll-fabric", "iptables", "-v", "-x", "-n", "-L", "FLL-LOSS")
    dropped = [int(line.split()[0]) for line in counters.splitlines()[2:]]
    assert sum(dropped) > 0
    lab.clear_faults("loss")
    assert "DROP" not in in_ns("fll-fabric", "iptables", "-S", "FLL-LOSS")


def test_node_type_swap_reshapes_both_directions(mini_lab):
    a = mini_lab["a"]
    assert "rate 100Mbit" in in_ns(a["ns"], "tc", "qdisc", "show", "dev", "ifb0")
    lab.set_node_type("g5.4xlarge", pool="web")
    for dev in ("eth0", "ifb0"):
        assert "rate 250Mbit" in in_ns(a["ns"], "tc", "qdisc", "show", "dev", dev)
    node = lab_state.read()["nodes"][a["name"]]
    assert node["instance_type"] == "g5.4xlarge"


def test_down_removes_everything(mini_lab):
    cluster.add_pod("shop", "web", mini_lab["a"]["name"], [http_server()], {}, ready=True)
    teardown.down()
    assert teardown.leftovers() == []


def test_node_agent_attributes_cluster_ip_connections_to_the_backend_reached(mini_lab):
    """The agent of the client's node resolves the ClusterIP through the node's conntrack."""
    import subprocess
    import sys

    web = cluster.add_pod("shop", "web", mini_lab["a"]["name"], [http_server()], {}, ready=True)
    client = cluster.add_pod("ui", "client", mini_lab["b"]["name"], [], {}, ready=True)
    wait_listening(web)
    node_b = mini_lab["b"]
    agent = subprocess.Popen(["ip", "netns", "exec", node_b["ns"], sys.executable, "-m", "flowlens", "agent",
                              "--port", "9101", "--interval", "0.5", "--namespaces", f"fll-pod-{node_b['id']}-*",
                              "--service-cidrs", "10.96.0.0/16"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 15
        while curl(node_b["ns"], "http://127.0.0.1:9101/healthz") != "200" and time.time() < deadline:
            time.sleep(0.2)
        assert curl(client["ns"], "http://10.96.0.20:80/") == "200"
        rows = []
        deadline = time.time() + 10
        while time.time() < deadline:
            rows = json.loads(in_ns(node_b["ns"], "curl", "-s", "http://127.0.0.1:9101/flows"))["flows"]
            rows = [r for r in rows if r["netns"] == client["ns"] and r["role"] == "client"]
            if rows:
                break
            time.sleep(0.3)
    finally:
        agent.terminate()
        agent.wait(timeout=10)
    assert len(rows) == 1, rows
    row = rows[0]
    assert (row["remote_ip"], row["server_port"], row["service_ip"]) == (web["ip"], 8080, "10.96.0.20")
    assert row["connections_established"] == 1 and row["received_bytes"] > 0
