"""Reports in, enriched rows out: each flow end becomes pod, workload, service, node, zone,
instance type, or cloud service and region, and the flow gets its category.

Categories follow the reference product: INTRA_AZ / INTER_AZ between cluster ends (zones
from the nodes' ``topology.kubernetes.io/zone`` label, computed here, not by a cloud
backend), AMAZON_S3 / AMAZON_DYNAMODB and other AWS services by name from the IP ranges,
INTER_REGION for AWS addresses of another region, INTER_VPC for configured peer VPC ranges,
UNCLASSIFIED for the rest (internet, on-premises).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import attrgetter

import msgspec
import numpy as np
import pyarrow as pa

from flowlens.collector.enrich.cloud import CloudOwner, CloudRanges
from flowlens.collector.enrich.inventory import AddressOwner, Inventory
from flowlens.collector.enrich.observed import ObservedAddresses
from flowlens.model.records import ENRICHED_FLOW_SCHEMA as ENRICHED
from flowlens.model.records import FLOW_COUNTER_COLUMNS, FLOW_KEY_NAMES, NODE_SCHEMA, flow_ids
from flowlens.model.report import Report
from flowlens.model.vocabulary import Category, aws_category

FLOW_TYPES = dict(FLOW_COUNTER_COLUMNS)
# Key and enrichment columns, in the stored order, and the flow id: what the cache keeps per flow.
KEYED = pa.schema([*(ENRICHED.field(name) for name in FLOW_KEY_NAMES), ENRICHED.field("flow_id")])
MAX_CACHED_FLOWS = 1_000_000  # about 1 KB each: a collector of 1,000 nodes at 500 flows keeps 500 MB

_COUNTERS = tuple(name for name, _ in FLOW_COUNTER_COLUMNS)
_END_FIELDS = ("pod", "namespace", "workload", "workload_kind", "service", "node", "zone", "instance_type",
               "cloud_service", "region")


@dataclass(slots=True)
class Enricher:
    """Enriches whole reports at once.

    An agent reports the same flows every interval, so the result of enriching a flow (its key
    and enrichment columns, its category, its ``flow_id``) is kept per flow key, for as long as
    the inventory does not change; a report then costs a dictionary lookup per flow and a
    column ``take``. Flows not seen before are enriched together: each distinct end (address,
    port) and each distinct pair of ends is looked up once. Ends the inventory and the cloud
    ranges do not know (the internet) are looked up again each time, as an agent may start
    reporting from such an address later. When the inventory changes, the cache forgets only
    the flows with an address the change touched (all of them when it cannot tell: a node
    changed, or the inventory says nothing of what changed).
    """

    inventory: Inventory
    cloud: CloudRanges | None = None
    region: str = ""
    vpc_cidrs: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = field(default_factory=list)
    observed: ObservedAddresses = field(default_factory=ObservedAddresses)
    _keys: _KeyCache = field(default_factory=lambda: _KeyCache(-1, 0.0))

    def flows(self, report: Report) -> pa.Table:
        """The report's flow rows: FLOW_SCHEMA's columns and ``flow_id``."""
        flows, node, t = report.flows, report.agent.node, report.interval.start
        self.observed.learn(node, {flow.local_ip for flow in flows})
        with self.inventory.lock:
            cache = self._cache_for(t)
            if cache is None:
                hit_rows, positions, miss_rows = [], [], list(range(len(flows)))
            else:
                hit_rows, positions, miss_rows = cache.lookup(node, flows)
            fresh, final = self._resolve(report, miss_rows, t)
            if cache is not None:
                cache.add(node, [flows[i] for i in miss_rows], fresh, final)
                keyed = pa.concat_tables([cache.take(positions), fresh]) if hit_rows else fresh
            else:
                keyed = fresh
        ordered = [flows[i] for i in hit_rows] + [flows[i] for i in miss_rows] if hit_rows else flows
        columns = dict(zip(keyed.column_names, keyed.columns, strict=True))
        moment = pa.timestamp("ms", tz="UTC")
        for name, when in (("time_start", report.interval.start), ("time_end", report.interval.end)):
            columns[name] = pa.array(np.full(len(ordered), int(when * 1000), "datetime64[ms]"), moment)
        for name in _COUNTERS:
            columns[name] = pa.array(list(map(attrgetter(name), ordered)), FLOW_TYPES[name])
        return pa.table([columns[name] for name in ENRICHED.names], schema=ENRICHED)

    def _cache_for(self, t: float) -> _KeyCache | None:
        """The flow-key cache for reports of the current inventory; old reports (replays) bypass it."""
        version, keys = self.inventory.version, self._keys
        if version != keys.version and keys.size <= MAX_CACHED_FLOWS:
            changed = self.inventory.changes_since(keys.version) if keys.version >= 0 else None
            if changed is not None:  # forget what the changes touched, keep the rest
                keys.forget(changed)
                keys.version, keys.since = version, t
        if version != self._keys.version or self._keys.size > MAX_CACHED_FLOWS:
            self._keys = _KeyCache(version, t)
        return self._keys if t >= self._keys.since - 60 else None

    def _resolve(self, report: Report, rows: list[int], t: float) -> tuple[pa.Table, list[bool]]:
        """Key and enrichment columns (and flow ids) of some of the report's flows; and whether
        each result holds for the report's flow key as long as the inventory does not change."""
        flows, node = report.flows, report.agent.node
        subset = [flows[i] for i in rows]
        locals_: dict[tuple[str, int | None], int] = {}
        remotes: dict[tuple[str, int | None, str | None], int] = {}
        local_index, remote_index = np.empty(len(subset), np.int64), np.empty(len(subset), np.int64)
        for row, flow in enumerate(subset):
            server = flow.role == "server"
            local_index[row] = locals_.setdefault((flow.local_ip, flow.server_port if server else None), len(locals_))
            remote_index[row] = remotes.setdefault(
                (flow.remote_ip, None if server else flow.server_port, flow.service_ip), len(remotes))
        local_ends = [self._local(ip, port, t, node) for ip, port in locals_]
        remote_ends = [self._remote(ip, port, svc, t) for ip, port, svc in remotes]
        columns: dict[str, pa.Array] = {
            "node": pa.array([node] * len(subset), pa.string()),
            "netns": pa.array([f.netns for f in subset], pa.string()),
            "protocol": pa.array([f.protocol for f in subset], pa.string()),
            "role": pa.array([f.role for f in subset], pa.string()),
            "local_ip": pa.array([f.local_ip for f in subset], pa.string()),
            "remote_ip": pa.array([f.remote_ip for f in subset], pa.string()),
            "server_port": pa.array([f.server_port for f in subset], pa.int32()),
            "service_ip": pa.array([f.service_ip for f in subset], pa.string()),
            **_take_ends("local", local_ends, local_index),
            **_take_ends("remote", remote_ends, remote_index),
            "category": self._categories(local_ends, remote_ends, local_index, remote_index),
        }
        if any(f.own for f in subset):  # flowlens's own traffic, whatever its ends
            columns["category"] = pa.array([Category.FLOWLENS if f.own else c
                                            for f, c in zip(subset, columns["category"].to_pylist(), strict=True)],
                                           pa.string())
        table = pa.table([columns[name] for name in KEYED.names[:-1]], schema=pa.schema(list(KEYED)[:-1]))
        table = table.append_column(KEYED.field("flow_id"), flow_ids(table))
        final = [remote_ends[r].final for r in remote_index.tolist()]
        return table, final

    def _local(self, ip: str, port: int | None, t: float, node: str) -> _End:
        endpoint = self.inventory.endpoint(ip, port, t) or self.inventory.nodes.get(node) or \
            AddressOwner("node", node, node=node)
        return _End(endpoint, _end_values(endpoint, None, self.region), final=True)

    def _remote(self, ip: str, port: int | None, service_ip: str | None, t: float) -> _End:
        remote = self.inventory.endpoint(ip, port, t)
        service = self.inventory.services.get(service_ip) if service_ip else None
        cloud = self.cloud.owner(ip) if (remote is None and self.cloud) else None
        if remote is None and cloud is None:
            remote = self._observed(ip)
        # Known to the inventory, the cloud ranges or the agents: final. Otherwise an agent may
        # start reporting from the address later, so it is looked up again each time.
        final = remote is not None or cloud is not None
        values = _end_values(remote, cloud, self.region)
        if service is not None and not values["service"]:
            values["service"] = service.name
            values["namespace"] = values["namespace"] or service.namespace
        return _End(remote, values, cloud, ip, final)

    def _categories(self, local_ends: list[_End], remote_ends: list[_End], local_index: np.ndarray,
                    remote_index: np.ndarray) -> pa.Array:
        if not len(local_index):
            return pa.array([], pa.string())
        width = len(remote_ends)
        pairs, inverse = np.unique(local_index * width + remote_index, return_inverse=True)
        names = [self.category(local_ends[p // width].endpoint, remote_ends[p % width].endpoint,
                               remote_ends[p % width].cloud, remote_ends[p % width].ip) for p in pairs.tolist()]
        return pa.array(names, pa.string()).take(pa.array(inverse.reshape(-1)))

    def category(self, local: AddressOwner | None, remote: AddressOwner | None, cloud: CloudOwner | None,
                 remote_ip: str) -> str:
        if cloud is not None:
            if cloud.service in ("S3", "DYNAMODB"):
                return aws_category(cloud.service)
            if cloud.region and self.region and cloud.region not in (self.region, "GLOBAL"):
                return Category.INTER_REGION
            if cloud.service not in ("AMAZON", "EC2"):
                return aws_category(cloud.service)
        if remote is not None and local is not None and remote.zone and local.zone:
            return Category.INTRA_AZ if remote.zone == local.zone else Category.INTER_AZ
        if self.vpc_cidrs:
            address = ipaddress.ip_address(remote_ip)
            if any(address in net for net in self.vpc_cidrs):
                return Category.INTER_VPC
        return Category.UNCLASSIFIED

    def nodes(self, report: Report) -> pa.Table:
        start = datetime.fromtimestamp(report.interval.start, UTC)
        end = datetime.fromtimestamp(report.interval.end, UTC)
        node = self.inventory.nodes.get(report.agent.node)
        rows = [{"time_start": start, "time_end": end, "node": report.agent.node,
                 "zone": node.zone if node else None, "instance_type": node.instance_type if node else None,
                 **msgspec.structs.asdict(iface),
                 "tcp_retransmitted_segments": report.node.tcp_retransmitted_segments}
                for iface in report.node.interfaces]
        return pa.Table.from_pylist(rows, schema=NODE_SCHEMA)

    def _observed(self, address: str) -> AddressOwner | None:
        """An address no inventory knows but an agent reports from: that agent's host."""
        node = self.observed.node_of(address)
        if node is None:
            return None
        return self.inventory.nodes.get(node) or AddressOwner("node", node, node=node)

class _KeyCache:
    """Flow key (per reporting node) → its row of key and enrichment columns, for one version
    of the inventory. Rows live in a few Arrow tables, taken from in one call per report; each
    address (local, remote, service) knows the keys of the flows it is in, so that the rows of
    addresses the inventory changed for can be forgotten (their rows stay, unreachable)."""

    def __init__(self, version: int, since: float) -> None:
        self.version, self.since = version, since
        self.size = 0
        self._index: dict[str, dict[tuple, int]] = {}
        self._tables: list[pa.Table] = []
        self._by_address: dict[str, list[tuple[str, tuple]]] = {}

    def forget(self, addresses: Iterable[str]) -> None:
        """Forget the flows with any of ``addresses`` at either end or as their service address."""
        by_address, index = self._by_address, self._index
        for address in addresses:
            for node, key in by_address.pop(address, ()):
                known = index.get(node)
                if known is not None:
                    known.pop(key, None)

    def lookup(self, node: str, flows: list) -> tuple[list[int], list[int], list[int]]:
        """(rows found, their positions in the cache, rows not found)."""
        known = self._index.get(node, {})
        hit_rows, positions, miss_rows = [], [], []
        for row, f in enumerate(flows):
            position = known.get((f.netns, f.role, f.local_ip, f.remote_ip, f.server_port, f.service_ip, f.own))
            if position is None:
                miss_rows.append(row)
            else:
                hit_rows.append(row)
                positions.append(position)
        return hit_rows, positions, miss_rows

    def add(self, node: str, flows: list, table: pa.Table, final: list[bool]) -> None:
        keep = [i for i, ok in enumerate(final) if ok]
        if not keep:
            return
        known = self._index.setdefault(node, {})
        by_address = self._by_address
        for offset, i in enumerate(keep):
            f = flows[i]
            key = (f.netns, f.role, f.local_ip, f.remote_ip, f.server_port, f.service_ip, f.own)
            known[key] = self.size + offset
            entry = (node, key)
            by_address.setdefault(f.local_ip, []).append(entry)
            by_address.setdefault(f.remote_ip, []).append(entry)
            if f.service_ip:
                by_address.setdefault(f.service_ip, []).append(entry)
        self._tables.append(table.take(keep) if len(keep) < len(final) else table)
        self.size += len(keep)
        if len(self._tables) > 8:  # few big chunks take faster than many small ones
            self._tables = [pa.concat_tables(self._tables).combine_chunks()]

    def take(self, positions: list[int]) -> pa.Table:
        return pa.concat_tables(self._tables).take(pa.array(positions, pa.int64()))


@dataclass(slots=True)
class _End:
    """One distinct flow end of a report: who it is and its enrichment columns' values."""

    endpoint: AddressOwner | None
    values: dict[str, str | None]
    cloud: CloudOwner | None = None
    ip: str = ""
    final: bool = False  # the same for every report of the current inventory


def _end_values(endpoint: AddressOwner | None, cloud: CloudOwner | None, region: str) -> dict[str, str | None]:
    values: dict[str, str | None] = dict.fromkeys(_END_FIELDS)
    if endpoint is not None:
        values.update({
            "pod": endpoint.name if endpoint.kind == "pod" else None,
            "namespace": endpoint.namespace or None,
            "workload": endpoint.workload or None,
            "workload_kind": endpoint.workload_kind or None,
            "service": endpoint.service or None,
            "node": endpoint.node or None,
            "zone": endpoint.zone or None,
            "instance_type": endpoint.instance_type or None,
            "region": region or None,
        })
    elif cloud is not None:
        values["cloud_service"] = cloud.service
        values["region"] = cloud.region or None
    return values


def _take_ends(side: str, ends: list[_End], index: np.ndarray) -> dict[str, pa.Array]:
    """Each enrichment column of one side: the distinct ends' values, taken row by row."""
    positions = pa.array(index)
    return {f"{side}_{name}": pa.array([end.values[name] for end in ends], pa.string()).take(positions)
            for name in _END_FIELDS}


def parse_cidrs(spec: str | Iterable[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    items = spec.split(",") if isinstance(spec, str) else spec
    return [ipaddress.ip_network(item.strip(), strict=False) for item in items if item.strip()]
