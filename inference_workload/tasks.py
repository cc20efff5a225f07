"""Task schema and validation: the rules the front end applies before publishing a task.

Pure functions, no I/O. Every rejection is a ``TaskError`` whose message starts with the
dotted path of the offending field (``task.metadata.runtime must be ...``) so an HTTP 400 tells
the client exactly what to fix. The same parser reads tasks back off the queue, where they
arrive without the ``{"task": ...}`` envelope (the front end publishes the inner object, as
the reference Lambda does).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "MAX_BODY_BYTES",
    "TASK_TYPES",
    "Task",
    "TaskError",
    "TaskTooLarge",
    "is_identifier",
    "parse_body",
    "task_from_message",
    "validate_task",
]

TEXT_TO_IMAGE = "text-to-image"
IMAGE_TO_IMAGE = "image-to-image"
EXTRA_SINGLE_IMAGE = "extra-single-image"
TASK_TYPES = (TEXT_TO_IMAGE, IMAGE_TO_IMAGE, EXTRA_SINGLE_IMAGE)
# SQS's maximum message size; the scenario's "body ≤ 1 MB".
MAX_BODY_BYTES = 1_048_576


class TaskError(ValueError):
    """A task that breaks a rule; ``field`` is the dotted path of the culprit."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field} {problem}")
        self.field = field


class TaskTooLarge(TaskError):
    """The body is over ``MAX_BODY_BYTES`` (HTTP 413 rather than 400)."""


@dataclass(frozen=True)
class Task:
    """A validated task: metadata flattened, content passed through untouched."""

    id: str
    runtime: str
    tasktype: str
    prefix: str
    content: dict[str, Any]
    context: Any = field(default_factory=dict)

    @property
    def output_prefix(self) -> str:
        """``<prefix>/<id>``: where the agent writes this task's images and result."""
        return f"{self.prefix.rstrip('/')}/{self.id}"

    def message(self) -> dict[str, Any]:
        """The document published to the task topic (the body without its ``task`` envelope)."""
        metadata = {"id": self.id, "runtime": self.runtime, "tasktype": self.tasktype,
                    "prefix": self.prefix, "context": self.context}
        return {"metadata": metadata, "content": self.content}


def is_identifier(value: str) -> bool:
    """True when ``value`` is ASCII letters and digits once ``-`` and ``_`` are removed."""
    stripped = value.replace("-", "").replace("_", "")
    # ASCII only: ids end up in S3 keys and queue names, where a Unicode "letter" is a surprise.
    return stripped.isascii() and stripped.isalnum()


def parse_body(raw: bytes) -> Task:
    """Validate an HTTP body: size, JSON, then the task rules."""
    if len(raw) > MAX_BODY_BYTES:
        raise TaskTooLarge("body", f"is {len(raw)} bytes, over the limit of {MAX_BODY_BYTES} bytes")
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TaskError("body", f"is not valid JSON ({exc})") from None
    return validate_task(doc)


def validate_task(doc: Any) -> Task:
    """Validate a decoded body ``{"task": {"metadata": ..., "content": ...}}``."""
    if not isinstance(doc, dict):
        raise TaskError("body", "must be a JSON object")
    return _validate_inner(_require_object(doc, "task", "task"), "task")


def task_from_message(doc: Any) -> Task:
    """Validate a task read off a queue: with or without the ``task`` envelope."""
    if isinstance(doc, dict) and "task" in doc:
        return validate_task(doc)
    if not isinstance(doc, dict):
        raise TaskError("message", "must be a JSON object")
    return _validate_inner(doc, "message")


def _validate_inner(task: dict[str, Any], path: str) -> Task:
    metadata = _require_object(task, "metadata", f"{path}.metadata")
    content = _require_object(task, "content", f"{path}.content")
    meta = f"{path}.metadata"
    task_id = _require_identifier(metadata, "id", meta)
    runtime = _require_identifier(metadata, "runtime", meta)
    tasktype = _require_string(metadata, "tasktype", meta)
    if tasktype not in TASK_TYPES:
        raise TaskError(f"{meta}.tasktype", f"must be one of {', '.join(TASK_TYPES)} (got {tasktype!r})")
    prefix = _require_string(metadata, "prefix", meta)
    _check_content(tasktype, content, f"{path}.content")
    return Task(task_id, runtime, tasktype, prefix, content, metadata.get("context", {}))


def _check_content(tasktype: str, content: dict[str, Any], path: str) -> None:
    if tasktype == IMAGE_TO_IMAGE:
        images = content.get("init_images")
        if images is None:
            raise TaskError(f"{path}.init_images", "is required for image-to-image")
        if not isinstance(images, list) or not images or not all(isinstance(i, str) and i for i in images):
            raise TaskError(f"{path}.init_images", "must be a non-empty list of image URLs or base64 strings")
    elif tasktype == EXTRA_SINGLE_IMAGE:
        image = content.get("image")
        if image is None:
            raise TaskError(f"{path}.image", "is required for extra-single-image")
        if not isinstance(image, str) or not image:
            raise TaskError(f"{path}.image", "must be a non-empty image URL or base64 string")


def _require_object(parent: dict[str, Any], key: str, path: str) -> dict[str, Any]:
    if key not in parent:
        raise TaskError(path, "is required")
    value = parent[key]
    if not isinstance(value, dict):
        raise TaskError(path, "must be an object")
    return value


def _require_string(parent: dict[str, Any], key: str, path: str) -> str:
    if key not in parent:
        raise TaskError(f"{path}.{key}", "is required")
    value = parent[key]
    if not isinstance(value, str) or not value:
        raise TaskError(f"{path}.{key}", "must be a non-empty string")
    return value


def _require_identifier(parent: dict[str, Any], key: str, path: str) -> str:
    value = _require_string(parent, key, path)
    if not is_identifier(value):
        raise TaskError(f"{path}.{key}", "must be alphanumeric once - and _ are removed")
    return value
