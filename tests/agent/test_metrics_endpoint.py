"""/metrics on a real agent: parses, agrees with the traffic, and reads the same for everyone."""

from __future__ import annotations

import socket
import time

import httpx
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from flowlens.agent.config import AgentConfig
from flowlens.agent.runtime import Agent, serve
from flowlens.model.errors import FlowlensError
from tests.conftest import NsPair, ns_exec
from tests.traffic import Server, request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def samples(text: str, parser=text_string_to_metric_families) -> dict[tuple[str, tuple], float]:
    out = {}
    for fam in parser(text):
        for sample in fam.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(parsed: dict, name: str, **labels: str) -> float:
    found = [v for (n, ls), v in parsed.items() if n == name and all(dict(ls).get(k) == x for k, x in labels.items())]
    assert len(found) == 1, f"{name} {labels}: {len(found)} samples"
    return found[0]


@pytest.fixture
def agent_with_traffic(ns_pair: NsPair):
    a, b = ns_pair.a, ns_pair.b
    ns_exec(b, "tc", "qdisc", "add", "dev", "veth0", "root", "tbf", "rate", "50mbit", "burst", "32kb",
            "limit", "64kb")
    config = AgentConfig(address="127.0.0.1", port=free_port(), interval=1.0, node="node-1", instance_id="i-123",
                         allowance_qdiscs="bw_out_allowance_exceeded=lo")
    agent = Agent(config)
    agent.start()
    server = Server(b, ns_pair.ip_b, 8080, reply=4321).start()
    try:
        http = serve(agent)
        url = f"http://127.0.0.1:{config.port}/metrics"
        # A series is born at zero and what it counts before scrapers have read that zero is
        # held back: a first request makes the flow's series, shown once read twice.
        for _ in range(2):
            httpx.get(url)
        assert request(a, ns_pair.ip_b, 8080, 50_000) == 4321
        time.sleep(0.1)
        agent.run_cycle()
        for _ in range(2):
            httpx.get(url)
        for _ in range(3):
            assert request(a, ns_pair.ip_b, 8080, 100_000) == 4321
        time.sleep(0.1)
        agent.run_cycle()
        yield agent, ns_pair
    finally:
        server.stop()
        if "http" in locals():
            http.stop()
        agent.sampler.close()


def test_flow_counters_parse_and_match_the_traffic(agent_with_traffic):
    agent, pair = agent_with_traffic
    url = f"http://127.0.0.1:{agent.config.port}/metrics"
    first, second = httpx.get(url).text, httpx.get(url).text
    assert first == second, "two scrapers between cycles read identical counters"
    parsed = samples(first)
    client = dict(netns=pair.a, local_ip=pair.ip_a, remote_ip=pair.ip_b, server_port="8080", role="client")
    server = dict(netns=pair.b, local_ip=pair.ip_b, remote_ip=pair.ip_a, server_port="8080", role="server")
    assert value(parsed, "flowlens_flow_sent_bytes_total", **client) == 350_000
    assert value(parsed, "flowlens_flow_received_bytes_total", **client) == 4 * 4321
    assert value(parsed, "flowlens_flow_received_bytes_total", **server) == 350_000
    assert value(parsed, "flowlens_flow_connections_total", result="established", **client) == 4
    assert value(parsed, "flowlens_flow_connections_total", result="refused", **client) == 0
    assert value(parsed, "flowlens_flow_connections_total", result="timed_out", **client) == 0
    assert value(parsed, "flowlens_flow_connection_attempts_total", **client) == 4
    assert value(parsed, "flowlens_flow_rtt_seconds_count", **client) == 4
    assert value(parsed, "flowlens_flow_rtt_seconds_bucket", le="+Inf", **client) == 4
    assert value(parsed, "flowlens_agent_namespaces") >= 3
    assert value(parsed, "flowlens_agent_cycles_total") == 2
    assert value(parsed, "flowlens_agent_collect_seconds_count") == 2
    # The first request was held back while the flow's series was born, then added to it.
    assert value(parsed, "flowlens_flow_sent_bytes_total", netns=pair.a, remote_ip="other") == 0

    # Self-consistency with the kernel: interface and MIB counters equal what the kernel says.
    opens = int(ns_exec(pair.a, "cat", "/proc/net/snmp").stdout.split("Tcp:")[2].split()[4])
    assert value(parsed, "flowlens_tcp_active_opens_total", netns=pair.a) == opens
    assert value(parsed, "egress_flow", pod=pair.a, node="node-1", instance_id="i-123") == opens
    assert value(parsed, "ingress_flow", pod=pair.b) == 4
    sent_b = value(parsed, "flowlens_interface_transmit_bytes_total", netns=pair.b, iface="veth0")
    assert value(parsed, "egress_bytes", pod=pair.b) == sent_b > 3 * 4321
    assert value(parsed, "flowlens_qdisc_bytes_total", netns=pair.b, iface="veth0", qdisc="tbf") > 0


def test_openmetrics_negotiation(agent_with_traffic):
    agent, pair = agent_with_traffic
    response = httpx.get(f"http://127.0.0.1:{agent.config.port}/metrics",
                         headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    parsed = samples(response.text, parse_openmetrics)
    assert value(parsed, "flowlens_flow_sent_bytes_total", netns=pair.a, role="client") == 350_000


def test_flows_endpoint_carries_the_metric_fields(agent_with_traffic):
    agent, pair = agent_with_traffic
    body = httpx.get(f"http://127.0.0.1:{agent.config.port}/flows").json()
    row = next(r for r in body["flows"] if r["netns"] == pair.a and r["role"] == "client")
    assert (row["sent_bytes"], row["received_bytes"], row["connections_established"]) == (300_000, 12963, 3)
    assert row["server_port"] == 8080 and row["remote_ip"] == pair.ip_b


def test_a_taken_port_is_one_clear_error(agent_with_traffic):
    agent, _ = agent_with_traffic
    with pytest.raises(FlowlensError, match="already in use"):
        serve(agent)
