"""AWS clients and provisioning of the workload's buckets, topics and queues.

``client()`` builds boto3 clients that work unchanged on EKS and in the lab: the endpoint comes
from ``AWS_ENDPOINT_URL`` (boto3 reads it natively; an explicit ``endpoint_url`` wins), the
region from ``AWS_DEFAULT_REGION`` (default us-east-1), and when the credential chain finds
nothing, fake credentials are used so a local moto server accepts the calls.

``provision()`` converges the resources to the wanted state and can run any number of times:
it looks resources up before creating them and re-applies attributes, filter policies and the
queue policy, so a second run changes nothing and a changed setting (say a shorter visibility
timeout) is applied to existing queues.

    python -m inference_workload.aws --runtime sdruntime [--max-receive-count 3] ...
"""

from __future__ import annotations

import argparse
import functools
import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

__all__ = ["Provisioned", "RuntimeQueue", "client", "provision", "queue_arn", "region"]

DEFAULT_REGION = "us-east-1"
FAKE_KEY = "testing"
FOUR_DAYS = 4 * 24 * 3600
FOURTEEN_DAYS = 14 * 24 * 3600


def region() -> str:
    """The region every client uses: ``AWS_DEFAULT_REGION``, else ``AWS_REGION``, else us-east-1."""
    return os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or DEFAULT_REGION


@functools.cache
def _session() -> boto3.session.Session:
    # Resolved once per process: the credential chain can probe instance metadata, which is slow
    # off EC2. The endpoint is not part of the session, so AWS_ENDPOINT_URL is still read per client.
    session = boto3.session.Session()
    if session.get_credentials() is None:
        session = boto3.session.Session(aws_access_key_id=FAKE_KEY, aws_secret_access_key=FAKE_KEY)
    return session


def client(service: str, *, endpoint_url: str | None = None, max_pool_connections: int = 10) -> Any:
    """A boto3 client for ``service`` (s3, sns, sqs) honouring the lab/EKS environment."""
    config = Config(retries={"mode": "standard"}, max_pool_connections=max_pool_connections)
    return _session().client(service, region_name=region(), endpoint_url=endpoint_url, config=config)


@dataclass(frozen=True)
class RuntimeQueue:
    """The queue that feeds one runtime, its dead-letter queue and its topic subscription."""

    runtime: str
    url: str
    arn: str
    subscription_arn: str
    dlq_url: str | None = None
    dlq_arn: str | None = None


@dataclass(frozen=True)
class Provisioned:
    """Everything ``provision`` created or found, as the other components need it."""

    region: str
    models_bucket: str
    output_bucket: str
    task_topic_arn: str
    notification_topic_arn: str
    notification_queue_url: str
    notification_queue_arn: str
    runtimes: dict[str, RuntimeQueue] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)


def provision(runtimes: Iterable[str], *, models_bucket: str = "sd-models", output_bucket: str = "sd-outputs",
              task_topic: str = "sd-tasks", notification_topic: str = "sd-notifications",
              notification_queue: str = "sd-notifications", queue_name: str = "{runtime}-tasks",
              dlq_name: str = "{runtime}-tasks-dlq", visibility_timeout: int = 30,
              retention_seconds: int = FOUR_DAYS, max_receive_count: int | None = 3,
              endpoint_url: str | None = None) -> Provisioned:
    """Create (or converge) the workload's resources and return their names, ARNs and URLs.

    ``max_receive_count=None`` (or 0) reproduces the reference deployment: no dead-letter queue,
    so a message that keeps failing comes back forever.
    """
    s3, sns, sqs = (client(s, endpoint_url=endpoint_url) for s in ("s3", "sns", "sqs"))
    for bucket in (models_bucket, output_bucket):
        _ensure_bucket(s3, bucket)
    task_arn = sns.create_topic(Name=task_topic)["TopicArn"]
    note_arn = sns.create_topic(Name=notification_topic)["TopicArn"]
    note_url, note_qarn = _ensure_queue(sqs, notification_queue, {"MessageRetentionPeriod": str(retention_seconds)})
    _allow_topic(sqs, note_url, note_qarn, note_arn)
    _ensure_subscription(sns, note_arn, note_qarn, filter_policy=None)
    queues = {}
    for runtime in runtimes:
        queues[runtime] = _provision_runtime(
            sns, sqs, task_arn, runtime, queue_name.format(runtime=runtime), dlq_name.format(runtime=runtime),
            visibility_timeout, retention_seconds, max_receive_count)
    return Provisioned(region(), models_bucket, output_bucket, task_arn, note_arn, note_url, note_qarn, queues)


def _provision_runtime(sns: Any, sqs: Any, topic_arn: str, runtime: str, name: str, dlq_name: str,
                       visibility_timeout: int, retention_seconds: int, max_receive_count: int | None) -> RuntimeQueue:
    attributes = {"VisibilityTimeout": str(visibility_timeout), "MessageRetentionPeriod": str(retention_seconds)}
    dlq_url = dlq_arn = None
    if max_receive_count:
        # The DLQ keeps messages longer than the source so a failure can still be inspected.
        dlq_url, dlq_arn = _ensure_queue(sqs, dlq_name, {"MessageRetentionPeriod": str(FOURTEEN_DAYS)})
        attributes["RedrivePolicy"] = json.dumps({"deadLetterTargetArn": dlq_arn,
                                                  "maxReceiveCount": str(max_receive_count)})
    url, arn = _ensure_queue(sqs, name, attributes)
    if not max_receive_count:
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"RedrivePolicy": ""})
    _allow_topic(sqs, url, arn, topic_arn)
    sub = _ensure_subscription(sns, topic_arn, arn, filter_policy={"runtime": [runtime]})
    return RuntimeQueue(runtime, url, arn, sub, dlq_url, dlq_arn)


def _ensure_bucket(s3: Any, bucket: str) -> None:
    kwargs: dict[str, Any] = {"Bucket": bucket}
    if region() != DEFAULT_REGION:
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region()}
    try:
        s3.create_bucket(**kwargs)
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "BucketAlreadyOwnedByYou":
            raise


def _ensure_queue(sqs: Any, name: str, attributes: dict[str, str]) -> tuple[str, str]:
    # CreateQueue fails when an existing queue has other attributes, so create bare, then set.
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
    return url, queue_arn(sqs, url)


def queue_arn(sqs: Any, url: str) -> str:
    """The ARN of the queue at ``url``."""
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


def _allow_topic(sqs: Any, url: str, arn: str, topic_arn: str) -> None:
    # Without this policy real SNS cannot deliver to the queue (moto does not check it).
    policy = {"Version": "2012-10-17", "Statement": [{
        "Sid": "topic-to-queue", "Effect": "Allow", "Principal": {"Service": "sns.amazonaws.com"},
        "Action": "sqs:SendMessage", "Resource": arn,
        "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}}}]}
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(policy)})


def _ensure_subscription(sns: Any, topic_arn: str, endpoint_arn: str, filter_policy: dict[str, Any] | None) -> str:
    """Subscribe the queue with raw delivery (and a filter policy), or update the existing subscription."""
    attributes = {"RawMessageDelivery": "true"}
    if filter_policy is not None:
        attributes["FilterPolicy"] = json.dumps(filter_policy)
    existing = _find_subscription(sns, topic_arn, endpoint_arn)
    if existing is None:
        return sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=endpoint_arn,
                             Attributes=attributes, ReturnSubscriptionArn=True)["SubscriptionArn"]
    for name, value in attributes.items():
        sns.set_subscription_attributes(SubscriptionArn=existing, AttributeName=name, AttributeValue=value)
    return existing


def _find_subscription(sns: Any, topic_arn: str, endpoint_arn: str) -> str | None:
    for page in sns.get_paginator("list_subscriptions_by_topic").paginate(TopicArn=topic_arn):
        for sub in page["Subscriptions"]:
            if sub["Protocol"] == "sqs" and sub["Endpoint"] == endpoint_arn:
                return sub["SubscriptionArn"]
    return None


def main(argv: list[str] | None = None) -> None:
    """Provision from the command line and print the result as JSON."""
    parser = argparse.ArgumentParser(prog="python -m inference_workload.aws", description=provision.__doc__)
    parser.add_argument("--runtime", action="append", default=[], help="runtime name (repeatable)")
    parser.add_argument("--models-bucket", default="sd-models")
    parser.add_argument("--output-bucket", default="sd-outputs")
    parser.add_argument("--task-topic", default="sd-tasks")
    parser.add_argument("--notification-topic", default="sd-notifications")
    parser.add_argument("--notification-queue", default="sd-notifications")
    parser.add_argument("--visibility-timeout", type=int, default=30)
    parser.add_argument("--retention-seconds", type=int, default=FOUR_DAYS)
    parser.add_argument("--max-receive-count", type=int, default=3, help="0: no dead-letter queue (reference)")
    parser.add_argument("--endpoint-url", default=None, help="default: AWS_ENDPOINT_URL, else AWS")
    args = parser.parse_args(argv)
    result = provision(args.runtime or ["sdruntime"], models_bucket=args.models_bucket,
                       output_bucket=args.output_bucket, task_topic=args.task_topic,
                       notification_topic=args.notification_topic, notification_queue=args.notification_queue,
                       visibility_timeout=args.visibility_timeout, retention_seconds=args.retention_seconds,
                       max_receive_count=args.max_receive_count, endpoint_url=args.endpoint_url)
    print(result.to_json())


if __name__ == "__main__":
    main()
