"""Building stored-record rows for store tests: ends, one row per observing agent, Arrow tables.

A test describes a connection once (client end, server end, counters as the reporting end
saw them) and gets the row that end's agent would store, enrichment included.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa

from flowlens.model.identity import END_FIELDS
from flowlens.model.records import FLOW_COUNTER_COLUMNS, FLOW_SCHEMA, NODE_SCHEMA

T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)  # a Monday, on the hour
STEP = timedelta(seconds=5)


def pod(name: str, namespace: str, workload: str | None, node: str, zone: str, ip: str,
        service: str | None = None) -> dict[str, Any]:
    kind = "Deployment" if workload else None
    return end(ip=ip, pod=name, namespace=namespace, workload=workload, workload_kind=kind, service=service,
                node=node, zone=zone, instance_type="g5.xlarge", region="us-east-1")


def host(node: str, zone: str, ip: str) -> dict[str, Any]:
    return end(ip=ip, node=node, zone=zone, instance_type="g5.xlarge", region="us-east-1")


def cloud(service: str, ip: str, region: str = "us-east-1") -> dict[str, Any]:
    return end(ip=ip, cloud_service=service, region=region)


def external(ip: str) -> dict[str, Any]:
    return end(ip=ip)


def end(**fields: Any) -> dict[str, Any]:
    return {name: fields.get(name) for name in END_FIELDS}


def flow(t: datetime, client: dict[str, Any], server: dict[str, Any], port: int, *, seen_by: str = "client",
         category: str = "INTRA_AZ", length: timedelta = STEP, **counters: int) -> dict[str, Any]:
    """The row the ``seen_by`` end's agent stores for one interval of client → server."""
    local, remote = (client, server) if seen_by == "client" else (server, client)
    row: dict[str, Any] = {"time_start": t, "time_end": t + length, "node": local["node"], "netns": "ns-" + local["ip"],
                           "protocol": "tcp", "role": seen_by, "local_ip": local["ip"], "remote_ip": remote["ip"],
                           "server_port": port, "service_ip": None, "category": category}
    row.update({name: 0 for name, _ in FLOW_COUNTER_COLUMNS})
    unknown = set(counters) - set(row)
    assert not unknown, f"not counters: {unknown}"
    row.update(counters)
    for name in END_FIELDS[1:]:
        row[f"local_{name}"] = local[name]
        row[f"remote_{name}"] = remote[name]
    return row


def both(t: datetime, client: dict[str, Any], server: dict[str, Any], port: int, *, to_server: int, to_client: int,
         client_counters: dict[str, int] | None = None, server_counters: dict[str, int] | None = None,
         category: str = "INTRA_AZ") -> list[dict[str, Any]]:
    """A connection between two monitored ends: each agent reports it, with mirrored bytes."""
    return [flow(t, client, server, port, seen_by="client", category=category, sent_bytes=to_server,
                 received_bytes=to_client, **(client_counters or {})),
            flow(t, client, server, port, seen_by="server", category=category, sent_bytes=to_client,
                 received_bytes=to_server, **(server_counters or {}))]


def flows_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=FLOW_SCHEMA)


def node_row(t: datetime, node: str, zone: str = "a", iface: str = "eth0", length: timedelta = STEP,
             **counters: int) -> dict[str, Any]:
    row: dict[str, Any] = {"time_start": t, "time_end": t + length, "node": node, "zone": zone,
                           "instance_type": "g5.xlarge", "iface": iface}
    for field in NODE_SCHEMA.names[6:]:
        row[field] = counters.pop(field, 0)
    assert not counters, f"not node counters: {counters}"
    return row


def nodes_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=NODE_SCHEMA)
