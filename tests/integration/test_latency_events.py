"""`flowlens probe --post` and `flowlens signals --post` feed the diagnosis real latency.

A streaming server answers its first token after a delay the test sets; the probe measures it
and posts the means to a running collector; once the delay triples, the diagnosis says
inference slowed down, and (no flow degraded) that the server itself is the suspect.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tests.integration.conftest import RunningCollector

DELAY = {"ttft": 0.2}


class SlowingLLM(BaseHTTPRequestHandler):
    """An OpenAI-compatible streaming endpoint: first token after DELAY['ttft'], then 4 more."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        time.sleep(DELAY["ttft"])
        for i in range(5):
            self.wfile.write(f"data: {json.dumps({'choices': [{'text': f't{i}'}]})}\n\n".encode())
            self.wfile.flush()
        self.wfile.write(b"data: [DONE]\n\n")
        self.close_connection = True

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def llm():
    server = ThreadingHTTPServer(("127.0.0.1", 0), SlowingLLM)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/completions"
    server.shutdown()


def flowlens(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flowlens", *args], capture_output=True, text=True, timeout=120)


def test_probe_posts_latency_and_the_diagnosis_calls_it_slow(files, llm):
    folder, inventory, ranges = files
    collector = RunningCollector(folder, inventory, ranges).start()
    try:
        target = ["--post", "--collector", collector.url, "--namespace", "llm", "--workload", "vllm"]
        DELAY["ttft"] = 0.2
        fast = flowlens("probe", llm, "-n", "4", *target)
        assert fast.returncode == 0, fast.stderr
        assert "posted 3 latency events" in fast.stderr  # ttft, e2e, itl
        time.sleep(1.5)
        DELAY["ttft"] = 0.6
        started = time.time()
        slow = flowlens("probe", llm, "-n", "4", *target)
        assert slow.returncode == 0, slow.stderr
        since = math.ceil(time.time() - started + 0.5)
        body = httpx.get(collector.url + "/api/v1/findings", params={"since": f"{since}s"}, timeout=30).json()
        events = httpx.get(collector.url + "/api/v1/events", params={"since": "5m"}, timeout=30).json()
    finally:
        collector.stop()
    assert sorted(e["metric"] for e in events) == ["e2e", "e2e", "itl", "itl", "ttft", "ttft"]
    assert {(e["namespace"], e["workload"], e["count"]) for e in events} == {("llm", "vllm", 4)}
    found = [f for f in body["findings"] if f["kind"] == "slow_inference"]
    assert len(found) == 1 and found[0]["where"]["workloads"] == ["llm/vllm"]
    assert found[0]["evidence"]["cause"] == "workload"
    ttft = next(m for m in found[0]["evidence"]["metrics"] if m["metric"] == "ttft")
    assert ttft["requests"] == 4
    assert 0.6 <= ttft["seconds"] < 0.8 and 0.2 <= ttft["usual_seconds"] < 0.4


def test_post_without_whose_latency_is_one_clear_error(llm):
    result = flowlens("probe", llm, "-n", "1", "--post")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "--post needs whose latency it is" in result.stderr
    result = flowlens("signals", "http://127.0.0.1:9/metrics", "--post", "--workload", "x")
    assert result.returncode != 0 and "--post needs --window" in result.stderr


def test_signals_posts_the_window_means_of_a_real_scrape(files):
    """Two scrapes a second apart of a vLLM-format endpoint: 4 new requests took 2 s to their
    first token between them, and no request ended: one TTFT event, 0.5 s over 4 requests."""
    from tests.signals.test_scrape import VLLM

    count = 'time_to_first_token_seconds_count{model_name="m"}'
    after = VLLM.replace('_sum{model_name="m"} 0.8', '_sum{model_name="m"} 2.8').replace(f"{count} 4.0", f"{count} 8.0")
    pages = [VLLM, after]

    class Metrics(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = (pages.pop(0) if len(pages) > 1 else pages[0]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Metrics)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    folder, inventory, ranges = files
    collector = RunningCollector(folder, inventory, ranges).start()
    try:
        result = flowlens("signals", f"http://127.0.0.1:{server.server_address[1]}/metrics", "--window", "1",
                          "--post", "--collector", collector.url, "--namespace", "llm", "--pod", "vllm-0")
        events = httpx.get(collector.url + "/api/v1/events", params={"since": "5m"}, timeout=30).json()
    finally:
        collector.stop()
        server.shutdown()
    assert result.returncode == 0, result.stderr
    assert [(e["metric"], round(e["value_s"], 9), e["count"], e["pod"]) for e in events] == [("ttft", 0.5, 4, "vllm-0")]
    assert 0.9 <= events[0]["end"] - events[0]["start"] < 3
