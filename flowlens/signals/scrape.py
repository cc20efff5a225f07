"""Request latency from the Prometheus endpoints of inference servers.

Understands three exporters by their metric names:

- vLLM: ``vllm:time_to_first_token_seconds``, ``vllm:e2e_request_latency_seconds``,
  ``vllm:inter_token_latency_seconds`` (histograms), ``vllm:request_queue_time_seconds``,
  ``vllm:generation_tokens_total``, ``vllm:num_requests_running|waiting``;
- NVIDIA Triton: ``nv_inference_request_duration_us``, ``nv_inference_queue_duration_us``
  (cumulative microseconds), ``nv_inference_request_success|failure``;
- the reference Stable Diffusion runtime: ``sdruntime_request_duration_seconds`` and
  ``sdruntime_model_load_seconds``.

Values are cumulative as exported; :func:`difference` of two readings gives a window's means.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families

from flowlens.model.errors import FlowlensError


@dataclass(slots=True)
class Reading:
    """Sums and counts of one scrape: ``sums[name]`` / ``counts[name]`` is a mean latency."""

    server: str = "unknown"
    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, float] = field(default_factory=dict)
    gauges: dict[str, float] = field(default_factory=dict)

    def mean(self, name: str) -> float | None:
        count = self.counts.get(name, 0)
        return self.sums.get(name, 0.0) / count if count else None

    def summary(self) -> dict[str, float | str | None]:
        out: dict[str, float | str | None] = {"server": self.server}
        for name in sorted(set(self.sums) | set(self.counts)):
            out[f"{name}_mean_s"] = self.mean(name)
            out[f"{name}_count"] = self.counts.get(name, 0)
        out.update(self.gauges)
        return out


HISTOGRAMS = {  # exported family → our name
    "vllm:time_to_first_token_seconds": "ttft",
    "vllm:e2e_request_latency_seconds": "e2e",
    "vllm:inter_token_latency_seconds": "itl",
    "vllm:time_per_output_token_seconds": "itl",
    "vllm:request_queue_time_seconds": "queue",
    "sdruntime_request_duration_seconds": "e2e",
    "sdruntime_model_load_seconds": "model_load",
}
GAUGES = {"vllm:num_requests_running": "requests_running", "vllm:num_requests_waiting": "requests_waiting",
          "vllm:generation_tokens": "generation_tokens", "nv_inference_request_success": "requests_succeeded",
          "nv_inference_request_failure": "requests_failed"}


def parse(text: str) -> Reading:
    reading = Reading()
    triton: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        name = HISTOGRAMS.get(family.name)
        if family.name.startswith("vllm:"):
            reading.server = "vllm"
        elif family.name.startswith("nv_inference"):
            reading.server = "triton"
        elif family.name.startswith("sdruntime_") and reading.server == "unknown":
            reading.server = "sdruntime"
        for sample in family.samples:
            if name and sample.name.endswith("_sum"):
                reading.sums[name] = reading.sums.get(name, 0.0) + sample.value
            elif name and sample.name.endswith("_count"):
                reading.counts[name] = reading.counts.get(name, 0.0) + sample.value
            elif name and family.type == "gauge":  # a gauge of seconds (one model load)
                reading.sums[name] = reading.sums.get(name, 0.0) + sample.value
                reading.counts[name] = reading.counts.get(name, 0.0) + 1
            elif family.name in GAUGES:
                key = GAUGES[family.name]
                reading.gauges[key] = reading.gauges.get(key, 0.0) + sample.value
            elif family.name in ("nv_inference_request_duration_us", "nv_inference_queue_duration_us"):
                triton[family.name] = triton.get(family.name, 0.0) + sample.value
    if reading.server == "triton":
        done = reading.gauges.get("requests_succeeded", 0.0) + reading.gauges.get("requests_failed", 0.0)
        for source, name in (("nv_inference_request_duration_us", "e2e"), ("nv_inference_queue_duration_us",
                                                                            "queue")):
            if source in triton:
                reading.sums[name], reading.counts[name] = triton[source] / 1e6, done
    return reading


def difference(before: Reading, after: Reading) -> Reading:
    """What happened between two readings (counters only grow; a restart resets them)."""
    out = Reading(after.server, gauges=dict(after.gauges))
    for name in set(after.sums) | set(after.counts):
        count = after.counts.get(name, 0) - before.counts.get(name, 0)
        total = after.sums.get(name, 0.0) - before.sums.get(name, 0.0)
        if count < 0 or total < 0:  # the server restarted: its counters started again
            count, total = after.counts.get(name, 0), after.sums.get(name, 0.0)
        out.sums[name], out.counts[name] = total, count
    return out


def scrape(url: str, timeout: float = 10.0) -> Reading:
    try:
        response = httpx.get(url, timeout=timeout)
        response.raise_for_status()
    except httpx.HTTPError as err:
        raise FlowlensError(f"cannot scrape {url}: {err}") from None
    try:
        return parse(response.text)
    except ValueError as err:
        raise FlowlensError(f"{url} did not answer in the Prometheus text format: {err}") from None
