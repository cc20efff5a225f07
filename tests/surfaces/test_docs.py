"""The metrics reference in docs/ is the one generated from the exporter's table."""

from pathlib import Path

from flowlens.agent.export.exporter import METRICS, metrics_markdown

ROOT = Path(__file__).resolve().parents[2]


def test_metrics_doc_is_up_to_date():
    assert (ROOT / "docs" / "metrics.md").read_text() == metrics_markdown(), \
        "regenerate with: .venv/bin/flowlens metrics-doc > docs/metrics.md"


def test_metric_names_follow_the_conventions():
    for spec in METRICS:
        if spec.name.startswith("flowlens_") and spec.kind == "counter":
            assert spec.name.endswith("_total"), spec.name
        if spec.kind != "untyped":
            assert spec.name.startswith("flowlens_"), spec.name


def test_report_schema_doc_is_up_to_date():
    from flowlens.surfaces.report_doc import report_schema_markdown
    assert (ROOT / "docs" / "report-schema.md").read_text() == report_schema_markdown(), \
        "regenerate with: .venv/bin/flowlens report-schema-doc > docs/report-schema.md"


def test_report_schema_doc_names_every_field_and_counter():
    import msgspec.inspect as mi

    from flowlens.model.report import FlowRecord, InterfaceDelta, Report
    from flowlens.model.vocabulary import FLOW_COUNTERS, NODE_COUNTERS
    from flowlens.surfaces.report_doc import report_schema_markdown
    text = report_schema_markdown()
    for struct in (Report, FlowRecord, InterfaceDelta):
        for field in mi.type_info(struct).fields:
            assert f"| `{field.name}` |" in text, field.name
    for counter in (*FLOW_COUNTERS, *NODE_COUNTERS):
        assert counter.source in text and counter.help in text
