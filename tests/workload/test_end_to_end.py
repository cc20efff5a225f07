"""End to end on a real moto server: load client → API → topic → filtered queue → agent → runtime → S3.

Also the agent's failure paths: a runtime error is a finished, failed task; an upload that
keeps failing ends in the dead-letter queue; a job longer than the visibility timeout runs once.
"""

from __future__ import annotations

import io
import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from PIL import Image

from inference_workload import api, aws, load
from inference_workload.aws import Provisioned
from inference_workload.queue_agent import AgentConfig, QueueAgent

from .conftest import provision_unique, receive_all, serving, wait_until
from .test_tasks import SCENARIO_TASK


def agent_config(provisioned: Provisioned, runtime_url: str, **changes: Any) -> AgentConfig:
    options: dict[str, Any] = {"queue_url": provisioned.runtimes["sdruntime"].url,
                               "output_bucket": provisioned.output_bucket,
                               "notification_topic_arn": provisioned.notification_topic_arn,
                               "runtime_url": runtime_url, "wait_seconds": 1, **changes}
    return AgentConfig(**options)


@contextmanager
def running(agent: QueueAgent) -> Iterator[QueueAgent]:
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    try:
        yield agent
    finally:
        agent.stop.set()
        thread.join(timeout=15)
        assert not thread.is_alive(), "the agent did not stop"


def queue_depth(url: str) -> int:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attrs = aws.client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return sum(int(attrs[n]) for n in names)


def s3_object(url: str) -> bytes:
    bucket, _, key = url.removeprefix("s3://").partition("/")
    return aws.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()


def publish_task(provisioned: Provisioned, task_id: str, **content: Any) -> None:
    doc = json.loads(json.dumps(SCENARIO_TASK["task"]))
    doc["metadata"]["id"] = task_id
    doc["content"].update({"steps": 2, "width": 64, "height": 64, **content})
    aws.client("sns").publish(TopicArn=provisioned.task_topic_arn, Message=json.dumps(doc),
                              MessageAttributes={"runtime": {"DataType": "String", "StringValue": "sdruntime"}})


def test_three_task_types_end_to_end(provisioned: Provisioned, runtime_url: str) -> None:
    with serving(api.create_app(provisioned.task_topic_arn, provisioned.output_bucket)) as api_url, \
            running(QueueAgent(agent_config(provisioned, runtime_url))):
        sent = list(load.run_load(api_url, steps=3, width=64, height=64, upscale_input=16))
        other = list(load.run_load(api_url, runtime="other", steps=3, width=64, height=64))
        notes = [m["body"] for m in receive_all(provisioned.notification_queue_url, expect=3, timeout=30)]
    assert [s.status_code for s in sent + other] == [200] * 6
    by_id = {n["id"]: n for n in notes}
    assert set(by_id) == {s.id for s in sent}  # nothing from the "other" runtime's tasks
    sizes = {"text-to-image": (64, 64), "image-to-image": (64, 64), "extra-single-image": (64, 64)}
    for sub in sent:
        note = by_id[sub.id]
        assert sub.answer["output_location"] == f"s3://{provisioned.output_bucket}/output/{sub.id}"
        assert (note["runtime"], note["result"], note["status"], note["context"]) == (
            "sdruntime", True, "completed", {"round": 0})
        [image_url] = note["image_url"]
        base = f"s3://{provisioned.output_bucket}/output/{sub.id}/{sub.id}-"
        rand4 = re.fullmatch(re.escape(base) + r"([0-9a-f]{4})-1\.png", image_url).group(1)
        assert note["output_url"] == f"{base}{rand4}.out"
        image = Image.open(io.BytesIO(s3_object(image_url)))
        assert image.format == "PNG" and image.size == sizes[sub.tasktype]
        document = json.loads(s3_object(note["output_url"]))
        assert document["parameters"]["id_task"] == sub.id and document["images"] == [image_url]
    assert queue_depth(provisioned.runtimes["sdruntime"].url) == 0
    assert queue_depth(provisioned.runtimes["sdruntime"].dlq_url) == 0
    left_for_other = receive_all(provisioned.runtimes["other"].url, expect=3)
    assert sorted(m["body"]["metadata"]["id"] for m in left_for_other) == sorted(s.id for s in other)


def test_runtime_error_is_a_failed_notification(provisioned: Provisioned, runtime_url: str) -> None:
    with running(QueueAgent(agent_config(provisioned, runtime_url))):
        publish_task(provisioned, "bad-steps", steps=0)
        [note] = [m["body"] for m in receive_all(provisioned.notification_queue_url, expect=1, timeout=20)]
        wait_until(lambda: queue_depth(provisioned.runtimes["sdruntime"].url) == 0)
    assert (note["id"], note["result"], note["status"], note["image_url"]) == ("bad-steps", False, "failed", [])
    document = json.loads(s3_object(note["output_url"]))
    assert document["parameters"]["error_msg"] == "runtime answered HTTP 422"
    assert document["parameters"]["reason"]["detail"][0]["loc"] == ["body", "steps"]
    assert queue_depth(provisioned.runtimes["sdruntime"].dlq_url) == 0


def test_missing_input_image_is_a_failed_notification(provisioned: Provisioned, runtime_url: str) -> None:
    with running(QueueAgent(agent_config(provisioned, runtime_url))):
        doc = {"metadata": {"id": "no-input", "runtime": "sdruntime", "tasktype": "image-to-image",
                            "prefix": "output"},
               "content": {"init_images": [f"s3://{provisioned.models_bucket}/absent.png"], "steps": 2}}
        aws.client("sns").publish(TopicArn=provisioned.task_topic_arn, Message=json.dumps(doc),
                                  MessageAttributes={"runtime": {"DataType": "String", "StringValue": "sdruntime"}})
        [note] = [m["body"] for m in receive_all(provisioned.notification_queue_url, expect=1, timeout=20)]
    assert note["status"] == "failed"
    assert "cannot fetch input image" in json.loads(s3_object(note["output_url"]))["parameters"]["error_msg"]


def test_s3_input_image_is_fetched(provisioned: Provisioned, runtime_url: str) -> None:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), "green").save(out, format="PNG")
    aws.client("s3").put_object(Bucket=provisioned.models_bucket, Key="in.png", Body=out.getvalue())
    with running(QueueAgent(agent_config(provisioned, runtime_url))):
        doc = {"metadata": {"id": "s3-input", "runtime": "sdruntime", "tasktype": "extra-single-image",
                            "prefix": "up/"},
               "content": {"image": f"s3://{provisioned.models_bucket}/in.png", "upscaling_resize": 2}}
        aws.client("sns").publish(TopicArn=provisioned.task_topic_arn, Message=json.dumps(doc),
                                  MessageAttributes={"runtime": {"DataType": "String", "StringValue": "sdruntime"}})
        [note] = [m["body"] for m in receive_all(provisioned.notification_queue_url, expect=1, timeout=20)]
    assert note["status"] == "completed"
    assert note["output_url"].startswith(f"s3://{provisioned.output_bucket}/up/s3-input/s3-input-")
    assert Image.open(io.BytesIO(s3_object(note["image_url"][0]))).size == (16, 16)


def test_failing_upload_ends_in_the_dead_letter_queue(moto_endpoint: str, suffix: str, runtime_url: str,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    short = provision_unique(suffix + "d", ["sdruntime"], visibility_timeout=1, max_receive_count=3)
    caplog.set_level(logging.INFO, logger="inference_workload")
    config = agent_config(short, runtime_url, output_bucket=f"absent-bucket-{suffix}")
    with running(QueueAgent(config)):
        publish_task(short, "doomed")
        [dead] = receive_all(short.runtimes["sdruntime"].dlq_url, expect=1, timeout=25)
    assert dead["body"]["metadata"]["id"] == "doomed"
    failures = [r.getMessage() for r in caplog.records if "failed" in r.getMessage() and "doomed" in r.getMessage()]
    assert [re.search(r"attempt (\d+) failed", m).group(1) for m in failures] == ["1", "2", "3"]
    assert all("NoSuchBucket" in m for m in failures)
    assert queue_depth(short.runtimes["sdruntime"].url) == 0
    assert receive_all(short.notification_queue_url) == []


class SlowRuntime(httpx.HTTPTransport):
    """A transport that counts generation calls and makes each one take ``delay`` seconds longer."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay, self.posts = delay, 0
        self.lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            with self.lock:
                self.posts += 1
            time.sleep(self.delay)
        return super().handle_request(request)


def test_long_job_is_kept_invisible_and_runs_once(moto_endpoint: str, suffix: str, runtime_url: str) -> None:
    short = provision_unique(suffix + "v", ["sdruntime"], visibility_timeout=2)
    transport = SlowRuntime(delay=4.5)  # over two visibility timeouts
    agents = [QueueAgent(agent_config(short, runtime_url), http=httpx.Client(transport=transport, timeout=30))
              for _ in range(2)]
    with running(agents[0]), running(agents[1]):
        publish_task(short, "long-job")
        notes = receive_all(short.notification_queue_url, expect=1, timeout=20)
        time.sleep(2.5)  # room for a duplicate run to show up: its POST is counted as it is sent
        notes += receive_all(short.notification_queue_url)
    assert [n["body"]["id"] for n in notes] == ["long-job"]
    assert transport.posts == 1
    assert queue_depth(short.runtimes["sdruntime"].url) == 0


def test_stopping_agent_hands_a_received_message_back(provisioned: Provisioned, runtime_url: str) -> None:
    agent = QueueAgent(agent_config(provisioned, runtime_url))
    publish_task(provisioned, "handed-back")
    agent.stop.set()
    assert wait_until(lambda: agent.poll_once() == [] and queue_depth(provisioned.runtimes["sdruntime"].url))
    [message] = receive_all(provisioned.runtimes["sdruntime"].url, expect=1, timeout=3)
    assert message["body"]["metadata"]["id"] == "handed-back"
    assert message["attributes"]["ApproximateReceiveCount"] == "2"  # received by the agent, then again here
