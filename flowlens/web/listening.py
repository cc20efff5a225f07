"""Settings every listening server of flowlens has (the agent's /metrics, the collector's API)
and their checks, declared once: an address of this machine, a port in range, a certificate
and its key together, bounded connections.
"""

from __future__ import annotations

from typing import Self

from pydantic import field_validator, model_validator

from flowlens.model.settings import Settings, within
from flowlens.web.server import check_address


class ListeningSettings(Settings):
    """Subclasses declare ``address``, ``port``, ``tls_cert``, ``tls_key``, ``max_connections``
    and ``header_timeout`` (with their own defaults and help); the checks are these."""

    _port = field_validator("port", check_fields=False)(within(1, 65535))
    _connections = field_validator("max_connections", check_fields=False)(within(1, 100_000))

    @field_validator("address", check_fields=False)
    @classmethod
    def _address(cls, value: str) -> str:
        check_address(value)
        return value

    @field_validator("header_timeout", check_fields=False)
    @classmethod
    def _header_timeout(cls, value: float) -> float:
        if value < 0.1:
            raise ValueError("must be at least 0.1 seconds")
        return value

    @model_validator(mode="after")
    def _tls_pair(self) -> Self:
        if bool(getattr(self, "tls_cert", "")) != bool(getattr(self, "tls_key", "")):
            raise ValueError("tls-cert and tls-key go together: give both, or neither")
        return self
