"""The lab's cluster operations: nodes and pods come and go, services and faults follow.

Every change is recorded in the state file first, then made in the kernel, then reflected in
the service rules of every node and in the inventory, so the inventory always matches the
real namespaces and addresses.
"""

from __future__ import annotations

import hashlib
import random
import string
import time
from collections.abc import Callable
from typing import Any

from flowlens_lab import inventory, network, processes
from flowlens_lab import state as lab_state
from flowlens_lab.services import Backend, BlockRule, ServiceRule, apply, install_hooks
from flowlens_lab.shell import LabError, in_ns
from flowlens_lab.spec import AGENT_PORT, NODE_TYPES, PREFIX, LabSpec, Zone

Progress = Callable[[str], None]


def spec_of(state: dict[str, Any]) -> LabSpec:
    raw = dict(state["spec"])
    zones = tuple(Zone(**z) for z in raw.pop("zones"))
    return LabSpec(zones=zones, **raw)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def node_ns(node_id: str) -> str:
    return f"{PREFIX}node-{node_id}"


def pod_ns(node_id: str, pod_name: str) -> str:
    return f"{PREFIX}pod-{node_id}-{pod_name}"


# -- nodes ------------------------------------------------------------------------------
def add_node(pool: str, zone_name: str, instance_type: str, agent_command: Callable[[dict[str, Any]], list[str]]
             ) -> dict[str, Any]:
    """A node of ``instance_type`` in a zone, shaped to its allowance, with its flowlens agent."""
    if instance_type not in NODE_TYPES:
        raise LabError(f"unknown instance type {instance_type!r}: choose one of {', '.join(NODE_TYPES)}")
    with lab_state.locked() as state:
        spec = spec_of(state)
        zone = spec.zone(zone_name)
        index = lab_state.next_seq(state, f"node-{zone.name}")
        node_id = f"{zone.name[-1]}{index}"
        ip = network.node_ip(zone, index)
        node = {"name": f"ip-{ip.replace('.', '-')}.ec2.internal", "id": node_id, "ns": node_ns(node_id),
                "zone": zone.name, "zone_index": zone.index, "index": index, "ip": ip, "pool": pool,
                "instance_type": instance_type, "instance_id": "i-" + hashlib.sha1(node_id.encode()).hexdigest()[:17],
                "created": _now(), "pod_seq": 0, "building": True}
        state["nodes"][node["name"]] = node
    network.build_node(node["ns"], zone, index, NODE_TYPES[instance_type].mbit)
    install_hooks(node["ns"])
    with lab_state.locked() as state:  # from now on every sync reaches it (its own one below first)
        state["nodes"][node["name"]]["building"] = False
    processes.start(f"agent-{node_id}", agent_command(node), netns=node["ns"])
    sync()
    return node


def remove_node(name: str) -> None:
    with lab_state.locked() as state:
        node = state["nodes"].pop(name, None)
        if node is None:
            return  # someone else removed it already
    processes.stop({f"agent-{node['id']}"})
    network.delete_namespace(node["ns"])
    in_ns(network.FABRIC, "ip", "route", "del", f"10.{node['zone_index']}.{node['index']}.0/24", check=False)
    sync()


def set_node_type(pool: str, instance_type: str) -> list[str]:
    """Swap a pool's instance type: its nodes are re-shaped and relabelled, new nodes use it."""
    if instance_type not in NODE_TYPES:
        raise LabError(f"unknown instance type {instance_type!r}: choose one of {', '.join(NODE_TYPES)}")
    with lab_state.locked() as state:
        state.setdefault("pool_types", {})[pool] = instance_type
        changed = [n for n in state["nodes"].values() if n["pool"] == pool]
        for node in changed:
            node["instance_type"] = instance_type
    for node in changed:
        network.shape_node(node["ns"], NODE_TYPES[instance_type].mbit)
    sync()
    return [n["name"] for n in changed]


def pool_type(state: dict[str, Any], pool: str, default: str) -> str:
    return state.get("pool_types", {}).get(pool, default)


# -- pods -------------------------------------------------------------------------------
def _template_hash(workload: str) -> str:
    return hashlib.sha1(workload.encode()).hexdigest()[:9]


def _suffix() -> str:
    return "".join(random.choices(string.ascii_lowercase + string.digits, k=5))


def add_pod(namespace: str, workload: str, node_name: str, containers: list[dict[str, Any]],
            hosts: dict[str, str], ready: bool = False) -> dict[str, Any]:
    """A pod on a node; each container is ``{"name", "command", "ports", "env"}`` and runs in the pod."""
    with lab_state.locked() as state:
        node = state["nodes"][node_name]
        node["pod_seq"] += 1
        zone = Zone(node["zone"], node["zone_index"])
        name = f"{workload}-{_template_hash(workload)}-{_suffix()}"
        pod = {"name": name, "namespace": namespace, "workload": workload, "template_hash": _template_hash(workload),
               "node": node_name, "ns": pod_ns(node["id"], name), "ip": network.pod_ip(zone, node["index"],
                                                                                   node["pod_seq"]),
               "created": _now(), "ready": ready,
               "containers": [{"name": c["name"], "ports": c.get("ports", [])} for c in containers]}
        state["pods"][name] = pod
        node_namespace = node["ns"]
    pod["veth"] = network.build_pod(pod["ns"], node_namespace, pod["ip"])
    network.write_hosts_file(pod["ns"], hosts)
    for container in containers:
        env = {**container.get("env", {}), "POD_NAME": name, "POD_IP": pod["ip"], "NODE_NAME": node_name}
        processes.start(f"{name}.{container['name']}", container["command"], netns=pod["ns"], env=env)
    with lab_state.locked() as state:
        state["pods"][name]["veth"] = pod["veth"]
    sync()
    return pod


def remove_pod(name: str) -> None:
    """A terminating pod leaves its Services' endpoints first, then stops, as in Kubernetes:
    clients are never sent to an address that no longer answers."""
    set_ready(name, False)
    with lab_state.locked() as state:
        pod = state["pods"].pop(name)
        names = {p["name"] for p in state["processes"] if p["name"].startswith(name + ".")}
    processes.stop(names)
    network.delete_namespace(pod["ns"])
    sync()


def set_ready(name: str, ready: bool) -> None:
    with lab_state.locked() as state:
        if name not in state["pods"] or state["pods"][name].get("ready") == ready:
            return
        state["pods"][name]["ready"] = ready
    sync()


# -- services, policies, inventory --------------------------------------------------------
def service_rules(state: dict[str, Any]) -> list[ServiceRule]:
    nodes, rules = state["nodes"], []
    for svc in state["services"].values():
        backends = tuple(
            Backend(p["ip"], svc["target_port"], nodes[p["node"]]["zone"])
            for p in sorted(state["pods"].values(), key=lambda p: p["name"])
            if p["namespace"] == svc["namespace"] and p["workload"] == svc["selector"] and p.get("ready")
        )
        rules.append(ServiceRule(f"{svc['namespace']}/{svc['name']}", svc["cluster_ip"], svc["port"], backends))
    return rules


def block_rules(state: dict[str, Any]) -> list[BlockRule]:
    rules = []
    for fault in state["faults"].values():
        if fault["kind"] != "block":
            continue
        sources = tuple(p["ip"] for p in state["pods"].values() if _selects(fault["source"], p))
        targets = tuple(p["ip"] for p in state["pods"].values() if _selects(fault["target"], p))
        rules.append(BlockRule(sources, targets, fault["port"]))
    return rules


def _selects(selector: str, pod: dict[str, Any]) -> bool:
    """``namespace`` or ``namespace/workload``."""
    namespace, _, workload = selector.partition("/")
    return pod["namespace"] == namespace and (not workload or pod["workload"] == workload)


def sync() -> None:
    """Bring every node's service and policy rules, and the inventory, in line with the state."""
    with lab_state.locked() as state:
        services, blocks = service_rules(state), block_rules(state)
        topology_aware = bool(state["spec"].get("topology_aware"))
        for node in state["nodes"].values():
            # A node still being built (its namespace may not exist yet) gets its rules from the
            # sync that ends its creation; another process's sync must not trip over it.
            if not node.get("building"):
                apply(node["ns"], services, blocks, node["zone"], topology_aware)
        state["seq"]["version"] = state["seq"].get("version", 0) + 1
        inventory.write(state)


def agent_port() -> int:
    return AGENT_PORT
