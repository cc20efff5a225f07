"""The agent's settings, each declared once (see :mod:`flowlens.model.settings`): flag
``--max-flow-series``, environment ``FLOWLENS_AGENT_MAX_FLOW_SERIES`` (the older
``FLOWLENS_MAX_FLOW_SERIES`` still works), YAML key ``max-flow-series``.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from flowlens.model.settings import within
from flowlens.web.listening import ListeningSettings

MIN_INTERVAL, MAX_INTERVAL = 0.1, 3600.0


class AgentConfig(ListeningSettings):
    model_config = SettingsConfigDict(env_prefix="FLOWLENS_AGENT_", extra="forbid", validate_default=True)
    legacy_env: ClassVar[Mapping[str, str]] = {name: f"FLOWLENS_{name.upper()}" for name in (
        "address", "port", "interval", "max_flow_series", "idle_grace", "all_namespaces", "namespaces", "node",
        "instance_id", "allowance_qdiscs", "collector", "token_file", "collector_ca", "tls_cert", "tls_key",
        "spool_dir", "spool_max_bytes", "service_cidrs", "watchdog")}

    address: str = Field("0.0.0.0", description="Address /metrics listens on (0.0.0.0: every interface).")
    port: int = Field(9101, description="Port of the /metrics endpoint.", json_schema_extra={"short": "-p"})
    interval: float = Field(5.0, description="Seconds between collection cycles (and reports).",
                            json_schema_extra={"short": "-i"})
    max_flow_series: int = Field(500, description="Flows with series of their own; the rest of each namespace is "
                                 "folded into remote_ip=\"other\".")
    idle_grace: float = Field(300.0, description="Seconds a flow may stay idle before its series is removed.")
    all_namespaces: bool = Field(True, description="Watch every network namespace, or only the agent's own.",
                                 json_schema_extra={"off_flag": "--host-only"})
    namespaces: str = Field("", description="Comma-separated glob patterns of namespace labels to watch besides "
                            "the agent's own, e.g. 'cni-*' (empty: every namespace).")
    node: str = Field("", description="Node name for the reference-compatible metrics (empty: the hostname).")
    instance_id: str = Field("", description="instance_id label (empty: the node name).")
    allowance_qdiscs: str = Field("", description="Report a shaper's drops as ENA allowance statistics where the "
                                  "node has no ENA, e.g. bw_in_allowance_exceeded=ifb0:eth0,"
                                  "bw_out_allowance_exceeded=eth0.")
    collector: str = Field("", description="Collector URL to send each interval's report to, e.g. "
                           "http://collector:9102 (empty: no reports).")
    token: str = Field("", description="Bearer token for the collector (on the command line it is visible to "
                       "local users in /proc: prefer token-file or the environment).")
    token_file: str = Field("", description="File holding the collector's bearer token, re-read when it changes.")
    collector_ca: str = Field("", description="CA bundle to check an https collector's certificate with.")
    metrics_token_file: str = Field("", description="File of tokens (one a line) that /metrics and /flows require "
                                    "as 'Authorization: Bearer'; also env FLOWLENS_AGENT_METRICS_TOKENS. Empty: "
                                    "open (keep the port behind a NetworkPolicy).")
    tls_cert: str = Field("", description="Serve /metrics over HTTPS with this certificate (PEM).")
    tls_key: str = Field("", description="Private key of tls-cert (PEM).")
    max_connections: int = Field(64, description="Open connections to /metrics served at once.")
    header_timeout: float = Field(10.0, description="Seconds a connection may take to send its request.")
    spool_dir: str = Field("/var/lib/flowlens/spool", description="Where undelivered reports wait.")
    spool_max_bytes: int = Field(64 << 20, description="Bound of the spool; the oldest reports are dropped (and "
                                 "counted) past it.")
    service_cidrs: str = Field("10.96.0.0/12,172.20.0.0/16", description="ClusterIP ranges whose connections are "
                               "resolved to the backend reached, through conntrack.")
    watchdog: float = Field(0.0, description="Seconds a collection cycle may take before /healthz reports the "
                            "agent stuck (0: max(10, 2 × interval)).")
    proc: str = Field("/proc", description="Where the host's /proc is mounted.")
    run_netns: str = Field("/run/netns", description="Where named network namespaces are bound.")

    _interval = field_validator("interval")(within(MIN_INTERVAL, MAX_INTERVAL, " seconds"))
    _series = field_validator("max_flow_series")(within(0, 100_000))

    @field_validator("spool_max_bytes")
    @classmethod
    def _spool(cls, value: int) -> int:
        if value < 1 << 20:
            raise ValueError("must be at least 1 MiB (1048576)")
        return value

    @field_validator("watchdog")
    @classmethod
    def _watchdog(cls, value: float) -> float:
        if value < 0:
            raise ValueError("must be 0 (automatic) or a positive number of seconds")
        return value

    @field_validator("collector")
    @classmethod
    def _collector(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be a URL: http://HOST:PORT or https://HOST:PORT")
        return value

    @field_validator("service_cidrs")
    @classmethod
    def _cidrs(cls, value: str) -> str:
        for cidr in filter(None, (c.strip() for c in value.split(","))):
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"{cidr!r} is not a CIDR range: give ranges like 10.96.0.0/12, "
                                 "comma-separated") from None
        return value

    @model_validator(mode="after")
    def _together(self) -> AgentConfig:
        if self.idle_grace < self.interval:
            raise ValueError("idle-grace must be at least one interval")
        self.node = self.node or socket.gethostname()
        self.instance_id = self.instance_id or self.node
        return self


def load(path: Path | None, flags: dict[str, Any]) -> AgentConfig:
    """Defaults, then the YAML file, then the environment, then the flags the user gave."""
    return AgentConfig.load(path, flags)
