"""The runtime: WebUI API shapes, startup probe, the model-load log line, metrics, entry point."""

from __future__ import annotations

import base64
import io
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

from inference_workload import runtime, weights
from inference_workload.metrics import RuntimeMetrics

from .conftest import TINY_MODEL, free_port, serving, wait_until

SCENARIO_LINE = ("Model loaded in 33.7s (load weights from disk: 27.1s, create model: 0.5s, apply weights to model: "
                 "5.1s, apply half(): 0.1s, calculate empty prompt: 0.5s).")
LOAD_LINE = re.compile(
    r"^Model loaded in (\d+\.\d)s \(load weights from disk: (\d+\.\d)s, create model: (\d+\.\d)s, "
    r"apply weights to model: (\d+\.\d)s, apply half\(\): (\d+\.\d)s, calculate empty prompt: (\d+\.\d)s\)\.$")
T2I = {"prompt": "A dog", "steps": 3, "width": 64, "height": 64, "alwayson_scripts": {}}


def decode_png(data: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(data)))
    assert image.format == "PNG"
    return image


def small_png_b64(color: str = "red", size: int = 16) -> str:
    out = io.BytesIO()
    Image.new("RGB", (size, size), color).save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()


@pytest.fixture
def gated(tiny_model: tuple[str, str]) -> Iterator[tuple[httpx.Client, threading.Event, RuntimeMetrics]]:
    """An in-process runtime whose model load waits for the test to open the gate."""
    gate = threading.Event()
    real = runtime.s3_loader(*tiny_model, part_size=weights.MIB)

    def loader() -> Any:
        gate.wait(10)
        return real()

    metrics = RuntimeMetrics()
    with serving(runtime.create_app(loader, cost=1, metrics=metrics)) as url, \
            httpx.Client(base_url=url, timeout=30) as client:
        yield client, gate, metrics
        gate.set()


@pytest.fixture
def client(gated: tuple[httpx.Client, threading.Event, RuntimeMetrics]) -> httpx.Client:
    test_client, gate, _ = gated
    gate.set()
    wait_until(lambda: test_client.get("/sdapi/v1/memory").status_code == 200)
    return test_client


def test_scenario_line_matches_the_pattern() -> None:
    assert LOAD_LINE.match(SCENARIO_LINE)


def test_probe_is_503_until_the_model_is_loaded(gated: Any, capsys: pytest.CaptureFixture[str]) -> None:
    client, gate, _ = gated
    response = client.get("/sdapi/v1/memory")
    assert response.status_code == 503 and response.json() == {"detail": "model is loading"}
    assert client.post("/sdapi/v1/txt2img", json=T2I).status_code == 503
    gate.set()
    wait_until(lambda: client.get("/sdapi/v1/memory").status_code == 200)
    memory = client.get("/sdapi/v1/memory").json()
    assert memory["ram"]["total"] > 0 and memory["model"]["bytes"] == TINY_MODEL
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Model loaded")]
    assert len(lines) == 1 and LOAD_LINE.match(lines[0]), lines


def test_txt2img_shape_and_determinism(client: httpx.Client) -> None:
    response = client.post("/sdapi/v1/txt2img", json={**T2I, "batch_size": 2})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"images", "parameters", "info"}
    assert [decode_png(i).size for i in body["images"]] == [(64, 64), (64, 64)]
    assert body["parameters"]["prompt"] == "A dog" and body["parameters"]["alwayson_scripts"] == {}
    info = json.loads(body["info"])
    assert len(info["all_seeds"]) == 2 and info["all_seeds"][1] == info["all_seeds"][0] + 1
    assert info["sd_model_name"] == "tiny.safetensors"
    assert client.post("/sdapi/v1/txt2img", json={**T2I, "batch_size": 2}).json()["images"] == body["images"]


def test_img2img_uses_the_init_image(client: httpx.Client) -> None:
    request = {**T2I, "init_images": [small_png_b64("red")], "denoising_strength": 0.5}
    red = client.post("/sdapi/v1/img2img", json=request)
    assert red.status_code == 200
    assert red.json()["parameters"]["init_images"] == []  # not echoed, as in the WebUI
    blue = client.post("/sdapi/v1/img2img", json={**request, "init_images": [small_png_b64("blue")]})
    assert decode_png(red.json()["images"][0]).size == (64, 64)
    assert red.json()["images"] != blue.json()["images"]


def test_extra_single_image_upscales(client: httpx.Client) -> None:
    request = {"image": small_png_b64(size=20), "resize_mode": 0, "upscaling_resize": 4,
               "upscaler_1": "R-ESRGAN 4x+", "upscaler_2": "None"}
    response = client.post("/sdapi/v1/extra-single-image", json=request)
    assert response.status_code == 200
    assert set(response.json()) == {"image", "html_info"}
    assert decode_png(response.json()["image"]).size == (80, 80)
    data_uri = {**request, "image": "data:image/png;base64," + request["image"], "resize_mode": 1,
                "upscaling_resize_w": 33, "upscaling_resize_h": 44}
    assert decode_png(client.post("/sdapi/v1/extra-single-image", json=data_uri).json()["image"]).size == (33, 44)


@pytest.mark.parametrize(("path", "body", "status"), [
    ("txt2img", {**T2I, "steps": 0}, 422),
    ("txt2img", {**T2I, "width": 100000}, 422),
    ("img2img", {**T2I, "init_images": []}, 422),
    ("img2img", {**T2I, "init_images": ["not an image"]}, 400),
    ("extra-single-image", {"image": "aGVsbG8="}, 400),
    ("extra-single-image", {"image": small_png_b64(), "upscaling_resize": 8, "resize_mode": 1,
                            "upscaling_resize_w": 4096, "upscaling_resize_h": 4097}, 422),
])
def test_bad_requests_are_http_errors(client: httpx.Client, path: str, body: dict[str, Any], status: int) -> None:
    assert client.post(f"/sdapi/v1/{path}", json=body).status_code == status


def test_options_and_models(client: httpx.Client) -> None:
    assert client.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == "tiny.safetensors"
    assert client.get("/sdapi/v1/sd-models").json()[0]["title"] == "tiny.safetensors"


def test_metrics(gated: Any) -> None:
    client, gate, _ = gated
    gate.set()
    wait_until(lambda: client.get("/sdapi/v1/memory").status_code == 200)
    client.post("/sdapi/v1/txt2img", json={**T2I, "n_iter": 2})
    client.post("/sdapi/v1/txt2img", json={**T2I, "steps": 0})
    text = client.get("/metrics").text
    value = _metric_values(text)
    size = value["sdruntime_model_loaded_bytes"]
    assert size >= TINY_MODEL
    assert value["sdruntime_model_load_requests"] == math.ceil(size / weights.MIB)
    assert value["sdruntime_model_loaded"] == 1
    assert value["sdruntime_model_load_end_timestamp_seconds"] >= value["sdruntime_model_load_start_timestamp_seconds"]
    assert value['sdruntime_model_load_phase_seconds{phase="load weights from disk"}'] > 0
    assert value['sdruntime_request_duration_seconds_count{endpoint="txt2img"}'] == 2
    assert value['sdruntime_requests_total{code="422",endpoint="txt2img"}'] == 1
    assert value['sdruntime_generation_steps_total{endpoint="txt2img"}'] == 3 * 2
    assert value['sdruntime_images_total{endpoint="txt2img"}'] == 2
    assert value["sdruntime_requests_in_flight"] == 0


def _metric_values(text: str) -> dict[str, float]:
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, number = line.rpartition(" ")
            values[name] = float(number)
    return values


def test_load_failure_is_reported(provisioned: Any) -> None:
    failures: list[BaseException] = []
    app = runtime.create_app(runtime.s3_loader(provisioned.models_bucket, "absent"), on_load_failure=failures.append)
    with serving(app) as url, httpx.Client(base_url=url) as client:
        wait_until(lambda: failures)
        response = client.get("/sdapi/v1/memory")
        assert response.status_code == 503 and "model load failed" in response.json()["detail"]


def start_runtime(*args: str) -> tuple[subprocess.Popen[str], list[str], str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "inference_workload.runtime", "--host", "127.0.0.1",
                             "--port", str(port), "--cost", "1", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy())
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True).start()
    return proc, lines, f"http://127.0.0.1:{port}"


def test_entry_point_logs_the_load_line_and_stops_on_sigterm(tiny_model: tuple[str, str]) -> None:
    proc, lines, url = start_runtime("--model-bucket", tiny_model[0], "--model-key", tiny_model[1])
    try:
        line = wait_until(lambda: next((x.strip() for x in lines if x.startswith("Model loaded")), None), timeout=30)
        assert LOAD_LINE.match(line), line
        assert httpx.get(f"{url}/sdapi/v1/memory").status_code == 200
        assert httpx.post(f"{url}/sdapi/v1/txt2img", json=T2I, timeout=30).status_code == 200
        os.kill(proc.pid, signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal: the exit status is SIGTERM's.
        assert proc.wait(timeout=15) in (0, -signal.SIGTERM)
        wait_until(lambda: any("Finished server process" in x for x in lines))
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def test_entry_point_exits_1_when_the_model_is_missing(provisioned: Any) -> None:
    proc, _, _ = start_runtime("--model-bucket", provisioned.models_bucket, "--model-key", "absent")
    try:
        assert proc.wait(timeout=30) == 1
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
