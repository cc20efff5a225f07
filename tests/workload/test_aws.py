"""Clients honour the lab environment; provisioning is idempotent and routes by runtime."""

from __future__ import annotations

import json
import os

import pytest

from inference_workload import aws
from inference_workload.aws import Provisioned

from .conftest import provision_unique, receive_all


def test_clients_use_aws_endpoint_url_and_region(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for service in ("s3", "sns", "sqs"):
        c = aws.client(service)
        assert c.meta.endpoint_url == moto_endpoint
        assert c.meta.region_name == "us-east-1"
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    assert aws.client("sqs").meta.region_name == "eu-west-1"
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.delenv("AWS_REGION", raising=False)
    assert aws.client("sqs").meta.region_name == "us-east-1"
    assert aws.client("s3", endpoint_url="http://127.0.0.1:1").meta.endpoint_url == "http://127.0.0.1:1"


def test_fake_credentials_when_none_are_set(moto_endpoint: str) -> None:
    if any(k in os.environ for k in ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE")):
        pytest.skip("real credentials are configured here")
    creds = aws.client("s3")._request_signer._credentials
    assert (creds.access_key, creds.secret_key) == ("testing", "testing")


def test_provision_is_idempotent(provisioned: Provisioned, suffix: str) -> None:
    again = provision_unique(suffix, ["sdruntime", "other"])
    assert again == provisioned
    sns, sqs = aws.client("sns"), aws.client("sqs")
    subs = sns.list_subscriptions_by_topic(TopicArn=provisioned.task_topic_arn)["Subscriptions"]
    assert sorted(s["Endpoint"] for s in subs) == sorted(q.arn for q in provisioned.runtimes.values())
    queues = sqs.list_queues(QueueNamePrefix="sdruntime-" + suffix)["QueueUrls"]
    assert len(queues) == 2  # the queue and its DLQ, once each


def test_queue_attributes(provisioned: Provisioned) -> None:
    sqs, sns = aws.client("sqs"), aws.client("sns")
    queue = provisioned.runtimes["sdruntime"]
    attrs = sqs.get_queue_attributes(QueueUrl=queue.url, AttributeNames=["All"])["Attributes"]
    assert attrs["VisibilityTimeout"] == "30"
    assert attrs["MessageRetentionPeriod"] == str(4 * 24 * 3600)
    redrive = json.loads(attrs["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == queue.dlq_arn
    assert int(redrive["maxReceiveCount"]) == 3
    policy = json.loads(attrs["Policy"])["Statement"][0]
    assert policy["Condition"]["ArnEquals"]["aws:SourceArn"] == provisioned.task_topic_arn
    sub = sns.get_subscription_attributes(SubscriptionArn=queue.subscription_arn)["Attributes"]
    assert sub["RawMessageDelivery"] == "true"
    assert json.loads(sub["FilterPolicy"]) == {"runtime": ["sdruntime"]}


def test_reprovision_applies_changed_settings(provisioned: Provisioned, suffix: str) -> None:
    changed = provision_unique(suffix, ["sdruntime"], visibility_timeout=5, max_receive_count=7)
    attrs = aws.client("sqs").get_queue_attributes(QueueUrl=changed.runtimes["sdruntime"].url,
                                                   AttributeNames=["All"])["Attributes"]
    assert attrs["VisibilityTimeout"] == "5"
    assert int(json.loads(attrs["RedrivePolicy"])["maxReceiveCount"]) == 7


def test_reference_mode_has_no_dead_letter_queue(moto_endpoint: str, suffix: str) -> None:
    result = provision_unique(suffix, ["sdruntime"], max_receive_count=None)
    queue = result.runtimes["sdruntime"]
    assert queue.dlq_url is None
    attrs = aws.client("sqs").get_queue_attributes(QueueUrl=queue.url, AttributeNames=["All"])["Attributes"]
    assert "RedrivePolicy" not in attrs or not attrs["RedrivePolicy"]


def test_topic_routes_by_runtime_attribute_raw(provisioned: Provisioned) -> None:
    sns = aws.client("sns")
    for runtime in ("sdruntime", "other", "nobody"):
        sns.publish(TopicArn=provisioned.task_topic_arn, Message=json.dumps({"for": runtime}),
                    MessageAttributes={"runtime": {"DataType": "String", "StringValue": runtime}})
    got = {name: [m["body"] for m in receive_all(q.url, expect=1, timeout=3)]
           for name, q in provisioned.runtimes.items()}
    assert got == {"sdruntime": [{"for": "sdruntime"}], "other": [{"for": "other"}]}


def test_notification_queue_receives_raw_notifications(provisioned: Provisioned) -> None:
    aws.client("sns").publish(TopicArn=provisioned.notification_topic_arn, Message='{"id": "x"}')
    assert [m["body"] for m in receive_all(provisioned.notification_queue_url, expect=1)] == [{"id": "x"}]
