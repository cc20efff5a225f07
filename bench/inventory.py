"""Benchmark: the collector's Kubernetes inventory under watch events, before and after it became
incremental.

A synthetic cluster in the API's shape, slimmed as the Kubernetes source slims it: --nodes nodes
in 3 zones, each running one host-network agent pod (a DaemonSet); --services Services, each with
its Deployment's ReplicaSet, its pods (--pods in all, agents included) and one EndpointSlice of
them. Two inventories are fed the same events:

  - before: the old code (``tests/enrich/legacy_inventory.py``, a verbatim copy): each event
    updates the source's cache of objects and rebuilds every table from all of them, under the
    lock that ingest takes (what ``KubernetesSource`` did);
  - after: ``Inventory.apply`` (lists: ``Inventory.replace_kind``).

Prints, per kind of event: its cost (median over --events events, --events-before for the
rebuild) and how long it held the lock ingest waits for. Then the enrichment rate: reports of
--flows flows from --reports nodes through one ``Enricher`` (rows per second, and each report's
latency) for --seconds, without events and with --rate events a second from another thread (a
mix: a pod replaced by one that reuses its address, pod status updates, EndpointSlice changes,
node heartbeats). Asserts nothing.

    .venv/bin/python bench/inventory.py [--pods 10000] [--services 2000] [--nodes 500] [--rate 20]
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import os
import random
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import msgspec

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from flowlens.collector.enrich.enricher import Enricher
from flowlens.collector.enrich.inventory import Inventory
from flowlens.collector.inventory_sources import _slim
from flowlens.model.report import Interval, Report, decode_report
from tests.enrich.legacy_inventory import LegacyInventory

SOURCE_KINDS = ("Pod", "Service", "EndpointSlice", "Node", "ReplicaSet", "Job")  # KubernetesSource's order
ZONES = ("us-east-1a", "us-east-1b", "us-east-1c")
NAMESPACES = 40
Event = tuple[str, str, dict[str, Any]]  # (kind, ADDED | MODIFIED | DELETED, slimmed object)


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class TimedLock:
    """The inventory's lock, timing how long each outermost hold lasts."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._depth = 0
        self._since = 0.0
        self.held: list[float] = []

    def __enter__(self) -> TimedLock:
        self._lock.acquire()
        self._depth += 1
        if self._depth == 1:
            self._since = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth == 0:
            self.held.append(time.perf_counter() - self._since)
        self._lock.release()


# -- the cluster ------------------------------------------------------------------------------------


class Cluster:
    """The objects as the Kubernetes source caches them, and the events that change them."""

    def __init__(self, nodes: int, services: int, pods: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.start = time.time() - 3600
        self.objects: dict[str, dict[str, dict[str, Any]]] = {kind: {} for kind in SOURCE_KINDS}
        self.serial = itertools.count()
        self.nodes = [f"node-{n:03d}" for n in range(nodes)]
        self.workload_pods: dict[str, list[str]] = {}  # service → uids of its pods
        self.pending: list[str] = []
        for n, name in enumerate(self.nodes):
            self._put("Node", {"kind": "Node", "metadata": {"name": name, "uid": f"node-{n}", "labels": {
                "topology.kubernetes.io/zone": ZONES[n % 3], "node.kubernetes.io/instance-type": "g5.2xlarge"}},
                "status": {"addresses": [{"type": "InternalIP", "address": self.node_ip(n)},
                                         {"type": "Hostname", "address": name}],
                           "conditions": [{"type": "Ready", "status": "True"}]}})
            self._put("Pod", self._pod(f"agent-{n:03d}", "kube-system", ("DaemonSet", "agent"), name,
                                       self.node_ip(n), host=True))
        self.services = [f"svc-{s:04d}" for s in range(services)]
        for s, svc in enumerate(self.services):
            ns = f"ns-{s % NAMESPACES:02d}"
            rs = f"{svc}-{s:07d}a"
            self._put("ReplicaSet", {"kind": "ReplicaSet", "metadata": {
                "name": rs, "namespace": ns, "uid": f"rs-{s}", "ownerReferences": [
                    {"apiVersion": "apps/v1", "kind": "Deployment", "name": svc, "uid": f"deploy-{s}",
                     "controller": True}]}, "spec": {"replicas": 5}})
            self._put("Service", {"kind": "Service", "metadata": {"name": svc, "namespace": ns, "uid": f"svc-{s}"},
                                  "spec": {"clusterIP": self.service_ip(s), "clusterIPs": [self.service_ip(s)],
                                           "selector": {"app": svc}, "ports": [{"port": 80}]}})
            self.workload_pods[svc] = []
        for p in range(pods - nodes):
            s = p % services
            uid = self._new_pod(s, f"10.{1 + p // 65536}.{(p // 256) % 256}.{p % 256}")
            self.workload_pods[self.services[s]].append(uid)
        for s in range(services):
            self._put("EndpointSlice", self._slice(s))
        spare = range(pods, pods + 50_000)  # addresses no pod has yet
        self.free_ips = [f"10.{1 + p // 65536}.{(p // 256) % 256}.{p % 256}" for p in reversed(spare)]

    @staticmethod
    def node_ip(n: int) -> str:
        return f"192.168.{n // 256}.{n % 256}"

    @staticmethod
    def service_ip(s: int) -> str:
        return f"10.96.{s // 256}.{s % 256}"

    def items(self) -> list[dict[str, Any]]:
        return [o for objs in self.objects.values() for o in objs.values()]

    def _put(self, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        slim = _slim(kind, obj)
        self.objects[kind][obj["metadata"]["uid"]] = slim
        return slim

    def _pod(self, name: str, ns: str, owner: tuple[str, str], node: str, ip: str | None, host: bool = False,
             created: float | None = None) -> dict[str, Any]:
        created = self.start if created is None else created
        return {"kind": "Pod", "metadata": {
            "name": name, "namespace": ns, "uid": f"pod-{next(self.serial)}", "creationTimestamp": iso(created),
            "labels": {"app": name.rsplit("-", 2)[0]},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": owner[0], "name": owner[1], "uid": "x",
                                 "controller": True}]},
            "spec": {"nodeName": node, "hostNetwork": host,
                     "containers": [{"name": "c", "ports": [{"containerPort": 9100 if host else 8080}]}]},
            "status": {"podIP": ip, "phase": "Running" if ip else "Pending", "startTime": iso(created),
                       "conditions": [{"type": "Ready", "status": "True"}]}}

    def _new_pod(self, s: int, ip: str | None, created: float | None = None) -> str:
        svc = self.services[s]
        ns, rs = f"ns-{s % NAMESPACES:02d}", f"{svc}-{s:07d}a"
        pod = self._pod(f"{rs}-{next(self.serial) % 100000:05d}", ns, ("ReplicaSet", rs),
                        self.rng.choice(self.nodes), ip, created=created)
        self._put("Pod", pod)
        return pod["metadata"]["uid"]

    def _slice(self, s: int) -> dict[str, Any]:
        svc = self.services[s]
        pods = self.objects["Pod"]
        return {"kind": "EndpointSlice", "metadata": {"name": f"{svc}-abcde", "namespace": f"ns-{s % NAMESPACES:02d}",
                                                      "uid": f"eps-{s}", "labels": {"kubernetes.io/service-name": svc}},
                "endpoints": [{"addresses": [pods[uid]["status"]["podIP"]]} for uid in self.workload_pods[svc]
                              if pods[uid]["status"]["podIP"]]}

    # -- events: each updates the cache (as the source does) and says what to apply -------------------
    def _some_pods(self) -> list[str]:
        while True:
            uids = self.workload_pods[self.rng.choice(self.services)]
            if uids:
                return uids

    def pod_delete(self) -> Event:
        uids = self._some_pods()
        uid = uids.pop(self.rng.randrange(len(uids)))
        pod = self.objects["Pod"].pop(uid)
        if pod["status"]["podIP"]:
            self.free_ips.append(pod["status"]["podIP"])
        return "Pod", "DELETED", pod

    def pod_add(self) -> Event:
        """A new pod, running, on the address freed last (addresses are reused)."""
        s = self.rng.randrange(len(self.services))
        uid = self._new_pod(s, self.free_ips.pop() if self.free_ips else None, created=time.time())
        self.workload_pods[self.services[s]].append(uid)
        return "Pod", "ADDED", self.objects["Pod"][uid]

    def pod_pending(self) -> Event:
        s = self.rng.randrange(len(self.services))
        uid = self._new_pod(s, None, created=time.time())
        self.workload_pods[self.services[s]].append(uid)
        self.pending.append(uid)
        return "Pod", "ADDED", self.objects["Pod"][uid]

    def pod_gets_ip(self) -> Event:
        """A pending pod starts: its address and phase."""
        uid = self.pending.pop()
        pod = copy.deepcopy(self.objects["Pod"][uid])
        pod["status"].update(podIP=self.free_ips.pop(), phase="Running")
        self.objects["Pod"][uid] = pod
        return "Pod", "MODIFIED", pod

    def pod_status(self) -> Event:
        """A status update of what the source keeps none of (conditions, container states)."""
        uid = self.rng.choice(self._some_pods())
        pod = copy.deepcopy(self.objects["Pod"][uid])
        self.objects["Pod"][uid] = pod
        return "Pod", "MODIFIED", pod

    def service_change(self) -> Event:
        """A Service turns topology-aware routing on or off."""
        uid = f"svc-{self.rng.randrange(len(self.services))}"
        svc = copy.deepcopy(self.objects["Service"][uid])
        meta = svc["metadata"]
        meta["annotations"] = {} if meta.get("annotations") else {"service.kubernetes.io/topology-mode": "Auto"}
        self.objects["Service"][uid] = svc
        return "Service", "MODIFIED", svc

    def slice_change(self) -> Event:
        """An EndpointSlice follows its pods (one not ready, or back)."""
        s = self.rng.randrange(len(self.services))
        eps = self._slice(s)
        if self.rng.random() < 0.5 and eps["endpoints"]:
            eps["endpoints"].pop()
        slim = self._put("EndpointSlice", eps)
        return "EndpointSlice", "MODIFIED", slim

    def node_change(self) -> Event:
        """A node gets another zone (its pods' zone changes with it)."""
        n = self.rng.randrange(len(self.nodes))
        node = copy.deepcopy(self.objects["Node"][f"node-{n}"])
        labels = node["metadata"]["labels"]
        labels["topology.kubernetes.io/zone"] = ZONES[(ZONES.index(labels["topology.kubernetes.io/zone"]) + 1) % 3]
        self.objects["Node"][f"node-{n}"] = node
        return "Node", "MODIFIED", node

    def node_heartbeat(self) -> Event:
        """A node's status update (conditions, resources): nothing the source keeps."""
        uid = f"node-{self.rng.randrange(len(self.nodes))}"
        node = copy.deepcopy(self.objects["Node"][uid])
        self.objects["Node"][uid] = node
        return "Node", "MODIFIED", node

    def replicaset_change(self) -> Event:
        """A ReplicaSet is adopted by another Deployment: its pods' workload changes."""
        uid = f"rs-{self.rng.randrange(len(self.services))}"
        rs = copy.deepcopy(self.objects["ReplicaSet"][uid])
        owner = rs["metadata"]["ownerReferences"][0]
        owner["name"] = owner["name"] + "-v2" if not owner["name"].endswith("-v2") else owner["name"][:-3]
        self.objects["ReplicaSet"][uid] = rs
        return "ReplicaSet", "MODIFIED", rs

    def pods_again(self) -> None:
        """Not an event: the watch of pods ended (every 5 minutes), the source lists them again."""
        return None

    def mix(self) -> Iterator[Event]:
        """What a busy cluster sends: pods replaced, status updates, slices following them, heartbeats."""
        while True:
            yield self.pod_delete()
            yield self.pod_add()
            yield self.slice_change()
            yield self.pod_status()
            yield self.pod_status()
            yield self.pod_status()
            yield self.slice_change()
            yield self.node_heartbeat()


# -- the two inventories ----------------------------------------------------------------------------


class Mode:
    """An inventory fed from a cluster, before or after."""

    def __init__(self, name: str, args: argparse.Namespace) -> None:
        self.name = name
        self.cluster = Cluster(args.nodes, args.services, args.pods, args.seed)
        self.inventory: Inventory | LegacyInventory = Inventory() if name == "after" else LegacyInventory()
        self.inventory.lock = TimedLock()
        self.listed: dict[str, bool] = {}
        started = time.perf_counter()
        for kind in SOURCE_KINDS:  # the source's first lists, one kind after the other
            self.relist(kind)
        self.load_s = time.perf_counter() - started

    def relist(self, kind: str) -> None:
        """A list of all objects of ``kind`` (the source lists again each time a watch ends)."""
        if isinstance(self.inventory, Inventory):
            self.inventory.replace_kind(kind, list(self.cluster.objects[kind].values()), time.time())
        else:
            self.inventory.replace_all([o for k in SOURCE_KINDS if k == kind or self.listed.get(k)
                                        for o in self.cluster.objects[k].values()], time.time())
            self.listed[kind] = True

    def apply(self, event: Event) -> None:
        kind, kind_of_event, obj = event
        if isinstance(self.inventory, Inventory):
            self.inventory.apply(kind, kind_of_event, obj, time.time())
        else:  # what KubernetesSource._rebuild did
            self.inventory.replace_all(self.cluster.items(), time.time())


def event_costs(mode: Mode, make: Callable[[], Event | None], count: int,
                setup: Callable[[], Event] | None = None) -> tuple[float, float, float]:
    """(median cost, median and longest lock hold) of ``count`` events made by ``make`` (None: a list
    of all pods again)."""
    costs, holds = [], []
    lock = mode.inventory.lock
    assert isinstance(lock, TimedLock)
    for _ in range(count):
        if setup is not None:
            mode.apply(setup())
        event = make()
        lock.held.clear()
        started = time.perf_counter()
        if event is None:
            mode.relist("Pod")
        else:
            mode.apply(event)
        costs.append(time.perf_counter() - started)
        holds.append(sum(lock.held))
    return statistics.median(costs), statistics.median(holds), max(holds)


# -- enrichment while events arrive -------------------------------------------------------------------


def reports(cluster: Cluster, count: int, flows: int, seed: int) -> list[Report]:
    """One report per node (of the first ``count``): its pods' flows to other services' pods
    (through the cluster IP), from clients, and a few to the internet."""
    rng = random.Random(seed)
    pods = cluster.objects["Pod"]
    by_node: dict[str, list[dict]] = {}
    for pod in pods.values():
        if not pod["spec"]["hostNetwork"]:
            by_node.setdefault(pod["spec"]["nodeName"], []).append(pod)
    backends = {s: [pods[uid]["status"]["podIP"] for uid in cluster.workload_pods[svc]]
                for s, svc in enumerate(cluster.services)}
    everyone = [p["status"]["podIP"] for p in pods.values() if not p["spec"]["hostNetwork"]]
    out = []
    for node in cluster.nodes[:count]:
        local = by_node.get(node) or [next(iter(pods.values()))]
        rows = []
        for i in range(flows):
            ip = local[i % len(local)]["status"]["podIP"]
            kind = rng.random()
            if kind < 0.75:
                s = rng.randrange(len(cluster.services))
                rows.append({"netns": f"cni-{ip}", "role": "client", "local_ip": ip,
                             "remote_ip": rng.choice(backends[s]), "server_port": 8080,
                             "service_ip": cluster.service_ip(s), "sent_bytes": 1000})
            elif kind < 0.97:
                rows.append({"netns": f"cni-{ip}", "role": "server", "local_ip": ip,
                             "remote_ip": rng.choice(everyone), "server_port": 8080, "received_bytes": 1000})
            else:
                rows.append({"netns": f"cni-{ip}", "role": "client", "local_ip": ip,
                             "remote_ip": f"52.216.{rng.randrange(256)}.{rng.randrange(256)}", "server_port": 443})
        now = time.time()
        out.append(decode_report(json.dumps({"schema_version": 1, "report_id": f"bench-{node}", "agent": {"node": node},
                                             "interval": {"start": now - 5, "end": now}, "flows": rows}).encode()))
    return out


def enrichment(mode: Mode, batch: list[Report], seconds: float, rate: float) -> dict[str, float]:
    """Rows per second through one enricher (and report latencies) while events arrive at ``rate``."""
    enricher = Enricher(mode.inventory)  # type: ignore[arg-type]

    def fresh(report: Report) -> Report:
        now = time.time()
        return msgspec.structs.replace(report, interval=Interval(start=now - 5, end=now))

    for report in batch:  # a first pass: every flow key seen once, as after an interval of reports
        enricher.flows(fresh(report))
    stop, applied = threading.Event(), [0]
    mix = mode.cluster.mix()

    def events() -> None:
        due = time.perf_counter()
        while not stop.is_set():
            mode.apply(next(mix))
            applied[0] += 1
            due += 1 / rate
            stop.wait(max(0.0, due - time.perf_counter()))

    thread = threading.Thread(target=events, daemon=True) if rate > 0 else None
    rows, latencies = 0, []
    started = time.perf_counter()
    if thread is not None:
        thread.start()
    end = started + seconds
    for report in itertools.cycle(batch):
        if time.perf_counter() >= end:
            break
        report = fresh(report)
        t0 = time.perf_counter()
        rows += enricher.flows(report).num_rows
        latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - started
    stop.set()
    if thread is not None:
        thread.join()
    latencies.sort()
    return {"rows/s": rows / elapsed, "p50": latencies[len(latencies) // 2],
            "p99": latencies[int(len(latencies) * 0.99)], "max": latencies[-1], "events/s": applied[0] / elapsed}


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f} ms" if seconds >= 1e-3 else f"{seconds * 1e6:,.0f} µs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, default=10_000, help="pods, agents included")
    parser.add_argument("--services", type=int, default=2_000)
    parser.add_argument("--nodes", type=int, default=500)
    parser.add_argument("--events", type=int, default=300, help="events of each kind measured, after")
    parser.add_argument("--events-before", type=int, default=7, help="events of each kind measured, before")
    parser.add_argument("--reports", type=int, default=100, help="nodes reporting (one report each, repeated)")
    parser.add_argument("--flows", type=int, default=1000, help="flows per report")
    parser.add_argument("--seconds", type=float, default=10.0, help="per enrichment measurement")
    parser.add_argument("--rate", type=float, default=20.0, help="events a second during enrichment")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    modes = {name: Mode(name, args) for name in ("before", "after")}
    print(f"inventory: {args.nodes:,} nodes, {args.services:,} Services (and ReplicaSets, EndpointSlices), "
          f"{args.pods:,} pods ({args.nodes:,} on the host network)")
    print(f"initial load (the source's lists, kind after kind): before {ms(modes['before'].load_s)}, "
          f"after {ms(modes['after'].load_s)}\n")

    kinds: list[tuple[str, str, str | None]] = [
        ("pod add (running, reuses an address)", "pod_add", None),
        ("pod modify (gets its address)", "pod_gets_ip", "pod_pending"),
        ("pod modify (status, nothing kept)", "pod_status", None),
        ("pod delete", "pod_delete", None),
        ("Service change (topology mode)", "service_change", None),
        ("EndpointSlice change (a backend)", "slice_change", None),
        ("node change (zone)", "node_change", None),
        ("node heartbeat (nothing kept)", "node_heartbeat", None),
        ("ReplicaSet change (its Deployment)", "replicaset_change", None),
        ("all pods listed again, unchanged", "pods_again", None),
    ]
    print(f"{'cost per watch event':<38} {'before (rebuild)':>17} {'lock held':>10} {'after':>10} {'lock held':>10} "
          f"{'max held':>10} {'speed-up':>9}")
    for label, make, setup in kinds:
        results = {}
        for name, mode in modes.items():
            count = args.events_before if name == "before" or make == "pods_again" else args.events
            results[name] = event_costs(mode, getattr(mode.cluster, make),
                                        count, getattr(mode.cluster, setup) if setup else None)
        (before, before_held, _), (after, after_held, after_max) = results["before"], results["after"]
        print(f"{label:<38} {ms(before):>17} {ms(before_held):>10} {ms(after):>10} {ms(after_held):>10} "
              f"{ms(after_max):>10} {before / after:>8,.0f}x")

    print(f"\nenrichment: {args.reports} nodes' reports of {args.flows:,} flows, one enricher, {args.seconds:g} s "
          "each; events: a mix (pods replaced, status updates, EndpointSlices, heartbeats)")
    print(f"{'':<26} {'rows/s':>12} {'report p50':>11} {'p99':>10} {'max':>10} {'events/s':>9}")
    for name, mode in modes.items():
        batch = reports(mode.cluster, args.reports, args.flows, args.seed)
        for rate in (0.0, args.rate):
            r = enrichment(mode, batch, args.seconds, rate)
            label = f"{name}, {'no events' if not rate else f'{rate:g} events/s'}"
            print(f"{label:<26} {r['rows/s']:>12,.0f} {ms(r['p50']):>11} {ms(r['p99']):>10} {ms(r['max']):>10} "
                  f"{r['events/s']:>9.1f}")


if __name__ == "__main__":
    main()
