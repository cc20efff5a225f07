"""Seeded random flow rows covering every kind of end, role and category, at 5 s intervals."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

from tests.collector.rows import STEP, cloud, end, external, flow, host, pod

PODS = [
    pod("web-1", "a", "web", "n1", "z1", "10.1.0.1", service="web"),
    pod("web-2", "a", "web", "n2", "z2", "10.1.0.2", service="web"),
    pod("job-x", "a", None, "n2", "z2", "10.1.0.3"),  # a bare pod: its own workload
    pod("db-1", "b", "db", "n3", None, "10.1.0.4", service="db"),  # a node without a zone label
    pod("db-2", "b", "db", "n1", "z1", "10.1.0.5", service="db"),
    pod("ml-1", "c", "ml", "n3", "z2", "10.1.0.6"),
]
HOSTS = [host("n1", "z1", "192.168.0.1"), host("n2", "z2", "192.168.0.2")]
SERVICE_ONLY = end(ip="10.96.0.10", namespace="b", service="cache")  # a ClusterIP whose backend is unknown
OUTSIDE = [cloud("S3", "52.216.0.1"), cloud("DYNAMODB", "3.218.0.1"), cloud("S3", "52.218.0.9", "eu-west-1"),
           external("8.8.8.8"), external("1.1.1.1"), external("203.0.113.9")]
CATEGORIES = ["INTRA_AZ", "INTER_AZ", "AMAZON_S3", "AMAZON_DYNAMODB", "INTER_REGION", "UNCLASSIFIED"]


def templates(rng: random.Random, count: int) -> list[dict[str, Any]]:
    out = []
    for _ in range(count):
        local = rng.choice(PODS + HOSTS)
        remote = rng.choice([*PODS, *HOSTS, SERVICE_ONLY, *OUTSIDE])
        role = rng.choice(["client", "server"])
        client, server = (local, remote) if role == "client" else (remote, local)
        out.append({"client": client, "server": server, "seen_by": role, "port": rng.choice([80, 443, 5432]),
                    "category": rng.choice(CATEGORIES)})
    return out


def random_rows(seed: int, start: datetime, duration: timedelta, flows: int = 20,
                active: float = 0.5) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    chosen = templates(rng, flows)
    rows, t = [], start
    while t < start + duration:
        for tpl in chosen:
            if rng.random() < active:
                rows.append(flow(t, tpl["client"], tpl["server"], tpl["port"], seen_by=tpl["seen_by"],
                                 category=tpl["category"], **counters(rng)))
        t += STEP
    return rows


def counters(rng: random.Random) -> dict[str, int]:
    samples = rng.choice([0, 1, 3])
    return {"sent_bytes": rng.randrange(0, 10**6), "received_bytes": rng.randrange(0, 10**6),
            "sent_segments": rng.randrange(0, 1000), "received_segments": rng.randrange(0, 1000),
            "retransmitted_segments": rng.choice([0, 0, rng.randrange(1, 50)]),
            "retransmitted_bytes": rng.randrange(0, 5000), "rto": rng.choice([0, 0, 0, 1, 2]),
            "received_out_of_order": rng.choice([0, 3]), "connection_attempts": rng.randrange(0, 4),
            "connections_established": rng.randrange(0, 4), "connections_failed": rng.choice([0, 0, 1]),
            "active_sockets": rng.randrange(0, 9), "rtt_sum_us": samples * rng.randrange(100, 90_000),
            "rtt_samples": samples}
