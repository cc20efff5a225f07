"""Resolving connections to Service IPs to the backend actually reached.

kube-proxy DNATs a ClusterIP connection in the node's namespace; the client socket (often in a
pod's namespace) only knows the ClusterIP. The node's conntrack table knows both: a lookup by
the client's original tuple gives the reply source, the backend. Only destinations inside the
configured Service ranges are looked up, so ordinary connections cost nothing.
"""

from __future__ import annotations

import ipaddress
import logging
import socket

from flowlens.kernel.conntrack import Conntrack
from flowlens.model.errors import FlowlensError

log = logging.getLogger(__name__)


class ServiceResolver:
    """Callable ``(client ip, client port, service ip, service port) → (backend ip, port) | None``."""

    def __init__(self, cidrs: str, conntrack: Conntrack | None = None) -> None:
        self.networks = [ipaddress.ip_network(c.strip(), strict=False) for c in cidrs.split(",") if c.strip()]
        self._in_range: dict[str, bool] = {}
        self.conntrack = conntrack
        self.lookups = 0
        self.resolved = 0
        if self.conntrack is None and self.networks:
            try:
                self.conntrack = Conntrack()
            except (OSError, FlowlensError) as err:
                log.warning("conntrack unavailable (%s): Service IPs will not be resolved to backends", err)

    def is_service(self, ip: str) -> bool:
        known = self._in_range.get(ip)
        if known is None:
            address = ipaddress.ip_address(ip)
            known = self._in_range[ip] = any(address in net for net in self.networks)
            if len(self._in_range) > 100_000:
                self._in_range.clear()
        return known

    def __call__(self, src: str, sport: int, dst: str, dport: int) -> tuple[str, int] | None:
        if self.conntrack is None or not self.is_service(dst):
            return None
        self.lookups += 1
        try:
            target = self.conntrack.lookup(socket.IPPROTO_TCP, src, sport, dst, dport)
        except (OSError, FlowlensError, ValueError) as err:
            log.debug("conntrack lookup failed: %s", err)
            return None
        if target is None:
            log.debug("no NAT entry for %s:%d -> %s:%d", src, sport, dst, dport)
            return None
        self.resolved += 1
        return target.ip, target.port

    def close(self) -> None:
        if self.conntrack is not None:
            self.conntrack.close()
