"""The stored records: one enriched flow interval, one node-counter interval.

These column tables are the contract between the collector's ingest/enrichment (which builds
rows), the store (which keeps them in DuckDB, and later in a distributed engine) and the
analysis queries. Times are UTC timestamps; counters are the interval's deltas.
"""

from __future__ import annotations

import pyarrow as pa

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

FLOW_COUNTER_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("sent_bytes", pa.int64()),
    ("received_bytes", pa.int64()),
    ("sent_segments", pa.int64()),
    ("received_segments", pa.int64()),
    ("retransmitted_segments", pa.int64()),
    ("retransmitted_bytes", pa.int64()),
    ("rto", pa.int64()),
    ("received_out_of_order", pa.int64()),
    ("connection_attempts", pa.int64()),
    ("connections_established", pa.int64()),
    ("connections_failed", pa.int64()),
    ("active_sockets", pa.int32()),
    ("rtt_sum_us", pa.int64()),
    ("rtt_samples", pa.int64()),
)

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

NODE_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("time_start", pa.timestamp("ms", tz="UTC")),
    ("time_end", pa.timestamp("ms", tz="UTC")),
    ("node", pa.string()),
    ("zone", pa.string()),
    ("instance_type", pa.string()),
    ("iface", pa.string()),
    ("bw_in_allowance_exceeded", pa.int64()),
    ("bw_out_allowance_exceeded", pa.int64()),
    ("pps_allowance_exceeded", pa.int64()),
    ("conntrack_allowance_exceeded", pa.int64()),
    ("linklocal_allowance_exceeded", pa.int64()),
    ("rx_bytes", pa.int64()),
    ("tx_bytes", pa.int64()),
    ("tcp_retransmitted_segments", pa.int64()),
)
NODE_SCHEMA = pa.schema([pa.field(name, kind) for name, kind in NODE_COLUMNS])

CATEGORIES = ("INTRA_AZ", "INTER_AZ", "INTER_VPC", "INTER_REGION", "AMAZON_S3", "AMAZON_DYNAMODB", "UNCLASSIFIED")
