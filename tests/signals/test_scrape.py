"""Latency from inference servers' own metrics, in their published formats."""

from __future__ import annotations

import pytest

from flowlens.signals.modelload import parse_model_load
from flowlens.signals.scrape import difference, parse

VLLM = """# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{le="0.1",model_name="m"} 3.0
vllm:time_to_first_token_seconds_bucket{le="+Inf",model_name="m"} 4.0
vllm:time_to_first_token_seconds_sum{model_name="m"} 0.8
vllm:time_to_first_token_seconds_count{model_name="m"} 4.0
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_bucket{le="+Inf",model_name="m"} 4.0
vllm:e2e_request_latency_seconds_sum{model_name="m"} 10.0
vllm:e2e_request_latency_seconds_count{model_name="m"} 4.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="m"} 2.0
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{model_name="m"} 512.0
"""

TRITON = """# TYPE nv_inference_request_success counter
nv_inference_request_success{model="sd",version="1"} 10
# TYPE nv_inference_request_failure counter
nv_inference_request_failure{model="sd",version="1"} 0
# TYPE nv_inference_request_duration_us counter
nv_inference_request_duration_us{model="sd",version="1"} 25000000
# TYPE nv_inference_queue_duration_us counter
nv_inference_queue_duration_us{model="sd",version="1"} 5000000
"""


def test_vllm_means_and_gauges():
    reading = parse(VLLM)
    assert reading.server == "vllm"
    assert reading.mean("ttft") == pytest.approx(0.2) and reading.mean("e2e") == pytest.approx(2.5)
    assert reading.gauges["requests_waiting"] == 2 and reading.gauges["generation_tokens"] == 512


def test_triton_cumulative_microseconds():
    reading = parse(TRITON)
    assert reading.server == "triton"
    assert reading.mean("e2e") == pytest.approx(2.5) and reading.mean("queue") == pytest.approx(0.5)


def test_window_difference_and_restart():
    before = parse(VLLM)
    after = parse(VLLM.replace("_sum{model_name=\"m\"} 0.8", "_sum{model_name=\"m\"} 2.8")
                  .replace("time_to_first_token_seconds_count{model_name=\"m\"} 4.0",
                           "time_to_first_token_seconds_count{model_name=\"m\"} 8.0"))
    assert difference(before, after).mean("ttft") == pytest.approx(0.5)  # 2.0 s over 4 new requests
    assert difference(after, before).mean("ttft") == pytest.approx(0.2)  # a restart: counters anew


def test_model_load_line():
    load = parse_model_load("INFO Model loaded in 33.7s (load weights from disk: 27.1s, create model: 0.5s, "
                            "apply weights to model: 5.1s, apply half(): 0.1s, calculate empty prompt: 0.5s).")
    assert load is not None and load.seconds == 33.7 and load.weights_seconds == 27.1
    assert load.phases["apply half()"] == 0.1 and len(load.phases) == 5
    assert parse_model_load("nothing here") is None
