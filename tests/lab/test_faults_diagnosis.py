"""Each lab fault produces its finding, and only it; with no fault there is no finding.

The lab runs with runtime pods in both zones behind topology-aware routing (so nothing crosses
zones by default) and a minimum of two replicas (so clients are never refused)."""

from __future__ import annotations

import os
import time

import httpx
import pytest

from flowlens_lab import lab, network, teardown
from flowlens_lab.spec import COLLECTOR_PORT, LabSpec

INTERVAL = 1.0
COLLECTOR = f"http://127.0.0.1:{COLLECTOR_PORT}"
QUIET = {"topology_aware_routing_effective"}  # informational: routing works


@pytest.fixture(scope="module")
def quiet_lab(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if network.lab_namespaces():
        pytest.skip("a lab is already running on this machine")
    os.environ["FLOWLENS_LAB_DIR"] = str(tmp_path_factory.mktemp("lab"))
    spec = LabSpec(weights_mib=16, runtime_min=2, topology_aware=True, agent_interval_s=INTERVAL, cooldown_s=600)
    try:
        lab.up(spec)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            pods = [p for p in lab.status()["pods"] if p["workload"] == "sdruntime" and p["ready"]]
            if {p["zone"] for p in pods} == {"us-east-1a", "us-east-1b"}:
                break
            time.sleep(1)
        else:
            pytest.fail("the runtime never had a ready pod in each zone")
        time.sleep(6)  # let the start-up (weight downloads) leave the diagnosis window
        yield spec
    finally:
        teardown.down()
        os.environ.pop("FLOWLENS_LAB_DIR", None)


def diagnosis(seconds: float) -> dict:
    return httpx.get(f"{COLLECTOR}/api/v1/findings", params={"since": f"{seconds:.0f}s"}, timeout=60).json()


def kinds(body: dict) -> set[str]:
    return {f["kind"] for f in body["findings"]} - QUIET


def test_no_fault_no_finding(quiet_lab):
    time.sleep(8)
    body = diagnosis(8)
    assert kinds(body) == set(), body["findings"]
    assert body["health"] == 0


def test_blocked_port_is_blocked_connections(quiet_lab):
    lab.fault_block("ui", "sdruntime/sdruntime", 8080)
    try:
        started = time.time()
        time.sleep(9)  # a client's connect times out after 5 s; then two report intervals
        body = diagnosis(time.time() - started)
    finally:
        lab.clear_faults("block")
    assert kinds(body) == {"blocked_connections"}, body["findings"]
    finding = next(f for f in body["findings"] if f["kind"] == "blocked_connections")
    # The drop happens before the node's conntrack confirms the DNAT, so the client side may only
    # know the Service; either way the finding names what the client could not reach.
    assert finding["where"]["workloads"][0] == "ui/client-ui"
    assert finding["where"]["workloads"][1] in ("sdruntime/sdruntime", "sdruntime/sdruntime-service")
    assert finding["evidence"]["timed_out"] >= 1 and finding["evidence"]["refused"] == 0
    time.sleep(7)  # the blocked connections' last reports leave the window


def test_loss_on_the_zone_router_is_the_network(quiet_lab):
    from flowlens_lab.loadgen import send

    lab.fault_loss(15, None)
    try:
        started = time.time()
        send(2.0, 12.0)  # tasks: both zones' runtime pods fetch, store and notify through the router
        time.sleep(3 * INTERVAL)
        body = diagnosis(time.time() - started)
    finally:
        lab.clear_faults("loss")
    assert "network_degradation" in kinds(body), body["findings"]
    assert body["health"] == 1
    assert "bandwidth_allowance_exceeded" not in kinds(body)
