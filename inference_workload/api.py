"""The front end: accept a task over HTTP, validate it, publish it to the task topic.

``POST /`` (or ``/tasks``) answers 200 ``{"id", "runtime", "output_location"}`` once the task is
on the topic with the message attribute ``runtime=<metadata.runtime>``; 400 ``{"error": ...}``
naming the bad field (or invalid JSON); 413 over 1 MiB, and also when SNS refuses the message
as too long (its limit is 256 KiB, below the scenario's 1 MB); 502 when publishing fails.
The published message is the task without its ``{"task": ...}`` envelope, like the reference.

    python -m inference_workload.api --port 8000 --topic-arn ARN --output-bucket sd-outputs
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any

import uvicorn
from botocore.exceptions import BotoCoreError, ClientError
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from inference_workload import aws, logs
from inference_workload.tasks import MAX_BODY_BYTES, Task, TaskError, TaskTooLarge, parse_body

__all__ = ["create_app", "main"]

log = logging.getLogger("inference_workload.api")


def create_app(topic_arn: str, output_bucket: str, *, sns: Any = None) -> FastAPI:
    """The front-end app publishing to ``topic_arn``."""
    sns = sns or aws.client("sns")
    app = FastAPI(title="sd-task-api")

    async def submit(request: Request) -> JSONResponse:
        try:
            task = parse_body(await _read_capped(request, MAX_BODY_BYTES))
        except TaskTooLarge as exc:
            return _error(413, str(exc))
        except TaskError as exc:
            return _error(400, str(exc))
        try:
            await run_in_threadpool(_publish, sns, topic_arn, task)
        except ClientError as exc:
            if "too long" in str(exc).lower():
                return _error(413, f"task is larger than the topic accepts ({exc.response['Error']['Message']})")
            log.exception("publishing task %s failed", task.id)
            return _error(502, f"could not queue the task: {exc.response['Error']['Message']}")
        except BotoCoreError as exc:
            log.exception("publishing task %s failed", task.id)
            return _error(502, f"could not queue the task: {exc}")
        location = f"s3://{output_bucket}/{task.output_prefix}"
        return JSONResponse({"id": task.id, "runtime": task.runtime, "output_location": location})

    app.add_api_route("/", submit, methods=["POST"])
    app.add_api_route("/tasks", submit, methods=["POST"])
    app.add_api_route("/healthz", lambda: {"status": "ok"}, methods=["GET"])
    return app


def _publish(sns: Any, topic_arn: str, task: Task) -> str:
    attributes = {"runtime": {"DataType": "String", "StringValue": task.runtime}}
    response = sns.publish(TopicArn=topic_arn, Message=json.dumps(task.message()), MessageAttributes=attributes)
    log.info("task %s queued for %s (message %s)", task.id, task.runtime, response["MessageId"])
    return response["MessageId"]


async def _read_capped(request: Request, limit: int) -> bytes:
    """The body, refusing as soon as it passes ``limit`` so a huge upload is never held whole."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise TaskTooLarge("body", f"is {declared} bytes, over the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TaskTooLarge("body", f"is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def main(argv: list[str] | None = None) -> int:
    """Serve the front end."""
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="python -m inference_workload.api", description=main.__doc__)
    parser.add_argument("--host", default=env("API_HOST", "0.0.0.0"))
    parser.add_argument("--port", type=int, default=int(env("API_PORT", "8000")))
    parser.add_argument("--topic-arn", default=env("SNS_TOPIC_ARN"), required=not env("SNS_TOPIC_ARN"),
                        help="task topic (env SNS_TOPIC_ARN)")
    parser.add_argument("--output-bucket", default=env("S3_OUTPUT_BUCKET"), required=not env("S3_OUTPUT_BUCKET"),
                        help="for output_location (env S3_OUTPUT_BUCKET)")
    parser.add_argument("--log-level", default=env("LOG_LEVEL", "info"))
    args = parser.parse_args(argv)
    logs.configure(args.log_level)
    uvicorn.run(create_app(args.topic_arn, args.output_bucket), host=args.host, port=args.port,
                log_level=args.log_level.lower())
    return 0


if __name__ == "__main__":
    sys.exit(main())
