"""The ``flowlens`` command line.

Each command prints one clear line and exits non-zero when it cannot do its job; a traceback
only with ``--debug``.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import time
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.live import Live
from rich.markup import escape

from flowlens.agent.config import AgentConfig, load
from flowlens.agent.export.exporter import metrics_markdown
from flowlens.agent.export.flowview import interval_rows
from flowlens.agent.runtime import serving
from flowlens.agent.sampling.sampler import Sampler
from flowlens.model.errors import ConfigError, FlowlensError
from flowlens.surfaces.files import private_files
from flowlens.surfaces.flows_table import flows_table, output_console
from flowlens.surfaces.settings_cli import settings_markdown, with_settings

app = typer.Typer(
    name="flowlens",
    help="Kubernetes-aware network flow observability for ML inference.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)
_state = {"debug": False}

ENV = "FLOWLENS_"


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False) -> None:
    _state["debug"] = debug
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML file of agent settings "
                                                "(keys as the long flags: port, interval, max-flow-series, ...).",
                                                envvar=ENV + "CONFIG")]
@app.command()
@with_settings(AgentConfig)
def agent(flags: dict[str, Any], config: ConfigOpt = None) -> None:
    """Run the per-node agent: account every TCP flow and serve /metrics.

    Counting starts at start-up: connections already open are counted only for what they
    transfer afterwards.
    """
    cfg = load(config, flags)
    logging.getLogger("flowlens").setLevel(logging.DEBUG if _state["debug"] else logging.INFO)
    private_files()
    with serving(cfg) as runner:
        logging.getLogger("flowlens").info("agent serving http://%s:%d/metrics every %gs", cfg.address, cfg.port,
                                           cfg.interval)
        signal.signal(signal.SIGTERM, lambda *_: runner.stop_now())
        runner.loop()


@app.command()
@with_settings(AgentConfig, only=("port", "address", "interval"))
def live(flags: dict[str, Any],
         limit: Annotated[int, typer.Option("--limit", "-n", help="Rows in the table.")] = 20,
         duration: Annotated[float, typer.Option("--duration", help="Stop after this many seconds (0: run until "
                                                 "interrupted).")] = 0.0) -> None:
    """Run the agent on this host and watch its top flows live (the Quick start's main job).

    /metrics is served as by `flowlens agent` while the table refreshes every interval.
    """
    cfg = load(None, flags)
    deadline = time.monotonic() + duration if duration else None
    with serving(cfg) as runner, Live(console=Console(), auto_refresh=False) as view:
        err_console.print(f"flowlens agent: metrics at http://{cfg.address}:{cfg.port}/metrics, "
                          f"refreshing every {cfg.interval:g}s; Ctrl-C to stop")
        while (deadline is None or time.monotonic() < deadline) and not runner.stopped:
            runner.loop(cycles=1)
            result = runner.last_result
            if result is None:
                continue
            title = (f"flowlens · top flows · {time.strftime('%H:%M:%S')} · {result.sockets} sockets in "
                     f"{result.namespaces} namespaces · cycle {result.collect_seconds * 1000:.0f} ms")
            view.update(flows_table(runner.last_flows, limit, title), refresh=True)


@app.command()
def flows(
    agent_url: Annotated[str, typer.Option("--agent", help="URL of a running agent.", envvar=ENV + "AGENT_URL")]
    = "http://127.0.0.1:9101",
    local: Annotated[bool, typer.Option("--local", help="Sample this host directly instead of asking an agent "
                                        "(needs root).")] = False,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh every interval until interrupted.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per flow, one per line.")] = False,
    limit: Annotated[int, typer.Option("--limit", "-n", help="Rows in the table.")] = 20,
    interval: Annotated[float, typer.Option("--interval", "-i", help="Seconds per interval when sampling "
                                            "locally.")] = 5.0,
    duration: Annotated[float, typer.Option("--duration", help="With --watch, stop after this many seconds "
                                            "(0: never).")] = 0.0,
) -> None:
    """Show the top flows of the last interval, from a running agent or sampled here.

    Without --local, asks the agent at --agent; if none answers, samples this host itself.
    """
    source = _flow_source(agent_url, local, interval)
    deadline = time.monotonic() + duration if duration else None
    if not watch:
        _print_rows(source(), as_json, limit)
        return
    if as_json:
        while deadline is None or time.monotonic() < deadline:
            _print_rows(source(), True, limit)
        return
    with Live(console=Console(), auto_refresh=False) as live:
        while deadline is None or time.monotonic() < deadline:
            rows = source()
            live.update(flows_table(rows, limit, f"flowlens · top flows · {time.strftime('%H:%M:%S')}"),
                        refresh=True)


PostOpt = Annotated[bool, typer.Option("--post", help="Also send the mean latencies to the collector as latency "
                                         "events, so that `flowlens diagnose` can tell whether inference slowed "
                                         "down and why.")]
PostTo = Annotated[str, typer.Option("--collector", help="Collector to post to.", envvar="FLOWLENS_COLLECTOR_URL")]
OfNamespace = Annotated[str, typer.Option("--namespace", help="Namespace of the pod or workload measured.")]
OfWorkload = Annotated[str, typer.Option("--workload", help="Workload measured (e.g. its Deployment's name).")]
OfPod = Annotated[str, typer.Option("--pod", help="Pod measured, when one.")]
OfNode = Annotated[str, typer.Option("--node", help="Its node, when known.")]


def _check_post(post: bool, workload: str, pod: str) -> None:
    if post and not (workload or pod):
        raise FlowlensError("--post needs whose latency it is: --workload NAME or --pod NAME (and --namespace)")


def _post_latency(means: dict[str, tuple[float, int]], start: float, end: float, collector: str, namespace: str,
                  workload: str, pod: str, node: str) -> None:
    from flowlens.signals.events import Target, latency_events
    from flowlens.surfaces.collector_cli import post_events

    events = latency_events(means, start, end, Target(namespace, workload, pod, node))
    stored = post_events(collector, events) if events else 0
    err_console.print(f"posted {stored} latency events to {collector}")


@app.command()
def probe(
    url: Annotated[str, typer.Argument(help="Endpoint: .../v1/completions, .../v1/chat/completions or "
                                       ".../sdapi/v1/txt2img.")],
    requests: Annotated[int, typer.Option("--requests", "-n", help="Requests to send.")] = 10,
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", help="Requests in flight at once.")] = 1,
    model: Annotated[str, typer.Option(help="Model name for OpenAI-compatible servers.")] = "default",
    prompt: Annotated[str, typer.Option(help="Prompt to send.")] = "Describe a dog in one paragraph.",
    max_tokens: Annotated[int, typer.Option(help="Output tokens to ask for.")] = 64,
    steps: Annotated[int, typer.Option(help="Steps for Stable Diffusion requests.")] = 16,
    size: Annotated[int, typer.Option(help="Image width and height for Stable Diffusion requests.")] = 512,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary (and every request) as JSON.")] = False,
    output: Annotated[Path | None, typer.Option(help="Also append each request as a JSON line to this file.")]
    = None,
    post: PostOpt = False, collector: PostTo = "http://127.0.0.1:9102", namespace: OfNamespace = "",
    workload: OfWorkload = "", pod: OfPod = "", node: OfNode = "",
) -> None:
    """Measure TTFT, end-to-end latency, inter-token latency and output tokens/s of an inference endpoint."""
    from functools import partial

    from flowlens.signals import probe as probing

    kind = "sdapi" if "/sdapi/" in url else "openai"
    if kind == "sdapi":
        payload = {"prompt": prompt, "steps": steps, "width": size, "height": size}
        request = partial(probing.sdapi_request, url=url, payload=payload)
    else:
        request = partial(probing.openai_request, url=url, model=model, prompt=prompt, max_tokens=max_tokens)
    _check_post(post, workload, pod)
    summary = probing.run(url, kind, requests, concurrency, lambda client: request(client))
    if post:
        from flowlens.signals.events import from_probe

        ended = time.time()
        _post_latency(from_probe(summary), ended - summary.duration_s, ended, collector, namespace, workload, pod,
                      node)
    if output is not None:
        with output.open("a") as f:
            for result in summary.results:
                f.write(json.dumps({"target": url, **probing.asdict(result)}) + "\n")
    if as_json:
        sys.stdout.write(json.dumps(summary.to_json(with_requests=True), indent=2) + "\n")
        return
    console = output_console()
    console.print(f"{summary.kind} probe of {url}: {summary.requests} requests, {summary.failures} failed, "
                  f"{summary.duration_s:.2f} s")
    for name, stats in (("TTFT", summary.ttft_s), ("end-to-end", summary.e2e_s), ("inter-token", summary.itl_s)):
        if stats:
            console.print(f"  {name:<12} mean {stats['mean'] * 1000:8.1f} ms   p50 {stats['p50'] * 1000:8.1f} ms   "
                          f"p90 {stats['p90'] * 1000:8.1f} ms   p99 {stats['p99'] * 1000:8.1f} ms")
    console.print(f"  output       {summary.output_tokens} tokens, {summary.output_tokens_per_s:.1f} tokens/s")
    if summary.failures:
        first = next(r for r in summary.results if not r.ok)
        err_console.print(f"[yellow]first failure:[/] status {first.status} {first.error}")
        raise typer.Exit(1)


@app.command()
def signals(url: Annotated[str, typer.Argument(help="Prometheus endpoint of an inference server (vLLM, Triton, "
                                                  "the reference runtime).")],
            window: Annotated[float, typer.Option(help="Seconds between two scrapes; 0: one scrape, means since "
                                                       "the server started.")] = 0.0,
            as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
            post: PostOpt = False, collector: PostTo = "http://127.0.0.1:9102", namespace: OfNamespace = "",
            workload: OfWorkload = "", pod: OfPod = "", node: OfNode = "") -> None:
    """Request latency the server itself reports: TTFT, end-to-end, inter-token, queue time, model loads."""
    from flowlens.signals.scrape import difference, scrape

    if post and window <= 0:
        raise FlowlensError("--post needs --window SECONDS: the means of one scrape cover the server's whole life")
    _check_post(post, workload, pod)
    started = time.time()
    reading = scrape(url)
    if window > 0:
        time.sleep(window)
        reading = difference(reading, scrape(url))
    if post:
        from flowlens.signals.events import from_reading

        _post_latency(from_reading(reading), started, time.time(), collector, namespace, workload, pod, node)
    summary = reading.summary()
    if as_json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
        return
    for key, value in summary.items():
        output_console().print(f"{key:<28} {value if not isinstance(value, float) else f'{value:.4g}'}")


@app.command("settings-doc")
def settings_doc() -> None:
    """Print the settings reference (docs/settings.md) of the agent and the collector."""
    from flowlens.collector.service import CollectorConfig
    typer.echo(settings_markdown(("Agent (`flowlens agent`)", AgentConfig),
                                 ("Collector (`flowlens collector`)", CollectorConfig)), nl=False)


@app.command("report-schema-doc")
def report_schema_doc() -> None:
    """Print the agent → collector report's reference (docs/report-schema.md)."""
    from flowlens.surfaces.report_doc import report_schema_markdown
    typer.echo(report_schema_markdown(), nl=False)


@app.command("metrics-doc")
def metrics_doc() -> None:
    """Print the reference of every exported metric (Markdown), as docs/metrics.md holds it."""
    sys.stdout.write(metrics_markdown())


def _print_rows(rows: list[dict[str, Any]], as_json: bool, limit: int) -> None:
    if as_json:
        for row in rows:
            sys.stdout.write(json.dumps(row) + "\n")
        sys.stdout.flush()
    else:
        output_console().print(flows_table(rows, limit, "flowlens · top flows of the last interval"))


def _flow_source(agent_url: str, local: bool, interval: float) -> Any:
    if not local:
        try:
            httpx.get(f"{agent_url}/healthz", timeout=1.0).raise_for_status()
        except httpx.HTTPError:
            err_console.print(f"[yellow]no agent answers at {agent_url}; sampling this host directly[/]")
        else:
            return _AgentSource(agent_url)
    sampler = Sampler()
    sampler.start()

    def sample() -> list[dict[str, Any]]:
        time.sleep(interval)
        return interval_rows(sampler.cycle())

    return sample


class _AgentSource:
    """Reads /flows from an agent, waiting for each new interval."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.last_end: float | None = None

    def __call__(self) -> list[dict[str, Any]]:
        while True:
            body = httpx.get(f"{self.url}/flows", params={"wait": 30}, timeout=35).json()
            rows = body["flows"]
            end = rows[0]["end"] if rows else None
            if self.last_end is None or end != self.last_end or not rows:
                self.last_end = end
                return rows
            time.sleep(min(1.0, body.get("interval", 5) / 5))


def _collector_commands() -> None:
    from flowlens.surfaces.collector_cli import register

    register(app)


_collector_commands()


def _plug_in_commands() -> None:
    """Sub-commands other packages add (the lab adds `flowlens lab`), found by entry point."""
    for entry in entry_points(group="flowlens.commands"):
        try:
            app.add_typer(entry.load(), name=entry.name)
        except ModuleNotFoundError as err:  # the lab's extra is not installed: say how to get it
            app.command(entry.name, help="(not installed: pip install 'flowlens\\[lab]')",
                        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
                        add_help_option=False)(_missing_extra(entry.name, err.name or "?"))
        except Exception as err:  # a broken plug-in must not take the core commands down
            logging.getLogger(__name__).warning("command %s unavailable: %s", entry.name, err)


def _missing_extra(command: str, module: str) -> Callable[[], None]:
    def missing() -> None:
        raise ConfigError(f"`flowlens {command}` needs the lab extra ({module} is missing): "
                          "pip install 'flowlens[lab]' (scripts/install.sh does)")
    return missing


_plug_in_commands()


def main() -> None:
    try:
        app()
    except FlowlensError as err:
        if _state["debug"]:
            raise
        err_console.print(f"[red]error:[/] {escape(str(err))}")
        sys.exit(err.exit_code)
    except httpx.HTTPError as err:
        if _state["debug"]:
            raise
        err_console.print(f"[red]error:[/] cannot reach the agent: {escape(str(err))}")
        sys.exit(1)
