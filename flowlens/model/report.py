"""The report an agent sends to the collector every interval: schema version 1.

JSON, optionally gzip-compressed (``Content-Encoding: gzip``), POSTed to
``/api/v1/reports`` with ``Authorization: Bearer <token>``. ``report_id`` makes a report
idempotent: the collector stores a report once however often it is retried. Counters are the
interval's deltas. The model validates strictly: a malformed report is refused whole.
See docs/report-schema.md.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SCHEMA_VERSION = 1
Count = Annotated[int, Field(ge=0, le=2**62)]


def _check_ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address") from None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class AgentInfo(_Strict):
    node: Annotated[str, Field(min_length=1, max_length=253)]
    instance_id: Annotated[str, Field(max_length=64)] = ""
    version: Annotated[str, Field(max_length=32)] = ""


class Interval(_Strict):
    start: Annotated[float, Field(gt=1e9, lt=1e11)]  # epoch seconds
    end: Annotated[float, Field(gt=1e9, lt=1e11)]

    @model_validator(mode="after")
    def _ordered(self) -> Interval:
        if self.end < self.start:
            raise ValueError("interval.end is before interval.start")
        return self


class FlowRecord(_Strict):
    netns: Annotated[str, Field(max_length=255)]
    protocol: Literal["tcp"] = "tcp"
    role: Literal["client", "server"]
    local_ip: str
    remote_ip: str
    server_port: Annotated[int, Field(ge=0, le=65535)]
    service_ip: str | None = None
    sent_bytes: Count = 0
    received_bytes: Count = 0
    sent_segments: Count = 0
    received_segments: Count = 0
    retransmitted_segments: Count = 0
    retransmitted_bytes: Count = 0
    rto: Count = 0
    received_out_of_order: Count = 0
    connection_attempts: Count = 0
    connections_established: Count = 0
    connections_failed: Count = 0
    active_sockets: Count = 0
    rtt_sum_us: Count = 0
    rtt_samples: Count = 0

    _ips = field_validator("local_ip", "remote_ip")(_check_ip)

    @field_validator("service_ip")
    @classmethod
    def _service_ip(cls, value: str | None) -> str | None:
        return None if value is None else _check_ip(value)


class InterfaceDelta(_Strict):
    iface: Annotated[str, Field(min_length=1, max_length=15)]
    rx_bytes: Count = 0
    tx_bytes: Count = 0
    bw_in_allowance_exceeded: Count = 0
    bw_out_allowance_exceeded: Count = 0
    pps_allowance_exceeded: Count = 0
    conntrack_allowance_exceeded: Count = 0
    linklocal_allowance_exceeded: Count = 0


class NodeDelta(_Strict):
    interfaces: Annotated[list[InterfaceDelta], Field(max_length=1024)] = []
    tcp_retransmitted_segments: Count = 0


class Report(_Strict):
    schema_version: Literal[1]
    report_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{8,64}$")]
    agent: AgentInfo
    interval: Interval
    flows: Annotated[list[FlowRecord], Field(max_length=200_000)]
    node: NodeDelta = NodeDelta()
