"""The Kubernetes inventory the collector enriches flows with, and its address history.

Objects arrive in the API's own shape (from a `kubectl get -o json` file or from a list+watch
of the API server) and are slimmed at once to what enrichment needs. Addresses are reused
(a pod IP goes to another pod after the first is gone), so each address keeps a history of
holders: a flow at time t goes to the pod that held the address at t.

The inventory is maintained incrementally: a watch event (:meth:`Inventory.apply`) changes only
what its object touches (a pod its address and host ports; a node its own entry and the pods on
it; a ReplicaSet or Job the workload of its pods; a Service its cluster IPs; an EndpointSlice its
backends), and a list (:meth:`Inventory.replace_kind`, :meth:`Inventory.replace_all`) only what
differs from what was there. The result is exactly what rebuilding everything from the same
objects after each change gave (what the collector did before), address history included:

* every derived table is the one a rebuild gets by applying the objects in their order (the
  order of a list, a new object after the others, a modified one in its place), so where two
  objects give the same key (two Services with one cluster IP) the later one wins, as before;
* a rebuild assigns each address to every pod that claims it (has it, is not finished, is not on
  the host network) in order, and releases the addresses of pods that are gone; doing that for
  the addresses whose claimants or releases changed is the same, as assigning an address to its
  holder again does nothing. Addresses that pods with different identities claim at once
  (contested) are assigned again on every change, as a rebuild did.

Writers (the sources' threads) are serialised by a writer lock and compute what changes outside
:attr:`Inventory.lock`; they hold that lock only to apply a handful of dictionary writes, so
ingest (which enriches a report under it) hardly waits. :attr:`Inventory.nodes` and
:attr:`Inventory.topology_aware`, which diagnosis iterates without the lock, are replaced, never
changed in place. :meth:`Inventory.changes_since` tells the enricher which addresses a change
may answer differently for, so that its cache forgets only those.
"""

from __future__ import annotations

import bisect
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

POD_TEMPLATE_HASH = re.compile(r"^(?P<deployment>.+)-[a-z0-9]{5,10}$")


@dataclass(frozen=True, slots=True)
class AddressOwner:
    """What Kubernetes says owns an address: a pod, a node or a Service ("" where unknown). The
    enricher turns it into the flow's end (``model.queries.Endpoint``, the one Endpoint)."""

    kind: str  # pod | node | service
    name: str
    namespace: str = ""
    workload: str = ""
    workload_kind: str = ""
    service: str = ""
    node: str = ""
    zone: str = ""
    instance_type: str = ""


@dataclass(slots=True)
class _Holders:
    starts: list[float] = field(default_factory=list)
    ends: list[float] = field(default_factory=list)  # inf while held
    endpoints: list[AddressOwner] = field(default_factory=list)


INF = float("inf")


def timestamp(value: str | None, default: float) -> float:
    if not value:
        return default
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class AddressBook:
    """IP → the endpoints that held it, with when."""

    def __init__(self) -> None:
        self._by_ip: dict[str, _Holders] = {}

    def assign(self, ip: str, endpoint: AddressOwner, since: float) -> None:
        holders = self._by_ip.setdefault(ip, _Holders())
        if holders.endpoints and holders.ends[-1] == INF:
            if holders.endpoints[-1] == endpoint:
                return
            holders.ends[-1] = max(since, holders.starts[-1])  # the previous holder lost it
        holders.starts.append(since)
        holders.ends.append(INF)
        holders.endpoints.append(endpoint)

    def release(self, ip: str, until: float, endpoint: AddressOwner | None = None) -> None:
        """End the current tenure of ``ip`` (only if ``endpoint`` holds it, when given)."""
        holders = self._by_ip.get(ip)
        if holders and holders.ends and holders.ends[-1] == INF and endpoint in (None, holders.endpoints[-1]):
            holders.ends[-1] = max(until, holders.starts[-1])

    def at(self, ip: str, t: float) -> AddressOwner | None:
        holders = self._by_ip.get(ip)
        if holders is None:
            return None
        i = bisect.bisect_right(holders.starts, t) - 1
        if i >= 0 and t <= holders.ends[i]:
            return holders.endpoints[i]
        # A flow that started a moment before its pod was recorded still belongs to it.
        if i + 1 < len(holders.starts) and holders.starts[i + 1] - t < 5:
            return holders.endpoints[i + 1]
        return holders.endpoints[i] if i >= 0 and t - holders.ends[i] < 1 else None

    def current(self) -> dict[str, AddressOwner]:
        return {ip: h.endpoints[-1] for ip, h in self._by_ip.items() if h.ends and h.ends[-1] == INF}

    def prune(self, before: float) -> None:
        """Forget holders whose tenure ended before ``before`` (older than any flow kept)."""
        for ip in list(self._by_ip):
            h = self._by_ip[ip]
            keep = [i for i, end in enumerate(h.ends) if end >= before]
            if not keep:
                del self._by_ip[ip]
            elif len(keep) < len(h.ends):
                h.starts = [h.starts[i] for i in keep]
                h.ends = [h.ends[i] for i in keep]
                h.endpoints = [h.endpoints[i] for i in keep]


def workload_of(pod: dict[str, Any], replicasets: dict[tuple[str, str], tuple[str, str]]) -> tuple[str, str]:
    """(workload, kind) through owner references: ReplicaSet → Deployment, Job → CronJob."""
    meta = pod.get("metadata", {})
    owners = [o for o in meta.get("ownerReferences", []) if o.get("controller", True)]
    if not owners:
        return meta.get("name", ""), "Pod"
    owner = owners[0]
    kind, name = owner.get("kind", ""), owner.get("name", "")
    if kind == "ReplicaSet":
        known = replicasets.get((meta.get("namespace", ""), name))
        if known:
            return known
        match = POD_TEMPLATE_HASH.match(name)  # the Deployment's name before the template hash
        return (match.group("deployment"), "Deployment") if match else (name, "ReplicaSet")
    if kind == "Job":
        known = replicasets.get((meta.get("namespace", ""), name))
        return known or (name, "Job")
    return name, kind


KINDS = ("Node", "ReplicaSet", "Job", "Service", "EndpointSlice", "Pod")
EVENTS = ("ADDED", "MODIFIED", "DELETED")
MAX_CHANGES = 512  # inventory versions whose changed addresses are remembered for the enricher's cache
MAX_CHANGED_ADDRESSES = 20_000  # a change touching more addresses than this is "everything"

_MISSING: Any = object()


class Inventory:
    """The slimmed cluster state: address history, nodes, services, host-network ports."""

    def __init__(self) -> None:
        self.addresses = AddressBook()
        self.nodes: dict[str, AddressOwner] = {}  # replaced on change, never changed in place
        self.node_by_ip: dict[str, str] = {}
        self.services: dict[str, AddressOwner] = {}  # cluster IP → service
        self.backend_services: dict[str, set[str]] = {}  # pod IP → names of services it backs
        self.topology_aware: set[tuple[str, str]] = set()  # (namespace, service) with topology-aware routing
        self.host_ports: dict[tuple[str, int], AddressOwner] = {}
        self.lock = threading.RLock()  # readers hold it for a consistent view; writers to apply a change
        self._pods: dict[str, tuple[str, AddressOwner]] = {}  # uid → (ip, endpoint) last assigned
        self.version = 0
        self.changed_at: float | None = None  # wall time of the last change (None: never)
        self._changes: deque[tuple[int, frozenset[str] | None]] = deque(maxlen=MAX_CHANGES)
        # Writers' state, under _writer only: the objects and what each gives the tables.
        self._writer = threading.Lock()
        self._objects: dict[str, dict[str, _Object]] = {kind: {} for kind in KINDS}
        self._next_seq = 0
        self._node_entries = _Ranked()  # node name → AddressOwner
        self._node_ips = _Ranked()  # address → node name
        self._owner_entries = _Ranked()  # (namespace, ReplicaSet or Job) → (workload, kind)
        self._owners: dict[tuple[str, str], tuple[str, str]] = {}
        self._service_ips = _Ranked()  # cluster IP → AddressOwner
        self._topology: dict[tuple[str, str], int] = {}  # (namespace, name) → Services saying so
        self._backends: dict[str, dict[str, int]] = {}  # address → service → slices listing it
        self._host_entries = _Ranked()  # (ip, port) → AddressOwner
        self._applied: dict[str, _PodState] = {}  # pods with an address, not finished
        self._claims: dict[str, dict[str, int]] = {}  # address → {pod key: seq} of pods off the host network
        self._by_node: dict[Any, set[str]] = {}  # spec.nodeName → applied pods
        self._by_owner: dict[tuple[str, str], set[str]] = {}  # (namespace, ReplicaSet or Job) → applied pods
        self._contested: set[str] = set()  # addresses claimed by pods of different identities
        self._backends_touched: set[str] = set()

    # -- changes --------------------------------------------------------------------------------
    def apply(self, kind: str, event: str, obj: dict[str, Any], now: float) -> bool:
        """One watch event (ADDED, MODIFIED, DELETED) of an object of ``kind``; whether anything changed."""
        if kind not in self._objects or event not in EVENTS:
            return False
        key = _pod_uid(obj)
        with self._writer:
            old = self._objects[kind].get(key)
            if event == "DELETED":
                changes = [] if old is None else [_Change(kind, key, old, None)]
            elif old is not None and old.obj == obj:
                changes = []
            else:
                changes = [_Change(kind, key, old, _Object(old.seq if old else self._seq(), obj))]
            return self._step(changes, now)

    def replace_kind(self, kind: str, objects: list[dict[str, Any]], now: float) -> bool:
        """All objects of ``kind`` (a list), in the list's order; whether anything changed."""
        if kind not in self._objects:
            return False
        with self._writer:
            return self._step(self._replacing(kind, objects), now)

    def replace_all(self, objects: list[dict[str, Any]], now: float) -> bool:
        """Make the inventory what ``objects`` say (a List's items), keeping address history."""
        by_kind: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
        for obj in objects:
            if obj.get("kind", "") in by_kind:
                by_kind[obj["kind"]].append(obj)
        with self._writer:
            return self._step([c for kind in KINDS for c in self._replacing(kind, by_kind[kind])], now)

    def changes_since(self, version: int) -> frozenset[str] | None:
        """The addresses whose lookups may have changed after ``version`` (a version of this
        inventory); None when it cannot tell (a node changed, or too long ago). Call under the lock."""
        if version == self.version:
            return frozenset()
        if version > self.version or not self._changes or self._changes[0][0] > version + 1:
            return None
        changed: set[str] = set()
        for at, addresses in reversed(self._changes):
            if at <= version:
                break
            if addresses is None:
                return None
            changed |= addresses
        return frozenset(changed)

    def _seq(self) -> int:
        self._next_seq += 1
        return self._next_seq

    def _replacing(self, kind: str, objects: list[dict[str, Any]]) -> list[_Change]:
        """The changes that make ``objects`` (in their order) all of ``kind``'s objects."""
        current, new = self._objects[kind], {}
        for obj in objects:
            key = _pod_uid(obj)
            if key in new:  # the same object twice in a file: both count, as before
                n = 2
                while f"{key}#{n}" in new:
                    n += 1
                key = f"{key}#{n}"
            new[key] = _Object(self._seq(), obj)
        changes = [_Change(kind, key, current.get(key), obj) for key, obj in new.items()]
        return changes + [_Change(kind, key, old, None) for key, old in current.items() if key not in new]

    def _step(self, changes: list[_Change], now: float) -> bool:
        """Apply ``changes`` (at most one per object) as one new version, if anything changes."""
        if not changes and not self._contested:
            return False
        # What each new object gives, before anything changes: a malformed object fails here.
        for change in changes:
            if change.new is not None:
                same = change.old is not None and change.old.obj == change.new.obj  # a list: mostly the same
                change.new.facts = change.old.facts if same else _FACTS[change.kind](change.new.obj)
        pods: set[str] = set()  # to resolve again
        gone: list[str] = []
        retabled: set[str] = set()  # pods whose node or owner changed
        for change in changes:
            self._record(change, pods, gone)
        # Nodes and owners first: pods resolve through them.
        node_changes = self._node_entries.changes()
        nodes = self.nodes
        if node_changes:
            nodes = dict(nodes)
            for name, endpoint in node_changes.items():
                if endpoint is _MISSING:
                    del nodes[name]
                else:
                    nodes[name] = endpoint
                retabled |= self._by_node.get(name, set())
        for key, owner in self._owner_entries.changes().items():
            if owner is _MISSING:
                del self._owners[key]
            else:
                self._owners[key] = owner
            retabled |= self._by_owner.get(key, set())
        claims_before: dict[str, list[tuple[str, AddressOwner]]] = {}
        for key in pods | retabled:
            self._resolve(key, nodes, claims_before, key in retabled)
        releases = []
        for key in gone:
            if key in self._pods:
                ip, endpoint = self._pods.pop(key)
                releases.append((ip, endpoint))
        affected = {ip for ip, _ in releases}
        for ip, before in claims_before.items():
            after = self._claim_list(ip)
            if after != before:
                affected.add(ip)
            if len({endpoint for _, endpoint in after}) > 1:
                self._contested.add(ip)
            else:
                self._contested.discard(ip)
        affected |= self._contested
        assigns = []
        order = sorted((seq, key, ip) for ip in affected for key, seq in self._claims.get(ip, {}).items())
        for _, key, ip in order:  # in the objects' order, as a rebuild
            state = self._applied[key]
            since = min(timestamp(state.facts.start, now), timestamp(state.facts.created, now))
            assigns.append((ip, state.endpoint, since))
            self._pods[key] = (ip, state.endpoint)
        node_ip_changes = self._node_ips.changes()
        host_changes = self._host_entries.changes()
        service_changes = self._service_ips.changes()
        backend_changes = {address: {s for s, n in self._backends.get(address, {}).items() if n}
                           for address in self._backends_touched}
        backend_changes = {a: s for a, s in backend_changes.items() if s != self.backend_services.get(a, set())}
        self._backends_touched = set()
        topology = {key for key, n in self._topology.items() if n}
        topology_changed = topology != self.topology_aware
        if not (releases or assigns or node_changes or node_ip_changes or host_changes or service_changes
                or backend_changes or topology_changed):
            return False
        changed = None
        if not node_changes:
            changed = affected | set(node_ip_changes) | set(service_changes) | set(backend_changes)
            changed |= {ip for ip, _ in host_changes}
            changed = frozenset(changed) if len(changed) <= MAX_CHANGED_ADDRESSES else None
        with self.lock:  # what ingest waits for: a handful of writes
            book = self.addresses
            for ip, endpoint in releases:
                book.release(ip, now, endpoint)
            for ip, endpoint, since in assigns:
                book.assign(ip, endpoint, since)
            self.nodes = nodes
            _update(self.node_by_ip, node_ip_changes)
            _update(self.services, service_changes)
            _update(self.host_ports, host_changes)
            for address, services in backend_changes.items():
                if services:
                    self.backend_services[address] = services
                else:
                    del self.backend_services[address]
            if topology_changed:
                self.topology_aware = topology
            self.version += 1
            self.changed_at = time.time()
            self._changes.append((self.version, changed))
        return True

    def counts(self) -> dict[str, int]:
        """Objects kept, by kind (Node, ReplicaSet, Job, Service, EndpointSlice, Pod)."""
        return {kind: len(objects) for kind, objects in self._objects.items()}

    def _record(self, change: _Change, pods: set[str], gone: list[str]) -> None:
        """Store the change and take what the old object gave out of the tables, and put the new one's in
        (pods: only noted, they are resolved once nodes and owners are up to date)."""
        kind, key = change.kind, change.key
        if change.new is None:
            del self._objects[kind][key]
        else:
            self._objects[kind][key] = change.new
        if kind == "Pod":
            pods.add(key)
            if change.new is None:
                gone.append(key)
            return
        for obj, sign in ((change.old, -1), (change.new, 1)):
            if obj is None:
                continue
            seq, facts = obj.seq, obj.facts
            if kind == "Node":
                name, endpoint, ips = facts
                _put_or_drop(self._node_entries, name, seq, endpoint, sign)
                for ip in ips:
                    _put_or_drop(self._node_ips, ip, seq, name, sign)
            elif kind in ("ReplicaSet", "Job"):
                owned, owner = facts
                if owner is not None:
                    _put_or_drop(self._owner_entries, owned, (kind == "Job", seq), owner, sign)
            elif kind == "Service":
                name, topology_aware, ips, endpoint = facts
                if topology_aware:
                    _count(self._topology, name, sign)
                for ip in ips:
                    _put_or_drop(self._service_ips, ip, seq, endpoint, sign)
            else:  # EndpointSlice
                service, addresses = facts
                for address in addresses:
                    services = self._backends.setdefault(address, {})
                    _count(services, service, sign)
                    if not services:
                        del self._backends[address]
                    self._backends_touched.add(address)

    def _resolve(self, key: str, nodes: dict[str, AddressOwner],
                 claims_before: dict[str, list[tuple[str, AddressOwner]]], retabled: bool) -> None:
        """Bring what pod ``key`` gives the tables up to date with its object, its node and its owner."""
        old = self._applied.get(key)
        obj = self._objects["Pod"].get(key)
        new = None
        if obj is not None and obj.facts is not None:
            if old is not None and old.facts is obj.facts and not retabled:  # the same pod in another place
                new = _PodState(obj.seq, obj.facts, old.endpoint)
            else:
                new = _PodState(obj.seq, obj.facts, _pod_endpoint(obj.facts, self._owners, nodes))
        if new == old:
            return
        for state in (old, new):
            if state is not None and not state.facts.host and state.facts.ip not in claims_before:
                claims_before[state.facts.ip] = self._claim_list(state.facts.ip)
        if old is not None:
            facts = old.facts
            del self._applied[key]
            if facts.host:
                for port in facts.ports:
                    self._host_entries.drop((facts.ip, port), old.seq)
            else:
                claims = self._claims[facts.ip]
                del claims[key]
                if not claims:
                    del self._claims[facts.ip]
            _unindex(self._by_node, facts.node, key)
            if facts.owner is not None:
                _unindex(self._by_owner, facts.owner, key)
        if new is not None:
            facts = new.facts
            self._applied[key] = new
            if facts.host:
                for port in facts.ports:
                    self._host_entries.put((facts.ip, port), new.seq, new.endpoint)
            else:
                self._claims.setdefault(facts.ip, {})[key] = new.seq
            self._by_node.setdefault(facts.node, set()).add(key)
            if facts.owner is not None:
                self._by_owner.setdefault(facts.owner, set()).add(key)

    def _claim_list(self, ip: str) -> list[tuple[str, AddressOwner]]:
        """The pods claiming ``ip``, in the order a rebuild assigns it to them."""
        claims = self._claims.get(ip)
        if not claims:
            return []
        return [(key, self._applied[key].endpoint) for key in sorted(claims, key=claims.__getitem__)]

    # -- lookups ----------------------------------------------------------------------------
    def endpoint(self, ip: str, port: int | None, t: float) -> AddressOwner | None:
        """Who had ``ip`` at ``t``: a pod (with the service it backs), a Service, a node, or None."""
        pod = self.addresses.at(ip, t)
        if pod is not None:
            services = self.backend_services.get(ip)
            return replace(pod, service=sorted(services)[0]) if services else pod
        service = self.services.get(ip)
        if service is not None:
            return service
        if port is not None and (ip, port) in self.host_ports:
            return self.host_ports[(ip, port)]
        node = self.node_by_ip.get(ip)
        return self.nodes.get(node) if node else None


@dataclass(slots=True)
class _Object:
    seq: int  # its place in the order a rebuild applies the objects of its kind
    obj: dict[str, Any]
    facts: Any = None  # what it gives the tables (_FACTS)


@dataclass(frozen=True, slots=True)
class _Change:
    kind: str
    key: str
    old: _Object | None
    new: _Object | None


@dataclass(frozen=True, slots=True)
class _PodFacts:
    """What a pod with an address, not finished, gives the tables, but for its endpoint."""

    ip: str
    host: bool  # on the host network: found by (ip, port), never in the address history
    ports: tuple[int, ...]
    node: Any  # spec.nodeName
    owner: tuple[str, str] | None  # (namespace, ReplicaSet or Job) its workload comes from
    start: str | None
    created: str | None
    pod: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _PodState:
    seq: int
    facts: _PodFacts
    endpoint: AddressOwner


class _Ranked:
    """Key → the values objects give it, by the objects' order (rank): the last one's is the key's, as
    when a rebuild writes them in order. Remembers each key's value before its first change since
    :meth:`changes`."""

    __slots__ = ("_before", "_values")

    def __init__(self) -> None:
        self._values: dict[Any, dict[Any, Any]] = {}
        self._before: dict[Any, Any] = {}

    def get(self, key: Any) -> Any:
        values = self._values.get(key)
        return values[max(values)] if values else _MISSING

    def put(self, key: Any, rank: Any, value: Any) -> None:
        if key not in self._before:
            self._before[key] = self.get(key)
        self._values.setdefault(key, {})[rank] = value

    def drop(self, key: Any, rank: Any) -> None:
        values = self._values.get(key)
        if values is None or rank not in values:
            return
        if key not in self._before:
            self._before[key] = self.get(key)
        del values[rank]
        if not values:
            del self._values[key]

    def changes(self) -> dict[Any, Any]:
        """Keys whose value changed (to _MISSING: gone) since the last call."""
        changed = {}
        for key, before in self._before.items():
            after = self.get(key)
            if after is not before and (after is _MISSING or before is _MISSING or after != before):
                changed[key] = after
        self._before = {}
        return changed


def _put_or_drop(table: _Ranked, key: Any, rank: Any, value: Any, sign: int) -> None:
    if sign > 0:
        table.put(key, rank, value)
    else:
        table.drop(key, rank)


def _count(counts: dict[Any, int], key: Any, sign: int) -> None:
    n = counts.get(key, 0) + sign
    if n:
        counts[key] = n
    else:
        counts.pop(key, None)


def _unindex(index: dict[Any, set[str]], key: Any, pod: str) -> None:
    pods = index.get(key)
    if pods is not None:
        pods.discard(pod)
        if not pods:
            del index[key]


def _update(table: dict[Any, Any], changes: dict[Any, Any]) -> None:
    for key, value in changes.items():
        if value is _MISSING:
            table.pop(key, None)
        else:
            table[key] = value


def _pod_endpoint(facts: _PodFacts, owners: dict[tuple[str, str], tuple[str, str]],
                  nodes: dict[str, AddressOwner]) -> AddressOwner:
    meta = facts.pod.get("metadata", {})
    workload, kind = workload_of(facts.pod, owners)
    node = nodes.get(facts.node, AddressOwner("node", facts.node))
    return AddressOwner("pod", meta.get("name", ""), meta.get("namespace", ""), workload, kind, "",
                    node.name, node.zone, node.instance_type)


# What each kind of object gives the tables; these raise on what a rebuild would fail on.
def _pod_facts(pod: dict[str, Any]) -> _PodFacts | None:
    meta, spec, status = pod.get("metadata", {}), pod.get("spec", {}), pod.get("status", {})
    ip = status.get("podIP")
    if not ip or status.get("phase") in ("Succeeded", "Failed"):
        return None
    workload_of(pod, {})
    owners = [o for o in meta.get("ownerReferences", []) if o.get("controller", True)]
    owner = None
    if owners and owners[0].get("kind", "") in ("ReplicaSet", "Job"):
        owner = (meta.get("namespace", ""), owners[0].get("name", ""))
    host = bool(spec.get("hostNetwork"))
    ports: tuple[int, ...] = ()
    if host:
        ports = tuple(int(port.get("hostPort") or port.get("containerPort", 0))
                      for container in spec.get("containers", []) for port in container.get("ports", []))
    else:
        timestamp(status.get("startTime"), 0.0)
        timestamp(meta.get("creationTimestamp"), 0.0)
    facts = _PodFacts(ip, host, ports, spec.get("nodeName", ""), owner, status.get("startTime"),
                      meta.get("creationTimestamp"), pod)
    hash((ip, facts.node, owner))
    return facts


def _node_facts(node: dict[str, Any]) -> tuple[str, AddressOwner, tuple[str, ...]]:
    meta, labels = node.get("metadata", {}), node.get("metadata", {}).get("labels", {})
    endpoint = AddressOwner("node", meta.get("name", ""), node=meta.get("name", ""),
                        zone=labels.get("topology.kubernetes.io/zone", ""),
                        instance_type=labels.get("node.kubernetes.io/instance-type", ""))
    ips = tuple(address["address"] for address in node.get("status", {}).get("addresses", [])
                if address.get("type") in ("InternalIP", "ExternalIP"))
    hash((endpoint.name, ips))
    return endpoint.name, endpoint, ips


def _owner_facts(obj: dict[str, Any]) -> tuple[tuple[str, str], tuple[str, str] | None]:
    meta = obj.get("metadata", {})
    owners = [o for o in meta.get("ownerReferences", []) if o.get("controller", True)]
    key = (meta.get("namespace", ""), meta.get("name", ""))
    hash(key)
    return key, ((owners[0]["name"], owners[0]["kind"]) if owners else None)


def _service_facts(svc: dict[str, Any]) -> tuple[tuple[str, str], bool, tuple[str, ...], AddressOwner]:
    meta, spec = svc.get("metadata", {}), svc.get("spec", {})
    annotations = meta.get("annotations") or {}
    topology_aware = (annotations.get("service.kubernetes.io/topology-mode", "").lower() == "auto"
                      or annotations.get("service.kubernetes.io/topology-aware-hints", "").lower() == "auto"
                      or spec.get("trafficDistribution") == "PreferClose")
    name = (meta.get("namespace", ""), meta.get("name", ""))
    ips = tuple(ip for ip in spec.get("clusterIPs") or [spec.get("clusterIP")] if ip and ip != "None")
    hash((name, ips))
    return name, topology_aware, ips, AddressOwner("service", meta.get("name", ""), meta.get("namespace", ""),
                                               service=meta.get("name", ""))


def _slice_facts(eps: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
    service = eps.get("metadata", {}).get("labels", {}).get("kubernetes.io/service-name", "")
    addresses = tuple(address for endpoint in eps.get("endpoints") or [] for address in endpoint.get("addresses", []))
    hash((service, addresses))
    return service, addresses


_FACTS = {"Pod": _pod_facts, "Node": _node_facts, "ReplicaSet": _owner_facts, "Job": _owner_facts,
          "Service": _service_facts, "EndpointSlice": _slice_facts}


def _pod_uid(pod: dict[str, Any]) -> str:
    meta = pod.get("metadata", {})
    return meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}"

