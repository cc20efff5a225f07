"""The scenario's test client: one text-to-image, one image-to-image and one upscale task per round.

Rounds start every ``every`` seconds for ``duration`` seconds (one round when ``duration`` is 0).
Input images for image-to-image and upscale are small PNGs made here and sent inline as base64,
so the client needs nothing but the API URL. Every task id is unique
(``<prefix>-<round>-<kind>-<hex6>``). Each submission is returned (and printed by the CLI as a
JSON line) with the API's status code, answer and latency.

    python -m inference_workload.load --api http://127.0.0.1:8000 --every 2 --duration 60
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import httpx
from PIL import Image

__all__ = ["Submission", "make_round", "run_load"]


@dataclass(frozen=True)
class Submission:
    """One task sent and what the API answered."""

    round: int
    tasktype: str
    id: str
    status_code: int
    answer: Any
    seconds: float
    sent_at: float


def sample_png(size: int = 128, shade: int = 0) -> str:
    """A small gradient PNG, base64-encoded."""
    image = Image.linear_gradient("L").resize((size, size)).convert("RGB")
    image = Image.merge("RGB", (image.getchannel(0), image.getchannel(0).rotate(90),
                                Image.new("L", (size, size), shade % 256)))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode("ascii")


def make_round(n: int, *, runtime: str = "sdruntime", prefix: str = "output", id_prefix: str = "load",
               steps: int = 16, width: int = 512, height: int = 512, upscale_input: int = 128) -> list[dict[str, Any]]:
    """The three task bodies of round ``n``."""
    def task(kind: str, tasktype: str, content: dict[str, Any]) -> dict[str, Any]:
        task_id = f"{id_prefix}-{n}-{kind}-{uuid.uuid4().hex[:6]}"
        metadata = {"id": task_id, "runtime": runtime, "tasktype": tasktype, "prefix": prefix,
                    "context": {"round": n}}
        return {"task": {"metadata": metadata, "content": content}}

    base = {"alwayson_scripts": {}, "steps": steps, "width": width, "height": height}
    return [
        task("t2i", "text-to-image", {**base, "prompt": "A dog"}),
        task("i2i", "image-to-image", {**base, "prompt": "A cat", "init_images": [sample_png(shade=n)],
                                       "denoising_strength": 0.5}),
        task("up", "extra-single-image", {"image": sample_png(upscale_input, shade=n), "resize_mode": 0,
                                          "upscaling_resize": 4, "upscaler_1": "R-ESRGAN 4x+",
                                          "upscaler_2": "None"}),
    ]


def run_load(api: str, *, every: float = 2.0, duration: float = 0.0, http: httpx.Client | None = None,
             clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
             **task_options: Any) -> Iterator[Submission]:
    """Submit rounds of three tasks; yields each submission as it is answered."""
    http = http or httpx.Client(timeout=30)
    start, n = clock(), 0
    while True:
        for body in make_round(n, **task_options):
            yield _submit(http, api, n, body)
        n += 1
        next_round = start + n * every
        if next_round - start >= duration or duration <= 0:
            return
        sleep(max(0.0, next_round - clock()))


def _submit(http: httpx.Client, api: str, n: int, body: dict[str, Any]) -> Submission:
    metadata = body["task"]["metadata"]
    sent_at, began = time.time(), time.perf_counter()
    try:
        response = http.post(api, json=body)
        code, answer = response.status_code, _json_or_text(response)
    except httpx.HTTPError as exc:
        code, answer = 0, str(exc)
    return Submission(n, metadata["tasktype"], metadata["id"], code, answer, time.perf_counter() - began, sent_at)


def _json_or_text(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def main(argv: list[str] | None = None) -> int:
    """Send the scenario's load; print one JSON line per task; exit 1 if any was refused."""
    parser = argparse.ArgumentParser(prog="python -m inference_workload.load", description=main.__doc__)
    parser.add_argument("--api", required=True, help="the front end's URL, e.g. http://127.0.0.1:8000/")
    parser.add_argument("--every", type=float, default=2.0, help="seconds between rounds")
    parser.add_argument("--duration", type=float, default=0.0, help="seconds to keep sending (0: one round)")
    parser.add_argument("--runtime", default="sdruntime")
    parser.add_argument("--prefix", default="output")
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--height", type=int, default=512)
    args = parser.parse_args(argv)
    ok = True
    for sub in run_load(args.api, every=args.every, duration=args.duration, runtime=args.runtime,
                        prefix=args.prefix, steps=args.steps, width=args.width, height=args.height):
        ok = ok and sub.status_code == 200
        print(json.dumps(asdict(sub)), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
