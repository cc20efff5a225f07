"""The metrics reference in docs/ is the one generated from the exporter's table."""

from pathlib import Path

from flowlens.agent.exporter import METRICS, metrics_markdown

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
