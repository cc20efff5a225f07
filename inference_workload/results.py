"""Where a finished task's outputs go and what its completion notification says.

Keys follow the reference agent: images at ``<prefix>/<id>/<id>-<rand4>-<n>.png`` (n from 1)
and the result document at ``<prefix>/<id>/<id>-<rand4>.out``; ``rand4`` keeps a retried task
from overwriting an earlier attempt. The notification is
``{"runtime", "id", "result", "status", "image_url", "output_url", "context"}``.
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from inference_workload.tasks import Task

__all__ = ["Outcome", "failed", "image_key", "new_rand4", "notification", "out_key", "publish", "succeeded", "upload"]


@dataclass(frozen=True)
class Outcome:
    """A task's result: the images (PNG bytes) and the ``.out`` document."""

    success: bool
    images: list[bytes] = field(default_factory=list)
    document: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return "completed" if self.success else "failed"


def succeeded(task: Task, response: dict[str, Any]) -> Outcome:
    """The outcome of a runtime answer: ``images`` (txt2img/img2img) or ``image`` (extras)."""
    encoded = response.get("images") or ([response["image"]] if response.get("image") else [])
    images = [base64.b64decode(i) for i in encoded]
    parameters = dict(response.get("parameters") or {})
    parameters.pop("image", None)  # the extras echo would otherwise carry the whole input back
    parameters["id_task"] = task.id
    info = response.get("info") or response.get("html_info") or ""
    try:
        seeds = json.loads(info).get("all_seeds", [])
    except (ValueError, AttributeError):
        seeds = []
    parameters["image_seed"] = ",".join(str(s) for s in seeds)
    parameters["error_msg"] = ""
    return Outcome(True, images, {"images": [], "parameters": parameters, "info": info})


def failed(task: Task, error: str, reason: Any = None) -> Outcome:
    """The outcome of a task the runtime (or its inputs) rejected."""
    parameters = {"id_task": task.id, "status": 0, "image_seed": [], "error_msg": error, "reason": reason}
    return Outcome(False, [], {"images": [], "parameters": parameters, "info": ""})


def new_rand4() -> str:
    return uuid.uuid4().hex[:4]


def image_key(task: Task, rand4: str, n: int) -> str:
    return f"{task.output_prefix}/{task.id}-{rand4}-{n}.png"


def out_key(task: Task, rand4: str) -> str:
    return f"{task.output_prefix}/{task.id}-{rand4}.out"


def upload(s3: Any, bucket: str, task: Task, outcome: Outcome, rand4: str) -> tuple[list[str], str]:
    """Upload the images, then the ``.out`` document listing them; returns their ``s3://`` URLs."""
    urls = []
    for n, png in enumerate(outcome.images, start=1):
        key = image_key(task, rand4, n)
        s3.put_object(Bucket=bucket, Key=key, Body=png, ContentType="image/png")
        urls.append(f"s3://{bucket}/{key}")
    document = {**outcome.document, "images": urls}
    key = out_key(task, rand4)
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(document).encode(), ContentType="application/json")
    return urls, f"s3://{bucket}/{key}"


def notification(task: Task, outcome: Outcome, image_urls: list[str], output_url: str) -> dict[str, Any]:
    return {"runtime": task.runtime, "id": task.id, "result": outcome.success, "status": outcome.status,
            "image_url": image_urls, "output_url": output_url, "context": task.context}


def publish(sns: Any, topic_arn: str, doc: dict[str, Any]) -> str:
    """Publish a notification; ``runtime`` and ``status`` ride as attributes so subscribers can filter."""
    attributes = {name: {"DataType": "String", "StringValue": str(doc[name])} for name in ("runtime", "status")}
    return sns.publish(TopicArn=topic_arn, Message=json.dumps(doc), MessageAttributes=attributes)["MessageId"]
