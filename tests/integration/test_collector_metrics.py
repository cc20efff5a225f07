"""The collector's own /metrics: it parses, and its counters move with what happens."""

from __future__ import annotations

import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import RunningCollector, node, pod, write_inventory

TOKEN = "t0k3n-for-the-metrics-test"


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    text = httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def report(report_id: str, flows: int, **counters: int) -> dict:
    now = time.time()
    return {"schema_version": 1, "report_id": report_id, "agent": {"node": "n1"},
            "interval": {"start": now - 6, "end": now - 1},
            "flows": [{"netns": "x", "role": "client", "local_ip": "10.0.0.1", "remote_ip": f"10.0.1.{i}",
                       "server_port": 80, "sent_bytes": 100, **counters} for i in range(flows)]}


def test_counters_move_when_reports_arrive_are_refused_or_a_rule_fails(files, monkeypatch):
    folder, inventory, ranges = files
    write_inventory(inventory, [node("n1", "us-east-1a", "192.0.2.1"),
                                pod("ui-5f6b7c8d9-aaaaa", "ui", "10.0.0.1", "n1", "ui-5f6b7c8d9")])
    collector = RunningCollector(folder, inventory, ranges, tokens=[TOKEN]).start()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        before = scrape(collector.url)
        assert before[("flowlens_collector_reports_total", (("result", "stored"),))] == 0
        first = report("metrics-0001", 3)
        for _ in range(2):  # sent again as an agent retries: the same report, recognised
            assert httpx.post(collector.url + "/api/v1/reports", json=first, headers=auth).is_success
        assert httpx.post(collector.url + "/api/v1/reports", json=report("metrics-0002", 2, sent_bytes=-1),
                          headers=auth).status_code == 422
        assert httpx.post(collector.url + "/api/v1/reports", json=report("metrics-0003", 1)).status_code == 401
        from flowlens.analysis.rules import cross_zone

        def broken(ctx):
            raise RuntimeError("a rule that fails")
        monkeypatch.setattr(cross_zone, "findings", broken)
        answer = httpx.get(collector.url + "/api/v1/findings", headers=auth).json()
        assert "cross-zone traffic: a rule that fails" in answer["notes"]
        after = scrape(collector.url)
        assert after[("flowlens_collector_reports_total", (("result", "stored"),))] == 1
        assert after[("flowlens_collector_reports_total", (("result", "duplicate"),))] == 1
        assert after[("flowlens_collector_reports_refused_total", (("status", "422"),))] == 1
        assert after[("flowlens_collector_reports_refused_total", (("status", "401"),))] == 1
        assert after[("flowlens_collector_flow_rows_total", ())] == 3
        assert after[("flowlens_collector_ingest_seconds_count", ())] == 2
        assert after[("flowlens_collector_rule_failures_total", (("rule", "cross-zone traffic"),))] == 1
        assert after[("flowlens_collector_store_bytes", ())] > 0
        assert after[("flowlens_collector_inventory_objects", (("kind", "Pod"),))] == 1
        assert after[("flowlens_collector_inventory_objects", (("kind", "Node"),))] == 1
        assert 0 <= after[("flowlens_collector_inventory_age_seconds", ())] < 600
    finally:
        collector.stop()
