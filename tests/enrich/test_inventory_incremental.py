"""The incremental inventory answers exactly like rebuilding everything after each change.

Random sequences of watch events of every kind (added, modified, modified to the same, deleted,
and lists that replace a kind, in any order) go to three inventories: the incremental one
(``apply``/``replace_kind``, what the Kubernetes source does), the new full rebuild
(``replace_all`` of every object after each event) and the old code (``LegacyInventory``, a
verbatim copy of the rebuild the collector did before). All their tables, and their address
histories, must be equal after every event; at the end every lookup (each address, port and
moment) must answer the same. Addresses are few so that they are reused (a new pod gets a
deleted pod's address, two pods claim one at once), pods are deleted before or after their
ReplicaSets, host-network pods share their node's address, Services may have no selector, no
cluster IP or two (dual stack).

Also: what :meth:`Inventory.changes_since` reports covers every address whose answer changed,
and an enricher that keeps its cache across changes enriches like a fresh one.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowlens.collector.enrich.enricher import Enricher
from flowlens.collector.enrich.inventory import Inventory
from flowlens.model.report import Report, decode_report
from tests.enrich.legacy_inventory import LegacyInventory

T0 = 1_700_000_000.0
SOURCE_KINDS = ("Pod", "Service", "EndpointSlice", "Node", "ReplicaSet", "Job")  # KubernetesSource's order
NODES = ("n0", "n1", "n2")
NODE_IPS = ("10.0.0.1", "10.0.0.2", "fd00::a")
POD_IPS = ("10.1.0.1", "10.1.0.2", "10.1.0.3", "fd00:1::1", "fd00:1::2")
SERVICE_IPS = ("10.96.0.1", "10.96.0.2", "fd00:96::1", "10.1.0.3")  # the last one a pod's too
OTHER_IPS = ("52.216.1.1", "8.8.8.8")
ALL_IPS = NODE_IPS + POD_IPS + SERVICE_IPS[:3] + OTHER_IPS
PORTS = (None, 80, 9100, 9101)
SERVICES = ("web", "api", "db")
OWNED = ("web-7d9f8c6b5", "api-5c4d3b2a1", "backup-28000000", "batch")
KEYS = 4  # objects of each kind: uids kind-0 .. kind-3


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- objects --------------------------------------------------------------------------------------


def stamps(past_only: bool) -> st.SearchStrategy[str | None]:
    offsets = (-300, -100, -1, 0) if past_only else (-300, -100, 0, 45, 150, 400)
    return st.one_of(st.none(), st.sampled_from(offsets).map(lambda s: iso(T0 + s)))


@st.composite
def pod(draw: st.DrawFn, uid: str, past_only: bool) -> dict:
    host = draw(st.integers(0, 4)) == 0
    meta: dict[str, Any] = {"name": draw(st.sampled_from(("web-7d9f8c6b5-abcde", "web-7d9f8c6b5-xyzwv", "db-0",
                                                          "batch-q1w2e", "agent-x"))),
                            "namespace": draw(st.sampled_from(("a", "a", "a", "b"))), "uid": uid}
    created = draw(stamps(past_only))
    if created:
        meta["creationTimestamp"] = created
    owner = draw(st.sampled_from((None, ("ReplicaSet", OWNED[0]), ("ReplicaSet", OWNED[0]), ("ReplicaSet", OWNED[1]),
                                  ("Job", OWNED[2]), ("Job", OWNED[2]), ("Job", OWNED[3]), ("StatefulSet", "db"),
                                  ("DaemonSet", "agent"))))
    if owner:
        meta["ownerReferences"] = [{"kind": owner[0], "name": owner[1], "controller": draw(st.booleans())
                                    or draw(st.booleans())}]
    ports = draw(st.lists(st.sampled_from((80, 9100, 9101)), max_size=2))
    ip = draw(st.sampled_from((None, *(NODE_IPS if host else POD_IPS * 2))))
    status: dict[str, Any] = {"podIP": ip, "phase": draw(st.sampled_from(("Running",) * 5 + ("Pending", "Succeeded",
                                                                                          "Failed"))),
                              "startTime": draw(stamps(past_only))}
    container_ports = [{"containerPort": p} if p != 9101 else {"containerPort": 1, "hostPort": p} for p in ports]
    return {"kind": "Pod", "metadata": meta,
            "spec": {"nodeName": draw(st.sampled_from((*NODES, "gone", None))), "hostNetwork": host,
                     "containers": [{"ports": container_ports}]},
            "status": status}


@st.composite
def node(draw: st.DrawFn, uid: str) -> dict:
    addresses = draw(st.lists(st.sampled_from(NODE_IPS), max_size=2, unique=True))
    types = draw(st.lists(st.sampled_from(("InternalIP", "ExternalIP", "Hostname")), min_size=len(addresses),
                          max_size=len(addresses)))
    return {"kind": "Node", "metadata": {"name": draw(st.sampled_from(NODES)), "uid": uid,
                                         "labels": {"topology.kubernetes.io/zone": draw(st.sampled_from(("za", "zb"))),
                                                    "node.kubernetes.io/instance-type": draw(
                                                        st.sampled_from(("g5.2xlarge", "m5.xlarge")))}},
            "status": {"addresses": [{"type": t, "address": a} for t, a in zip(types, addresses, strict=True)]}}


@st.composite
def owned(draw: st.DrawFn, kind: str, uid: str) -> dict:
    name = draw(st.sampled_from(OWNED[:3] * 2 + OWNED[3:]))
    meta: dict[str, Any] = {"name": name, "namespace": draw(st.sampled_from(("a", "a", "a", "b"))), "uid": uid}
    if draw(st.integers(0, 3)):
        controller = "CronJob" if kind == "Job" else "Deployment"
        meta["ownerReferences"] = [{"kind": controller, "name": draw(st.sampled_from(("web", "api", "nightly"))),
                                    "controller": draw(st.sampled_from((True, True, False)))}]
    return {"kind": kind, "metadata": meta}


@st.composite
def service(draw: st.DrawFn, uid: str) -> dict:
    name = draw(st.sampled_from(SERVICES))
    annotations = draw(st.sampled_from(({}, {"service.kubernetes.io/topology-mode": "Auto"},
                                         {"service.kubernetes.io/topology-aware-hints": "auto"})))
    spec: dict[str, Any] = {}
    addressing = draw(st.integers(0, 4))
    if addressing == 1:
        spec["clusterIP"] = draw(st.sampled_from(SERVICE_IPS))
    elif addressing == 2:  # dual stack
        spec["clusterIPs"] = [draw(st.sampled_from(SERVICE_IPS[:2] + SERVICE_IPS[3:])), SERVICE_IPS[2]]
        spec["clusterIP"] = spec["clusterIPs"][0]
    elif addressing == 3:
        spec["clusterIP"] = "None"  # headless
    if draw(st.booleans()):
        spec["selector"] = {"app": name}  # or none: endpoints written by hand
    if draw(st.integers(0, 3)) == 0:
        spec["trafficDistribution"] = "PreferClose"
    return {"kind": "Service", "metadata": {"name": name, "namespace": draw(st.sampled_from(("a", "b"))), "uid": uid,
                                            "annotations": annotations}, "spec": spec}


@st.composite
def endpoint_slice(draw: st.DrawFn, uid: str) -> dict:
    endpoints = draw(st.lists(st.lists(st.sampled_from(POD_IPS + NODE_IPS[:1]), max_size=2), max_size=3))
    return {"kind": "EndpointSlice",
            "metadata": {"name": f"slice-{uid}", "namespace": "a", "uid": uid,
                         "labels": {"kubernetes.io/service-name": draw(st.sampled_from(SERVICES))}},
            "endpoints": [{"addresses": addresses} for addresses in endpoints]}


def an_object(kind: str, uid: str, past_only: bool) -> st.SearchStrategy[dict]:
    if kind == "Pod":
        return pod(uid, past_only)
    if kind == "Node":
        return node(uid)
    if kind in ("ReplicaSet", "Job"):
        return owned(kind, uid)
    if kind == "Service":
        return service(uid)
    return endpoint_slice(uid)


def events(past_only: bool = False) -> st.SearchStrategy[list[tuple]]:
    def one(kind: str) -> st.SearchStrategy[tuple]:
        uids = st.integers(0, KEYS - 1).map(lambda i: f"{kind.lower()}-{i}")
        put = uids.flatmap(lambda uid: an_object(kind, uid, past_only)).map(lambda obj: ("put", kind, obj))
        return st.one_of(put, put, put, uids.map(lambda uid: ("delete", kind, uid)),
                         uids.map(lambda uid: ("same", kind, uid)),
                         st.randoms(use_true_random=False).map(lambda rnd: ("list", kind, rnd)))

    weighted = ("Pod",) * 4 + ("Node", "ReplicaSet", "Job", "Service", "EndpointSlice", "EndpointSlice")
    return st.lists(st.sampled_from(weighted).flatmap(one), min_size=15, max_size=60)


# -- driving the inventories ----------------------------------------------------------------------


class World:
    """The objects as the Kubernetes source sees them, and inventories fed from them."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, dict]] = {kind: {} for kind in SOURCE_KINDS}
        self.incremental = Inventory()
        self.rebuilt = Inventory()
        self.legacy = LegacyInventory()
        self.now = T0

    def items(self) -> list[dict]:
        return [o for objs in self.objects.values() for o in objs.values()]

    def step(self, event: tuple) -> None:
        """One event to every inventory, at a later moment."""
        self.now += 10
        op, kind, arg = event
        objects = self.objects[kind]
        if op == "put":
            key = arg["metadata"]["uid"]
            kind_of_event = "MODIFIED" if key in objects else "ADDED"
            objects[key] = arg
            self.incremental.apply(kind, kind_of_event, arg, self.now)
        elif op == "delete":
            gone = objects.pop(arg, None) or {"kind": kind, "metadata": {"uid": arg}}
            self.incremental.apply(kind, "DELETED", gone, self.now)
        elif op == "same":
            if arg in objects:
                self.incremental.apply(kind, "MODIFIED", objects[arg], self.now)
            else:
                self.incremental.apply(kind, "DELETED", {"kind": kind, "metadata": {"uid": arg}}, self.now)
        else:  # a list: the same objects, in the list's order
            listed = list(objects.values())
            arg.shuffle(listed)
            self.objects[kind] = {o["metadata"]["uid"]: o for o in listed}
            self.incremental.replace_kind(kind, listed, self.now)
        self.rebuilt.replace_all(self.items(), self.now)
        self.legacy.replace_all(self.items(), self.now)


def tables(inv: Inventory | LegacyInventory) -> dict[str, Any]:
    return {"nodes": inv.nodes, "node_by_ip": inv.node_by_ip, "services": inv.services,
            "backend_services": inv.backend_services, "topology_aware": inv.topology_aware,
            "host_ports": inv.host_ports, "pods": inv._pods, "history": inv.addresses._by_ip}


def moments(world: World) -> list[float]:
    ts = {T0 + k for k in (-400, -301, -300, -150, -100, -99.5, 0, 44, 45, 46, 150, 400)}
    t = T0
    while t <= world.now + 20:
        ts.update((t - 4, t - 0.5, t, t + 0.5, t + 3))
        t += 10
    return sorted(ts)


def answers(inv: Inventory | LegacyInventory, ts: list[float]) -> list:
    return [(inv.endpoint(ip, port, t), inv.services.get(ip)) for ip in ALL_IPS for port in PORTS for t in ts]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events())
def test_incremental_inventory_is_a_rebuild_after_every_event(sequence: list[tuple]):
    world = World()
    for event in sequence:
        world.step(event)
        legacy = tables(world.legacy)
        assert tables(world.incremental) == legacy, event
        assert tables(world.rebuilt) == legacy, event
    ts = moments(world)
    expected = answers(world.legacy, ts)
    assert answers(world.incremental, ts) == expected
    assert answers(world.rebuilt, ts) == expected


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events())
def test_a_from_scratch_rebuild_has_the_same_tables_and_current_holders(sequence: list[tuple]):
    """Against one rebuild of the final objects into a new inventory: the same tables, and every
    address a pod claims now goes to the same pod (the history, and addresses that pods which
    finished keep until deleted, are what only the incremental one remembers)."""
    world = World()
    for event in sequence:
        world.step(event)
    fresh = Inventory()
    fresh.replace_all(world.items(), world.now)
    inc = world.incremental
    for name in ("nodes", "node_by_ip", "services", "backend_services", "topology_aware", "host_ports"):
        assert getattr(inc, name) == getattr(fresh, name), name
    for ip, pod in fresh.addresses.current().items():
        assert inc.addresses.current()[ip] == pod
        assert inc.endpoint(ip, None, world.now + 1000) == fresh.endpoint(ip, None, world.now + 1000)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events())
def test_changes_since_covers_every_address_that_answers_differently(sequence: list[tuple]):
    world = World()
    inv = world.incremental
    for event in sequence:
        t = world.now + 10 + 30  # after the event's moment and its grace
        before, version, nodes = _lookups(inv, t), inv.version, inv.nodes
        world.step(event)
        after = _lookups(inv, t)
        changed = inv.changes_since(version)
        if inv.version == version:
            assert after == before and changed == frozenset()
            continue
        if changed is None:
            continue
        assert inv.nodes == nodes  # a node change says "everything"
        assert {ip for ip in ALL_IPS if after[ip] != before[ip]} <= changed


def _lookups(inv: Inventory, t: float) -> dict[str, tuple]:
    return {ip: (tuple(inv.endpoint(ip, port, t) for port in PORTS), inv.services.get(ip)) for ip in ALL_IPS}


# -- the enricher's cache across changes -----------------------------------------------------------


def report(t: float) -> Report:
    flows = []
    for local in POD_IPS + NODE_IPS[:1]:
        for remote in ALL_IPS:
            flows.append({"netns": "x", "role": "client", "local_ip": local, "remote_ip": remote, "server_port": 80,
                          "sent_bytes": 1})
        for remote in NODE_IPS:  # host-network ports
            flows.append({"netns": "x", "role": "client", "local_ip": local, "remote_ip": remote, "server_port": 9101})
        flows.append({"netns": "x", "role": "server", "local_ip": local, "remote_ip": POD_IPS[1], "server_port": 9100})
        for service_ip in SERVICE_IPS[:3]:
            flows.append({"netns": "x", "role": "client", "local_ip": local, "remote_ip": POD_IPS[0],
                          "server_port": 80, "service_ip": service_ip})
    return decode_report(json.dumps({"schema_version": 1, "report_id": f"r-{int(t)}", "agent": {"node": "n0"},
                                     "interval": {"start": t, "end": t + 5}, "flows": flows}).encode())


def rows(enricher: Enricher, rep: Report) -> list[tuple]:
    table = enricher.flows(rep).to_pylist()
    return sorted(tuple(sorted((k, str(v)) for k, v in row.items())) for row in table)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events(past_only=True))
def test_an_enricher_keeping_its_cache_across_changes_enriches_like_a_fresh_one(sequence: list[tuple]):
    world = World()
    kept = Enricher(world.incremental)
    for event in sequence:
        world.step(event)
        rep = report(world.now + 10)  # pods start in the past, events are 10 s apart: no grace applies
        assert rows(kept, rep) == rows(Enricher(world.incremental), rep), event


# -- files: whole reloads ---------------------------------------------------------------------------


@st.composite
def files(draw: st.DrawFn) -> list[list[dict]]:
    """Successive contents of an inventory file: objects of every kind, with the same uids from one
    file to the next (so that reloads change, add and remove), objects other than pods possibly
    twice, and objects without uid (keyed by namespace and name)."""
    contents = []
    for _ in range(draw(st.integers(1, 6))):
        items = []
        for kind in draw(st.lists(st.sampled_from(SOURCE_KINDS), max_size=20)):
            obj = draw(an_object(kind, f"{kind.lower()}-{draw(st.integers(0, KEYS - 1))}", False))
            if kind != "Pod" and draw(st.integers(0, 5)) == 0:
                del obj["metadata"]["uid"]
            items.append(obj)
        seen, unique = set(), []
        for obj in items:  # a pod is in a file once
            uid = obj["metadata"].get("uid")
            if obj["kind"] != "Pod" or uid not in seen:
                seen.add(uid)
                unique.append(obj)
        contents.append(unique)
    return contents


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(files())
def test_reloading_a_file_is_the_old_rebuild(contents: list[list[dict]]):
    new, old = Inventory(), LegacyInventory()
    for i, items in enumerate(contents):
        now = T0 + 10 * (i + 1)
        new.replace_all(items, now)
        old.replace_all(items, now)
        assert tables(new) == tables(old)
    ts = [T0 + k for k in range(-400, 10 * len(contents) + 20, 7)]
    assert answers(new, ts) == answers(old, ts)


# -- a few cases by hand ----------------------------------------------------------------------------


def _pod(uid: str, ip: str, node_name: str = "n0", owner: tuple[str, str] | None = ("ReplicaSet", OWNED[0]),
         phase: str = "Running", start: float = T0 - 100, host: bool = False) -> dict:
    meta: dict[str, Any] = {"name": f"{uid}-pod", "namespace": "a", "uid": uid, "creationTimestamp": iso(start)}
    if owner:
        meta["ownerReferences"] = [{"kind": owner[0], "name": owner[1], "controller": True}]
    return {"kind": "Pod", "metadata": meta, "spec": {"nodeName": node_name, "hostNetwork": host,
                                                      "containers": [{"ports": [{"containerPort": 9100}]}]},
            "status": {"podIP": ip, "phase": phase, "startTime": iso(start)}}


def _node(name: str, zone: str, ip: str) -> dict:
    return {"kind": "Node", "metadata": {"name": name, "uid": f"node-{name}",
                                         "labels": {"topology.kubernetes.io/zone": zone}},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}]}}


def test_events_touch_only_their_objects_and_keep_history():
    inv = Inventory()
    inv.replace_kind("Node", [_node("n0", "za", "10.0.0.1"), _node("n1", "zb", "10.0.0.2")], T0)
    inv.replace_kind("Pod", [_pod("p1", "10.1.0.1"), _pod("p2", "10.1.0.2", "n1"),
                             _pod("agent", "10.0.0.1", owner=("DaemonSet", "agent"), host=True)], T0)
    assert inv.endpoint("10.1.0.1", None, T0 + 1).workload == "web"  # from the ReplicaSet's name
    assert inv.endpoint("10.0.0.1", 9100, T0 + 1).workload == "agent"
    assert inv.endpoint("10.0.0.1", 22, T0 + 1).name == "n0"
    version = inv.version
    # The ReplicaSet arrives: its pods' workload changes, and only their addresses.
    rs = {"kind": "ReplicaSet", "metadata": {"name": OWNED[0], "namespace": "a", "uid": "rs-1",
                                             "ownerReferences": [{"kind": "Deployment", "name": "shop"}]}}
    assert inv.apply("ReplicaSet", "ADDED", rs, T0 + 10)
    assert inv.endpoint("10.1.0.1", None, T0 + 11).workload == "shop"
    assert inv.changes_since(version) == {"10.1.0.1", "10.1.0.2"}
    # The same object again changes nothing, not even the version.
    version = inv.version
    assert not inv.apply("ReplicaSet", "MODIFIED", rs, T0 + 20)
    assert inv.version == version
    # The pod goes, then the ReplicaSet; a new pod gets the address.
    assert inv.apply("Pod", "DELETED", _pod("p1", "10.1.0.1"), T0 + 30)
    assert inv.changes_since(version) == {"10.1.0.1"}
    assert inv.apply("ReplicaSet", "DELETED", rs, T0 + 40)
    assert inv.endpoint("10.1.0.2", None, T0 + 41).workload == "web"
    assert inv.apply("Pod", "ADDED", _pod("p3", "10.1.0.1", "n1", ("Job", "batch"), start=T0 + 50), T0 + 50)
    assert inv.endpoint("10.1.0.1", None, T0 + 25).workload == "shop"  # history: who had it then
    assert inv.endpoint("10.1.0.1", None, T0 + 35) is None
    assert (inv.endpoint("10.1.0.1", None, T0 + 51).workload, inv.endpoint("10.1.0.1", None, T0 + 51).zone) == (
        "batch", "zb")
    # A node's zone changes: its pods follow; the enricher is told to forget everything.
    version = inv.version
    assert inv.apply("Node", "MODIFIED", _node("n1", "zc", "10.0.0.2"), T0 + 60)
    assert inv.endpoint("10.1.0.2", None, T0 + 61).zone == "zc"
    assert inv.changes_since(version) is None


def test_a_finished_pod_deleted_after_its_namesake_took_its_address():
    """A finished pod keeps its address until deleted; a new pod of the same name on the same node
    (the same identity) takes it over; deleting the old one then ends the tenure and the new one
    gets the address again, as a rebuild did."""
    world = World()
    old, new = _pod("p", "10.1.0.1", owner=None), _pod("q", "10.1.0.1", owner=None, start=T0 + 5)
    new["metadata"]["name"] = old["metadata"]["name"]
    finished = {**old, "status": {**old["status"], "phase": "Succeeded"}}
    for event in [("put", "Pod", old), ("put", "Pod", finished), ("put", "Pod", new), ("delete", "Pod", "p")]:
        world.step(event)
        assert tables(world.incremental) == tables(world.legacy)
    assert len(world.incremental.addresses._by_ip["10.1.0.1"].endpoints) == 2


def test_the_enricher_keeps_its_cache_through_a_pod_change_and_forgets_that_pod():
    inv = Inventory()
    inv.replace_all([_node("n0", "za", "10.0.0.1"), _pod("p1", "10.1.0.1"), _pod("p2", "10.1.0.2")], T0)
    enricher = Enricher(inv)
    rep = report(T0 + 10)
    first = rows(enricher, rep)
    cache = enricher._keys
    cached = cache.size  # flows to addresses nobody knows are looked up each time
    assert rows(enricher, rep) == first and cache.size == cached
    inv.apply("Pod", "DELETED", _pod("p1", "10.1.0.1"), T0 + 20)
    rep = report(T0 + 30)
    assert rows(enricher, rep) == rows(Enricher(inv), rep) != first
    assert enricher._keys is cache and cache.version == inv.version
    forgotten = sum(1 for f in rep.flows if "10.1.0.1" in (f.local_ip, f.remote_ip))
    assert 0 < cache.size - cached <= forgotten < len(rep.flows)  # only the deleted pod's flows again


def test_a_job_wins_over_a_replicaset_of_the_same_name_whatever_came_first():
    """The old rebuild read ReplicaSets, then Jobs: for one (namespace, name) the Job's owner counts."""
    world = World()
    job = {"kind": "Job", "metadata": {"name": "batch", "namespace": "a", "uid": "job-1",
                                       "ownerReferences": [{"kind": "CronJob", "name": "nightly"}]}}
    rs = {"kind": "ReplicaSet", "metadata": {"name": "batch", "namespace": "a", "uid": "rs-1",
                                             "ownerReferences": [{"kind": "Deployment", "name": "web"}]}}
    steps = [(("put", "Pod", _pod("p", "10.1.0.1", owner=("ReplicaSet", "batch"))), "batch"),
             (("put", "Job", job), "nightly"), (("put", "ReplicaSet", rs), "nightly"),
             (("delete", "Job", "job-1"), "web")]
    for event, workload in steps:
        world.step(event)
        assert tables(world.incremental) == tables(world.legacy)
        assert world.incremental.endpoint("10.1.0.1", None, world.now).workload == workload
