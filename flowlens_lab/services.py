"""ClusterIP Services the way kube-proxy's iptables mode implements them, plus policy rules.

Each node namespace gets a ``KUBE-SERVICES`` chain (nat PREROUTING and OUTPUT jump to it) that
matches the ClusterIP and port and picks a backend with ``-m statistic --mode random``, then
DNATs to the pod, exactly the rule shape kube-proxy writes. With topology-aware routing on, a
node only uses the backends of its own zone when it has any (EndpointSlice hints). Services
without ready backends are rejected, as kube-proxy does. The ``FLL-POLICY`` filter chain holds
the DROP rules of blocked-port faults (what a NetworkPolicy or security group does).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from flowlens_lab.shell import in_ns


@dataclass(frozen=True, slots=True)
class Backend:
    ip: str
    port: int
    zone: str


@dataclass(frozen=True, slots=True)
class ServiceRule:
    name: str  # namespace/name
    cluster_ip: str
    port: int
    backends: tuple[Backend, ...]


@dataclass(frozen=True, slots=True)
class BlockRule:
    sources: tuple[str, ...]
    destinations: tuple[str, ...]
    port: int


def _chain(kind: str, *parts: object) -> str:
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:16].upper()
    return f"KUBE-{kind}-{digest}"


def backends_for(service: ServiceRule, zone: str, topology_aware: bool) -> tuple[Backend, ...]:
    if topology_aware:
        local = tuple(b for b in service.backends if b.zone == zone)
        if local:
            return local
    return service.backends


def render(services: list[ServiceRule], blocks: list[BlockRule], zone: str, topology_aware: bool) -> str:
    """The iptables-restore input for one node (applied with --noflush)."""
    nat = ["*nat", ":KUBE-SERVICES - [0:0]"]
    filt = ["*filter", ":KUBE-SERVICES - [0:0]", ":FLL-POLICY - [0:0]"]
    for service in services:
        chosen = backends_for(service, zone, topology_aware)
        match = f"-d {service.cluster_ip}/32 -p tcp -m tcp --dport {service.port}"
        comment = f'-m comment --comment "{service.name}"'
        if not chosen:
            filt.append(f"-A KUBE-SERVICES {match} {comment} -j REJECT --reject-with icmp-port-unreachable")
            continue
        svc_chain = _chain("SVC", service.name, service.port)
        nat += [f":{svc_chain} - [0:0]", f"-A KUBE-SERVICES {match} {comment} -j {svc_chain}"]
        for i, backend in enumerate(chosen):
            sep = _chain("SEP", service.name, backend.ip, backend.port)
            nat.append(f":{sep} - [0:0]")
            left = len(chosen) - i
            pick = f"-m statistic --mode random --probability {1 / left:.5f} " if left > 1 else ""
            nat.append(f"-A {svc_chain} {pick}-j {sep}")
            nat.append(f"-A {sep} -p tcp -m tcp -j DNAT --to-destination {backend.ip}:{backend.port}")
    for block in blocks:
        for src in block.sources:
            for dst in block.destinations:
                filt.append(f"-A FLL-POLICY -s {src}/32 -d {dst}/32 -p tcp -m tcp --dport {block.port} -j DROP")
    return "\n".join([*nat, "COMMIT", *filt, "COMMIT", ""])


def install_hooks(node_ns: str) -> None:
    """Once per node: the built-in chains jump to the lab's chains."""
    in_ns(node_ns, "iptables-restore", "--noflush", input_text=render([], [], "", False))
    for table, chain, target in (("nat", "PREROUTING", "KUBE-SERVICES"), ("nat", "OUTPUT", "KUBE-SERVICES"),
                                 ("filter", "FORWARD", "FLL-POLICY"), ("filter", "FORWARD", "KUBE-SERVICES"),
                                 ("filter", "OUTPUT", "KUBE-SERVICES")):
        in_ns(node_ns, "iptables", "-t", table, "-A", chain, "-j", target)


def apply(node_ns: str, services: list[ServiceRule], blocks: list[BlockRule], zone: str,
          topology_aware: bool) -> None:
    in_ns(node_ns, "iptables-restore", "--noflush", input_text=render(services, blocks, zone, topology_aware))
    _drop_unused_chains(node_ns)


def _drop_unused_chains(node_ns: str) -> None:
    rules = in_ns(node_ns, "iptables", "-t", "nat", "-S")
    chains = {line.split()[1] for line in rules.splitlines() if line.startswith("-N KUBE-S")}
    used = {words[words.index("-j") + 1] for line in rules.splitlines()
            if line.startswith("-A") and "-j" in (words := line.split())}
    for chain in sorted(chains - used - {"KUBE-SERVICES"}):
        in_ns(node_ns, "iptables", "-t", "nat", "-F", chain)
        in_ns(node_ns, "iptables", "-t", "nat", "-X", chain)
