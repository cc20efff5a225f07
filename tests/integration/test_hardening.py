"""The collector and the agent's endpoint as an attacker and a careless operator meet them:
bodies refused before they are read, tokens on every endpoint, slow and idle clients cut off,
reports refused for their time (and kept by the agent), poison that cannot stop maintenance,
and a clean stop on SIGTERM.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import httpx
import pytest

from flowlens.agent.config import AgentConfig
from flowlens.agent.runtime import Agent, serve
from flowlens.agent.sampling.sampler import Sampler
from flowlens.collector.store.duckdb import DuckDBStore
from flowlens.collector.store.duckdb import rollup as duckdb_rollup
from flowlens.model.queries import FlowFilter, TopBy, View
from tests.collector.rows import external, flow, flows_table, host
from tests.conftest import NsPair
from tests.integration.conftest import RunningCollector, free_port
from tests.traffic import Server, request

TOKEN = "collector-token-0123456789abcdef"
READ = "reader-token-0123456789abcdef"
FLOWLENS = [sys.executable, "-m", "flowlens"]


def report(report_id: str, start: float, flows: int = 3, sent: int = 100, seconds: float = 5.0) -> dict:
    return {"schema_version": 1, "report_id": report_id, "agent": {"node": "n1"},
            "interval": {"start": start, "end": start + seconds},
            "flows": [{"netns": "host", "role": "client", "local_ip": "10.0.0.1", "remote_ip": f"10.0.1.{i}",
                       "server_port": 443, "sent_bytes": sent} for i in range(flows)]}


def gz(body: dict) -> bytes:
    return gzip.compress(json.dumps(body).encode())


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


class CollectorProcess:
    """`flowlens collector` as a user runs it, in its own process."""

    def __init__(self, folder: Path, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.store = folder / "flows.duckdb"
        tokens = folder / "tokens"
        tokens.write_text(f"# agents\n{TOKEN}\n")
        readers = folder / "readers"
        readers.write_text(READ + "\n")
        self.proc = subprocess.Popen([*FLOWLENS, "collector", "--port", str(self.port), "--store", str(self.store),
                                      "--token-file", str(tokens), "--read-token-file", str(readers), *extra],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert self.proc.poll() is None, self.proc.communicate()[1]
            assert time.monotonic() < deadline, "the collector did not start"
            time.sleep(0.1)

    def post(self, body: bytes, token: str = TOKEN) -> httpx.Response:
        return httpx.post(self.url + "/api/v1/reports", content=body, timeout=30,
                          headers={"Content-Encoding": "gzip", "Authorization": f"Bearer {token}"})

    def stop(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=30)
        return self.proc.returncode, err


@pytest.fixture
def collector_process(tmp_path):
    proc = CollectorProcess(tmp_path, "--header-timeout", "2", "--body-timeout", "2")
    yield proc
    if proc.proc.poll() is None:
        proc.proc.kill()
        proc.proc.wait()


def test_every_endpoint_but_healthz_needs_a_token(collector_process):
    c = collector_process
    assert httpx.get(c.url + "/healthz").status_code == 200
    for path in ("/api/v1/map", "/api/v1/flows", "/api/v1/findings", "/api/v1/health", "/api/v1/events",
                 "/openapi.json", "/docs", "/metrics"):
        assert httpx.get(c.url + path).status_code == 401, path
        assert httpx.get(c.url + path, headers={"Authorization": "Bearer wrong-token-000000"}).status_code == 403
        assert httpx.get(c.url + path, headers={"Authorization": f"Bearer {READ}"}).status_code == 200, path
    event = [{"kind": "model_load", "pod": "p", "start": time.time() - 9, "end": time.time() - 1}]
    assert httpx.post(c.url + "/api/v1/events", json=event).status_code == 401
    assert httpx.post(c.url + "/api/v1/events", json=event,
                      headers={"Authorization": f"Bearer {READ}"}).status_code == 403, "readers cannot write"
    assert httpx.post(c.url + "/api/v1/events", json=event,
                      headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert c.post(gz(report("auth-check-1", time.time() - 6)), token=READ).status_code == 403
    assert "server" not in httpx.get(c.url + "/healthz").headers, "no version banner"
    code, err = c.stop()
    assert code == 0, err


def test_a_400_mib_body_is_refused_before_it_is_read(collector_process):
    c = collector_process
    before = rss_kb(c.proc.pid)
    with socket.create_connection(("127.0.0.1", c.port)) as sock:
        sock.sendall(b"POST /api/v1/reports HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\n"
                     b"Authorization: Bearer " + TOKEN.encode() + b"\r\nContent-Length: 419430400\r\n\r\n")
        sock.sendall(b"\0" * 65536)
        sock.settimeout(5)
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
    # Without Content-Length (chunked), the body is cut off as it passes the limit.
    started = time.monotonic()

    def chunks():
        for _ in range(400):
            yield b"\0" * (1 << 20)

    response = httpx.post(c.url + "/api/v1/reports", content=chunks(), timeout=60,
                          headers={"Content-Encoding": "gzip", "Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 413
    assert time.monotonic() - started < 30
    # Without a token, nothing is read at all.
    with socket.create_connection(("127.0.0.1", c.port)) as sock:
        sock.sendall(b"POST /api/v1/reports HTTP/1.1\r\nHost: x\r\nContent-Length: 419430400\r\n\r\n")
        sock.settimeout(5)
        assert sock.recv(4096).startswith(b"HTTP/1.1 401")
    grew = (rss_kb(c.proc.pid) - before) / 1024
    print(f"\ncollector RSS {before / 1024:.0f} MB, +{grew:.1f} MB after the refused bodies")
    assert grew < 40, f"the collector's memory followed the body: +{grew:.0f} MB"
    assert c.stop()[0] == 0


def test_slow_and_idle_clients_are_cut_off(collector_process):
    c = collector_process
    idle = []
    for i in range(2000):
        sock = socket.create_connection(("127.0.0.1", c.port))
        if i % 2:
            sock.sendall(b"GET /api/v1/map HTTP/1.1\r\nHost: x\r\n")  # headers that never end
        idle.append(sock)
    # Served meanwhile: connections over the limit get 503 at once, never a hang.
    status = httpx.get(c.url + "/healthz", timeout=10).status_code
    assert status in (200, 503)
    time.sleep(2.5)  # the header timeout is 2 s
    closed = 0
    deadline = time.monotonic() + 20
    for sock in idle:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            closed += sock.recv(100) == b""
        except (TimeoutError, ConnectionResetError):
            closed += 1 if isinstance(sys.exc_info()[1], ConnectionResetError) else 0
        sock.close()
    assert closed == 2000, f"{2000 - closed} slow connections were kept open"
    assert httpx.get(c.url + "/healthz").status_code == 200
    metrics = httpx.get(c.url + "/metrics", headers={"Authorization": f"Bearer {READ}"}).text
    assert "flowlens_collector_http_header_timeouts_total" in metrics
    code, err = c.stop()
    assert code == 0 and "Traceback" not in err, err


def test_sigterm_mid_ingest_exits_0_with_every_acknowledged_report_stored(tmp_path):
    c = CollectorProcess(tmp_path)
    acknowledged: list[int] = []
    stop = threading.Event()

    def send(worker: int) -> None:
        n = 0
        while not stop.is_set():
            try:
                answer = c.post(gz(report(f"sig-{worker}-{n:06d}", time.time() - 6, flows=200)))
            except httpx.HTTPError:
                return
            if answer.status_code == 200:
                acknowledged.append(answer.json()["flows"])
            n += 1

    senders = [threading.Thread(target=send, args=(w,)) for w in range(4)]
    for t in senders:
        t.start()
    time.sleep(2.0)
    code, err = c.stop()
    stop.set()
    for t in senders:
        t.join()
    assert code == 0, err
    assert "leaked" not in err and "Traceback" not in err, err
    assert len(acknowledged) > 5
    with duckdb.connect(str(c.store), read_only=True) as db:
        rows = db.execute("SELECT count(*) FROM flow_intervals").fetchone()[0]
        reports = db.execute("SELECT count(*) FROM reports").fetchone()[0]
    assert rows >= sum(acknowledged) and reports >= len(acknowledged), "every acknowledged report is there"
    assert rows == reports * 200, "and none is there in part"
    assert oct(os.stat(c.store).st_mode & 0o777) == oct(0o600), "the store is private to its user"


def test_reports_from_the_wrong_time_get_their_422s(collector_process):
    c = collector_process
    now = time.time()
    future = c.post(gz(report("from-the-future", now + 3600)))
    assert future.status_code == 422 and "in the future" in future.json()["error"]
    old = c.post(gz(report("from-last-month", now - 30 * 86400)))
    assert old.status_code == 422 and "too old" in old.json()["error"]
    poison = c.post(gz(report("poison-report-1", now - 6, sent=2**62)))
    assert poison.status_code == 422 and "can carry" in poison.json()["error"]
    assert c.post(gz(report("just-right-0001", now - 6))).status_code == 200
    c.stop()


def test_a_row_that_breaks_a_rollup_never_stops_maintenance(monkeypatch):
    """Rows at the limit of 64-bit sums are summed with saturation; a bucket whose rollup fails
    anyway is logged, counted and skipped, and the other buckets are rolled up."""
    store = DuckDBStore(":memory:")
    base = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
    try:
        client, server = host("n1", "a", "10.0.0.1"), external("192.0.2.9")
        huge = flows_table([flow(base + timedelta(minutes=m), client, server, 443, sent_bytes=2**62)
                            for m in range(3) for _ in range(2)])
        assert store.append_report("huge-rows-00", huge)
        real_fold = duckdb_rollup._fold

        def failing(w, unit, watermark, target):
            if unit == "minute" and (watermark is None or target - watermark > timedelta(minutes=1)):
                raise duckdb.ConversionException("the whole pass fails")
            if unit == "minute" and watermark == base + timedelta(minutes=1):
                raise duckdb.ConversionException("a bucket that cannot be summed")
            return real_fold(w, unit, watermark, target)

        monkeypatch.setattr(duckdb_rollup, "_fold", failing)
        store.roll_up(base + timedelta(hours=2))
        assert store.stats.maintenance_failures >= 2
        minutes = store._writer.execute("SELECT bucket, sent_bytes FROM flows_1m ORDER BY bucket").fetchall()
        assert [m.minute for m, _ in minutes] == [0, 2], "the other minutes were rolled up"
        assert all(v == 2**63 - 1 for _, v in minutes), "saturated, not failed"
        monkeypatch.setattr(duckdb_rollup, "_fold", real_fold)
        store.apply_retention(base + timedelta(days=30))  # and maintenance goes on
        assert store._state.minute_watermark is not None
    finally:
        store.close()


def test_a_wrong_token_keeps_reports_spooled_and_they_arrive_exact_after_the_fix(ns_pair: NsPair, files):
    folder, inventory, ranges = files
    collector = RunningCollector(folder, inventory, ranges, tokens=(TOKEN,)).start()
    token_file = folder / "agent-token"
    token_file.write_text("a-rotated-token-000000000000\n")
    agent = Agent(AgentConfig(interval=1.0, node="node-a", collector=collector.url, token_file=str(token_file),
                              spool_dir=str(folder / "spool")), Sampler(only=(ns_pair.a, ns_pair.b)))
    agent.start()
    server = Server(ns_pair.b, ns_pair.ip_b, 8080, reply=321).start()
    try:
        for round_ in range(3):
            for _ in range(4):
                assert request(ns_pair.a, ns_pair.ip_b, 8080, 1000 + round_) == 321
            time.sleep(0.1)
            agent.run_cycle()
            agent.reporter.flush()
        assert agent.reporter.refused.get(403, 0) >= 1 and agent.reporter.spooled >= 3
        exported = httpx_free_metrics(agent)
        assert 'flowlens_agent_reports_refused_total{status="403"}' in exported
        spooled = next(float(line.split()[1]) for line in exported.splitlines()
                       if line.startswith("flowlens_agent_spool_reports "))
        assert spooled >= 2, "the snapshot of the last cycle shows the spool"
        assert collector.collector.store.stats.flow_rows == 0
        assert oct((folder / "spool").stat().st_mode & 0o777) == oct(0o700)
        assert all(p.stat().st_mode & 0o777 == 0o600 for p in (folder / "spool").iterdir())
        token_file.write_text(TOKEN + "\n")  # the operator fixes the Secret
        time.sleep(1.1)
        agent.run_cycle()
        agent.reporter.flush()
        assert agent.reporter.spooled == 0
        rows = collector.collector.store.flow_table(FlowFilter(), View.CLUSTER, TopBy.BYTES, 10) + \
            collector.collector.store.flow_table(FlowFilter(), View.EXTERNAL, TopBy.BYTES, 10)
        assert sum(r.bytes_to_server for r in rows) == 4 * (1000 + 1001 + 1002)
        assert sum(r.connection_attempts for r in rows) == 12
    finally:
        server.stop()
        agent.close()
        collector.stop()


def httpx_free_metrics(agent: Agent) -> str:
    from prometheus_client.exposition import generate_latest

    return generate_latest(agent.registry).decode()


def test_the_agent_endpoint_cuts_idle_clients_and_needs_its_token(netns: str, tmp_path):
    tokens = tmp_path / "metrics-tokens"
    tokens.write_text("prometheus-token-0123456789\n")
    agent = Agent(AgentConfig(address="127.0.0.1", port=free_port(), interval=1.0, header_timeout=1.0,
                              metrics_token_file=str(tokens)), Sampler(only=(netns,)))
    agent.start()
    served = serve(agent)
    url = f"http://127.0.0.1:{agent.config.port}"
    try:
        agent.run_cycle()
        threads = threading.active_count()
        idle = [socket.create_connection(("127.0.0.1", agent.config.port)) for _ in range(400)]
        assert threading.active_count() - threads < 5, "no thread per idle connection"
        time.sleep(1.5)
        for sock in idle:
            sock.settimeout(5)
            assert sock.recv(10) == b"", "an idle connection was kept"
            sock.close()
        assert httpx.get(url + "/healthz").status_code == 200
        assert httpx.get(url + "/metrics").status_code == 401
        assert httpx.get(url + "/flows").status_code == 401
        ok = httpx.get(url + "/metrics", headers={"Authorization": "Bearer prometheus-token-0123456789"})
        assert ok.status_code == 200 and "flowlens_agent_cycles_total" in ok.text
        assert "server" not in ok.headers
    finally:
        served.stop()
        agent.close()
