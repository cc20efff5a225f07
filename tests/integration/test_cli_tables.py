"""Query commands print whole names into a pipe or a file (no terminal width to fit)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time

import httpx

from tests.integration.conftest import RunningCollector, node, pod, write_inventory

LONG = "a-workload-with-a-name-far-longer-than-any-eighty-column-terminal-would-ever-show-whole"


def test_top_and_map_never_cut_names_when_not_on_a_terminal(files):
    folder, inventory, ranges = files
    write_inventory(inventory, [node("n1", "us-east-1a", "192.0.2.1"),
                                pod(f"{LONG}-5f6b7c8d9-aaaaa", "ui", "10.0.0.1", "n1", f"{LONG}-5f6b7c8d9")])
    collector = RunningCollector(folder, inventory, ranges).start()
    try:
        now = time.time()
        report = {"schema_version": 1, "report_id": "long-names-001", "agent": {"node": "n1"},
                  "interval": {"start": now - 6, "end": now - 1},
                  "flows": [{"netns": "x", "role": "client", "local_ip": "10.0.0.1", "remote_ip": "198.51.100.7",
                             "server_port": 443, "sent_bytes": 1000, "sent_segments": 10}]}
        answer = httpx.post(collector.url + "/api/v1/reports", content=gzip.compress(json.dumps(report).encode()),
                            headers={"Content-Encoding": "gzip"})
        assert answer.status_code == 200, answer.text
        env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
        for command in (["top"], ["map"]):
            out = subprocess.run([sys.executable, "-m", "flowlens", *command, "--collector", collector.url],
                                 capture_output=True, text=True, env=env, timeout=60)
            assert out.returncode == 0, out.stderr
            assert LONG in out.stdout, out.stdout
    finally:
        collector.stop()


def _flowlens(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "250"}
    return subprocess.run([sys.executable, "-m", "flowlens", *args], capture_output=True, text=True, env=env,
                          timeout=60)


def test_diagnose_health_map_and_top_read_the_answers_as_records(files):
    folder, inventory, ranges = files
    write_inventory(inventory, [node("n1", "us-east-1a", "192.0.2.1"), node("n2", "us-east-1b", "192.0.2.2"),
                                pod("ui-5f6b7c8d9-aaaaa", "ui", "10.0.0.1", "n1", "ui-5f6b7c8d9"),
                                pod("sd-5f6b7c8d9-bbbbb", "ml", "10.0.0.2", "n2", "sd-5f6b7c8d9")])
    collector = RunningCollector(folder, inventory, ranges).start()
    try:
        now = time.time()
        report = {"schema_version": 1, "report_id": "records-0001", "agent": {"node": "n1"},
                  "interval": {"start": now - 6, "end": now - 1},
                  "flows": [{"netns": "x", "role": "client", "local_ip": "10.0.0.1", "remote_ip": "10.0.0.2",
                             "server_port": 8080, "sent_bytes": 1500, "received_bytes": 2500, "sent_segments": 10,
                             "retransmitted_segments": 3, "rto": 1, "connection_attempts": 4,
                             "connections_established": 3, "connections_failed": 1, "connections_refused": 1,
                             "rtt_sum_us": 9000, "rtt_samples": 3}]}
        assert httpx.post(collector.url + "/api/v1/reports", json=report).status_code == 200
        def cells(out: subprocess.CompletedProcess[str], marker: str) -> list[str]:
            assert out.returncode == 0, out.stderr
            line = next(line for line in out.stdout.splitlines() if marker in line)
            return [cell.strip() for cell in line.split("│")[1:-1]]
        assert cells(_flowlens("top", "--collector", collector.url), "ui/ui") == [
            "ui/ui (ui-5f6b7c8d9-aaaaa)", "ml/sd (sd-5f6b7c8d9-bbbbb)", "8080", "INTER_AZ", "3.9 KiB", "3", "0", "1",
            "1", "3.00"]
        assert cells(_flowlens("map", "--collector", collector.url), "ui/ui") == [
            "ui/ui", "ml/sd", "INTER_AZ", "1.5 KiB", "2.4 KiB", "3", "0", "1", "1", "3.00"]
        health = _flowlens("health", "--collector", collector.url)
        assert health.returncode == 0, health.stderr
        assert health.stdout.splitlines() == [
            "network health over the last 10m: 0 (healthy)",
            "  0  us-east-1a ↔ us-east-1b  loss 30.00%  rto 1  rtt 3 ms (usually 3)  degraded flows 1/1"]
        diagnose = _flowlens("diagnose", "--collector", collector.url)
        assert diagnose.returncode == 0, diagnose.stderr
        assert diagnose.stdout.splitlines() == ["network health over the last 10m: 0 (no network-side problem)",
                                                "no findings: the network explains nothing slow in this window"]
    finally:
        collector.stop()


def test_an_answer_of_another_shape_is_one_clear_line():
    import http.server
    import threading

    class Odd(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b'{"level": "workload", "nodes": [], "edges": [{"source": 5}], "groups": []}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Odd)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        out = _flowlens("map", "--collector", url)
        assert out.returncode == 1 and "Traceback" not in out.stderr
        assert out.stderr.strip().startswith(f"error: the collector at {url} answered something this flowlens")
        assert "$.edges[0].source" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    finally:
        server.shutdown()
