"""Benchmark: report ingest through the collector's HTTP API, against its store alone.

A synthetic cluster (200 nodes, 3,000 pods in 40 namespaces, an inventory file the collector
enriches from) reports real agent reports: gzip JSON of ``--flows`` flows each, every id new,
every interval recent. Each node has its own ``--flows`` flows, reported again in every report
of that node with new counters, as agents do (a flow key is new only the first time: every
measurement follows a first pass that has seen each node's flows once). In the same run:

  - store only: the same reports decoded, enriched and appended in this process, one after
    the other (what the collector does behind HTTP, without HTTP);
  - HTTP: a real ``flowlens collector`` (its own process, pinned to one core with ``taskset``,
    a token file set) fed by 1 and by 16 concurrent senders from this process (pinned to the
    other core), each with its own keep-alive connection, one report in flight each;
  - the largest report the collector takes, alone: its time and the collector's memory.

Prints rows (flow intervals) stored per second for each, and the collector's memory. Asserts
nothing.

    .venv/bin/python bench/collector_http.py [--reports 400] [--flows 1000] [--core 0]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from flowlens.collector.enrich.enricher import Enricher
from flowlens.collector.enrich.inventory import Inventory
from flowlens.collector.ingest import decode
from flowlens.collector.store.duckdb import DuckDBStore
from flowlens.model.report import MAX_FLOWS

NODES, PODS, NAMESPACES, ZONES = 200, 3000, 40, ("us-east-1a", "us-east-1b", "us-east-1c")
TOKEN = "bench-token-0123456789abcdef"


def pod_ip(p: int) -> str:
    return f"10.{1 + p // 65536}.{(p // 256) % 256}.{p % 256}"


def inventory() -> dict:
    items = [{"kind": "Node", "metadata": {"name": f"node-{n:03d}", "labels": {
        "topology.kubernetes.io/zone": ZONES[n % 3], "node.kubernetes.io/instance-type": "g5.2xlarge"}},
        "status": {"addresses": [{"type": "InternalIP", "address": f"192.168.{n // 256}.{n % 256}"}]}}
        for n in range(NODES)]
    for p in range(PODS):
        w = p % 150
        items.append({"kind": "Pod", "metadata": {
            "name": f"w{w:03d}-abcde{p:05d}", "namespace": f"ns-{w % NAMESPACES:02d}", "uid": f"u{p}",
            "creationTimestamp": "2020-01-01T00:00:00Z",
            "ownerReferences": [{"kind": "ReplicaSet", "name": f"w{w:03d}-6b5d8f7c9", "controller": True}]},
            "spec": {"nodeName": f"node-{p % NODES:03d}"},
            "status": {"podIP": pod_ip(p), "phase": "Running", "startTime": "2020-01-01T00:00:00Z"}})
    return {"apiVersion": "v1", "kind": "List", "items": items}


def make_report(rng: np.random.Generator, node: int, flows: int) -> bytes:
    now = time.time()
    local = [p for p in range(node, PODS, NODES)]
    peers = np.random.default_rng(node).integers(PODS, size=flows)  # the node's own flows, the same every time
    rows = []
    for i in range(flows):
        client = i % 2 == 0
        rows.append({
            "netns": f"cni-{local[i % len(local)]:05d}", "role": "client" if client else "server",
            "local_ip": pod_ip(local[i % len(local)]), "remote_ip": pod_ip(int(peers[i])),
            "server_port": 8080 + i % 7, "sent_bytes": int(rng.integers(1, 10**7)),
            "received_bytes": int(rng.integers(1, 10**6)), "sent_segments": 100, "received_segments": 90,
            "retransmitted_segments": int(rng.integers(0, 3)), "rto": 0, "connection_attempts": int(client),
            "connections_established": int(client), "active_sockets": 1, "rtt_sum_us": 800, "rtt_samples": 2})
    report = {"schema_version": 1, "report_id": uuid.uuid4().hex, "agent": {"node": f"node-{node:03d}"},
              "interval": {"start": now - 10, "end": now - 5}, "flows": rows,
              "node": {"interfaces": [{"iface": "eth0", "rx_bytes": 1000, "tx_bytes": 2000}]}}
    return gzip.compress(json.dumps(report, separators=(",", ":")).encode(), compresslevel=5)


def store_only(first: list[bytes], bodies: list[bytes], folder: Path) -> float:
    inv = Inventory()
    inv.replace_all(inventory()["items"], time.time())
    enricher = Enricher(inv)
    store = DuckDBStore(folder / "store-only.duckdb")

    def ingest(body: bytes) -> int:
        report = decode(body, "gzip")
        store.append_report(report.report_id, enricher.flows(report), enricher.nodes(report))
        return len(report.flows)

    for body in first:
        ingest(body)
    started = time.perf_counter()
    rows = sum(ingest(body) for body in bodies)
    elapsed = time.perf_counter() - started
    store.close()
    return rows / elapsed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_collector(folder: Path, core: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    (folder / "tokens").write_text(TOKEN + "\n")
    command = ["taskset", "-c", str(core), sys.executable, "-m", "flowlens", "collector", "--port", str(port),
               "--store", str(folder / "http.duckdb"), "--inventory-file", str(folder / "inventory.json"),
               "--token-file", str(folder / "tokens")]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the collector did not start: {proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.2)


def over_http(url: str, bodies: list[bytes], senders: int, flows: int) -> float:
    headers = {"Content-Encoding": "gzip", "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    shares = [bodies[i::senders] for i in range(senders)]
    stored = [0] * senders
    errors: list[str] = []

    def send(index: int) -> None:
        transport = httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
        with httpx.Client(timeout=120, transport=transport) as client:
            for body in shares[index]:
                answer = client.post(url + "/api/v1/reports", content=body, headers=headers)
                if answer.status_code != 200:
                    errors.append(f"{answer.status_code} {answer.text[:100]}")
                    return
                stored[index] += answer.json()["flows"]

    threads = [threading.Thread(target=send, args=(i,)) for i in range(senders)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise SystemExit(f"refused: {errors[0]}")
    assert sum(stored) == len(bodies) * flows
    return sum(stored) / elapsed


def memory_mb(pid: int) -> tuple[float, float]:
    """(resident now, resident at its peak) of a process, in MB."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                values[line.split(":")[0]] = int(line.split()[1]) / 1024
    return values["VmRSS"], values["VmHWM"]


def largest(url: str, rng: np.random.Generator) -> tuple[float, int]:
    """Post the largest report the collector takes (MAX_FLOWS flows): seconds it took, bytes sent."""
    body = make_report(rng, 0, MAX_FLOWS)
    headers = {"Content-Encoding": "gzip", "Authorization": f"Bearer {TOKEN}"}
    started = time.perf_counter()
    answer = httpx.post(url + "/api/v1/reports", content=body, headers=headers, timeout=300)
    if answer.status_code != 200:
        raise SystemExit(f"the largest report was refused: {answer.status_code} {answer.text[:200]}")
    return time.perf_counter() - started, len(body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reports", type=int, default=400, help="reports per measurement")
    parser.add_argument("--flows", type=int, default=1000, help="flows per report")
    parser.add_argument("--core", type=int, default=0, help="the core the collector gets (the senders the others)")
    args = parser.parse_args()
    others = sorted(set(os.sched_getaffinity(0)) - {args.core}) or [args.core]
    folder = Path(tempfile.mkdtemp(prefix="flowlens-http-bench-"))
    try:
        (folder / "inventory.json").write_text(json.dumps(inventory()))
        rng = np.random.default_rng(7)
        first = [make_report(rng, n, args.flows) for n in range(NODES)]
        batches = [[make_report(rng, n % NODES, args.flows) for n in range(args.reports)] for _ in range(3)]
        os.sched_setaffinity(0, {args.core})
        local = store_only(first, batches[0], folder)
        os.sched_setaffinity(0, set(others))
        proc, url = start_collector(folder, args.core)
        try:
            over_http(url, first, 16, args.flows)
            one = over_http(url, batches[1], 1, args.flows)
            many = over_http(url, batches[2], 16, args.flows)
            memory, _ = memory_mb(proc.pid)
            biggest, size = largest(url, rng)
            after, peak = memory_mb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"\nreports of {args.flows} flows, {args.reports} per run; collector on core {args.core}")
    print(f"{'path':>34} {'rows/s':>10}")
    print(f"{'store only (decode, enrich, store)':>34} {local:>10,.0f}")
    print(f"{'HTTP, 1 sender':>34} {one:>10,.0f}")
    print(f"{'HTTP, 16 senders':>34} {many:>10,.0f}")
    print(f"collector RSS after: {memory:.0f} MB")
    print(f"largest report ({MAX_FLOWS:,} flows, {size / 2**20:.1f} MiB gzipped): {biggest:.1f} s, collector RSS "
          f"{after:.0f} MB after, {peak:.0f} MB at its peak")


if __name__ == "__main__":
    main()
