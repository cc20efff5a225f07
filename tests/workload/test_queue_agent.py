"""The queue agent's edges: message envelopes, input images, and its entry point under SIGTERM."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
from typing import Any

import httpx
import pytest

from inference_workload import aws, runtime
from inference_workload.inputs import InputError, resolve_image
from inference_workload.queue_agent import AgentConfig, Disposition, QueueAgent, _unwrap

from .conftest import receive_all, serving, wait_until

TASK = {"metadata": {"id": "a", "runtime": "sdruntime", "tasktype": "text-to-image", "prefix": "p"}, "content": {}}


def test_raw_and_enveloped_messages() -> None:
    assert _unwrap(json.dumps(TASK)) == TASK
    envelope = {"Type": "Notification", "MessageId": "m", "Message": json.dumps(TASK)}
    assert _unwrap(json.dumps(envelope)) == TASK


def test_resolve_image_sources() -> None:
    served = httpx.Client(transport=httpx.MockTransport(
        lambda r: httpx.Response(200, content=b"PNGDATA") if r.url.path == "/ok.png" else httpx.Response(404)))
    assert resolve_image("https://images/ok.png", s3=None, http=served) == base64.b64encode(b"PNGDATA").decode()
    assert resolve_image("aGVsbG8=", s3=None, http=served) == "aGVsbG8="
    with pytest.raises(InputError, match=r"cannot fetch input image https://images/missing\.png"):
        resolve_image("https://images/missing.png", s3=None, http=served)


def test_entry_point_finishes_the_current_task_on_sigterm(provisioned: Any, tiny_model: tuple[str, str]) -> None:
    # A deliberately slow runtime (high cost) so SIGTERM lands while the job runs.
    app = runtime.create_app(runtime.s3_loader(*tiny_model), cost=1000)
    with serving(app) as url:
        wait_until(lambda: httpx.get(f"{url}/sdapi/v1/memory").status_code == 200)
        proc = subprocess.Popen(
            [sys.executable, "-m", "inference_workload.queue_agent",
             "--queue-url", provisioned.runtimes["sdruntime"].url, "--runtime-url", url,
             "--output-bucket", provisioned.output_bucket,
             "--notification-topic-arn", provisioned.notification_topic_arn, "--wait-seconds", "1"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy())
        lines: list[str] = []
        threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True).start()
        try:
            doc = json.loads(json.dumps(TASK))
            doc["metadata"]["id"] = "sigterm"
            doc["content"] = {"prompt": "slow", "steps": 20, "width": 128, "height": 128}  # about 2 s
            aws.client("sns").publish(TopicArn=provisioned.task_topic_arn, Message=json.dumps(doc),
                                      MessageAttributes={"runtime": {"DataType": "String", "StringValue": "sdruntime"}})
            wait_until(lambda: any("task sigterm (text-to-image): attempt 1" in x for x in lines), timeout=20)
            assert not any("completed" in x for x in lines)  # the job is still running
            os.kill(proc.pid, signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
    wait_until(lambda: any("queue agent stopped" in x for x in lines))
    stop = next(i for i, x in enumerate(lines) if "stop requested" in x)
    done = next(i for i, x in enumerate(lines) if "task sigterm completed" in x)
    assert stop < done, lines
    [note] = receive_all(provisioned.notification_queue_url, expect=1)
    assert (note["body"]["id"], note["body"]["status"]) == ("sigterm", "completed")


def test_runtime_still_loading_means_retry_not_failure(provisioned: Any) -> None:
    never = threading.Event()

    def loader() -> Any:  # a model that is still loading for the whole test
        never.wait(30)
        raise RuntimeError("test over")

    app = runtime.create_app(loader)
    with serving(app) as url:
        agent = QueueAgent(AgentConfig(provisioned.runtimes["sdruntime"].url, provisioned.output_bucket,
                                       provisioned.notification_topic_arn, url, wait_seconds=1))
        agent.runtime_ready = True  # as if the probe had passed and the runtime restarted since
        publish(provisioned, "early")
        assert wait_until(lambda: agent.poll_once()) == [Disposition.RETRY]
        never.set()
    assert agent.runtime_ready is False  # the agent goes back to waiting for the probe
    assert receive_all(provisioned.notification_queue_url) == []
    sqs = aws.client("sqs")
    attrs = sqs.get_queue_attributes(QueueUrl=provisioned.runtimes["sdruntime"].url,
                                     AttributeNames=["ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    assert attrs["ApproximateNumberOfMessagesNotVisible"] == "1"  # not deleted: it comes back


def publish(provisioned: Any, task_id: str) -> None:
    doc = json.loads(json.dumps(TASK))
    doc["metadata"]["id"] = task_id
    aws.client("sns").publish(TopicArn=provisioned.task_topic_arn, Message=json.dumps(doc),
                              MessageAttributes={"runtime": {"DataType": "String", "StringValue": "sdruntime"}})
