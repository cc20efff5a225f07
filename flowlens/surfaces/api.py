"""The collector's HTTP API (FastAPI): report ingest and the queries, with an OpenAPI document
at /openapi.json and interactive docs at /docs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from flowlens import __version__
from flowlens.collector.ingest import IngestError
from flowlens.collector.service import Collector


def create_app(collector: Collector) -> FastAPI:
    app = FastAPI(title="flowlens collector", version=__version__,
                  description="Kubernetes-enriched TCP flows: ingest from agents, service map, flow table.")
    app.state.collector = collector

    @app.exception_handler(IngestError)
    async def _refused(_request: Request, err: IngestError) -> JSONResponse:
        return JSONResponse({"error": str(err)}, status_code=err.status)

    @app.post("/api/v1/reports", summary="Receive one agent report (schema v1, see docs/report-schema.md)",
              responses={401: {"description": "missing token"}, 403: {"description": "unknown token"},
                         413: {"description": "too large"}, 422: {"description": "invalid report"}})
    async def ingest(request: Request, content_encoding: Annotated[str | None, Header()] = None,
                     authorization: Annotated[str | None, Header()] = None) -> dict[str, Any]:
        body = await request.body()
        # Off the event loop: reports arriving together are then committed together, and
        # queries are not kept waiting behind an ingest.
        return await run_in_threadpool(collector.ingest, body, content_encoding, authorization)

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        stats = collector.stats
        return {"ok": True, "reports": stats.reports, "duplicates": stats.duplicates, "refused": stats.refused,
                "flows": stats.flows, "inventory_version": collector.inventory.version}

    _add_queries(app, collector)
    return app


def _add_queries(app: FastAPI, collector: Collector) -> None:
    from flowlens.surfaces.queries import register, register_diagnosis

    register(app, collector)
    register_diagnosis(app, collector)
