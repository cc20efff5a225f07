"""Prometheus metrics of the runtime: model loading, request latency, in-flight work, steps.

The registry is handed in (a fresh one per app) so several runtimes can live in one test
process. Names use the ``sdruntime_`` prefix and base units.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from inference_workload.model import LoadReport

__all__ = ["ENDPOINTS", "RuntimeMetrics"]

ENDPOINTS = ("txt2img", "img2img", "extra-single-image", "memory", "options", "sd-models")
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0)


class RuntimeMetrics:
    """The runtime's metric objects, registered in ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.model_loaded = Gauge("sdruntime_model_loaded", "1 once the model is loaded and serving", registry=r)
        self.load_seconds = Gauge("sdruntime_model_load_seconds", "Total model load time", registry=r)
        self.load_phase_seconds = Gauge("sdruntime_model_load_phase_seconds", "Model load time per phase",
                                        ["phase"], registry=r)
        self.load_start = Gauge("sdruntime_model_load_start_timestamp_seconds",
                                "Unix time the model load started", registry=r)
        self.load_end = Gauge("sdruntime_model_load_end_timestamp_seconds",
                              "Unix time the model load ended", registry=r)
        self.loaded_bytes = Gauge("sdruntime_model_loaded_bytes", "Bytes of checkpoint read", registry=r)
        self.load_requests = Gauge("sdruntime_model_load_requests", "Ranged GET requests made to read the model",
                                   registry=r)
        self.load_failures = Counter("sdruntime_model_load_failures_total", "Model loads that failed", registry=r)
        self.request_seconds = Histogram("sdruntime_request_duration_seconds", "Request latency per endpoint",
                                         ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.requests = Counter("sdruntime_requests_total", "Requests per endpoint and status code",
                                ["endpoint", "code"], registry=r)
        self.in_flight = Gauge("sdruntime_requests_in_flight", "Requests being served", registry=r)
        self.steps = Counter("sdruntime_generation_steps_total", "Sampling steps run", ["endpoint"], registry=r)
        self.images = Counter("sdruntime_images_total", "Images returned", ["endpoint"], registry=r)

    def record_load(self, report: LoadReport) -> None:
        self.load_seconds.set(report.total)
        for phase, seconds in report.phases.items():
            self.load_phase_seconds.labels(phase).set(seconds)
        self.load_start.set(report.started_at)
        self.load_end.set(report.finished_at)
        self.loaded_bytes.set(report.read.bytes)
        self.load_requests.set(report.read.requests)
        self.model_loaded.set(1)

    def observe_request(self, endpoint: str, code: int, seconds: float) -> None:
        self.request_seconds.labels(endpoint).observe(seconds)
        self.requests.labels(endpoint, str(code)).inc()
