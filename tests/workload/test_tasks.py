"""Task validation: every rule of the scenario, each rejection naming its field."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inference_workload.tasks import (
    MAX_BODY_BYTES,
    TaskError,
    TaskTooLarge,
    is_identifier,
    parse_body,
    task_from_message,
    validate_task,
)

SCENARIO_TASK: dict[str, Any] = {"task": {
    "metadata": {"id": "test-t2i", "runtime": "sdruntime", "tasktype": "text-to-image",
                 "prefix": "output", "context": ""},
    "content": {"alwayson_scripts": {}, "prompt": "A dog", "steps": 16, "width": 512, "height": 512}}}


def body(**changes: Any) -> dict[str, Any]:
    """The scenario's task with dotted-path changes; a value of ``...`` deletes the key."""
    doc = copy.deepcopy(SCENARIO_TASK)
    for path, value in changes.items():
        *parents, last = path.split("__")
        node = doc
        for part in parents:
            node = node[part]
        if value is ...:
            del node[last]
        else:
            node[last] = value
    return doc


def rejection(doc: Any) -> str:
    with pytest.raises(TaskError) as info:
        validate_task(doc)
    return str(info.value)


def test_scenario_task_is_accepted() -> None:
    task = validate_task(SCENARIO_TASK)
    assert (task.id, task.runtime, task.tasktype, task.prefix, task.context) == (
        "test-t2i", "sdruntime", "text-to-image", "output", "")
    assert task.content == SCENARIO_TASK["task"]["content"]
    assert task.output_prefix == "output/test-t2i"


@pytest.mark.parametrize(("path", "message"), [
    ("task", "task is required"),
    ("task__metadata", "task.metadata is required"),
    ("task__content", "task.content is required"),
    ("task__metadata__id", "task.metadata.id is required"),
    ("task__metadata__runtime", "task.metadata.runtime is required"),
    ("task__metadata__tasktype", "task.metadata.tasktype is required"),
    ("task__metadata__prefix", "task.metadata.prefix is required"),
])
def test_missing_required_field_is_named(path: str, message: str) -> None:
    assert rejection(body(**{path: ...})) == message


def test_context_is_optional() -> None:
    assert validate_task(body(task__metadata__context=...)).context == {}
    assert validate_task(body(task__metadata__context={"user": 7})).context == {"user": 7}


@pytest.mark.parametrize("field", ["id", "runtime"])
@pytest.mark.parametrize("value", ["a b", "dog!", "x/y", "---", "__", "é", "a.b"])
def test_identifiers_must_be_alphanumeric(field: str, value: str) -> None:
    message = rejection(body(**{f"task__metadata__{field}": value}))
    assert message == f"task.metadata.{field} must be alphanumeric once - and _ are removed"


@pytest.mark.parametrize("value", ["a-b_c", "T2I", "run-1_2", "x"])
def test_identifiers_may_use_dash_and_underscore(value: str) -> None:
    task = validate_task(body(task__metadata__id=value, task__metadata__runtime=value))
    assert task.id == task.runtime == value


@pytest.mark.parametrize("value", [7, None, "", ["a"]])
def test_identifier_must_be_a_string(value: Any) -> None:
    assert rejection(body(task__metadata__id=value)) == "task.metadata.id must be a non-empty string"


@pytest.mark.parametrize("value", ["txt2img", "TEXT-TO-IMAGE", "upscale"])
def test_unknown_tasktype(value: str) -> None:
    message = rejection(body(task__metadata__tasktype=value))
    assert message.startswith("task.metadata.tasktype must be one of text-to-image, image-to-image, extra-single-image")


@pytest.mark.parametrize("path", ["task", "task__metadata", "task__content"])
def test_objects_must_be_objects(path: str) -> None:
    assert rejection(body(**{path: "nope"})) == f"{path.replace('__', '.')} must be an object"


def test_empty_prefix_is_rejected() -> None:
    assert rejection(body(task__metadata__prefix="")) == "task.metadata.prefix must be a non-empty string"


def test_image_to_image_needs_init_images() -> None:
    doc = body(task__metadata__tasktype="image-to-image")
    assert rejection(doc) == "task.content.init_images is required for image-to-image"
    doc["task"]["content"]["init_images"] = []
    assert rejection(doc).startswith("task.content.init_images must be a non-empty list")
    doc["task"]["content"]["init_images"] = ["s3://bucket/dog.png"]
    assert validate_task(doc).tasktype == "image-to-image"


def test_extra_single_image_needs_image() -> None:
    doc = body(task__metadata__tasktype="extra-single-image")
    assert rejection(doc) == "task.content.image is required for extra-single-image"
    doc["task"]["content"]["image"] = 5
    assert rejection(doc).startswith("task.content.image must be a non-empty")
    doc["task"]["content"].update(image="aGVsbG8=", resize_mode=0, upscaling_resize=4)
    assert validate_task(doc).tasktype == "extra-single-image"


def test_body_must_be_json_object() -> None:
    with pytest.raises(TaskError, match=r"^body is not valid JSON"):
        parse_body(b"{nope")
    with pytest.raises(TaskError, match=r"^body must be a JSON object"):
        parse_body(b"[1, 2]")


def test_body_size_limit() -> None:
    doc = body()
    doc["task"]["content"]["prompt"] = ""
    raw = json.dumps(doc).encode()
    fill = MAX_BODY_BYTES - len(raw)
    doc["task"]["content"]["prompt"] = "a" * fill
    assert parse_body(json.dumps(doc).encode()).id == "test-t2i"  # exactly at the limit
    doc["task"]["content"]["prompt"] = "a" * (fill + 1)
    with pytest.raises(TaskTooLarge, match=r"^body is 1048577 bytes, over the limit"):
        parse_body(json.dumps(doc).encode())


def test_message_round_trip() -> None:
    task = validate_task(SCENARIO_TASK)
    assert task_from_message(task.message()) == task
    assert task_from_message(SCENARIO_TASK) == task
    with pytest.raises(TaskError, match=r"^message.metadata is required"):
        task_from_message({"content": {}})


@given(st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=20))
def test_identifier_rule_property(value: str) -> None:
    stripped = value.replace("-", "").replace("_", "")
    expected = bool(stripped) and all(c.isascii() and c.isalnum() for c in stripped)
    assert is_identifier(value) == expected
    doc = body(task__metadata__id=value)
    if expected:
        assert validate_task(doc).id == value
    else:
        assert rejection(doc) == "task.metadata.id must be alphanumeric once - and _ are removed"


@given(st.sampled_from(["task", "task.metadata", "task.content", "task.metadata.id", "task.metadata.runtime",
                        "task.metadata.tasktype", "task.metadata.prefix"]))
def test_every_rejection_names_a_field_property(path: str) -> None:
    assert rejection(body(**{path.replace(".", "__"): ...})).startswith(path + " ")
