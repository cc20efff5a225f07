"""The lab's control loop: KEDA's queue-length autoscaler, Karpenter's node provisioning, and
the kubelet's readiness probe, for the ``sdruntime`` Deployment.

Every ``polling`` seconds it reads the runtime queue's depth, asks the autoscaler how many
replicas there should be, starts pods (adding a node of the pool's instance type when none has
room) or stops the newest ones (removing nodes left empty), and probes pods that are not ready
yet from their node, as the kubelet does, so the Service only sends traffic to loaded runtimes.
Run by ``flowlens lab up`` as ``python -m flowlens_lab.controller``.
"""

from __future__ import annotations

import logging
import signal
import time
from typing import Any

import httpx

from flowlens_lab import aws_side, cluster, lab
from flowlens_lab import state as lab_state
from flowlens_lab.spec import COLLECTOR_PORT, NODE_TYPES, RUNTIME_PORT

log = logging.getLogger("flowlens_lab.controller")
MAX_EVENTS = 200


def event(message: str) -> None:
    log.info(message)
    with lab_state.locked() as state:
        events = state.setdefault("events", [])
        events.append({"time": time.time(), "message": message})
        del events[:-MAX_EVENTS]


def runtime_pods(state: dict[str, Any]) -> list[dict[str, Any]]:
    namespace, workload = lab.RUNTIME
    pods = [p for p in state["pods"].values() if p["namespace"] == namespace and p["workload"] == workload]
    return sorted(pods, key=lambda p: p["created"])


def place(state: dict[str, Any]) -> str:
    """A runtime node with a free GPU, or a new one of the pool's current type."""
    spec = state["spec"]
    pool = lab.RUNTIME[1]
    used: dict[str, int] = {}
    for pod in runtime_pods(state):
        used[pod["node"]] = used.get(pod["node"], 0) + 1
    for node in sorted(state["nodes"].values(), key=lambda n: n["name"]):
        if (node["pool"] == pool and not node.get("cordoned")
                and used.get(node["name"], 0) < NODE_TYPES[node["instance_type"]].pods):
            return node["name"]
    instance_type = cluster.pool_type(state, pool, spec["runtime_type"])
    node = cluster.add_node(pool, _zone_for_new_node(state), instance_type, lab.agent_command(spec["agent_interval_s"]))
    event(f"node provisioner: added {node['name']} ({instance_type}, {node['zone']})")
    return node["name"]


def _zone_for_new_node(state: dict[str, Any]) -> str:
    """The runtime's zone; with topology-aware routing on, the zone with the fewest runtime pods
    (a topology spread), so every client zone gets local backends."""
    spec = state["spec"]
    if not spec.get("topology_aware"):
        return spec["runtime_zone"]
    counts = {z["name"]: 0 for z in spec["zones"]}
    for pod in runtime_pods(state):
        zone = state["nodes"][pod["node"]]["zone"]
        counts[zone] = counts.get(zone, 0) + 1
    ui_zone = spec["ui_zone"]  # on a tie, the clients' zone first
    return min(counts, key=lambda z: (counts[z], z != ui_zone, z))


def scale_to(desired: int) -> None:
    state = lab_state.read()
    pods = runtime_pods(state)
    for _ in range(desired - len(pods)):
        state = lab_state.read()
        node = place(state)
        pod = cluster.add_pod(lab.RUNTIME[0], lab.RUNTIME[1], node, lab.runtime_containers(state), lab.HOSTS)
        event(f"started pod {pod['name']} on {node}")
    for pod in reversed(pods[desired:] if desired < len(pods) else []):
        cluster.remove_pod(pod["name"])
        event(f"stopped pod {pod['name']}")
    if desired < len(pods):
        _remove_empty_nodes()


def _remove_empty_nodes() -> None:
    state = lab_state.read()
    busy = {p["node"] for p in state["pods"].values()}
    for node in list(state["nodes"].values()):
        if node["pool"] == lab.RUNTIME[1] and node["name"] not in busy:
            cluster.remove_node(node["name"])
            event(f"node provisioner: removed empty node {node['name']}")


def probe_ready(state: dict[str, Any]) -> None:
    for pod in runtime_pods(state):
        if pod.get("ready"):
            if not pod.get("load_reported") and report_model_load(state, pod):
                with lab_state.locked() as st:
                    if pod["name"] in st["pods"]:
                        st["pods"][pod["name"]]["load_reported"] = True
            continue
        node_ns = state["nodes"][pod["node"]]["ns"]
        if _memory_probe(node_ns, pod["ip"]):
            cluster.set_ready(pod["name"], True)
            event(f"pod {pod['name']} ready")


def _memory_probe(node_ns: str, ip: str) -> bool:
    def probe() -> bool:
        try:
            return httpx.get(f"http://{ip}:{RUNTIME_PORT}/sdapi/v1/memory", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    return aws_side.in_namespace(node_ns, probe)


def report_model_load(state: dict[str, Any], pod: dict[str, Any]) -> bool:
    """Hand the runtime's model-load line to the collector, as a log shipper would; False when the
    line is not written yet or the collector did not take it (the next round tries again)."""
    from flowlens.signals.modelload import parse_model_load

    log_file = lab_state.lab_dir() / "logs" / f"{pod['name']}.runtime.log"
    try:
        load = next(filter(None, map(parse_model_load, log_file.read_text().splitlines())), None)
    except OSError:
        load = None
    if load is None:
        return False
    end = time.time()
    body = [{"kind": "model_load", "pod": pod["name"], "namespace": pod["namespace"], "node": pod["node"],
             "start": end - load.seconds, "end": end, "bytes": state["aws"].get("model_bytes", 0),
             "phases": load.phases}]
    try:
        httpx.post(f"http://127.0.0.1:{COLLECTOR_PORT}/api/v1/events", json=body, timeout=5).raise_for_status()
    except httpx.HTTPError as err:
        log.warning("could not report the model load of %s: %s", pod["name"], err)
        return False
    event(f"model load of {pod['name']}: {load.seconds:.1f}s reported")
    return True


def run() -> None:
    from inference_workload.autoscaler import ScalePolicy, ScalerState, decide

    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    state = lab_state.read()
    spec = state["spec"]
    scaler = ScalerState(len(runtime_pods(state)))
    queue_url = state["aws"]["runtimes"][lab.RUNTIME[1]]["url"]
    while not stop["now"]:
        started = time.monotonic()
        try:
            depth = aws_side.queue_depth(spec["region"], queue_url)
            state = lab_state.read()
            spec = state["spec"]  # its replica bounds may have changed (`lab scale`)
            policy = ScalePolicy(target=spec["target_per_replica"], min_replicas=spec["runtime_min"],
                                 max_replicas=spec["runtime_max"], cooldown=spec["cooldown_s"],
                                 stabilization=spec["cooldown_s"], polling_interval=spec["polling_s"])
            current = len(runtime_pods(state))
            scaler = decide(scaler, depth, time.monotonic(), policy)
            desired = scaler.replicas
            if desired != current:
                event(f"autoscaler: queue depth {depth}, replicas {current} -> {desired}")
                scale_to(desired)
            probe_ready(lab_state.read())
            with lab_state.locked() as st:
                st["controller"] = {"queue_depth": depth, "replicas": desired, "time": time.time()}
        except Exception as err:  # keep reconciling: one failed round must not stop the lab
            log.exception("controller round failed: %s", err)
        time.sleep(max(0.0, spec["polling_s"] - (time.monotonic() - started)))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    run()
