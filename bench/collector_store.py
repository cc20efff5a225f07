"""Benchmark: the DuckDB flow store's ingest rate and query times at 10 M and 50 M intervals.

A synthetic cluster (200 nodes in 3 zones, 3,000 pods of 150 workloads in 40 namespaces) talks
east-west (both agents report each connection), to S3 and DynamoDB, to internet hosts, and
is called by internet visitors; every 5 s about 20,000 flow intervals are reported. For each
size, in a fresh store file on disk:

  - ingest: the whole size through ``append_report`` in reports of --batch rows (one durable
    transaction each, as the ingest endpoint does), rollups run every simulated minute;
    then, in side stores: the same reports from 4 threads (group commit), groups of 10
    reports per call, and large batches;
  - queries, each run 3 times (first and median shown): service map at workload level for
    all namespaces over the last hour and the whole range, from rollups and from raw rows
    only; a one-namespace map; the pod-level map; top 100 of each view by bytes and by
    retransmissions; a pod's series at 1-minute steps.

Prints figures, asserts nothing. Data is generated in 5 s chunks (memory stays bounded).

    .venv/bin/python bench/collector_store.py [--sizes 10000000,50000000] [--dir /var/tmp/flowlens-bench]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from flowlens.collector.store import ReportBatch
from flowlens.collector.store.duckdb import DuckDBStore
from flowlens.model.queries import FlowFilter, MapLevel, PodSubject, TopBy, View
from flowlens.model.records import FLOW_COUNTER_COLUMNS, FLOW_SCHEMA

STEP = timedelta(seconds=5)
START = datetime(2026, 11, 2, 6, 0, tzinfo=UTC)
NODES, ZONES, NAMESPACES, WORKLOADS, PODS = 200, ("us-east-1a", "us-east-1b", "us-east-1c"), 40, 150, 3000
END_FIELDS = ("pod", "namespace", "workload", "workload_kind", "service", "node", "zone", "instance_type",
              "cloud_service", "region")


# -- the synthetic cluster ------------------------------------------------------------------------


def cluster(rng: np.random.Generator) -> list[dict[str, Any]]:
    node_zone = [ZONES[n % 3] for n in range(NODES)]
    pods = []
    for p in range(PODS):
        w = p % WORKLOADS
        node = int(rng.integers(NODES))
        ns = f"ns-{w % NAMESPACES:02d}"
        pods.append({"ip": f"10.{p // 65536}.{(p // 256) % 256}.{p % 256}", "pod": f"w{w:03d}-{p:04d}",
                     "namespace": ns, "workload": f"w{w:03d}", "workload_kind": "Deployment",
                     "service": f"w{w:03d}", "node": f"node-{node:03d}", "zone": node_zone[node],
                     "instance_type": "g5.2xlarge", "cloud_service": None, "region": "us-east-1"})
    return pods


def peer(ip: str, service: str | None = None) -> dict[str, Any]:
    end = dict.fromkeys(END_FIELDS)
    end.update(ip=ip, cloud_service=service, region="us-east-1" if service else None)
    return end


def templates(rng: np.random.Generator) -> tuple[pa.Table, np.ndarray]:
    """Every (flow, reporting end) row the cluster can send, without times and counters."""
    pods = cluster(rng)
    by_workload: dict[int, list[int]] = {}
    for p in range(PODS):
        by_workload.setdefault(p % WORKLOADS, []).append(p)
    calls = {w: rng.choice([x for x in range(WORKLOADS) if x != w], 3, replace=False) for w in range(WORKLOADS)}
    s3 = [peer(f"52.216.{i // 256}.{i % 256}", "S3") for i in range(50)]
    ddb = [peer(f"3.218.0.{i}", "DYNAMODB") for i in range(20)]
    internet = [peer(f"198.51.{i // 256}.{i % 256}") for i in range(500)]
    visitors = [peer(f"203.0.{i // 256}.{i % 256}") for i in range(2000)]
    rows: list[tuple[dict, dict, str, int, str]] = []  # (local, remote, role, port, category)
    for p, client in enumerate(pods):
        for target in calls[p % WORKLOADS]:
            port = (8080, 5432, 6379)[target % 3]
            for s in rng.choice(by_workload[int(target)], int(rng.integers(1, 3)), replace=False):
                server = pods[int(s)]
                category = "INTRA_AZ" if client["zone"] == server["zone"] else "INTER_AZ"
                rows += [(client, server, "client", port, category), (server, client, "server", port, category)]
        if rng.random() < 0.4:
            rows += [(client, s3[int(i)], "client", 443, "AMAZON_S3") for i in rng.choice(50, 2, replace=False)]
        if rng.random() < 0.2:
            rows.append((client, ddb[int(rng.integers(20))], "client", 443, "AMAZON_DYNAMODB"))
        if rng.random() < 0.1:
            rows += [(client, internet[int(i)], "client", 443, "UNCLASSIFIED") for i in rng.choice(500, 2)]
        if p % WORKLOADS < 10:  # front ends, called from the internet
            rows += [(client, visitors[int(i)], "server", 443, "UNCLASSIFIED") for i in rng.choice(2000, 3)]
    columns: dict[str, list] = {name: [] for name in ("node", "netns", "protocol", "role", "local_ip", "remote_ip",
                                                       "server_port", "service_ip", "category")}
    for side in ("local", "remote"):
        for name in END_FIELDS:
            columns[f"{side}_{name}"] = []
    for local, remote, role, port, category in rows:
        columns["node"].append(local["node"])
        columns["netns"].append(f"cni-{local['ip']}")
        columns["protocol"].append("tcp")
        columns["role"].append(role)
        columns["local_ip"].append(local["ip"])
        columns["remote_ip"].append(remote["ip"])
        columns["server_port"].append(port)
        columns["service_ip"].append(None)
        columns["category"].append(category)
        for name in END_FIELDS:
            columns[f"local_{name}"].append(local[name])
            columns[f"remote_{name}"].append(remote[name])
    table = pa.table({name: pa.array(values, FLOW_SCHEMA.field(name).type) for name, values in columns.items()})
    return table, np.array([r[0]["namespace"] == "ns-00" and r[2] == "client" for r in rows])


class Generator:
    """5 s intervals of ~rows_per_interval rows each, drawn from the templates."""

    def __init__(self, rows_per_interval: int, seed: int = 1) -> None:
        self.rng = np.random.default_rng(seed)
        self.templates, _ = templates(self.rng)
        self.active = min(1.0, rows_per_interval / self.templates.num_rows)
        self.some_pod = self.templates["local_pod"][0].as_py(), self.templates["local_namespace"][0].as_py()

    def intervals(self, total: int) -> Iterator[tuple[datetime, pa.Table]]:
        t, made = START, 0
        while made < total:
            idx = np.flatnonzero(self.rng.random(self.templates.num_rows) < self.active)[: total - made]
            yield t, self.interval(t, idx)
            made += len(idx)
            t += STEP

    def interval(self, t: datetime, idx: np.ndarray) -> pa.Table:
        n, rng = len(idx), self.rng
        keys = self.templates.take(idx)
        sent = rng.lognormal(9, 2, n).astype(np.int64)
        received = rng.lognormal(9, 2, n).astype(np.int64)
        retrans = np.where(rng.random(n) < 0.05, rng.integers(1, 40, n), 0)
        samples = rng.integers(1, 4, n)
        counters = {"sent_bytes": sent, "received_bytes": received, "sent_segments": sent // 1400 + 1,
                    "received_segments": received // 1400 + 1, "retransmitted_segments": retrans,
                    "retransmitted_bytes": retrans * 1400, "rto": np.where(rng.random(n) < 0.01, 1, 0),
                    "received_out_of_order": np.where(rng.random(n) < 0.02, rng.integers(1, 9, n), 0),
                    "connection_attempts": rng.integers(0, 3, n), "connections_established": rng.integers(0, 3, n),
                    "connections_failed": np.where(rng.random(n) < 0.005, 1, 0),
                    "active_sockets": rng.integers(1, 8, n).astype(np.int32),
                    "rtt_sum_us": samples * rng.integers(200, 3000, n), "rtt_samples": samples}
        ts = pa.array(np.full(n, int(t.timestamp() * 1000)), pa.timestamp("ms", tz="UTC"))
        te = pa.array(np.full(n, int((t + STEP).timestamp() * 1000)), pa.timestamp("ms", tz="UTC"))
        columns = {"time_start": ts, "time_end": te, **{name: counters[name] for name, _ in FLOW_COUNTER_COLUMNS}}
        for name in keys.column_names:
            columns[name] = keys[name]
        return pa.table([columns[f.name] for f in FLOW_SCHEMA], schema=FLOW_SCHEMA)


# -- measuring ------------------------------------------------------------------------------------


def rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def fresh(path: str) -> str:
    for suffix in ("", ".wal"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    return path


def split(table: pa.Table, batch: int) -> list[pa.Table]:
    return [table.slice(i, batch) for i in range(0, table.num_rows, batch)]


def fill(store: DuckDBStore, gen: Generator, size: int, batch: int) -> dict[str, float]:
    """Sequential reports of ``batch`` rows; rollups every simulated minute (timed apart)."""
    appended = append_s = rollup_s = 0.0
    last_minute, report = None, 0
    next_print = time.perf_counter() + 30
    for t, table in gen.intervals(size):
        for part in split(table, batch):
            t0 = time.perf_counter()
            store.append_report(f"r{report}", part)
            append_s += time.perf_counter() - t0
            report += 1
            appended += part.num_rows
        minute = t.replace(second=0)
        if minute != last_minute:
            t0 = time.perf_counter()
            store.roll_up(t)
            rollup_s += time.perf_counter() - t0
            last_minute = minute
        if time.perf_counter() > next_print:
            print(f"    ... {appended / 1e6:.1f} M rows, {appended / append_s:,.0f} rows/s, data at {t:%H:%M}",
                  flush=True)
            next_print += 30
    store.end = t + STEP  # type: ignore[attr-defined]
    return {"rows": appended, "append_s": append_s, "rollup_s": rollup_s}


def side_ingest(directory: str, gen: Generator, rows: int, batch: int) -> dict[str, float]:
    """Other ways in, each on its own store, after a warm-up that stores every flow key once
    (as in steady state, when flows were seen before): several threads sending reports at
    once (the store groups what queues up into one commit), groups of 10 reports per call,
    and large batches."""
    warm = gen.interval(START - STEP, np.arange(gen.templates.num_rows))
    tables = [part for _, table in gen.intervals(rows) for part in split(table, batch)]
    big = [pa.concat_tables(tables[i:i + 80]) for i in range(0, len(tables), 80)]
    out = {}

    def timed(name: str, run: Callable[[DuckDBStore], None]) -> None:
        with DuckDBStore(fresh(os.path.join(directory, "side.duckdb"))) as store:
            store.append_report("warm-up", warm)
            t0 = time.perf_counter()
            run(store)
            out[name] = rows / (time.perf_counter() - t0)

    def threads(n: int) -> Callable[[DuckDBStore], None]:
        def run(store: DuckDBStore) -> None:
            def send(k: int) -> None:
                for i in range(k, len(tables), n):
                    store.append_report(f"t{i}", tables[i])
            workers = [threading.Thread(target=send, args=(k,)) for k in range(n)]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
        return run

    def groups(store: DuckDBStore) -> None:
        for i in range(0, len(tables), 10):
            store.append_reports([ReportBatch(f"g{j}", tables[j]) for j in range(i, min(i + 10, len(tables)))])

    def large(store: DuckDBStore) -> None:
        for i, table in enumerate(big):
            store.append_report(f"b{i}", table)

    timed(f"1 thread, reports of {batch:,}", threads(1))
    timed(f"4 threads, reports of {batch:,}", threads(4))
    timed(f"16 threads, reports of {batch:,}", threads(16))
    timed(f"groups of 10 reports of {batch:,}", groups)
    timed(f"batches of {big[0].num_rows:,}", large)
    return out


def measure(run: Callable[[], Any], times: int = 3) -> tuple[float, float, Any]:
    durations, result = [], None
    for _ in range(times):
        t0 = time.perf_counter()
        result = run()
        durations.append(time.perf_counter() - t0)
    return durations[0], statistics.median(durations), result


def queries(store: DuckDBStore, gen: Generator) -> list[tuple[str, float, float, str]]:
    end: datetime = store.end  # type: ignore[attr-defined]
    last_hour, everything = FlowFilter(since=end - timedelta(hours=1), until=end), FlowFilter()
    pod, namespace = gen.some_pod
    out = []

    def q(name: str, run: Callable[[], Any], describe: Callable[[Any], str]) -> Any:
        first, median, result = measure(run)
        out.append((name, first, median, describe(result)))
        print(f"    {name:55s} first {first * 1000:8.1f} ms   median {median * 1000:8.1f} ms   {describe(result)}",
              flush=True)
        return result

    def edges(m: Any) -> str:
        return f"{len(m.edges):,} edges, {len(m.nodes):,} nodes, {len(m.groups)} groups"

    for label, flt in (("last 1 h", last_hour), ("whole range", everything)):
        rolled = q(f"service map, workload, all namespaces, {label}", lambda f=flt: store.service_map(f), edges)
        store.read_rollups = False
        raw = q(f"  same from raw rows only, {label}", lambda f=flt: store.service_map(f), edges)
        store.read_rollups = True
        print(f"    rollups == raw: {rolled == raw}")
    q("service map, workload, one namespace, whole range",
      lambda: store.service_map(FlowFilter(namespaces=(namespace,))), edges)
    q("service map, pod level, all namespaces, last 1 h", lambda: store.service_map(last_hour, MapLevel.POD), edges)
    for label, flt in (("last 1 h", last_hour), ("whole range", everything)):
        for view in View:
            for by in (TopBy.BYTES, TopBy.RETRANSMISSIONS):
                q(f"top 100, {view} view, by {by}, {label}", lambda f=flt, v=view, b=by: store.flow_table(f, v, b, 100),
                  lambda rows: f"{len(rows)} rows")
    q("series of one pod, 1 min steps, whole range",
      lambda: store.timeseries(FlowFilter(), PodSubject(namespace, pod), timedelta(minutes=1)),
      lambda s: f"{len(s.points)} points")
    return out


def run_size(size: int, args: argparse.Namespace, gen: Generator) -> None:
    path = fresh(os.path.join(args.dir, f"store-{size}.duckdb"))
    print(f"\n== {size:,} flow intervals ({gen.templates.num_rows:,} possible flow rows, "
          f"{gen.active:.0%} active per 5 s) -> {path}", flush=True)
    with DuckDBStore(path) as store:
        t0 = time.perf_counter()
        f = fill(store, gen, size, args.batch)
        wall = time.perf_counter() - t0
        t1 = time.perf_counter()
        store.roll_up(store.end)  # type: ignore[attr-defined]
        final_rollup = time.perf_counter() - t1
        span = store.end - START  # type: ignore[attr-defined]
        print(f"  ingest, reports of {args.batch:,} rows, one transaction each: {f['rows'] / f['append_s']:,.0f} rows/s"
              f" ({f['rows']:,.0f} rows in {f['append_s']:.1f} s of append calls; span {span})")
        with_rollups = f["rows"] / (f["append_s"] + f["rollup_s"])
        print(f"  rollups while ingesting: {f['rollup_s']:.1f} s in all -> {with_rollups:,.0f} rows/s with them; "
              f"last roll-up {final_rollup:.2f} s; wall incl. data generation {wall:.0f} s")
        print(f"  tables: {store.table_rows()}")
        wal = os.path.getsize(path + ".wal") / 2**20 if os.path.exists(path + ".wal") else 0
        print(f"  file: {os.path.getsize(path) / 2**30:.2f} GiB (+ wal {wal:.0f} MiB); peak RSS {rss_gib():.1f} GiB")
        print("  queries (file on disk, warm page cache):")
        queries(store, gen)
    if args.side:
        rows = min(size // 5, 3_000_000)
        print(f"  other ingest paths, {rows:,} rows each into fresh stores:")
        for name, rate in side_ingest(args.dir, Generator(args.rows_per_interval, seed=2), rows, args.batch).items():
            print(f"    {name:24s} {rate:,.0f} rows/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000000,50000000")
    parser.add_argument("--dir", default="/var/tmp/flowlens-bench")
    parser.add_argument("--batch", type=int, default=3000, help="rows per report")
    parser.add_argument("--rows-per-interval", type=int, default=20_000)
    parser.add_argument("--no-side", dest="side", action="store_false", help="skip the other ingest paths")
    parser.add_argument("--keep", action="store_true", help="keep the store files")
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    t0 = time.perf_counter()
    gen = Generator(args.rows_per_interval)
    print(f"cluster: {NODES} nodes, {PODS} pods, {WORKLOADS} workloads, {NAMESPACES} namespaces; "
          f"{gen.templates.num_rows:,} flow rows possible; templates built in {time.perf_counter() - t0:.1f} s; "
          f"{os.cpu_count()} CPUs")
    for size in (int(s) for s in args.sizes.split(",")):
        run_size(size, args, Generator(args.rows_per_interval))
    if not args.keep:
        shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
