"""``flowlens lab up|down|status`` and the faults: building the default scenario and changing it.

``up`` builds the fabric and the regional services, provisions the workload's AWS resources
and model weights, starts the ``client-ui`` node and pods, the ``sdruntime`` Service, one
flowlens agent per node, and the controller that scales the runtime (see :mod:`controller`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from flowlens_lab import aws_side, cluster, faults, network, processes, teardown
from flowlens_lab import state as lab_state
from flowlens_lab.shell import LabError
from flowlens_lab.spec import (
    AGENT_PORT,
    API_IP,
    AWS_SERVICES_IP,
    COLLECTOR_PORT,
    NODE_TYPES,
    RUNTIME_PORT,
    SERVICE_IPS,
    LabSpec,
)

Progress = Callable[[str], None]

RUNTIME = ("sdruntime", "sdruntime")  # namespace, workload
UI = ("ui", "client-ui")
SERVICE = {"name": "sdruntime-service", "namespace": "sdruntime", "cluster_ip": "10.96.0.10", "port": 8080,
           "target_port": RUNTIME_PORT, "selector": "sdruntime"}
HOSTS = {"sdruntime-service": "10.96.0.10", "sdruntime-service.sdruntime.svc.cluster.local": "10.96.0.10",
         "s3.amazonaws.com": AWS_SERVICES_IP, "api.sdruntime.lab": API_IP}


# The node's shapers stand in for ENA's allowance statistics.
ALLOWANCE_QDISCS = "bw_in_allowance_exceeded=ifb0:eth0,bw_out_allowance_exceeded=eth0"


def agent_command(interval: float) -> Callable[[dict[str, Any]], list[str]]:
    """A node's agent: its pods' namespaces, its shapers as allowances, reporting to the lab's collector."""
    def command(node: dict[str, Any]) -> list[str]:
        gateway = f"10.{node['zone_index']}.0.1"
        return [processes.PYTHON, "-m", "flowlens", "agent", "--port", str(AGENT_PORT), "--interval", f"{interval:g}",
                "--namespaces", f"fll-pod-{node['id']}-*", "--node", node["name"], "--instance-id",
                node["instance_id"], "--allowance-qdiscs", ALLOWANCE_QDISCS, "--service-cidrs", "10.96.0.0/16",
                "--collector", f"http://{gateway}:{COLLECTOR_PORT}",
                "--spool-dir", str(lab_state.lab_dir() / "spool" / node["id"])]
    return command


def up(spec: LabSpec, progress: Progress = lambda _: None) -> dict[str, Any]:
    current = lab_state.read()
    if current.get("ready") or network.lab_namespaces():
        raise LabError("a lab is already up (or left over): run `flowlens lab down` first")
    started = time.monotonic()
    with lab_state.locked() as state:
        state["spec"] = asdict(spec)
        state["services"][f"{SERVICE['namespace']}/{SERVICE['name']}"] = dict(SERVICE)
    progress("zones, router and regional services")
    network.build_fabric(spec.zones)
    network.build_aws([*SERVICE_IPS.values(), API_IP])
    network.write_hosts_file(network.AWS_NS, HOSTS)
    aws_side.start_services(spec.region)
    progress(f"provisioning buckets, topic, queues and {spec.weights_mib} MiB of model weights")
    made = aws_side.provision(spec.region, [RUNTIME[1]], spec.visibility_timeout_s, spec.max_receives,
                              spec.weights_mib)
    with lab_state.locked() as state:
        state["aws"] = made
    aws_side.start_api(spec.region, made["task_topic_arn"], made["output_bucket"])
    progress("collector (the agents report to it; `flowlens map`, `flowlens top` ask it)")
    cluster.sync()  # the inventory file exists before the collector reads it
    processes.start("collector", [processes.PYTHON, "-m", "flowlens_lab.collector_proc"])
    aws_side.wait_http(network.FABRIC, f"http://10.9.0.1:{COLLECTOR_PORT}/healthz", "the collector")
    progress(f"client-ui: {spec.ui_replicas} pods on a {spec.ui_type} node in {spec.ui_zone}")
    ui_node = cluster.add_node("ui", spec.ui_zone, spec.ui_type, agent_command(spec.agent_interval_s))
    for _ in range(spec.ui_replicas):
        cluster.add_pod(UI[0], UI[1], ui_node["name"], [ui_container(spec)], HOSTS, ready=True)
    progress("controller (queue-length autoscaler and node provisioner)")
    processes.start("controller", [processes.PYTHON, "-m", "flowlens_lab.controller"])
    with lab_state.locked() as state:
        state["ready"] = True
        state["seq"]["up_seconds"] = round(time.monotonic() - started, 1)
    cluster.sync()
    return status()


def ui_container(spec: LabSpec) -> dict[str, Any]:
    return {"name": "client", "command": [processes.PYTHON, "-m", "inference_workload.ui_client", "--url",
                                          f"http://sdruntime-service:{SERVICE['port']}", "--every", "2"],
            "env": aws_side.aws_env(spec.region)}


def runtime_containers(state: dict[str, Any]) -> list[dict[str, Any]]:
    spec, made = state["spec"], state["aws"]
    env = aws_side.aws_env(spec["region"])
    queue = made["runtimes"][RUNTIME[1]]["url"]
    return [
        {"name": "runtime", "ports": [RUNTIME_PORT], "env": env,
         "command": [processes.PYTHON, "-m", "inference_workload.runtime", "--host", "0.0.0.0", "--port",
                     str(RUNTIME_PORT), "--model-bucket", made["models_bucket"], "--model-key", made["model_key"],
                     "--part-size-mib", "4", "--read-concurrency", "1",
                     "--steps-per-second", str(spec["gpu_steps_per_second"])]},
        {"name": "queue-agent", "env": env,
         "command": [processes.PYTHON, "-m", "inference_workload.queue_agent", "--queue-url", queue,
                     "--runtime-url", f"http://127.0.0.1:{RUNTIME_PORT}", "--output-bucket", made["output_bucket"],
                     "--notification-topic-arn", made["notification_topic_arn"]]},
    ]


def down(progress: Progress = lambda _: None) -> dict[str, int]:
    return teardown.down(progress)


def status() -> dict[str, Any]:
    state = lab_state.read()
    if not state["spec"]:
        return {"up": False, "nodes": [], "pods": [], "services": []}
    alive = {p["name"]: processes.alive(p["pid"]) for p in state["processes"]}
    nodes = [{"name": n["name"], "zone": n["zone"], "instance_type": n["instance_type"], "pool": n["pool"],
              "bandwidth_mbit": NODE_TYPES[n["instance_type"]].mbit,
              "real_bandwidth_gbps": NODE_TYPES[n["instance_type"]].real_gbps, "ip": n["ip"], "netns": n["ns"],
              "agent": f"http://{n['ip']}:{AGENT_PORT}/metrics", "agent_running": alive.get(f"agent-{n['id']}", False)}
             for n in sorted(state["nodes"].values(), key=lambda n: n["name"])]
    pods = [{"name": p["name"], "namespace": p["namespace"], "workload": p["workload"], "node": p["node"],
             "zone": state["nodes"][p["node"]]["zone"], "ip": p["ip"], "netns": p["ns"], "ready": bool(p.get("ready"))}
            for p in sorted(state["pods"].values(), key=lambda p: p["name"])]
    services = [{"name": s["name"], "namespace": s["namespace"], "cluster_ip": s["cluster_ip"], "port": s["port"],
                 "endpoints": [p["ip"] for p in pods if p["namespace"] == s["namespace"]
                               and p["workload"] == s["selector"] and p["ready"]]}
                for s in state["services"].values()]
    return {"up": bool(state.get("ready")), "region": state["spec"]["region"],
            "topology_aware_routing": bool(state["spec"].get("topology_aware")), "nodes": nodes, "pods": pods,
            "services": services, "faults": list(state["faults"].values()),
            "aws": {"endpoint": aws_side.ENDPOINT, "api": aws_side.API_URL, **state.get("aws", {})},
            "inventory": str(lab_state.lab_dir() / "inventory.json"), "up_seconds": state["seq"].get("up_seconds"),
            "processes": [{"name": k, "running": v} for k, v in sorted(alive.items())]}


# -- faults -----------------------------------------------------------------------------
def fault_block(source: str, target: str, port: int) -> dict[str, Any]:
    """Drop TCP from ``source`` pods to ``target`` pods on ``port`` (namespace or namespace/workload)."""
    fault = {"name": f"block:{source}->{target}:{port}", "kind": "block", "source": source, "target": target,
             "port": port}
    return _add_fault(fault, cluster.sync)


def fault_loss(percent: float, between: tuple[str, str] | None = None, node: str = "", pod: str = "",
               remote: str = "", zone: str = "") -> dict[str, Any]:
    """Random packet loss: on the zone router (all forwarded traffic, between two zones, or all of
    one zone's), on one node's uplink, on one pod's veth, or at one regional service."""
    chosen = [(loc, t) for loc, t in (("between", between), ("node", node), ("pod", pod), ("remote", remote),
                                      ("zone", zone)) if t]
    if len(chosen) > 1:
        raise LabError("loss goes in one place: a zone, between two zones, on a node, on a pod, or at a service")
    location, target = chosen[0] if chosen else ("router", None)
    state = lab_state.read()
    if location == "node" and node not in state["nodes"]:
        raise LabError(f"no node {node!r}: `flowlens lab status` lists them")
    if location == "pod" and pod not in state["pods"]:
        raise LabError(f"no pod {pod!r}: `flowlens lab status` lists them")
    zones = [z.name for z in cluster.spec_of(state).zones]
    for name in {"zone": [zone], "between": list(between or ())}.get(location, []):
        if name not in zones:
            raise LabError(f"no zone {name!r}: the lab's zones are {', '.join(zones)}")
    return _add_fault(faults.loss_fault(percent, location, target), sync_faults)


def fault_slow(service: str, mbit: float) -> dict[str, Any]:
    """A regional service (S3, SQS, SNS) that sends at most ``mbit``: a throttled far side."""
    return _add_fault(faults.slow_fault(service, mbit), sync_faults)


def fault_busy(pod: str, cpus: int = 2) -> dict[str, Any]:
    """A pod whose CPU is kept busy: slow, with a clean network."""
    if pod not in lab_state.read()["pods"]:
        raise LabError(f"no pod {pod!r}: `flowlens lab status` lists them")
    return _add_fault(faults.busy_fault(pod, cpus), sync_faults)


def _add_fault(fault: dict[str, Any], apply: Callable[[], None]) -> dict[str, Any]:
    _require_up()
    with lab_state.locked() as state:
        state["faults"][fault["name"]] = fault
    apply()
    return fault


def clear_faults(name: str | None = None) -> list[str]:
    with lab_state.locked() as state:
        names = [n for n in state["faults"] if name in (None, n, state["faults"][n]["kind"])]
        for n in names:
            del state["faults"][n]
    cluster.sync()
    sync_faults()
    return names


def sync_faults() -> None:
    """Loss, slow and busy faults as the state has them (see :mod:`flowlens_lab.faults`)."""
    faults.sync(cluster.spec_of(lab_state.read()))


def set_topology_aware(enabled: bool) -> None:
    _require_up()
    with lab_state.locked() as state:
        state["spec"]["topology_aware"] = enabled
    cluster.sync()


def set_node_type(instance_type: str, pool: str = RUNTIME[1]) -> list[str]:
    _require_up()
    return cluster.set_node_type(pool, instance_type)


def scale_runtime(minimum: int, maximum: int) -> None:
    """The runtime autoscaler's bounds (minReplicas, maxReplicas), applied at its next round."""
    _require_up()
    if not 0 <= minimum <= maximum <= 16:
        raise LabError("replicas: 0 <= min <= max <= 16")
    with lab_state.locked() as state:
        state["spec"]["runtime_min"], state["spec"]["runtime_max"] = minimum, maximum


def restart_runtime() -> int:
    """Replace the runtime's pods (a rollout restart): the controller starts new ones where the
    current node type and routing say."""
    _require_up()
    with lab_state.locked() as state:  # cordon first, so replacements go to new nodes
        old_nodes = [n["name"] for n in state["nodes"].values() if n["pool"] == RUNTIME[1]]
        for name in old_nodes:
            state["nodes"][name]["cordoned"] = True
        pods = [p["name"] for p in state["pods"].values() if p["workload"] == RUNTIME[1]]
    for name in pods:
        cluster.remove_pod(name)
    for name in old_nodes:
        cluster.remove_node(name)
    return len(pods)


def _require_up() -> None:
    if not lab_state.read().get("ready"):
        raise LabError("no lab is up: run `flowlens lab up` first")


