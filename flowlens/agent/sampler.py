"""One sampling cycle over every network namespace of the machine.

Each namespace gets a :class:`NamespaceWatch`: netlink sockets opened inside it once, and an
accountant. A cycle drains destroy events, dumps live sockets, then drains the events that
arrived during the dump, in that order, so that a socket seen in a dump and destroyed right
after is counted from the dump's values. Namespaces that appear are attached; namespaces that
vanish have their last events drained and their sockets closed, which releases them. A
namespace that cannot be read is reported once and skipped; the others carry on.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from flowlens.agent.accounting import NamespaceAccountant, RoleResolver
from flowlens.agent.node import NamespaceCounters, NodeReaders, safe_read
from flowlens.agent.services import ServiceResolver
from flowlens.kernel.netns import HOST_LABEL, Netns, discover, entered
from flowlens.kernel.sock_diag import DestroyEvents, SockDiag
from flowlens.model.errors import FlowlensError, PrivilegeError
from flowlens.model.flows import FlowCounters, FlowKey

log = logging.getLogger(__name__)

# Receive buffer for destroy events: room for ~20,000 notifications between two drains.
EVENT_BUFFER = 8 << 20


def read_ephemeral_range(path: str = "/proc/sys/net/ipv4/ip_local_port_range") -> tuple[int, int]:
    try:
        with open(path) as f:
            lo, hi = f.read().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


def effective_capabilities(proc: str = "/proc") -> int:
    try:
        with open(f"{proc}/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except (OSError, ValueError):
        pass
    return 0


class NamespaceWatch:
    """The agent's open handles on one network namespace."""

    def __init__(self, ns: Netns, is_host: bool, event_buffer: int = EVENT_BUFFER,
                 resolve_service: ServiceResolver | None = None) -> None:
        self.ns = ns
        self.is_host = is_host
        self.event_buffer = event_buffer
        self.accountant = NamespaceAccountant(ns.label, RoleResolver(read_ephemeral_range()), resolve_service)
        self.sockets = 0
        if is_host:
            self._open()
        else:
            with entered(ns.path):
                self._open()

    def _open(self) -> None:
        # Subscribe before the first dump so no socket can die unseen in between.
        self.events = DestroyEvents(self.event_buffer)
        try:
            self.diag = SockDiag()
            self.node = NodeReaders(self.is_host)
        except BaseException:
            self.events.close()
            if hasattr(self, "diag"):
                self.diag.close()
            raise
        self.accountant.roles.refresh = self.diag.listening_ports

    def prime(self, baseline: bool) -> None:
        """First look: with ``baseline`` the namespace's existing sockets are not counted."""
        self.sockets = self.accountant.observe_scan(self.diag.scan(), self.diag.parse, baseline=baseline)
        self.accountant.observe_destroyed(self.events.drain(), baseline=baseline)

    def poll(self) -> None:
        acc = self.accountant
        # Events read before the dump concern sockets already gone from it, so they may be
        # applied after it, when the listener ports it brings are fresh.
        before = self.events.drain()
        self.sockets = acc.observe_scan(self.diag.scan(), self.diag.parse)
        acc.observe_destroyed(before)
        acc.observe_destroyed(self.events.drain())

    def release(self) -> None:
        """Count the last destroy events, then close the sockets that pin the namespace."""
        try:
            self.accountant.observe_destroyed(self.events.drain())
        finally:
            self.close()

    def close(self) -> None:
        self.events.close()
        self.diag.close()
        self.node.close()

    def counters(self) -> NamespaceCounters | None:
        return safe_read(self.node, self.ns.label, self.is_host)

    @property
    def overflows(self) -> int:
        return self.events.overflows


@dataclass(slots=True)
class CycleResult:
    """What one cycle measured: the interval's flows and the agent's own figures."""

    start: float
    end: float
    flows: dict[FlowKey, FlowCounters]
    rtt_samples: dict[FlowKey, list[int]]
    active_sockets: dict[FlowKey, int]
    node: list[NamespaceCounters]
    sockets: int
    namespaces: int
    collect_seconds: float
    cpu_seconds: float
    errors: list[str] = field(default_factory=list)
    # The ClusterIP a client dialled, for flows whose remote end is the backend reached after DNAT.
    service_ips: dict[FlowKey, str] = field(default_factory=dict)


class Sampler:
    """Discovers namespaces and runs accounting cycles over all of them."""

    def __init__(self, proc: str = "/proc", run_netns: str = "/run/netns",
                 clock: Callable[[], float] = time.time, namespaces: bool = True,
                 node_counters: bool = True, event_buffer: int = EVENT_BUFFER,
                 only: tuple[str, ...] = (), service_cidrs: str = "") -> None:
        self.proc, self.run_netns, self.clock = proc, run_netns, clock
        self.node_counters = node_counters
        self.event_buffer = event_buffer
        self.only = only  # glob patterns of namespace labels to watch besides the agent's own
        # Opened in the agent's own namespace, where kube-proxy's DNAT and its conntrack live.
        self.services = ServiceResolver(service_cidrs) if service_cidrs else None
        self.all_namespaces = namespaces
        self.watches: dict[int, NamespaceWatch] = {}
        self._released: list[NamespaceWatch] = []
        self.failed: dict[int, str] = {}
        self.lost_events = 0
        self.overflows = 0
        self._last_end = clock()
        self._started = False
        self._check_privileges()

    def _check_privileges(self) -> None:
        missing = [name for bit, name in ((12, "CAP_NET_ADMIN"), (21, "CAP_SYS_ADMIN"))
                   if not effective_capabilities(self.proc) >> bit & 1]
        if missing:
            raise PrivilegeError(
                f"the agent lacks {' and '.join(missing)}, needed to follow socket-destroy events and "
                "enter network namespaces: run it as root (sudo) or grant those capabilities"
            )

    def start(self) -> None:
        """Attach every namespace present now, taking their sockets as the baseline."""
        self._refresh(baseline=True)
        if not self.watches:
            raise FlowlensError("no network namespace could be read: " + "; ".join(self.failed.values()))
        self._started = True
        self._last_end = self.clock()

    def _refresh(self, baseline: bool) -> None:
        found = discover(self.proc, self.run_netns)
        host = next(inode for inode, ns in found.items() if ns.label == HOST_LABEL)
        if not self.all_namespaces:
            found = {host: found[host]}
        elif self.only:
            found = {i: ns for i, ns in found.items()
                     if i == host or any(fnmatch.fnmatchcase(ns.label, p) for p in self.only)}
        for inode in [i for i in self.watches if i not in found]:
            self._release(inode)
        for inode in [i for i in self.failed if i not in found]:
            del self.failed[inode]
        for inode, ns in found.items():
            if inode in self.watches or inode in self.failed:
                continue
            self._attach(ns, inode == host, baseline)

    def _attach(self, ns: Netns, is_host: bool, baseline: bool) -> None:
        try:
            watch = NamespaceWatch(ns, is_host, self.event_buffer, self.services)
            watch.prime(baseline)
        except FlowlensError as err:
            if is_host and isinstance(err, PrivilegeError):
                raise
            self.failed[ns.inode] = f"{ns.label}: {err}"
            log.warning("skipping network namespace %s: %s", ns.label, err)
            return
        except OSError as err:
            self.failed[ns.inode] = f"{ns.label}: {err}"
            log.warning("skipping network namespace %s: %s", ns.label, err)
            return
        self.watches[ns.inode] = watch
        log.info("watching network namespace %s", ns.label)

    def _release(self, inode: int) -> None:
        watch = self.watches.pop(inode)
        try:
            watch.release()
        except OSError as err:
            log.warning("releasing namespace %s: %s", watch.ns.label, err)
        self._released.append(watch)  # its last interval still counts
        log.info("released network namespace %s", watch.ns.label)

    def cycle(self) -> CycleResult:
        """Poll every namespace and return the interval since the previous cycle."""
        if not self._started:
            self.start()
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        self._refresh(baseline=False)
        errors: list[str] = []
        for inode, watch in list(self.watches.items()):
            try:
                watch.poll()
            except (OSError, FlowlensError) as err:
                errors.append(f"{watch.ns.label}: {err}")
                log.warning("polling namespace %s failed: %s", watch.ns.label, err)
                if not os.path.exists(watch.ns.path):
                    self._release(inode)
        return self._collect(start_wall, start_cpu, errors)

    def _merge(self, watch: NamespaceWatch) -> None:
        self.lost_events += watch.accountant.lost_events
        watch.accountant.lost_events = 0
        self.overflows += watch.overflows
        watch.events.overflows = 0

    def _collect(self, start_wall: float, start_cpu: float, errors: list[str]) -> CycleResult:
        flows: dict[FlowKey, FlowCounters] = {}
        samples: dict[FlowKey, list[int]] = {}
        service_ips: dict[FlowKey, str] = {}
        active: dict[FlowKey, int] = {}
        sockets = 0
        for watch in [*self.watches.values(), *self._released]:
            interval, rtts = watch.accountant.take_interval()
            flows.update(interval)  # keys carry the namespace label, so they never collide
            samples.update(rtts)
            known = watch.accountant.service_ips
            service_ips.update({key: known[key] for key in interval if key in known})
            self._merge(watch)
        self._released.clear()
        node = []
        for watch in self.watches.values():
            active.update(watch.accountant.active)
            sockets += watch.sockets
            if self.node_counters and (reading := watch.counters()) is not None:
                node.append(reading)
        now = self.clock()
        result = CycleResult(
            start=self._last_end, end=now, flows=flows, rtt_samples=samples, active_sockets=active, node=node,
            service_ips=service_ips,
            sockets=sockets, namespaces=len(self.watches), errors=errors,
            collect_seconds=time.perf_counter() - start_wall, cpu_seconds=time.process_time() - start_cpu,
        )
        self._last_end = now
        return result

    def close(self) -> None:
        for watch in self.watches.values():
            watch.close()
        self.watches.clear()
        if self.services is not None:
            self.services.close()
