"""``cross_zone_traffic``: a Service's clients reach its backends in another availability zone
(latency and inter-AZ cost); ``topology_aware_routing_effective`` once routing keeps it local."""

from __future__ import annotations

from flowlens.analysis.context import Context
from flowlens.model.findings import Finding
from flowlens.model.queries import View

MIN_SHARE = 0.2
BY_WORKLOAD_AND_ZONE = frozenset({"namespace", "workload", "service", "zone"})


def findings(ctx: Context) -> list[Finding]:
    pairs: dict[tuple[str, str, str], dict[str, int]] = {}
    zones: dict[tuple[str, str, str], set[str]] = {}
    # Summed by workload, Service and zone in the store: every flow counts, however many there are.
    for row in ctx.grouped(BY_WORKLOAD_AND_ZONE, view=View.CLUSTER):
        if not (row.client.workload and row.server.workload and row.server.service):
            continue
        key = (f"{row.client.namespace}/{row.client.workload}", f"{row.server.namespace}/{row.server.workload}",
               f"{row.server.namespace}/{row.server.service}")
        totals = pairs.setdefault(key, {"bytes": 0, "inter_az": 0})
        totals["bytes"] += row.total_bytes
        if row.category == "INTER_AZ":
            totals["inter_az"] += row.total_bytes
            zones.setdefault(key, set()).update(z for z in (row.client.zone, row.server.zone) if z)
    out = []
    for (client, server, service), totals in sorted(pairs.items()):
        if not totals["bytes"]:
            continue
        share = totals["inter_az"] / totals["bytes"]
        namespace, name = service.split("/", 1)
        routed = (namespace, name) in ctx.inventory.topology_aware
        if share >= MIN_SHARE:
            out.append(_cross_zone(ctx, client, server, service, totals, share, sorted(zones.get(
                (client, server, service), set())), routed))
        elif routed:
            out.append(_effective(ctx, client, server, service, totals, share))
    return out


def _cross_zone(ctx: Context, client: str, server: str, service: str, totals: dict[str, int], share: float,
                zones: list[str], routed: bool) -> Finding:
    cost = totals["inter_az"] / 1e9 * ctx.cost_per_gb_each_way * 2  # charged in each direction
    advice = (f"Turn on topology-aware routing for {service} (annotation service.kubernetes.io/topology-mode: "
              "Auto, or trafficDistribution: PreferClose) and run backends in every client zone, so requests "
              "stay in their zone.")
    if routed:
        advice = (f"{service} has topology-aware routing on, yet traffic still crosses zones: there are no "
                  "ready backends in the clients' zone; spread the backends across zones.")
    return Finding(
        kind="cross_zone_traffic", severity="warning",
        title=f"{client} reaches {server} across availability zones ({share:.0%} of its bytes)",
        window=ctx.window, where={"workloads": [client, server], "services": [service], "zones": zones},
        evidence={"inter_az_bytes": totals["inter_az"], "total_bytes": totals["bytes"], "inter_az_share": share,
                  "topology_aware_routing": routed},
        impact={"estimated_transfer_cost_usd": round(cost, 6),
                "note": "every request pays the inter-zone round trip in latency"},
        recommendation=advice,
    )


def _effective(ctx: Context, client: str, server: str, service: str, totals: dict[str, int],
               share: float) -> Finding:
    return Finding(
        kind="topology_aware_routing_effective", severity="info",
        title=f"{client} → {server} stays in its zone: topology-aware routing of {service} works",
        window=ctx.window, where={"workloads": [client, server], "services": [service]},
        evidence={"inter_az_share": share, "total_bytes": totals["bytes"]}, impact={},
        recommendation="Nothing to do.",
    )
