"""A load generator that measures what inference users feel.

Against an OpenAI-compatible streaming endpoint (``/v1/completions`` or
``/v1/chat/completions`` with ``stream: true``, server-sent events) it measures, per request,
with the client's clock as the common benchmark tools define them:

- TTFT: request sent → first chunk carrying output;
- end-to-end latency: request sent → last chunk;
- output tokens: the server's ``usage.completion_tokens`` when it sends it, else the chunks
  that carried output (one token each, as vLLM and most servers stream);
- inter-token latency: (E2E − TTFT) ÷ (tokens − 1); tokens/s per request: tokens ÷ E2E.

Against a Stable Diffusion WebUI API (``/sdapi/v1/txt2img``) a request is one response, so
TTFT equals E2E. The run's output tokens per second is total tokens ÷ the run's duration.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx


@dataclass(slots=True)
class RequestResult:
    started: float  # epoch seconds
    ok: bool
    ttft_s: float | None = None
    e2e_s: float | None = None
    output_tokens: int = 0
    itl_s: float | None = None
    tokens_per_s: float | None = None
    status: int = 0
    error: str = ""


@dataclass(slots=True)
class ProbeSummary:
    target: str
    kind: str
    requests: int
    failures: int
    duration_s: float
    output_tokens: int
    output_tokens_per_s: float
    ttft_s: dict[str, float] = field(default_factory=dict)
    e2e_s: dict[str, float] = field(default_factory=dict)
    itl_s: dict[str, float] = field(default_factory=dict)
    results: list[RequestResult] = field(default_factory=list)

    def to_json(self, with_requests: bool = False) -> dict[str, Any]:
        data = asdict(self)
        if not with_requests:
            data.pop("results")
        return data


def _stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]

    return {"mean": statistics.fmean(values), "p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99),
            "min": ordered[0], "max": ordered[-1]}


def openai_request(client: httpx.Client, url: str, model: str, prompt: str, max_tokens: int) -> RequestResult:
    chat = url.rstrip("/").endswith("/chat/completions")
    body: dict[str, Any] = {"model": model, "stream": True, "max_tokens": max_tokens,
                            "stream_options": {"include_usage": True}}
    body.update({"messages": [{"role": "user", "content": prompt}]} if chat else {"prompt": prompt})
    started_wall, started = time.time(), time.perf_counter()
    result = RequestResult(started=started_wall, ok=False)
    first = last = None
    chunks, usage_tokens = 0, None
    try:
        with client.stream("POST", url, json=body) as response:
            result.status = response.status_code
            if response.status_code != 200:
                result.error = response.read().decode(errors="replace")[:200]
                return result
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                event = json.loads(data)
                if event.get("usage") and event["usage"].get("completion_tokens") is not None:
                    usage_tokens = int(event["usage"]["completion_tokens"])
                if _has_output(event):
                    now = time.perf_counter()
                    first = first if first is not None else now
                    last = now
                    chunks += 1
    except (httpx.HTTPError, json.JSONDecodeError) as err:
        result.error = str(err)
        return result
    if first is None or last is None:
        result.error = "the stream carried no output"
        return result
    return _finish(result, started, first, last, usage_tokens if usage_tokens is not None else chunks)


def _has_output(event: dict[str, Any]) -> bool:
    for choice in event.get("choices") or []:
        if choice.get("text") or (choice.get("delta") or {}).get("content"):
            return True
    return False


def _finish(result: RequestResult, started: float, first: float, last: float, tokens: int) -> RequestResult:
    result.ok = True
    result.ttft_s = first - started
    result.e2e_s = last - started
    result.output_tokens = tokens
    if tokens > 1:
        result.itl_s = (result.e2e_s - result.ttft_s) / (tokens - 1)
    result.tokens_per_s = tokens / result.e2e_s if result.e2e_s > 0 else None
    return result


def sdapi_request(client: httpx.Client, url: str, payload: dict[str, Any]) -> RequestResult:
    started_wall, started = time.time(), time.perf_counter()
    result = RequestResult(started=started_wall, ok=False)
    try:
        response = client.post(url, json=payload)
        done = time.perf_counter()
        result.status = response.status_code
        if response.status_code != 200:
            result.error = response.text[:200]
            return result
        images = len(response.json().get("images") or [response.json().get("image")])
    except (httpx.HTTPError, ValueError) as err:
        result.error = str(err)
        return result
    result = _finish(result, started, done, done, images)
    result.itl_s = None
    return result


def run(target: str, kind: str, requests: int, concurrency: int, request: Callable[[httpx.Client], RequestResult],
        timeout: float = 120.0) -> ProbeSummary:
    """``requests`` requests, ``concurrency`` at a time, each with its own connection pool."""
    results: list[RequestResult] = []
    lock = threading.Lock()
    local = threading.local()

    def one(_: int) -> None:
        if not hasattr(local, "client"):
            local.client = httpx.Client(timeout=timeout)
        outcome = request(local.client)
        with lock:
            results.append(outcome)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        list(pool.map(one, range(requests)))
    duration = time.perf_counter() - started
    ok = [r for r in results if r.ok]
    tokens = sum(r.output_tokens for r in ok)
    return ProbeSummary(
        target=target, kind=kind, requests=len(results), failures=len(results) - len(ok), duration_s=duration,
        output_tokens=tokens, output_tokens_per_s=tokens / duration if duration > 0 else 0.0,
        ttft_s=_stats([r.ttft_s for r in ok if r.ttft_s is not None]),
        e2e_s=_stats([r.e2e_s for r in ok if r.e2e_s is not None]),
        itl_s=_stats([r.itl_s for r in ok if r.itl_s is not None]),
        results=sorted(results, key=lambda r: r.started),
    )
