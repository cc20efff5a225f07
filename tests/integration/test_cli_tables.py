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
