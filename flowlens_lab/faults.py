"""Faults the lab can put anywhere: loss on a pod, a node, a zone, between two zones, on the
zone router, or at a regional service; a regional service slowed down; a pod's CPU kept busy.

Each fault is recorded in the lab's state before it is applied, so ``lab fault clear`` and
``lab down`` always find it; :func:`sync` makes the kernel match the state (it is idempotent):

- loss: ``iptables -m statistic --mode random`` DROP rules in an ``FLL-LOSS`` chain, in the
  namespace where the fault sits (the router's fabric, a node, the pod's node on its veth, the
  regional services' namespace for one service's address);
- slow: an HTB shaper on the regional services' uplink, limiting what one service's address
  sends (tbf's drops and queueing make real retransmissions and RTT);
- busy: processes spinning on the CPU inside the pod's namespace.

The kernel here has no netem, so there is no delay fault: a slow service's queue stands in.
"""

from __future__ import annotations

from typing import Any

from flowlens_lab import network, processes
from flowlens_lab import state as lab_state
from flowlens_lab.shell import LabError, in_ns
from flowlens_lab.spec import SERVICE_IPS, LabSpec

LOCATIONS = ("router", "zone", "between", "node", "pod", "remote")
BUSY_COMMAND = "import time\nwhile True:\n    pass\n"


def loss_fault(percent: float, location: str, target: Any = None) -> dict[str, Any]:
    """A loss fault's record: ``target`` is a zone, two zones (between), a node, a pod or a service name."""
    if not 0 < percent < 100:
        raise LabError("loss must be a percentage between 0 and 100")
    if location not in LOCATIONS:
        raise LabError(f"loss goes on one of: {', '.join(LOCATIONS)}")
    if location == "remote" and target not in SERVICE_IPS:
        raise LabError(f"no regional service {target!r}: use one of {', '.join(SERVICE_IPS)}")
    name = "loss:" + ("router" if location == "router" else f"{location}:" + (
        "-".join(target) if location == "between" else str(target)))
    return {"name": name, "kind": "loss", "percent": percent, "location": location,
            "between": list(target) if location == "between" else None,
            "target": None if location in ("router", "between") else target}


def slow_fault(service: str, mbit: float) -> dict[str, Any]:
    if service not in SERVICE_IPS:
        raise LabError(f"no regional service {service!r}: use one of {', '.join(SERVICE_IPS)}")
    if not 0 < mbit < 10_000:
        raise LabError("the rate must be between 0 and 10000 Mbit/s")
    return {"name": f"slow:{service}", "kind": "slow", "target": service, "mbit": mbit}


def busy_fault(pod: str, cpus: int) -> dict[str, Any]:
    if not 1 <= cpus <= 16:
        raise LabError("busy takes 1 to 16 CPUs")
    return {"name": f"busy:{pod}", "kind": "busy", "target": pod, "cpus": cpus}


def sync(spec: LabSpec) -> None:
    """Apply every loss, slow and busy fault of the state, and remove those no longer there."""
    state = lab_state.read()
    faults = list(state["faults"].values())
    _sync_loss(spec, state, [f for f in faults if f["kind"] == "loss"])
    _sync_slow([f for f in faults if f["kind"] == "slow"])
    _sync_busy(state, [f for f in faults if f["kind"] == "busy"])


def _drop(percent: float) -> str:
    return f"-m statistic --mode random --probability {percent / 100:.6f} -j DROP"


def _sync_loss(spec: LabSpec, state: dict[str, Any], faults: list[dict[str, Any]]) -> None:
    rules: dict[str, list[str]] = {network.FABRIC: [], network.AWS_NS: []}
    rules.update({node["ns"]: [] for node in state["nodes"].values()})
    for fault in faults:
        drop, location = _drop(fault["percent"]), fault.get("location") or (
            "between" if fault.get("between") else "router")
        if location == "router":
            rules[network.FABRIC].append(f"-A FLL-LOSS {drop}")
        elif location == "zone":  # all the zone's traffic through the router, in and out
            bridge = network.bridge_name(spec.zone(fault["target"]))
            rules[network.FABRIC] += [f"-A FLL-LOSS -i {bridge} {drop}", f"-A FLL-LOSS -o {bridge} {drop}"]
        elif location == "between":
            a, b = (network.bridge_name(spec.zone(z)) for z in fault["between"])
            rules[network.FABRIC] += [f"-A FLL-LOSS -i {a} -o {b} {drop}", f"-A FLL-LOSS -i {b} -o {a} {drop}"]
        elif location == "node":
            node = state["nodes"].get(fault["target"])
            if node is not None:  # the node's uplink, both ways
                rules[node["ns"]] += [f"-A FLL-LOSS -i eth0 {drop}", f"-A FLL-LOSS -o eth0 {drop}"]
        elif location == "pod":
            pod = state["pods"].get(fault["target"])
            if pod is not None:  # the pod's veth on its node, both ways
                veth, node_ns = network.host_veth(pod["ns"]), state["nodes"][pod["node"]]["ns"]
                rules[node_ns] += [f"-A FLL-LOSS -i {veth} {drop}", f"-A FLL-LOSS -o {veth} {drop}"]
        elif location == "remote":
            address = SERVICE_IPS[fault["target"]]
            rules[network.AWS_NS] += [f"-A FLL-LOSS -d {address} {drop}", f"-A FLL-LOSS -s {address} {drop}"]
    present = set(network.lab_namespaces())
    for ns, lines in rules.items():
        if ns in present:
            _load_chain(ns, lines)
        elif lines:  # a smaller lab (no AWS side): the fault has nowhere to go
            raise LabError(f"this lab has no namespace {ns} for the fault: run the full lab (`flowlens lab up`)")


def _load_chain(ns: str, lines: list[str]) -> None:
    """Replace ns's FLL-LOSS chain, hooked at the head of INPUT, OUTPUT and FORWARD."""
    in_ns(ns, "iptables-restore", "--noflush", input_text="\n".join(["*filter", ":FLL-LOSS - [0:0]", *lines,
                                                                      "COMMIT", ""]))
    for hook in ("INPUT", "OUTPUT", "FORWARD"):
        if "-j FLL-LOSS" not in in_ns(ns, "iptables", "-S", hook):
            in_ns(ns, "iptables", "-I", hook, "-j", "FLL-LOSS")


def _sync_slow(faults: list[dict[str, Any]]) -> None:
    """One HTB class per slowed service on the regional services' uplink; none: no shaper."""
    in_ns(network.AWS_NS, "tc", "qdisc", "del", "dev", "eth0", "root", check=False)
    if not faults:
        return
    in_ns(network.AWS_NS, "tc", "qdisc", "add", "dev", "eth0", "root", "handle", "1:", "htb", "default", "99")
    in_ns(network.AWS_NS, "tc", "class", "add", "dev", "eth0", "parent", "1:", "classid", "1:99", "htb", "rate",
          "10gbit")
    for index, fault in enumerate(faults, start=10):
        rate = f"{fault['mbit']:g}mbit"
        in_ns(network.AWS_NS, "tc", "class", "add", "dev", "eth0", "parent", "1:", "classid", f"1:{index}", "htb",
              "rate", rate, "ceil", rate)
        # A short queue, as a throttled endpoint has: what overflows it is dropped.
        in_ns(network.AWS_NS, "tc", "qdisc", "add", "dev", "eth0", "parent", f"1:{index}", "pfifo", "limit", "30")
        in_ns(network.AWS_NS, "tc", "filter", "add", "dev", "eth0", "parent", "1:", "protocol", "ip", "u32",
              "match", "ip", "src", f"{SERVICE_IPS[fault['target']]}/32", "flowid", f"1:{index}")


def _sync_busy(state: dict[str, Any], faults: list[dict[str, Any]]) -> None:
    wanted = {f"busy-{f['target']}-{i}": f["target"] for f in faults for i in range(f["cpus"])}
    running = {p["name"] for p in state["processes"] if p["name"].startswith("busy-")}
    processes.stop(running - set(wanted))
    for name, pod_name in sorted(wanted.items()):
        pod = state["pods"].get(pod_name)
        if name not in running and pod is not None:
            processes.start(name, [processes.PYTHON, "-c", BUSY_COMMAND], netns=pod["ns"])
