"""Sending each interval's report to the collector, and spooling what it does not take.

Reports are built on the collection loop (typed, :class:`flowlens.model.report.Report`) and
handed to a sender thread, so a slow or absent collector never delays a cycle. A report that
is not delivered is written to the spool folder (gzip JSON, named so that ``sorted`` is
sending order, 0600 in a 0700 folder) and replayed, oldest first, before anything newer:

- the collector unreachable or failing (5xx): replay stops at the first failure;
- the collector refusing the token (401/403): the same, until the token is fixed (token
  files are re-read when they change), then everything spooled goes;
- the collector refusing one report (422: its clock is off, or a schema mismatch; 413): it
  stays in the spool, retried every few minutes, and the reports after it go on.

Each refusal reason is logged once and counted by status. The spool is bounded: past
``spool_max_bytes`` the oldest reports are dropped, counted and logged. A report's id travels
with it, so a replay of a report the collector already stored (its answer was lost) is not
counted twice.
"""

from __future__ import annotations

import contextlib
import gzip
import itertools
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any

import httpx
import msgspec

from flowlens import __version__
from flowlens.agent.sampling.node import NamespaceCounters, allowance_readings
from flowlens.agent.sampling.sampler import CycleResult
from flowlens.kernel.ethtool import ENA_ALLOWANCE_STATS
from flowlens.model.errors import ConfigError
from flowlens.model.flows import ADDITIVE_FIELDS, FlowKey
from flowlens.model.report import (
    MAX_FLOWS,
    SCHEMA_VERSION,
    AgentInfo,
    FlowRecord,
    InterfaceDelta,
    Interval,
    NodeDelta,
    Report,
    encode_report,
)
from flowlens.web.auth import TokenSet

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

    def __call__(self, readings: list[NamespaceCounters]) -> NodeDelta:
        host = next((r for r in readings if r.is_host), None)
        if host is None:
            return NodeDelta()
        allowance: dict[str, dict[str, int]] = {}
        for nic, _driver, stat, value in allowance_readings(host, self.allowance_qdiscs):
            allowance.setdefault(nic, {})[stat] = value
        interfaces = []
        for link in host.links:
            if link.name == "lo" or (link.kind and link.name not in allowance):
                continue  # uplinks only: pod veths are accounted by their flows
            entry: dict[str, Any] = {"iface": link.name, "rx_bytes": self._delta((link.name, "rx"), link.rx_bytes),
                                     "tx_bytes": self._delta((link.name, "tx"), link.tx_bytes)}
            for stat in ENA_ALLOWANCE_STATS:
                if stat in allowance.get(link.name, {}):
                    entry[stat] = self._delta((link.name, stat), allowance[link.name][stat])
            interfaces.append(InterfaceDelta(**entry))
        retrans = host.mib.retrans_segs if host.mib is not None else 0
        return NodeDelta(interfaces=interfaces,
                         tcp_retransmitted_segments=self._delta(("tcp", "retrans"), retrans))


def on_the_network(key: Any) -> bool:
    """Loopback connections never leave their namespace (a pod's containers talking to each
    other) and unconnected sockets have no peer: neither belongs in the cluster's flows."""
    return not (key.remote_ip.startswith("127.") or key.remote_ip in ("::1", "::", "0.0.0.0"))


def build_reports(result: CycleResult, node: str, instance_id: str, node_delta: NodeDelta,
                  own: Callable[[FlowKey], bool] = lambda _key: False) -> list[Report]:
    """The interval's report; several when it has more flows than one report may carry (the
    node's counters go with the first)."""
    report = build_report(result, node, instance_id, node_delta, own)
    if len(report.flows) <= MAX_FLOWS:
        return [report]
    parts = [report.flows[i:i + MAX_FLOWS] for i in range(0, len(report.flows), MAX_FLOWS)]
    return [msgspec.structs.replace(report, report_id=uuid.uuid4().hex, flows=part,
                                    node=node_delta if index == 0 else NodeDelta())
            for index, part in enumerate(parts)]


def build_report(result: CycleResult, node: str, instance_id: str, node_delta: NodeDelta,
                 own: Callable[[FlowKey], bool] = lambda _key: False) -> Report:
    flows = [
        FlowRecord(netns=key.netns, protocol=key.protocol, role=key.role, local_ip=key.local_ip,
                   remote_ip=key.remote_ip, server_port=key.server_port, service_ip=result.service_ips.get(key),
                   own=own(key), active_sockets=result.active_sockets.get(key, 0),
                   **{name: getattr(c, name) for name in ADDITIVE_FIELDS})
        for key, c in result.flows.items() if on_the_network(key)
    ]
    return Report(schema_version=SCHEMA_VERSION, report_id=uuid.uuid4().hex,
                  agent=AgentInfo(node=node, instance_id=instance_id[:64], version=__version__),
                  interval=Interval(start=result.start, end=result.end), flows=flows, node=node_delta)


class Spool:
    """A bounded folder of undelivered reports, oldest first, private to the agent's user."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.dropped = 0
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            directory.chmod(0o700)
            probe = directory / ".writable"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as err:
            raise ConfigError(f"cannot write the spool folder {directory}: {err.strerror}: choose one this user "
                              "can write with --spool-dir") from None
        existing = [int(p.name.split("-", 1)[0]) for p in self.directory.glob("*.json.gz")
                    if p.name.split("-", 1)[0].isdigit()]
        self._seq = itertools.count(max(existing, default=0) + 1)

    def files(self) -> list[Path]:
        return sorted(self.directory.glob("*.json.gz"))

    def bytes(self) -> int:
        total = 0
        for path in self.files():
            with contextlib.suppress(OSError):
                total += path.stat().st_size
        return total

    def put(self, report_id: str, body: bytes) -> None:
        path = self.directory / f"{next(self._seq):012d}-{report_id}.json.gz"
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(body)
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


class Outcome(Enum):
    DELIVERED = "delivered"
    UNREACHABLE = "unreachable"  # network error or 5xx: try again, in order
    UNAUTHORIZED = "unauthorized"  # 401/403: nothing will go until the token is fixed
    REFUSED = "refused"  # this report only (422, 413, ...): keep it, go on with the next


# A report the collector refused is offered again this often (its clock may have been fixed).
REFUSED_RETRY_SECONDS = 300.0


class Reporter:
    """The sender thread: deliver reports in order, spool what is not delivered."""

    def __init__(self, url: str, tokens: TokenSet | str, spool: Spool, timeout: float = 5.0,
                 verify: str | bool = True) -> None:
        self.url = url.rstrip("/") + INGEST_PATH
        self.tokens = tokens if isinstance(tokens, TokenSet) else TokenSet(flags=[tokens] if tokens else [])
        self.spool = spool
        self.client = httpx.Client(timeout=timeout, verify=verify)
        self.queue: queue.Queue[tuple[str, bytes] | None] = queue.Queue(maxsize=64)
        self.sent = 0
        self.duplicates = 0
        self.failures = 0  # attempts in a row that found the collector unreachable or failing
        self.failures_total = 0
        self.refused: dict[int, int] = {}  # HTTP status → refusals
        self._reasons: set[str] = set()  # refusal reasons already logged
        self._retry_at: dict[str, float] = {}  # spooled report file → when to offer it again
        self._current: tuple[str, bytes] | None = None
        self._thread = threading.Thread(target=self._run, name="flowlens-reporter", daemon=True)
        self._thread.start()

    def submit(self, report: Report) -> None:
        body = gzip.compress(encode_report(report), compresslevel=5)
        try:
            self.queue.put_nowait((report.report_id, body))
        except queue.Full:  # the sender is stuck: keep the report on disk instead
            self.spool.put(report.report_id, body)

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
                if not self._replay() or self._post(report_id, body) is not Outcome.DELIVERED:
                    self.spool.put(report_id, body)
            finally:
                self._current = None
                self.queue.task_done()

    def _replay(self) -> bool:
        """Send spooled reports in order; False (and stop) when the collector takes nothing now.
        A report refused on its own stays, and is offered again later."""
        now = time.monotonic()
        for path in self.spool.files():
            if self._retry_at.get(path.name, 0.0) > now:
                continue
            report_id = path.name.split("-", 1)[1].removesuffix(".json.gz")
            try:
                body = path.read_bytes()
            except FileNotFoundError:
                continue  # dropped by the spool's bound meanwhile
            outcome = self._post(report_id, body)
            if outcome is Outcome.DELIVERED:
                path.unlink(missing_ok=True)
                self._retry_at.pop(path.name, None)
            elif outcome is Outcome.REFUSED:
                self._retry_at[path.name] = now + REFUSED_RETRY_SECONDS
            else:
                return False
        return True

    def _post(self, report_id: str, body: bytes) -> Outcome:
        headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
        token = self.tokens.first()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            response = self.client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as err:
            self.failures += 1
            self.failures_total += 1
            if self.failures == 1 or self.failures % 60 == 0:
                log.warning("collector at %s unreachable (%s): spooling reports", self.url, err)
            return Outcome.UNREACHABLE
        if response.status_code >= 500:
            self.failures += 1
            self.failures_total += 1
            return Outcome.UNREACHABLE
        if response.status_code >= 400:
            return self._refusal(report_id, response)
        if self.failures:
            log.info("collector reachable again")
        self.failures = 0
        self.sent += 1
        with contextlib.suppress(ValueError):
            self.duplicates += bool(response.json().get("duplicate"))
        return Outcome.DELIVERED

    def _refusal(self, report_id: str, response: httpx.Response) -> Outcome:
        status = response.status_code
        self.refused[status] = self.refused.get(status, 0) + 1
        try:
            reason = str(response.json().get("error", ""))
        except ValueError:
            reason = response.text[:200]
        key = f"{status} {reason.split(':')[0]}"
        if key not in self._reasons:  # once per reason, not once per report
            self._reasons.add(key)
            log.error("collector refused report %s (%d %s): it stays in the spool and is sent again once the "
                      "cause is fixed", report_id, status, reason)
        return Outcome.UNAUTHORIZED if status in (401, 403) else Outcome.REFUSED

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
