"""``flowlens lab ...``: the lab's commands, plugged into the flowlens CLI as a sub-command."""

from __future__ import annotations

import importlib.util
import json
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from flowlens.surfaces.timerange import parse_duration
from flowlens_lab import lab
from flowlens_lab.spec import NODE_TYPES, LabSpec

# The lab's own dependencies come with the `lab` extra; without them `flowlens lab` and
# `flowlens demo` are listed as not installed instead of failing half-way through `lab up`.
for _module in ("boto3", "moto", "safetensors", "PIL"):
    if importlib.util.find_spec(_module) is None:
        raise ModuleNotFoundError(f"the lab needs {_module}", name=_module)

app = typer.Typer(name="lab", help="The scenario's ML-inference cluster, reproduced on this machine.",
                  no_args_is_help=True)
fault_app = typer.Typer(help="Inject and clear faults (each reversible).", no_args_is_help=True)
app.add_typer(fault_app, name="fault")
err = Console(stderr=True)


def seconds(text: str) -> float:
    """``2s``, ``1.5m``, ``300`` → seconds, or a usage error."""
    try:
        return parse_duration(text)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None


def _print(data: Any, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return
    console = Console()
    if not data.get("up"):
        console.print("no lab is up")
        return
    nodes = Table("node", "zone", "type", "bandwidth", "ip", "agent", title="nodes", title_justify="left")
    for n in data["nodes"]:
        nodes.add_row(n["name"], n["zone"], n["instance_type"], f"{n['bandwidth_mbit']:g} Mbit/s "
                      f"(≙ {n['real_bandwidth_gbps']:g} Gbps)", n["ip"], "running" if n["agent_running"] else "down")
    pods = Table("pod", "namespace", "node", "zone", "ip", "ready", title="pods", title_justify="left")
    for p in data["pods"]:
        pods.add_row(p["name"], p["namespace"], p["node"], p["zone"], p["ip"], "yes" if p["ready"] else "no")
    services = Table("service", "cluster ip", "port", "endpoints", title="services", title_justify="left")
    for s in data["services"]:
        services.add_row(f"{s['namespace']}/{s['name']}", s["cluster_ip"], str(s["port"]), ", ".join(s["endpoints"]))
    console.print(nodes, pods, services)
    console.print(f"topology-aware routing: {'on' if data['topology_aware_routing'] else 'off'} · faults: "
                  + (", ".join(f["name"] for f in data["faults"]) or "none") + f" · inventory: {data['inventory']}")


@app.command()
def up(runtime_type: Annotated[str, typer.Option(help="Instance type of the runtime's node pool.")] = "g5.2xlarge",
       weights_mib: Annotated[int, typer.Option(help="Size of the model weights in the object store.")] = 256,
       cooldown: Annotated[str, typer.Option(help="Autoscaler cooldown before scaling in (e.g. 300s).")] = "300s",
       agent_interval: Annotated[str, typer.Option(help="The node agents' collection interval.")] = "5s",
       topology_aware: Annotated[bool, typer.Option(help="Start with topology-aware routing on.")] = False,
       as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False) -> None:
    """Build the default scenario: zones, nodes, the inference workload, agents, the autoscaler."""
    if runtime_type not in NODE_TYPES:
        raise typer.BadParameter(f"unknown instance type; choose one of {', '.join(NODE_TYPES)}")
    spec = LabSpec(runtime_type=runtime_type, weights_mib=weights_mib, cooldown_s=seconds(cooldown),
                   agent_interval_s=seconds(agent_interval), topology_aware=topology_aware)
    _print(lab.up(spec, progress=lambda m: err.print(f"[cyan]lab:[/] {m}")), as_json)


@app.command()
def down() -> None:
    """Remove everything the lab created (also after a crash or an interrupted `lab up`)."""
    removed = lab.down(progress=lambda m: err.print(f"[cyan]lab:[/] {m}"))
    err.print(f"lab removed: {removed['namespaces']} namespaces, {removed['processes']} processes")


@app.command()
def status(as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False) -> None:
    """Nodes (zone, instance type, bandwidth), pods (namespace, node, IP) and services."""
    _print(lab.status(), as_json)


@app.command()
def scale(minimum: Annotated[int, typer.Option("--min", help="Fewest runtime replicas.")],
          maximum: Annotated[int, typer.Option("--max", help="Most runtime replicas.")]) -> None:
    """The runtime autoscaler's bounds: new pods (on new nodes) load their weights from S3."""
    lab.scale_runtime(minimum, maximum)
    err.print(f"runtime replicas between {minimum} and {maximum}")


@app.command()
def load(every: Annotated[str, typer.Option(help="Time between rounds of three tasks.")] = "2s",
         duration: Annotated[str, typer.Option(help="How long to send.")] = "60s") -> None:
    """Send the scenario's test tasks (text-to-image, image-to-image, upscale) to the task API."""
    from flowlens_lab.loadgen import send

    summary = send(seconds(every), seconds(duration), progress=lambda m: err.print(f"[cyan]load:[/] {m}"))
    err.print(f"sent {summary['sent']} tasks ({summary['rejected']} rejected)")


@fault_app.command("block")
def fault_block(source: Annotated[str, typer.Option("--from", help="Namespace or namespace/workload.")],
                target: Annotated[str, typer.Option("--to", help="Namespace or namespace/workload.")],
                port: Annotated[int, typer.Option(help="TCP port to block.")]) -> None:
    """Drop connections from one workload to another, as a NetworkPolicy would."""
    err.print(f"fault on: {lab.fault_block(source, target, port)['name']}")


@fault_app.command("loss")
def fault_loss(percent: Annotated[float, typer.Option(help="Share of packets dropped.")] = 5.0,
               between: Annotated[str, typer.Option(help="Two zones, comma-separated: traffic between them on "
                                                    "the zone router.")] = "",
               node: Annotated[str, typer.Option(help="A node's name: its uplink.")] = "",
               pod: Annotated[str, typer.Option(help="A pod's name: its network interface.")] = "",
               remote: Annotated[str, typer.Option(help="A regional service (S3, SQS, SNS): its address.")] = "",
               zone: Annotated[str, typer.Option(help="A zone: all its traffic through the zone router.")] = "",
               ) -> None:
    """Random packet loss: on the zone router (default: all its traffic), in one zone, between two
    zones, on a node, on a pod, or at a regional service."""
    zones = tuple(z.strip() for z in between.split(",")) if between else None
    if zones is not None and len(zones) != 2:
        raise typer.BadParameter("--between takes two zones, e.g. us-east-1a,us-east-1b")
    err.print(f"fault on: {lab.fault_loss(percent, zones, node, pod, remote, zone)['name']}")  # type: ignore[arg-type]


@fault_app.command("slow")
def fault_slow(service: Annotated[str, typer.Argument(help="A regional service: S3, SQS or SNS.")],
               mbit: Annotated[float, typer.Option(help="What it sends at most, in Mbit/s.")] = 5.0) -> None:
    """A throttled regional service: it sends no faster than --mbit (a short queue drops the rest)."""
    err.print(f"fault on: {lab.fault_slow(service, mbit)['name']}")


@fault_app.command("busy")
def fault_busy(pod: Annotated[str, typer.Argument(help="A pod's name (`flowlens lab status`).")],
               cpus: Annotated[int, typer.Option(help="CPUs to keep busy in it.")] = 2) -> None:
    """A pod whose CPU is kept busy: slow for reasons that are not the network."""
    err.print(f"fault on: {lab.fault_busy(pod, cpus)['name']}")


@fault_app.command("node-type")
def fault_node_type(instance_type: Annotated[str, typer.Argument(help="e.g. g5.2xlarge or g5.4xlarge.")]) -> None:
    """Swap the runtime pool's instance type (its bandwidth allowance) on existing and new nodes."""
    changed = lab.set_node_type(instance_type)
    err.print(f"runtime pool is now {instance_type}: {len(changed)} nodes re-shaped")


@fault_app.command("topology")
def fault_topology(mode: Annotated[str, typer.Argument(help="on or off")]) -> None:
    """Topology-aware routing of the sdruntime Service on or off."""
    if mode not in ("on", "off"):
        raise typer.BadParameter("say on or off")
    lab.set_topology_aware(mode == "on")
    err.print(f"topology-aware routing {mode}")


@fault_app.command("clear")
def fault_clear(name: Annotated[str | None, typer.Argument(help="A fault's name or kind; all when omitted.")]
                = None) -> None:
    """Remove faults."""
    err.print("cleared: " + (", ".join(lab.clear_faults(name)) or "nothing"))


demo_app = typer.Typer(name="demo", help="The scenario end to end: slow model loads, their diagnosis, the fix.",
                       invoke_without_command=True)


@demo_app.callback()
def demo(keep: Annotated[bool, typer.Option(help="Leave the lab running at the end.")] = False,
         as_json: Annotated[bool, typer.Option("--json", help="Print each phase's findings as JSON.")] = False,
         weights_mib: Annotated[int, typer.Option(help="Size of the model weights: SDXL-Turbo's 6.9 GB (fp16) "
                                                  "scaled 100× like the bandwidths.")] = 64,
         agent_interval: Annotated[str, typer.Option(help="Agent report interval.")] = "2s") -> None:
    """Lab up → load → diagnose → switch to the large node type and topology-aware routing →
    diagnose again → lab down."""
    from flowlens_lab.demo import run_demo

    raise typer.Exit(run_demo(keep, as_json, weights_mib, seconds(agent_interval)))
