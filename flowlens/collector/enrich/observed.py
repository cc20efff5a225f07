"""Addresses that agents watch, learnt from the local ends of their own reports.

A connection between two watched ends is reported twice, once by each end's agent; the store
counts its bytes once, from the client's row, when the server's row says its remote end is
observed too (``remote_node`` set). With an inventory the collector knows every pod and node;
without one (`flowlens up` on a host, namespaces outside Kubernetes) it still knows which
addresses agents report from, and on which node. An address unseen for ``ttl`` seconds is
forgotten, since it may since have gone to something no agent watches.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

MAX_ADDRESSES = 1_000_000


class ObservedAddresses:
    """IP → the node whose agent last reported a flow from it."""

    def __init__(self, ttl: float = 3600.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._nodes: dict[str, tuple[str, float]] = {}

    def learn(self, node: str, addresses: Iterable[str]) -> None:
        now = self.clock()
        known = self._nodes
        for address in addresses:
            known[address] = (node, now)
        if len(known) > MAX_ADDRESSES:
            self.forget_stale()

    def node_of(self, address: str) -> str | None:
        entry = self._nodes.get(address)
        if entry is None or self.clock() - entry[1] > self.ttl:
            return None
        return entry[0]

    def forget_stale(self) -> None:
        horizon = self.clock() - self.ttl
        self._nodes = {ip: entry for ip, entry in self._nodes.items() if entry[1] >= horizon}
