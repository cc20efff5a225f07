"""Benchmark: the agent's collection cycle against `ss -tin` on the same sockets.

Creates a network namespace, fills it with N established loopback connections (2N sockets)
held by several processes (a process may hold at most 20,000 files here), then measures in
the same run:
  - the agent's cycle (dump + accounting of every socket, the flow series and the /metrics
    snapshot): median wall and CPU time over several cycles;
  - `ss -tin` dumping the same sockets (output discarded): median wall and CPU time;
  - the agent's resident memory after the cycles.
Prints one line per size and a summary table. Not a test: it asserts nothing.

    sudo .venv/bin/python bench/agent_cycle.py [--sizes 10000,50000] [--cycles 7]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from flowlens.agent.config import AgentConfig
from flowlens.agent.runtime import Agent
from flowlens.agent.sampling.sampler import Sampler

PER_PROCESS = 8000  # connections per holder process: 2 sockets each, under the 20,000-file limit

HOLDER = r"""
import socket, sys
port, count = int(sys.argv[1]), int(sys.argv[2])
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port))
srv.listen(4096)
held = []
for _ in range(count):
    c = socket.create_connection(("127.0.0.1", port))
    s, _ = srv.accept()
    c.sendall(b"x" * 100)
    s.recv(100)
    held += (c, s)
print("ready", flush=True)
sys.stdin.read()
"""


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def start_holders(ns: str, connections: int) -> list[subprocess.Popen[str]]:
    holders, left, port = [], connections, 20000
    while left > 0:
        count = min(PER_PROCESS, left)
        command = ["ip", "netns", "exec", ns, sys.executable, "-c", HOLDER, str(port), str(count)]
        holders.append(subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
        left -= count
        port += 1
    for proc in holders:
        line = proc.stdout.readline() if proc.stdout else ""
        if line.strip() != "ready":
            raise SystemExit(f"a holder process failed to open its connections (got {line!r})")
    return holders


def time_ss(ns: str, runs: int) -> tuple[float, float]:
    walls, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(["nsenter", f"--net=/run/netns/{ns}", "ss", "-tin"], stdout=subprocess.DEVNULL, check=True)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return statistics.median(walls), statistics.median(cpus)


def time_agent(ns: str, cycles: int) -> tuple[float, float, float, float, int]:
    # Watch only the benchmark's namespace: /run/netns of its own, so other namespaces don't count.
    run_dir = f"/tmp/flowlens-bench-{ns}"
    os.makedirs(run_dir, exist_ok=True)
    link = os.path.join(run_dir, ns)
    if not os.path.exists(link):
        os.symlink(f"/run/netns/{ns}", link)
    agent = Agent(AgentConfig(interval=5.0, node="bench"), Sampler(run_netns=run_dir))
    agent.start()
    walls, cpus, sampler_walls = [], [], []
    sockets = 0
    for _ in range(cycles):
        start, cpu = time.perf_counter(), time.process_time()
        result = agent.run_cycle()
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
        sampler_walls.append(result.collect_seconds)
        sockets = result.sockets
    agent.sampler.close()
    return statistics.median(walls), statistics.median(cpus), statistics.median(sampler_walls), rss_mb(), sockets


def bench(connections: int, cycles: int) -> dict[str, float]:
    ns = f"flbench-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    holders: list[subprocess.Popen[str]] = []
    try:
        subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65000"],
                       check=True)
        # The holders' listen ports: keep them out of the ephemeral range, or one holder's
        # connections can take the port of a holder that has not bound it yet.
        subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_local_reserved_ports=20000-20999"],
                       check=True)
        holders = start_holders(ns, connections)
        ss_wall, ss_cpu = time_ss(ns, cycles)
        wall, cpu, sampler_wall, rss, sockets = time_agent(ns, cycles)
        ss_wall2, ss_cpu2 = time_ss(ns, cycles)  # again after, in case the machine got busier
        ss_wall, ss_cpu = statistics.median([ss_wall, ss_wall2]), statistics.median([ss_cpu, ss_cpu2])
    finally:
        for proc in holders:
            proc.kill()
            proc.wait()
        subprocess.run(["ip", "netns", "del", ns], check=False)
    row = {"connections": connections, "sockets": sockets, "cycle_wall_s": wall, "cycle_cpu_s": cpu,
           "dump_and_account_wall_s": sampler_wall, "ss_wall_s": ss_wall, "ss_cpu_s": ss_cpu,
           "ratio_wall": wall / ss_wall, "ratio_cpu": cpu / ss_cpu if ss_cpu else float("nan"), "rss_mb": rss}
    print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,50000", help="comma-separated connection counts")
    parser.add_argument("--cycles", type=int, default=7, help="cycles (and ss runs) per size; medians are reported")
    args = parser.parse_args()
    rows = [bench(int(size), args.cycles) for size in args.sizes.split(",")]
    print(f"\n{'connections':>11} {'sockets':>8} {'cycle wall':>11} {'cycle cpu':>10} {'ss wall':>9} "
          f"{'ss cpu':>8} {'wall ratio':>10} {'cpu ratio':>9} {'rss MB':>7}")
    for r in rows:
        print(f"{r['connections']:>11} {r['sockets']:>8} {r['cycle_wall_s']:>10.3f}s {r['cycle_cpu_s']:>9.3f}s "
              f"{r['ss_wall_s']:>8.3f}s {r['ss_cpu_s']:>7.3f}s {r['ratio_wall']:>10.2f} {r['ratio_cpu']:>9.2f} "
              f"{r['rss_mb']:>7.1f}")


if __name__ == "__main__":
    main()
