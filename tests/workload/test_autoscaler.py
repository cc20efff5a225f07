"""Autoscaling decisions with KEDA aws-sqs-queue semantics, on a fake clock."""

from __future__ import annotations

import json

import pytest

from inference_workload import autoscaler, aws
from inference_workload.autoscaler import ScalePolicy, ScalerState, decide
from inference_workload.aws import Provisioned

POLICY = ScalePolicy()  # target 10, min 0, max 5, cooldown 300 s


def replay(lengths: list[tuple[float, int]], policy: ScalePolicy = POLICY, start: int = 0) -> list[int]:
    """Replicas after each (time, queue length) observation."""
    state, out = ScalerState(start), []
    for now, length in lengths:
        state = decide(state, length, now, policy)
        out.append(state.replicas)
    return out


def test_scale_up_is_immediate_and_proportional() -> None:
    assert replay([(0, 0), (1, 1), (2, 10), (3, 11), (4, 20), (5, 21), (6, 35)]) == [0, 1, 1, 2, 2, 3, 4]


def test_clamped_at_max() -> None:
    assert replay([(0, 49), (1, 51), (2, 10_000)]) == [5, 5, 5]
    assert replay([(0, 1000)], ScalePolicy(max_replicas=2)) == [2]


def test_min_replicas_floor() -> None:
    assert replay([(0, 0), (1, 3), (400, 0), (800, 0)], ScalePolicy(min_replicas=2)) == [2, 2, 2, 2]


def test_no_scale_down_before_cooldown_then_to_zero() -> None:
    # 35 messages seen last at t=0 (4 replicas), empty from t=10: nothing changes until t=300.
    timeline = [(0, 35), (10, 0), (100, 0), (299.9, 0), (300, 0), (301, 0)]
    assert replay(timeline) == [4, 4, 4, 4, 0, 0]


def test_partial_scale_down_waits_for_the_window() -> None:
    # 40 messages -> 4 replicas; the queue shrinks to 12 (2 replicas' worth) at t=50.
    timeline = [(0, 40), (50, 12), (299, 12), (300, 12), (301, 12)]
    assert replay(timeline) == [4, 4, 4, 2, 2]


def test_new_messages_restart_the_cooldown() -> None:
    timeline = [(0, 5), (100, 0), (250, 3), (260, 0), (400, 0), (549, 0), (550, 0)]
    assert replay(timeline) == [1, 1, 1, 1, 1, 1, 0]


def test_configurable_target_and_cooldown() -> None:
    policy = ScalePolicy(target=2, cooldown=5, stabilization=5)
    assert replay([(0, 3), (1, 7), (2, 0), (5.9, 0), (6, 0)], policy) == [2, 4, 4, 4, 0]


def test_loop_polls_every_interval_and_scales_on_change() -> None:
    clock = [0.0]
    lengths = iter([0, 5, 25, 25, 0] + [0] * 400)
    calls: list[tuple[float, int]] = []
    waits: list[float] = []

    def wait(seconds: float) -> bool:
        waits.append(seconds)
        clock[0] += seconds
        return clock[0] >= 400

    state = autoscaler.run(lambda: next(lengths), lambda n: calls.append((clock[0], n)), POLICY,
                           clock=lambda: clock[0], wait=wait)
    assert set(waits) == {1.0}
    assert calls == [(1.0, 1), (2.0, 3), (303.0, 0)]  # last non-empty poll at t=3
    assert state.replicas == 0


def test_loop_survives_errors() -> None:
    clock = [0.0]
    results = iter([RuntimeError("throttled"), 30, 30])
    calls: list[int] = []
    scale_failures = [RuntimeError("apiserver down")]

    def length() -> int:
        value = next(results)
        if isinstance(value, Exception):
            raise value
        return value

    def scale_to(n: int) -> None:
        if scale_failures:
            raise scale_failures.pop()
        calls.append(n)

    def wait(seconds: float) -> bool:
        clock[0] += seconds
        return clock[0] >= 3

    state = autoscaler.run(length, scale_to, POLICY, clock=lambda: clock[0], wait=wait)
    assert calls == [3] and state.replicas == 3  # the failed scale is retried on the next poll


def test_queue_length_counts_visible_and_in_flight(provisioned: Provisioned) -> None:
    sqs = aws.client("sqs")
    url = provisioned.runtimes["sdruntime"].url
    for i in range(3):
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"n": i}))
    length = autoscaler.sqs_queue_length(sqs, url)
    assert length() == 3
    sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1)
    assert length() == 3
    assert autoscaler.sqs_queue_length(sqs, url, include_in_flight=False)() == 2


@pytest.mark.parametrize(("length", "expected"), [(0, 1), (1, 1), (10, 1), (11, 2), (50, 5), (51, 5)])
def test_recommend(length: int, expected: int) -> None:
    assert autoscaler.recommend(length, POLICY) == expected
