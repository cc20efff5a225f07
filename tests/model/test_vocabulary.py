"""Every layer names the counters as the vocabulary does: one file tells where each is born
(``model.vocabulary``), and these checks keep the agent, the report, the store, the queries
and the metrics from drifting from it."""

from __future__ import annotations

from dataclasses import fields

from flowlens.agent.export.exporter import SPECS
from flowlens.collector.store.duckdb.schema import COUNTERS as STORED
from flowlens.collector.store.duckdb.sql import FACT_COUNTERS
from flowlens.model.flows import FlowCounters
from flowlens.model.queries import QUERY_COUNTERS, Edge, FlowRow
from flowlens.model.records import FLOW_COUNTER_COLUMNS, NODE_SCHEMA
from flowlens.model.report import FlowRecord, InterfaceDelta
from flowlens.model.vocabulary import (
    ALLOWANCE_STATS,
    CONNECTION_RESULTS,
    FLOW_COUNTER_NAMES,
    FLOW_COUNTERS,
    NODE_COUNTER_NAMES,
)


def test_the_agent_counts_the_vocabulary():
    assert tuple(f.name for f in fields(FlowCounters)) == tuple(n for n in FLOW_COUNTER_NAMES if n != "active_sockets")


def test_the_report_carries_the_vocabulary():
    names = FlowRecord.__struct_fields__
    assert names[names.index("sent_bytes"):] == FLOW_COUNTER_NAMES
    assert InterfaceDelta.__struct_fields__[1:] == tuple(n for n in NODE_COUNTER_NAMES
                                                          if n != "tcp_retransmitted_segments")


def test_the_store_keeps_the_vocabulary():
    assert tuple(name for name, _ in FLOW_COUNTER_COLUMNS) == FLOW_COUNTER_NAMES == STORED
    assert tuple(NODE_SCHEMA.names[6:]) == NODE_COUNTER_NAMES
    assert set(FACT_COUNTERS) == set(FLOW_COUNTER_NAMES) - {"active_sockets"}


def test_the_query_records_carry_the_vocabulary():
    for record, first in ((FlowRow, "bytes_to_client"), (Edge, "bytes_to_source")):
        names = [f.name for f in fields(record)]
        start = names.index(first) + 1
        assert tuple(names[start:start + len(QUERY_COUNTERS)]) == QUERY_COUNTERS, record


def test_the_metrics_export_the_vocabulary():
    exported = {c.metric for c in FLOW_COUNTERS if c.metric}
    assert exported <= set(SPECS)
    assert {c.result for c in CONNECTION_RESULTS} == {"established", "refused", "timed_out"}
    assert set(ALLOWANCE_STATS) <= set(SPECS), "the reference product's names, one family each"
    for counter in FLOW_COUNTERS:
        assert counter.combine in ("owner", "each") and counter.kind in ("counter", "gauge") and counter.source
