"""A small lab without the inference workload: fabric, nodes, pods and a Service, in a private
state folder, always torn down."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import pytest

from flowlens_lab import cluster, network, teardown
from flowlens_lab import state as lab_state
from flowlens_lab.spec import LabSpec

SERVICE = {"name": "web", "namespace": "shop", "cluster_ip": "10.96.0.20", "port": 80, "target_port": 8080,
           "selector": "web"}


def http_server(port: int = 8080) -> dict[str, Any]:
    return {"name": "server", "command": [sys.executable, "-m", "http.server", str(port)], "ports": [port]}


def no_agent(node: dict[str, Any]) -> list[str]:
    return [sys.executable, "-c", "import time; time.sleep(3600)"]


@pytest.fixture
def mini_lab(tmp_path) -> Iterator[dict[str, Any]]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if network.lab_namespaces():
        pytest.skip("a lab is already running on this machine")
    os.environ["FLOWLENS_LAB_DIR"] = str(tmp_path / "lab")
    try:
        spec = LabSpec()
        with lab_state.locked() as state:
            state["spec"] = asdict(spec)
            state["services"]["shop/web"] = dict(SERVICE)
            state["ready"] = True
        network.build_fabric(spec.zones)
        node_a = cluster.add_node("web", "us-east-1a", "g5.2xlarge", no_agent)
        node_b = cluster.add_node("web", "us-east-1b", "g5.4xlarge", no_agent)
        yield {"spec": spec, "a": node_a, "b": node_b}
    finally:
        teardown.down()
        os.environ.pop("FLOWLENS_LAB_DIR", None)
