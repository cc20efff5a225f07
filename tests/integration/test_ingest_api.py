"""The ingest endpoint refuses malformed, oversized and unauthenticated reports with a 4xx that
says why, stores nothing of them, and is fuzzed with hypothesis."""

from __future__ import annotations

import gzip
import json
import time

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowlens.collector.service import Collector, CollectorConfig
from flowlens.collector.store.duckdb import DuckDBStore
from flowlens.surfaces.api import create_app

TOKEN = "s3cret-token-0123456789"


def good_report(report_id: str = "good-report-01", flows: int = 2) -> dict:
    now = time.time()
    return {"schema_version": 1, "report_id": report_id, "agent": {"node": "n1"},
            "interval": {"start": now - 5, "end": now},
            "flows": [{"netns": "host", "role": "client", "local_ip": "10.0.0.1", "remote_ip": f"10.0.1.{i}",
                       "server_port": 443, "sent_bytes": 100 * i} for i in range(flows)]}


@pytest.fixture(scope="module")
def api():
    collector = Collector(CollectorConfig(store=":memory:", tokens=(TOKEN,)), DuckDBStore(":memory:"))
    with TestClient(create_app(collector)) as client:
        yield client, collector
    collector.close()


def post(client, body: bytes, token: str | None = TOKEN, encoding: str | None = None):
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if encoding:
        headers["Content-Encoding"] = encoding
    return client.post("/api/v1/reports", content=body, headers=headers)


def stored(collector) -> int:
    return collector.store.stats.flow_rows


def test_a_good_report_is_stored_once(api):
    client, collector = api
    before = stored(collector)
    body = gzip.compress(json.dumps(good_report("once-only-01")).encode())
    first, again = post(client, body, encoding="gzip"), post(client, body, encoding="gzip")
    assert first.status_code == again.status_code == 200
    assert (first.json()["duplicate"], again.json()["duplicate"]) == (False, True)
    assert stored(collector) == before + 2


@pytest.mark.parametrize(("token", "status", "says"), [(None, 401, "missing"), ("wrong", 403, "unknown token")])
def test_unauthenticated_reports_are_refused(api, token, status, says):
    client, collector = api
    before = stored(collector)
    response = post(client, json.dumps(good_report("auth-test-01")).encode(), token=token)
    assert response.status_code == status and says in response.json()["error"]
    assert stored(collector) == before


def test_oversized_and_malformed_reports_say_why(api):
    client, collector = api
    before = stored(collector)
    cases = [
        (b"{not json", 422, "invalid report"),
        (json.dumps({**good_report(), "schema_version": 2}).encode(), 422, "schema_version"),
        (json.dumps({**good_report(), "extra": 1}).encode(), 422, "extra"),
        (b"x" * (17 << 20), 413, "limit"),
    ]
    for body, status, says in cases:
        response = post(client, body)
        assert response.status_code == status, (response.status_code, response.text[:200])
        assert says in response.json()["error"]
    bomb = gzip.compress(b"[" * (130 << 20))
    response = post(client, bomb, encoding="gzip")
    assert response.status_code == 413 and "decompressed" in response.json()["error"]
    assert stored(collector) == before


def test_openapi_documents_the_endpoints_behind_the_token_without_a_cdn(api):
    client, _ = api
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get("/openapi.json").status_code == 401
    paths = client.get("/openapi.json", headers=auth).json()["paths"]
    assert {"/api/v1/reports", "/api/v1/map", "/api/v1/flows", "/api/v1/timeseries"} <= set(paths)
    page = client.get("/docs", headers=auth).text
    assets = [part.split('"')[0] for marker in ('src="', 'href="') for part in page.split(marker)[1:]]
    assert len(assets) == 3 and all(a.startswith("http://testserver/swagger/") for a in assets), assets
    assert all(client.get(a, headers=auth).status_code == 200 for a in assets), "served by the collector"


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                       max_size=4), max_leaves=12)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutation=st.dictionaries(st.sampled_from(["schema_version", "report_id", "agent", "interval", "flows",
                                                 "node", "junk"]), json_values, min_size=1, max_size=3))
def test_fuzzed_reports_get_a_4xx_and_store_nothing(api, mutation):
    client, collector = api
    body = {**good_report("fuzz-report-01"), **mutation}
    before = stored(collector)
    response = post(client, json.dumps(body).encode())
    if response.status_code == 200:  # the mutation happened to be valid: stored once, or a duplicate
        assert stored(collector) - before in (0, len(body["flows"]))
    else:
        assert 400 <= response.status_code < 500 and response.json()["error"]
        assert stored(collector) == before


def test_model_load_events_are_kept_and_listed(api):
    client, _ = api
    auth = {"Authorization": f"Bearer {TOKEN}"}
    now = time.time()
    event = {"kind": "model_load", "pod": "sdruntime-1", "namespace": "sdruntime", "node": "n1", "start": now - 30,
             "end": now - 3, "bytes": 268435456, "phases": {"load weights from disk": 26.0}}
    assert client.post("/api/v1/events", json=[event]).status_code == 401, "events need a token too"
    assert client.post("/api/v1/events", json=[event], headers=auth).json() == {"stored": 1}
    assert client.get("/api/v1/events", params={"since": "1m"}).status_code == 401
    listed = client.get("/api/v1/events", params={"since": "1m"}, headers=auth).json()
    assert [(e["pod"], round(e["seconds"])) for e in listed] == [("sdruntime-1", 27)]
    assert client.post("/api/v1/events", json=[{**event, "kind": "nope"}], headers=auth).status_code == 422
    assert client.post("/api/v1/events", json=[event] * 1001, headers=auth).status_code == 422, "bounded"
