"""Benchmark: what the agent costs on a node, idle and under connection churn.

Runs the real agent loop (destroy events read between cycles, one cycle per interval) in this
process, watching only the benchmark's own namespaces, while load processes (not counted)
either hold N idle connections open or open and close short connections at a fixed rate with
random payloads both ways (``tests/churn.py``). Prints, per scenario: the median cycle time,
the agent's CPU time as a share of one core over the run, its resident memory at the end and
at its peak, and whether every connection was counted (the agent's totals against the load's
own). Not a test: it asserts nothing.

    sudo .venv/bin/python bench/agent_churn.py [--seconds 30] [--interval 5] [--idle 10000] [--rates 1000,5000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from bench.agent_cycle import start_holders
from flowlens.agent.config import AgentConfig
from flowlens.agent.runtime import Agent
from flowlens.agent.sampling.sampler import CycleResult, Sampler
from flowlens.model.flows import CLIENT
from tests.churn import finish, start_clients, start_servers


def memory_mb() -> tuple[float, float]:
    """(resident now, resident at its peak) of this process, in MB."""
    values = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                values[line.split(":")[0]] = int(line.split()[1]) / 1024
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


def namespaces() -> tuple[str, str]:
    a, b = (f"flbench-{uuid.uuid4().hex[:6]}" for _ in range(2))
    for ns in (a, b):
        sh("ip", "netns", "add", ns)
        sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
    sh("ip", "link", "add", "veth0", "netns", a, "type", "veth", "peer", "name", "veth0", "netns", b)
    for ns, ip in ((a, "10.254.0.1"), (b, "10.254.0.2")):
        sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{ip}/24", "dev", "veth0")
        sh("ip", "netns", "exec", ns, "ip", "link", "set", "veth0", "up")
    sh("ip", "netns", "exec", a, "sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65000")
    sh("ip", "netns", "exec", a, "sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1")
    return a, b


def run_agent(only: tuple[str, ...], interval: float, seconds: float) -> tuple[list[CycleResult], float, Agent]:
    """The agent loop for ``seconds``; returns its cycles and its CPU share of one core."""
    agent = Agent(AgentConfig(interval=interval, node="bench"), Sampler(only=only))
    results: list[CycleResult] = []
    run_cycle = agent.run_cycle
    agent.run_cycle = lambda: results.append(run_cycle()) or results[-1]  # type: ignore[method-assign]
    agent.start()
    loop = threading.Thread(target=agent.loop)
    cpu, wall = time.process_time(), time.monotonic()
    loop.start()
    time.sleep(seconds)
    agent.stop()
    loop.join()
    share = (time.process_time() - cpu) / (time.monotonic() - wall)
    return results, share, agent


def report(name: str, results: list[CycleResult], share: float, exact: str) -> dict[str, object]:
    rss, peak = memory_mb()
    cycle = statistics.median(r.collect_seconds for r in results) if results else float("nan")
    row = {"scenario": name, "cycles": len(results), "cycle_s": cycle, "cpu_pct": 100 * share,
           "rss_mb": rss, "peak_rss_mb": peak, "exact": exact}
    print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    return row


def idle(connections: int, interval: float, seconds: float) -> dict[str, object]:
    a, b = namespaces()
    holders = []
    try:
        holders = start_holders(a, connections)
        results, share, agent = run_agent((a,), interval, seconds)
        agent.close()
    finally:
        for proc in holders:
            proc.kill()
            proc.wait()
        for ns in (a, b):
            subprocess.run(["ip", "netns", "del", ns], check=False)
    return report(f"{connections} idle connections", results, share, "-")


def churn(rate: int, interval: float, seconds: float) -> dict[str, object]:
    a, b = namespaces()
    try:
        servers = start_servers(b, 8080, workers=2)
        clients = start_clients(a, "10.254.0.2", 8080, rate, seconds, procs=max(1, rate // 1700))
        results, share, agent = run_agent((a, b), interval, seconds + 2 * interval)
        tally = finish(clients)
        finish(servers, stop=True)
        counted = sum(c.connection_attempts for r in results for k, c in r.flows.items()
                      if k.netns == a and k.role == CLIENT)
        sent = sum(c.sent_bytes for r in results for k, c in r.flows.items() if k.netns == a and k.role == CLIENT)
        exact = "yes" if (counted, sent) == (tally.connections, tally.sent) else \
            f"no ({counted} of {tally.connections} connections, {sent} of {tally.sent} bytes)"
        agent.close()
    finally:
        for ns in (a, b):
            subprocess.run(["ip", "netns", "del", ns], check=False)
    return report(f"{rate} connections/s", results, share, exact)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0, help="duration of each scenario")
    parser.add_argument("--interval", type=float, default=5.0, help="agent interval")
    parser.add_argument("--idle", type=int, default=10000, help="idle connections held open (0: skip)")
    parser.add_argument("--rates", default="1000,5000", help="comma-separated connection rates")
    args = parser.parse_args()
    rows = [idle(args.idle, args.interval, args.seconds)] if args.idle else []
    rows += [churn(int(rate), args.interval, args.seconds) for rate in args.rates.split(",") if rate]
    print(f"\n{'scenario':>24} {'cycles':>6} {'cycle':>8} {'CPU of a core':>13} {'RSS MB':>7} {'peak MB':>8}  exact")
    for r in rows:
        print(f"{r['scenario']:>24} {r['cycles']:>6} {r['cycle_s']:>7.3f}s {r['cpu_pct']:>12.2f}% "
              f"{r['rss_mb']:>7.1f} {r['peak_rss_mb']:>8.1f}  {r['exact']}")


if __name__ == "__main__":
    main()
