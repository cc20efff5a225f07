"""The stored records: one enriched flow interval, one node-counter interval.

These column tables are the contract between the collector's ingest/enrichment (which builds
rows), the store (which keeps them in DuckDB, and later in a distributed engine) and the
analysis queries. Times are UTC timestamps; counters are the interval's deltas.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import pyarrow as pa

from flowlens.model.vocabulary import FLOW_COUNTERS, NODE_COUNTER_NAMES

# Identity of the flow as the agent saw it.
FLOW_KEY_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("time_start", pa.timestamp("ms", tz="UTC")),
    ("time_end", pa.timestamp("ms", tz="UTC")),
    ("node", pa.string()),            # the reporting agent's node
    ("netns", pa.string()),
    ("protocol", pa.string()),
    ("role", pa.string()),            # client | server: the local end's role
    ("local_ip", pa.string()),
    ("remote_ip", pa.string()),       # the peer actually reached (a Service's backend, after DNAT)
    ("server_port", pa.int32()),
    ("service_ip", pa.string()),      # the ClusterIP the client dialled, when the flow was DNAT'd
)

FLOW_COUNTER_COLUMNS: tuple[tuple[str, pa.DataType], ...] = tuple(
    (c.name, pa.int32() if c.kind == "gauge" else pa.int64()) for c in FLOW_COUNTERS)

# What enrichment adds for each end: Kubernetes identity, placement, and for addresses outside
# the cluster the cloud service (e.g. S3) and region from the IP-ranges file.
_END = ("pod", "namespace", "workload", "workload_kind", "service", "node", "zone", "instance_type",
        "cloud_service", "region")
ENRICHMENT_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    *((f"local_{name}", pa.string()) for name in _END),
    *((f"remote_{name}", pa.string()) for name in _END),
    ("category", pa.string()),        # INTRA_AZ, INTER_AZ, INTER_VPC, INTER_REGION, AMAZON_S3, ... UNCLASSIFIED
)

FLOW_COLUMNS = FLOW_KEY_COLUMNS + FLOW_COUNTER_COLUMNS + ENRICHMENT_COLUMNS
FLOW_SCHEMA = pa.schema([pa.field(name, kind) for name, kind in FLOW_COLUMNS])

# What identifies a stored flow: every column but its times and counters. Rows of one flow
# (one reporting end, one peer, one enrichment) share a ``flow_id``, a 64-bit hash of these.
FLOW_KEY_NAMES = tuple(name for name, _ in FLOW_COLUMNS
                       if name not in ("time_start", "time_end") and name not in dict(FLOW_COUNTER_COLUMNS))
# What enrichment hands the store: the stored columns and the flow id.
ENRICHED_FLOW_SCHEMA = FLOW_SCHEMA.append(pa.field("flow_id", pa.uint64()))


def flow_id(values: Iterable[object]) -> int:
    """The flow id of one row's FLOW_KEY_NAMES values, the same in every process and engine."""
    text = "\x1f".join("\x00" if value is None else str(value) for value in values)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def flow_ids(table: pa.Table) -> pa.Array:
    """The flow id of each row of a table holding FLOW_KEY_NAMES (at about a microsecond a row:
    enrichment keeps them per flow rather than computing them for every interval)."""
    columns = [table[name].to_pylist() for name in FLOW_KEY_NAMES]
    return pa.array([flow_id(row) for row in zip(*columns, strict=True)], pa.uint64())

NODE_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("time_start", pa.timestamp("ms", tz="UTC")),
    ("time_end", pa.timestamp("ms", tz="UTC")),
    ("node", pa.string()),
    ("zone", pa.string()),
    ("instance_type", pa.string()),
    ("iface", pa.string()),
    *((name, pa.int64()) for name in NODE_COUNTER_NAMES),
)
NODE_SCHEMA = pa.schema([pa.field(name, kind) for name, kind in NODE_COLUMNS])

