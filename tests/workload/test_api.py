"""The front end: validation answers, publishing with the runtime attribute, size limits."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from inference_workload import api
from inference_workload.aws import Provisioned
from inference_workload.tasks import MAX_BODY_BYTES

from .conftest import receive_all, serving
from .test_tasks import SCENARIO_TASK


@pytest.fixture
def api_client(provisioned: Provisioned) -> Iterator[httpx.Client]:
    with serving(api.create_app(provisioned.task_topic_arn, provisioned.output_bucket)) as url, \
            httpx.Client(base_url=url, timeout=30) as client:
        yield client


def task_for(runtime: str, task_id: str) -> dict[str, Any]:
    doc = copy.deepcopy(SCENARIO_TASK)
    doc["task"]["metadata"].update(id=task_id, runtime=runtime)
    return doc


@pytest.mark.parametrize("path", ["/", "/tasks"])
def test_accepted_task_is_published_for_its_runtime(api_client: httpx.Client, provisioned: Provisioned,
                                                    path: str) -> None:
    response = api_client.post(path, json=task_for("sdruntime", "test-t2i"))
    assert response.status_code == 200
    assert response.json() == {"id": "test-t2i", "runtime": "sdruntime",
                               "output_location": f"s3://{provisioned.output_bucket}/output/test-t2i"}
    [message] = receive_all(provisioned.runtimes["sdruntime"].url, expect=1)
    assert message["body"] == {"metadata": SCENARIO_TASK["task"]["metadata"],
                               "content": SCENARIO_TASK["task"]["content"]}
    assert message["message_attributes"]["runtime"]["StringValue"] == "sdruntime"
    assert receive_all(provisioned.runtimes["other"].url) == []


def test_task_for_another_runtime_goes_to_its_queue(api_client: httpx.Client, provisioned: Provisioned) -> None:
    assert api_client.post("/", json=task_for("other", "o-1")).status_code == 200
    assert [m["body"]["metadata"]["id"] for m in receive_all(provisioned.runtimes["other"].url, expect=1)] == ["o-1"]
    assert receive_all(provisioned.runtimes["sdruntime"].url, wait=1) == []


@pytest.mark.parametrize(("change", "field"), [
    (lambda t: t["task"]["metadata"].update(runtime="sd runtime"), "task.metadata.runtime"),
    (lambda t: t["task"]["metadata"].update(id="a/b"), "task.metadata.id"),
    (lambda t: t["task"]["metadata"].update(tasktype="txt2img"), "task.metadata.tasktype"),
    (lambda t: t["task"]["metadata"].pop("prefix"), "task.metadata.prefix"),
    (lambda t: t["task"].pop("content"), "task.content"),
    (lambda t: t["task"]["metadata"].update(tasktype="image-to-image"), "task.content.init_images"),
    (lambda t: t["task"]["metadata"].update(tasktype="extra-single-image"), "task.content.image"),
])
def test_invalid_task_is_400_naming_the_field(api_client: httpx.Client, provisioned: Provisioned,
                                              change: Any, field: str) -> None:
    doc = task_for("sdruntime", "bad")
    change(doc)
    response = api_client.post("/", json=doc)
    assert response.status_code == 400
    assert response.json()["error"].startswith(field + " ")
    assert receive_all(provisioned.runtimes["sdruntime"].url) == []


def test_invalid_json_is_400(api_client: httpx.Client) -> None:
    response = api_client.post("/", content=b'{"task": ', headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json()["error"].startswith("body is not valid JSON")


def test_body_over_1_mib_is_413(api_client: httpx.Client) -> None:
    doc = task_for("sdruntime", "huge")
    doc["task"]["content"]["prompt"] = "a" * MAX_BODY_BYTES
    response = api_client.post("/", content=json.dumps(doc).encode())
    assert response.status_code == 413 and response.json()["error"].startswith("body is")


def test_body_over_the_sns_limit_is_413(api_client: httpx.Client, provisioned: Provisioned) -> None:
    doc = task_for("sdruntime", "big")
    doc["task"]["content"]["prompt"] = "a" * 300_000  # under 1 MiB, over SNS's 256 KiB
    response = api_client.post("/", json=doc)
    assert response.status_code == 413 and "larger than the topic accepts" in response.json()["error"]
    assert receive_all(provisioned.runtimes["sdruntime"].url) == []


def test_publish_failure_is_502(moto_endpoint: str, provisioned: Provisioned) -> None:
    missing = provisioned.task_topic_arn + "-gone"
    with serving(api.create_app(missing, provisioned.output_bucket)) as url:
        response = httpx.post(url, json=task_for("sdruntime", "x"))
    assert response.status_code == 502 and response.json()["error"].startswith("could not queue the task")
