"""Kernel networking of the lab: the zone fabric, the aws namespace, nodes and pods.

- ``fll-fabric`` holds one bridge per availability zone plus one for the regional services,
  and routes between them: it is the zone router (and where cross-zone loss is injected).
- A node is a namespace whose ``eth0`` sits on its zone's bridge. Its bandwidth allowance is
  enforced in both directions on that uplink: tbf on egress, tbf on an ifb for ingress; their
  drops are the node's allowance-exceeded counters.
- A pod is a namespace behind its node, wired like the VPC CNI: a /32 on ``eth0``, a host-side
  veth ``eni<hash>`` with proxy ARP, a /32 route on the node. Pod traffic therefore crosses the
  node's shaped uplink, as on a real node.

Every namespace is recorded in the state file before it is created (see :mod:`state`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from flowlens_lab import state as lab_state
from flowlens_lab.shell import in_ns, run, sysctl
from flowlens_lab.spec import AWS_GATEWAY, PREFIX, Zone

FABRIC = PREFIX + "fabric"
AWS_NS = PREFIX + "aws"
ETC_NETNS = Path("/etc/netns")


def create_namespace(name: str) -> None:
    with lab_state.locked() as state:
        if name not in state["namespaces"]:
            state["namespaces"].append(name)
    run("ip", "netns", "add", name)
    in_ns(name, "ip", "link", "set", "lo", "up")


def delete_namespace(name: str) -> None:
    run("ip", "netns", "del", name, check=False)
    remove_hosts_file(name)


def write_hosts_file(ns: str, entries: dict[str, str]) -> None:
    """/etc/netns/<ns>/hosts and resolv.conf, which `ip netns exec` shows its processes in /etc.

    Names resolve from the hosts file only: the resolver points at the pod's own loopback, so
    a lookup fails at once instead of waiting on a nameserver the lab cannot reach."""
    directory = ETC_NETNS / ns
    with lab_state.locked() as state:
        if str(directory) not in state["etc_netns"]:
            state["etc_netns"].append(str(directory))
    directory.mkdir(parents=True, exist_ok=True)
    lines = ["127.0.0.1 localhost", *(f"{ip} {name}" for name, ip in sorted(entries.items()))]
    (directory / "hosts").write_text("\n".join(lines) + "\n")
    (directory / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")


def remove_hosts_file(ns: str) -> None:
    shutil.rmtree(ETC_NETNS / ns, ignore_errors=True)


def bridge_name(zone: Zone) -> str:
    return f"br-{zone.name[-2:]}"


def build_fabric(zones: tuple[Zone, ...]) -> None:
    create_namespace(FABRIC)
    sysctl(FABRIC, "net.ipv4.ip_forward=1")
    sysctl(FABRIC, "net.ipv4.conf.all.send_redirects=0")
    for zone in zones:
        _bridge(bridge_name(zone), f"{zone.gateway}/24")
    _bridge("br-aws", f"{AWS_GATEWAY}/24")


def _bridge(name: str, address: str) -> None:
    in_ns(FABRIC, "ip", "link", "add", name, "type", "bridge")
    in_ns(FABRIC, "ip", "addr", "add", address, "dev", name)
    in_ns(FABRIC, "ip", "link", "set", name, "up")


def _uplink(ns: str, fabric_end: str, bridge: str, addresses: list[str], gateway: str) -> None:
    run("ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", fabric_end, "netns", FABRIC)
    in_ns(FABRIC, "ip", "link", "set", fabric_end, "master", bridge)
    in_ns(FABRIC, "ip", "link", "set", fabric_end, "up")
    for address in addresses:
        in_ns(ns, "ip", "addr", "add", address, "dev", "eth0")
    in_ns(ns, "ip", "link", "set", "eth0", "up")
    in_ns(ns, "ip", "route", "add", "default", "via", gateway)


def build_aws(addresses: list[str]) -> None:
    """The regional services' namespace: one uplink with an address per service."""
    create_namespace(AWS_NS)
    _uplink(AWS_NS, "aws0", "br-aws", [f"{a}/24" for a in addresses], AWS_GATEWAY)


def node_ip(zone: Zone, index: int) -> str:
    return f"10.{zone.index}.0.{10 + index}"


def build_node(ns: str, zone: Zone, index: int, mbit: float) -> str:
    """A node namespace on its zone's bridge, shaped to its allowance; returns its IP."""
    ip = node_ip(zone, index)
    create_namespace(ns)
    sysctl(ns, "net.ipv4.ip_forward=1")
    _uplink(ns, f"n-{zone.name[-1]}{index}", bridge_name(zone), [f"{ip}/24"], zone.gateway)
    in_ns(FABRIC, "ip", "route", "add", f"10.{zone.index}.{index}.0/24", "via", ip)
    in_ns(ns, "ip", "link", "add", "ifb0", "type", "ifb")
    in_ns(ns, "ip", "link", "set", "ifb0", "up")
    in_ns(ns, "tc", "qdisc", "add", "dev", "eth0", "handle", "ffff:", "ingress")
    in_ns(ns, "tc", "filter", "add", "dev", "eth0", "parent", "ffff:", "protocol", "all", "u32", "match", "u32", "0",
          "0", "action", "mirred", "egress", "redirect", "dev", "ifb0")
    shape_node(ns, mbit, replace=False)
    return ip


def shape_node(ns: str, mbit: float, replace: bool = True) -> None:
    """The node's allowance on both directions of its uplink; drops make real retransmissions."""
    rate = f"{mbit:g}mbit"
    # A short queue, as a NIC enforcing an allowance has: bursts above it are dropped.
    burst = f"{max(16, int(mbit * 1000 / 8 / 100))}kb"  # ~10 ms of traffic
    limit = f"{max(32, int(mbit * 1000 / 8 / 50))}kb"  # ~20 ms of queue
    verb = "replace" if replace else "add"
    for dev in ("eth0", "ifb0"):
        in_ns(ns, "tc", "qdisc", verb, "dev", dev, "root", "handle", "1:", "tbf", "rate", rate, "burst", burst,
              "limit", limit)


def pod_ip(zone: Zone, node_index: int, pod_index: int) -> str:
    return f"10.{zone.index}.{node_index}.{10 + pod_index}"


def host_veth(pod_ns: str) -> str:
    return "eni" + hashlib.sha1(pod_ns.encode()).hexdigest()[:11]


def build_pod(pod_ns: str, node_ns: str, ip: str) -> str:
    """A pod namespace behind its node, VPC-CNI style; returns the host-side veth name."""
    veth = host_veth(pod_ns)
    create_namespace(pod_ns)
    run("ip", "link", "add", "eth0", "netns", pod_ns, "type", "veth", "peer", "name", veth, "netns", node_ns)
    in_ns(pod_ns, "ip", "addr", "add", f"{ip}/32", "dev", "eth0")
    in_ns(pod_ns, "ip", "link", "set", "eth0", "up")
    in_ns(pod_ns, "ip", "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link")
    in_ns(pod_ns, "ip", "route", "add", "default", "via", "169.254.1.1", "dev", "eth0")
    in_ns(node_ns, "sysctl", "-qw", f"net.ipv4.conf.{veth}.proxy_arp=1")
    # Answer the pod's ARP at once, as CNI plugins do (the default waits up to 0.8 s).
    in_ns(node_ns, "sysctl", "-qw", f"net.ipv4.neigh.{veth}.proxy_delay=0")
    in_ns(node_ns, "ip", "link", "set", veth, "up")
    in_ns(node_ns, "ip", "route", "add", f"{ip}/32", "dev", veth)
    return veth


def lab_namespaces() -> list[str]:
    """Every namespace with the lab's prefix, whatever the state file says."""
    try:
        names = os.listdir("/run/netns")
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.startswith(PREFIX))
