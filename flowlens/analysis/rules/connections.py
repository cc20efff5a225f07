"""``blocked_connections``: connections between two workloads time out (nothing answers their
SYNs: a NetworkPolicy or security group drops them); ``no_ready_endpoints``: they are refused
(a reset answers the SYN: nothing listens, e.g. a Service scaled to zero).

The agent tells the two apart per connection (``connections_timed_out``,
``connections_refused``), so a cold start's refusals and a block's silence are never mixed up,
whatever else the same flow did. A bucket of the window where at least a fifth of a pair's
attempts ended so (and at least :data:`MIN_FAILED`) is enough: short faults show in long
windows too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flowlens.analysis.context import Context
from flowlens.analysis.text import count
from flowlens.model.findings import Finding

MIN_SHARE = 0.2
MIN_FAILED = 2


@dataclass
class _Pair:
    attempts: int = 0
    timed_out: int = 0
    refused: int = 0
    buckets: list[tuple[float, float]] = field(default_factory=list)


def findings(ctx: Context) -> tuple[list[Finding], set[tuple[str, str]]]:
    """The findings, and the (client, server) workload pairs found blocked (their other
    troubles are the block's)."""
    blocked: dict[tuple[str, str, int], _Pair] = {}
    refused: dict[tuple[str, str, int], _Pair] = {}
    for bucket in ctx.buckets():
        pairs: dict[tuple[str, str, int], _Pair] = {}
        for row in ctx.rows_between(*bucket):
            if not row.connection_attempts or not row.client.workload:
                continue
            server = row.server.workload or row.server.service or row.server.ip
            key = (f"{row.client.namespace}/{row.client.workload}",
                   f"{row.server.namespace}/{server}" if row.server.namespace else server, row.server_port)
            pair = pairs.setdefault(key, _Pair())
            pair.attempts += row.connection_attempts
            pair.timed_out += row.connections_timed_out
            pair.refused += row.connections_refused
        for key, pair in pairs.items():
            for failed, seen in ((pair.timed_out, blocked), (pair.refused, refused)):
                if failed >= MIN_FAILED and failed >= MIN_SHARE * pair.attempts:
                    total = seen.setdefault(key, _Pair())
                    total.attempts += pair.attempts
                    total.timed_out += pair.timed_out
                    total.refused += pair.refused
                    total.buckets.append(bucket)
    out = [_blocked(ctx, key, pair) for key, pair in sorted(blocked.items())]
    out += [_refused(ctx, key, pair) for key, pair in sorted(refused.items())]
    return out, {(client, server) for client, server, _port in blocked}


def _evidence(pair: _Pair) -> dict:
    return {"attempts": pair.attempts, "timed_out": pair.timed_out, "refused": pair.refused,
            "first_seen": min(b[0] for b in pair.buckets), "last_seen": max(b[1] for b in pair.buckets)}


def _blocked(ctx: Context, key: tuple[str, str, int], pair: _Pair) -> Finding:
    client, server, port = key
    return Finding(
        kind="blocked_connections", severity="critical",
        title=f"{client} cannot connect to {server} on port {port}: "
              f"{count(pair.timed_out, 'connection')} timed out",
        window=ctx.window, where={"workloads": [client, server], "ports": [str(port)]},
        evidence=_evidence(pair), impact={"failed_connections": pair.timed_out},
        recommendation=(f"Something drops {client} → {server} TCP/{port} silently (no answer to the SYN): check "
                        "NetworkPolicies in both namespaces and the nodes' security groups for a rule that should "
                        "allow it."),
    )


def _refused(ctx: Context, key: tuple[str, str, int], pair: _Pair) -> Finding:
    client, server, port = key
    return Finding(
        kind="no_ready_endpoints", severity="warning",
        title=f"{client} is refused by {server} on port {port}: {count(pair.refused, 'connection')} refused",
        window=ctx.window, where={"workloads": [client, server], "ports": [str(port)]},
        evidence=_evidence(pair), impact={"failed_connections": pair.refused},
        recommendation=("Nothing listened when clients called (the far end reset the connection): the Service had "
                        "no ready endpoint, or its pods were starting or stopping. Keep a minimum replica count "
                        "above zero for workloads called directly, use readiness probes, or make clients retry."),
    )
