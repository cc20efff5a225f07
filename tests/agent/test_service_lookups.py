"""ClusterIP resolution through conntrack is counted, resolved or not, and exported."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from flowlens.agent.config import AgentConfig
from flowlens.agent.runtime import Agent, serve
from flowlens.agent.sampling.services import ServiceResolver
from flowlens.model.errors import NetlinkError
from tests.agent.test_metrics_endpoint import free_port, samples, value


@dataclass
class Target:
    ip: str
    port: int


class RecordedConntrack:
    """Answers as conntrack would: a backend for known tuples, none for others, an error for one."""

    def __init__(self) -> None:
        self.asked: list[tuple] = []

    def lookup(self, protocol: int, src: str, sport: int, dst: str, dport: int) -> Target | None:
        self.asked.append((src, sport, dst, dport))
        if sport == 40001:
            return Target("10.1.2.3", 8080)
        if sport == 40003:
            raise NetlinkError("conntrack: interrupted dump")
        return None

    def close(self) -> None:
        pass


def test_lookups_are_counted_by_result_and_only_for_cluster_ips() -> None:
    conntrack = RecordedConntrack()
    resolve = ServiceResolver("10.96.0.0/12", conntrack)  # type: ignore[arg-type]
    assert resolve("10.0.0.1", 40001, "10.96.0.10", 80) == ("10.1.2.3", 8080)
    assert resolve("10.0.0.1", 40002, "10.96.0.10", 80) is None  # no NAT entry
    assert resolve("10.0.0.1", 40003, "10.96.0.10", 80) is None  # conntrack failed
    assert resolve("10.0.0.1", 40004, "10.200.0.10", 80) is None  # not a ClusterIP: not asked
    assert (resolve.lookups, resolve.resolved) == (3, 1)
    assert [a[1] for a in conntrack.asked] == [40001, 40002, 40003]


def test_the_agent_exports_its_lookups() -> None:
    config = AgentConfig(address="127.0.0.1", port=free_port(), interval=1.0, node="node-1", all_namespaces=False)
    agent = Agent(config)
    conntrack = RecordedConntrack()
    agent.sampler.services = ServiceResolver("10.96.0.0/12", conntrack)  # type: ignore[arg-type]
    for sport in (40001, 40002, 40003):
        agent.sampler.services("10.0.0.1", sport, "10.96.0.10", 80)
    agent.start()
    http = serve(agent)
    try:
        agent.run_cycle()
        parsed = samples(httpx.get(f"http://127.0.0.1:{config.port}/metrics").text)
        assert value(parsed, "flowlens_agent_service_lookups_total", result="resolved") == 1
        assert value(parsed, "flowlens_agent_service_lookups_total", result="unresolved") == 2
    finally:
        http.stop()
        agent.sampler.close()
