"""``flowlens collector``, ``flowlens map``, ``flowlens top`` and ``flowlens up``.

The query commands ask a collector over HTTP (the local one by default, ``--collector URL``
otherwise) and print a table, or the API's JSON with ``--json``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import httpx
import msgspec
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from flowlens import __version__
from flowlens.collector.config import CollectorConfig
from flowlens.model.errors import FlowlensError
from flowlens.model.findings import Diagnosis, PathHealth
from flowlens.model.queries import Endpoint, FlowRow, MapNode, ServiceMap
from flowlens.surfaces.files import private_files
from flowlens.surfaces.flows_table import human_bytes, output_console
from flowlens.surfaces.settings_cli import with_settings

ENV = "FLOWLENS_"
DEFAULT_COLLECTOR = "http://127.0.0.1:9102"
log = logging.getLogger("flowlens")

CollectorUrl = Annotated[str, typer.Option("--collector", help="Collector to ask.", envvar=ENV + "COLLECTOR_URL")]
SinceOpt = Annotated[str, typer.Option("--since", help="Range start: 10m, 2h, 7d back from now, or an ISO time.")]
NamespaceOpt = Annotated[list[str] | None, typer.Option("--namespace", "-N", help="Only flows with an end in "
                                                        "this Kubernetes namespace (repeatable).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the API's JSON.")]


@dataclass
class RunningCollector:
    """A collector serving its API from this process; :meth:`stop` ends it cleanly."""

    collector: Any
    served: Any

    @property
    def url(self) -> str:
        return self.served.url

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking connections, finish the requests in flight, then close the store."""
        self.served.stop(timeout)
        self.collector.close()


def serve_collector(config: Any, extra_sockets: tuple[Any, ...] = (), tls: Any = None,
                    limits: Any = None) -> RunningCollector:
    """Start a collector in this process (its API on a thread); ``extra_sockets`` are listening
    sockets opened elsewhere (another network namespace) that serve the same API."""
    from flowlens.collector.service import Collector, check_tokens
    from flowlens.collector.store.duckdb import DuckDBStore
    from flowlens.surfaces.api import create_app
    from flowlens.web.server import Limits, Tls, bind, serve

    limits = limits or Limits(config.header_timeout, config.body_timeout, config.max_connections)
    tls = tls or Tls(config.tls_cert, config.tls_key)
    check_tokens(config)
    bind(config.address, config.port).close()  # a taken port or a foreign address: one clear line, before the store
    collector = Collector(config, DuckDBStore(config.store))
    try:
        collector.start()
        served = serve(create_app(collector, limits.stats, limits.body_timeout), config.address, config.port, limits,
                       tls, "collector-http", extra_sockets)
    except BaseException:
        collector.close()
        raise
    return RunningCollector(collector, served)


def run_until_signalled(running: RunningCollector, also: Any = None) -> None:
    """Serve until SIGTERM or Ctrl-C, then stop cleanly (exit status 0)."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    finally:
        log.info("stopping: finishing the requests in flight, then closing the store")
        running.stop()



def register(app: typer.Typer) -> None:
    @app.command()
    @with_settings(CollectorConfig)
    def collector(flags: dict[str, Any], config: Annotated[Path | None, typer.Option(
            "--config", "-c", help="YAML file of collector settings (keys as the long flags: port, store, ...).",
            envvar=ENV + "COLLECTOR_CONFIG")] = None) -> None:
        """Run the collector: receive agent reports, enrich them, store them, answer queries."""
        settings = CollectorConfig.load(config, flags)
        logging.getLogger("flowlens").setLevel(logging.INFO)
        private_files()
        running = serve_collector(settings)
        log.info("collector listening on %s (API docs at /docs), store %s", running.url, settings.store)
        run_until_signalled(running)

    @app.command()
    def up(
        port: Annotated[int, typer.Option(help="Collector API port.", min=1, max=65535)] = 9102,
        agent_port: Annotated[int, typer.Option(help="Agent /metrics port.", min=1, max=65535)] = 9101,
        interval: Annotated[float, typer.Option(help="Agent interval in seconds.", min=0.1, max=3600)] = 5.0,
        store: Annotated[str, typer.Option(help="DuckDB file of the flow store.")] = "flowlens.duckdb",
        inventory_file: Annotated[str, typer.Option(help="Optional inventory (`kubectl get -o json`).")] = "",
        ip_ranges: Annotated[str, typer.Option(help="Optional cloud IP ranges file (AWS format).")] = "",
        duration: Annotated[float, typer.Option(help="Stop after this many seconds (0: until Ctrl-C).", min=0)] = 0.0,
    ) -> None:
        """Watch this host: an agent and a collector with the embedded store, in one process."""
        from flowlens.agent.config import load
        from flowlens.agent.runtime import serving

        logging.getLogger("flowlens").setLevel(logging.INFO)
        private_files()
        config = load(None, {"port": agent_port, "interval": interval, "collector": f"http://127.0.0.1:{port}",
                             "spool_dir": store + ".spool", "address": "127.0.0.1"})
        running = serve_collector(CollectorConfig(port=port, store=store, inventory_file=inventory_file,
                                                  ip_ranges=ip_ranges))
        err = Console(stderr=True)
        err.print(f"flowlens up: agent on http://127.0.0.1:{agent_port}/metrics reporting every {interval:g}s to the "
                  f"collector on {running.url} (store {store}).\n"
                  "Ask it: `flowlens map`, `flowlens top --by retransmissions`, `flowlens flows`. Ctrl-C stops.")
        try:
            with serving(config) as agent:
                if duration:
                    threading.Timer(duration, agent.stop).start()
                signal.signal(signal.SIGTERM, lambda *_: agent.stop_now())
                agent.loop()
        finally:
            running.stop()

    @app.command()
    def diagnose(collector_url: CollectorUrl = DEFAULT_COLLECTOR, since: SinceOpt = "10m",
                 as_json: JsonOpt = False) -> None:
        """Explain slow inference: findings with evidence, impact and a recommendation, and the health indicator."""
        body = _get(collector_url, "/api/v1/findings", {"since": since})
        if as_json:
            sys.stdout.write(json.dumps(body, indent=2) + "\n")
            return
        print_diagnosis(output_console(), answer(body, Diagnosis, collector_url), since)

    @app.command()
    def health(collector_url: CollectorUrl = DEFAULT_COLLECTOR, since: SinceOpt = "10m",
               as_json: JsonOpt = False) -> None:
        """The network health indicator (0 healthy, 1 network-side problem) per path and overall."""
        body = _get(collector_url, "/api/v1/health", {"since": since})
        if as_json:
            sys.stdout.write(json.dumps(body, indent=2) + "\n")
            return
        console = output_console()
        health = answer(body["health"], int, collector_url)
        console.print(f"network health over the last {since}: [bold]{health}[/] "
                      f"({'network-side problem' if health else 'healthy'})")
        for path in answer(body["paths"], list[PathHealth], collector_url):
            console.print(f"  {path.health}  {escape(path.path)}  {_path_numbers(path.evidence)}")

    @app.command("map")
    def service_map(
        collector_url: CollectorUrl = DEFAULT_COLLECTOR, since: SinceOpt = "1h",
        level: Annotated[str, typer.Option(help="workload, pod, zone or namespace.")] = "workload",
        namespace: NamespaceOpt = None, as_json: JsonOpt = False,
    ) -> None:
        """The service map: who talks to whom, with bytes, retransmissions, failures, RTT, category."""
        body = _get(collector_url, "/api/v1/map", {"since": since, "level": level, "namespace": namespace or []})
        if as_json:
            sys.stdout.write(json.dumps(body, indent=2) + "\n")
            return
        table = Table("from", "to", "category", "bytes →", "bytes ←", "retrans", "ooo", "rto", "failed", "rtt ms",
                      title=f"service map ({level}, last {since})", title_justify="left")
        service_map = answer(body, ServiceMap, collector_url)
        for edge in sorted(service_map.edges, key=lambda e: -e.total_bytes):
            table.add_row(_node(edge.source), _node(edge.destination), edge.category,
                          human_bytes(edge.bytes_to_destination), human_bytes(edge.bytes_to_source),
                          str(edge.retransmitted_segments), str(edge.received_out_of_order), str(edge.rto),
                          str(edge.connections_failed), _ms(edge.rtt_mean_us))
        output_console().print(table)

    @app.command()
    def top(
        collector_url: CollectorUrl = DEFAULT_COLLECTOR, since: SinceOpt = "1h",
        view: Annotated[str | None, typer.Option(help="aws, cluster or external (all when omitted).")] = None,
        by: Annotated[str, typer.Option(help="bytes, retransmissions, timeouts, failed or rtt.")] = "bytes",
        limit: Annotated[int, typer.Option("--limit", "-n", help="Rows.")] = 10,
        namespace: NamespaceOpt = None, as_json: JsonOpt = False,
    ) -> None:
        """Top contributors of the flow table."""
        params: dict[str, Any] = {"since": since, "by": by, "limit": limit, "namespace": namespace or []}
        if view:
            params["view"] = view
        body = _get(collector_url, "/api/v1/flows", params)
        if as_json:
            sys.stdout.write(json.dumps(body, indent=2) + "\n")
            return
        table = Table("client", "server", "port", "category", "bytes", "retrans", "ooo", "rto", "failed", "rtt ms",
                      title=f"top flows by {by} ({view or 'all views'}, last {since})", title_justify="left")
        for row in answer(body["flows"], list[FlowRow], collector_url):
            table.add_row(_end(row.client), _end(row.server), str(row.server_port), row.category,
                          human_bytes(row.total_bytes), str(row.retransmitted_segments),
                          str(row.received_out_of_order), str(row.rto), str(row.connections_failed),
                          _ms(row.rtt_mean_us))
        output_console().print(table)


SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow", "info": "green"}


def print_diagnosis(console: Console, diagnosis: Diagnosis, since: str) -> None:
    health = diagnosis.health
    console.print(f"[bold]network health[/] over the last {since}: {health} "
                  f"({'a network-side problem' if health else 'no network-side problem'})")
    if not diagnosis.findings:
        console.print("no findings: the network explains nothing slow in this window")
    for finding in diagnosis.findings:
        style = SEVERITY_STYLE.get(finding.severity, "")
        console.print(f"\n[{style}]{finding.severity.upper()}[/] [bold]{escape(finding.title)}[/] "
                      f"[dim]({finding.kind})[/]")
        where = "; ".join(f"{k}: {', '.join(v)}" for k, v in finding.where.items() if v)
        console.print(f"  where: {escape(where)}")
        console.print(f"  evidence: {escape(_brief(finding.evidence))}")
        if finding.impact:
            console.print(f"  impact: {escape(_brief(finding.impact))}")
        console.print(f"  → {escape(finding.recommendation)}")
    for note in diagnosis.notes:
        console.print(f"[dim]note: {escape(note)}[/]")


def answer(body: Any, record: Any, collector: str) -> Any:
    """An API answer as the typed records the store returns, or one line saying it does not fit."""
    try:
        return msgspec.convert(body, record, strict=False)
    except msgspec.ValidationError as err:
        raise FlowlensError(f"the collector at {collector} answered something this flowlens {__version__} does not "
                            f"read ({err}): are both the same version?") from None


def _path_numbers(evidence: dict[str, Any]) -> str:
    """A path's evidence in a line: losses, timeouts, RTT against its usual, degraded flows."""
    parts = [f"loss {evidence.get('loss_rate', 0.0):.2%}", f"rto {evidence.get('rto', 0)}"]
    if evidence.get("rtt_ms") is not None:
        usual = evidence.get("usual_rtt_ms")
        parts.append(f"rtt {evidence['rtt_ms']:g} ms" + (f" (usually {usual:g})" if usual is not None else ""))
    parts.append(f"degraded flows {evidence.get('degraded_flows', 0)}/{evidence.get('flows', 0)}")
    return "  ".join(parts)


def _brief(values: dict[str, Any]) -> str:
    parts = []
    for key, value in values.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            value = f"{len(value)} items, first {json.dumps(value[0])}"
        elif isinstance(value, float):
            value = f"{value:.4g}"
        parts.append(f"{key}={value}")
    return ", ".join(parts)


def _get(base: str, path: str, params: dict[str, Any]) -> Any:
    return _ask("GET", base, path, params=params)


def post_events(base: str, events: list[dict[str, Any]]) -> int:
    """Send events to a collector (its writers' token from FLOWLENS_TOKEN_FILE or FLOWLENS_TOKEN);
    how many it took."""
    return int(_ask("POST", base, "/api/v1/events", json=events)["stored"])


def _ask(method: str, base: str, path: str, **request: Any) -> Any:
    from flowlens.model.errors import FlowlensError
    from flowlens.web.auth import TokenSet

    token = TokenSet([os.environ.get(ENV + "TOKEN_FILE", "")], ENV + "TOKEN", what="token").first()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = httpx.request(method, base.rstrip("/") + path, timeout=60, headers=headers, **request)
    except httpx.HTTPError as err:
        raise FlowlensError(f"no collector answers at {base} ({err}): start one with `flowlens collector` or "
                            "`flowlens up`, or pass --collector URL") from None
    if response.status_code in (401, 403):
        raise FlowlensError(f"the collector wants a token ({response.status_code}): put it in a file and "
                            "set FLOWLENS_TOKEN_FILE, or set FLOWLENS_TOKEN")
    if response.status_code >= 400:
        raise FlowlensError(f"the collector refused the request: {response.status_code} {response.text[:300]}")
    return response.json()


def _node(node: MapNode) -> str:
    name = node.name
    if node.namespace:
        name = f"{node.namespace}/{name}"
    if node.region:
        name = f"{name} ({node.region})"
    return escape(name)


def _end(end: Endpoint) -> str:
    if end.workload:
        text = f"{end.namespace}/{end.workload}"
        if end.pod:
            text += f" ({end.pod})"
    elif end.cloud_service:
        text = f"{end.cloud_service} {end.region or ''} {end.ip}"
    else:
        text = end.ip
    return escape(text.strip())


def _ms(us: float | None) -> str:
    return f"{us / 1000:.2f}" if us else "-"
