"""The collector's settings, each declared once (see :mod:`flowlens.model.settings`): flag
``--inventory-file``, environment ``FLOWLENS_COLLECTOR_INVENTORY_FILE`` (the older
``FLOWLENS_INVENTORY_FILE`` still works), YAML key ``inventory-file``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, ClassVar

from pydantic import Field, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from flowlens.collector.enrich.enricher import parse_cidrs
from flowlens.web.listening import ListeningSettings

Texts = Annotated[tuple[str, ...], NoDecode]  # repeatable flag; comma-separated in the environment


class CollectorConfig(ListeningSettings):
    model_config = SettingsConfigDict(env_prefix="FLOWLENS_COLLECTOR_", extra="forbid", validate_default=True)
    legacy_env: ClassVar[Mapping[str, str]] = {
        "store": "FLOWLENS_STORE", "inventory_file": "FLOWLENS_INVENTORY_FILE", "ip_ranges": "FLOWLENS_IP_RANGES",
        "region": "FLOWLENS_REGION", "token_files": "FLOWLENS_COLLECTOR_TOKEN_FILE",
        "read_token_files": "FLOWLENS_COLLECTOR_READ_TOKEN_FILE"}

    address: str = Field("127.0.0.1", description="Address to listen on (0.0.0.0: every interface).")
    port: int = Field(9102, description="Port of the API (and the console).")
    store: str = Field("flowlens.duckdb", description="DuckDB file of the flow store.")
    tokens: Texts = Field((), description="A token agents present to send reports and events (visible to local "
                          "users in /proc on the command line: prefer token-file or the environment).",
                          json_schema_extra={"flag": "--token"})
    token_files: Texts = Field((), description="File of tokens agents must present to send reports and events, "
                               "one a line (repeatable); re-read when it changes. No tokens at all: open.",
                               json_schema_extra={"flag": "--token-file"})
    read_tokens: Texts = Field((), description="Readers' tokens (CLI, console, Prometheus), comma-separated.",
                               json_schema_extra={"cli": False})
    read_token_files: Texts = Field((), description="File of tokens readers present for everything but /healthz "
                                    "(repeatable). None: the agents' tokens read too.",
                                    json_schema_extra={"flag": "--read-token-file"})
    max_report_age: float = Field(0.0, description="Refuse reports older than this many seconds (422, the agent "
                                  "keeps them); 0: the raw retention, 7 days.")
    max_clock_skew: float = Field(300.0, description="Refuse reports ending more than this many seconds ahead of "
                                  "the collector's clock (422).")
    inventory_file: str = Field("", description="Inventory in `kubectl get -o json` shape, reloaded when it changes.")
    kubernetes: bool = Field(False, description="Watch the Kubernetes API (in-cluster or kubeconfig).",
                             json_schema_extra={"off_flag": "--no-kubernetes"})
    kubeconfig: str = Field("", description="Kubeconfig for kubernetes (empty: in-cluster, then ~/.kube/config).")
    ip_ranges: str = Field("", description="Cloud IP ranges (AWS ip-ranges.json format): path or URL.")
    region: str = Field("", description="The cluster's region (for INTER_REGION).")
    vpc_cidrs: str = Field("", description="Peer VPC ranges, comma-separated (for INTER_VPC).")
    instance_bandwidth: str = Field("", description="YAML file of `instance-type: Gbps` lines that replace or add "
                                    "to the shipped table of AWS instance bandwidths.")
    tls_cert: str = Field("", description="Serve HTTPS with this certificate (PEM).")
    tls_key: str = Field("", description="Private key of tls-cert (PEM).")
    max_connections: int = Field(1024, description="Open connections served at once; more get 503.")
    header_timeout: float = Field(10.0, description="Seconds a connection may take to send a request's headers "
                                  "(or stay idle between requests).")
    body_timeout: float = Field(30.0, description="Seconds a request body may stall.")
    rollup_every: float = Field(30.0, description="Seconds between rollup passes.", json_schema_extra={"cli": False})
    retention_every: float = Field(3600.0, description="Seconds between retention passes.",
                                   json_schema_extra={"cli": False})

    @field_validator("max_report_age", "max_clock_skew")
    @classmethod
    def _not_negative(cls, value: float) -> float:
        if value < 0:
            raise ValueError("must be 0 or a positive number of seconds")
        return value

    @field_validator("body_timeout", "rollup_every", "retention_every")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value < 0.1:
            raise ValueError("must be at least 0.1 seconds")
        return value

    @field_validator("vpc_cidrs")
    @classmethod
    def _cidrs(cls, value: str) -> str:
        try:
            parse_cidrs(value)
        except ValueError as err:
            raise ValueError(f"{err}: give CIDR ranges like 10.20.0.0/16, comma-separated") from None
        return value
