"""Time series of a pod, a node and an edge: bucket sums, empty buckets, allowance per bucket."""

from __future__ import annotations

from datetime import timedelta

import pytest

from flowlens.collector.store.duckdb import DuckDBStore
from flowlens.model.queries import (
    Allowance,
    EdgeSubject,
    FlowFilter,
    MapLevel,
    MapNode,
    NodeKind,
    NodeSubject,
    PodSubject,
    TimePoint,
)
from tests.collector.rows import STEP, T0

API = MapNode(NodeKind.WORKLOAD, "api", "shop")
DB = MapNode(NodeKind.WORKLOAD, "db", "shop")


def test_pod_series_per_interval_with_empty_buckets(loaded: DuckDBStore):
    series = loaded.timeseries(FlowFilter(since=T0, until=T0 + 4 * STEP), PodSubject("shop", "api-1"), STEP)
    # api-1 sends 100 to db-1, 10 to 8.8.8.8 and 5000 to the visitor per interval; receives 1000 + 20 + 400.
    assert series.points == (
        TimePoint(T0, 5110, 1420, 2, 1, Allowance(pps=3)),
        TimePoint(T0 + STEP, 5110, 1420, 2, 1, Allowance(bw_in=2)),
        TimePoint(T0 + 2 * STEP, 0, 0, 0, 0, Allowance()),
        TimePoint(T0 + 3 * STEP, 0, 0, 0, 0, Allowance()),
    )
    assert series.step == STEP


def test_a_longer_step_sums_the_intervals_in_each_bucket(loaded: DuckDBStore):
    series = loaded.timeseries(FlowFilter(since=T0, until=T0 + timedelta(minutes=2)), PodSubject("shop", "api-1"),
                               timedelta(minutes=1))
    assert series.points == (TimePoint(T0, 10_220, 2840, 4, 2, Allowance(bw_in=2, pps=3)),
                             TimePoint(T0 + timedelta(minutes=1), 0, 0, 0, 0, Allowance()))
    assert series.points[0].allowance.total == 5


def test_node_series_counts_every_pod_of_the_node(loaded: DuckDBStore):
    series = loaded.timeseries(FlowFilter(), NodeSubject("n2"), STEP)
    # db-1 (server of api-1 and api-2) and api-2 (client of db-1) run on n2.
    assert [(p.time, p.bytes_out, p.bytes_in, p.retransmitted_segments) for p in series.points] == [
        (T0, 3200, 2300, 6), (T0 + STEP, 3200, 2300, 6)]
    assert [p.allowance for p in series.points] == [Allowance(bw_out=4), Allowance()]


def test_edge_series_is_oriented_source_to_destination(loaded: DuckDBStore):
    one = loaded.timeseries(FlowFilter(), EdgeSubject(API, DB, MapLevel.WORKLOAD, "INTER_AZ"), STEP)
    assert one.points == (TimePoint(T0, 100, 1000, 7, 1, None), TimePoint(T0 + STEP, 100, 1000, 7, 1, None))
    every = loaded.timeseries(FlowFilter(), EdgeSubject(API, DB, MapLevel.WORKLOAD), STEP)
    assert [(p.bytes_out, p.bytes_in, p.retransmitted_segments) for p in every.points] == [(300, 3000, 8)] * 2
    backwards = loaded.timeseries(FlowFilter(), EdgeSubject(DB, API, MapLevel.WORKLOAD), STEP)
    assert backwards.points == ()


def test_edge_to_a_cloud_service(loaded: DuckDBStore):
    s3 = MapNode(NodeKind.CLOUD, "S3", region="us-east-1")
    series = loaded.timeseries(FlowFilter(), EdgeSubject(MapNode(NodeKind.WORKLOAD, "infer", "ml"), s3,
                                                         MapLevel.WORKLOAD), STEP)
    assert [p.bytes_in for p in series.points] == [1_000_000, 1_000_000]


def test_bad_steps_are_refused(loaded: DuckDBStore):
    with pytest.raises(ValueError, match="step"):
        loaded.timeseries(FlowFilter(), NodeSubject("n1"), timedelta(0))
    with pytest.raises(ValueError, match="points"):
        loaded.timeseries(FlowFilter(since=T0, until=T0 + timedelta(days=30)), NodeSubject("n1"),
                          timedelta(seconds=1))
