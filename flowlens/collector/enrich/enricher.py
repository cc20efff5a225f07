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

import pyarrow as pa

from flowlens.collector.enrich.cloud import CloudOwner, CloudRanges
from flowlens.collector.enrich.inventory import Endpoint, Inventory
from flowlens.collector.enrich.observed import ObservedAddresses
from flowlens.model.records import FLOW_COUNTER_COLUMNS, FLOW_SCHEMA, NODE_SCHEMA
from flowlens.model.report import Report

_COUNTERS = tuple(name for name, _ in FLOW_COUNTER_COLUMNS)
_END_FIELDS = ("pod", "namespace", "workload", "workload_kind", "service", "node", "zone", "instance_type",
               "cloud_service", "region")


@dataclass(slots=True)
class Enricher:
    inventory: Inventory
    cloud: CloudRanges | None = None
    region: str = ""
    vpc_cidrs: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = field(default_factory=list)
    observed: ObservedAddresses = field(default_factory=ObservedAddresses)

    def flows(self, report: Report) -> pa.Table:
        t = report.interval.start
        start = datetime.fromtimestamp(report.interval.start, UTC)
        end = datetime.fromtimestamp(report.interval.end, UTC)
        agent_node = self.inventory.nodes.get(report.agent.node, Endpoint("node", report.agent.node,
                                                                           node=report.agent.node))
        columns: dict[str, list] = {f.name: [] for f in FLOW_SCHEMA}
        self.observed.learn(report.agent.node, {flow.local_ip for flow in report.flows})
        with self.inventory.lock:
            for flow in report.flows:
                local_port = flow.server_port if flow.role == "server" else None
                remote_port = flow.server_port if flow.role == "client" else None
                local = self.inventory.endpoint(flow.local_ip, local_port, t) or agent_node
                remote = self.inventory.endpoint(flow.remote_ip, remote_port, t)
                service = self.inventory.services.get(flow.service_ip) if flow.service_ip else None
                cloud = self.cloud.owner(flow.remote_ip) if (remote is None and self.cloud) else None
                if remote is None and cloud is None:
                    remote = self._observed(flow.remote_ip)
                self._append_row(columns, report, flow, start, end, local, remote, service, cloud)
        return pa.Table.from_pydict(columns, schema=FLOW_SCHEMA)

    def _observed(self, address: str) -> Endpoint | None:
        """An address no inventory knows but an agent reports from: that agent's host."""
        node = self.observed.node_of(address)
        if node is None:
            return None
        return self.inventory.nodes.get(node) or Endpoint("node", node, node=node)

    def _append_row(self, columns: dict[str, list], report: Report, flow, start: datetime, end: datetime,
                    local: Endpoint, remote: Endpoint | None, service: Endpoint | None,
                    cloud: CloudOwner | None) -> None:
        values = {"time_start": start, "time_end": end, "node": report.agent.node, "netns": flow.netns,
                  "protocol": flow.protocol, "role": flow.role, "local_ip": flow.local_ip,
                  "remote_ip": flow.remote_ip, "server_port": flow.server_port, "service_ip": flow.service_ip}
        for name in _COUNTERS:
            values[name] = getattr(flow, name)
        values.update(_end("local", local, None, self.region))
        remote_values = _end("remote", remote, cloud, self.region)
        if service is not None and not remote_values["remote_service"]:
            remote_values["remote_service"] = service.name
            remote_values["remote_namespace"] = remote_values["remote_namespace"] or service.namespace
        values.update(remote_values)
        values["category"] = self.category(local, remote, cloud, flow.remote_ip)
        for name, column in columns.items():
            column.append(values.get(name))

    def category(self, local: Endpoint, remote: Endpoint | None, cloud: CloudOwner | None, remote_ip: str) -> str:
        if cloud is not None:
            if cloud.service == "S3":
                return "AMAZON_S3"
            if cloud.service == "DYNAMODB":
                return "AMAZON_DYNAMODB"
            if cloud.region and self.region and cloud.region not in (self.region, "GLOBAL"):
                return "INTER_REGION"
            if cloud.service not in ("AMAZON", "EC2"):
                return f"AMAZON_{cloud.service}"
        if remote is not None and remote.zone and local.zone:
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
        rows = []
        for iface in report.node.interfaces:
            rows.append({"time_start": start, "time_end": end, "node": report.agent.node,
                         "zone": node.zone if node else None, "instance_type": node.instance_type if node else None,
                         **iface.model_dump(),
                         "tcp_retransmitted_segments": report.node.tcp_retransmitted_segments})
        return pa.Table.from_pylist(rows, schema=NODE_SCHEMA)


def _end(side: str, endpoint: Endpoint | None, cloud: CloudOwner | None, region: str) -> dict[str, str | None]:
    values: dict[str, str | None] = {f"{side}_{name}": None for name in _END_FIELDS}
    if endpoint is not None:
        values.update({
            f"{side}_pod": endpoint.name if endpoint.kind == "pod" else None,
            f"{side}_namespace": endpoint.namespace or None,
            f"{side}_workload": endpoint.workload or None,
            f"{side}_workload_kind": endpoint.workload_kind or None,
            f"{side}_service": endpoint.service or None,
            f"{side}_node": endpoint.node or None,
            f"{side}_zone": endpoint.zone or None,
            f"{side}_instance_type": endpoint.instance_type or None,
            f"{side}_region": region or None,
        })
    elif cloud is not None:
        values[f"{side}_cloud_service"] = cloud.service
        values[f"{side}_region"] = cloud.region or None
    return values


def parse_cidrs(spec: str | Iterable[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    items = spec.split(",") if isinstance(spec, str) else spec
    return [ipaddress.ip_network(item.strip(), strict=False) for item in items if item.strip()]
