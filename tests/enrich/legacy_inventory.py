"""The inventory as the collector kept it before it was incremental: every change rebuilt all the
tables from every object, under the lock ingest takes. A verbatim copy of that code, kept as the
reference the incremental inventory must answer exactly like (tests/enrich/test_inventory_incremental.py)
and as the "before" of bench/inventory.py. Not used by the product.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any

from flowlens.collector.enrich.inventory import AddressBook, AddressOwner, timestamp, workload_of


class LegacyInventory:
    """The slimmed cluster state: address history, nodes, services, host-network ports."""

    def __init__(self) -> None:
        self.addresses = AddressBook()
        self.nodes: dict[str, AddressOwner] = {}
        self.node_by_ip: dict[str, str] = {}
        self.services: dict[str, AddressOwner] = {}  # cluster IP → service
        self.backend_services: dict[str, set[str]] = {}  # pod IP → names of services it backs
        self.topology_aware: set[tuple[str, str]] = set()  # (namespace, service) with topology-aware routing
        self.host_ports: dict[tuple[str, int], AddressOwner] = {}
        self.lock = threading.RLock()
        self._pods: dict[str, tuple[str, AddressOwner]] = {}  # uid → (ip, endpoint)
        self.version = 0

    def changes_since(self, version: int) -> None:
        """Not known: the enricher forgets its whole cache on every change (as before)."""
        return None

    # -- full synchronisation from a list ---------------------------------------------------
    def replace_all(self, objects: list[dict[str, Any]], now: float) -> None:
        """Make the inventory what ``objects`` say (a List's items), keeping address history."""
        by_kind: dict[str, list[dict[str, Any]]] = {}
        for obj in objects:
            by_kind.setdefault(obj.get("kind", ""), []).append(obj)
        owners = _owner_table(by_kind.get("ReplicaSet", []) + by_kind.get("Job", []))
        with self.lock:
            self._set_nodes(by_kind.get("Node", []))
            present = {_pod_uid(pod) for pod in by_kind.get("Pod", [])}
            for uid in [u for u in self._pods if u not in present]:  # gone: free their addresses first
                ip, endpoint = self._pods.pop(uid)
                self.addresses.release(ip, now, endpoint)
            self.host_ports = {}
            for pod in by_kind.get("Pod", []):
                self._apply_pod(pod, owners, now)
            self._set_services(by_kind.get("Service", []), by_kind.get("EndpointSlice", []))
            self.version += 1

    def _set_nodes(self, nodes: list[dict[str, Any]]) -> None:
        self.nodes, self.node_by_ip = {}, {}
        for node in nodes:
            meta, labels = node.get("metadata", {}), node.get("metadata", {}).get("labels", {})
            endpoint = AddressOwner("node", meta.get("name", ""), node=meta.get("name", ""),
                                zone=labels.get("topology.kubernetes.io/zone", ""),
                                instance_type=labels.get("node.kubernetes.io/instance-type", ""))
            self.nodes[endpoint.name] = endpoint
            for address in node.get("status", {}).get("addresses", []):
                if address.get("type") in ("InternalIP", "ExternalIP"):
                    self.node_by_ip[address["address"]] = endpoint.name

    def _apply_pod(self, pod: dict[str, Any], owners: dict[tuple[str, str], tuple[str, str]], now: float) -> str:
        meta, spec, status = pod.get("metadata", {}), pod.get("spec", {}), pod.get("status", {})
        uid = _pod_uid(pod)
        ip = status.get("podIP")
        if not ip or status.get("phase") in ("Succeeded", "Failed"):
            return ""
        workload, kind = workload_of(pod, owners)
        node = self.nodes.get(spec.get("nodeName", ""), AddressOwner("node", spec.get("nodeName", "")))
        endpoint = AddressOwner("pod", meta.get("name", ""), meta.get("namespace", ""), workload, kind, "",
                            node.name, node.zone, node.instance_type)
        if spec.get("hostNetwork"):
            for container in spec.get("containers", []):
                for port in container.get("ports", []):
                    self.host_ports[(ip, int(port.get("hostPort") or port.get("containerPort", 0)))] = endpoint
            return ""
        since = min(timestamp(status.get("startTime"), now), timestamp(meta.get("creationTimestamp"), now))
        self.addresses.assign(ip, endpoint, since)
        self._pods[uid] = (ip, endpoint)
        return uid

    def _set_services(self, services: list[dict[str, Any]], slices: list[dict[str, Any]]) -> None:
        self.services, self.backend_services, self.topology_aware = {}, {}, set()
        for svc in services:
            meta, spec = svc.get("metadata", {}), svc.get("spec", {})
            annotations = meta.get("annotations") or {}
            if (annotations.get("service.kubernetes.io/topology-mode", "").lower() == "auto"
                    or annotations.get("service.kubernetes.io/topology-aware-hints", "").lower() == "auto"
                    or spec.get("trafficDistribution") == "PreferClose"):
                self.topology_aware.add((meta.get("namespace", ""), meta.get("name", "")))
            for ip in spec.get("clusterIPs") or [spec.get("clusterIP")]:
                if ip and ip != "None":
                    self.services[ip] = AddressOwner("service", meta.get("name", ""), meta.get("namespace", ""),
                                                 service=meta.get("name", ""))
        for eps in slices:
            service = eps.get("metadata", {}).get("labels", {}).get("kubernetes.io/service-name", "")
            for endpoint in eps.get("endpoints") or []:
                for address in endpoint.get("addresses", []):
                    self.backend_services.setdefault(address, set()).add(service)

    # -- lookups ----------------------------------------------------------------------------
    def endpoint(self, ip: str, port: int | None, t: float) -> AddressOwner | None:
        """Who had ``ip`` at ``t``: a pod (with the service it backs), a Service, a node, or None."""
        pod = self.addresses.at(ip, t)
        if pod is not None:
            services = self.backend_services.get(ip)
            return replace(pod, service=sorted(services)[0]) if services else pod
        service = self.services.get(ip)
        if service is not None:
            return service
        if port is not None and (ip, port) in self.host_ports:
            return self.host_ports[(ip, port)]
        node = self.node_by_ip.get(ip)
        return self.nodes.get(node) if node else None


def _pod_uid(pod: dict[str, Any]) -> str:
    meta = pod.get("metadata", {})
    return meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}"


def _owner_table(objects: list[dict[str, Any]]) -> dict[tuple[str, str], tuple[str, str]]:
    """(namespace, ReplicaSet or Job name) → (its controller's name, kind)."""
    table = {}
    for obj in objects:
        meta = obj.get("metadata", {})
        owners = [o for o in meta.get("ownerReferences", []) if o.get("controller", True)]
        if owners:
            table[(meta.get("namespace", ""), meta.get("name", ""))] = (owners[0]["name"], owners[0]["kind"])
    return table
