"""The inference runtime: a Stable Diffusion WebUI-compatible HTTP API (FastAPI on uvicorn).

At start-up it loads the model in a background thread, so the server answers at once and the
startup probe ``GET /sdapi/v1/memory`` says 503 until the model is in memory, then 200. The
weights come from S3 through ranged GETs (as Mountpoint serves them) or from a file; when
loaded it prints the WebUI's ``Model loaded in ...`` line to stdout. Generation is serialised
by one lock, as the WebUI's queue lock serialises work on its single GPU. ``/metrics`` serves
the Prometheus metrics of ``metrics.py``.

    python -m inference_workload.runtime --port 8080 --model-bucket sd-models --model-key sdxl-turbo.safetensors
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from inference_workload import generate, logs, weights
from inference_workload.metrics import ENDPOINTS, RuntimeMetrics
from inference_workload.model import LoadReport, Model, load_model
from inference_workload.sdapi import (
    ExtraSingleImageRequest,
    ExtrasResponse,
    ImageResponse,
    Img2ImgRequest,
    Txt2ImgRequest,
    decode_image,
    encode_image,
    gen_params,
    info_json,
)

__all__ = ["Runtime", "create_app", "main", "s3_loader"]

log = logging.getLogger("inference_workload.runtime")
Loader = Callable[[], tuple[Model, LoadReport]]


# An upscale holds the model about as long as this many denoising steps.
UPSCALE_STEPS = 4


class Runtime:
    """The model once loaded, the generation lock and the metrics: the state behind the routes."""

    def __init__(self, loader: Loader, metrics: RuntimeMetrics, cost: int,
                 on_load_failure: Callable[[BaseException], None] | None = None, steps_per_second: float = 0.0) -> None:
        self.loader, self.metrics, self.cost = loader, metrics, cost
        self.steps_per_second = steps_per_second
        self.on_load_failure = on_load_failure
        self.model: Model | None = None
        self.report: LoadReport | None = None
        self.error: str | None = None
        self.lock = threading.Lock()

    def load(self) -> None:
        """Load the model; on failure remember why, count it and tell the owner."""
        try:
            model, report = self.loader()
        except Exception as exc:
            self.error = f"model load failed: {exc!r}"
            self.metrics.load_failures.inc()
            log.exception("model load failed")
            if self.on_load_failure:
                self.on_load_failure(exc)
            return
        self.model, self.report = model, report
        self.metrics.record_load(report)
        # stdout, bare, like the WebUI: the lab and users grep for this exact line.
        print(report.log_line(), flush=True)

    @contextmanager
    def generating(self, steps: float) -> Iterator[None]:
        """Hold the model for one generation, at least as long as ``steps`` take at the configured
        speed: the pace of a GPU, whatever this machine's CPU does (0: as fast as it goes)."""
        with self.lock:
            started = time.monotonic()
            yield
            if self.steps_per_second > 0:
                time.sleep(max(0.0, started + steps / self.steps_per_second - time.monotonic()))

    def require_model(self) -> Model:
        if self.model is None:
            raise HTTPException(503, self.error or "model is loading")
        return self.model


def create_app(loader: Loader, *, cost: int = generate.DEFAULT_COST, metrics: RuntimeMetrics | None = None,
               on_load_failure: Callable[[BaseException], None] | None = None,
               steps_per_second: float = 0.0) -> FastAPI:
    """The runtime's ASGI app; the model load starts when the app starts."""
    runtime = Runtime(loader, metrics or RuntimeMetrics(), cost, on_load_failure, steps_per_second)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        threading.Thread(target=runtime.load, name="model-load", daemon=True).start()
        yield

    app = FastAPI(title="sdruntime", lifespan=lifespan)
    app.state.runtime = runtime
    app.middleware("http")(functools.partial(_observe, runtime.metrics))
    app.add_api_route("/metrics", functools.partial(_metrics, runtime.metrics), methods=["GET"],
                      include_in_schema=False)
    _add_generation_routes(app, runtime)
    _add_info_routes(app, runtime)
    return app


async def _observe(metrics: RuntimeMetrics, request: Request,
                   call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    endpoint = request.url.path.removeprefix("/sdapi/v1/")
    if endpoint not in ENDPOINTS:
        return await call_next(request)
    metrics.in_flight.inc()
    start, code = time.perf_counter(), 500
    try:
        response = await call_next(request)
        code = response.status_code
        return response
    finally:
        metrics.in_flight.dec()
        metrics.observe_request(endpoint, code, time.perf_counter() - start)


def _metrics(metrics: RuntimeMetrics) -> Response:
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _add_generation_routes(app: FastAPI, runtime: Runtime) -> None:
    metrics = runtime.metrics

    @app.post("/sdapi/v1/txt2img", response_model=ImageResponse)
    def txt2img(request: Txt2ImgRequest) -> ImageResponse:
        params = gen_params(request, runtime.require_model().name)
        count = request.batch_size * request.n_iter
        with runtime.generating(params.steps * count):
            images, seeds = generate.txt2img(params, count, runtime.cost)
        metrics.steps.labels("txt2img").inc(params.steps * count)
        return _image_response("txt2img", request, images, info_json(params, seeds, request), metrics)

    @app.post("/sdapi/v1/img2img", response_model=ImageResponse)
    def img2img(request: Img2ImgRequest) -> ImageResponse:
        params = gen_params(request, runtime.require_model().name)
        init = _decode(request.init_images[0], "init_images[0]")
        count = request.batch_size * request.n_iter
        with runtime.generating(max(1, int(params.steps * params.denoising_strength)) * count):
            images, seeds = generate.img2img(params, init, count, runtime.cost)
        metrics.steps.labels("img2img").inc(max(1, int(params.steps * params.denoising_strength)) * count)
        if not request.include_init_images:
            # The WebUI drops the inputs from the echo: they can be megabytes of base64.
            request.init_images = []
        return _image_response("img2img", request, images, info_json(params, seeds, request), metrics)

    @app.post("/sdapi/v1/extra-single-image", response_model=ExtrasResponse)
    def extra_single_image(request: ExtraSingleImageRequest) -> ExtrasResponse:
        runtime.require_model()
        image = _decode(request.image, "image")
        size = (request.upscaling_resize_w, request.upscaling_resize_h) if request.resize_mode == 1 else None
        try:
            with runtime.generating(UPSCALE_STEPS):
                png = generate.upscale(image, factor=request.upscaling_resize, size=size,
                                       upscaler_1=request.upscaler_1, upscaler_2=request.upscaler_2,
                                       upscaler_2_visibility=request.extras_upscaler_2_visibility)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        metrics.images.labels("extra-single-image").inc()
        info = f"<p>Postprocess upscale by: {request.upscaling_resize}, Postprocess upscaler: {request.upscaler_1}</p>"
        return ExtrasResponse(image=encode_image(png), html_info=info)


def _add_info_routes(app: FastAPI, runtime: Runtime) -> None:
    @app.get("/sdapi/v1/memory")
    def memory() -> JSONResponse:
        if runtime.model is None:
            return JSONResponse({"detail": runtime.error or "model is loading"}, status_code=503)
        return JSONResponse({"ram": _ram(), "cuda": {"error": "the reference workload generates on the CPU"},
                             "model": {"name": runtime.model.name, "bytes": runtime.model.nbytes}})

    @app.get("/sdapi/v1/options")
    def options() -> dict[str, Any]:
        return {"sd_model_checkpoint": runtime.model.name if runtime.model else None}

    @app.get("/sdapi/v1/sd-models")
    def sd_models() -> list[dict[str, Any]]:
        if runtime.model is None:
            return []
        name = runtime.model.name
        return [{"title": name, "model_name": name.rsplit(".", 1)[0], "hash": None, "filename": name}]


def _image_response(endpoint: str, request: Txt2ImgRequest, images: list[bytes], info: str,
                    metrics: RuntimeMetrics) -> ImageResponse:
    metrics.images.labels(endpoint).inc(len(images))
    encoded = [encode_image(png) for png in images] if request.send_images else []
    return ImageResponse(images=encoded, parameters=request.model_dump(), info=info)


def _decode(data: str, field: str) -> Any:
    try:
        return decode_image(data)
    except ValueError as exc:
        raise HTTPException(400, f"{field}: {exc}") from None


def _ram() -> dict[str, int]:
    page = os.sysconf("SC_PAGE_SIZE")
    total = page * os.sysconf("SC_PHYS_PAGES")
    free = page * os.sysconf("SC_AVPHYS_PAGES")
    try:
        with open("/proc/self/statm") as fh:
            used = int(fh.read().split()[1]) * page
    except OSError:
        used = 0
    return {"free": free, "used": used, "total": total}


def s3_loader(bucket: str, key: str, *, part_size: int = weights.DEFAULT_PART_SIZE,
              concurrency: int = weights.DEFAULT_CONCURRENCY) -> Loader:
    """A loader reading ``s3://bucket/key`` with ranged GETs."""
    read = functools.partial(weights.read_checkpoint, bucket, key, part_size=part_size, concurrency=concurrency)
    return functools.partial(load_model, read, key)


def file_loader(path: str) -> Loader:
    """A loader reading a checkpoint file (e.g. on a real Mountpoint mount)."""
    return functools.partial(load_model, functools.partial(weights.read_local_checkpoint, path),
                             os.path.basename(path))


def main(argv: list[str] | None = None) -> int:
    """Serve the runtime until SIGTERM; exit 1 when the model cannot be loaded."""
    args = _parse(argv)
    logs.configure(args.log_level)
    if args.model_path:
        loader = file_loader(args.model_path)
    elif args.model_bucket:
        loader = s3_loader(args.model_bucket, args.model_key, part_size=int(args.part_size_mib * weights.MIB),
                           concurrency=args.read_concurrency)
    else:
        print("error: give --model-bucket (or MODEL_BUCKET) or --model-path", file=sys.stderr)
        return 2
    failed = threading.Event()
    server: uvicorn.Server | None = None

    def stop(_: BaseException) -> None:
        failed.set()
        if server is not None:
            server.should_exit = True

    app = create_app(loader, cost=args.cost, on_load_failure=stop, steps_per_second=args.steps_per_second)
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level.lower()))
    server.run()
    return 1 if failed.is_set() else 0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="python -m inference_workload.runtime", description=main.__doc__)
    parser.add_argument("--host", default=env("RUNTIME_HOST", "0.0.0.0"))
    parser.add_argument("--port", type=int, default=int(env("RUNTIME_PORT", "8080")))
    parser.add_argument("--model-bucket", default=env("MODEL_BUCKET"), help="env MODEL_BUCKET")
    parser.add_argument("--model-key", default=env("MODEL_KEY", "sdxl-turbo.safetensors"), help="env MODEL_KEY")
    parser.add_argument("--model-path", default=env("MODEL_PATH"), help="read a file instead of S3 (env MODEL_PATH)")
    parser.add_argument("--part-size-mib", type=float, default=weights.DEFAULT_PART_SIZE / weights.MIB,
                        help="size of each ranged GET")
    parser.add_argument("--read-concurrency", type=int, default=weights.DEFAULT_CONCURRENCY,
                        help="ranged GETs in flight at once")
    parser.add_argument("--cost", type=int, default=int(env("GENERATION_COST", str(generate.DEFAULT_COST))),
                        help="smoothing passes per step and pixel: scales generation time (env GENERATION_COST)")
    parser.add_argument("--steps-per-second", type=float, default=float(env("GENERATION_STEPS_PER_SECOND", "0")),
                        help="hold each generation at least as long as its steps take at this speed, like a GPU "
                             "(SDXL-Turbo on an A10G: 7.6); 0: as fast as the CPU goes "
                             "(env GENERATION_STEPS_PER_SECOND)")
    parser.add_argument("--log-level", default=env("LOG_LEVEL", "info"))
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
