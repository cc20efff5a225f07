"""A collector in this process (on a free port, with a store in a temp folder) and helpers."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from flowlens.collector.service import CollectorConfig
from flowlens.surfaces.collector_cli import serve_collector


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RunningCollector:
    def __init__(self, folder: Path, inventory: Path, ranges: Path, port: int | None = None, tokens=()) -> None:
        self.folder, self.inventory, self.ranges = folder, inventory, ranges
        self.port = port or free_port()
        self.tokens = list(tokens)
        self.collector: Any = None
        self.running: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RunningCollector:
        config = CollectorConfig(port=self.port, store=str(self.folder / "flows.duckdb"), tokens=tuple(self.tokens),
                                 inventory_file=str(self.inventory), ip_ranges=str(self.ranges), region="us-east-1")
        self.running = serve_collector(config)
        self.collector = self.running.collector
        return self

    def stop(self) -> None:
        self.running.stop()


def node(name: str, zone: str, ip: str) -> dict:
    return {"kind": "Node", "metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": zone,
                                                                  "node.kubernetes.io/instance-type": "g5.2xlarge"}},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}]}}


def pod(name: str, ns: str, ip: str, node_name: str, rs: str) -> dict:
    return {"kind": "Pod", "metadata": {"name": name, "namespace": ns, "uid": f"uid-{name}",
                                        "creationTimestamp": "2020-01-01T00:00:00Z",
                                        "ownerReferences": [{"kind": "ReplicaSet", "name": rs, "controller": True}]},
            "spec": {"nodeName": node_name}, "status": {"podIP": ip, "phase": "Running",
                                                        "startTime": "2020-01-01T00:00:00Z"}}


def write_inventory(path: Path, items: list[dict]) -> None:
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))


@pytest.fixture
def files(tmp_path):
    inventory, ranges = tmp_path / "inventory.json", tmp_path / "ip-ranges.json"
    write_inventory(inventory, [])
    ranges.write_text(json.dumps({"prefixes": []}))
    return tmp_path, inventory, ranges
