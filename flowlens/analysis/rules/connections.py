"""``blocked_connections``: connections between workloads a Service relates time out (their SYNs
are dropped: a NetworkPolicy or security group); ``no_ready_endpoints``: they are refused at
once because the Service has no ready backend (e.g. scaled to zero)."""

from __future__ import annotations

from flowlens.analysis.context import Context
from flowlens.model.findings import Finding

MIN_FAILED_SHARE = 0.2


def findings(ctx: Context) -> list[Finding]:
    groups: dict[tuple[str, str, int, bool], dict[str, int]] = {}
    for row in ctx.cluster_rows:
        if not row.connections_failed or not row.client.workload or not row.server.service:
            continue
        # A SYN that was dropped is retransmitted and times out; a refused one is not.
        silent = row.rto > 0 or row.retransmitted_segments > 0
        server = f"{row.server.namespace}/{row.server.workload or row.server.service}"
        key = (f"{row.client.namespace}/{row.client.workload}", server, row.server_port, silent)
        totals = groups.setdefault(key, {"attempts": 0, "failed": 0, "timeouts": 0})
        totals["attempts"] += row.connection_attempts
        totals["failed"] += row.connections_failed
        totals["timeouts"] += row.rto
    out = []
    for (client, server, port, silent), totals in sorted(groups.items()):
        if totals["failed"] < max(1, MIN_FAILED_SHARE * totals["attempts"]):
            continue
        if silent:
            out.append(Finding(
                kind="blocked_connections", severity="critical",
                title=f"{client} cannot connect to {server} on port {port}: connections time out",
                window=ctx.window, where={"workloads": [client, server], "ports": [str(port)]},
                evidence=totals, impact={"failed_connections": totals["failed"]},
                recommendation=(f"Something drops {client} → {server} TCP/{port} silently: check NetworkPolicies "
                                f"in both namespaces and the nodes' security groups for a rule that should allow "
                                f"it."),
            ))
        else:
            out.append(Finding(
                kind="no_ready_endpoints", severity="warning",
                title=f"{client} is refused by {server} on port {port}: no ready backend",
                window=ctx.window, where={"workloads": [client, server], "ports": [str(port)]},
                evidence=totals, impact={"failed_connections": totals["failed"]},
                recommendation=("The Service had no ready endpoints when clients called: keep a minimum replica "
                                "count above zero for workloads called directly, or make clients retry."),
            ))
    return out
