"""The fault matrix: each kind of fault at each place it can be, what the diagnosis must say
and must not say, and how long it takes to say it.

The lab runs its runtime in both zones behind topology-aware routing (so nothing crosses zones
unless a cell wants it), the client-ui's three pods on one node, and tasks flowing (the runtime
pods fetch, store and notify through S3, SQS and SNS). For each cell the fault goes on, the
collector's diagnosis is polled every agent interval until the expected finding (with the
expected suspect) shows, then the whole fault's window is diagnosed once more and every
finding above ``info`` that the cell forbids is a false finding. The fault is then cleared and
the lab left to go quiet before the next cell.

``python -m flowlens_lab.matrix`` (or ``scripts/fault-matrix.sh``) builds a lab, runs every
cell plus a steady-load stretch with no fault, prints the scorecard and removes the lab.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from flowlens_lab import lab, network, teardown
from flowlens_lab.loadgen import send
from flowlens_lab.spec import COLLECTOR_PORT, LabSpec

COLLECTOR = f"http://127.0.0.1:{COLLECTOR_PORT}"
NETWORKY = {"network_degradation", "node_degradation", "remote_degradation", "workload_degradation"}
QUIET_KINDS = {"topology_aware_routing_effective"}


@dataclass(frozen=True)
class Cell:
    """One fault somewhere: ``expect`` kinds (any one), with ``suspect`` in its evidence when given."""

    name: str
    kind: str
    location: str
    apply: Callable[[dict[str, Any]], Any]
    expect: frozenset[str]
    suspect: Callable[[dict[str, Any]], str] | None = None
    forbid: frozenset[str] = frozenset(NETWORKY)
    allow: frozenset[str] = frozenset()  # findings the cell's own set-up causes (cross-zone traffic...)
    topology: bool = True
    settle: float = 0.0  # seconds before the fault shows in traffic (a client's connect timeout)


@dataclass
class Result:
    cell: Cell
    seconds_to_finding: float | None
    found: list[str]
    false_findings: list[str] = field(default_factory=list)
    suspect: str = ""

    @property
    def right(self) -> bool:
        return self.seconds_to_finding is not None and not self.false_findings


def _ui_node(status: dict[str, Any]) -> str:
    return next(p["node"] for p in status["pods"] if p["workload"] == "client-ui")


def _ui_pod(status: dict[str, Any]) -> str:
    return next(p["name"] for p in status["pods"] if p["workload"] == "client-ui")


def _runtime_pod(status: dict[str, Any], zone: str) -> str:
    return next(p["name"] for p in status["pods"] if p["workload"] == "sdruntime" and p["zone"] == zone)


CELLS: tuple[Cell, ...] = (
    Cell("loss on a pod", "loss", "pod", lambda s: lab.fault_loss(8, pod=_ui_pod(s)),
         frozenset({"workload_degradation"}), lambda s: f"pod ui/{_ui_pod(s)}",
         forbid=frozenset(NETWORKY - {"workload_degradation"})),
    Cell("loss on a node", "loss", "node", lambda s: lab.fault_loss(8, node=_ui_node(s)),
         frozenset({"node_degradation"}), lambda s: f"node {_ui_node(s)}",
         forbid=frozenset(NETWORKY - {"node_degradation"})),
    Cell("loss at a regional service", "loss", "remote", lambda s: lab.fault_loss(10, remote="S3"),
         frozenset({"remote_degradation"}), lambda s: "remote S3",
         forbid=frozenset(NETWORKY - {"remote_degradation"})),
    Cell("a slow regional service", "slow", "remote", lambda s: lab.fault_slow("S3", 2),
         frozenset({"remote_degradation"}), lambda s: "remote S3",
         forbid=frozenset(NETWORKY - {"remote_degradation"})),
    Cell("loss between two zones", "loss", "zone pair",
         lambda s: lab.fault_loss(8, between=("us-east-1a", "us-east-1b")), frozenset({"network_degradation"}),
         lambda s: "us-east-1a ↔ us-east-1b", forbid=frozenset(NETWORKY - {"network_degradation"}),
         allow=frozenset({"cross_zone_traffic"}), topology=False),
    Cell("loss on the zone router", "loss", "router", lambda s: lab.fault_loss(10),
         frozenset({"network_degradation"}), None, forbid=frozenset(NETWORKY - {"network_degradation"})),
    Cell("a blocked workload pair", "block", "pod pair", lambda s: lab.fault_block("ui", "sdruntime/sdruntime", 8080),
         frozenset({"blocked_connections"}), None, settle=5.0),
    Cell("a busy pod", "busy", "pod", lambda s: lab.fault_busy(_runtime_pod(s, "us-east-1b"), 2),
         frozenset(), None),
)
SUBSET = ("loss on a pod", "loss on a node", "loss at a regional service", "a busy pod")


def diagnosis(seconds: float) -> dict[str, Any]:
    return httpx.get(f"{COLLECTOR}/api/v1/findings", params={"since": f"{max(seconds, 1):.0f}s"}, timeout=60).json()


def loud(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Findings above info."""
    return [f for f in body["findings"] if f["severity"] != "info" and f["kind"] not in QUIET_KINDS]


def _matches(finding: dict[str, Any], cell: Cell, status: dict[str, Any]) -> bool:
    if finding["kind"] not in cell.expect:
        return False
    if cell.suspect is None:
        return True
    return cell.suspect(status) in str(finding["evidence"].get("suspect", "")) + " ".join(finding["where"]
                                                                                         .get("paths", []))


def run_cell(cell: Cell, interval: float, timeout: float = 60.0, hold: float = 6.0) -> Result:
    status = lab.status()
    if not cell.topology:
        lab.set_topology_aware(False)
    started = time.time()
    cell.apply(status)
    found_at: float | None = None
    suspect = ""
    try:
        if cell.expect:
            deadline = started + timeout
            while time.time() < deadline and found_at is None:
                time.sleep(interval)
                body = diagnosis(time.time() - started)
                hit = next((f for f in body["findings"] if _matches(f, cell, status)), None)
                if hit is not None:
                    found_at, suspect = time.time(), str(hit["evidence"].get("suspect", ""))
        time.sleep(hold)
        final = diagnosis(time.time() - started)
    finally:
        lab.clear_faults()
        if not cell.topology:
            lab.set_topology_aware(True)
    kinds = sorted({f["kind"] for f in loud(final)})
    false = [k for k in kinds if k in cell.forbid or (k not in cell.expect and k not in cell.allow)]
    if not cell.expect:  # a cell that must stay quiet is right when nothing loud shows
        return Result(cell, 0.0 if not false else None, kinds, false, suspect)
    took = found_at - started if found_at is not None else None
    return Result(cell, took, kinds, false, suspect)


def quiet(interval: float, seconds: float = 12.0, timeout: float = 90.0) -> None:
    """Wait until the last ``seconds`` have no finding above info (the last fault's flows are gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(max(interval, 2.0))
        if not loud(diagnosis(seconds)):
            return


def steady(seconds: float, interval: float) -> Result:
    """Load and no fault for ``seconds``: every finding above info is a false one."""
    started = time.time()
    while time.time() - started < seconds:
        time.sleep(min(30.0, seconds))
    kinds = sorted({f["kind"] for f in loud(diagnosis(time.time() - started))})
    cell = Cell(f"no fault, {seconds / 60:g} min of load", "none", "-", lambda s: None, frozenset())
    return Result(cell, 0.0 if not kinds else None, kinds, kinds)


class Load:
    """Tasks every 2 s in the background while the matrix runs."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            send(2.0, 10.0)


def matrix_spec(interval: float) -> LabSpec:
    return LabSpec(weights_mib=16, runtime_min=2, topology_aware=True, agent_interval_s=interval, cooldown_s=3600)


def wait_ready(timeout: float = 180.0) -> None:
    """Until the runtime has a ready pod in each zone, and their start-up has left the window."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pods = [p for p in lab.status()["pods"] if p["workload"] == "sdruntime" and p["ready"]]
        if {p["zone"] for p in pods} == {"us-east-1a", "us-east-1b"}:
            time.sleep(6)
            return
        time.sleep(1)
    raise TimeoutError("the runtime never had a ready pod in each zone")


def run(cells: tuple[Cell, ...], interval: float, steady_seconds: float,
        progress: Callable[[str], None] = lambda _: None) -> list[Result]:
    results = []
    with Load():
        quiet(interval)
        for cell in cells:
            progress(f"{cell.name} ...")
            results.append(run_cell(cell, interval))
            progress(_line(results[-1]))
            quiet(interval)
        if steady_seconds:
            progress(f"no fault, {steady_seconds:g} s of load ...")
            results.append(steady(steady_seconds, interval))
    return results


def _line(r: Result) -> str:
    took = f"{r.seconds_to_finding:.1f} s" if r.seconds_to_finding is not None else "never"
    return (f"{'right' if r.right else 'WRONG':5} | {r.cell.name:32} | {r.cell.kind:5} | {r.cell.location:9} | "
            f"{', '.join(sorted(r.cell.expect)) or 'nothing loud':22} | {took:>8} | {r.suspect or '-':40} | "
            f"{', '.join(r.false_findings) or '-'}")


def scorecard(results: list[Result], interval: float) -> str:
    head = (f"{'':5} | {'cell':32} | {'kind':5} | {'where':9} | {'expected':22} | {'found in':>8} | "
            f"{'suspect named':40} | false findings")
    right = sum(r.right for r in results)
    return "\n".join([head, "-" * len(head), *(_line(r) for r in results), "-" * len(head),
                      f"{right}/{len(results)} cells right; agent interval {interval:g} s"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interval", type=float, default=1.0, help="agents' report interval")
    parser.add_argument("--steady", type=float, default=600.0, help="seconds of load with no fault at the end")
    parser.add_argument("--subset", action="store_true", help="only the cells CI runs")
    args = parser.parse_args()
    if network.lab_namespaces():
        print("a lab is already running: `flowlens lab down` first", file=sys.stderr)
        return 2
    cells = tuple(c for c in CELLS if not args.subset or c.name in SUBSET)
    try:
        lab.up(matrix_spec(args.interval))
        wait_ready()
        results = run(cells, args.interval, args.steady, lambda line: print(line, file=sys.stderr, flush=True))
    finally:
        teardown.down()
    print(scorecard(results, args.interval))
    return 0 if all(r.right for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
