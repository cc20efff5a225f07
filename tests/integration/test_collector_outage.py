"""The collector stopped for two minutes while the agent keeps sending: once it is back, every
report is stored exactly once."""

from __future__ import annotations

import gzip
import json
import threading
import time

import httpx

from flowlens.agent.config import AgentConfig
from flowlens.agent.runtime import Agent
from flowlens.agent.sampling.sampler import Sampler
from flowlens.model.queries import FlowFilter, MapLevel
from tests.conftest import NsPair
from tests.integration.conftest import RunningCollector, node, pod, write_inventory
from tests.traffic import Server, request

OUTAGE_SECONDS = 120


def edge_bytes(collector: RunningCollector) -> tuple[int, int]:
    smap = collector.collector.store.service_map(FlowFilter(), MapLevel.WORKLOAD)
    edge = next(e for e in smap.edges if (e.source.name, e.destination.name) == ("client", "web"))
    return edge.bytes_to_destination, edge.connection_attempts


def test_two_minutes_without_collector_lose_nothing_and_count_nothing_twice(ns_pair: NsPair, files):
    folder, inventory, ranges = files
    write_inventory(inventory, [
        node("node-a", "us-east-1a", "192.0.2.1"),
        pod("client-5f6b7c8d9-aaaaa", "ui", ns_pair.ip_a, "node-a", "client-5f6b7c8d9"),
        pod("web-7d9f8c6b5-bbbbb", "shop", ns_pair.ip_b, "node-a", "web-7d9f8c6b5"),
    ])
    collector = RunningCollector(folder, inventory, ranges).start()
    agent = Agent(AgentConfig(interval=1.0, node="node-a", collector=collector.url, spool_dir=str(folder / "spool")),
                  Sampler(only=(ns_pair.a,)))
    agent.start()
    loop = threading.Thread(target=agent.loop, daemon=True)
    loop.start()
    server = Server(ns_pair.b, ns_pair.ip_b, 8080).start()
    sent = requests_made = 0
    try:
        for _ in range(3):
            request(ns_pair.a, ns_pair.ip_b, 8080, 1000)
            sent, requests_made = sent + 1000, requests_made + 1
        time.sleep(2.5)
        collector.stop()
        down_since = time.monotonic()
        while time.monotonic() - down_since < OUTAGE_SECONDS:  # traffic goes on, reports pile up
            request(ns_pair.a, ns_pair.ip_b, 8080, 777)
            sent, requests_made = sent + 777, requests_made + 1
            time.sleep(2)
        assert agent.reporter.spooled >= OUTAGE_SECONDS // 2, "reports waited on disk"
        collector.start()
        deadline = time.monotonic() + 60
        while (agent.reporter.spooled or agent.reporter.queue.unfinished_tasks) and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(2.5)  # the last traffic's interval
        agent.stop()
        loop.join(timeout=10)
        agent.reporter.flush()
        assert agent.reporter.spooled == 0
        assert agent.reporter.spool.dropped == 0
        stored, attempts = edge_bytes(collector)
        assert stored == sent, "every byte once: none lost while the collector was away, none twice"
        assert attempts == requests_made

        # A report replayed again (its answer was lost) is recognised and not counted.
        report = {"schema_version": 1, "report_id": "replayed-report-1", "agent": {"node": "node-a"},
                  "interval": {"start": time.time() - 5, "end": time.time()},
                  "flows": [{"netns": ns_pair.a, "role": "client", "local_ip": ns_pair.ip_a,
                             "remote_ip": ns_pair.ip_b, "server_port": 8080, "sent_bytes": 5}]}
        body = gzip.compress(json.dumps(report).encode())
        headers = {"Content-Encoding": "gzip"}
        first = httpx.post(collector.url + "/api/v1/reports", content=body, headers=headers).json()
        again = httpx.post(collector.url + "/api/v1/reports", content=body, headers=headers).json()
        assert (first["duplicate"], again["duplicate"]) == (False, True)
        assert edge_bytes(collector)[0] == sent + 5
    finally:
        server.stop()
        agent.close()
        collector.stop()
