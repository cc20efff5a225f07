"""The queue agent beside each runtime: queue → runtime → S3 → notification → delete.

It waits until the runtime's startup probe answers 200, then long-polls its queue for one
message at a time. Each message ends one of two ways:

- done: the runtime answered (images and ``.out`` uploaded, ``completed`` notification) or
  rejected the task with an HTTP error or bad input images (``.out`` with the error, ``failed``
  notification). The message is deleted: the task is finished, even if it failed.
- retry: something outside the task broke (upload, publish, runtime unreachable or still
  loading). The message is left on the queue; it comes back after the visibility timeout, and
  after the queue's ``maxReceiveCount`` receives SQS moves it to the dead-letter queue.

While a job runs, ``KeepInvisible`` extends the message's visibility. SIGTERM stops the loop
after the current message; a message received after the stop is made visible again at once.

    python -m inference_workload.queue_agent --queue-url URL --runtime-url http://127.0.0.1:8080 \
        --output-bucket sd-outputs --notification-topic-arn ARN
"""

from __future__ import annotations

import argparse
import enum
import json
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
from botocore.exceptions import BotoCoreError, ClientError
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from inference_workload import aws, logs, results
from inference_workload.inputs import InputError, prepare_request
from inference_workload.tasks import Task, TaskError, task_from_message
from inference_workload.visibility import KeepInvisible

__all__ = ["AgentConfig", "Disposition", "QueueAgent", "main"]

log = logging.getLogger("inference_workload.queue_agent")
# Errors that say nothing about the task itself: leave the message for another attempt.
TRANSIENT = (ClientError, BotoCoreError, httpx.TransportError, OSError)


class Disposition(enum.Enum):
    DONE = "done"
    RETRY = "retry"


class RuntimeUnavailable(RuntimeError):
    """The runtime answered 503: it is not ready, the task is not at fault."""


@dataclass(frozen=True)
class AgentConfig:
    queue_url: str
    output_bucket: str
    notification_topic_arn: str
    runtime_url: str = "http://127.0.0.1:8080"
    wait_seconds: int = 20
    visibility_timeout: float | None = None  # None: read the queue's own setting
    request_timeout: float = 600.0
    ready_poll_seconds: float = 1.0


class AgentMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.tasks = Counter("queue_agent_tasks_total", "Tasks finished", ["tasktype", "status"], registry=r)
        self.retries = Counter("queue_agent_retries_total", "Messages left on the queue for another attempt",
                               registry=r)
        self.seconds = Histogram("queue_agent_task_duration_seconds", "Receive to delete, per task type",
                                 ["tasktype"], registry=r)


class QueueAgent:
    """One queue's consumer; AWS clients, HTTP client and stop event can be handed in."""

    def __init__(self, config: AgentConfig, *, sqs: Any = None, s3: Any = None, sns: Any = None,
                 http: httpx.Client | None = None, stop: threading.Event | None = None,
                 metrics: AgentMetrics | None = None) -> None:
        self.config = config
        self.sqs, self.s3, self.sns = sqs or aws.client("sqs"), s3 or aws.client("s3"), sns or aws.client("sns")
        self.http = http or httpx.Client(timeout=config.request_timeout)
        self.stop = stop or threading.Event()
        self.metrics = metrics or AgentMetrics()
        self.visibility_timeout = config.visibility_timeout or self._queue_visibility()
        self.runtime_ready = False  # checked before the first poll and again after the runtime failed us

    def run(self) -> None:
        """Serve the queue until ``stop`` is set."""
        log.info("queue agent for %s (visibility %ss)", self.config.queue_url, self.visibility_timeout)
        while not self.stop.is_set():
            if not self.runtime_ready and not self.wait_for_runtime():
                break
            try:
                self.poll_once()
            except TRANSIENT:
                log.exception("receiving from %s failed; retrying", self.config.queue_url)
                self.stop.wait(self.config.ready_poll_seconds)
        log.info("queue agent stopped")

    def wait_for_runtime(self) -> bool:
        """Block until the runtime's startup probe answers 200; False when stopped first."""
        url = f"{self.config.runtime_url}/sdapi/v1/memory"
        while not self.stop.is_set():
            try:
                if self.http.get(url, timeout=5).status_code == 200:
                    self.runtime_ready = True
                    return True
            except httpx.TransportError:
                pass
            self.stop.wait(self.config.ready_poll_seconds)
        return False

    def poll_once(self) -> list[Disposition]:
        """One long poll; handles what it receives."""
        response = self.sqs.receive_message(QueueUrl=self.config.queue_url, MaxNumberOfMessages=1,
                                            WaitTimeSeconds=self.config.wait_seconds,
                                            MessageSystemAttributeNames=["ApproximateReceiveCount"])
        dispositions = []
        for message in response.get("Messages", []):
            if self.stop.is_set():
                self._release(message)
                continue
            try:
                dispositions.append(self.handle(message))
            except Exception:
                # One bad message must not stop the agent; it comes back, then goes to the DLQ.
                log.exception("message %s: unexpected error; left on the queue", message.get("MessageId"))
                self.metrics.retries.inc()
                dispositions.append(Disposition.RETRY)
        return dispositions

    def handle(self, message: dict[str, Any]) -> Disposition:
        """Process one message and delete it unless it should be tried again."""
        attempt = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
        try:
            task = task_from_message(_unwrap(message["Body"]))
        except (ValueError, TaskError) as exc:
            log.error("message %s is not a task (%s); left for the dead-letter queue (receive %d)",
                      message.get("MessageId"), exc, attempt)
            self.metrics.retries.inc()
            return Disposition.RETRY
        log.info("task %s (%s): attempt %d", task.id, task.tasktype, attempt)
        start = time.perf_counter()
        with KeepInvisible(self.sqs, self.config.queue_url, message["ReceiptHandle"], self.visibility_timeout):
            try:
                outcome = self._outcome(task)
                urls, output_url = results.upload(self.s3, self.config.output_bucket, task, outcome,
                                                  results.new_rand4())
                results.publish(self.sns, self.config.notification_topic_arn,
                                results.notification(task, outcome, urls, output_url))
            except (RuntimeUnavailable, *TRANSIENT) as exc:
                if isinstance(exc, RuntimeUnavailable | httpx.TransportError):
                    self.runtime_ready = False
                log.warning("task %s: attempt %d failed (%s); message left on the queue", task.id, attempt, exc)
                self.metrics.retries.inc()
                return Disposition.RETRY
        self.sqs.delete_message(QueueUrl=self.config.queue_url, ReceiptHandle=message["ReceiptHandle"])
        self.metrics.tasks.labels(task.tasktype, outcome.status).inc()
        self.metrics.seconds.labels(task.tasktype).observe(time.perf_counter() - start)
        log.info("task %s %s: %s", task.id, outcome.status, output_url)
        return Disposition.DONE

    def _outcome(self, task: Task) -> results.Outcome:
        try:
            endpoint, body = prepare_request(task, s3=self.s3, http=self.http)
        except InputError as exc:
            return results.failed(task, str(exc))
        response = self.http.post(f"{self.config.runtime_url}/sdapi/v1/{endpoint}", json=body)
        if response.status_code == 503:
            raise RuntimeUnavailable(f"runtime answered 503: {response.text[:200]}")
        if response.is_error:
            log.warning("task %s: runtime answered %d", task.id, response.status_code)
            return results.failed(task, f"runtime answered HTTP {response.status_code}", _reason(response))
        return results.succeeded(task, response.json())

    def _release(self, message: dict[str, Any]) -> None:
        # Stopping: hand the message straight back rather than make it wait out the timeout.
        self.sqs.change_message_visibility(QueueUrl=self.config.queue_url, ReceiptHandle=message["ReceiptHandle"],
                                           VisibilityTimeout=0)

    def _queue_visibility(self) -> float:
        attributes = self.sqs.get_queue_attributes(QueueUrl=self.config.queue_url,
                                                   AttributeNames=["VisibilityTimeout"])["Attributes"]
        return float(attributes["VisibilityTimeout"])


def _unwrap(body: str) -> Any:
    """The task document, whether delivered raw or inside an SNS envelope (raw delivery off)."""
    doc = json.loads(body)
    if isinstance(doc, dict) and doc.get("Type") == "Notification" and "Message" in doc:
        return json.loads(doc["Message"])
    return doc


def _reason(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text[:2000]


def main(argv: list[str] | None = None) -> int:
    """Run the agent until SIGTERM/SIGINT (the current message is finished first)."""
    args = _parse(argv)
    logs.configure(args.log_level)
    config = AgentConfig(args.queue_url, args.output_bucket, args.notification_topic_arn, args.runtime_url.rstrip("/"),
                         args.wait_seconds, args.visibility_timeout, args.request_timeout)
    agent = QueueAgent(config)

    def request_stop(signum: int, _: Any) -> None:
        log.info("stop requested (%s); finishing the current message", signal.Signals(signum).name)
        agent.stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, request_stop)
    if args.metrics_port:
        start_http_server(args.metrics_port, registry=agent.metrics.registry)
    agent.run()
    return 0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="python -m inference_workload.queue_agent", description=main.__doc__)
    parser.add_argument("--queue-url", default=env("SQS_QUEUE_URL"), required=not env("SQS_QUEUE_URL"),
                        help="env SQS_QUEUE_URL")
    parser.add_argument("--runtime-url", default=env("RUNTIME_URL", "http://127.0.0.1:8080"), help="env RUNTIME_URL")
    parser.add_argument("--output-bucket", default=env("S3_BUCKET"), required=not env("S3_BUCKET"),
                        help="env S3_BUCKET")
    parser.add_argument("--notification-topic-arn", default=env("SNS_TOPIC_ARN"), required=not env("SNS_TOPIC_ARN"),
                        help="env SNS_TOPIC_ARN")
    parser.add_argument("--wait-seconds", type=int, default=20, help="long-poll wait (max 20)")
    parser.add_argument("--visibility-timeout", type=float, default=None,
                        help="seconds; default: the queue's VisibilityTimeout")
    parser.add_argument("--request-timeout", type=float, default=600.0, help="seconds to wait for the runtime")
    parser.add_argument("--metrics-port", type=int, default=0, help="serve agent metrics here (0: off)")
    parser.add_argument("--log-level", default=env("LOG_LEVEL", "info"))
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
