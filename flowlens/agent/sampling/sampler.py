"""One sampling cycle over every network namespace of the machine, and the events between.

Each namespace gets a :class:`NamespaceWatch`: netlink sockets opened inside it once, and an
accountant. Socket-destroy events are read as they come (:meth:`Sampler.pump`, between
cycles, from one selector over every namespace), so a burst of short connections never waits
in the kernel's buffer long enough to overflow it; each buffer is also grown from the rate
it has seen. A cycle reads the namespace's TCP counters, drains events, dumps live sockets,
then drains the events that arrived during the dump, in that order, so that a socket seen in a
dump and destroyed right after is counted from the dump's values; the TCP counters then tell
how many connections the namespace opened that never reached the agent (reconciliation).

Nothing can hold a cycle forever: every netlink read has a timeout and every dump a
deadline; a namespace that misses it is abandoned for that cycle, counted, and its dump
socket reopened. Namespaces that appear are attached; namespaces that vanish have their last
events drained and their sockets closed, which releases them. A namespace that cannot be read
is reported once and skipped; the others carry on.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import selectors
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from flowlens.agent.sampling.accounting import NamespaceAccountant
from flowlens.agent.sampling.node import NamespaceCounters, NodeReaders, safe_read
from flowlens.agent.sampling.services import ServiceResolver
from flowlens.kernel.netlink import REPLY_TIMEOUT, Opener, open_netlink
from flowlens.kernel.netns import HOST_LABEL, Netns, discover, entered
from flowlens.kernel.sock_diag import DestroyEvents, SockDiag
from flowlens.model.errors import FlowlensError, NetlinkTimeout, PrivilegeError
from flowlens.model.flows import FlowCounters, FlowKey

log = logging.getLogger(__name__)

# Receive buffer for destroy events to start with (the kernel doubles it for its overhead;
# a notification takes about 1.3 KiB of that): ~13,000 notifications between two reads.
EVENT_BUFFER = 8 << 20
# Grown, never shrunk, to hold this many seconds of the highest rate seen, up to the cap.
EVENT_BUFFER_SECONDS = 4.0
EVENT_BUFFER_MAX = 256 << 20
EVENT_BYTES = 700  # buffer bytes asked for per notification held
# How long one namespace's poll may take before it is abandoned for the cycle.
NAMESPACE_DEADLINE = 10.0
# Events are read at most this often: waking per notification would cost more than reading
# them, and a few hundred waiting notifications are far from filling a buffer.
EVENT_BATCH_SECONDS = 0.05


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
                 resolve_service: ServiceResolver | None = None, timeout: float = REPLY_TIMEOUT,
                 dump_opener: Opener = open_netlink) -> None:
        self.ns = ns
        self.is_host = is_host
        self.event_buffer = event_buffer
        self.timeout = timeout
        self.dump_opener = dump_opener
        self.accountant = NamespaceAccountant(ns.label, resolve_service=resolve_service)
        self.sockets = 0
        self.event_buffer_max = EVENT_BUFFER_MAX
        self.opens_base: int | None = None  # TcpActiveOpens + TcpPassiveOpens at the baseline
        self._opens_before = 0  # the same, read before the previous cycle's dump
        self.unattributed = 0  # connections opened that never reached the agent, since start
        self.unattributed_bytes = 0.0  # estimate: their number times the namespace's bytes per connection
        self.bytes_total = 0  # payload bytes counted since start, for that estimate
        self.peak_rate = 0.0  # the most destroy events per second seen over a cycle
        self._events_at_cycle = (0, time.monotonic())
        self._enter(self._open)

    def _enter(self, action: Callable[[], None]) -> None:
        if self.is_host:
            action()
        else:
            with entered(self.ns.path):
                action()

    def _open(self) -> None:
        # Subscribe before the first dump so no socket can die unseen in between.
        self.events = DestroyEvents(self.event_buffer)
        try:
            self.diag = SockDiag(self.timeout, self.dump_opener)
            self.node = NodeReaders(self.is_host)
        except BaseException:
            self.events.close()
            if hasattr(self, "diag"):
                self.diag.close()
            raise

    def reopen_diag(self) -> None:
        """A dump that timed out may leave answers in flight: start again on a fresh socket."""
        self.diag.close()
        self._enter(lambda: setattr(self, "diag", SockDiag(self.timeout, self.dump_opener)))

    def prime(self, baseline: bool) -> None:
        """First look: with ``baseline`` the namespace's existing sockets are not counted."""
        self.sockets = self.accountant.observe_scan(self.diag.scan(), self.diag.parse, baseline=baseline)
        self.accountant.observe_destroyed(self.events.drain(), baseline=baseline)
        # Read after the baseline: a connection opened in between is counted here and not in
        # the kernel's delta, which can hide a loss, never invent one.
        self.opens_base = self._opens_before = self._kernel_opens()

    def apply_events(self) -> int:
        """Count the destroy events waiting on the socket; returns how many there were."""
        destroyed = self.events.drain()
        if destroyed:
            self.accountant.observe_destroyed(destroyed)
        return len(destroyed)

    def poll(self, deadline: float = 0.0) -> None:
        acc = self.accountant
        opens = self._kernel_opens()
        # Events read before the dump concern sockets already gone from it, so they may be
        # applied before it; a destroyed socket whose listener is not known yet waits for it.
        self.apply_events()
        self.sockets = acc.observe_scan(self.diag.scan(deadline=deadline), self.diag.parse)
        self.apply_events()
        self._reconcile(opens)
        self._size_buffer()

    def _kernel_opens(self) -> int:
        mib = self.node.mib.read()
        return mib.active_opens + mib.passive_opens

    def _reconcile(self, opens_now: int) -> None:
        """Connections the kernel opened before the previous cycle that never turned up here
        (in a dump or a destroy event) were lost; a whole interval is left for each to show."""
        if self.opens_base is None:
            return
        seen = self.accountant.opens + len(self.accountant.parked)
        missing = self._opens_before - self.opens_base - seen
        self._opens_before = opens_now
        if missing > self.unattributed:
            new = missing - self.unattributed
            self.unattributed = missing
            self.unattributed_bytes += new * self.bytes_total / max(self.accountant.opens, 1)
            log.warning("namespace %s: %d connections opened without reaching the agent (destroy events lost)",
                        self.ns.label, new)

    def _size_buffer(self) -> None:
        received, now = self.events.received, time.monotonic()
        before, then = self._events_at_cycle
        self._events_at_cycle = (received, now)
        if now > then:
            self.peak_rate = max(self.peak_rate, (received - before) / (now - then))
        wanted = min(self.event_buffer_max, int(self.peak_rate * EVENT_BUFFER_SECONDS * EVENT_BYTES))
        if wanted > self.events.rcvbuf * 1.5:
            try:
                self.events.resize(wanted)
                log.info("namespace %s: destroy-event buffer grown to %d MiB for %.0f events/s",
                         self.ns.label, wanted >> 20, self.peak_rate)
            except OSError as err:
                log.warning("namespace %s: cannot grow the destroy-event buffer: %s", self.ns.label, err)

    def release(self) -> None:
        """Count the last destroy events, then close the sockets that pin the namespace."""
        try:
            self.apply_events()
            self.accountant.flush_parked()
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
    """Discovers namespaces, runs accounting cycles over all of them, and counts the destroy
    events that arrive between cycles (:meth:`pump`)."""

    def __init__(self, proc: str = "/proc", run_netns: str = "/run/netns",
                 clock: Callable[[], float] = time.time, namespaces: bool = True,
                 node_counters: bool = True, event_buffer: int = EVENT_BUFFER,
                 only: tuple[str, ...] = (), service_cidrs: str = "", event_buffer_max: int = EVENT_BUFFER_MAX,
                 timeout: float = REPLY_TIMEOUT, namespace_deadline: float = NAMESPACE_DEADLINE,
                 dump_opener: Opener = open_netlink) -> None:
        self.proc, self.run_netns, self.clock = proc, run_netns, clock
        self.dump_opener = dump_opener  # how sock_diag dump sockets are opened (tests wrap it)
        self.node_counters = node_counters
        self.event_buffer = event_buffer
        self.event_buffer_max = event_buffer_max
        self.timeout = timeout
        self.namespace_deadline = namespace_deadline
        self.only = only  # glob patterns of namespace labels to watch besides the agent's own
        # Opened in the agent's own namespace, where kube-proxy's DNAT and its conntrack live.
        self.services = ServiceResolver(service_cidrs) if service_cidrs else None
        self.all_namespaces = namespaces
        self.watches: dict[int, NamespaceWatch] = {}
        self._released: list[NamespaceWatch] = []
        self.failed: dict[int, str] = {}
        self.lost_events = 0
        self.overflows = 0
        self.timeouts = 0  # namespace polls abandoned because the kernel did not answer in time
        self.events_read = 0  # destroy events read between cycles
        self.busy = ""  # what the cycle is doing now, for the watchdog; empty between cycles
        self._selector = selectors.DefaultSelector()
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
        self.busy = "discovering network namespaces"
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
        self.busy = f"attaching network namespace {ns.label}"
        try:
            watch = NamespaceWatch(ns, is_host, self.event_buffer, self.services, self.timeout, self.dump_opener)
            watch.event_buffer_max = self.event_buffer_max
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
        self._selector.register(watch.events, selectors.EVENT_READ, watch)
        log.info("watching network namespace %s", ns.label)

    def _release(self, inode: int) -> None:
        watch = self.watches.pop(inode)
        self._selector.unregister(watch.events)
        try:
            watch.release()
        except OSError as err:
            log.warning("releasing namespace %s: %s", watch.ns.label, err)
        self._released.append(watch)  # its last interval still counts
        log.info("released network namespace %s", watch.ns.label)

    def pump(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for destroy events and count those that came."""
        if not self.watches:
            time.sleep(max(timeout, 0.0))
            return 0
        count = 0
        ready = self._selector.select(max(timeout, 0.0))
        if ready and timeout > EVENT_BATCH_SECONDS:
            time.sleep(EVENT_BATCH_SECONDS)  # let a burst gather; the sockets stay ready
        for key, _mask in ready:
            watch: NamespaceWatch = key.data
            try:
                count += watch.apply_events()
            except (OSError, FlowlensError) as err:
                log.warning("reading destroy events of %s failed: %s", watch.ns.label, err)
        self.events_read += count
        return count

    def cycle(self) -> CycleResult:
        """Poll every namespace and return the interval since the previous cycle."""
        if not self._started:
            self.start()
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        try:
            self._refresh(baseline=False)
            errors: list[str] = []
            for inode, watch in list(self.watches.items()):
                self._poll(inode, watch, errors)
            return self._collect(start_wall, start_cpu, errors)
        finally:
            self.busy = ""

    def _poll(self, inode: int, watch: NamespaceWatch, errors: list[str]) -> None:
        self.busy = f"polling network namespace {watch.ns.label}"
        try:
            watch.poll(time.monotonic() + self.namespace_deadline)
        except NetlinkTimeout as err:
            self.timeouts += 1
            errors.append(f"{watch.ns.label}: {err}")
            log.warning("namespace %s abandoned for this cycle: %s", watch.ns.label, err)
            try:
                watch.reopen_diag()
            except (OSError, FlowlensError) as reopen:
                log.warning("reopening the dump socket of %s failed: %s", watch.ns.label, reopen)
        except (OSError, FlowlensError) as err:
            errors.append(f"{watch.ns.label}: {err}")
            log.warning("polling namespace %s failed: %s", watch.ns.label, err)
            if not os.path.exists(watch.ns.path):
                self._release(inode)

    def _merge(self, watch: NamespaceWatch) -> None:
        self.lost_events += watch.accountant.lost_events
        watch.accountant.lost_events = 0
        self.overflows += watch.overflows
        watch.events.overflows = 0

    def _collect(self, start_wall: float, start_cpu: float, errors: list[str]) -> CycleResult:
        self.busy = "collecting the interval"
        flows: dict[FlowKey, FlowCounters] = {}
        samples: dict[FlowKey, list[int]] = {}
        service_ips: dict[FlowKey, str] = {}
        active: dict[FlowKey, int] = {}
        sockets = 0
        for watch in [*self.watches.values(), *self._released]:
            interval, rtts = watch.accountant.take_interval()
            watch.bytes_total += sum(c.sent_bytes + c.received_bytes for c in interval.values())
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

    def labels(self) -> list[str]:
        return [watch.ns.label for watch in self.watches.values()]

    def unattributed(self) -> dict[str, tuple[int, float]]:
        """Per namespace: connections lost before the agent saw them, and their estimated bytes."""
        return {w.ns.label: (w.unattributed, w.unattributed_bytes) for w in self.watches.values()}

    def close(self) -> None:
        for watch in self.watches.values():
            watch.close()
        self.watches.clear()
        self._selector.close()
        if self.services is not None:
            self.services.close()
