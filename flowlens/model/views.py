"""What the flow-table views, the filter and the top-by rankings mean, once for every engine.

Rows are the stored flow intervals (``FLOW_SCHEMA``): one per reporting agent, so a flow
between two monitored pods is stored twice, once by each end (``role`` client and server).
The rules here decide how those rows combine:

* views classify a row by its *remote* end: a cloud service (``aws``), a cluster pod, node or
  service (``cluster``), or neither (``external``). Both observations of an east-west flow fall
  in the cluster view, so a view never splits a flow;
* ``counts_traffic``: bytes and connection counts of a connection are taken from one row
  only: the client's, or the server's when the client has no agent (its address is not on a
  cluster node). Retransmissions, timeouts, out-of-order segments and RTT samples are kept
  from both rows: each end measures its own sending;
* ``TOP_BY_ORDER``: the flow-table ranking keys, all descending, ties broken by bytes.
"""

from __future__ import annotations

from flowlens.model.predicates import TRUE, Eq, In, IsNull, Pred, all_of, any_of, not_null
from flowlens.model.queries import FlowFilter, TopBy, View

REMOTE_IN_CLUSTER: Pred = any_of(not_null("remote_namespace"), not_null("remote_node"))
REMOTE_IS_CLOUD: Pred = not_null("remote_cloud_service")

VIEWS: dict[View, Pred] = {
    View.AWS: REMOTE_IS_CLOUD,
    View.CLUSTER: REMOTE_IN_CLUSTER,
    View.EXTERNAL: all_of(IsNull("remote_namespace"), IsNull("remote_node"), IsNull("remote_cloud_service")),
}

# A remote end with a node runs an agent that reports the same connection from its side.
REMOTE_OBSERVED: Pred = not_null("remote_node")
COUNTS_TRAFFIC: Pred = any_of(Eq("role", "client"), IsNull("remote_node"))

# FlowRow / Edge attribute names, highest first; the engine sorts NULL (no RTT sample) last.
TOP_BY_ORDER: dict[TopBy, tuple[str, ...]] = {
    TopBy.BYTES: ("total_bytes",),
    TopBy.RETRANSMISSIONS: ("retransmitted_segments", "total_bytes"),
    TopBy.TIMEOUTS: ("rto", "total_bytes"),
    TopBy.FAILED: ("connections_failed", "total_bytes"),
    TopBy.RTT: ("rtt_mean_us", "total_bytes"),
}


def view_predicate(view: View | None) -> Pred:
    return TRUE if view is None else VIEWS[View(view)]


def filter_predicate(flt: FlowFilter) -> Pred:
    """Everything of the filter except its time range (engines prune time by their own means)."""
    parts: list[Pred] = []
    if flt.namespaces:
        parts.append(_either_end("namespace", flt.namespaces))
    if flt.nodes:
        parts.append(any_of(In("node", flt.nodes), _either_end("node", flt.nodes)))
    if flt.workloads:
        parts.append(any_of(*(_workload(spec) for spec in flt.workloads)))
    if flt.categories:
        parts.append(In("category", flt.categories))
    return all_of(*parts)


def _either_end(field: str, values: tuple[str, ...]) -> Pred:
    return any_of(In(f"local_{field}", values), In(f"remote_{field}", values))


def _workload(spec: str) -> Pred:
    namespace, _, name = spec.rpartition("/")
    ends = []
    for side in ("local", "remote"):
        match = Eq(f"{side}_workload", name)
        ends.append(all_of(Eq(f"{side}_namespace", namespace), match) if namespace else match)
    return any_of(*ends)


def order_key(row: object, by: TopBy) -> tuple:
    """Python sort key equal to the engines' ORDER BY (for in-memory results and tests)."""
    key = []
    for name in TOP_BY_ORDER[TopBy(by)]:
        value = getattr(row, name)
        key += [value is None, -(value or 0)]
    return tuple(key)
