"""Agent settings: defaults, then an optional YAML file, then environment, then flags.

Every setting has one name used everywhere: the YAML key, the flag (``--max-flow-series``)
and the environment variable (``FLOWLENS_MAX_FLOW_SERIES``).
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from flowlens.model.errors import ConfigError
from flowlens.web.server import check_address

MIN_INTERVAL, MAX_INTERVAL = 0.1, 3600.0


@dataclass(slots=True)
class AgentConfig:
    address: str = "0.0.0.0"
    port: int = 9101
    interval: float = 5.0
    max_flow_series: int = 500
    idle_grace: float = 300.0
    all_namespaces: bool = True
    namespaces: str = ""
    node: str = ""
    instance_id: str = ""
    allowance_qdiscs: str = ""
    collector: str = ""  # URL of the collector to send reports to; none when empty
    token: str = ""  # the collector's token on the command line (visible in /proc): prefer token_file
    token_file: str = ""  # file holding the token sent to the collector (re-read when it changes)
    collector_ca: str = ""  # CA bundle to check an https collector's certificate with
    metrics_token_file: str = ""  # tokens /metrics and /flows require (one a line); none: open
    tls_cert: str = ""  # serve /metrics over HTTPS with this certificate
    tls_key: str = ""
    max_connections: int = 64  # open connections to /metrics served at once
    header_timeout: float = 10.0  # seconds a connection may take to send its request
    spool_dir: str = "/var/lib/flowlens/spool"
    spool_max_bytes: int = 64 << 20
    service_cidrs: str = "10.96.0.0/12,172.20.0.0/16"
    watchdog: float = 0.0  # seconds a cycle may take before /healthz fails; 0: max(10, 2 × interval)
    proc: str = "/proc"
    run_netns: str = "/run/netns"

    def __post_init__(self) -> None:
        self.node = self.node or socket.gethostname()
        self.instance_id = self.instance_id or self.node

    def validate(self) -> AgentConfig:
        if not 0 < self.port < 65536:
            raise ConfigError(f"port {self.port} is out of range: use 1-65535")
        if not MIN_INTERVAL <= self.interval <= MAX_INTERVAL:
            raise ConfigError(f"interval must be between {MIN_INTERVAL:g} and {MAX_INTERVAL:g} seconds, not "
                              f"{self.interval:g}")
        if not 0 <= self.max_flow_series <= 100_000:
            raise ConfigError(f"max-flow-series must be between 0 and 100000, not {self.max_flow_series}")
        if self.spool_max_bytes < 1 << 20:
            raise ConfigError(f"spool-max-bytes must be at least 1 MiB (1048576), not {self.spool_max_bytes}")
        if not 1 <= self.max_connections <= 10_000:
            raise ConfigError(f"max-connections must be between 1 and 10000, not {self.max_connections}")
        if self.header_timeout <= 0:
            raise ConfigError(f"header-timeout must be a positive number of seconds, not {self.header_timeout:g}")
        check_address(self.address)
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("tls-cert and tls-key go together: give both, or neither")
        if self.collector and not self.collector.startswith(("http://", "https://")):
            raise ConfigError(f"collector {self.collector!r} must be a URL: http://HOST:PORT or https://HOST:PORT")
        for cidr in filter(None, (c.strip() for c in self.service_cidrs.split(","))):
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ConfigError(f"service-cidrs: {cidr!r} is not a CIDR range: give ranges like 10.96.0.0/12, "
                                  "comma-separated") from None
        if self.watchdog < 0:
            raise ConfigError(f"watchdog must be 0 (automatic) or a positive number of seconds, not {self.watchdog}")
        if self.idle_grace < self.interval:
            raise ConfigError("idle-grace must be at least one interval")
        return self


_FIELDS = {f.name: f for f in fields(AgentConfig)}


def env_name(name: str) -> str:
    return "FLOWLENS_" + name.upper()


def _coerce(name: str, value: Any, source: str) -> Any:
    kind = type(getattr(AgentConfig(node="x"), name))
    try:
        if kind is bool and isinstance(value, str):
            if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(value)
            return value.lower() in ("1", "true", "yes")
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: {name} must be a {kind.__name__}, got {value!r}") from None


def load(path: Path | None, overrides: dict[str, Any], environ: dict[str, str] | None = None) -> AgentConfig:
    """Merge the layers; ``overrides`` are the flags the user actually gave."""
    values: dict[str, Any] = {}
    if path is not None:
        values.update(_from_yaml(path))
    environ = os.environ if environ is None else environ
    for name in _FIELDS:
        if env_name(name) in environ:
            values[name] = _coerce(name, environ[env_name(name)], f"environment {env_name(name)}")
    values.update({k: v for k, v in overrides.items() if v is not None})
    return AgentConfig(**values).validate()


def _from_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must be a mapping of settings")
    out = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in _FIELDS:
            raise ConfigError(f"config file {path}: unknown setting {key!r} (known: "
                              + ", ".join(n.replace("_", "-") for n in _FIELDS) + ")")
        out[name] = _coerce(name, value, f"config file {path}")
    return out
