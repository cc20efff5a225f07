"""The lab's inventory in Kubernetes' own shape, as `kubectl get -o json` would print it.

Nodes carry ``topology.kubernetes.io/zone`` and ``node.kubernetes.io/instance-type``; pods
their IPs, node, start time and owner references (Pod → ReplicaSet → Deployment, with the
ReplicaSets and Deployments listed too); Services their ClusterIP and selector; EndpointSlices
(discovery.k8s.io/v1) their ready endpoints with zone and topology hints. The collector reads
this file with the same code that reads a real cluster.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from flowlens_lab.state import lab_dir


def _uid(*parts: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "flowlens-lab/" + "/".join(parts)))


def node_object(node: dict[str, Any], region: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {
            "name": node["name"], "uid": _uid("node", node["name"]), "creationTimestamp": node["created"],
            "labels": {
                "kubernetes.io/hostname": node["name"], "kubernetes.io/os": "linux",
                "topology.kubernetes.io/zone": node["zone"], "topology.kubernetes.io/region": region,
                "node.kubernetes.io/instance-type": node["instance_type"],
                "karpenter.sh/nodepool": node["pool"],
            },
        },
        "spec": {"providerID": f"aws:///{node['zone']}/{node['instance_id']}"},
        "status": {
            "addresses": [{"type": "InternalIP", "address": node["ip"]}, {"type": "Hostname", "address": node["name"]}],
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def pod_object(pod: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    rs = f"{pod['workload']}-{pod['template_hash']}"
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": pod["name"], "namespace": pod["namespace"], "uid": _uid("pod", pod["namespace"], pod["name"]),
            "creationTimestamp": pod["created"],
            "labels": {"app": pod["workload"], "pod-template-hash": pod["template_hash"]},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs,
                                 "uid": _uid("rs", pod["namespace"], rs), "controller": True,
                                 "blockOwnerDeletion": True}],
        },
        "spec": {"nodeName": pod["node"], "hostNetwork": False,
                 "containers": [{"name": c["name"], "ports": [{"containerPort": p, "protocol": "TCP"}
                                                             for p in c.get("ports", [])]}
                                for c in pod["containers"]]},
        "status": {
            "phase": "Running", "hostIP": node["ip"], "podIP": pod["ip"], "podIPs": [{"ip": pod["ip"]}],
            "startTime": pod["created"],
            "conditions": [{"type": "Ready", "status": "True" if pod.get("ready") else "False"}],
        },
    }


def workload_objects(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ReplicaSets and Deployments the pods' owner references point at."""
    out, seen = [], set()
    for pod in pods:
        ns, workload, h = pod["namespace"], pod["workload"], pod["template_hash"]
        rs = f"{workload}-{h}"
        if (ns, rs) in seen:
            continue
        seen.add((ns, rs))
        out.append({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "metadata": {"name": rs, "namespace": ns, "uid": _uid("rs", ns, rs),
                                 "labels": {"app": workload, "pod-template-hash": h},
                                 "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": workload,
                                                      "uid": _uid("deploy", ns, workload), "controller": True}]}})
        if (ns, workload) not in seen:
            seen.add((ns, workload))
            out.append({"apiVersion": "apps/v1", "kind": "Deployment",
                        "metadata": {"name": workload, "namespace": ns, "uid": _uid("deploy", ns, workload),
                                     "labels": {"app": workload}},
                        "spec": {"selector": {"matchLabels": {"app": workload}}}})
    return out


def service_objects(service: dict[str, Any], pods: list[dict[str, Any]], nodes: dict[str, Any],
                    topology_aware: bool) -> list[dict[str, Any]]:
    ns, name = service["namespace"], service["name"]
    annotations = {"service.kubernetes.io/topology-mode": "Auto"} if topology_aware else {}
    svc = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "uid": _uid("svc", ns, name), "annotations": annotations},
        "spec": {"type": "ClusterIP", "clusterIP": service["cluster_ip"], "clusterIPs": [service["cluster_ip"]],
                 "selector": {"app": service["selector"]},
                 "ports": [{"port": service["port"], "targetPort": service["target_port"], "protocol": "TCP"}]},
    }
    members = [p for p in pods if p["namespace"] == ns and p["workload"] == service["selector"]]
    endpoints = []
    for pod in members:
        zone = nodes[pod["node"]]["zone"]
        endpoint = {"addresses": [pod["ip"]], "conditions": {"ready": bool(pod.get("ready"))},
                    "nodeName": pod["node"], "zone": zone,
                    "targetRef": {"kind": "Pod", "name": pod["name"], "namespace": ns}}
        if topology_aware:
            endpoint["hints"] = {"forZones": [{"name": zone}]}
        endpoints.append(endpoint)
    slice_ = {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": f"{name}-lab", "namespace": ns, "uid": _uid("eps", ns, name),
                     "labels": {"kubernetes.io/service-name": name},
                     "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": name,
                                          "uid": _uid("svc", ns, name)}]},
        "addressType": "IPv4", "endpoints": endpoints,
        "ports": [{"name": "", "port": service["target_port"], "protocol": "TCP"}],
    }
    return [svc, slice_]


def build(state: dict[str, Any]) -> dict[str, Any]:
    spec = state["spec"]
    nodes = state["nodes"]
    pods = sorted(state["pods"].values(), key=lambda p: p["name"])
    items = [node_object(n, spec.get("region", "us-east-1")) for n in sorted(nodes.values(), key=lambda n: n["name"])]
    items += [pod_object(p, nodes[p["node"]]) for p in pods]
    items += workload_objects(pods)
    for service in sorted(state["services"].values(), key=lambda s: s["name"]):
        items += service_objects(service, pods, nodes, bool(spec.get("topology_aware")))
    return {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": str(state["seq"].get("version", 0))},
            "items": items}


def inventory_path() -> Path:
    return lab_dir() / "inventory.json"


def write(state: dict[str, Any]) -> Path:
    """Rewrite the inventory atomically (readers never see half a file)."""
    path = inventory_path()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(build(state), indent=1))
    tmp.replace(path)
    return path
