"""The collector's HTTP API (FastAPI): report ingest, the queries, ``/metrics``, and an OpenAPI
document at /openapi.json with interactive docs at /docs (Swagger UI served from the installed
package: no CDN, so it works on an air-gapped cluster).

Every request passes :class:`flowlens.web.guard.Guard` first: with tokens set, every endpoint
but ``/healthz`` needs one (writers' tokens for reports and events, readers' for the rest),
and body sizes are bounded before anything is read.
"""

from __future__ import annotations

import logging
import time
from typing import Annotated, Any

from fastapi import FastAPI, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from fastapi_swagger import patch_fastapi
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from flowlens import __version__
from flowlens.collector.ingest import MAX_BODY_BYTES, IngestError
from flowlens.collector.service import Collector
from flowlens.surfaces.collector_metrics import CollectorMetrics
from flowlens.web.body import BodyError
from flowlens.web.guard import Guard, Rule
from flowlens.web.server import ServerStats

log = logging.getLogger(__name__)

REPORTS = "/api/v1/reports"
EVENTS = "/api/v1/events"
MAX_EVENTS_BODY = 1 << 20
MAX_QUERY_BODY = 64 << 10


def create_app(collector: Collector, stats: ServerStats | None = None, body_timeout: float = 30.0) -> Guard:
    """The API behind its guard (the ASGI app to serve)."""
    stats = stats or ServerStats()
    app = FastAPI(title="flowlens collector", version=__version__, docs_url=None, redoc_url=None,
                  swagger_ui_oauth2_redirect_url=None,
                  description="Kubernetes-enriched TCP flows: ingest from agents, service map, flow table, diagnosis.")
    patch_fastapi(app, docs_url="/docs", title="flowlens collector API")
    app.state.collector = collector
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CollectorMetrics(collector, stats))

    @app.exception_handler(IngestError)
    async def _refused(_request: Request, err: IngestError) -> JSONResponse:
        return JSONResponse({"error": str(err)}, status_code=err.status)

    @app.exception_handler(BodyError)
    async def _bad_body(_request: Request, err: BodyError) -> JSONResponse:
        return JSONResponse({"error": str(err)}, status_code=err.status)

    @app.post(REPORTS, summary="Receive one agent report (schema v1, see docs/report-schema.md)",
              responses={401: {"description": "missing token"}, 403: {"description": "unknown token"},
                         408: {"description": "body too slow"}, 413: {"description": "too large"},
                         422: {"description": "invalid report, or its time outside the accepted window"}})
    async def ingest(request: Request, content_encoding: Annotated[str | None, Header()] = None) -> dict[str, Any]:
        started = time.perf_counter()
        body = await request.body()
        # Off the event loop: reports arriving together are then committed together, and
        # queries are not kept waiting behind an ingest.
        answer = await run_in_threadpool(collector.ingest, body, content_encoding)
        collector.stats.observe(time.perf_counter() - started)
        return answer

    @app.get("/healthz", summary="Liveness: always open, no token needed")
    def healthz() -> dict[str, Any]:
        return {"ok": True}

    @app.get("/metrics", summary="The collector's own metrics (Prometheus text or OpenMetrics)",
             include_in_schema=False)
    def metrics(request: Request) -> Response:
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(registry), media_type=content_type)

    _add_queries(app, collector)

    def policy(method: str, path: str) -> Rule:
        if path == "/healthz":
            return Rule(None, 0)
        if method == "POST" and path == REPORTS:
            return Rule(collector.write_tokens, MAX_BODY_BYTES, collector.stats.refuse)
        if method == "POST" and path == EVENTS:
            return Rule(collector.write_tokens, MAX_EVENTS_BODY)
        return Rule(collector.read_tokens, MAX_QUERY_BODY)

    return Guard(app, policy, stats, body_timeout)


def _add_queries(app: FastAPI, collector: Collector) -> None:
    from flowlens.surfaces.queries import register, register_diagnosis

    register(app, collector)
    register_diagnosis(app, collector)
