"""Query endpoints of the collector's HTTP API: service map, flow table, time series.

Every endpoint takes the same filter parameters (``since``, ``until``, ``namespace``,
``node``, ``workload``, ``category``, repeatable where it makes sense), turned into the one
:class:`FlowFilter` the CLI and the diagnosis also use.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import Body, FastAPI, HTTPException, Query

from flowlens.collector.events import MAX_EVENTS_PER_POST, EventIn
from flowlens.collector.service import Collector
from flowlens.model.queries import (
    EdgeSubject,
    FlowFilter,
    MapLevel,
    MapNode,
    NodeKind,
    NodeSubject,
    PodSubject,
    TopBy,
    View,
)
from flowlens.surfaces.jsonable import jsonable
from flowlens.surfaces.timerange import parse_duration, time_range

Since = Annotated[str, Query(description="Start: a duration back from now (10m, 2h, 7d) or an ISO time.")]
Until = Annotated[str | None, Query(description="End (ISO time); now when omitted.")]
Many = Annotated[list[str] | None, Query()]


def make_filter(since: str, until: str | None, namespace: list[str] | None, node: list[str] | None,
                workload: list[str] | None, category: list[str] | None) -> FlowFilter:
    try:
        start, end = time_range(since, until)
        return FlowFilter(since=start, until=end, namespaces=tuple(namespace or ()), nodes=tuple(node or ()),
                          workloads=tuple(workload or ()), categories=tuple(category or ()))
    except ValueError as err:
        raise HTTPException(422, str(err)) from None


def register(app: FastAPI, collector: Collector) -> None:
    store = collector.store

    @app.get("/api/v1/map", summary="Service map: nodes, edges (client → server) and namespace groups")
    def service_map(since: Since = "1h", until: Until = None, level: MapLevel = MapLevel.WORKLOAD,
                    namespace: Many = None, node: Many = None, workload: Many = None,
                    category: Many = None) -> dict[str, Any]:
        flt = make_filter(since, until, namespace, node, workload, category)
        return jsonable(store.service_map(flt, level))

    @app.get("/api/v1/flows", summary="Flow table: a view and its top contributors")
    def flow_table(since: Since = "1h", until: Until = None, view: View | None = None, by: TopBy = TopBy.BYTES,
                   limit: Annotated[int, Query(ge=1, le=3000)] = 50, namespace: Many = None, node: Many = None,
                   workload: Many = None, category: Many = None) -> dict[str, Any]:
        flt = make_filter(since, until, namespace, node, workload, category)
        return {"view": view, "by": by, "flows": jsonable(store.flow_table(flt, view, by, limit))}

    @app.get("/api/v1/timeseries", summary="Bytes, retransmissions and allowance exceeded over time, for a "
             "pod (namespace/name), a node, or an edge (workload level: ns/name → ns/name)")
    def timeseries(since: Since = "1h", until: Until = None, step: str = "1m", pod: str | None = None,
                   node_name: Annotated[str | None, Query(alias="node_name")] = None,
                   source: str | None = None, destination: str | None = None) -> dict[str, Any]:
        flt = make_filter(since, until, None, None, None, None)
        if pod:
            namespace, _, name = pod.partition("/")
            subject: Any = PodSubject(namespace, name)
        elif node_name:
            subject = NodeSubject(node_name)
        elif source and destination:
            subject = EdgeSubject(_workload_node(source), _workload_node(destination), MapLevel.WORKLOAD)
        else:
            raise HTTPException(422, "say which series: pod=NS/NAME, node_name=NODE, or source= and destination=")
        try:
            seconds = parse_duration(step)
        except ValueError as err:
            raise HTTPException(422, str(err)) from None
        return jsonable(store.timeseries(flt, subject, timedelta(seconds=seconds)))


def register_diagnosis(app: FastAPI, collector: Collector) -> None:
    from flowlens.analysis.diagnose import diagnose

    def run(since: str) -> Any:
        try:
            seconds = parse_duration(since)
        except ValueError as err:
            raise HTTPException(422, str(err)) from None
        return diagnose(collector.store, collector.inventory, collector.events, seconds,
                        bandwidth=collector.bandwidth, failures=collector.rule_failures)

    @app.get("/api/v1/findings", summary="Diagnosis: findings with evidence, impact and recommendation, and the "
             "network health indicator, over the last `since`")
    def findings(since: str = "10m") -> dict[str, Any]:
        return jsonable(run(since))

    @app.get("/api/v1/health", summary="The network health indicator per path and overall")
    def health(since: str = "10m") -> dict[str, Any]:
        result = run(since)
        return {"window": result.window, "health": result.health, "paths": jsonable(result.paths)}

    @app.post("/api/v1/events", summary="Inference events (model loads, latency) to keep beside the flows")
    def post_events(events: Annotated[list[EventIn], Body(max_length=MAX_EVENTS_PER_POST)]) -> dict[str, int]:
        return {"stored": collector.events.add(events)}

    @app.get("/api/v1/events", summary="Inference events over the last `since`")
    def get_events(since: str = "1h") -> list[dict[str, Any]]:
        import time

        try:
            seconds = parse_duration(since)
        except ValueError as err:
            raise HTTPException(422, str(err)) from None
        now = time.time()
        return collector.events.as_json(collector.events.between(now - seconds, now))


def _workload_node(text: str) -> MapNode:
    namespace, _, name = text.partition("/")
    if not name:
        raise HTTPException(422, f"{text!r} must be namespace/workload")
    return MapNode(NodeKind.WORKLOAD, name, namespace)
