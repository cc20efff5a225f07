"""`flowlens probe` against a streaming server whose timing is known exactly."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from flowlens.signals.probe import openai_request, run

TTFT, GAP, TOKENS = 1.0, 0.05, 20  # first token after 1 s, then one every 50 ms


class StreamingLLM(BaseHTTPRequestHandler):
    """An OpenAI-compatible completions endpoint streaming tokens at a known rate."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        chat = self.path.endswith("/chat/completions")
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        time.sleep(TTFT)
        for i in range(TOKENS):
            if i:
                time.sleep(GAP)
            choice = {"delta": {"content": f"t{i} "}} if chat else {"text": f"t{i} "}
            self._event({"choices": [choice]})
        if body.get("stream_options", {}).get("include_usage"):
            self._event({"choices": [], "usage": {"completion_tokens": TOKENS}})
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True

    def _event(self, data: dict) -> None:
        self.wfile.write(f"data: {json.dumps(data)}\n\n".encode())
        self.wfile.flush()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def llm():
    server = ThreadingHTTPServer(("127.0.0.1", 0), StreamingLLM)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def within(value: float, expected: float, share: float = 0.05) -> bool:
    return abs(value - expected) <= share * expected


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
def test_ttft_and_tokens_per_second_match_the_known_stream(llm, path):
    summary = run(llm + path, "openai", requests=4, concurrency=2,
                  request=lambda client: openai_request(client, llm + path, "m", "hi", TOKENS))
    assert summary.failures == 0 and summary.output_tokens == 4 * TOKENS
    e2e = TTFT + (TOKENS - 1) * GAP
    # Medians: one request of a busy CI machine may be scheduled late; the figures users read are these.
    assert within(summary.ttft_s["p50"], TTFT), summary.ttft_s
    assert within(summary.e2e_s["p50"], e2e), summary.e2e_s
    assert within(summary.itl_s["p50"], GAP), summary.itl_s
    assert within(sorted(r.tokens_per_s for r in summary.results)[1], TOKENS / e2e)
    assert within(summary.output_tokens_per_s, 4 * TOKENS / (2 * e2e), 0.1)


def test_probe_command_prints_json(llm):
    out = subprocess.run([sys.executable, "-m", "flowlens", "probe", llm + "/v1/completions", "-n", "2", "--json"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["requests"] == 2 and summary["failures"] == 0
    assert within(summary["ttft_s"]["mean"], TTFT)


def test_a_failing_endpoint_is_reported(llm):
    out = subprocess.run([sys.executable, "-m", "flowlens", "probe", "http://127.0.0.1:1/v1/completions",
                          "-n", "1"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "failure" in out.stderr
