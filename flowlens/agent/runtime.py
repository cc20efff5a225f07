"""The running agent: a collection loop, the HTTP endpoint, and what they share.

The loop runs one cycle per interval: sampler → flow series → node counters → a frozen
snapshot of metric families and of the last interval's flows. The HTTP server (a thread of
its own) only reads those snapshots: ``/metrics`` in Prometheus text or OpenMetrics by content
negotiation, ``/flows`` as JSON, ``/healthz``.
"""

from __future__ import annotations

import errno
import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from flowlens.agent.config import AgentConfig
from flowlens.agent.exporter import SnapshotCollector, family, flow_families
from flowlens.agent.flowview import interval_rows
from flowlens.agent.node import node_families, parse_allowance_qdiscs
from flowlens.agent.reporter import NodeDeltas, Reporter, Spool, build_report
from flowlens.agent.sampler import CycleResult, Sampler
from flowlens.agent.series import FlowSeries
from flowlens.model.errors import FlowlensError

log = logging.getLogger(__name__)

COLLECT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class SelfStats:
    """The agent's own counters, kept as plain numbers and frozen with each snapshot."""

    def __init__(self) -> None:
        self.collect_buckets = [0] * (len(COLLECT_BUCKETS) + 1)
        self.collect_sum = 0.0
        self.cpu_seconds = 0.0
        self.cycles = 0

    def observe(self, result: CycleResult) -> None:
        index = next((i for i, b in enumerate(COLLECT_BUCKETS) if result.collect_seconds <= b),
                     len(COLLECT_BUCKETS))
        self.collect_buckets[index] += 1
        self.collect_sum += result.collect_seconds
        self.cpu_seconds += result.cpu_seconds
        self.cycles += 1

    def families(self, sampler: Sampler, result: CycleResult, series: FlowSeries) -> list[Any]:
        hist = family("flowlens_agent_collect_seconds")
        running, buckets = 0, []
        for bound, n in zip((*COLLECT_BUCKETS, float("inf")), self.collect_buckets, strict=True):
            running += n
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
        hist.add_metric([], buckets, self.collect_sum)
        values = {
            "flowlens_agent_collect_cpu_seconds_total": self.cpu_seconds,
            "flowlens_agent_sockets": result.sockets,
            "flowlens_agent_namespaces": result.namespaces,
            "flowlens_agent_namespace_errors": len(sampler.failed),
            "flowlens_agent_events_lost_total": sampler.lost_events,
            "flowlens_agent_event_overflows_total": sampler.overflows,
            "flowlens_agent_flow_series": len(series.selected),
            "flowlens_agent_cycles_total": self.cycles,
        }
        out = [hist]
        for name, value in values.items():
            fam = family(name)
            fam.add_metric([], value)
            out.append(fam)
        return out


class Agent:
    """Collection loop plus the snapshots the HTTP endpoint serves."""

    def __init__(self, config: AgentConfig, sampler: Sampler | None = None) -> None:
        self.config = config
        self.sampler = sampler or Sampler(config.proc, config.run_netns, namespaces=config.all_namespaces,
                                          only=tuple(p for p in config.namespaces.split(",") if p),
                                          service_cidrs=config.service_cidrs)
        self.series = FlowSeries(config.max_flow_series, config.idle_grace)
        self.stats = SelfStats()
        self.allowance_qdiscs = parse_allowance_qdiscs(config.allowance_qdiscs)
        self.node_deltas = NodeDeltas(self.allowance_qdiscs)
        self.reporter: Reporter | None = None
        if config.collector:
            self.reporter = Reporter(config.collector, config.token,
                                     Spool(Path(config.spool_dir), config.spool_max_bytes))
        self.collector = SnapshotCollector()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)
        self.last_flows: list[dict[str, Any]] = []
        self.last_result: CycleResult | None = None
        self._stop = threading.Event()
        self._cycle_done = threading.Condition()

    def start(self) -> None:
        self.sampler.start()

    def run_cycle(self) -> CycleResult:
        result = self.sampler.cycle()
        self.series.update(result.end, result.flows, result.rtt_samples, result.active_sockets)
        self.stats.observe(result)
        families = flow_families(self.series)
        families += node_families(result.node, self.config.node, self.config.instance_id, self.allowance_qdiscs)
        families += self.stats.families(self.sampler, result, self.series)
        self.collector.publish(families)
        self.last_flows = interval_rows(result)
        if self.reporter is not None:
            delta = self.node_deltas(result.node)
            self.reporter.submit(build_report(result, self.config.node, self.config.instance_id, delta))
        with self._cycle_done:
            self.last_result = result
            self._cycle_done.notify_all()
        return result

    def loop(self) -> None:
        next_at = time.monotonic() + self.config.interval
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            try:
                self.run_cycle()
            except FlowlensError as err:
                log.error("collection cycle failed: %s", err)
            next_at += self.config.interval
            if next_at < time.monotonic():  # a slow cycle: skip ahead rather than burst
                next_at = time.monotonic() + self.config.interval

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        """Hand what is queued to the collector (or the spool), then release the kernel handles."""
        if self.reporter is not None:
            self.reporter.flush()
            self.reporter.close()
        self.sampler.close()

    def wait_cycle(self, timeout: float) -> CycleResult | None:
        with self._cycle_done:
            self._cycle_done.wait(timeout)
            return self.last_result


@contextmanager
def serving(config: AgentConfig) -> Iterator[Agent]:
    """An agent started (baseline taken) with its endpoint up; Ctrl-C ends the block quietly."""
    agent = Agent(config)
    agent.start()
    server = serve(agent)
    try:
        yield agent
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()
        agent.close()


def serve(agent: Agent) -> ThreadingHTTPServer:
    """Bind the HTTP endpoint (raises a clear error if the port is taken) and serve it."""
    handler = type("AgentHandler", (_Handler,), {"agent": agent})
    try:
        server = ThreadingHTTPServer((agent.config.address, agent.config.port), handler)
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            raise FlowlensError(
                f"port {agent.config.port} on {agent.config.address} is already in use: stop the other "
                "process or choose another with --port"
            ) from err
        raise FlowlensError(f"cannot listen on {agent.config.address}:{agent.config.port}: {err.strerror}") from err
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="flowlens-http", daemon=True).start()
    return server


class _Handler(BaseHTTPRequestHandler):
    agent: Agent
    server_version = "flowlens-agent"

    def do_GET(self) -> None:
        url = urlparse(self.path)
        if url.path == "/metrics":
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            self._send(200, content_type, encoder(self.agent.registry))
        elif url.path == "/flows":
            query = parse_qs(url.query)
            body = {"interval": self.agent.config.interval, "flows": self.agent.last_flows}
            if "wait" in query and self.agent.last_result is None:
                self.agent.wait_cycle(float(query["wait"][0]))
                body["flows"] = self.agent.last_flows
            self._send(200, "application/json", json.dumps(body).encode())
        elif url.path == "/healthz":
            self._send(200, "text/plain", b"ok\n")
        else:
            self._send(404, "text/plain", b"not found: try /metrics, /flows or /healthz\n")

    def _send(self, code: int, content_type: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http: " + format, *args)
