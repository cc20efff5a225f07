"""Turn a task into the runtime request: which endpoint, and images fetched and base64-encoded.

Tasks may point at their input images (``init_images`` for image-to-image, ``image`` for
extra-single-image) by ``http(s)://`` or ``s3://`` URL; the WebUI API only takes base64, so the
queue agent downloads them first, as the reference agent does. Base64 strings and ``data:``
URIs pass through unchanged.
"""

from __future__ import annotations

import base64
import copy
from typing import Any

import httpx

from inference_workload.tasks import EXTRA_SINGLE_IMAGE, IMAGE_TO_IMAGE, TEXT_TO_IMAGE, Task

__all__ = ["ENDPOINTS", "InputError", "prepare_request", "resolve_image"]

ENDPOINTS = {TEXT_TO_IMAGE: "txt2img", IMAGE_TO_IMAGE: "img2img", EXTRA_SINGLE_IMAGE: "extra-single-image"}


class InputError(RuntimeError):
    """An input image could not be fetched: the task cannot succeed as given."""


def prepare_request(task: Task, *, s3: Any, http: httpx.Client) -> tuple[str, dict[str, Any]]:
    """The runtime endpoint (``txt2img`` ...) and the JSON body to send it."""
    body = copy.deepcopy(task.content)
    if task.tasktype == IMAGE_TO_IMAGE:
        body["init_images"] = [resolve_image(ref, s3=s3, http=http) for ref in body["init_images"]]
    elif task.tasktype == EXTRA_SINGLE_IMAGE:
        body["image"] = resolve_image(body["image"], s3=s3, http=http)
    return ENDPOINTS[task.tasktype], body


def resolve_image(ref: str, *, s3: Any, http: httpx.Client) -> str:
    """Base64 of the image ``ref`` names; ``ref`` itself when it already is the image."""
    try:
        if ref.startswith(("http://", "https://")):
            response = http.get(ref, follow_redirects=True)
            response.raise_for_status()
            return base64.b64encode(response.content).decode("ascii")
        if ref.startswith("s3://"):
            bucket, _, key = ref.removeprefix("s3://").partition("/")
            data = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            return base64.b64encode(data).decode("ascii")
    except Exception as exc:
        raise InputError(f"cannot fetch input image {ref}: {exc}") from exc
    return ref
