"""The running agent: a collection loop, the HTTP endpoint, a watchdog, and what they share.

The loop runs one cycle per interval: sampler → flow series → node counters → a frozen
snapshot of metric families and of the last interval's flows; between cycles it reads the
socket-destroy events as they arrive. The HTTP server (a thread of its own) only reads those
snapshots: ``/metrics`` in Prometheus text or OpenMetrics by content negotiation, ``/flows``
as JSON, ``/healthz``. The watchdog (another thread) turns ``/healthz`` unhealthy while a
cycle is stuck, when cycles stop coming, or while a namespace had to be abandoned, so that
Kubernetes restarts an agent that counts nothing; it recovers by itself with the next clean
cycle. A stop request (SIGTERM) ends the loop at once, even in the middle of a cycle.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from flowlens.agent.config import AgentConfig
from flowlens.agent.export.exporter import SnapshotCollector, family, flow_families
from flowlens.agent.export.flowview import interval_rows
from flowlens.agent.export.node_metrics import node_families
from flowlens.agent.export.reporter import NodeDeltas, Reporter, Spool, build_reports
from flowlens.agent.export.series import FlowSeries
from flowlens.agent.sampling.node import parse_allowance_qdiscs
from flowlens.agent.sampling.sampler import CycleResult, Sampler
from flowlens.kernel.netns import HOST_LABEL
from flowlens.model.errors import FlowlensError
from flowlens.model.flows import FlowKey
from flowlens.web.auth import TokenSet
from flowlens.web.guard import Guard, Rule
from flowlens.web.server import Limits, Served, ServerStats, Tls
from flowlens.web.server import serve as serve_app

log = logging.getLogger(__name__)

COLLECT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# The loop looks at its stop flag at least this often while it waits for the next cycle.
STOP_CHECK_SECONDS = 0.25
ENV_TOKEN = "FLOWLENS_AGENT_TOKEN"  # the token sent to the collector
ENV_METRICS_TOKENS = "FLOWLENS_AGENT_METRICS_TOKENS"  # tokens /metrics and /flows require, comma-separated


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

    def families(self, sampler: Sampler, result: CycleResult, series: FlowSeries, watchdog: Watchdog,
                 reporter: Reporter | None = None) -> list[Any]:
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
            "flowlens_agent_destroy_events_total": sampler.events_read,
            "flowlens_agent_namespace_timeouts_total": sampler.timeouts,
            "flowlens_agent_stalls_total": watchdog.stalls,
            "flowlens_agent_healthy": 0 if watchdog.problem else 1,
            "flowlens_agent_flow_series": len(series.selected),
            "flowlens_agent_cycles_total": self.cycles,
        }
        out = [hist]
        for name, value in values.items():
            fam = family(name)
            fam.add_metric([], value)
            out.append(fam)
        connections = family("flowlens_agent_unattributed_connections_total")
        estimate = family("flowlens_agent_unattributed_estimated_bytes_total")
        for netns, (count, bytes_estimate) in sampler.unattributed().items():
            connections.add_metric([netns], count)
            estimate.add_metric([netns], round(bytes_estimate))
        lookups = family("flowlens_agent_service_lookups_total")
        if sampler.services is not None:
            lookups.add_metric(["resolved"], sampler.services.resolved)
            lookups.add_metric(["unresolved"], sampler.services.lookups - sampler.services.resolved)
        return [*out, connections, estimate, lookups, *reporter_families(reporter)]


def endpoints_of(url: str) -> set[tuple[str, int]]:
    """The (address, port) pairs a collector URL reaches, so the agent knows its own reports."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(parsed.hostname or "", port, proto=socket.IPPROTO_TCP)
    except OSError:
        return set()
    return {(info[4][0], port) for info in infos}


def reporter_families(reporter: Reporter | None) -> list[Any]:
    """The sender's counters and the spool's state (none without a collector)."""
    if reporter is None:
        return []
    values = {"flowlens_agent_reports_sent_total": reporter.sent,
              "flowlens_agent_report_failures_total": reporter.failures_total,
              "flowlens_agent_spool_reports": reporter.spooled,
              "flowlens_agent_spool_bytes": reporter.spool.bytes(),
              "flowlens_agent_spool_dropped_total": reporter.spool.dropped}
    out = []
    for name, value in values.items():
        fam = family(name)
        fam.add_metric([], value)
        out.append(fam)
    refused = family("flowlens_agent_reports_refused_total")
    for status, count in sorted(reporter.refused.items()):
        refused.add_metric([str(status)], count)
    return [*out, refused]


class AgentStopping(BaseException):
    """Raised in the loop's thread to end a cycle at once when the agent is told to stop."""


class Watchdog:
    """Health from the loop's progress, checked by a thread of its own."""

    def __init__(self, agent: Agent, stall_after: float) -> None:
        self.agent = agent
        self.stall_after = stall_after
        self.problem = ""  # empty while healthy
        self.stalls = 0  # episodes of a stuck or missing cycle
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flowlens-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(min(1.0, self.stall_after / 4)):
            self.check()

    def check(self) -> str:
        """Re-evaluate health now; returns the problem, empty when healthy."""
        agent, now = self.agent, time.monotonic()
        problem = ""
        started = agent.cycle_started
        if started is not None and now - started > self.stall_after:
            problem = (f"collection cycle stuck for {now - started:.0f} s while "
                       f"{agent.sampler.busy or 'between namespaces'}")
        elif now - agent.last_cycle_end > self.stall_after + 2 * agent.config.interval:
            problem = f"no collection cycle completed for {now - agent.last_cycle_end:.0f} s"
        elif agent.last_result is not None and agent.last_result.errors and agent.last_timeouts:
            problem = "namespaces abandoned in the last cycle: " + "; ".join(agent.last_result.errors)
        if problem and not self.problem:
            self.stalls += 1
            log.error("agent unhealthy: %s", problem)
        elif self.problem and not problem:
            log.warning("agent healthy again")
        self.problem = problem
        return problem


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
        self.metrics_tokens = TokenSet([config.metrics_token_file], ENV_METRICS_TOKENS, what="metrics token")
        self.collector_endpoints = endpoints_of(config.collector) if config.collector else set()
        self.reporter: Reporter | None = None
        if config.collector:
            tokens = TokenSet([config.token_file], ENV_TOKEN, [config.token], what="collector token")
            self.reporter = Reporter(config.collector, tokens, Spool(Path(config.spool_dir), config.spool_max_bytes),
                                     verify=config.collector_ca or True)
        self.collector = SnapshotCollector()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)
        self.last_flows: list[dict[str, Any]] = []
        self.last_result: CycleResult | None = None
        self.cycle_started: float | None = None  # monotonic start of the cycle running now
        self.last_cycle_end = time.monotonic()
        self.last_timeouts = 0  # namespaces abandoned in the last cycle
        self.watchdog = Watchdog(self, config.watchdog or max(10.0, 2 * config.interval))
        self._stop = threading.Event()
        self._cycle_done = threading.Condition()

    def start(self) -> None:
        self.sampler.start()
        self.last_cycle_end = time.monotonic()
        # Every namespace's remainder is exported at zero before any traffic is counted in it.
        self.series.watch(self.sampler.labels(), self.sampler.clock(), self.collector.scrapes)
        self.collector.publish(flow_families(self.series))
        self.watchdog.start()

    def own(self, key: FlowKey) -> bool:
        """flowlens's own traffic: reports to the collector, scrapes of this agent's endpoint."""
        if key.role == "server":
            return key.netns == HOST_LABEL and key.server_port == self.config.port
        return (key.remote_ip, key.server_port) in self.collector_endpoints

    @property
    def problem(self) -> str:
        """Why the agent is unhealthy; empty when it is healthy."""
        return self.watchdog.problem

    def run_cycle(self) -> CycleResult:
        timeouts = self.sampler.timeouts
        self.cycle_started = time.monotonic()
        try:
            result = self.sampler.cycle()
        finally:
            self.cycle_started = None
        self.last_timeouts = self.sampler.timeouts - timeouts
        self.last_cycle_end = time.monotonic()
        self.last_result = result
        self.watchdog.check()  # health as of this cycle, for the snapshot below
        self.series.watch(self.sampler.labels(), result.end, self.collector.scrapes)
        self.series.update(result.end, result.flows, result.rtt_samples, result.active_sockets,
                           self.collector.scrapes)
        self.stats.observe(result)
        families = flow_families(self.series)
        families += node_families(result.node, self.config.node, self.config.instance_id, self.allowance_qdiscs)
        families += self.stats.families(self.sampler, result, self.series, self.watchdog, self.reporter)
        self.collector.publish(families)
        self.last_flows = interval_rows(result)
        if self.reporter is not None:
            delta = self.node_deltas(result.node)
            for report in build_reports(result, self.config.node, self.config.instance_id, delta, self.own):
                self.reporter.submit(report)
        with self._cycle_done:
            self.last_result = result
            self._cycle_done.notify_all()
        return result

    def loop(self, cycles: int = 0) -> None:
        """Run cycles every interval until stopped (or ``cycles`` of them), reading destroy
        events in between."""
        next_at = time.monotonic() + self.config.interval
        done = 0
        try:
            while not self._stop.is_set() and (not cycles or done < cycles):
                wait = next_at - time.monotonic()
                if wait > 0:
                    self.sampler.pump(min(wait, STOP_CHECK_SECONDS))
                    continue
                try:
                    self.run_cycle()
                except FlowlensError as err:
                    log.error("collection cycle failed: %s", err)
                done += 1
                next_at += self.config.interval
                if next_at < time.monotonic():  # a slow cycle: skip ahead rather than burst
                    next_at = time.monotonic() + self.config.interval
        except AgentStopping:
            log.info("stopping in the middle of a cycle")

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def stop_now(self) -> None:
        """Stop from a signal handler: ends a running cycle at once, in the loop's thread."""
        self._stop.set()
        if self.cycle_started is not None and threading.current_thread() is threading.main_thread():
            raise AgentStopping

    def close(self, timeout: float = 0.7) -> None:
        """Hand what is queued to the collector, or to the spool if it does not take it within
        ``timeout``, then release the kernel handles."""
        self.watchdog.stop()
        if self.reporter is not None:
            self.reporter.close(timeout)
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
    try:
        served = serve(agent)
    except BaseException:
        agent.close()
        raise
    try:
        yield agent
    except KeyboardInterrupt:
        pass
    finally:
        served.stop(2.0)
        agent.close()


def serve(agent: Agent) -> Served:
    """Bind the HTTP endpoint (raises a clear error if the port is taken) and serve it."""
    config = agent.config
    limits = Limits(config.header_timeout, config.header_timeout, config.max_connections)
    return serve_app(endpoint_app(agent, limits.stats), config.address, config.port, limits,
                     Tls(config.tls_cert, config.tls_key), "flowlens-http")


def endpoint_app(agent: Agent, stats: ServerStats) -> Guard:
    """``/metrics``, ``/flows`` (behind the agent's metrics tokens when set) and ``/healthz``."""

    async def metrics(request: Request) -> Response:
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(agent.registry), media_type=content_type)

    async def flows(request: Request) -> Response:
        body: dict[str, Any] = {"interval": agent.config.interval, "flows": agent.last_flows}
        wait = request.query_params.get("wait")
        if wait is not None and agent.last_result is None:
            try:
                seconds = min(max(float(wait), 0.0), 60.0)
            except ValueError:
                return JSONResponse({"error": "wait must be a number of seconds"}, status_code=422)
            await run_in_threadpool(agent.wait_cycle, seconds)
            body["flows"] = agent.last_flows
        return JSONResponse(body)

    async def healthz(_request: Request) -> Response:
        problem = agent.problem
        if problem:
            return PlainTextResponse(f"unhealthy: {problem}\n", status_code=503)
        return PlainTextResponse("ok\n")

    async def not_found(_request: Request, _exc: Exception) -> Response:
        return PlainTextResponse("not found: try /metrics, /flows or /healthz\n", status_code=404)

    app = Starlette(routes=[Route("/metrics", metrics), Route("/flows", flows), Route("/healthz", healthz)],
                    exception_handlers={404: not_found})

    def policy(_method: str, path: str) -> Rule:
        return Rule(None if path == "/healthz" else agent.metrics_tokens, 0)

    return Guard(app, policy, stats)
