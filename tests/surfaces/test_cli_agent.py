"""The `flowlens agent` and `flowlens flows` commands, run as a user would run them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests.agent.test_metrics_endpoint import free_port, samples, value
from tests.conftest import NsPair, ns_exec
from tests.traffic import Server, open_socket, request

FLOWLENS = [sys.executable, "-m", "flowlens"]


def run(*args: str, env: dict[str, str] | None = None, user: str | None = None) -> subprocess.CompletedProcess[str]:
    # Root without any capability: what a container started without NET_ADMIN/SYS_ADMIN gets.
    prefix = ["setpriv", "--inh-caps=-all", "--bounding-set=-all", "--"] if user == "nocaps" else []
    return subprocess.run([*prefix, *FLOWLENS, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "COLUMNS": "250", **(env or {})})


def test_help_documents_every_option():
    out = run("agent", "--help").stdout
    for option in ("--port", "--interval", "--config", "--max-flow-series", "--idle-grace", "--address",
                   "--all-namespaces", "--allowance-qdiscs", "FLOWLENS_PORT", "FLOWLENS_INTERVAL"):
        assert option in out


def test_unknown_flag_is_rejected():
    result = run("agent", "--no-such-flag")
    assert result.returncode == 2
    assert "No such option" in result.stderr


def test_missing_privileges_is_one_clear_line():
    result = run("agent", "--port", str(free_port()), user="nocaps")
    assert result.returncode == 77
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "CAP_NET_ADMIN and CAP_SYS_ADMIN" in lines[0] and "root" in lines[0]


def test_bad_settings_are_named(tmp_path):
    config = tmp_path / "agent.yaml"
    config.write_text("port: 9101\nintervall: 5\n")
    result = run("agent", "--config", str(config))
    assert result.returncode == 2 and "unknown setting 'intervall'" in result.stderr
    result = run("agent", env={"FLOWLENS_INTERVAL": "fast"})
    assert result.returncode == 2 and "FLOWLENS_INTERVAL" in result.stderr
    result = run("agent", "--interval", "0")
    assert result.returncode == 2 and "interval must be between 0.1 and 3600 seconds" in result.stderr


@pytest.mark.parametrize(("args", "says"), [
    (["agent", "--interval", "1e-9"], "interval must be between 0.1 and 3600 seconds"),
    (["agent", "--service-cidrs", "bogus"], "service-cidrs 'bogus' is not a CIDR range"),
    (["agent", "--collector", "collector:9102"], "must be a URL"),
    (["agent", "--collector", "http://127.0.0.1:9", "--spool-dir", "/dev/null/spool"],
     "cannot write the spool folder /dev/null/spool"),
    (["agent", "--address", "192.0.2.55", "--port", "19101"], "192.0.2.55 is not an address of this machine"),
    (["agent", "--max-flow-series", "-1"], "max-flow-series must be between 0 and 100000"),
    (["agent", "--tls-cert", "cert.pem"], "tls-cert and tls-key go together"),
    (["collector", "--port", "99999"], "port must be between 1 and 65535, got 99999 (--port)"),
    (["collector", "--max-connections", "0"], "max-connections must be between 1 and 100000, got 0"),
    (["collector", "--tls-cert", "cert.pem"], "tls-cert and tls-key go together"),
    (["agent", "--interval", "soon"], "Invalid value for '--interval'"),
    (["collector", "--vpc-cidrs", "bogus", "--store", ":memory:"], "vpc-cidrs"),
    (["collector", "--address", "192.0.2.55", "--store", ":memory:"], "not an address of this machine"),
    (["collector", "--token-file", "/nonexistent/tokens", "--store", ":memory:"],
     "cannot read token file /nonexistent/tokens"),
])
def test_bad_input_is_one_clear_line_and_a_nonzero_exit(args: list[str], says: str):
    if args[0] == "collector" and "--port" not in args:
        args = [*args, "--port", str(free_port())]
    result = run(*args)
    assert result.returncode != 0
    assert says in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    if not says.startswith("Invalid value"):  # the command line's own usage errors come boxed
        assert len([line for line in result.stderr.splitlines() if "error" in line]) == 1, result.stderr


def test_port_already_in_use():
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run("agent", "--address", "127.0.0.1", "--port", str(port))
    assert result.returncode != 0
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr


@pytest.fixture
def node_agent(ns_pair: NsPair):
    """An agent running inside namespace a, as a node's DaemonSet pod would, shaped uplink included."""
    a = ns_pair.a
    ns_exec(a, "tc", "qdisc", "add", "dev", "veth0", "root", "tbf", "rate", "10mbit", "burst", "8kb",
            "limit", "12kb")
    port = free_port()
    proc = subprocess.Popen(["ip", "netns", "exec", a, *FLOWLENS, "agent", "--port", str(port), "--interval", "0.5",
                             "--host-only", "--node", "node-a",
                             "--allowance-qdiscs", "bw_out_allowance_exceeded=veth0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 15
        while time.time() < deadline:
            if ns_exec(a, "curl", "-sf", f"http://127.0.0.1:{port}/healthz", check=False).returncode == 0:
                break
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            time.sleep(0.2)
        yield ns_pair, port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_agent_reports_shaper_drops_as_allowance_exceeded_and_flows_as_json(node_agent):
    pair, port = node_agent
    server = Server(pair.b, pair.ip_b, 9000).start()
    metrics = f"http://127.0.0.1:{port}/metrics"
    try:
        assert request(pair.a, pair.ip_b, 9000, 2_000_000) == 0
    finally:
        server.stop()
    time.sleep(1.2)  # two agent intervals
    for _ in range(2):  # a new flow's series shows what it counted once scrapers have read its zero
        ns_exec(pair.a, "curl", "-sf", metrics)
        time.sleep(0.6)
    tc = json.loads(ns_exec(pair.a, "tc", "-s", "-j", "qdisc", "show", "dev", "veth0").stdout)
    drops = next(q["drops"] for q in tc if q["kind"] == "tbf")
    assert drops > 0
    text = ns_exec(pair.a, "curl", "-sf", f"http://127.0.0.1:{port}/metrics").stdout
    parsed = samples(text)
    assert value(parsed, "bw_out_allowance_exceeded", eni="veth0", node="node-a") == drops
    assert value(parsed, "flowlens_qdisc_drops_total", iface="veth0", qdisc="tbf") == drops
    assert value(parsed, "flowlens_flow_sent_bytes_total", netns="host", server_port="9000", role="client") \
        == 2_000_000

    server = Server(pair.b, pair.ip_b, 9001).start()
    idle = open_socket(pair.a)
    try:
        idle.connect((pair.ip_b, 9001))  # an open, idle connection is a flow of every interval
        time.sleep(1.2)
        out = ns_exec(pair.a, *FLOWLENS, "flows", "--json", "--agent", f"http://127.0.0.1:{port}").stdout
    finally:
        idle.close()
        server.stop()
    rows = [json.loads(line) for line in out.splitlines()]
    row = next(r for r in rows if r["server_port"] == 9001)
    assert (row["role"], row["active_sockets"], row["remote_ip"]) == ("client", 1, pair.ip_b)
    assert set(row) >= {"netns", "local_ip", "remote_ip", "server_port", "role", "sent_bytes",
                        "received_bytes", "retransmitted_segments", "rto", "connections_established",
                        "connections_failed", "active_sockets", "rtt_seconds"}


def test_live_view_runs_the_agent_and_shows_the_table():
    result = run("live", "--interval", "0.5", "--duration", "1.2", "--port", str(free_port()))
    assert result.returncode == 0, result.stderr
    assert "flowlens · top flows" in result.stdout
    assert "metrics at http://0.0.0.0:" in result.stderr


@pytest.mark.parametrize("when", ["between cycles", "in a cycle"])
def test_sigterm_stops_the_agent_within_a_second(when: str, tmp_path):
    import signal

    port = free_port()
    proc = subprocess.Popen([*FLOWLENS, "agent", "--address", "127.0.0.1", "--port", str(port), "--interval", "0.2",
                             "--collector", "http://127.0.0.1:9", "--spool-dir", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 15
        while subprocess.run(["curl", "-sf", f"http://127.0.0.1:{port}/healthz"], capture_output=True).returncode:
            assert time.time() < deadline and proc.poll() is None, proc.communicate()[1]
            time.sleep(0.1)
        # Many sockets make cycles long enough to be caught in one.
        held = [open_socket_pair() for _ in range(500 if when == "in a cycle" else 0)]
        time.sleep(0.5)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=5)
        took = time.monotonic() - sent
        for pair in held:
            for sock in pair:
                sock.close()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0, proc.stderr.read() if proc.stderr else ""
    assert took < 1.0, f"took {took:.2f} s"


def open_socket_pair():
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    listener.close()
    return client, server
