"""Where the collector's inventory comes from: a file in `kubectl get -o json` shape, reloaded
when it changes, or one list+watch of the Kubernetes API for the whole cluster.

The API source keeps only slimmed objects and watches Pods, Services, EndpointSlices, Nodes,
ReplicaSets and Jobs from the collector alone (never one watch per agent, which overloads API
servers); each event updates only what its object touches in the inventory.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

from flowlens.collector.enrich.inventory import Inventory
from flowlens.model.errors import ConfigError

log = logging.getLogger(__name__)


class FileSource:
    """Reloads ``path`` into the inventory whenever its modification time changes (the inventory
    then changes only what differs from the previous load)."""

    def __init__(self, path: Path, inventory: Inventory, every: float = 1.0) -> None:
        self.path, self.inventory, self.every = path, inventory, every
        self._mtime = 0.0
        self.errors = 0
        self._stop = threading.Event()

    def load(self) -> bool:
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            return False
        if mtime == self._mtime:
            return False
        try:
            document = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            self.errors += 1
            log.warning("inventory file %s unreadable, keeping the previous one: %s", self.path, err)
            return False
        items = document.get("items", []) if isinstance(document, dict) else []
        if not isinstance(items, list):
            self.errors += 1
            log.warning("inventory file %s has no items list", self.path)
            return False
        self.inventory.replace_all(items, time.time())
        self._mtime = mtime
        return True

    def start(self) -> None:
        if not self.path.exists():
            log.warning("inventory file %s does not exist yet: waiting for it", self.path)
        self.load()
        threading.Thread(target=self._run, name="inventory-file", daemon=True).start()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.load()

    def stop(self) -> None:
        self._stop.set()


class KubernetesSource:
    """One list+watch per kind. A list replaces the objects of its kind in the inventory and a
    watch event changes its one object: the inventory updates only what they touch."""

    KINDS = ("Pod", "Service", "EndpointSlice", "Node", "ReplicaSet", "Job")

    def __init__(self, inventory: Inventory, kubeconfig: str | None = None) -> None:
        try:
            from kubernetes import client, config
        except ImportError as err:  # pragma: no cover - the package is a dependency
            raise ConfigError("the kubernetes package is missing: pip install kubernetes") from err
        try:
            if kubeconfig:
                config.load_kube_config(kubeconfig)
            else:
                try:
                    config.load_incluster_config()
                except config.ConfigException:
                    config.load_kube_config()
        except Exception as err:
            raise ConfigError(f"cannot configure the Kubernetes client: {err}") from err
        self.inventory = inventory
        self.core, self.discovery, self.apps, self.batch = (
            client.CoreV1Api(), client.DiscoveryV1Api(), client.AppsV1Api(), client.BatchV1Api())
        self._stop = threading.Event()

    def _lister(self, kind: str) -> Any:
        return {"Pod": self.core.list_pod_for_all_namespaces, "Service": self.core.list_service_for_all_namespaces,
                "Node": self.core.list_node,
                "EndpointSlice": self.discovery.list_endpoint_slice_for_all_namespaces,
                "ReplicaSet": self.apps.list_replica_set_for_all_namespaces,
                "Job": self.batch.list_job_for_all_namespaces}[kind]

    def start(self) -> None:
        for kind in self.KINDS:
            threading.Thread(target=self._watch, args=(kind,), name=f"watch-{kind}", daemon=True).start()

    def _watch(self, kind: str) -> None:
        from kubernetes import watch

        api = self.core.api_client
        while not self._stop.is_set():
            try:
                listed = self._lister(kind)(_preload_content=False)
                document = json.loads(listed.data)
                self.inventory.replace_kind(kind, [_slim(kind, o) for o in document.get("items", [])], time.time())
                version = document.get("metadata", {}).get("resourceVersion")
                for event in watch.Watch().stream(self._lister(kind), resource_version=version,
                                                  timeout_seconds=300, _preload_content=False):
                    if event["type"] not in ("ADDED", "MODIFIED", "DELETED"):
                        continue
                    obj = api.sanitize_for_serialization(event["object"])
                    self.inventory.apply(kind, event["type"], _slim(kind, obj), time.time())
            except Exception as err:  # the API server went away or the watch expired: list again
                log.warning("watch of %s interrupted (%s); listing again", kind, err)
                self._stop.wait(2)

    def stop(self) -> None:
        self._stop.set()


def _slim(kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    """Only what enrichment reads: identity, owners, labels, addresses, ports, endpoints."""
    meta = obj.get("metadata", {})
    slim: dict[str, Any] = {"kind": kind, "metadata": {k: meta[k] for k in (
        "name", "namespace", "uid", "labels", "ownerReferences", "creationTimestamp", "annotations") if k in meta}}
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    if kind == "Pod":
        slim["spec"] = {"nodeName": spec.get("nodeName"), "hostNetwork": spec.get("hostNetwork", False),
                        "containers": [{"ports": c.get("ports") or []} for c in spec.get("containers", [])]}
        slim["status"] = {k: status.get(k) for k in ("podIP", "phase", "startTime")}
    elif kind == "Node":
        slim["status"] = {"addresses": status.get("addresses") or []}
    elif kind == "Service":
        slim["spec"] = {k: spec.get(k) for k in ("clusterIP", "clusterIPs", "selector", "ports",
                                                  "trafficDistribution")}
    elif kind == "EndpointSlice":
        slim["endpoints"] = [{"addresses": e.get("addresses", [])} for e in obj.get("endpoints") or []]
    return slim
