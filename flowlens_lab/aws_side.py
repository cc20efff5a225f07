"""The regional services of the lab: a real S3/SNS/SQS server (moto) and the task API,
running in the ``fll-aws`` namespace, and the calls the lab makes to them.

The lab's own process reaches them by entering that namespace from a worker thread: sockets
opened there stay bound to it, so boto3 talks to the lab's S3 exactly as a pod would.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

from flowlens.kernel.netns import entered
from flowlens_lab import network, processes
from flowlens_lab.shell import LabError
from flowlens_lab.spec import API_IP, API_PORT, AWS_PORT, AWS_SERVICES_IP, SERVICE_IPS

T = TypeVar("T")

ENDPOINT = f"http://{AWS_SERVICES_IP}:{AWS_PORT}"
API_URL = f"http://{API_IP}:{API_PORT}"
MODEL_KEY = "sdxl-turbo/model.safetensors"


def aws_env(region: str) -> dict[str, str]:
    """The environment every AWS client of the lab gets (pods, API, the lab itself): each service
    at its own address, as S3, SQS and SNS are in a region, so flows tell them apart."""
    env = {"AWS_ENDPOINT_URL": ENDPOINT, "AWS_DEFAULT_REGION": region,
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    for service, ip in SERVICE_IPS.items():
        env[f"AWS_ENDPOINT_URL_{service}"] = f"http://{ip}:{AWS_PORT}"
    return env


def ip_ranges(region: str) -> dict[str, Any]:
    """The lab's regional services in AWS's ip-ranges.json format, for the collector."""
    prefixes = [{"ip_prefix": f"{ip}/32", "region": region, "service": service, "network_border_group": region}
                for service, ip in SERVICE_IPS.items()]
    prefixes.append({"ip_prefix": f"{API_IP}/32", "region": region, "service": "API_GATEWAY",
                     "network_border_group": region})
    return {"syncToken": "0", "createDate": "2026-01-01-00-00-00", "prefixes": prefixes, "ipv6_prefixes": []}


@contextmanager
def aws_environment(region: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in aws_env(region)}
    os.environ.update(aws_env(region))
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def in_namespace(ns: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` on a thread that lives in network namespace ``ns``."""
    def call() -> T:
        with entered(f"/run/netns/{ns}"):
            return fn()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(call).result()


def start_services(region: str) -> None:
    python = processes.PYTHON
    processes.start("aws-services", [python, "-m", "flowlens_lab.regional_services", "--port", str(AWS_PORT)],
                    netns=network.AWS_NS, env={**aws_env(region), "MOTO_PORT": str(AWS_PORT)})
    wait_http(network.AWS_NS, f"{ENDPOINT}/moto-api/", "the S3/SNS/SQS server")


def start_api(region: str, topic_arn: str, output_bucket: str) -> None:
    python = processes.PYTHON
    processes.start("task-api", [python, "-m", "inference_workload.api", "--host", API_IP, "--port", str(API_PORT),
                                 "--topic-arn", topic_arn, "--output-bucket", output_bucket],
                    netns=network.AWS_NS, env=aws_env(region))
    wait_http(network.AWS_NS, f"{API_URL}/healthz", "the task API")


def wait_http(ns: str, url: str, what: str, timeout: float = 30.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout

    def probe() -> bool:
        try:
            return httpx.get(url, timeout=1.0).status_code < 500
        except httpx.HTTPError:
            return False

    while time.monotonic() < deadline:
        if in_namespace(ns, probe):
            return
        time.sleep(0.2)
    raise LabError(f"{what} did not answer at {url} within {timeout:.0f}s: see the logs in the lab folder")


def provision(region: str, runtimes: list[str], visibility: int, max_receives: int, weights_mib: int
              ) -> dict[str, Any]:
    """Buckets, topic, queues (with dead-letter queues) and the model weights, in the lab's S3."""
    from dataclasses import asdict

    from inference_workload import aws, weights

    def work() -> dict[str, Any]:
        with aws_environment(region):
            made = aws.provision(runtimes, visibility_timeout=visibility, max_receive_count=max_receives)
            data = weights.build_checkpoint(weights_mib * 1024 * 1024)
            weights.upload_checkpoint(data, made.models_bucket, MODEL_KEY)
            return {**asdict(made), "model_key": MODEL_KEY, "model_bytes": len(data)}

    return in_namespace(network.AWS_NS, work)


def queue_depth(region: str, queue_url: str) -> int:
    """Visible plus in-flight messages: what KEDA's aws-sqs-queue scaler counts."""
    from inference_workload import aws

    def work() -> int:
        with aws_environment(region):
            attrs = aws.client("sqs").get_queue_attributes(
                QueueUrl=queue_url,
                AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
            )["Attributes"]
            return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])

    return in_namespace(network.AWS_NS, work)
