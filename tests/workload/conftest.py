"""Fixtures for the inference workload: a real moto server, provisioned resources, live servers.

One ``moto_server`` process serves the whole session on a free loopback port; every test
provisions resources under its own random names, so tests never see each other's messages.
Servers (runtime, API) run in-process on uvicorn in a thread and are stopped after the test.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from inference_workload import aws, runtime, weights
from inference_workload.aws import Provisioned

MOTO_SERVER = Path(sys.executable).with_name("moto_server")
TINY_MODEL = 2 * weights.MIB


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll ``check`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {check}")
        time.sleep(interval)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A real moto server; AWS_ENDPOINT_URL points at it for the whole session."""
    port = free_port()
    proc = subprocess.Popen([str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_EC2_METADATA_DISABLED")}
    os.environ.update(AWS_ENDPOINT_URL=endpoint, AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")
    try:
        wait_until(lambda: _answers(endpoint), timeout=20)
        yield endpoint
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _answers(endpoint: str) -> bool:
    try:
        return httpx.get(f"{endpoint}/moto-api/", timeout=1).status_code < 500
    except httpx.HTTPError:
        return False


@pytest.fixture
def suffix() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture
def provisioned(moto_endpoint: str, suffix: str) -> Provisioned:
    """The workload's resources for runtimes ``sdruntime`` and ``other``, under unique names."""
    return provision_unique(suffix, ["sdruntime", "other"])


def provision_unique(suffix: str, runtimes: list[str], **options: Any) -> Provisioned:
    return aws.provision(runtimes, models_bucket=f"models-{suffix}", output_bucket=f"outputs-{suffix}",
                         task_topic=f"tasks-{suffix}", notification_topic=f"notes-{suffix}",
                         notification_queue=f"notes-{suffix}", queue_name=f"{{runtime}}-{suffix}",
                         dlq_name=f"{{runtime}}-{suffix}-dlq", **options)


@pytest.fixture
def tiny_model(provisioned: Provisioned) -> tuple[str, str]:
    """A 2 MiB checkpoint in the models bucket: (bucket, key)."""
    key = "tiny.safetensors"
    weights.upload_checkpoint(weights.build_checkpoint(TINY_MODEL, seed=1), provisioned.models_bucket, key)
    return provisioned.models_bucket, key


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """Run an ASGI app on uvicorn in a thread; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def runtime_url(tiny_model: tuple[str, str]) -> Iterator[str]:
    """A live runtime with the tiny model loaded and cheap generation."""
    bucket, key = tiny_model
    with serving(runtime.create_app(runtime.s3_loader(bucket, key), cost=1)) as url:
        wait_until(lambda: httpx.get(f"{url}/sdapi/v1/memory").status_code == 200)
        yield url


def receive_all(queue_url: str, *, wait: float = 0.0, expect: int | None = None, timeout: float = 10.0,
                delete: bool = True) -> list[dict[str, Any]]:
    """Messages from a queue (JSON bodies), polling until ``expect`` arrived or ``timeout``."""
    sqs = aws.client("sqs")
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while True:
        response = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=int(wait),
                                       MessageSystemAttributeNames=["All"], MessageAttributeNames=["All"])
        for message in response.get("Messages", []):
            found.append({"body": json.loads(message["Body"]), "attributes": message.get("Attributes", {}),
                          "message_attributes": message.get("MessageAttributes", {})})
            if delete:
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        if expect is None or len(found) >= expect or time.monotonic() > deadline:
            return found
        time.sleep(0.1)
