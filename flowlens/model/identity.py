"""Which service-map node a flow end belongs to, at each map level.

An end (the local or remote half of a stored row, fields without their ``local_``/``remote_``
prefix, plus ``ip``) is first classed: a Kubernetes object when enrichment gave it a namespace,
a host when it is only a node's address, a cloud service when the provider's ranges named it,
external otherwise. The level then says which fields name the node, as a coalesce list so that
a bare pod stands for its own workload and a Service whose backend is unknown still gets a
name. External addresses stay one node per IP where the map is detailed (pod, workload) and
collapse into one node where it is an overview (namespace, zone).

Engines compile ``END_CLASSES`` and ``NODE_RULES`` into their query language;
``map_node`` applies them to one end in Python.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from flowlens.model.queries import MapLevel, MapNode, NodeKind

END_FIELDS = ("ip", "pod", "namespace", "workload", "workload_kind", "service", "node", "zone", "instance_type",
              "cloud_service", "region")


class EndClass(StrEnum):
    K8S = "k8s"
    HOST = "host"
    CLOUD = "cloud"
    EXTERNAL = "external"


# First match wins; each entry is the field that must be non-null (EXTERNAL: none).
END_CLASSES: tuple[tuple[EndClass, str | None], ...] = (
    (EndClass.K8S, "namespace"),
    (EndClass.HOST, "node"),
    (EndClass.CLOUD, "cloud_service"),
    (EndClass.EXTERNAL, None),
)


@dataclass(frozen=True, slots=True)
class Const:
    value: str


@dataclass(frozen=True, slots=True)
class NodeRule:
    kind: NodeKind
    name: tuple[str | Const, ...]  # the first non-null of these end fields / constants
    namespace: str | None = None   # end field giving MapNode.namespace
    region: str | None = None      # end field giving MapNode.region


_HOST = NodeRule(NodeKind.HOST, ("node",))
_CLOUD = NodeRule(NodeKind.CLOUD, ("cloud_service",), region="region")
_EXTERNAL_BY_IP = NodeRule(NodeKind.EXTERNAL, ("ip",))
_EXTERNAL_ONE = NodeRule(NodeKind.EXTERNAL, (Const("external"),))
_ZONE = NodeRule(NodeKind.ZONE, ("zone", Const("unknown")))

NODE_RULES: dict[MapLevel, dict[EndClass, NodeRule]] = {
    MapLevel.POD: {
        EndClass.K8S: NodeRule(NodeKind.POD, ("pod", "service", "ip"), namespace="namespace"),
        EndClass.HOST: _HOST, EndClass.CLOUD: _CLOUD, EndClass.EXTERNAL: _EXTERNAL_BY_IP,
    },
    MapLevel.WORKLOAD: {
        EndClass.K8S: NodeRule(NodeKind.WORKLOAD, ("workload", "pod", "service", "ip"), namespace="namespace"),
        EndClass.HOST: _HOST, EndClass.CLOUD: _CLOUD, EndClass.EXTERNAL: _EXTERNAL_BY_IP,
    },
    MapLevel.NAMESPACE: {
        EndClass.K8S: NodeRule(NodeKind.NAMESPACE, ("namespace",), namespace="namespace"),
        EndClass.HOST: _HOST, EndClass.CLOUD: _CLOUD, EndClass.EXTERNAL: _EXTERNAL_ONE,
    },
    MapLevel.ZONE: {
        EndClass.K8S: _ZONE, EndClass.HOST: _ZONE, EndClass.CLOUD: _CLOUD, EndClass.EXTERNAL: _EXTERNAL_ONE,
    },
}


def end_of(row: Mapping[str, Any], side: str) -> dict[str, Any]:
    """The ``local`` or ``remote`` half of a stored row, as end-relative fields."""
    return {name: row[f"{side}_{name}"] for name in END_FIELDS}


def end_class(end: Mapping[str, Any]) -> EndClass:
    for cls, required in END_CLASSES:
        if required is None or end[required] is not None:
            return cls
    raise AssertionError("END_CLASSES ends with a catch-all")


def map_node(level: MapLevel, end: Mapping[str, Any]) -> MapNode:
    rule = NODE_RULES[MapLevel(level)][end_class(end)]
    name = next(part.value if isinstance(part, Const) else end[part] for part in rule.name
                if isinstance(part, Const) or end[part] is not None)
    return MapNode(rule.kind, name, end[rule.namespace] if rule.namespace else None,
                   end[rule.region] if rule.region else None)


def client_side(row: Mapping[str, Any]) -> tuple[str, str]:
    """(client side, server side) of a stored row: edges and flow rows point client → server."""
    return ("local", "remote") if row["role"] == "client" else ("remote", "local")
