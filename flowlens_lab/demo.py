"""``flowlens demo``: the scenario from a slow model load to its fix, in a few minutes.

1. ``lab up``: two zones, the client-ui in one, the runtime's node pool (g5.2xlarge, scaled)
   in the other, agents and the collector.
2. Load every 2 s: the autoscaler starts runtime pods on new small nodes; each downloads the
   model weights from S3 through its node's bandwidth allowance.
3. Diagnose: the allowance exceeded during the loads, client-ui → sdruntime across zones, and
   the health indicator (0: the network itself is fine).
4. Fix: the runtime pool moves to g5.4xlarge and the Service gets topology-aware routing; the
   runtime restarts, spread over both zones.
5. Diagnose again: the findings are gone and the flow table is intra-zone.
6. ``lab down`` (``--keep`` leaves the lab running to explore).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
from rich.console import Console

from flowlens.model.findings import Diagnosis
from flowlens.surfaces.collector_cli import answer, print_diagnosis
from flowlens_lab import lab
from flowlens_lab import state as lab_state
from flowlens_lab.loadgen import send
from flowlens_lab.spec import COLLECTOR_PORT, LabSpec

COLLECTOR = f"http://127.0.0.1:{COLLECTOR_PORT}"


def wait_for(condition: Callable[[], Any], timeout: float, what: str = "the condition", every: float = 1.0) -> Any:
    """Poll ``condition`` until it returns something true (returned), or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"{what} did not happen within {timeout:.0f}s")


def runtime_pods(ready: bool = True) -> list[dict[str, Any]]:
    return [p for p in lab.status()["pods"] if p["workload"] == "sdruntime" and (p["ready"] or not ready)]


def model_loads_since(start: float, exclude: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    events = httpx.get(f"{COLLECTOR}/api/v1/events", params={"since": "1h"}, timeout=10).json()
    return [e for e in events if e["end"] >= start and e["pod"] not in exclude]


def findings(since_seconds: float) -> dict[str, Any]:
    return httpx.get(f"{COLLECTOR}/api/v1/findings", params={"since": f"{since_seconds:.0f}s"}, timeout=60).json()


def cluster_flows(since_seconds: float) -> list[dict[str, Any]]:
    return httpx.get(f"{COLLECTOR}/api/v1/flows", params={"since": f"{since_seconds:.0f}s", "view": "cluster",
                                                        "limit": 20}, timeout=60).json()["flows"]


class Demo:
    def __init__(self, spec: LabSpec, as_json: bool, console: Console) -> None:
        self.spec, self.as_json, self.console = spec, as_json, console
        self.phases: list[dict[str, Any]] = []
        self.first_pods: frozenset[str] = frozenset()

    def say(self, message: str) -> None:
        Console(stderr=True).print(f"[cyan]demo[/] {message}")

    def report(self, name: str, body: dict[str, Any], since: float, extra: dict[str, Any]) -> None:
        self.phases.append({"phase": name, "health": body["health"], "findings": body["findings"], **extra})
        if self.as_json:
            return
        self.console.rule(name)
        print_diagnosis(self.console, answer(body, Diagnosis, COLLECTOR), f"{since:.0f}s")
        for key, value in extra.items():
            self.console.print(f"{key}: {value}")

    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        self.say("building the lab (zones, nodes, workload, agents, collector)")
        lab.up(self.spec, progress=lambda m: self.say(f"  {m}"))
        self.slow_phase()
        self.fixed_phase()
        return {"seconds": round(time.monotonic() - started, 1), "phases": self.phases}

    def slow_phase(self) -> None:
        begin = time.time()
        self.say("sending a text-to-image, an image-to-image and an upscale task every 2 s")
        send(2.0, 20.0, progress=lambda m: self.say(f"  {m}"))
        self.say("waiting for the runtime pods to load their weights on g5.2xlarge nodes")
        wait_for(lambda: len(model_loads_since(begin)) >= 2, 240, "two model loads")
        time.sleep(2 * self.spec.agent_interval_s + 1)  # the last reports of the loads
        since = time.time() - begin
        first = model_loads_since(begin)
        self.first_pods = frozenset(e["pod"] for e in first)
        self.report("before: small nodes, no topology-aware routing", findings(since), since,
                    {"model_load_seconds": [round(e["seconds"], 1) for e in first]})

    def fixed_phase(self) -> None:
        self.say("fix: runtime pool to g5.4xlarge, topology-aware routing on, rollout restart")
        begin = time.time()
        lab.set_node_type("g5.4xlarge")
        lab.set_topology_aware(True)
        lab.restart_runtime()
        send(2.0, 6.0, progress=lambda m: self.say(f"  {m}"))
        wait_for(lambda: model_loads_since(begin, self.first_pods), 240, "a model load on the new nodes")
        wait_for(lambda: {p["zone"] for p in runtime_pods()} >= {self.spec.ui_zone}, 120,
                 "a runtime pod in the UI's zone")
        # Connections opened before the switch keep their backend until they close: wait until
        # two intervals of client-ui traffic have gone by on the new routing alone.
        recent = 2 * self.spec.agent_interval_s + 1
        wait_for(lambda: _ui_categories(cluster_flows(recent)) == ["INTRA_AZ"], 120,
                 "client-ui traffic to stay in its zone")
        settle = time.time() - recent
        new_loads = model_loads_since(begin, self.first_pods)
        # From the new pods' first weight download on: the state the fix produced.
        since = time.time() - min(e["start"] for e in new_loads) + 1
        loads = [round(e["seconds"], 1) for e in new_loads]
        categories = _ui_categories(cluster_flows(time.time() - settle))
        self.report("after: g5.4xlarge, topology-aware routing", findings(since), since,
                    {"model_load_seconds": loads, "ui_to_sdruntime_categories_now": categories})


def _ui_categories(flows: list[dict[str, Any]]) -> list[str]:
    """The categories of client-ui's flows to the runtime."""
    return sorted({f["category"] for f in flows
                   if (f["client"].get("namespace"), f["server"].get("workload")) == ("ui", "sdruntime")})


def run_demo(keep: bool, as_json: bool, weights_mib: int, agent_interval: float) -> int:
    console = Console()
    spec = LabSpec(weights_mib=weights_mib, cooldown_s=60, agent_interval_s=agent_interval)
    demo = Demo(spec, as_json, console)
    try:
        result = demo.run()
    finally:
        if not keep:
            demo.say("lab down")
            lab.down()
        else:
            demo.say(f"the lab keeps running (state in {lab_state.lab_dir()}); `flowlens lab down` removes it")
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
    else:
        console.print(f"\ndemo finished in {result['seconds']:.0f}s")
    return 0
