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
import json
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
POLL = 1.0  # seconds between diagnoses while waiting for a finding: time to finding to the second


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
    topology: bool = True  # False: the cell runs with topology-aware routing off (traffic crosses zones)
    health: int = 0  # the network health indicator the final diagnosis must show
    # Findings the final diagnosis must also hold: kind → a text its evidence must contain. The
    # cell waits for them up to ``settle`` seconds (a slowed model load must first finish).
    then: tuple[tuple[str, str], ...] = ()
    settle: float = 0.0
    undo: Callable[[], Any] = lambda: None  # what clearing the faults does not put back
    # When the fault starts to bite, if not at once (a new pod's model load): the clock starts then.
    begins: Callable[[], bool] = lambda: True


@dataclass
class Result:
    cell: Cell
    seconds_to_finding: float | None
    found: list[str]
    false_findings: list[str] = field(default_factory=list)
    suspect: str = ""
    findings: list[dict[str, Any]] = field(default_factory=list)  # the final diagnosis, above info
    health: int = 0

    @property
    def right(self) -> bool:
        return self.seconds_to_finding is not None and not self.false_findings and self.health == self.cell.health


def _ui_node(status: dict[str, Any]) -> str:
    return next(p["node"] for p in status["pods"] if p["workload"] == "client-ui")


def _ui_pod(status: dict[str, Any]) -> str:
    return next(p["name"] for p in status["pods"] if p["workload"] == "client-ui")


def _runtime_pods() -> list[dict[str, Any]]:
    return [p for p in lab.status()["pods"] if p["workload"] == "sdruntime"]


def _runtime_pod(status: dict[str, Any], zone: str) -> str:
    return next(p["name"] for p in status["pods"] if p["workload"] == "sdruntime" and p["zone"] == zone)


def _slow_s3_and_scale_out(status: dict[str, Any]) -> None:
    """S3 throttled to 4 Mbit/s, then a third runtime pod: it loads its weights through the
    throttle while the others' task traffic queues behind it (a slow far side, the nodes'
    allowances untouched)."""
    lab.fault_slow("S3", 4)
    lab.scale_runtime(3, 3)


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
    Cell("S3 throttled under a model load", "slow", "remote", _slow_s3_and_scale_out,
         frozenset({"remote_degradation"}), lambda s: "remote S3",
         forbid=frozenset(NETWORKY - {"remote_degradation"}), allow=frozenset({"slow_model_load"}),
         then=(("slow_model_load", '"cause": "remote"'),), settle=150.0,
         undo=lambda: lab.scale_runtime(2, 2), begins=lambda: len(_runtime_pods()) >= 3),
    # Both zones serve the UI, so zone b's trouble shows on more than its runtime node.
    Cell("loss in a zone", "loss", "zone", lambda s: lab.fault_loss(8, zone="us-east-1b"),
         frozenset({"network_degradation"}), lambda s: "us-east-1b",
         forbid=frozenset(NETWORKY - {"network_degradation"}), allow=frozenset({"cross_zone_traffic"}),
         topology=False, health=1),
    Cell("loss between two zones", "loss", "zone pair",
         lambda s: lab.fault_loss(8, between=("us-east-1a", "us-east-1b")), frozenset({"network_degradation"}),
         lambda s: "us-east-1a ↔ us-east-1b", forbid=frozenset(NETWORKY - {"network_degradation"}),
         allow=frozenset({"cross_zone_traffic"}), topology=False, health=1),
    Cell("loss on the zone router", "loss", "router", lambda s: lab.fault_loss(10),
         frozenset({"network_degradation"}), None, forbid=frozenset(NETWORKY - {"network_degradation"}), health=1),
    Cell("a blocked workload pair", "block", "pod pair", lambda s: lab.fault_block("ui", "sdruntime/sdruntime", 8080),
         frozenset({"blocked_connections"}), lambda s: "ui/client-ui"),
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
    named = [str(finding["evidence"].get("suspect", "")), *finding["where"].get("paths", []),
             *finding["where"].get("workloads", [])]
    return cell.suspect(status) in " ".join(named)


def run_cell(cell: Cell, interval: float, timeout: float = 60.0, hold: float = 6.0) -> Result:
    if not cell.topology:  # traffic spreads over both zones before the fault starts
        lab.set_topology_aware(False)
        time.sleep(2 * interval)
    status = lab.status()
    cell.apply(status)
    found_at: float | None = None
    suspect = ""
    try:
        started = _wait_for(cell.begins, timeout)
        if cell.expect:
            deadline = started + timeout
            while time.time() < deadline and found_at is None:
                time.sleep(POLL)
                body = diagnosis(time.time() - started)
                hit = next((f for f in body["findings"] if _matches(f, cell, status)), None)
                if hit is not None:
                    found_at, suspect = time.time(), str(hit["evidence"].get("suspect", ""))
        time.sleep(hold)
        final = diagnosis(time.time() - started)
        deadline = time.time() + cell.settle
        while not _holds(final, cell.then) and time.time() < deadline:
            time.sleep(max(interval, POLL))
            final = diagnosis(time.time() - started)
    finally:
        lab.clear_faults()
        cell.undo()
        if not cell.topology:
            lab.set_topology_aware(True)
    kinds = sorted({f["kind"] for f in loud(final)})
    false = [k for k in kinds if k in cell.forbid or (k not in cell.expect and k not in cell.allow)]
    false += [f"no {kind}" for kind, text in cell.then if not _holds(final, ((kind, text),))]
    if not cell.expect:  # a cell that must stay quiet is right when nothing loud shows
        return Result(cell, 0.0 if not false else None, kinds, false, suspect, loud(final), final["health"])
    took = found_at - started if found_at is not None else None
    return Result(cell, took, kinds, false, suspect, loud(final), final["health"])


def _wait_for(condition: Callable[[], bool], timeout: float) -> float:
    """When ``condition`` first holds (polled every POLL seconds): a cell's clock starts then."""
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            raise TimeoutError("the fault never started to bite")
        time.sleep(POLL)
    return time.time()


def _holds(body: dict[str, Any], then: tuple[tuple[str, str], ...]) -> bool:
    """Whether the diagnosis has every finding ``then`` asks for (see :attr:`Cell.then`)."""
    return all(any(f["kind"] == kind and text in json.dumps(f["evidence"]) for f in body["findings"])
               for kind, text in then)


def quiet(interval: float, seconds: float = 12.0, timeout: float = 90.0) -> None:
    """Wait until the last ``seconds`` have no finding above info (the last fault's flows are gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(max(interval, 2.0))
        if not loud(diagnosis(seconds)):
            return


def steady(seconds: float, interval: float) -> Result:
    """Load and no fault for ``seconds``: every finding above info is a false one, whether the
    diagnosis of the last minute (asked every 30 s) or of the whole stretch (at its end) gives it."""
    started = time.time()
    kinds: set[str] = set()
    health = 0
    while time.time() - started < seconds:
        time.sleep(min(30.0, seconds))
        recent = diagnosis(min(60.0, time.time() - started))
        kinds |= {f["kind"] for f in loud(recent)}
        health = max(health, recent["health"])
    final = diagnosis(time.time() - started)
    kinds |= {f["kind"] for f in loud(final)}
    cell = Cell(f"no fault, {seconds / 60:g} min of load", "none", "-", lambda s: None, frozenset())
    return Result(cell, 0.0 if not kinds else None, sorted(kinds), sorted(kinds), "", loud(final),
                  max(health, final["health"]))


class Load:
    """Tasks every ``every`` seconds in the background while the matrix runs."""

    def __init__(self, every: float = 2.0) -> None:
        self.every = every
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
            send(self.every, 10.0)


def matrix_spec(interval: float) -> LabSpec:
    # No scale-out: a new pod's weight download would exceed its node's allowance, a true finding
    # that is no cell's fault.
    return LabSpec(weights_mib=16, runtime_min=2, runtime_max=2, topology_aware=True, agent_interval_s=interval,
                   cooldown_s=3600)


def wait_ready(timeout: float = 180.0, settle: float = 6.0) -> None:
    """Until the runtime has a ready pod in each zone; when it had to wait, ``settle`` seconds
    more, so that the start-up (weight downloads) leaves the window."""
    deadline, waited = time.monotonic() + timeout, False
    while time.monotonic() < deadline:
        pods = [p for p in lab.status()["pods"] if p["workload"] == "sdruntime" and p["ready"]]
        if {p["zone"] for p in pods} == {"us-east-1a", "us-east-1b"}:
            if waited:
                time.sleep(settle)
            return
        waited = True
        time.sleep(1)
    raise TimeoutError("the runtime never had a ready pod in each zone")


def run(cells: tuple[Cell, ...], interval: float, steady_seconds: float, every: float = 2.0,
        progress: Callable[[str], None] = lambda _: None) -> list[Result]:
    results = []
    with Load(every):
        quiet(interval)
        for cell in cells:
            wait_ready()  # a cell before may have replaced the runtime's pods
            progress(f"{cell.name} ...")
            results.append(run_cell(cell, interval))
            progress(_line(results[-1]))
            if not results[-1].right:
                progress(explain(results[-1]))
            quiet(interval)
        if steady_seconds:
            progress(f"no fault, {steady_seconds:g} s of load ...")
            results.append(steady(steady_seconds, interval))
    return results


def explain(r: Result) -> str:
    """What a wrong cell's diagnosis said, finding by finding."""
    keep = ("suspect", "degraded_share", "rest_degraded_share", "coverage", "loss_rate", "degraded_flows", "nodes")
    return "\n".join(f"    {f['kind']}: {f['title']} | paths {f['where'].get('paths')} | "
                     + ", ".join(f"{k}={f['evidence'][k]}" for k in keep if k in f["evidence"]) for f in r.findings)


def _line(r: Result) -> str:
    took = f"{r.seconds_to_finding:.1f} s" if r.seconds_to_finding is not None else "never"
    return (f"{'right' if r.right else 'WRONG':5} | {r.cell.name:32} | {r.cell.kind:5} | {r.cell.location:9} | "
            f"{', '.join(sorted(r.cell.expect)) or 'nothing loud':22} | {took:>8} | {r.suspect or '-':40} | "
            f"{r.health:6} | {', '.join(r.false_findings) or '-'}")


def scorecard(results: list[Result], interval: float) -> str:
    head = (f"{'':5} | {'cell':32} | {'kind':5} | {'where':9} | {'expected':22} | {'found in':>8} | "
            f"{'suspect named':40} | health | false findings")
    right = sum(r.right for r in results)
    return "\n".join([head, "-" * len(head), *(_line(r) for r in results), "-" * len(head),
                      f"{right}/{len(results)} cells right; agent interval {interval:g} s"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interval", type=float, default=5.0, help="agents' report interval")
    parser.add_argument("--every", type=float, default=2.0, help="seconds between rounds of tasks (the load)")
    parser.add_argument("--steady", type=float, default=600.0, help="seconds of load with no fault at the end")
    parser.add_argument("--subset", action="store_true", help="only the cells CI runs")
    parser.add_argument("--steady-only", action="store_true", help="no fault cells: only the steady load")
    parser.add_argument("--cell", action="append", default=[], choices=[c.name for c in CELLS], metavar="NAME",
                        help="only this cell (repeat for more): " + "; ".join(c.name for c in CELLS))
    args = parser.parse_args()
    if network.lab_namespaces():
        print("a lab is already running: `flowlens lab down` first", file=sys.stderr)
        return 2
    cells = () if args.steady_only else tuple(
        c for c in CELLS if (not args.subset or c.name in SUBSET) and (not args.cell or c.name in args.cell))
    try:
        lab.up(matrix_spec(args.interval))
        wait_ready()
        results = run(cells, args.interval, args.steady, args.every,
                      lambda line: print(line, file=sys.stderr, flush=True))
    finally:
        teardown.down()
    print(scorecard(results, args.interval))
    return 0 if all(r.right for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
