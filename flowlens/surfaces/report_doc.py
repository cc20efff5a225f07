"""``docs/report-schema.md``, generated: the report's structure from its msgspec types
(:mod:`flowlens.model.report`), its counters from the vocabulary, its limits from the constants
the collector enforces. ``flowlens report-schema-doc`` prints it; a test fails when it is stale.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
import msgspec.inspect as mi

from flowlens.collector.ingest import MAX_BODY_BYTES, MAX_REPORT_BYTES
from flowlens.model.report import (
    MAX_FLOWS,
    MAX_INTERVAL_SECONDS,
    MIN_INTERVAL_SECONDS,
    RATE_BOUND,
    SCHEMA_VERSION,
    AgentInfo,
    FlowRecord,
    InterfaceDelta,
    Interval,
    NodeDelta,
    Report,
    decode_report,
    encode_report,
)
from flowlens.model.vocabulary import FLOW_COUNTERS, NODE_COUNTERS

# What the fields that are not counters mean (the counters' meanings are the vocabulary's).
MEANING = {
    "schema_version": f"Always {SCHEMA_VERSION}.",
    "report_id": "Identifies the report: the collector stores each id once (retries and replays are recognised).",
    "agent": "Who sends it.", "node": "The node's own counters (the first report of an interval).",
    "interval": "The interval the counters cover, epoch seconds.", "flows": "One row per flow and interval.",
    "instance_id": "The instance (EC2 id, or the node name).", "version": "The agent's version.",
    "start": "Start, epoch seconds.", "end": "End, epoch seconds.",
    "netns": "The network namespace the agent saw the flow in.",
    "role": "The local end's role: client (it connected) or server (it accepted).",
    "local_ip": "The local end's address, canonical.",
    "remote_ip": "The peer actually reached (for a ClusterIP, the backend found through conntrack).",
    "server_port": "The server's port.", "protocol": "Always tcp.",
    "service_ip": "The ClusterIP the client connected to, when it did.",
    "own": "flowlens's own traffic (reports, scrapes): never a workload's.",
    "AgentInfo.node": "The node's name.", "iface": "The interface's name.",
    "interfaces": "One row per uplink interface.",
}


def _type(kind: mi.Type) -> str:
    if isinstance(kind, mi.StrType):
        bounds = [f"≤ {kind.max_length} chars" if kind.max_length else "",
                  f"`{kind.pattern}`" if kind.pattern else ""]
        return "string" + "".join(f", {b}" for b in bounds if b)
    if isinstance(kind, mi.IntType):
        low, high = kind.ge if kind.ge is not None else "", kind.le if kind.le is not None else ""
        if high == 2**62:
            high = "2^62"
        return f"integer {low}–{high}" if low != "" or high != "" else "integer"
    if isinstance(kind, mi.FloatType):
        return "number"
    if isinstance(kind, mi.LiteralType):
        return " or ".join(json.dumps(v) for v in kind.values)
    if isinstance(kind, mi.BoolType):
        return "boolean"
    if isinstance(kind, mi.UnionType):
        return " or ".join("null" if isinstance(t, mi.NoneType) else _type(t) for t in kind.types)
    if isinstance(kind, mi.ListType):
        limit = f", at most {kind.max_length:,}" if kind.max_length else ""
        return f"list of {_type(kind.item_type)}{limit}"
    if isinstance(kind, mi.StructType):
        return f"`{kind.cls.__name__}`"
    return type(kind).__name__


def _meaning(struct: Any, name: str) -> str:
    return MEANING.get(f"{struct.__name__}.{name}", MEANING.get(name, ""))


def _fields(struct: Any, counters: set[str]) -> list[str]:
    lines = [f"### `{struct.__name__}`", "", "| field | type | required | meaning |", "|---|---|---|---|"]
    info = mi.type_info(struct)
    for field in info.fields:
        if field.name in counters:
            continue
        required = "yes"
        if not field.required:
            default = field.default_factory() if field.default is msgspec.NODEFAULT else field.default
            required = f"no ({json.dumps(msgspec.to_builtins(default))})"
        lines.append(f"| `{field.name}` | {_type(field.type)} | {required} | {_meaning(struct, field.name)} |")
    return [*lines, ""]


def _counters(counters: tuple[Any, ...], title: str) -> list[str]:
    lines = [f"### {title}", "", "Integers 0–2^62, 0 when absent; the interval's deltas (a gauge: its value at "
             "the interval's end).", "", "| field | unit | kind | from the kernel | meaning |",
             "|---|---|---|---|---|"]
    lines += [f"| `{c.name}` | {c.unit} | {c.kind} | {c.source} | {c.help} |" for c in counters]
    return [*lines, ""]


def example() -> Report:
    flow = FlowRecord(netns="cni-1234", role="client", local_ip="10.1.1.11", remote_ip="10.2.1.12",
                      server_port=8080, service_ip="10.96.0.10", sent_bytes=1234, received_bytes=567,
                      sent_segments=10, received_segments=9, connection_attempts=1, connections_established=1,
                      rtt_sum_us=250, rtt_samples=1)
    return Report(schema_version=SCHEMA_VERSION, report_id="3f1c0a9e5b8d4c2a9e7f6b5a4c3d2e1f",
                  agent=AgentInfo(node="ip-10-1-0-11.ec2.internal", instance_id="i-0123456789abcdef0",
                                  version="0.1.0"),
                  interval=Interval(start=1763880000.0, end=1763880005.0), flows=[flow],
                  node=NodeDelta(interfaces=[InterfaceDelta(iface="eth0", rx_bytes=100, tx_bytes=200)]))


def report_schema_markdown() -> str:
    sample = decode_report(encode_report(example()))  # the example is a valid report, always
    body = json.dumps(msgspec.to_builtins(sample), indent=1)
    flow_names = {c.name for c in FLOW_COUNTERS}
    node_names = {c.name for c in NODE_COUNTERS}
    lines = [
        f"# Agent → collector report, schema version {SCHEMA_VERSION}", "",
        "Generated from the report's types and the counters' vocabulary (`flowlens report-schema-doc > "
        "docs/report-schema.md`). Each agent sends one report per collection interval to the collector:", "",
        "```", "POST /api/v1/reports", "Content-Type: application/json",
        "Content-Encoding: gzip            (optional; identity otherwise)",
        "Authorization: Bearer <token>     (required when the collector has tokens)", "```", "",
        "```json", body, "```", "",
        "## Rules", "",
        "- **Idempotency.** `report_id` identifies the report; the collector stores each id once. Agents "
        "retry and replay with the same id, so nothing is counted twice and nothing is lost while the "
        "collector is away (the agent spools to disk, bounded by `--spool-max-bytes`; reports dropped past "
        "the bound are counted and logged).",
        "- **Counters are the interval's deltas**; all are integers ≥ 0. `remote_ip` is the peer actually "
        "reached: for a connection to a ClusterIP, the backend pod found through conntrack, with the "
        "ClusterIP in `service_ip`.",
        "- **Validation is strict**: unknown fields, wrong types, negative counters, malformed or "
        f"non-canonical addresses make the whole report refused. Limits: at most {MAX_FLOWS:,} flows (an "
        "agent splits a bigger interval into several reports, the node's counters in the first); an interval "
        f"of {MIN_INTERVAL_SECONDS:g} s to {MAX_INTERVAL_SECONDS:g} s; no counter above "
        f"2^{RATE_BOUND.bit_length() - 1} per second of the interval (at least that much).",
        "- **Time**: the interval must end at most 300 s after the collector's clock and start within its "
        "raw retention (7 days); both are settings of the collector.", "",
        "Answers: `200 {\"report_id\", \"flows\", \"duplicate\"}`; `401` no or malformed token; `403` unknown "
        "token; `400` bad or truncated gzip, or bytes after it; `408` the body stalled; `413` body over "
        f"{MAX_BODY_BYTES >> 20} MiB, or over {MAX_REPORT_BYTES >> 20} MiB decompressed; `415` unsupported "
        "encoding; `422` invalid report (the message names the first bad field), or a time outside the "
        "window. A refused report is not stored at all; agents keep refused reports and send them again.", "",
        "## Fields", "",
        *_fields(Report, set()), *_fields(AgentInfo, set()), *_fields(Interval, set()),
        *_fields(FlowRecord, flow_names), *_counters(FLOW_COUNTERS, "`FlowRecord` counters"),
        *_fields(NodeDelta, node_names), *_fields(InterfaceDelta, node_names),
        *_counters(NODE_COUNTERS, "Node counters (`InterfaceDelta`; `tcp_retransmitted_segments` in `NodeDelta`)"),
    ]
    return "\n".join(lines)
