"""Sending each interval's report to the collector, and spooling when it is away.

Reports are built on the collection loop and handed to a sender thread, so a slow or absent
collector never delays a cycle. A report that cannot be delivered is written to the spool
folder (gzip JSON, named so that ``sorted`` is sending order) and replayed, oldest first,
before anything newer once the collector answers again. The spool is bounded: past
``spool_max_bytes`` the oldest reports are dropped, counted and logged. A report's id travels
with it, so a replay of a report the collector already stored (its answer was lost) is not
counted twice.
"""

from __future__ import annotations

import gzip
import itertools
import logging
import queue
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from flowlens import __version__
from flowlens.agent.node import NamespaceCounters, allowance_readings
from flowlens.agent.sampler import CycleResult
from flowlens.kernel.ethtool import ENA_ALLOWANCE_STATS
from flowlens.model.report import SCHEMA_VERSION

log = logging.getLogger(__name__)

INGEST_PATH = "/api/v1/reports"


class NodeDeltas:
    """Turns the node's cumulative counters (uplinks, allowances, TCP MIB) into per-interval deltas."""

    def __init__(self, allowance_qdiscs: dict[str, tuple[str, str]]) -> None:
        self.allowance_qdiscs = allowance_qdiscs
        self._last: dict[tuple[str, str], int] = {}

    def _delta(self, key: tuple[str, str], value: int) -> int:
        before = self._last.get(key)
        self._last[key] = value
        return 0 if before is None or value < before else value - before

    def __call__(self, readings: list[NamespaceCounters]) -> dict[str, Any]:
        host = next((r for r in readings if r.is_host), None)
        if host is None:
            return {"interfaces": [], "tcp_retransmitted_segments": 0}
        allowance: dict[str, dict[str, int]] = {}
        for nic, _driver, stat, value in allowance_readings(host, self.allowance_qdiscs):
            allowance.setdefault(nic, {})[stat] = value
        interfaces = []
        for link in host.links:
            if link.name == "lo" or (link.kind and link.name not in allowance):
                continue  # uplinks only: pod veths are accounted by their flows
            entry = {"iface": link.name, "rx_bytes": self._delta((link.name, "rx"), link.rx_bytes),
                     "tx_bytes": self._delta((link.name, "tx"), link.tx_bytes)}
            for stat in ENA_ALLOWANCE_STATS:
                if stat in allowance.get(link.name, {}):
                    entry[stat] = self._delta((link.name, stat), allowance[link.name][stat])
            interfaces.append(entry)
        retrans = host.mib.retrans_segs if host.mib is not None else 0
        return {"interfaces": interfaces, "tcp_retransmitted_segments": self._delta(("tcp", "retrans"), retrans)}


def on_the_network(key: Any) -> bool:
    """Loopback connections never leave their namespace (a pod's containers talking to each
    other) and unconnected sockets have no peer: neither belongs in the cluster's flows."""
    return not (key.remote_ip.startswith("127.") or key.remote_ip in ("::1", "::", "0.0.0.0"))


def build_report(result: CycleResult, node: str, instance_id: str, node_delta: dict[str, Any]) -> dict[str, Any]:
    flows = []
    for key, c in result.flows.items():
        if not on_the_network(key):
            continue
        flows.append({
            "netns": key.netns, "protocol": key.protocol, "role": key.role, "local_ip": key.local_ip,
            "remote_ip": key.remote_ip, "server_port": key.server_port, "service_ip": result.service_ips.get(key),
            "sent_bytes": c.sent_bytes, "received_bytes": c.received_bytes, "sent_segments": c.segs_out,
            "received_segments": c.segs_in, "retransmitted_segments": c.retransmitted_segments,
            "retransmitted_bytes": c.retransmitted_bytes, "rto": c.rto,
            "received_out_of_order": c.received_out_of_order, "connection_attempts": c.connections_attempted,
            "connections_established": c.connections_established, "connections_failed": c.connections_failed,
            "active_sockets": result.active_sockets.get(key, 0), "rtt_sum_us": c.rtt_sum_us,
            "rtt_samples": c.rtt_samples,
        })
    return {"schema_version": SCHEMA_VERSION, "report_id": uuid.uuid4().hex,
            "agent": {"node": node, "instance_id": instance_id, "version": __version__},
            "interval": {"start": result.start, "end": result.end}, "flows": flows, "node": node_delta}


class Spool:
    """A bounded folder of undelivered reports, oldest first."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.dropped = 0
        directory.mkdir(parents=True, exist_ok=True)
        existing = [int(p.name.split("-", 1)[0]) for p in self.directory.glob("*.json.gz")]
        self._seq = itertools.count(max(existing, default=0) + 1)

    def files(self) -> list[Path]:
        return sorted(self.directory.glob("*.json.gz"))

    def put(self, report_id: str, body: bytes) -> None:
        path = self.directory / f"{next(self._seq):012d}-{report_id}.json.gz"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(body)
        tmp.replace(path)
        self._trim()

    def _trim(self) -> None:
        files = self.files()
        sizes = [p.stat().st_size for p in files]
        total = sum(sizes)
        for path, size in zip(files, sizes, strict=True):
            if total <= self.max_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size
            self.dropped += 1
            log.warning("spool over %d bytes: dropped the oldest undelivered report %s", self.max_bytes, path.name)


class Reporter:
    """The sender thread: deliver reports in order, spool what cannot be delivered."""

    def __init__(self, url: str, token: str, spool: Spool, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/") + INGEST_PATH
        self.headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.spool = spool
        self.client = httpx.Client(timeout=timeout)
        self.queue: queue.Queue[tuple[str, bytes] | None] = queue.Queue(maxsize=64)
        self.sent = 0
        self.rejected = 0
        self.failures = 0
        self._current: tuple[str, bytes] | None = None
        self._thread = threading.Thread(target=self._run, name="flowlens-reporter", daemon=True)
        self._thread.start()

    def submit(self, report: dict[str, Any]) -> None:
        import json

        body = gzip.compress(json.dumps(report, separators=(",", ":")).encode(), compresslevel=5)
        try:
            self.queue.put_nowait((report["report_id"], body))
        except queue.Full:  # the sender is stuck: keep the report on disk instead
            self.spool.put(report["report_id"], body)

    @property
    def spooled(self) -> int:
        return len(self.spool.files())

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                self.queue.task_done()
                return
            self._current = item
            report_id, body = item
            try:
                if not self._replay() or not self._post(report_id, body):
                    self.spool.put(report_id, body)
            finally:
                self._current = None
                self.queue.task_done()

    def _replay(self) -> bool:
        """Send spooled reports in order; False (and stop) at the first that cannot go."""
        for path in self.spool.files():
            report_id = path.name.split("-", 1)[1].removesuffix(".json.gz")
            if not self._post(report_id, path.read_bytes()):
                return False
            path.unlink(missing_ok=True)
        return True

    def _post(self, report_id: str, body: bytes) -> bool:
        try:
            response = self.client.post(self.url, content=body, headers=self.headers)
        except httpx.HTTPError as err:
            self.failures += 1
            if self.failures == 1 or self.failures % 60 == 0:
                log.warning("collector at %s unreachable (%s): spooling reports", self.url, err)
            return False
        if response.status_code >= 500:
            self.failures += 1
            return False
        if response.status_code >= 400:  # the collector refuses this report: retrying cannot help
            self.rejected += 1
            log.error("collector refused report %s: %s %s", report_id, response.status_code, response.text[:200])
            return True
        if self.failures:
            log.info("collector reachable again")
        self.failures = 0
        self.sent += 1
        return True

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until everything queued has been handled (delivered or spooled)."""
        deadline = time.monotonic() + timeout
        while self.queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.02)

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued within ``timeout``; spool whatever is left (the report being
        sent too: should it arrive after all, its id makes the replay a duplicate)."""
        self.queue.put(None)
        self._thread.join(timeout=timeout)
        if self._thread.is_alive():
            left = [self._current] if self._current is not None else []
            while True:
                try:
                    item = self.queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    left.append(item)
            for report_id, body in left:
                self.spool.put(report_id, body)
            log.warning("collector slow at shutdown: %d reports left in the spool for the next start", len(left))
        self.client.close()
