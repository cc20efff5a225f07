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

import msgspec
import numpy as np
import pyarrow as pa

from flowlens.collector.enrich.cloud import CloudOwner, CloudRanges
from flowlens.collector.enrich.inventory import Endpoint, Inventory
from flowlens.collector.enrich.observed import ObservedAddresses
from flowlens.model.records import FLOW_COUNTER_COLUMNS, FLOW_SCHEMA, NODE_SCHEMA
from flowlens.model.report import Report

FLOW_TYPES = dict(FLOW_COUNTER_COLUMNS)

_COUNTERS = tuple(name for name, _ in FLOW_COUNTER_COLUMNS)
_END_FIELDS = ("pod", "namespace", "workload", "workload_kind", "service", "node", "zone", "instance_type",
               "cloud_service", "region")


@dataclass(slots=True)
class Enricher:
    """Enriches whole reports at once: each distinct end (address, port) and each distinct pair
    of ends is looked up once, and columns are built by taking from those few answers, so the
    cost per flow row is a dictionary lookup, not an inventory walk."""

    inventory: Inventory
    cloud: CloudRanges | None = None
    region: str = ""
    vpc_cidrs: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = field(default_factory=list)
    observed: ObservedAddresses = field(default_factory=ObservedAddresses)

    def flows(self, report: Report) -> pa.Table:
        flows = report.flows
        count = len(flows)
        t = report.interval.start
        locals_: dict[tuple[str, int | None], int] = {}
        remotes: dict[tuple[str, int | None, str | None], int] = {}
        local_index, remote_index = np.empty(count, np.int64), np.empty(count, np.int64)
        for row, flow in enumerate(flows):
            server = flow.role == "server"
            local_index[row] = locals_.setdefault((flow.local_ip, flow.server_port if server else None), len(locals_))
            remote_index[row] = remotes.setdefault(
                (flow.remote_ip, None if server else flow.server_port, flow.service_ip), len(remotes))
        self.observed.learn(report.agent.node, {ip for ip, _ in locals_})
        with self.inventory.lock:
            local_ends = [self._local(ip, port, t, report.agent.node) for ip, port in locals_]
            remote_ends = [self._remote(ip, port, service, t) for ip, port, service in remotes]
        columns = self._key_columns(report, count)
        for name in _COUNTERS:
            columns[name] = pa.array([getattr(flow, name) for flow in flows], FLOW_TYPES[name])
        columns.update(_take_ends("local", local_ends, local_index))
        columns.update(_take_ends("remote", remote_ends, remote_index))
        columns["category"] = self._categories(local_ends, remote_ends, local_index, remote_index, remotes)
        return pa.table([columns[f.name] for f in FLOW_SCHEMA], schema=FLOW_SCHEMA)

    def _key_columns(self, report: Report, count: int) -> dict[str, pa.Array]:
        flows = report.flows
        moment = pa.timestamp("ms", tz="UTC")
        return {
            "time_start": pa.array(np.full(count, int(report.interval.start * 1000), "datetime64[ms]"), moment),
            "time_end": pa.array(np.full(count, int(report.interval.end * 1000), "datetime64[ms]"), moment),
            "node": pa.array([report.agent.node] * count, pa.string()),
            "netns": pa.array([f.netns for f in flows], pa.string()),
            "protocol": pa.array([f.protocol for f in flows], pa.string()),
            "role": pa.array([f.role for f in flows], pa.string()),
            "local_ip": pa.array([f.local_ip for f in flows], pa.string()),
            "remote_ip": pa.array([f.remote_ip for f in flows], pa.string()),
            "server_port": pa.array([f.server_port for f in flows], pa.int32()),
            "service_ip": pa.array([f.service_ip for f in flows], pa.string()),
        }

    def _local(self, ip: str, port: int | None, t: float, node: str) -> _End:
        endpoint = self.inventory.endpoint(ip, port, t) or self.inventory.nodes.get(node) or \
            Endpoint("node", node, node=node)
        return _End(endpoint, _end_values(endpoint, None, self.region))

    def _remote(self, ip: str, port: int | None, service_ip: str | None, t: float) -> _End:
        remote = self.inventory.endpoint(ip, port, t)
        service = self.inventory.services.get(service_ip) if service_ip else None
        cloud = self.cloud.owner(ip) if (remote is None and self.cloud) else None
        if remote is None and cloud is None:
            remote = self._observed(ip)
        values = _end_values(remote, cloud, self.region)
        if service is not None and not values["service"]:
            values["service"] = service.name
            values["namespace"] = values["namespace"] or service.namespace
        return _End(remote, values, cloud, ip)

    def _categories(self, local_ends: list[_End], remote_ends: list[_End], local_index: np.ndarray,
                    remote_index: np.ndarray, remotes: dict) -> pa.Array:
        if not len(local_index):
            return pa.array([], pa.string())
        pairs, inverse = np.unique(local_index * len(remote_ends) + remote_index, return_inverse=True)
        names = [self.category(local_ends[p // len(remote_ends)].endpoint, remote_ends[p % len(remote_ends)].endpoint,
                               remote_ends[p % len(remote_ends)].cloud, remote_ends[p % len(remote_ends)].ip)
                 for p in pairs.tolist()]
        return pa.array(names, pa.string()).take(pa.array(inverse.reshape(-1)))

    def category(self, local: Endpoint | None, remote: Endpoint | None, cloud: CloudOwner | None,
                 remote_ip: str) -> str:
        if cloud is not None:
            if cloud.service == "S3":
                return "AMAZON_S3"
            if cloud.service == "DYNAMODB":
                return "AMAZON_DYNAMODB"
            if cloud.region and self.region and cloud.region not in (self.region, "GLOBAL"):
                return "INTER_REGION"
            if cloud.service not in ("AMAZON", "EC2"):
                return f"AMAZON_{cloud.service}"
        if remote is not None and local is not None and remote.zone and local.zone:
            return "INTRA_AZ" if remote.zone == local.zone else "INTER_AZ"
        if self.vpc_cidrs:
            address = ipaddress.ip_address(remote_ip)
            if any(address in net for net in self.vpc_cidrs):
                return "INTER_VPC"
        return "UNCLASSIFIED"

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

    def _observed(self, address: str) -> Endpoint | None:
        """An address no inventory knows but an agent reports from: that agent's host."""
        node = self.observed.node_of(address)
        if node is None:
            return None
        return self.inventory.nodes.get(node) or Endpoint("node", node, node=node)

@dataclass(slots=True)
class _End:
    """One distinct flow end of a report: who it is and its enrichment columns' values."""

    endpoint: Endpoint | None
    values: dict[str, str | None]
    cloud: CloudOwner | None = None
    ip: str = ""


def _end_values(endpoint: Endpoint | None, cloud: CloudOwner | None, region: str) -> dict[str, str | None]:
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
